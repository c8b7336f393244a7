//! The delta sync engine, independent of which end dials.
//!
//! ```text
//!  sender (global on GlobalToZoneSync, zone on ZoneToGlobalSync)
//!    store change feed -> per-kind desired map -> diff against what the peer
//!    ACKed -> DeltaDiscoveryResponse (one in flight per kind; NACK = backoff)
//!
//!  receiver (zone on GlobalToZoneSync, global on ZoneToGlobalSync)
//!    subscribe every kind with initial_resource_versions from its store ->
//!    apply each response to the store -> ACK, or NACK with the reason
//! ```
//!
//! Versions are content hashes ([`Wire::version`]), so a receiver that
//! restarted can say what it holds and is sent only what changed.

use crate::mapping::{MapError, Wire, split_delta_name};
use async_trait::async_trait;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use futures::{Stream, StreamExt};
use kuma_model::specs::{self, Context};
use kuma_model::{Resource, ResourceKey, ResourceKind, Scope};
use kuma_store::{ChangeOp, ListFilter, ResourceStore, StoreError, Write};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tracing::{debug, warn};

/// Kuma's default KDS message size limit.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;

/// Tuning shared by both ends.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// A response larger than this is not sent; the error names the kind and size.
    pub max_message_bytes: usize,
    /// First wait after a NACK; doubles per consecutive NACK of a kind.
    pub nack_backoff: Duration,
    pub nack_backoff_max: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            nack_backoff: Duration::from_millis(500),
            nack_backoff_max: Duration::from_secs(30),
        }
    }
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The peer's stream failed or closed. Reconnecting may help.
    #[error("stream closed: {0}")]
    Stream(#[source] tonic::Status),
    /// Our side of the stream went away.
    #[error("stream closed by this side")]
    Closed,
    /// The store failed while reading what to send. Retryable.
    #[error("store failure: {0}")]
    Store(#[from] StoreError),
}

/// What a sender watches: one side's store, through a mapping.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// The mapped resources of `kind` this peer should hold, keyed by their
    /// key in the local store.
    async fn list(&self, kind: ResourceKind) -> Result<Vec<(ResourceKey, Wire)>, StoreError>;
    /// The mapped form of one local resource, `None` when absent or not for this peer.
    async fn get(&self, key: &ResourceKey) -> Result<Option<Wire>, StoreError>;
    fn watch(&self) -> broadcast::Receiver<kuma_store::ChangeEvent>;
}

/// A [`Source`] over a store and a mapping function.
pub struct StoreSource<F> {
    pub store: Arc<dyn ResourceStore>,
    pub map: F,
}

