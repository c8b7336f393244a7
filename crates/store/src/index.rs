//! The in-memory index shared by [`crate::memory::MemoryStore`] and the
//! replica inside [`crate::cache::CachedStore`].
//!
//! Two maps point at the same `Arc<Resource>`: one per kind ordered by
//! (name, mesh) for cross-mesh lists, one per (kind, mesh) ordered by name for
//! lists inside a mesh and for cascading a mesh delete. Neither list scans
//! resources of other kinds or meshes.

use crate::{ListFilter, ListPage, SharedPage};
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

    /// The ordered map a list of `filter` walks: its kind in one mesh, or
    /// across meshes.
    fn base<'a>(&'a self, filter: &ListFilter) -> Option<Box<dyn ExactIter<'a> + 'a>> {
        match &filter.mesh {
            // A global kind has no resources inside a mesh.
            Some(mesh) => self
                .by_kind_mesh
                .get(&(filter.kind, mesh.clone()))
                .map(|m| Box::new(m.values()) as Box<dyn ExactIter<'a>>),
            None => self
                .by_kind
                .get(&filter.kind)
                .map(|m| Box::new(m.values()) as Box<dyn ExactIter<'a>>),
        }
    }

    /// Resources passing `filter` (paging ignored), in name-then-mesh order.
    pub(crate) fn matching<'a>(
        &'a self,
        filter: &'a ListFilter,
    ) -> Box<dyn Iterator<Item = &'a Arc<Resource>> + 'a> {
        match self.base(filter) {
            Some(base) => Box::new(base.filter(move |r| filter.matches(r))),
            None => Box::new(std::iter::empty()),
        }
    }

    /// One page of `filter`. Without content filters (name, labels, tags) the
    /// total is the map's size and only the page is visited and cloned, so a
    /// page costs the same however many resources the mesh has (plus the
    /// skipped offset).
    pub(crate) fn list(&self, filter: &ListFilter) -> ListPage {
        let (items, total) = self.page(filter, |r| Resource::clone(r));
        ListPage { items, total }
    }

    /// [`Index::list`] with the resources shared, not copied.
    pub(crate) fn list_shared(&self, filter: &ListFilter) -> SharedPage {
        let (items, total) = self.page(filter, Arc::clone);
        SharedPage { items, total }
    }

    fn page<T>(&self, filter: &ListFilter, out: impl Fn(&Arc<Resource>) -> T) -> (Vec<T>, usize) {
        let limit = filter.limit.unwrap_or(usize::MAX);
        let plain =
            filter.name_contains.is_none() && filter.labels.is_empty() && filter.tags.is_empty();
        if plain {
            let Some(base) = self.base(filter) else {
                return (Vec::new(), 0);
            };
            let total = base.len();
            let items = base.skip(filter.offset).take(limit).map(out).collect();
            return (items, total);
        }
        let mut total = 0;
        let mut items = Vec::new();
        for r in self.matching(filter) {
            if total >= filter.offset && items.len() < limit {
                items.push(out(r));
            }
            total += 1;
        }
        (items, total)
    }
}

/// An ordered map's values, which know how many they are.
trait ExactIter<'a>: Iterator<Item = &'a Arc<Resource>> + ExactSizeIterator {}
impl<'a, T: Iterator<Item = &'a Arc<Resource>> + ExactSizeIterator> ExactIter<'a> for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use kuma_model::ResourceMeta;
    use serde_json::json;
    use std::time::Instant;

    fn mk_index(n: usize) -> Index {
        let mut index = Index::default();
        let mesh = MeshName::new("default").unwrap();
        for i in 0..n {
            let key = ResourceKey::in_mesh(
                ResourceKind::MeshTimeout,
                mesh.clone(),
                ResourceName::new(format!("mt-{i}")).unwrap(),
            )
            .unwrap();
            let spec = json!({"targetRef": {"kind": "Mesh"},
                "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "10s"}}]});
            let meta = ResourceMeta {
                labels: Default::default(),
                version: 1,
                creation_time: chrono::Utc::now(),
                modification_time: chrono::Utc::now(),
            };
            index.upsert(Arc::new(Resource {
                key,
                meta,
                spec,
                status: None,
            }));
        }
        index
    }

    #[test]
    fn plain_and_filtered_pages_agree() {
        let index = mk_index(250);
        let mut f =
            ListFilter::in_mesh(ResourceKind::MeshTimeout, MeshName::new("default").unwrap());
        f.offset = 100;
        f.limit = Some(100);
        let plain = index.list(&f);
        f.name_contains = Some("mt-".into());
        let filtered = index.list(&f);
        assert_eq!((plain.total, filtered.total), (250, 250));
        assert_eq!(plain.items, filtered.items);
        f.offset = 300;
        assert_eq!(index.list(&f).items.len(), 0);
    }

    /// What a page of 100 out of 1000 costs in the store and in rendering it
    /// as the API server does (`Resource::to_kuma_json`, then to bytes).
    /// `cargo test --release -p kuma-store --lib list_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "measurement, run by hand in release"]
    fn list_cost() {
        let index = mk_index(1000);
        let mut f =
            ListFilter::in_mesh(ResourceKind::MeshTimeout, MeshName::new("default").unwrap());
        f.limit = Some(100);
        let n = 2000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(index.list(&f));
        }
        let list = t.elapsed() / n;
        f.name_contains = Some("mt-".into());
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(index.list(&f));
        }
        let filtered = t.elapsed() / n;
        f.name_contains = None;
        let page = index.list(&f);
        let t = Instant::now();
        for _ in 0..n {
            let items: Vec<_> = page.items.iter().map(Resource::to_kuma_json).collect();
            let body = json!({"total": page.total, "items": items, "next": null});
            std::hint::black_box(serde_json::to_vec(&body).unwrap());
        }
        let render = t.elapsed() / n;
        println!("list page {list:?}, old full scan {filtered:?}, render+serialize {render:?}");
    }
}
