//! Store changes -> affected proxies only -> regenerate -> snapshot cache.
//!
//! One task owns the in-memory view of every mesh. Store events and proxy
//! (dis)connections are batched (debounce), applied to the view, and only
//! the connected proxies they can affect are regenerated: the proxy itself,
//! proxies using a cluster whose endpoints changed, proxies referencing a
//! changed MeshService, and the whole mesh for a policy change. Unchanged
//! snapshots wake no stream.

use crate::meshservice::{self, HostnameTemplate, MANAGED_BY_GENERATOR, MANAGED_BY_LABEL};
use crate::views;
use kuma_model::{MeshName, ResourceKey, ResourceKind, ResourceName};
use kuma_policy::{Policy, PolicySet};
use kuma_store::{ChangeEvent, ListFilter, ResourceStore, StoreError, Write};
use kuma_xds::input::SERVICE_TAG;
use kuma_xds::plan::{EndpointSet, ResourcePlan};
use kuma_xds::{
    BuildMemo, MeshContext, MeshEndpoints, OutboundMemo, ProxyMeta, SlotHandle, SnapshotCache,
    Staged, generate_memo,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

/// What the sync task reacts to besides the store.
#[derive(Debug)]
pub enum Signal {
    Connected {
        mesh: String,
        name: String,
        meta: ProxyMeta,
    },
    Disconnected {
        mesh: String,
        name: String,
    },
    /// Resolves once everything signalled before it has been applied.
    Flush(oneshot::Sender<()>),
}

/// A handle to the sync task.
#[derive(Clone)]
pub struct SyncHandle {
    tx: mpsc::UnboundedSender<Signal>,
}

impl SyncHandle {
    pub fn signal(&self, s: Signal) {
        let _ = self.tx.send(s);
    }

    /// Waits until the task has applied everything signalled so far.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.signal(Signal::Flush(tx));
        let _ = rx.await;
    }
}

#[derive(Clone, Debug)]
pub struct SyncConfig {
    pub debounce: Duration,
    pub vip_cidr: (Ipv4Addr, u8),
    pub zone: String,
}

#[derive(Default)]
struct ProxyDeps {
    /// Its snapshot's key, made once.
    node_id: String,
    /// Its place in the snapshot cache, found once.
    slot: SlotHandle,
    /// What the proxy reported when it connected.
    meta: ProxyMeta,
    /// The Dataplane `services` and `all_services` were taken from.
    dataplane: Option<Arc<kuma_xds::input::DataplaneView>>,
    clusters: BTreeSet<String>,
    /// A digest of `clusters` in the order the plan lists them: a plan
    /// with the same clusters is recognised without a set lookup each.
    clusters_digest: u64,
    /// MeshService names and `kuma.io/service` values its outbounds name.
    services: BTreeSet<String>,
    /// Transparent proxying: depends on every MeshService.
    all_services: bool,
}

#[derive(Default)]
struct MeshState {
    ctx: Arc<MeshContext>,
    endpoints: Arc<MeshEndpoints>,
    endpoint_sig: BTreeMap<String, EndpointSet>,
    connected: BTreeMap<String, ProxyDeps>,
    /// The mesh's MeshTimeouts by name, kept current one event at a time.
    timeouts: BTreeMap<String, Policy>,
    /// `timeouts` changed since `ctx.timeouts` was compiled from it. Compiling
    /// waits until a proxy of the mesh is regenerated, so a burst of policy
    /// writes with nobody connected costs one `get` each.
    timeouts_dirty: bool,
}

#[derive(Default)]
struct Batch {
    dataplanes: BTreeMap<String, BTreeSet<String>>,
    services: BTreeMap<String, BTreeSet<String>>,
    /// MeshTimeouts written, by mesh.
    policies: BTreeMap<String, BTreeSet<String>>,
    meshes: BTreeSet<String>,
    connected: BTreeMap<String, BTreeMap<String, ProxyMeta>>,
    offline_changed: BTreeSet<String>,
    hostname_generators: bool,
    resync: bool,
    flushes: Vec<oneshot::Sender<()>>,
}

pub struct Sync {
    store: Arc<dyn ResourceStore>,
    cache: Arc<SnapshotCache>,
    config: SyncConfig,
    meshes: HashMap<String, MeshState>,
    offline: HashMap<String, BTreeSet<String>>,
    hostnames: Vec<HostnameTemplate>,
    rx: mpsc::UnboundedReceiver<Signal>,
}