#[async_trait]
impl<F> Source for StoreSource<F>
where
    F: Fn(&Resource) -> Option<Wire> + Send + Sync + 'static,
{
    async fn list(&self, kind: ResourceKind) -> Result<Vec<(ResourceKey, Wire)>, StoreError> {
        let page = self.store.list(&ListFilter::all(kind)).await?;
        Ok(page
            .items
            .iter()
            .filter_map(|r| (self.map)(r).map(|w| (r.key.clone(), w)))
            .collect())
    }
    async fn get(&self, key: &ResourceKey) -> Result<Option<Wire>, StoreError> {
        match self.store.get(key).await {
            Ok(r) => Ok((self.map)(&r)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn watch(&self) -> broadcast::Receiver<kuma_store::ChangeEvent> {
        self.store.watch()
    }
}

/// Counters a sender reports (the global turns them into ZoneInsight stats).
pub trait SyncObserver: Send + Sync + 'static {
    fn node(&self, _node: &Node) {}
    fn sent(&self, _kind: ResourceKind) {}
    fn acked(&self, _kind: ResourceKind) {}
    fn nacked(&self, _kind: ResourceKind, _reason: &str) {}
    fn oversized(&self, _kind: ResourceKind, _bytes: usize) {}
}

/// An observer that records nothing.
pub struct NoObserver;
impl SyncObserver for NoObserver {}

#[derive(Default)]
struct SendState {
    subscribed: bool,
    loaded: bool,
    desired: BTreeMap<String, (String, Wire)>,
    by_key: HashMap<ResourceKey, String>,
    acked: BTreeMap<String, String>,
    inflight: Option<(String, BTreeMap<String, String>)>,
    dirty: bool,
    nacks: u32,
    retry_at: Option<Instant>,
}

/// Serves `kinds` from `source` to one peer: reads its requests from
/// `requests`, writes responses to `responses`. Returns when either side closes.
pub async fn run_sender<S, R>(
    source: Arc<dyn Source>,
    kinds: Vec<ResourceKind>,
    config: SyncConfig,
    observer: Arc<dyn SyncObserver>,
    mut requests: S,
    responses: mpsc::Sender<DeltaDiscoveryResponse>,
) -> Result<(), SyncError>
where
    S: Stream<Item = Result<DeltaDiscoveryRequest, R>> + Unpin + Send,
    R: Into<tonic::Status>,
{
    let mut feed = source.watch();
    let mut state: BTreeMap<ResourceKind, SendState> =
        kinds.iter().map(|k| (*k, SendState::default())).collect();
    let mut nonce: u64 = 0;
    loop {
        let next_retry = state.values().filter_map(|s| s.retry_at).min();
        tokio::select! {
            req = requests.next() => match req {
                None => return Ok(()),
                Some(Err(e)) => return Err(SyncError::Stream(e.into())),
                Some(Ok(req)) => on_request(&mut state, req, observer.as_ref(), &config),
            },
            ev = feed.recv() => match ev {
                Ok(ev) => {
                    let mesh_gone = ev.key.kind() == ResourceKind::Mesh && ev.op == ChangeOp::Deleted;
                    if mesh_gone {
                        // The cascade may not be on the feed: re-read mesh-scoped kinds.
                        for (k, s) in state.iter_mut() {
                            if k.scope() == Scope::Mesh && s.loaded {
                                s.loaded = false;
                                s.dirty = true;
                            }
                        }
                    }
                    if let Some(s) = state.get_mut(&ev.key.kind()).filter(|s| s.loaded) {
                        let wire = source.get(&ev.key).await?;
                        if let Some(old) = s.by_key.remove(&ev.key) {
                            s.desired.remove(&old);
                        }
                        if let Some(w) = wire {
                            let name = w.delta_name();
                            s.by_key.insert(ev.key.clone(), name.clone());
                            s.desired.insert(name, (w.version(), w));
                        }
                        s.dirty = true;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    for s in state.values_mut() {
                        s.loaded = false;
                        s.dirty = true;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Err(SyncError::Closed),
            },
            _ = sleep_until_opt(next_retry) => {
                let now = Instant::now();
                for s in state.values_mut() {
                    if s.retry_at.is_some_and(|t| t <= now) {
                        s.retry_at = None;
                    }
                }
            }
        }
        // Push what changed, in kind order (Mesh first: zones need it for the rest).
        for (kind, s) in state.iter_mut() {
            if !s.subscribed || !s.dirty || s.inflight.is_some() || s.retry_at.is_some() {
                continue;
            }
            if !s.loaded {
                s.desired.clear();
                s.by_key.clear();
                for (key, w) in source.list(*kind).await? {
                    let name = w.delta_name();
                    s.by_key.insert(key, name.clone());
                    s.desired.insert(name, (w.version(), w));
                }
                s.loaded = true;
            }
            s.dirty = false;
            let mut resources = Vec::new();
            let mut versions = s.acked.clone();
            for (name, (version, w)) in &s.desired {
                if s.acked.get(name) != Some(version) {
                    resources.push(w.to_envoy());
                    versions.insert(name.clone(), version.clone());
                }
            }
            let removed: Vec<String> = s
                .acked
                .keys()
                .filter(|n| !s.desired.contains_key(*n))
                .cloned()
                .collect();
            for n in &removed {
                versions.remove(n);
            }
            if resources.is_empty() && removed.is_empty() {
                continue;
            }
            nonce += 1;
            let resp = DeltaDiscoveryResponse {
                system_version_info: nonce.to_string(),
                type_url: kind.name().to_string(),
                nonce: nonce.to_string(),
                resources,
                removed_resources: removed,
                ..Default::default()
            };
            let size = resp.encoded_len();
            if size > config.max_message_bytes {
                warn!(kind = %kind, bytes = size, limit = config.max_message_bytes,
                    "KDS response exceeds the message size limit and is not sent");
                observer.oversized(*kind, size);
                continue;
            }
            debug!(kind = %kind, resources = resp.resources.len(), removed = resp.removed_resources.len(), "KDS push");
            s.inflight = Some((resp.nonce.clone(), versions));
            observer.sent(*kind);
            if responses.send(resp).await.is_err() {
                return Err(SyncError::Closed);
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn on_request(
    state: &mut BTreeMap<ResourceKind, SendState>,
    req: DeltaDiscoveryRequest,
    observer: &dyn SyncObserver,
    config: &SyncConfig,
) {
    if let Some(node) = &req.node
        && node.metadata.is_some()
    {
        observer.node(node);
    }
    let Some(kind) = ResourceKind::from_name(&req.type_url) else {
        warn!(type_url = %req.type_url, "KDS request for an unknown type");
        return;
    };
    let Some(s) = state.get_mut(&kind) else {
        debug!(kind = %kind, "KDS request for a type not served in this direction");
        return;
    };
    if req.response_nonce.is_empty() {
        // A (re)subscription: the peer tells us what it already holds.
        s.subscribed = true;
        s.acked = req.initial_resource_versions.into_iter().collect();
        s.inflight = None;
        s.retry_at = None;
        s.dirty = true;
        return;
    }
    match s.inflight.take() {
        Some((nonce, versions)) if nonce == req.response_nonce => {
            if let Some(err) = req.error_detail {
                warn!(kind = %kind, reason = %err.message, "KDS NACK");
                observer.nacked(kind, &err.message);
                s.nacks += 1;
                let factor = 1u32 << s.nacks.min(10);
                let wait = (config.nack_backoff * factor / 2).min(config.nack_backoff_max);
                s.retry_at = Some(Instant::now() + wait);
                s.dirty = true;
            } else {
                observer.acked(kind);
                s.acked = versions;
                s.nacks = 0;
            }
        }
        other => s.inflight = other, // stale nonce: ignore
    }
}

/// What a receiver writes into.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Delta names and versions of the resources of `kind` this sync owns locally.
    async fn initial_versions(
        &self,
        kind: ResourceKind,
    ) -> Result<HashMap<String, String>, StoreError>;
    /// Applies one response. The error becomes the NACK's detail.
    async fn apply(
        &self,
        kind: ResourceKind,
        added: Vec<Wire>,
        removed: Vec<String>,
    ) -> Result<(), String>;
}

/// A [`Sink`] over a store: `accept` checks and normalises each received
/// resource; `owned` says which local resources this sync manages (and may
/// overwrite or delete).
pub struct StoreSink<A, O> {
    pub store: Arc<dyn ResourceStore>,
    pub accept: A,
    pub owned: O,
    /// Serialises applies, so that the feed and reads see whole responses.
    pub lock: tokio::sync::Mutex<()>,
}

impl<A, O> StoreSink<A, O> {
    pub fn new(store: Arc<dyn ResourceStore>, accept: A, owned: O) -> Self {
        StoreSink {
            store,
            accept,
            owned,
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

#[async_trait]
impl<A, O> Sink for StoreSink<A, O>
where
    A: Fn(Wire) -> Result<Wire, MapError> + Send + Sync + 'static,
    O: Fn(&Resource) -> bool + Send + Sync + 'static,
{
    async fn initial_versions(
        &self,
        kind: ResourceKind,
    ) -> Result<HashMap<String, String>, StoreError> {
        let page = self.store.list(&ListFilter::all(kind)).await?;
        Ok(page
            .items
            .iter()
            .filter(|r| (self.owned)(r))
            .map(|r| {
                let w = Wire::from_resource(r);
                (w.delta_name(), w.version())
            })
            .collect())
    }

    async fn apply(
        &self,
        kind: ResourceKind,
        added: Vec<Wire>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        let _guard = self.lock.lock().await;
        let mut errors = Vec::new();
        for w in added {
            let name = w.delta_name();
            let w = match (self.accept)(w) {
                Ok(w) => w,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            if let Err(e) = self.upsert(w).await {
                errors.push(format!("{kind} {name}: {e}"));
            }
        }
        for delta in removed {
            let (name, mesh) = split_delta_name(kind, &delta);
            let wire = Wire {
                kind,
                name,
                mesh,
                labels: BTreeMap::new(),
                spec: serde_json::Value::Null,
                status: None,
            };
            let Ok(key) = wire.key() else { continue };
            match self.store.get(&key).await {
                Ok(r) if (self.owned)(&r) => match self.store.delete(&key, None).await {
                    Ok(()) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => errors.push(format!("{kind} {delta}: {e}")),
                },
                Ok(_) => errors.push(format!(
                    "{kind} {delta}: not owned by this sync, not deleted"
                )),
                Err(StoreError::NotFound(_)) => {}
                Err(e) => errors.push(format!("{kind} {delta}: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

impl<A, O> StoreSink<A, O>
where
    O: Fn(&Resource) -> bool + Send + Sync + 'static,
{
    async fn upsert(&self, w: Wire) -> Result<(), String> {
        let key = w.key().map_err(|e| e.to_string())?;
        let ctx = Context {
            kind: w.kind,
            mesh: w.mesh.as_deref(),
            name: &w.name,
            labels: &w.labels,
        };
        let spec = specs::validate(&ctx, &w.spec).map_err(|v| {
            v.iter()
                .map(|v| format!("{}: {}", v.field, v.reason))
                .collect::<Vec<_>>()
                .join(", ")
        })?;
        let write = Write {
            labels: w.labels.clone(),
            spec,
            status: w.status.clone(),
        };
        match self.store.get(&key).await {
            Ok(cur) => {
                if !(self.owned)(&cur) {
                    return Err(
                        "a local resource with this name exists and is not owned by this sync"
                            .into(),
                    );
                }
                if cur.meta.labels == write.labels
                    && cur.spec == write.spec
                    && cur.status == write.status
                {
                    return Ok(());
                }
                self.store
                    .update(&key, write, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Err(StoreError::NotFound(_)) => match self.store.create(&key, write.clone()).await {
                Ok(_) => Ok(()),
                Err(StoreError::AlreadyExists(_)) => self
                    .store
                    .update(&key, write, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Subscribes to `kinds` and applies what arrives. `node` goes on every
/// subscription (Kuma sends it on each initial request).
pub async fn run_receiver<S, R>(
    sink: Arc<dyn Sink>,
    kinds: Vec<ResourceKind>,
    node: Node,
    mut responses: S,
    requests: mpsc::Sender<DeltaDiscoveryRequest>,
    on_applied: Option<mpsc::UnboundedSender<ResourceKind>>,
) -> Result<(), SyncError>
where
    S: Stream<Item = Result<DeltaDiscoveryResponse, R>> + Unpin + Send,
    R: Into<tonic::Status>,
{
    for kind in &kinds {
        let initial = sink.initial_versions(*kind).await?;
        let req = DeltaDiscoveryRequest {
            node: Some(node.clone()),
            type_url: kind.name().to_string(),
            resource_names_subscribe: vec!["*".into()],
            initial_resource_versions: initial.into_iter().collect(),
            ..Default::default()
        };
        requests.send(req).await.map_err(|_| SyncError::Closed)?;
    }
    loop {
        let resp = match responses.next().await {
            None => return Ok(()),
            Some(Err(e)) => return Err(SyncError::Stream(e.into())),
            Some(Ok(r)) => r,
        };
        let Some(kind) = ResourceKind::from_name(&resp.type_url).filter(|k| kinds.contains(k))
        else {
            warn!(type_url = %resp.type_url, "KDS response for a type not subscribed");
            continue;
        };
        let mut decode_errors = Vec::new();
        let mut added = Vec::with_capacity(resp.resources.len());
        for r in &resp.resources {
            match Wire::from_envoy(kind, r) {
                Ok(w) => added.push(w),
                Err(e) => decode_errors.push(e.to_string()),
            }
        }
        let result = sink.apply(kind, added, resp.removed_resources).await;
        let error = match (result, decode_errors.is_empty()) {
            (Ok(()), true) => None,
            (Ok(()), false) => Some(decode_errors.join("; ")),
            (Err(e), _) => {
                decode_errors.push(e);
                Some(decode_errors.join("; "))
            }
        };
        if let Some(e) = &error {
            warn!(kind = %kind, reason = %e, "rejecting KDS response");
        }
        let req = DeltaDiscoveryRequest {
            node: Some(Node {
                id: node.id.clone(),
                ..Default::default()
            }),
            type_url: kind.name().to_string(),
            response_nonce: resp.nonce,
            error_detail: error.map(|message| RpcStatus {
                code: tonic::Code::InvalidArgument as i32,
                message,
                details: vec![],
            }),
            ..Default::default()
        };
        requests.send(req).await.map_err(|_| SyncError::Closed)?;
        if let Some(tx) = &on_applied {
            let _ = tx.send(kind);
        }
    }
}
