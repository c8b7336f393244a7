//! A store that lives in process memory and is lost on exit
//! (`KUMA_STORE_TYPE=memory`, and tests).

use crate::index::Index;
use crate::{
    Applied, BatchOp, BatchResults, ChangeEvent, ChangeOp, Expect, FEED_CAPACITY, ListFilter,
    ListPage, ResourceStore, SharedPage, StoreError, Write,
};
use async_trait::async_trait;
use kuma_model::{MeshName, Resource, ResourceKey, ResourceKind, ResourceMeta};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::broadcast;

/// Resources in a [`RwLock`]ed index; events are sent while the write lock is
/// held, so the feed is in commit order.
pub struct MemoryStore {
    index: RwLock<Index>,
    feed: broadcast::Sender<ChangeEvent>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            index: RwLock::new(Index::default()),
            feed: broadcast::channel(FEED_CAPACITY).0,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index half-written:
        // every mutation is a single map operation pair done after all checks.
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, op: ChangeOp, key: ResourceKey, version: u64) {
        // No receivers is fine: nobody is watching.
        let _ = self.feed.send(ChangeEvent { op, key, version });
    }
}

/// Whether the mesh a mesh-scoped `key` names exists in `index`.
fn mesh_exists(index: &Index, key: &ResourceKey) -> bool {
    match key.mesh() {
        None => true,
        // A mesh name that is not a valid resource name (legacy `_`) can only
        // exist if a Mesh with that exact name was stored.
        Some(mesh) => match kuma_model::ResourceName::new(mesh.as_str()) {
            Ok(name) => index
                .get(&ResourceKey::global(ResourceKind::Mesh, name).expect("Mesh is global"))
                .is_some(),
            Err(_) => false,
        },
    }
}

impl MemoryStore {
    fn create_in(
        &self,
        index: &mut Index,
        key: &ResourceKey,
        write: Write,
    ) -> Result<Arc<Resource>, StoreError> {
        if index.get(key).is_some() {
            return Err(StoreError::AlreadyExists(key.clone()));
        }
        if !mesh_exists(index, key) {
            return Err(StoreError::MeshNotFound(
                key.mesh().cloned().expect("mesh-scoped key"),
            ));
        }
        let t = crate::now();
        let r = Resource {
            key: key.clone(),
            meta: ResourceMeta {
                labels: write.labels,
                version: 1,
                creation_time: t,
                modification_time: t,
            },
            spec: write.spec,
            status: write.status,
        };
        let r = Arc::new(r);
        index.upsert(r.clone());
        self.emit(ChangeOp::Created, key.clone(), 1);
        Ok(r)
    }

    fn update_in(
        &self,
        index: &mut Index,
        key: &ResourceKey,
        write: Write,
        expected_version: Option<u64>,
    ) -> Result<Arc<Resource>, StoreError> {
        let current = index
            .get(key)
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        let actual = current.meta.version;
        if let Some(expected) = expected_version
            && expected != actual
        {
            return Err(StoreError::Conflict {
                key: key.clone(),
                expected,
                actual,
            });
        }
        let r = Resource {
            key: key.clone(),
            meta: ResourceMeta {
                labels: write.labels,
                version: actual + 1,
                creation_time: current.meta.creation_time,
                modification_time: crate::now(),
            },
            spec: write.spec,
            status: write.status,
        };
        let r = Arc::new(r);
        index.upsert(r.clone());
        self.emit(ChangeOp::Updated, key.clone(), r.meta.version);
        Ok(r)
    }

    /// Returns the deleted version.
    fn delete_in(
        &self,
        index: &mut Index,
        key: &ResourceKey,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let actual = index
            .get(key)
            .ok_or_else(|| StoreError::NotFound(key.clone()))?
            .meta
            .version;
        if let Some(expected) = expected_version
            && expected != actual
        {
            return Err(StoreError::Conflict {
                key: key.clone(),
                expected,
                actual,
            });
        }
        if key.kind() == ResourceKind::Mesh {
            let mesh = MeshName::from(key.name().clone());
            for r in index.remove_mesh_contents(&mesh) {
                self.emit(ChangeOp::Deleted, r.key.clone(), r.meta.version);
            }
        }
        index.remove(key);
        self.emit(ChangeOp::Deleted, key.clone(), actual);
        Ok(actual)
    }
}

#[async_trait]
impl ResourceStore for MemoryStore {
    async fn get(&self, key: &ResourceKey) -> Result<Resource, StoreError> {
        self.read()
            .get(key)
            .map(|r| Resource::clone(r))
            .ok_or_else(|| StoreError::NotFound(key.clone()))
    }

    async fn get_shared(&self, key: &ResourceKey) -> Result<Arc<Resource>, StoreError> {
        self.read()
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.clone()))
    }

    async fn list(&self, filter: &ListFilter) -> Result<ListPage, StoreError> {
        Ok(self.read().list(filter))
    }

    async fn list_shared(&self, filter: &ListFilter) -> Result<SharedPage, StoreError> {
        Ok(self.read().list_shared(filter))
    }

    async fn create(&self, key: &ResourceKey, write: Write) -> Result<Resource, StoreError> {
        self.create_in(&mut self.write(), key, write)
            .map(Arc::unwrap_or_clone)
    }

    async fn update(
        &self,
        key: &ResourceKey,
        write: Write,
        expected_version: Option<u64>,
    ) -> Result<Resource, StoreError> {
        self.update_in(&mut self.write(), key, write, expected_version)
            .map(Arc::unwrap_or_clone)
    }

    async fn delete(
        &self,
        key: &ResourceKey,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        self.delete_in(&mut self.write(), key, expected_version)
            .map(|_| ())
    }

    /// Under one write lock: readers see the whole batch or none of it (an
    /// event receiver reading at once waits for the lock).
    async fn apply_batch(&self, ops: Vec<BatchOp>) -> Result<BatchResults, StoreError> {
        let mut index = self.write();
        let index = &mut *index;
        Ok(ops
            .into_iter()
            .map(|op| match op {
                BatchOp::Put { key, write, expect } => {
                    let exists = index.get(&key).is_some();
                    match expect {
                        Expect::Absent => self.create_in(index, &key, write).map(Applied::Created),
                        Expect::Version(v) => self
                            .update_in(index, &key, write, Some(v))
                            .map(Applied::Updated),
                        Expect::Any if exists => self
                            .update_in(index, &key, write, None)
                            .map(Applied::Updated),
                        Expect::Any => self.create_in(index, &key, write).map(Applied::Created),
                    }
                }
                BatchOp::Delete {
                    key,
                    expected_version,
                } => self
                    .delete_in(index, &key, expected_version)
                    .map(|version| Applied::Deleted { key, version }),
            })
            .collect())
    }

    fn watch(&self) -> broadcast::Receiver<ChangeEvent> {
        self.feed.subscribe()
    }
}