/// Starts the sync task; it runs until the store's change feed closes.
pub fn spawn(
    store: Arc<dyn ResourceStore>,
    cache: Arc<SnapshotCache>,
    config: SyncConfig,
) -> SyncHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let changes = store.watch();
    let sync = Sync {
        store,
        cache,
        config,
        meshes: HashMap::new(),
        offline: HashMap::new(),
        hostnames: Vec::new(),
        rx,
    };
    tokio::spawn(sync.run(changes));
    SyncHandle { tx }
}

enum Input {
    Change(ChangeEvent),
    Lagged,
    Signal(Signal),
    Closed,
}

impl Sync {
    async fn next(&mut self, changes: &mut broadcast::Receiver<ChangeEvent>) -> Input {
        tokio::select! {
            c = changes.recv() => match c {
                Ok(ev) => Input::Change(ev),
                Err(broadcast::error::RecvError::Lagged(_)) => Input::Lagged,
                Err(broadcast::error::RecvError::Closed) => Input::Closed,
            },
            s = self.rx.recv() => match s {
                Some(s) => Input::Signal(s),
                None => Input::Closed,
            },
        }
    }

    async fn run(mut self, mut changes: broadcast::Receiver<ChangeEvent>) {
        let mut batch = Batch {
            resync: true,
            hostname_generators: true,
            ..Default::default()
        };
        self.apply(&mut batch).await;
        loop {
            let mut batch = Batch::default();
            match self.next(&mut changes).await {
                Input::Closed => return,
                // Changes of kinds no proxy is made from (DataplaneInsights,
                // 10k of them at every status flush) start no batch.
                first => {
                    if !self.add(&mut batch, first) {
                        continue;
                    }
                }
            }
            // Debounce: gather whatever arrives until a quiet gap after the
            // last change that matters, bounded overall.
            let debounce = self.config.debounce;
            let deadline = Instant::now() + debounce * 5;
            let mut quiet_at = Instant::now() + debounce;
            while batch.flushes.is_empty() {
                let until = tokio::time::Instant::from_std(quiet_at.min(deadline));
                match tokio::time::timeout_at(until, self.next(&mut changes)).await {
                    Ok(Input::Closed) | Err(_) => break,
                    Ok(input) => {
                        if self.add(&mut batch, input) {
                            quiet_at = Instant::now() + debounce;
                        }
                    }
                }
            }
            self.apply(&mut batch).await;
        }
    }

    /// Adds `input` to the batch; whether it can change anything.
    fn add(&mut self, b: &mut Batch, input: Input) -> bool {
        match input {
            Input::Change(ev) => {
                let mesh = || ev.key.mesh().map(ToString::to_string).unwrap_or_default();
                let name = || ev.key.name().to_string();
                match ev.key.kind() {
                    ResourceKind::Dataplane => {
                        b.dataplanes.entry(mesh()).or_default().insert(name());
                    }
                    ResourceKind::MeshService => {
                        b.services.entry(mesh()).or_default().insert(name());
                    }
                    ResourceKind::MeshTimeout => {
                        b.policies.entry(mesh()).or_default().insert(name());
                    }
                    ResourceKind::Mesh => {
                        b.meshes.insert(name());
                    }
                    ResourceKind::HostnameGenerator => b.hostname_generators = true,
                    _ => return false,
                }
            }
            Input::Lagged => b.resync = true,
            Input::Signal(Signal::Connected { mesh, name, meta }) => {
                if self.offline.get_mut(&mesh).is_some_and(|o| o.remove(&name)) {
                    b.offline_changed.insert(mesh.clone());
                }
                b.connected.entry(mesh).or_default().insert(name, meta);
            }
            Input::Signal(Signal::Disconnected { mesh, name }) => {
                if let Some(m) = self.meshes.get_mut(&mesh) {
                    m.connected.remove(&name);
                    // Its Dataplane went while it was connected: nobody
                    // needs its snapshot any more.
                    if !m.ctx.dataplanes.contains_key(&name) {
                        self.cache.remove(&crate::bootstrap::node_id(&mesh, &name));
                    }
                }
                self.offline.entry(mesh.clone()).or_default().insert(name);
                b.offline_changed.insert(mesh);
            }
            Input::Signal(Signal::Flush(tx)) => b.flushes.push(tx),
            Input::Closed => return false,
        }
        true
    }

