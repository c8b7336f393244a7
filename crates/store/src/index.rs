//! The in-memory index shared by [`crate::memory::MemoryStore`] and the
//! replica inside [`crate::cache::CachedStore`].
//!
//! Two maps point at the same `Arc<Resource>`: one per kind ordered by
//! (name, mesh) for cross-mesh lists, one per (kind, mesh) ordered by name for
//! lists inside a mesh and for cascading a mesh delete. Neither list scans
//! resources of other kinds or meshes.

use crate::{ListFilter, ListPage};
use kuma_model::{MeshName, Resource, ResourceKey, ResourceKind, ResourceName, Scope};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

type KindMap = BTreeMap<(ResourceName, Option<MeshName>), Arc<Resource>>;
type MeshMap = BTreeMap<ResourceName, Arc<Resource>>;

#[derive(Default)]
pub(crate) struct Index {
    by_kind: HashMap<ResourceKind, KindMap>,
    by_kind_mesh: HashMap<(ResourceKind, MeshName), MeshMap>,
}

impl Index {
    pub(crate) fn get(&self, key: &ResourceKey) -> Option<&Arc<Resource>> {
        match key.mesh() {
            Some(mesh) => self
                .by_kind_mesh
                .get(&(key.kind(), mesh.clone()))?
                .get(key.name()),
            None => self
                .by_kind
                .get(&key.kind())?
                .get(&(key.name().clone(), None)),
        }
    }

    /// Inserts or replaces; returns the previous entry.
    pub(crate) fn upsert(&mut self, r: Arc<Resource>) -> Option<Arc<Resource>> {
        let key = &r.key;
        let prev = self
            .by_kind
            .entry(key.kind())
            .or_default()
            .insert((key.name().clone(), key.mesh().cloned()), r.clone());
        if let Some(mesh) = key.mesh() {
            self.by_kind_mesh
                .entry((key.kind(), mesh.clone()))
                .or_default()
                .insert(key.name().clone(), r.clone());
        }
        prev
    }

    pub(crate) fn remove(&mut self, key: &ResourceKey) -> Option<Arc<Resource>> {
        let by_kind = self.by_kind.get_mut(&key.kind())?;
        let prev = by_kind.remove(&(key.name().clone(), key.mesh().cloned()))?;
        if by_kind.is_empty() {
            self.by_kind.remove(&key.kind());
        }
        if let Some(mesh) = key.mesh() {
            let mk = (key.kind(), mesh.clone());
            if let Some(m) = self.by_kind_mesh.get_mut(&mk) {
                m.remove(key.name());
                if m.is_empty() {
                    self.by_kind_mesh.remove(&mk);
                }
            }
        }
        Some(prev)
    }

    /// Removes every mesh-scoped resource in `mesh`, returning them in kind
    /// order, then name order.
    pub(crate) fn remove_mesh_contents(&mut self, mesh: &MeshName) -> Vec<Arc<Resource>> {
        let mut removed = Vec::new();
        for kind in ResourceKind::ALL
            .iter()
            .copied()
            .filter(|k| k.scope() == Scope::Mesh)
        {
            let Some(members) = self.by_kind_mesh.remove(&(kind, mesh.clone())) else {
                continue;
            };
            if let Some(by_kind) = self.by_kind.get_mut(&kind) {
                for name in members.keys() {
                    by_kind.remove(&(name.clone(), Some(mesh.clone())));
                }
                if by_kind.is_empty() {
                    self.by_kind.remove(&kind);
                }
            }
            removed.extend(members.into_values());
        }
        removed
    }

    /// Every resource, in kind, name, mesh order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Resource>> {
        ResourceKind::ALL
            .iter()
            .filter_map(|k| self.by_kind.get(k))
            .flat_map(|m| m.values())
    }

    /// Resources passing `filter` (paging ignored), in name-then-mesh order.
    pub(crate) fn matching<'a>(
        &'a self,
        filter: &'a ListFilter,
    ) -> Box<dyn Iterator<Item = &'a Arc<Resource>> + 'a> {
        let base: Box<dyn Iterator<Item = &Arc<Resource>>> = match &filter.mesh {
            // A global kind has no resources inside a mesh.
            Some(mesh) => match self.by_kind_mesh.get(&(filter.kind, mesh.clone())) {
                Some(m) => Box::new(m.values()),
                None => Box::new(std::iter::empty()),
            },
            None => match self.by_kind.get(&filter.kind) {
                Some(m) => Box::new(m.values()),
                None => Box::new(std::iter::empty()),
            },
        };
        Box::new(base.filter(move |r| filter.matches(r)))
    }

    pub(crate) fn list(&self, filter: &ListFilter) -> ListPage {
        let mut total = 0;
        let mut items = Vec::new();
        let limit = filter.limit.unwrap_or(usize::MAX);
        for r in self.matching(filter) {
            if total >= filter.offset && items.len() < limit {
                items.push(Resource::clone(r));
            }
            total += 1;
        }
        ListPage { items, total }
    }
}
