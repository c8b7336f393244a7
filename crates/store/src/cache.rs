//! A full in-memory replica in front of any store: reads never leave the
//! process, writes go through.
//!
//! ```text
//!  get / list ─────────────────────────▶ replica (Index) ◀───┐
//!  create / update / delete ─▶ inner ──▶ replica (own write) │ fetch what others wrote
//!                               │ watch()                    │
//!                               └──────▶ feed task ──────────┘──▶ watch() of the cache
//! ```
//!
//! Consistency: a caller reads its own writes at once. Writes by others
//! (other tasks through the inner store directly, other control planes on the
//! same database) show up when their event has been processed; the cache's
//! own [`ResourceStore::watch`] announces an event only after the replica
//! reflects it, so a consumer reacting to an event reads the new state here.
//!
//! Ordering: a write and the feed never interleave on the same key (a
//! per-key lock is held across the inner write and the replica update), so a
//! late own write cannot overwrite a newer state the feed already fetched.
//! If the inner feed lags, the replica is reloaded in full and the
//! difference is announced as events.

use crate::index::Index;
use crate::{
    Applied, BatchOp, BatchResults, ChangeEvent, ChangeOp, FEED_CAPACITY, ListFilter, ListPage,
    ResourceStore, SharedPage, StoreError, Write,
};
use async_trait::async_trait;
use kuma_model::{MeshName, Resource, ResourceKey, ResourceKind};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// Enough stripes that concurrent writes to different keys rarely share one: with
/// 64, one of 32 concurrent writers waited for an unrelated commit 4 times in 10.
const KEY_LOCKS: usize = 4096;

pub struct CachedStore<S> {
    shared: Arc<Shared<S>>,
    task: JoinHandle<()>,
}

struct Shared<S> {
    inner: S,
    replica: RwLock<Index>,
    /// Striped per-key locks: a key's write-then-apply and its feed
    /// fetch-then-apply never interleave.
    key_locks: Vec<tokio::sync::Mutex<()>>,
    hasher: RandomState,
    /// Writers share it; a full reload takes it alone, so no own write lands
    /// in the old replica after the reload has read the inner store.
    gate: tokio::sync::RwLock<()>,
    feed: broadcast::Sender<ChangeEvent>,
}

impl<S> Drop for CachedStore<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<S: ResourceStore> CachedStore<S> {
    /// Loads every resource of `inner` and starts following its change feed.
    pub async fn new(inner: S) -> Result<Self, StoreError> {
        // Subscribe before loading: whatever changes meanwhile is replayed after.
        let rx = inner.watch();
        let index = load(&inner).await?;
        let shared = Arc::new(Shared {
            inner,
            replica: RwLock::new(index),
            key_locks: (0..KEY_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: RandomState::new(),
            gate: tokio::sync::RwLock::new(()),
            feed: broadcast::channel(FEED_CAPACITY).0,
        });
        let task = tokio::spawn(follow(shared.clone(), rx));
        Ok(CachedStore { shared, task })
    }

    /// The store behind the replica.
    pub fn inner(&self) -> &S {
        &self.shared.inner
    }

    /// The replica's copy of `key`, shared rather than cloned (for readers
    /// such as the xDS layer that only look).
    pub fn get_shared(&self, key: &ResourceKey) -> Option<Arc<Resource>> {
        self.shared.read().get(key).cloned()
    }
}

impl<S> Shared<S> {
    fn read(&self) -> RwLockReadGuard<'_, Index> {
        // Index mutations cannot panic halfway in a way that matters: recover.
        self.replica.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.replica.write().unwrap_or_else(|e| e.into_inner())
    }

    fn stripe(&self, key: &ResourceKey) -> usize {
        (self.hasher.hash_one(key) % KEY_LOCKS as u64) as usize
    }

    fn key_lock(&self, key: &ResourceKey) -> &tokio::sync::Mutex<()> {
        &self.key_locks[self.stripe(key)]
    }

    fn remove(&self, key: &ResourceKey) {
        let mut index = self.write();
        if key.kind() == ResourceKind::Mesh {
            index.remove_mesh_contents(&MeshName::from(key.name().clone()));
        }
        index.remove(key);
    }
}

async fn load<S: ResourceStore>(inner: &S) -> Result<Index, StoreError> {
    let mut index = Index::default();
    for kind in ResourceKind::ALL {
        for r in inner.list(&ListFilter::all(*kind)).await?.items {
            index.upsert(Arc::new(r));
        }
    }
    Ok(index)
}