    async fn apply(&mut self, b: &mut Batch) {
        let started = Instant::now();
        if let Err(error) = self.apply_inner(b).await {
            warn!(%error, "applying changes failed; resyncing");
            let mut again = Batch {
                resync: true,
                hostname_generators: true,
                ..Default::default()
            };
            if let Err(error) = self.apply_inner(&mut again).await {
                warn!(%error, "resync failed");
            }
        }
        for f in b.flushes.drain(..) {
            let _ = f.send(());
        }
        debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "applied changes"
        );
    }

    async fn apply_inner(&mut self, b: &mut Batch) -> Result<(), StoreError> {
        let store = self.store.clone();
        if b.hostname_generators {
            let gens = store
                .list(&ListFilter::all(ResourceKind::HostnameGenerator))
                .await?
                .items;
            self.hostnames = gens
                .iter()
                .filter_map(|g| HostnameTemplate::from_spec(g.key.name().as_str(), &g.spec))
                .collect();
            if self.hostnames.is_empty() {
                self.hostnames.push(HostnameTemplate::default_local());
            }
        }
        let mut reload: BTreeSet<String> = b.meshes.clone();
        if b.resync {
            for m in store
                .list(&ListFilter::all(ResourceKind::Mesh))
                .await?
                .items
            {
                reload.insert(m.key.name().to_string());
            }
            reload.extend(self.meshes.keys().cloned());
        }
        // Whole meshes (re)loaded: every connected proxy of them is affected.
        let mut regenerate: BTreeMap<String, Affected> = BTreeMap::new();
        for mesh in &reload {
            let Ok(mesh_name) = MeshName::new(mesh.as_str()) else {
                continue;
            };
            let exists = store
                .get(
                    &ResourceKey::global(
                        ResourceKind::Mesh,
                        ResourceName::new(mesh.as_str())
                            .map_err(|_| StoreError::MeshNotFound(mesh_name.clone()))?,
                    )
                    .expect("global kind"),
                )
                .await;
            match exists {
                Err(StoreError::NotFound(_)) => {
                    if let Some(state) = self.meshes.remove(mesh) {
                        for name in state.connected.keys() {
                            self.cache.remove(&crate::bootstrap::node_id(mesh, name));
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            let mut ctx = views::load_mesh_context(store.as_ref(), &mesh_name).await?;
            ctx.offline = self.offline.get(mesh).cloned().unwrap_or_default();
            let state = self.meshes.entry(mesh.clone()).or_default();
            state.timeouts = ctx
                .timeouts
                .policies()
                .map(|p| (p.name.clone(), p.clone()))
                .collect();
            state.timeouts_dirty = false;
            state.ctx = Arc::new(ctx);
            regenerate.entry(mesh.clone()).or_default().set_all();
            b.dataplanes.entry(mesh.clone()).or_default();
        }

        let mut touched: BTreeSet<String> = BTreeSet::new();
        touched.extend(b.dataplanes.keys().cloned());
        touched.extend(b.services.keys().cloned());
        touched.extend(b.policies.keys().cloned());
        touched.extend(b.connected.keys().cloned());
        touched.extend(b.offline_changed.iter().cloned());
        if b.hostname_generators {
            touched.extend(self.meshes.keys().cloned());
        }

        for mesh in touched {
            let Ok(mesh_name) = MeshName::new(mesh.as_str()) else {
                continue;
            };
            if !self.meshes.contains_key(&mesh) && !reload.contains(&mesh) {
                // A mesh first seen through one of its resources.
                let Ok(ctx) = views::load_mesh_context(store.as_ref(), &mesh_name).await else {
                    continue;
                };
                let state = self.meshes.entry(mesh.clone()).or_default();
                state.timeouts = ctx
                    .timeouts
                    .policies()
                    .map(|p| (p.name.clone(), p.clone()))
                    .collect();
                state.ctx = Arc::new(ctx);
            }
            let Some(state) = self.meshes.get_mut(&mesh) else {
                continue;
            };
            let ctx = Arc::make_mut(&mut state.ctx);
            let affected = regenerate.entry(mesh.clone()).or_default();

            for name in b.dataplanes.get(&mesh).into_iter().flatten() {
                let key = key(ResourceKind::Dataplane, &mesh_name, name)?;
                match store.get_shared(&key).await {
                    Ok(r) => match views::dataplane_view(&r) {
                        Ok(v) => {
                            ctx.dataplanes.insert(name.clone(), Arc::new(v));
                        }
                        Err(error) => warn!(%mesh, %name, %error, "dataplane does not parse"),
                    },
                    Err(StoreError::NotFound(_)) => {
                        ctx.dataplanes.remove(name);
                        if !state.connected.contains_key(name) {
                            self.cache.remove(&crate::bootstrap::node_id(&mesh, name));
                        }
                    }
                    Err(e) => return Err(e),
                }
                if state.connected.contains_key(name) {
                    affected.insert(name);
                }
            }
            let mut changed_services: BTreeSet<String> = BTreeSet::new();
            for name in b.services.get(&mesh).into_iter().flatten() {
                let key = key(ResourceKind::MeshService, &mesh_name, name)?;
                match store.get_shared(&key).await {
                    Ok(r) => match views::mesh_service_view(&r) {
                        Ok(v) => {
                            if let Some(tag) = v
                                .spec
                                .selector
                                .dataplane_tags
                                .as_ref()
                                .and_then(|t| t.get(SERVICE_TAG))
                            {
                                changed_services.insert(tag.clone());
                            }
                            ctx.services.insert(name.clone(), Arc::new(v));
                        }
                        Err(error) => warn!(%mesh, %name, %error, "meshservice does not parse"),
                    },
                    Err(StoreError::NotFound(_)) => {
                        ctx.services.remove(name);
                    }
                    Err(e) => return Err(e),
                }
                changed_services.insert(name.clone());
            }
            for name in b.policies.get(&mesh).into_iter().flatten() {
                let key = key(ResourceKind::MeshTimeout, &mesh_name, name)?;
                match store.get_shared(&key).await {
                    Ok(r) => {
                        state.timeouts.insert(name.clone(), views::policy_view(&r));
                    }
                    Err(StoreError::NotFound(_)) => {
                        state.timeouts.remove(name);
                    }
                    Err(e) => return Err(e),
                }
                state.timeouts_dirty = true;
                affected.set_all();
            }
            ctx.offline = self.offline.get(&mesh).cloned().unwrap_or_default();
            for (name, meta) in b.connected.get(&mesh).into_iter().flatten() {
                let deps = state.connected.entry(name.clone()).or_default();
                if deps.meta != *meta {
                    deps.meta = *meta;
                    // `all_services` depends on it.
                    deps.dataplane = None;
                }
                affected.insert(name);
            }

            // Endpoints: recompute when dataplanes, services or liveness moved.
            let needs_endpoints = b.dataplanes.get(&mesh).is_some_and(|s| !s.is_empty())
                || !changed_services.is_empty()
                || b.offline_changed.contains(&mesh)
                || reload.contains(&mesh);
            if needs_endpoints {
                let endpoints = MeshEndpoints::compute(ctx);
                let sig = endpoints.signature();
                let changed_clusters: BTreeSet<&String> = sig
                    .iter()
                    .filter(|(c, eps)| state.endpoint_sig.get(*c) != Some(*eps))
                    .map(|(c, _)| c)
                    .chain(state.endpoint_sig.keys().filter(|c| !sig.contains_key(*c)))
                    .collect();
                for (proxy, deps) in &state.connected {
                    if deps.clusters.iter().any(|c| changed_clusters.contains(c)) {
                        affected.insert(proxy);
                    }
                }
                state.endpoints = Arc::new(endpoints);
                state.endpoint_sig = sig;
            }
            if !changed_services.is_empty() {
                for (proxy, deps) in &state.connected {
                    if deps.all_services
                        || deps.services.iter().any(|s| changed_services.contains(s))
                    {
                        affected.insert(proxy);
                    }
                }
            }
        }

        // MeshServices from kuma.io/service tags (their writes come back as events).
        let generate_for: Vec<String> = b
            .dataplanes
            .iter()
            .filter(|(m, _)| self.meshes.contains_key(*m))
            .map(|(m, _)| m.clone())
            .chain(if b.hostname_generators {
                self.meshes.keys().cloned().collect()
            } else {
                Vec::new()
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for mesh in generate_for {
            if let Err(error) = self.sync_mesh_services(&mesh).await {
                warn!(%mesh, %error, "meshservice generation failed");
            }
        }

        let mut generated = 0usize;
        // Streams woken together once every affected proxy's snapshot is
        // set (see `SnapshotCache::stage`).
        let proxies: usize = regenerate
            .iter()
            .map(|(mesh, affected)| match affected {
                Affected::All => self.meshes.get(mesh).map_or(0, |s| s.connected.len()),
                Affected::Only(names) => names.len(),
            })
            .sum();
        // Sized up front: grown by doubling, a 10k-proxy batch reallocates
        // into fresh pages the kernel has to zero.
        let mut staged = Staged::with_capacity(proxies);
        for (mesh, affected) in regenerate {
            let Some(state) = self.meshes.get_mut(&mesh) else {
                continue;
            };
            if state.timeouts_dirty && !affected.is_empty() {
                let policies: Vec<Policy> = state.timeouts.values().cloned().collect();
                Arc::make_mut(&mut state.ctx).timeouts = Arc::new(PolicySet::new(&policies));
                state.timeouts_dirty = false;
            }
            let MeshState {
                ctx,
                endpoints,
                connected,
                ..
            } = state;
            let mut memo = OutboundMemo::default();
            let mut built_memo = BuildMemo::default();
            let mut regen = |name: &str, deps: &mut ProxyDeps| {
                let Some(dp) = ctx.dataplanes.get(name) else {
                    return;
                };
                let meta = deps.meta;
                let plan = generate_memo(ctx, endpoints, dp, meta, &mut memo);
                for w in &plan.warnings {
                    debug!(%mesh, %name, warning = %w, "generation warning");
                }
                refresh_deps(deps, &plan.resources, dp);
                generated += 1;
                if deps.node_id.is_empty() {
                    deps.node_id = crate::bootstrap::node_id(&mesh, name);
                }
                let snapshot = Arc::new(self.cache.build_shared(&plan.resources, &mut built_memo));
                self.cache
                    .stage(&mut deps.slot, &deps.node_id, snapshot, &mut staged);
            };
            match affected {
                Affected::All => {
                    for (name, deps) in connected.iter_mut() {
                        regen(name, deps);
                    }
                }
                Affected::Only(names) => {
                    for name in names {
                        if let Some(deps) = connected.get_mut(&name) {
                            regen(&name, deps);
                        }
                    }
                }
            }
        }
        let pushed = staged.wake();
        if generated > 0 {
            info!(generated, pushed, "proxies regenerated");
        }
        Ok(())
    }

    async fn sync_mesh_services(&mut self, mesh: &str) -> Result<(), StoreError> {
        let Some(state) = self.meshes.get(mesh) else {
            return Ok(());
        };
        let mesh_name =
            MeshName::new(mesh).map_err(|_| StoreError::MeshNotFound(MeshName::default_mesh()))?;
        let desired = meshservice::desired(&state.ctx, &self.config.zone);
        let existing =
            views::list(self.store.as_ref(), ResourceKind::MeshService, &mesh_name).await?;
        let mut used: BTreeSet<Ipv4Addr> = BTreeSet::new();
        for m in self.meshes.values() {
            for s in m.ctx.services.values() {
                used.extend(
                    s.status
                        .vips
                        .iter()
                        .filter_map(|v| v.ip.parse::<Ipv4Addr>().ok()),
                );
            }
        }
        let existing_by_name: BTreeMap<String, &kuma_model::Resource> = existing
            .iter()
            .map(|r| (r.key.name().to_string(), r))
            .collect();

        let write_status = |labels: &BTreeMap<String, String>,
                            name: &str,
                            current_vip: Option<Ipv4Addr>,
                            used: &mut BTreeSet<Ipv4Addr>| {
            let vip = current_vip.or_else(|| {
                let v = meshservice::allocate_vip(used, self.config.vip_cidr);
                if let Some(v) = v {
                    used.insert(v);
                }
                v
            });
            let hostnames: Vec<(String, String)> = self
                .hostnames
                .iter()
                .filter_map(|t| {
                    t.render(name, mesh, &self.config.zone, labels)
                        .map(|h| (h, t.name.clone()))
                })
                .collect();
            meshservice::status(vip, &hostnames)
        };

        for (name, want) in &desired {
            let key = key(ResourceKind::MeshService, &mesh_name, name)?;
            match existing_by_name.get(name) {
                None => {
                    let status = write_status(&want.labels, name, None, &mut used);
                    let w = Write {
                        labels: want.labels.clone(),
                        spec: want.spec.clone(),
                        status: Some(status),
                    };
                    match self.store.create(&key, w).await {
                        Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Some(r) => {
                    let generated = r.meta.labels.get(MANAGED_BY_LABEL).map(String::as_str)
                        == Some(MANAGED_BY_GENERATOR);
                    let current_vip = r
                        .status
                        .as_ref()
                        .and_then(|s| s["vips"][0]["ip"].as_str())
                        .and_then(|ip| ip.parse().ok());
                    let spec = if generated {
                        want.spec.clone()
                    } else {
                        r.spec.clone()
                    };
                    let labels = if generated {
                        want.labels.clone()
                    } else {
                        r.meta.labels.clone()
                    };
                    let status = write_status(&labels, name, current_vip, &mut used);
                    let status_same = r.status.as_ref().is_some_and(|s| {
                        s["vips"] == status["vips"] && s["addresses"] == status["addresses"]
                    });
                    if spec != r.spec || labels != r.meta.labels || !status_same {
                        let w = Write {
                            labels,
                            spec,
                            status: Some(status),
                        };
                        match self.store.update(&key, w, Some(r.meta.version)).await {
                            Ok(_)
                            | Err(StoreError::Conflict { .. })
                            | Err(StoreError::NotFound(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
        // User-written MeshServices also get a VIP and hostnames.
        for r in &existing {
            let name = r.key.name().to_string();
            if desired.contains_key(&name) {
                continue;
            }
            let has_vip = r
                .status
                .as_ref()
                .is_some_and(|s| s["vips"][0]["ip"].is_string());
            if !has_vip {
                let status = write_status(&r.meta.labels, &name, None, &mut used);
                let w = Write {
                    labels: r.meta.labels.clone(),
                    spec: r.spec.clone(),
                    status: Some(status),
                };
                match self.store.update(&r.key, w, Some(r.meta.version)).await {
                    Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

fn key(kind: ResourceKind, mesh: &MeshName, name: &str) -> Result<ResourceKey, StoreError> {
    let n = ResourceName::new(name).map_err(|_| StoreError::MeshNotFound(mesh.clone()))?;
    Ok(ResourceKey::in_mesh(kind, mesh.clone(), n).expect("mesh-scoped kind"))
}

/// The connected proxies of a mesh to regenerate.
#[derive(Debug)]
enum Affected {
    /// Every connected proxy (a mesh-wide change): no list of names built.
    All,
    Only(BTreeSet<String>),
}

impl Default for Affected {
    fn default() -> Self {
        Affected::Only(BTreeSet::new())
    }
}

impl Affected {
    fn insert(&mut self, name: &str) {
        if let Affected::Only(names) = self
            && !names.contains(name)
        {
            names.insert(name.to_string());
        }
    }

    fn set_all(&mut self) {
        *self = Affected::All;
    }

    fn is_empty(&self) -> bool {
        matches!(self, Affected::Only(names) if names.is_empty())
    }
}

/// Brings a proxy's dependencies up to its new plan. A change that moves
/// none of them (a policy change keeps every cluster, and the services
/// come from the Dataplane, which did not change) allocates nothing.
fn refresh_deps(
    deps: &mut ProxyDeps,
    resources: &[Arc<ResourcePlan>],
    dp: &Arc<kuma_xds::input::DataplaneView>,
) {
    let clusters = resources.iter().filter_map(|r| match &**r {
        ResourcePlan::Endpoints(e) => Some(&e.cluster),
        _ => None,
    });
    // The plan's names are shared by the proxies of the batch (in cache);
    // the set is this proxy's own, and looked at only when they differ.
    let digest = {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = foldhash::fast::FixedState::default().build_hasher();
        for c in clusters.clone() {
            c.hash(&mut h);
        }
        h.finish()
    };
    if digest != deps.clusters_digest
        && (clusters.clone().count() != deps.clusters.len()
            || !clusters.clone().all(|c| deps.clusters.contains(c)))
    {
        deps.clusters = clusters.cloned().collect();
    }
    deps.clusters_digest = digest;
    if deps.dataplane.as_ref().is_some_and(|d| Arc::ptr_eq(d, dp)) {
        return;
    }
    let net = &dp.spec.networking;
    deps.services = net
        .outbound
        .iter()
        .flat_map(|o| {
            let by_ref = o.backend_ref.as_ref().and_then(|b| b.name.as_ref());
            by_ref.into_iter().chain(o.tags.get(SERVICE_TAG))
        })
        .cloned()
        .collect();
    // The DNS table lists every MeshService.
    deps.all_services = deps.meta.dns_port.is_some()
        || net.transparent_proxying.is_some()
        || net
            .outbound
            .iter()
            .any(|o| o.backend_ref.as_ref().is_some_and(|b| b.name.is_none()));
    deps.dataplane = Some(dp.clone());
}
