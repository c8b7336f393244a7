//! Per-proxy snapshots. Equal resource plans are built and encoded once and
//! shared by `Arc` between every proxy that gets them.

use crate::envoy::to_any;
use crate::plan::{ResourcePlan, ResourceType};
use crate::wire::encode_resource;
use bytes::Bytes;
use envoy_types::pb::google::protobuf::Any;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

/// One encoded resource with its content version.
#[derive(Debug)]
pub struct VersionedResource {
    /// Shared with the snapshot's key and every stream's records.
    pub name: Arc<str>,
    /// Shared with every stream's record of what its client holds, so
    /// "already sent" is a pointer comparison.
    pub version: Arc<str>,
    pub any: Any,
    /// The delta `Resource` message (name, version, `any`), encoded once
    /// for every delta stream that sends it ([`crate::wire`]).
    pub delta: Bytes,
    pub plan: ResourcePlan,
}

/// Everything one proxy should have: one list sorted by type, then name
/// (one allocation per proxy; lookups by binary search).
#[derive(Debug, Default)]
pub struct Snapshot {
    entries: Vec<Arc<VersionedResource>>,
    /// Where each type's entries start (by [`ResourceType::index`]), and
    /// the end: [`Snapshot::of_type`] without touching the entries (each
    /// stream looks its types up on every change, and a proxy's own
    /// resources are rarely in cache by then).
    starts: [u32; ResourceType::ORDER.len() + 1],
}

impl Snapshot {
    /// From resources in any order; of two with the same type and name, the later one.
    pub fn new(mut entries: Vec<Arc<VersionedResource>>) -> Self {
        // Stable: equal keys stay in their order, and the last of them is kept.
        entries.sort_by(|a, b| Self::key(a).cmp(&Self::key(b)));
        let mut kept: Vec<Arc<VersionedResource>> = Vec::with_capacity(entries.len());
        for e in entries {
            match kept.last_mut() {
                Some(last) if Self::key(last) == Self::key(&e) => *last = e,
                _ => kept.push(e),
            }
        }
        let mut starts = [0u32; ResourceType::ORDER.len() + 1];
        for (i, t) in ResourceType::ORDER.into_iter().enumerate() {
            starts[i] = kept.partition_point(|r| r.plan.resource_type() < t) as u32;
        }
        starts[ResourceType::ORDER.len()] = kept.len() as u32;
        Snapshot {
            entries: kept,
            starts,
        }
    }

    fn key(r: &VersionedResource) -> (ResourceType, &str) {
        (r.plan.resource_type(), &r.name)
    }

    /// The resources of type `t`, by name.
    pub fn of_type(&self, t: ResourceType) -> &[Arc<VersionedResource>] {
        let i = t.index();
        &self.entries[self.starts[i] as usize..self.starts[i + 1] as usize]
    }

    pub fn get(&self, t: ResourceType, name: &str) -> Option<&Arc<VersionedResource>> {
        find(self.of_type(t), name)
    }

    /// Every resource, by type and then name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<VersionedResource>> {
        self.entries.iter()
    }

    /// Whether both hold the same names at the same versions.
    pub fn same_as(&self, other: &Snapshot) -> bool {
        self.entries.len() == other.entries.len()
            && self.entries.iter().zip(&other.entries).all(|(a, b)| {
                Arc::ptr_eq(a, b) || (Self::key(a) == Self::key(b) && a.version == b.version)
            })
    }
}

/// `name` in resources of one type, as [`Snapshot::of_type`] lists them.
pub fn find<'a>(
    of: &'a [Arc<VersionedResource>],
    name: &str,
) -> Option<&'a Arc<VersionedResource>> {
    of.binary_search_by(|r| (*r.name).cmp(name))
        .ok()
        .map(|i| &of[i])
}

