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
use kuma_store::{BatchOp, ChangeOp, Expect, ListFilter, ResourceStore, StoreError, Write};
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
        let page = self.store.list_shared(&ListFilter::all(kind)).await?;
        Ok(page
            .items
            .iter()
            .filter_map(|r| (self.map)(r).map(|w| (r.key.clone(), w)))
            .collect())
    }
    async fn get(&self, key: &ResourceKey) -> Result<Option<Wire>, StoreError> {
        match self.store.get_shared(key).await {
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
                    resources.push(w.to_envoy_versioned(version.clone()));
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
        let page = self.store.list_shared(&ListFilter::all(kind)).await?;
        Ok(page
            .items
            .iter()
            .filter(|r| (self.owned)(r))
            .map(|r| Wire::name_and_version(r))
            .collect())
    }

    /// The whole response as a few store batches ([`APPLY_CHUNK`] writes
    /// each, one transaction apiece): validated, ownership checked and
    /// unchanged resources skipped against one read of what is held locally.
    async fn apply(
        &self,
        kind: ResourceKind,
        added: Vec<Wire>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        let _guard = self.lock.lock().await;
        let mut errors = Vec::new();
        let local = Local::read(&*self.store, kind, added.len() + removed.len())
            .await
            .map_err(|e| format!("{kind}: {e}"))?;
        // Each op with the name errors about it are reported under.
        let mut ops: Vec<(BatchOp, String)> = Vec::new();
        for w in added {
            let name = w.delta_name();
            let w = match (self.accept)(w) {
                Ok(w) => w,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            let (key, write) = match prepare(w) {
                Ok(kw) => kw,
                Err(e) => {
                    errors.push(format!("{kind} {name}: {e}"));
                    continue;
                }
            };
            match local.get(&*self.store, &key).await {
                Ok(Some(cur)) => {
                    if !(self.owned)(&cur) {
                        errors.push(format!("{kind} {name}: {NOT_OWNED}"));
                        continue;
                    }
                    if same_content(&cur, &write) {
                        continue;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    errors.push(format!("{kind} {name}: {e}"));
                    continue;
                }
            };
            // Unconditional, as a create that lost a race to a local writer
            // always was: the ownership check above is what protects
            // local resources.
            let op = BatchOp::Put {
                key,
                write,
                expect: Expect::Any,
            };
            ops.push((op, name));
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
            match local.get(&*self.store, &key).await {
                Ok(Some(r)) if (self.owned)(&r) => {
                    let op = BatchOp::Delete {
                        key,
                        expected_version: Some(r.meta.version),
                    };
                    ops.push((op, delta));
                }
                Ok(Some(_)) => errors.push(format!(
                    "{kind} {delta}: not owned by this sync, not deleted"
                )),
                Ok(None) => {}
                Err(e) => errors.push(format!("{kind} {delta}: {e}")),
            }
        }
        drop(local);
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let (chunk, names): (Vec<BatchOp>, Vec<String>) =
                ops.by_ref().take(APPLY_CHUNK).unzip();
            let results = match self.store.apply_batch(chunk).await {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("{kind}: {e}"));
                    break;
                }
            };
            for (result, name) in results.into_iter().zip(names) {
                let outcome = match result {
                    Ok(_) => Ok(()),
                    // Only deletes are conditional: one that raced a local
                    // write decides again on what is there now.
                    Err(StoreError::NotFound(key) | StoreError::Conflict { key, .. }) => {
                        self.delete_one(&key).await
                    }
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = outcome {
                    errors.push(format!("{kind} {name}: {e}"));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Writes per [`StoreSink::apply`] transaction: bounds the time one
/// transaction holds the store's writer, and the size of one statement.
pub const APPLY_CHUNK: usize = 1000;

/// A response this large reads the whole kind once instead of key by key.
const LIST_AT: usize = 32;

const NOT_OWNED: &str = "a local resource with this name exists and is not owned by this sync";

/// What the receiving store holds of one kind, for one response.
enum Local {
    Listed(HashMap<ResourceKey, Arc<Resource>>),
    ByKey,
}

impl Local {
    async fn read(
        store: &dyn ResourceStore,
        kind: ResourceKind,
        n: usize,
    ) -> Result<Self, StoreError> {
        if n < LIST_AT {
            return Ok(Local::ByKey);
        }
        // Listing costs what the kind holds, key by key what the response
        // holds: list only when the response is a good part of the kind.
        let count = ListFilter {
            limit: Some(0),
            ..ListFilter::all(kind)
        };
        let held = store.list(&count).await?.total;
        if n.saturating_mul(4) < held {
            return Ok(Local::ByKey);
        }
        let page = store.list_shared(&ListFilter::all(kind)).await?;
        Ok(Local::Listed(
            page.items.into_iter().map(|r| (r.key.clone(), r)).collect(),
        ))
    }

    async fn get(
        &self,
        store: &dyn ResourceStore,
        key: &ResourceKey,
    ) -> Result<Option<Arc<Resource>>, StoreError> {
        match self {
            Local::Listed(m) => Ok(m.get(key).cloned()),
            Local::ByKey => match store.get_shared(key).await {
                Ok(r) => Ok(Some(r)),
                Err(StoreError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }
}

fn same_content(cur: &Resource, write: &Write) -> bool {
    cur.meta.labels == write.labels && cur.spec == write.spec && cur.status == write.status
}

/// The local key and validated content of an accepted resource.
fn prepare(w: Wire) -> Result<(ResourceKey, Write), String> {
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
    Ok((
        key,
        Write {
            labels: w.labels,
            spec,
            status: w.status,
        },
    ))
}

impl<A, O> StoreSink<A, O>
where
    O: Fn(&Resource) -> bool + Send + Sync + 'static,
{
    /// One delete outside a batch (after a batch op raced a local writer).
    async fn delete_one(&self, key: &ResourceKey) -> Result<(), String> {
        match self.store.get(key).await {
            Ok(r) if (self.owned)(&r) => match self.store.delete(key, None).await {
                Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
            Ok(_) => Err("not owned by this sync, not deleted".into()),
            Err(StoreError::NotFound(_)) => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{ORIGIN_GLOBAL, accept_from_global};
    use kuma_model::labels::ORIGIN;
    use kuma_model::{MeshName, ResourceName};
    use kuma_store::{MemoryStore, SqliteStore};
    use serde_json::json;

    fn spec(idle: &str) -> serde_json::Value {
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": idle}}]})
    }

    fn wire(name: &str, mesh: &str, spec: serde_json::Value) -> Wire {
        Wire {
            kind: ResourceKind::MeshTimeout,
            name: name.into(),
            mesh: Some(mesh.into()),
            labels: [(ORIGIN.to_string(), ORIGIN_GLOBAL.to_string())].into(),
            spec,
            status: None,
        }
    }

    fn key(name: &str) -> ResourceKey {
        ResourceKey::new(
            ResourceKind::MeshTimeout,
            Some(MeshName::new("default").unwrap()),
            ResourceName::new(name).unwrap(),
        )
        .unwrap()
    }

    fn from_global(r: &Resource) -> bool {
        r.meta.labels.get(ORIGIN).map(String::as_str) == Some(ORIGIN_GLOBAL)
    }

    /// One response, every outcome: new, changed and unchanged resources,
    /// invalid ones, a local resource in the way, a missing mesh, removals of
    /// owned, foreign and absent resources. What is valid lands (in batches),
    /// the rest is named in the NACK reason; large and small responses (one
    /// read of the kind, or key by key) behave the same.
    async fn one_response_every_outcome(store: Arc<dyn ResourceStore>, n_new: usize) {
        let mesh = ResourceKey::new(
            ResourceKind::Mesh,
            None,
            ResourceName::new("default").unwrap(),
        )
        .unwrap();
        store
            .create(
                &mesh,
                Write {
                    labels: Default::default(),
                    spec: json!({}),
                    status: None,
                },
            )
            .await
            .unwrap();
        let owned = |s: serde_json::Value| Write {
            labels: [(ORIGIN.to_string(), ORIGIN_GLOBAL.to_string())].into(),
            spec: s,
            status: None,
        };
        store.create(&key("same"), owned(spec("1s"))).await.unwrap();
        store
            .create(&key("changed"), owned(spec("1s")))
            .await
            .unwrap();
        store.create(&key("old"), owned(spec("1s"))).await.unwrap();
        let local = Write {
            labels: Default::default(),
            spec: spec("9s"),
            status: None,
        };
        store.create(&key("local"), local.clone()).await.unwrap();
        let sink = StoreSink::new(store.clone(), accept_from_global, from_global);

        let mut added: Vec<Wire> = (0..n_new)
            .map(|i| wire(&format!("new-{i}"), "default", spec("20s")))
            .collect();
        added.push(wire("same", "default", spec("1s")));
        added.push(wire("changed", "default", spec("2s")));
        added.push(wire(
            "bad",
            "default",
            json!({"targetRef": {"kind": "Nonsense"}}),
        ));
        added.push(wire("local", "default", spec("3s")));
        added.push(wire("elsewhere", "missing", spec("3s")));
        let mut not_global = wire("sneaky", "default", spec("3s"));
        not_global.labels.clear();
        added.push(not_global);
        let removed = vec![
            "old.default".into(),
            "local.default".into(),
            "gone.default".into(),
        ];

        let err = sink
            .apply(ResourceKind::MeshTimeout, added, removed)
            .await
            .expect_err("NACK");
        assert!(err.contains("MeshTimeout bad.default: "), "{err}");
        assert!(
            err.contains(&format!("MeshTimeout local.default: {NOT_OWNED}")),
            "{err}"
        );
        assert!(
            err.contains("MeshTimeout local.default: not owned by this sync, not deleted"),
            "{err}"
        );
        assert!(
            err.contains("MeshTimeout elsewhere.missing: mesh missing not found"),
            "{err}"
        );
        assert!(err.contains("sneaky"), "{err}");
        assert_eq!(err.matches("; ").count(), 4, "five problems: {err}");

        for i in 0..n_new {
            let r = store.get(&key(&format!("new-{i}"))).await.unwrap();
            assert_eq!((r.meta.version, &r.spec), (1, &spec("20s")));
        }
        assert_eq!(
            store.get(&key("same")).await.unwrap().meta.version,
            1,
            "unchanged: not rewritten"
        );
        let changed = store.get(&key("changed")).await.unwrap();
        assert_eq!((changed.meta.version, &changed.spec), (2, &spec("2s")));
        let l = store.get(&key("local")).await.unwrap();
        assert_eq!((l.meta.version, &l.spec), (1, &local.spec));
        for gone in ["old", "bad", "sneaky"] {
            assert!(
                matches!(store.get(&key(gone)).await, Err(StoreError::NotFound(_))),
                "{gone}"
            );
        }

        // A clean response is ACKed; applying it again writes nothing.
        let again: Vec<Wire> = (0..n_new)
            .map(|i| wire(&format!("new-{i}"), "default", spec("20s")))
            .collect();
        let mut feed = store.watch();
        sink.apply(ResourceKind::MeshTimeout, again, vec![])
            .await
            .unwrap();
        assert!(feed.try_recv().is_err(), "nothing rewritten");
        for i in 0..n_new {
            let r = store.get(&key(&format!("new-{i}"))).await.unwrap();
            assert_eq!(r.meta.version, 1, "nothing rewritten");
        }
    }

    #[tokio::test]
    async fn small_response_key_by_key() {
        one_response_every_outcome(Arc::new(MemoryStore::new()), 3).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_response_in_chunks_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(dir.path().join("kuma.db")).await.unwrap();
        let store = Arc::new(kuma_store::CachedStore::new(inner).await.unwrap());
        one_response_every_outcome(store, APPLY_CHUNK + 500).await;
    }
}