/// The feed task: applies the inner store's events to the replica, then
/// passes them on.
async fn follow<S: ResourceStore>(
    shared: Arc<Shared<S>>,
    mut rx: broadcast::Receiver<ChangeEvent>,
) {
    let mut reload = false;
    loop {
        if reload {
            match resync(&shared).await {
                Ok(()) => reload = false,
                Err(error) => {
                    warn!(%error, "cache reload failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        match rx.recv().await {
            Ok(ev) => {
                if let Err(error) = apply(&shared, &ev).await {
                    warn!(%error, key = %ev.key, "cache cannot fetch a changed resource; reloading");
                    reload = true;
                    continue;
                }
                let _ = shared.feed.send(ev);
            }
            Err(RecvError::Lagged(n)) => {
                debug!(missed = n, "cache fell behind the change feed; reloading");
                reload = true;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Brings the replica's copy of `ev.key` to at least the state of `ev`.
async fn apply<S: ResourceStore>(shared: &Shared<S>, ev: &ChangeEvent) -> Result<(), StoreError> {
    let _k = shared.key_lock(&ev.key).lock().await;
    let have = shared.read().get(&ev.key).map(|r| r.meta.version);
    let fetch = match ev.op {
        // Already at this version or newer, e.g. our own write: nothing to fetch.
        ChangeOp::Created | ChangeOp::Updated => have.is_none_or(|v| v < ev.version),
        // Gone already; a later incarnation has its own Created event coming.
        ChangeOp::Deleted => have.is_some(),
    };
    if !fetch {
        return Ok(());
    }
    match shared.inner.get(&ev.key).await {
        Ok(r) => {
            shared.write().upsert(Arc::new(r));
            Ok(())
        }
        Err(StoreError::NotFound(_)) => {
            shared.remove(&ev.key);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Replaces the replica with a fresh load and announces the difference.
async fn resync<S: ResourceStore>(shared: &Shared<S>) -> Result<(), StoreError> {
    let _g = shared.gate.write().await;
    let fresh = load(&shared.inner).await?;
    let events = {
        let mut index = shared.write();
        let old: HashMap<&ResourceKey, u64> =
            index.iter().map(|r| (&r.key, r.meta.version)).collect();
        let mut events = Vec::new();
        // Meshes last, as a live cascade would announce them.
        let mut gone: Vec<ChangeEvent> = old
            .iter()
            .filter(|(k, _)| fresh.get(k).is_none())
            .map(|(k, v)| ChangeEvent {
                op: ChangeOp::Deleted,
                key: (*k).clone(),
                version: *v,
            })
            .collect();
        gone.sort_by(|a, b| {
            (a.key.kind() == ResourceKind::Mesh, &a.key)
                .cmp(&(b.key.kind() == ResourceKind::Mesh, &b.key))
        });
        events.extend(gone);
        for r in fresh.iter() {
            match old.get(&r.key) {
                None => events.push(ChangeEvent {
                    op: ChangeOp::Created,
                    key: r.key.clone(),
                    version: r.meta.version,
                }),
                Some(v) if *v != r.meta.version => events.push(ChangeEvent {
                    op: ChangeOp::Updated,
                    key: r.key.clone(),
                    version: r.meta.version,
                }),
                Some(_) => {}
            }
        }
        *index = fresh;
        events
    };
    for ev in events {
        let _ = shared.feed.send(ev);
    }
    Ok(())
}

#[async_trait]
impl<S: ResourceStore> ResourceStore for CachedStore<S> {
    async fn get(&self, key: &ResourceKey) -> Result<Resource, StoreError> {
        self.shared
            .read()
            .get(key)
            .map(|r| Resource::clone(r))
            .ok_or_else(|| StoreError::NotFound(key.clone()))
    }

    async fn get_shared(&self, key: &ResourceKey) -> Result<Arc<Resource>, StoreError> {
        self.shared
            .read()
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.clone()))
    }

    async fn list(&self, filter: &ListFilter) -> Result<ListPage, StoreError> {
        Ok(self.shared.read().list(filter))
    }

    async fn list_shared(&self, filter: &ListFilter) -> Result<SharedPage, StoreError> {
        Ok(self.shared.read().list_shared(filter))
    }

    async fn create(&self, key: &ResourceKey, write: Write) -> Result<Resource, StoreError> {
        let s = &self.shared;
        let _g = s.gate.read().await;
        let _k = s.key_lock(key).lock().await;
        let r = s.inner.create(key, write).await?;
        s.write().upsert(Arc::new(r.clone()));
        Ok(r)
    }

    async fn update(
        &self,
        key: &ResourceKey,
        write: Write,
        expected_version: Option<u64>,
    ) -> Result<Resource, StoreError> {
        let s = &self.shared;
        let _g = s.gate.read().await;
        let _k = s.key_lock(key).lock().await;
        let r = s.inner.update(key, write, expected_version).await?;
        s.write().upsert(Arc::new(r.clone()));
        Ok(r)
    }

    async fn delete(
        &self,
        key: &ResourceKey,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        let s = &self.shared;
        let _g = s.gate.read().await;
        let _k = s.key_lock(key).lock().await;
        s.inner.delete(key, expected_version).await?;
        s.remove(key);
        Ok(())
    }

    /// Holds the stripes of every key in the batch (taken in ascending
    /// order, so two batches cannot deadlock) across the inner batch and the
    /// replica update, which is done under one replica lock: readers here see
    /// the whole batch or none of it.
    async fn apply_batch(&self, ops: Vec<BatchOp>) -> Result<BatchResults, StoreError> {
        let s = &self.shared;
        let _g = s.gate.read().await;
        let mut stripes: Vec<usize> = ops.iter().map(|op| s.stripe(op.key())).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(s.key_locks[i].lock().await);
        }
        let results = s.inner.apply_batch(ops).await?;
        {
            let mut index = s.write();
            for r in &results {
                match r {
                    Ok(Applied::Created(r)) | Ok(Applied::Updated(r)) => {
                        index.upsert(r.clone());
                    }
                    Ok(Applied::Deleted { key, .. }) => {
                        if key.kind() == ResourceKind::Mesh {
                            index.remove_mesh_contents(&MeshName::from(key.name().clone()));
                        }
                        index.remove(key);
                    }
                    Err(_) => {}
                }
            }
        }
        drop(guards);
        Ok(results)
    }

    fn watch(&self) -> broadcast::Receiver<ChangeEvent> {
        self.shared.feed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use serde_json::json;

    fn key(kind: ResourceKind, mesh: Option<&str>, name: &str) -> ResourceKey {
        ResourceKey::new(
            kind,
            mesh.map(|m| MeshName::new(m).unwrap()),
            kuma_model::ResourceName::new(name).unwrap(),
        )
        .unwrap()
    }

    fn w(spec: serde_json::Value) -> Write {
        Write {
            labels: Default::default(),
            spec,
            status: None,
        }
    }

    /// What the replica misses while not following the feed (as after a
    /// lagged receiver) is caught up by a reload, and announced.
    #[tokio::test]
    async fn reload_catches_up_and_announces_the_difference() {
        let mesh = key(ResourceKind::Mesh, None, "m");
        let kept = key(ResourceKind::MeshTimeout, Some("m"), "kept");
        let changed = key(ResourceKind::MeshTimeout, Some("m"), "changed");
        let inner = MemoryStore::new();
        inner.create(&mesh, w(json!({}))).await.unwrap();
        inner.create(&kept, w(json!({}))).await.unwrap();
        inner.create(&changed, w(json!({}))).await.unwrap();
        let cached = CachedStore::new(inner).await.unwrap();
        cached.task.abort();
        let mut rx = cached.watch();

        let other_mesh = key(ResourceKind::Mesh, None, "n");
        let added = key(ResourceKind::MeshRetry, Some("n"), "added");
        let inner = cached.inner();
        inner
            .update(&changed, w(json!({"v": 2})), None)
            .await
            .unwrap();
        inner.create(&other_mesh, w(json!({}))).await.unwrap();
        inner.create(&added, w(json!({}))).await.unwrap();
        inner.delete(&mesh, None).await.unwrap();
        assert!(cached.get(&kept).await.is_ok(), "not following: stale");

        resync(&cached.shared).await.unwrap();
        assert!(matches!(
            cached.get(&kept).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            cached.get(&mesh).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(cached.get(&added).await.unwrap().meta.version, 1);
        let mut got = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            got.push((ev.op, ev.key, ev.version));
        }
        assert_eq!(
            got,
            vec![
                (ChangeOp::Deleted, changed.clone(), 1),
                (ChangeOp::Deleted, kept, 1),
                (ChangeOp::Deleted, mesh, 1),
                (ChangeOp::Created, other_mesh, 1),
                (ChangeOp::Created, added, 1),
            ]
        );
    }

    /// Writes that bypass the cache reach it through the feed, and the
    /// cache's own event is sent only once the replica shows the write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_behind_its_back_arrive_before_their_event() {
        let inner = Arc::new(MemoryStore::new());
        let cached = CachedStore::new(inner.clone()).await.unwrap();
        let mut rx = cached.watch();
        let mesh = key(ResourceKind::Mesh, None, "m");
        let t = key(ResourceKind::MeshTimeout, Some("m"), "t");
        inner.create(&mesh, w(json!({}))).await.unwrap();
        inner.create(&t, w(json!({"v": 1}))).await.unwrap();
        for i in 2..50 {
            inner.update(&t, w(json!({"v": i})), None).await.unwrap();
        }
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            if ev.key == t {
                let seen = cached.get(&t).await.unwrap();
                assert!(
                    seen.meta.version >= ev.version,
                    "event {ev:?} announced before the replica had it"
                );
                if ev.version == 49 {
                    assert_eq!(seen.spec, json!({"v": 49}));
                    break;
                }
            }
        }
        inner.delete(&mesh, None).await.unwrap();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            if ev.key == mesh {
                assert!(cached.get(&t).await.is_err() && cached.get(&mesh).await.is_err());
                break;
            }
        }
    }
}