/// A version for a set of resources (state of the world): a hash of their names and versions.
pub fn set_version<'a>(items: impl Iterator<Item = &'a Arc<VersionedResource>>) -> String {
    let mut h = DefaultHasher::new();
    for r in items {
        r.name.hash(&mut h);
        r.version.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// The resources of one batch's shared plans, by the plan's address (the
/// plan is kept alive here, so no other takes its address while the memo
/// lives). See [`SnapshotCache::build_shared`].
#[derive(Default)]
pub struct BuildMemo {
    built: foldhash::HashMap<usize, (Arc<ResourcePlan>, Arc<VersionedResource>)>,
}

/// Snapshots of every proxy, each in a slot its ADS streams follow.
#[derive(Default)]
pub struct SnapshotCache {
    proxies: Mutex<foldhash::HashMap<String, Arc<Slot>>>,
    interned: Mutex<Interned>,
}

/// One proxy's snapshot and the streams waiting for the next one. A
/// stream checks it each time its task runs (every ACK, every change). A
/// stream whose waker is registered and not yet taken finds that out from
/// `drains` alone, without the lock (see [`SnapshotWatch::poll_changed`]).
#[derive(Default)]
struct Slot {
    /// How many times the waiting wakers were taken (by a new snapshot, or
    /// the proxy being forgotten). Changed only under `state`'s lock.
    drains: AtomicU64,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    snapshot: Option<Arc<Snapshot>>,
    /// Grows with every new snapshot; a watch compares it with the one it saw.
    version: u64,
    /// The proxy was forgotten: its watches end.
    closed: bool,
    waiting: Waiting,
    next_watch: u64,
}

/// Watches waiting for the next snapshot, by watch id. A proxy has one
/// stream, so one waker, almost always: it is kept in the slot itself
/// (no other allocation to reach on every check).
#[derive(Default)]
struct Waiting {
    first: Option<(u64, Waker)>,
    more: Vec<(u64, Waker)>,
}

impl Waiting {
    fn register(&mut self, id: u64, waker: &Waker) {
        let entry = match &mut self.first {
            Some(first) if first.0 == id => Some(first),
            _ => self.more.iter_mut().find(|(i, _)| *i == id),
        };
        if let Some((_, w)) = entry {
            if !w.will_wake(waker) {
                *w = waker.clone();
            }
        } else if self.first.is_none() {
            self.first = Some((id, waker.clone()));
        } else {
            self.more.push((id, waker.clone()));
        }
    }

    fn remove(&mut self, id: u64) {
        if self.first.as_ref().is_some_and(|(i, _)| *i == id) {
            self.first = None;
        } else {
            self.more.retain(|(i, _)| *i != id);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    /// Every waker, each once; none left.
    fn take(&mut self, into: &mut Vec<Waker>) {
        into.extend(self.first.take().map(|(_, w)| w));
        into.extend(self.more.drain(..).map(|(_, w)| w));
    }
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the waiting wakers (under `st`, this slot's lock).
    fn drain(&self, st: &mut SlotState, into: &mut Vec<Waker>) {
        self.drains.fetch_add(1, Ordering::Release);
        st.waiting.take(into);
    }
}

/// Follows one proxy's snapshot (see [`SnapshotCache::watch`]).
pub struct SnapshotWatch {
    slot: Arc<Slot>,
    id: u64,
    seen: u64,
    /// The waker registered in the slot, and the slot's `drains` then:
    /// while `drains` has not moved, it is still there.
    registered: Option<(u64, Waker)>,
}

impl SnapshotWatch {
    /// The current snapshot (`None` until the first is set), without
    /// marking it seen.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.slot.lock().snapshot.clone()
    }

    /// A snapshot newer than the last one this watch returned (`Some`), or
    /// the end (`None`): the proxy was forgotten.
    pub fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<Option<Option<Arc<Snapshot>>>> {
        // Nothing new since the waker was registered, and it is the same
        // waker: nothing to do. A snapshot set after this load takes the
        // registered waker, which then wakes the task to look again.
        if let Some((drains, waker)) = &self.registered
            && self.slot.drains.load(Ordering::Acquire) == *drains
            && waker.will_wake(cx.waker())
        {
            return Poll::Pending;
        }
        let mut st = self.slot.lock();
        if st.version != self.seen {
            self.seen = st.version;
            return Poll::Ready(Some(st.snapshot.clone()));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        st.waiting.register(self.id, cx.waker());
        self.registered = Some((self.slot.drains.load(Ordering::Relaxed), cx.waker().clone()));
        Poll::Pending
    }

    /// [`SnapshotWatch::poll_changed`] as a future.
    pub async fn changed(&mut self) -> Option<Option<Arc<Snapshot>>> {
        std::future::poll_fn(|cx| self.poll_changed(cx)).await
    }
}

impl Drop for SnapshotWatch {
    fn drop(&mut self) {
        self.slot.lock().waiting.remove(self.id);
    }
}

/// A proxy's place in a [`SnapshotCache`], kept by whoever sets its
/// snapshots: a set through it needs no lookup by node id. Empty until
/// first used.
#[derive(Default)]
pub struct SlotHandle(Option<Arc<Slot>>);

/// Snapshots set by [`SnapshotCache::stage`] whose streams are still to be
/// woken, all at once by [`Staged::wake`].
#[derive(Default)]
pub struct Staged {
    wake: Vec<Waker>,
    changed: usize,
}

impl Drop for Staged {
    /// Dropped without [`Staged::wake`] (an early return): the streams of
    /// the snapshots set are woken anyway, never left parked.
    fn drop(&mut self) {
        self.wake_all();
    }
}

impl Staged {
    /// Room for the streams of `proxies` proxies (one each, mostly).
    pub fn with_capacity(proxies: usize) -> Self {
        Staged {
            wake: Vec::with_capacity(proxies),
            changed: 0,
        }
    }

    /// Wakes the streams of every changed snapshot; returns how many changed.
    pub fn wake(mut self) -> usize {
        self.wake_all();
        self.changed
    }

    fn wake_all(&mut self) {
        for waker in self.wake.drain(..) {
            waker.wake();
        }
    }
}

/// Encoded resources alive somewhere, by (type, 64-bit content digest). The
/// digest covers the name and every field of the plan; a hit is also checked
/// for the same name.
#[derive(Default)]
struct Interned {
    map: foldhash::HashMap<(ResourceType, u64), Weak<VersionedResource>>,
    sweep_at: usize,
}

impl Interned {
    /// The resource `plan` describes: the one alive already, or encoded now.
    fn intern(&mut self, plan: &ResourcePlan) -> Arc<VersionedResource> {
        let digest = plan.digest();
        let key = (plan.resource_type(), digest);
        if let Some(r) = self.map.get(&key).and_then(Weak::upgrade)
            && *r.name == *plan.name()
        {
            return r;
        }
        let version: Arc<str> = format!("{digest:016x}").into();
        let any = to_any(plan);
        let r = Arc::new(VersionedResource {
            name: plan.name().into(),
            delta: encode_resource(plan.name(), &version, &any),
            version,
            any,
            plan: plan.clone(),
        });
        self.map.insert(key, Arc::downgrade(&r));
        if self.map.len() > self.sweep_at {
            self.map.retain(|_, w| w.strong_count() > 0);
            self.sweep_at = (self.map.len() * 2).max(1024);
        }
        r
    }
}

impl SnapshotCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock_interned(&self) -> std::sync::MutexGuard<'_, Interned> {
        self.interned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds a snapshot from plans (without storing it), under one lock
    /// of the encoded resources for all of them.
    pub fn build<P: std::borrow::Borrow<ResourcePlan>>(&self, plans: &[P]) -> Snapshot {
        let entries = {
            let mut interned = self.lock_interned();
            plans.iter().map(|p| interned.intern(p.borrow())).collect()
        };
        Snapshot::new(entries)
    }

    /// [`SnapshotCache::build`] for one proxy of a batch whose plans share
    /// what they have in common by `Arc` ([`crate::OutboundMemo`]): a
    /// shared plan is digested and looked up once per batch, through
    /// `memo`, instead of once per proxy.
    pub fn build_shared(&self, plans: &[Arc<ResourcePlan>], memo: &mut BuildMemo) -> Snapshot {
        let entries = {
            let mut interned = self.lock_interned();
            plans
                .iter()
                .map(|p| {
                    if Arc::strong_count(p) == 1 {
                        // This proxy's own: nobody else gets this one.
                        return interned.intern(p);
                    }
                    let key = Arc::as_ptr(p) as usize;
                    if let Some((_, r)) = memo.built.get(&key) {
                        return r.clone();
                    }
                    let r = interned.intern(p);
                    memo.built.insert(key, (p.clone(), r.clone()));
                    r
                })
                .collect()
        };
        Snapshot::new(entries)
    }

    /// Sets a proxy's snapshot and wakes its streams. Returns whether
    /// anything changed for it.
    pub fn set(&self, node_id: &str, plans: &[ResourcePlan]) -> bool {
        let mut staged = Staged::default();
        let snap = Arc::new(self.build(plans));
        self.stage(&mut SlotHandle::default(), node_id, snap, &mut staged);
        staged.wake() == 1
    }

    /// Sets a proxy's snapshot (through `handle`, which remembers its slot)
    /// without waking its streams yet: building every snapshot of a change
    /// first and then waking all their streams in one go ([`Staged::wake`])
    /// lets the threads that serve the streams find them queued, instead of
    /// being woken (and parking again) once per proxy while the rest are
    /// still being built.
    pub fn stage(
        &self,
        handle: &mut SlotHandle,
        node_id: &str,
        snap: Arc<Snapshot>,
        staged: &mut Staged,
    ) {
        loop {
            let slot = handle.0.get_or_insert_with(|| {
                self.lock_proxies()
                    .entry(node_id.to_string())
                    .or_default()
                    .clone()
            });
            let mut st = slot.lock();
            if st.closed {
                // Forgotten since the handle was made: the proxy's slot
                // now is whichever the cache holds (or a new one).
                drop(st);
                handle.0 = None;
                continue;
            }
            if st.snapshot.as_ref().is_some_and(|c| c.same_as(&snap)) {
                return;
            }
            st.snapshot = Some(snap);
            st.version += 1;
            slot.drain(&mut st, &mut staged.wake);
            staged.changed += 1;
            return;
        }
    }

    fn lock_proxies(&self) -> std::sync::MutexGuard<'_, foldhash::HashMap<String, Arc<Slot>>> {
        self.proxies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows a proxy's snapshot from the current one on (which counts as
    /// seen); `None` until the first one is set.
    pub fn watch(&self, node_id: &str) -> SnapshotWatch {
        let slot = {
            let mut proxies = self.lock_proxies();
            proxies.entry(node_id.to_string()).or_default().clone()
        };
        let (id, seen) = {
            let mut st = slot.lock();
            st.next_watch += 1;
            (st.next_watch, st.version)
        };
        SnapshotWatch {
            slot,
            id,
            seen,
            registered: None,
        }
    }

    pub fn get(&self, node_id: &str) -> Option<Arc<Snapshot>> {
        let slot = self.lock_proxies().get(node_id)?.clone();
        slot.lock().snapshot.clone()
    }

    /// Forgets a proxy (its Dataplane is gone): its watches end, and a
    /// stream still opening gets no snapshot from it.
    pub fn remove(&self, node_id: &str) {
        let mut waiting = Vec::new();
        {
            // Closed before the map's lock is let go: a `stage` through an
            // old handle either finds the slot closed (and looks the proxy
            // up again) or sets it before this clears it, never sets a
            // slot that a new watch does not follow.
            let mut proxies = self.lock_proxies();
            if let Some(slot) = proxies.remove(node_id) {
                let mut st = slot.lock();
                st.closed = true;
                st.snapshot = None;
                slot.drain(&mut st, &mut waiting);
            }
        }
        for waker in waiting {
            waker.wake();
        }
    }

    /// Number of distinct encoded resources alive (for metrics and the benchmark).
    pub fn interned_len(&self) -> usize {
        self.lock_interned()
            .map
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ClusterPlan, ClusterSource, EndpointSet, EndpointsPlan, Protocol};
    use crate::timeout::ClusterTimeouts;

    fn cluster(name: &str, connect_ms: u64) -> ResourcePlan {
        ResourcePlan::Cluster(ClusterPlan {
            name: name.into(),
            protocol: Protocol::Tcp,
            source: ClusterSource::Eds,
            timeouts: ClusterTimeouts {
                connection_ms: connect_ms,
                ..ClusterTimeouts::default()
            },
        })
    }

    fn endpoints(name: &str) -> ResourcePlan {
        ResourcePlan::Endpoints(EndpointsPlan {
            cluster: name.into(),
            endpoints: EndpointSet::new(Vec::new()),
        })
    }

    #[test]
    fn snapshots_list_by_type_and_name_and_keep_the_last_duplicate() {
        let cache = SnapshotCache::new();
        let snap = cache.build(&[
            endpoints("b"),
            cluster("b", 1),
            cluster("a", 1),
            cluster("b", 2),
            endpoints("a"),
        ]);
        let names =
            |t| -> Vec<String> { snap.of_type(t).iter().map(|r| r.name.to_string()).collect() };
        assert_eq!(names(ResourceType::Cluster), ["a", "b"]);
        assert_eq!(names(ResourceType::Endpoints), ["a", "b"]);
        assert!(names(ResourceType::Listener).is_empty());
        assert!(names(ResourceType::Route).is_empty());
        let b = snap.get(ResourceType::Cluster, "b").expect("b");
        assert_eq!(b.plan, cluster("b", 2));
        assert!(snap.get(ResourceType::Cluster, "c").is_none());
        assert!(snap.get(ResourceType::Listener, "a").is_none());
        assert_eq!(snap.iter().count(), 4);

        // Equal plans are one shared entry; same_as compares names and versions.
        let again = cache.build(&[
            cluster("a", 1),
            cluster("b", 2),
            endpoints("a"),
            endpoints("b"),
        ]);
        assert!(snap.same_as(&again));
        assert!(Arc::ptr_eq(
            b,
            again.get(ResourceType::Cluster, "b").expect("b")
        ));
        let changed = cache.build(&[
            cluster("a", 1),
            cluster("b", 3),
            endpoints("a"),
            endpoints("b"),
        ]);
        assert!(!snap.same_as(&changed));
    }

    #[tokio::test]
    async fn watches_see_newer_snapshots_once_and_end_when_the_proxy_is_forgotten() {
        use std::task::Poll;
        let cache = SnapshotCache::new();
        let mut early = cache.watch("p");
        assert!(early.latest().is_none());
        assert!(cache.set("p", &[cluster("a", 1)]));
        // A watch made now starts from the current snapshot: nothing new for it.
        let mut late = cache.watch("p");
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(late.poll_changed(&mut cx).is_pending());
        assert!(late.latest().is_some());
        // The earlier watch sees the snapshot once.
        let got = early.changed().await.expect("open").expect("a snapshot");
        assert!(got.get(ResourceType::Cluster, "a").is_some());
        assert!(early.poll_changed(&mut cx).is_pending());
        // An equal snapshot changes nothing and wakes nobody.
        assert!(!cache.set("p", &[cluster("a", 1)]));
        assert!(early.poll_changed(&mut cx).is_pending());
        // A new one wakes the waiting watches; a dropped watch leaves no waker behind.
        let waiting = tokio::spawn(async move { late.changed().await });
        tokio::task::yield_now().await;
        let mut dropped = cache.watch("p");
        assert!(dropped.poll_changed(&mut cx).is_pending());
        let waiting_now = || cache.proxies.lock().unwrap()["p"].lock().waiting.len();
        // `early`, `late` and `dropped`.
        assert_eq!(waiting_now(), 3);
        drop(dropped);
        assert_eq!(waiting_now(), 2);
        assert!(cache.set("p", &[cluster("a", 2)]));
        let got = waiting.await.unwrap().expect("open").expect("a snapshot");
        assert_eq!(
            got.get(ResourceType::Cluster, "a").unwrap().plan,
            cluster("a", 2)
        );
        assert!(matches!(
            early.poll_changed(&mut cx),
            Poll::Ready(Some(Some(_)))
        ));
        // Forgotten: the watch ends, and the proxy's snapshot is gone.
        cache.remove("p");
        assert!(matches!(early.poll_changed(&mut cx), Poll::Ready(None)));
        assert!(
            early.latest().is_none(),
            "a stream still opening gets nothing"
        );
        assert!(cache.get("p").is_none());
    }

    /// A waker that counts its wakes.
    fn counting() -> (Waker, Arc<std::sync::atomic::AtomicUsize>) {
        struct Count(Arc<std::sync::atomic::AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        (Waker::from(Arc::new(Count(n.clone()))), n)
    }

    #[test]
    fn a_watch_polled_again_keeps_its_waker_and_a_new_task_replaces_it() {
        let cache = SnapshotCache::new();
        let mut watch = cache.watch("p");
        let (a, woken_a) = counting();
        let (b, woken_b) = counting();
        let waiting = || cache.proxies.lock().unwrap()["p"].lock().waiting.len();
        // Polled again and again with the same waker (every ACK): one
        // registration, and a new snapshot wakes it once.
        for _ in 0..3 {
            assert!(pending(&mut watch, &a));
        }
        assert_eq!(waiting(), 1);
        assert!(cache.set("p", &[cluster("a", 1)]));
        assert_eq!(woken_a.load(Ordering::SeqCst), 1);
        sees_one_new(&mut watch, &a);
        // Registered with `a`, then polled from another task: `b` is woken.
        assert!(pending(&mut watch, &b));
        assert!(cache.set("p", &[cluster("a", 2)]));
        assert_eq!(woken_a.load(Ordering::SeqCst), 1);
        assert_eq!(woken_b.load(Ordering::SeqCst), 1);
        // Nothing registered twice.
        sees_one_new(&mut watch, &b);
        assert_eq!(waiting(), 1);
        // Forgotten: the registered waker is woken and the watch ends.
        cache.remove("p");
        assert_eq!(woken_b.load(Ordering::SeqCst), 2);
        assert!(matches!(
            watch.poll_changed(&mut Context::from_waker(&b)),
            Poll::Ready(None)
        ));
    }

    /// `p`'s snapshot set to one cluster, its streams not woken yet.
    fn staged_into(cache: &SnapshotCache, handle: &mut SlotHandle, connect_ms: u64) -> Staged {
        let mut staged = Staged::default();
        let snap = Arc::new(cache.build(&[cluster("a", connect_ms)]));
        cache.stage(handle, "p", snap, &mut staged);
        staged
    }

    /// The watch has one new snapshot, then nothing.
    fn sees_one_new(watch: &mut SnapshotWatch, waker: &Waker) {
        assert!(matches!(
            watch.poll_changed(&mut Context::from_waker(waker)),
            Poll::Ready(Some(Some(_)))
        ));
        assert!(pending(watch, waker));
    }

    fn pending(watch: &mut SnapshotWatch, waker: &Waker) -> bool {
        watch
            .poll_changed(&mut Context::from_waker(waker))
            .is_pending()
    }

    #[test]
    fn a_slot_handle_follows_a_proxy_forgotten_and_back() {
        let cache = SnapshotCache::new();
        let mut handle = SlotHandle::default();
        let stage =
            |handle: &mut SlotHandle, connect_ms| staged_into(&cache, handle, connect_ms).wake();
        let mut first = cache.watch("p");
        assert_eq!(stage(&mut handle, 1), 1);
        assert_eq!(stage(&mut handle, 1), 0, "the same snapshot again");
        let (w, woken) = counting();
        sees_one_new(&mut first, &w);
        // Staged: set, but its stream is woken only by `wake`.
        let staged = staged_into(&cache, &mut handle, 2);
        assert_eq!(woken.load(Ordering::SeqCst), 0);
        assert_eq!(staged.wake(), 1);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        // Dropped without `wake` (an early return): woken all the same.
        sees_one_new(&mut first, &w);
        drop(staged_into(&cache, &mut handle, 5));
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        // The proxy is forgotten and comes back: the old handle reaches
        // the new slot, so the new stream gets the snapshot.
        cache.remove("p");
        let mut second = cache.watch("p");
        assert_eq!(stage(&mut handle, 3), 1);
        let got = futures::executor::block_on(second.changed())
            .expect("open")
            .expect("a snapshot");
        assert_eq!(
            got.get(ResourceType::Cluster, "a").unwrap().plan,
            cluster("a", 3)
        );
        assert!(Arc::ptr_eq(&cache.get("p").expect("set"), &got));
    }
}
