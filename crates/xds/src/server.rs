//! The ADS server: delta and state-of-the-world streams over one snapshot cache.
//!
//! Per stream: the node arrives on the first request only and may not change;
//! a request is an ACK/NACK only when it names the latest nonce sent for its
//! type; an ACK never triggers a resend; a NACK rolls back what the client is
//! believed to hold and waits for the next change (no retry loop).

use crate::cache::{Snapshot, SnapshotCache, SnapshotWatch, find, set_version};
use crate::plan::{ClusterSource, ResourcePlan, ResourceType};
use crate::wire::{
    AdsService, BoxStream, Decimal, EncodedDelta, MessageReader, Outgoing, decode_message,
    unsupported_encoding,
};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

/// One type's response counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TypeCounts {
    pub sent: u64,
    pub acked: u64,
    pub rejected: u64,
}

#[derive(Debug, Default)]
struct AtomicCounts {
    sent: AtomicU64,
    acked: AtomicU64,
    rejected: AtomicU64,
}

/// What a stream reports about itself, for insights: kept by the stream in
/// atomics it alone writes, read by whoever holds the `Arc` (no lock and no
/// call per response or ACK).
#[derive(Debug, Default)]
pub struct StreamCounters {
    by_type: [AtomicCounts; ResourceType::ORDER.len()],
    /// When the latest response was handed to the stream, in Unix
    /// nanoseconds (0: never).
    last_sent_ns: AtomicI64,
    last_rejection: std::sync::Mutex<Option<String>>,
}

impl StreamCounters {
    pub fn get(&self, t: ResourceType) -> TypeCounts {
        let c = &self.by_type[t.index()];
        TypeCounts {
            sent: c.sent.load(Relaxed),
            acked: c.acked.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
        }
    }

    /// Grows with every response, ACK and NACK: "anything new since" is
    /// one comparison.
    pub fn events(&self) -> u64 {
        self.by_type
            .iter()
            .map(|c| c.sent.load(Relaxed) + c.acked.load(Relaxed) + c.rejected.load(Relaxed))
            .sum()
    }

    pub fn last_sent(&self) -> Option<std::time::SystemTime> {
        match self.last_sent_ns.load(Relaxed) {
            0 => None,
            ns => Some(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns as u64)),
        }
    }

    /// The reason the proxy gave for the latest update it rejected.
    pub fn last_rejection(&self) -> Option<String> {
        self.last_rejection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn sent(&self, t: ResourceType) {
        self.by_type[t.index()].sent.fetch_add(1, Relaxed);
    }

    /// Stamps the latest response (once per batch handed to the stream).
    fn sent_now(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        self.last_sent_ns.store(now, Relaxed);
    }

    fn acked(&self, t: ResourceType) {
        self.by_type[t.index()].acked.fetch_add(1, Relaxed);
    }

    fn rejected(&self, t: ResourceType, reason: &str) {
        *self
            .last_rejection
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
        self.by_type[t.index()].rejected.fetch_add(1, Relaxed);
    }
}

/// Checks a proxy's credentials when its stream opens.
#[tonic::async_trait]
pub trait StreamAuth: Send + Sync + 'static {
    /// Refuses the stream with a status that says why.
    async fn authenticate(&self, node: &Node, metadata: &MetadataMap) -> Result<(), Status>;
}

/// Hooks for the proxy lifecycle: a stream opened or closed.
#[tonic::async_trait]
pub trait StreamEvents: Send + Sync + 'static {
    /// Called once the stream is authenticated, before anything is sent,
    /// with the counters the stream will keep. An error refuses the stream.
    async fn connected(
        &self,
        stream_id: u64,
        node: &Node,
        counters: Arc<StreamCounters>,
    ) -> Result<(), Status>;
    async fn disconnected(&self, stream_id: u64, node_id: &str);
}

/// Serves ADS from a [`SnapshotCache`].
pub struct AdsServer {
    cache: Arc<SnapshotCache>,
    auth: Arc<dyn StreamAuth>,
    events: Arc<dyn StreamEvents>,
    /// The runtime the server was made on: authentication and lifecycle
    /// events run there, wherever the streams themselves are polled (the
    /// dp-server polls them on threads of their own).
    home: Option<tokio::runtime::Handle>,
    next_stream: std::sync::atomic::AtomicU64,
    stats: Arc<AdsStats>,
}

/// Totals over every stream (metrics, benchmarks).
#[derive(Debug, Default)]
pub struct AdsStats {
    pub responses: std::sync::atomic::AtomicU64,
    /// Encoded size of the responses sent.
    pub bytes: std::sync::atomic::AtomicU64,
    pub streams: std::sync::atomic::AtomicU64,
    /// Responses the proxies ACKed (taken in by the server).
    pub acks: std::sync::atomic::AtomicU64,
}

impl AdsStats {
    fn sent(&self, bytes: usize) {
        self.responses.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
    }

    fn acked(&self) {
        self.acks.fetch_add(1, Relaxed);
    }
}

impl AdsServer {
    pub fn new(
        cache: Arc<SnapshotCache>,
        auth: Arc<dyn StreamAuth>,
        events: Arc<dyn StreamEvents>,
    ) -> Self {
        AdsServer {
            cache,
            auth,
            events,
            home: tokio::runtime::Handle::try_current().ok(),
            next_stream: 1.into(),
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<AdsStats> {
        self.stats.clone()
    }

    /// The gRPC service (`AggregatedDiscoveryService`, both methods).
    pub fn into_service(self) -> AdsService {
        AdsService::new(self)
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            cache: self.cache.clone(),
            auth: self.auth.clone(),
            events: self.events.clone(),
            stats: self.stats.clone(),
            home: self.home.clone(),
        }
    }

    fn stream_id(&self) -> u64 {
        self.next_stream
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// Common opening of both stream kinds: wait for the node, authenticate, announce.
struct Opened {
    node_id: String,
    snapshots: SnapshotWatch,
    counters: Arc<StreamCounters>,
}

async fn open(
    server: &Ctx,
    stream_id: u64,
    node: Option<&Node>,
    metadata: &MetadataMap,
) -> Result<Opened, Status> {
    let node = node.ok_or_else(|| {
        Status::invalid_argument("the first request of a stream must carry the node")
    })?;
    if node.id.is_empty() {
        return Err(Status::invalid_argument("node id is empty"));
    }
    server.auth.authenticate(node, metadata).await?;
    let snapshots = server.cache.watch(&node.id);
    server
        .stats
        .streams
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let counters = Arc::<StreamCounters>::default();
    server
        .events
        .connected(stream_id, node, counters.clone())
        .await?;
    info!(node_id = %node.id, stream_id, "proxy connected");
    Ok(Opened {
        node_id: node.id.clone(),
        snapshots,
        counters,
    })
}

#[derive(Clone)]
struct Ctx {
    cache: Arc<SnapshotCache>,
    auth: Arc<dyn StreamAuth>,
    events: Arc<dyn StreamEvents>,
    stats: Arc<AdsStats>,
    home: Option<tokio::runtime::Handle>,
}

/// Runs `task` on the server's home runtime (else on the current one).
fn spawn_home<F>(
    home: Option<&tokio::runtime::Handle>,
    task: F,
) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match home {
        Some(home) => home.spawn(task),
        None => tokio::spawn(task),
    }
}

fn check_node(node: Option<&Node>, node_id: &str) -> Result<(), Status> {
    match node {
        Some(n) if !n.id.is_empty() && n.id != node_id => Err(Status::permission_denied(
            "the node id cannot change within a stream",
        )),
        _ => Ok(()),
    }
}

impl AdsServer {
    /// A state-of-the-world stream: its loop runs in a task of its own.
    pub(crate) fn state_of_the_world(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Response<BoxStream<DiscoveryResponse>> {
        let metadata = request.metadata().clone();
        let mut inbound = request.into_inner();
        let ctx = self.ctx();
        let stream_id = self.stream_id();
        let (tx, rx) = mpsc::channel(16);
        spawn_home(self.home.as_ref(), async move {
            let first = match inbound.next().await {
                Some(Ok(r)) => r,
                _ => return,
            };
            let opened = match open(&ctx, stream_id, first.node.as_ref(), &metadata).await {
                Ok(o) => o,
                Err(status) => {
                    warn!(stream_id, reason = status.message(), "stream refused");
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let node_id = opened.node_id.clone();
            let result = sotw_loop(&ctx, opened, first, inbound, &tx).await;
            if let Err(status) = result {
                let _ = tx.send(Err(status)).await;
            }
            ctx.events.disconnected(stream_id, &node_id).await;
            info!(%node_id, stream_id, "proxy disconnected");
        });
        Response::new(Box::pin(ReceiverStream::new(rx)))
    }

    /// A delta stream: the response body runs it. HTTP/2 polls the body
    /// when a request frame or a snapshot change wakes its stream; the body
    /// decodes the requests, diffs, and encodes the responses straight into
    /// the next DATA frame (no task, channel or codec layers of its own).
    pub fn delta<B>(&self, request: http::Request<B>) -> http::Response<DeltaBody<B>>
    where
        B: http_body::Body<Data = bytes::Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = request.into_parts();
        let phase = match unsupported_encoding(&parts.headers) {
            Some(status) => Phase::Ending(status),
            None => Phase::First,
        };
        let body = DeltaBody {
            ctx: self.ctx(),
            stream_id: self.stream_id(),
            metadata: Some(MetadataMap::from_headers(parts.headers)),
            requests: MessageReader::new(body),
            phase,
            out: Outgoing::default(),
        };
        let mut response = http::Response::new(body);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        response
    }
}

/// The response body of a delta stream (see [`AdsServer::delta`]).
pub struct DeltaBody<B> {
    ctx: Ctx,
    stream_id: u64,
    /// The request's headers, until the stream is authenticated.
    metadata: Option<MetadataMap>,
    requests: MessageReader<B>,
    phase: Phase,
    /// Responses encoded since the last DATA frame.
    out: Outgoing,
}

type OpenTask = tokio::task::JoinHandle<Result<(Opened, Disconnect), Status>>;

enum Phase {
    /// Waiting for the first request, which names the node.
    First,
    /// Authenticating and announcing the proxy, with its first request.
    Opening(OpenTask, Box<DeltaDiscoveryRequest>),
    Running(Box<Running>),
    /// The status to end with, once the responses before it are out.
    Ending(Status),
    Done,
}

struct Running {
    session: DeltaSession,
    /// Announces the disconnect however the stream ends.
    _gone: Disconnect,
}

/// Responses encoded before a DATA frame goes out regardless.
const FRAME_BYTES: usize = 32 * 1024;

impl<B> DeltaBody<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    /// The request body, for a connection that hands it frames itself.
    pub(crate) fn request_body_mut(&mut self) -> &mut B {
        self.requests.body_mut()
    }

    fn push(&mut self, session: &DeltaSession, responses: Responses) {
        if responses.is_empty() {
            return;
        }
        for (t, resp) in responses {
            let len = self.out.put_delta(&resp);
            session.sending(t, &resp, len);
        }
        session.counters.sent_now();
    }

    /// Moves the stream on as far as it can without waiting: the next
    /// phase, or `Pending` once nothing is ready.
    fn advance(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::First => match self.requests.poll_message::<DeltaDiscoveryRequest>(cx) {
                Poll::Pending => {
                    self.phase = Phase::First;
                    Poll::Pending
                }
                Poll::Ready(None) => {
                    self.phase = Phase::Ending(Status::ok(""));
                    Poll::Ready(())
                }
                Poll::Ready(Some(Err(status))) => {
                    self.phase = Phase::Ending(status);
                    Poll::Ready(())
                }
                Poll::Ready(Some(Ok(first))) => {
                    // Opening runs in a task of its own: `connected` may be
                    // halfway (insight written, subscription recorded) when
                    // the client goes away and this body is dropped. The
                    // task finishes anyway, and the guard it returns,
                    // dropped with its unclaimed output, still announces
                    // the disconnect.
                    let (ctx, node, stream_id) =
                        (self.ctx.clone(), first.node.clone(), self.stream_id);
                    let metadata = self.metadata.take().unwrap_or_default();
                    let task = spawn_home(self.ctx.home.as_ref(), async move {
                        let opened = open(&ctx, stream_id, node.as_ref(), &metadata).await?;
                        let gone = Disconnect {
                            home: ctx.home.clone(),
                            events: ctx.events.clone(),
                            stream_id,
                            node_id: opened.node_id.clone(),
                        };
                        Ok::<_, Status>((opened, gone))
                    });
                    self.phase = Phase::Opening(task, Box::new(first));
                    Poll::Ready(())
                }
            },
            Phase::Opening(mut task, first) => match Pin::new(&mut task).poll(cx) {
                Poll::Pending => {
                    self.phase = Phase::Opening(task, first);
                    Poll::Pending
                }
                Poll::Ready(Ok(Ok((opened, gone)))) => {
                    let mut session = DeltaSession::new(self.ctx.clone(), opened);
                    match session.request(*first) {
                        Ok(responses) => {
                            self.push(&session, responses);
                            self.phase = Phase::Running(Box::new(Running {
                                session,
                                _gone: gone,
                            }));
                        }
                        Err(status) => self.phase = Phase::Ending(status),
                    }
                    Poll::Ready(())
                }
                Poll::Ready(Ok(Err(status))) => {
                    warn!(
                        stream_id = self.stream_id,
                        reason = status.message(),
                        "stream refused"
                    );
                    self.phase = Phase::Ending(status);
                    Poll::Ready(())
                }
                Poll::Ready(Err(_)) => {
                    // Cancelled: the control plane is shutting down.
                    self.phase =
                        Phase::Ending(Status::unavailable("the control plane is shutting down"));
                    Poll::Ready(())
                }
            },
            Phase::Running(mut run) => {
                // Every request that is in, then the latest snapshot: what
                // they call for goes out in one DATA frame.
                while self.out.len() < FRAME_BYTES {
                    match self.requests.poll_raw(cx) {
                        Poll::Pending => break,
                        Poll::Ready(Some(Ok(raw))) => {
                            // Most requests are ACKs: taken as they are,
                            // without decoding a whole request.
                            if run.session.try_ack(&raw) {
                                continue;
                            }
                            let handled =
                                decode_message(&raw).and_then(|req| run.session.request(req));
                            match handled {
                                Ok(responses) => self.push(&run.session, responses),
                                Err(status) => {
                                    self.phase = Phase::Ending(status);
                                    return Poll::Ready(());
                                }
                            }
                        }
                        Poll::Ready(Some(Err(status))) => {
                            debug!(node_id = %run.session.node_id, %status, "stream error");
                            self.phase = Phase::Ending(status);
                            return Poll::Ready(());
                        }
                        Poll::Ready(None) => {
                            // The client closed its side: so does the stream.
                            self.phase = Phase::Ending(Status::ok(""));
                            return Poll::Ready(());
                        }
                    }
                }
                // Until `Pending`, which leaves the stream's waker with its
                // slot: a snapshot that calls for nothing must not end the
                // watch (the next one would wake nobody).
                while self.out.len() < FRAME_BYTES {
                    match run.session.snapshots.poll_changed(cx) {
                        Poll::Pending => break,
                        Poll::Ready(None) => {
                            self.phase =
                                Phase::Ending(Status::unavailable("the proxy was removed"));
                            return Poll::Ready(());
                        }
                        Poll::Ready(Some(snap)) => {
                            let responses = run.session.changed(snap);
                            self.push(&run.session, responses);
                        }
                    }
                }
                let ready = !self.out.is_empty();
                self.phase = Phase::Running(run);
                if ready {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
            // Ended by `poll_frame`.
            ended @ (Phase::Ending(_) | Phase::Done) => {
                self.phase = ended;
                Poll::Ready(())
            }
        }
    }
}

impl<B> http_body::Body for DeltaBody<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                return Poll::Ready(Some(Ok(http_body::Frame::data(this.out.take()))));
            }
            match std::mem::replace(&mut this.phase, Phase::Done) {
                Phase::Done => return Poll::Ready(None),
                Phase::Ending(status) => {
                    let mut trailers = http::HeaderMap::new();
                    if status.add_header(&mut trailers).is_err() {
                        // A message that is no valid header value: the code alone.
                        trailers.clear();
                        let _ = Status::new(status.code(), "").add_header(&mut trailers);
                    }
                    return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
                }
                other => this.phase = other,
            }
            if this.advance(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.phase, Phase::Done) && self.out.is_empty()
    }
}

/// Tells [`StreamEvents`] a stream is gone when its stream is dropped.
struct Disconnect {
    home: Option<tokio::runtime::Handle>,
    events: Arc<dyn StreamEvents>,
    stream_id: u64,
    node_id: String,
}

impl Drop for Disconnect {
    fn drop(&mut self) {
        let (events, stream_id, node_id) = (
            self.events.clone(),
            self.stream_id,
            std::mem::take(&mut self.node_id),
        );
        // Outside a runtime (process exit) there is nobody left to tell.
        let home = self.home.take();
        if let Some(rt) = home.or_else(|| tokio::runtime::Handle::try_current().ok()) {
            rt.spawn(async move {
                events.disconnected(stream_id, &node_id).await;
                info!(%node_id, stream_id, "proxy disconnected");
            });
        }
    }
}

// ---------------------------------------------------------------- delta

/// A stream's state of each resource type it asked for, by
/// [`ResourceType::index`]: held in the stream itself, no tree to walk
/// for every ACK and change.
struct PerType<T>([Option<T>; ResourceType::ORDER.len()]);

impl<T> Default for PerType<T> {
    fn default() -> Self {
        PerType(std::array::from_fn(|_| None))
    }
}

impl<T: Default> PerType<T> {
    fn get_mut(&mut self, t: ResourceType) -> Option<&mut T> {
        self.0[t.index()].as_mut()
    }

    fn contains(&self, t: ResourceType) -> bool {
        self.0[t.index()].is_some()
    }

    /// The state of `t`, new if the stream had none.
    fn entry(&mut self, t: ResourceType) -> &mut T {
        self.0[t.index()].get_or_insert_with(T::default)
    }
}

/// Per resource, the version held before a response (`None`: not held).
type Undo = Vec<(Arc<str>, Option<Arc<str>>)>;

#[derive(Default)]
struct DeltaType {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client is believed to hold: name -> version.
    held: foldhash::HashMap<Arc<str>, Arc<str>>,
    /// The latest nonce sent and how to undo it on a NACK.
    pending: Option<(u64, Undo)>,
    /// The snapshot `held` was last brought up to, unless a request changed
    /// what the client holds or wants since: a later snapshot with the very
    /// same entries of this type needs no diff at all (a mesh-wide listener
    /// change leaves every stream's clusters and endpoints untouched).
    synced: Option<Arc<Snapshot>>,
}

impl DeltaType {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

struct DeltaStream {
    types: PerType<DeltaType>,
    nonce: u64,
    /// Clusters sent whose endpoints must follow, even unchanged (see
    /// [`DeltaStream::diff`]); kept until an Endpoints response
    /// carries them, which may be after the client subscribes to them.
    eds_due: foldhash::HashSet<Arc<str>>,
}

impl DeltaStream {
    /// The response that brings the client of type `t` up to `snap`, if any is needed.
    ///
    /// Envoy keeps a cluster it got (new or changed) warming until a response
    /// carries that cluster's endpoints, even unchanged ones; with delta xDS
    /// it does not ask again for a name it is subscribed to. So the endpoints
    /// of every cluster sent here become due again (`eds_due`): the next
    /// Endpoints diff resends them even though the client holds them
    /// (otherwise the cluster waits out Envoy's 15 s initial fetch timeout).
    fn diff(&mut self, t: ResourceType, snap: &Arc<Snapshot>) -> Option<EncodedDelta> {
        let state = self.types.get_mut(t)?;
        let desired = snap.of_type(t);
        let unchanged = |prev: &Arc<Snapshot>| {
            let before = prev.of_type(t);
            before.len() == desired.len()
                && before.iter().zip(desired).all(|(a, b)| Arc::ptr_eq(a, b))
        };
        let endpoints_due = t == ResourceType::Endpoints && !self.eds_due.is_empty();
        if !endpoints_due && state.synced.as_ref().is_some_and(unchanged) {
            state.synced = Some(snap.clone());
            return None;
        }
        state.synced = Some(snap.clone());
        // Room for a typical change without regrowing (`undo` is kept
        // until the ACK: not sized for the whole type).
        let mut resources = Vec::with_capacity(desired.len().min(8));
        let mut undo = Vec::with_capacity(desired.len().min(8));
        // Desired resources the client wants: all of them are held below.
        let mut wanted = 0;
        for r in desired {
            let name = &r.name;
            if !state.wants(name) {
                continue;
            }
            wanted += 1;
            let due = t == ResourceType::Endpoints && self.eds_due.contains(&**name);
            // One lookup: the version held is replaced where it is.
            let held = state.held.get_mut(&**name);
            if !due
                && held
                    .as_ref()
                    .is_some_and(|v| Arc::ptr_eq(v, &r.version) || ***v == *r.version)
            {
                continue;
            }
            if due {
                self.eds_due.remove(&**name);
            }
            // Only EDS clusters have endpoints to wait for (a static or
            // passthrough cluster's name would stay due forever).
            if matches!(&r.plan, ResourcePlan::Cluster(c) if c.source == ClusterSource::Eds) {
                self.eds_due.insert(name.clone());
            }
            resources.push(r.delta.clone());
            let before = match held {
                Some(v) => Some(std::mem::replace(v, r.version.clone())),
                None => state.held.insert(name.clone(), r.version.clone()),
            };
            undo.push((name.clone(), before));
        }
        // Held beyond what is wanted: gone (no search when nothing is).
        let mut gone: Vec<Arc<str>> = if state.held.len() == wanted {
            Vec::new()
        } else {
            state
                .held
                .keys()
                .filter(|n| find(desired, n).is_none() || !state.wants(n))
                .cloned()
                .collect()
        };
        gone.sort();
        let mut removed = Vec::with_capacity(gone.len());
        for name in gone {
            removed.push(name.to_string());
            let held = state.held.remove(&name);
            undo.push((name, held));
        }
        if resources.is_empty() && removed.is_empty() {
            return None;
        }
        self.nonce += 1;
        let nonce = self.nonce;
        state.pending = Some((nonce, undo));
        Some(EncodedDelta {
            type_url: t.type_url(),
            resources,
            removed_resources: removed,
            nonce,
        })
    }
}

/// A request's type URL and response nonce, if it has those two fields
/// (once each, the nonce not empty) and no other: an ACK.
fn parse_ack(mut raw: &[u8]) -> Option<(&[u8], &[u8])> {
    // DeltaDiscoveryRequest fields 2 (type_url) and 6 (response_nonce),
    // both length-delimited (wire type 2).
    const TYPE_URL_KEY: u64 = (2 << 3) | 2;
    const NONCE_KEY: u64 = (6 << 3) | 2;
    let (mut type_url, mut nonce) = (None, None);
    while !raw.is_empty() {
        let key = prost::encoding::decode_varint(&mut raw).ok()?;
        let len = usize::try_from(prost::encoding::decode_varint(&mut raw).ok()?).ok()?;
        let value = raw.get(..len)?;
        raw = &raw[len..];
        let field = match key {
            TYPE_URL_KEY => &mut type_url,
            NONCE_KEY => &mut nonce,
            _ => return None,
        };
        if field.replace(value).is_some() {
            return None;
        }
    }
    // A nonce that is no UTF-8 is left to the decoder, which refuses it.
    let nonce = nonce.filter(|n| !n.is_empty() && std::str::from_utf8(n).is_ok())?;
    Some((type_url?, nonce))
}

/// Whether `nonce`, as a client echoes it, answers the response sent with
/// `pending` (its decimal digits, exactly).
fn answers(pending: u64, nonce: &[u8]) -> bool {
    Decimal::new(pending).as_bytes() == nonce
}

/// One delta stream after its opening: what the client holds and wants.
struct DeltaSession {
    ctx: Ctx,
    counters: Arc<StreamCounters>,
    node_id: String,
    snapshots: SnapshotWatch,
    st: DeltaStream,
}

type Responses = Vec<(ResourceType, EncodedDelta)>;

impl DeltaSession {
    fn new(ctx: Ctx, opened: Opened) -> Self {
        DeltaSession {
            ctx,
            counters: opened.counters,
            node_id: opened.node_id,
            snapshots: opened.snapshots,
            st: DeltaStream {
                types: PerType::default(),
                nonce: 0,
                eds_due: Default::default(),
            },
        }
    }

    /// The responses a new snapshot calls for, in order (often none).
    fn changed(&mut self, snap: Option<Arc<Snapshot>>) -> Responses {
        let mut out = Vec::new();
        if let Some(snap) = snap {
            // Clusters before endpoints: a CDS response makes endpoints due.
            for t in ResourceType::ORDER {
                if let Some(resp) = self.st.diff(t, &snap) {
                    out.push((t, resp));
                }
            }
        }
        out
    }

    /// Takes `raw` if it is an ACK of a type the stream already has, and
    /// nothing else (Envoy's ACK: a type URL and the nonce it answers):
    /// what [`DeltaSession::request`] does with it, without decoding it
    /// into a request. Anything else is left to `request`.
    fn try_ack(&mut self, raw: &[u8]) -> bool {
        let Some((type_url, nonce)) = parse_ack(raw) else {
            return false;
        };
        let Some(t) = std::str::from_utf8(type_url)
            .ok()
            .and_then(ResourceType::from_type_url)
        else {
            return false;
        };
        let Some(state) = self.st.types.get_mut(t) else {
            return false;
        };
        if state.pending.take_if(|(n, _)| answers(*n, nonce)).is_some() {
            self.counters.acked(t);
            self.ctx.stats.acked();
        }
        true
    }

    /// A subscription change, ACK or NACK: the response it calls for, if any.
    fn request(&mut self, req: DeltaDiscoveryRequest) -> Result<Responses, Status> {
        let (counters, node_id, st) = (&self.counters, &self.node_id, &mut self.st);
        check_node(req.node.as_ref(), node_id)?;
        let Some(t) = ResourceType::from_type_url(&req.type_url) else {
            debug!(type_url = %req.type_url, "ignoring unknown type");
            return Ok(Vec::new());
        };
        let new_type = !st.types.contains(t);
        let state = st.types.entry(t);
        if new_type {
            state.wildcard = req.resource_names_subscribe.is_empty();
            state.held = req
                .initial_resource_versions
                .iter()
                .map(|(n, v)| (Arc::from(n.as_str()), Arc::from(v.as_str())))
                .collect();
        }
        if !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty() {
            state.synced = None;
        }
        for n in &req.resource_names_subscribe {
            if n == "*" {
                state.wildcard = true;
            } else {
                state.names.insert(n.clone());
            }
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                state.wildcard = false;
            } else {
                state.names.remove(n);
                state.held.remove(n.as_str());
            }
        }
        if !req.response_nonce.is_empty() {
            // Only an answer to the latest response counts.
            let nonce = req.response_nonce.as_bytes();
            if let Some((_, undo)) = state.pending.take_if(|(n, _)| answers(*n, nonce)) {
                match &req.error_detail {
                    Some(err) => {
                        state.synced = None;
                        for (name, prev) in undo.into_iter().rev() {
                            match prev {
                                Some(v) => state.held.insert(name, v),
                                None => state.held.remove(&name),
                            };
                        }
                        warn!(%node_id, type_url = %req.type_url, error = %err.message, "proxy rejected an update");
                        counters.rejected(t, &err.message);
                    }
                    None => {
                        counters.acked(t);
                        self.ctx.stats.acked();
                    }
                }
            }
        }
        // A pure ACK/NACK changes no subscription and needs no reply; anything
        // else may call for resources the client does not hold yet.
        let pure_ack = !req.response_nonce.is_empty()
            && req.resource_names_subscribe.is_empty()
            && req.resource_names_unsubscribe.is_empty();
        if pure_ack {
            return Ok(Vec::new());
        }
        let snap = self.snapshots.latest();
        Ok(match snap {
            Some(snap) => st.diff(t, &snap).map(|r| (t, r)).into_iter().collect(),
            None => Vec::new(),
        })
    }

    /// Accounts for a response handed to the HTTP/2 stream.
    fn sending(&self, t: ResourceType, resp: &EncodedDelta, len: usize) {
        debug!(
            node_id = %self.node_id,
            type_url = t.type_url(),
            n = resp.resources.len(),
            removed = resp.removed_resources.len(),
            "sending"
        );
        self.ctx.stats.sent(len);
        self.counters.sent(t);
    }
}

// ---------------------------------------------------------------- state of the world

#[derive(Default)]
struct SotwType {
    /// Empty for wildcard types means everything.
    names: BTreeSet<String>,
    sent_version: Option<String>,
    nonce: Option<String>,
}

struct SotwStream {
    types: PerType<SotwType>,
    nonce: u64,
    /// The clusters (name -> version) of the latest CDS response.
    sent_clusters: HashMap<Arc<str>, Arc<str>>,
}

impl SotwStream {
    /// The response that brings the client of type `t` up to `snap`, if any is needed.
    fn response(&mut self, t: ResourceType, snap: &Snapshot) -> Option<DiscoveryResponse> {
        let state = self.types.get_mut(t)?;
        let wanted = snap.of_type(t).iter().filter(|r| {
            (t.is_wildcard() && state.names.is_empty()) || state.names.contains(&*r.name)
        });
        let version = set_version(wanted.clone());
        if state.sent_version.as_ref() == Some(&version) {
            return None;
        }
        let resources = wanted.clone().map(|r| r.any.clone()).collect();
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        state.nonce = Some(nonce.clone());
        state.sent_version = Some(version.clone());
        if t == ResourceType::Cluster {
            // Envoy warms an added or changed EDS cluster until a response
            // carrying its ClusterLoadAssignment arrives, even an unchanged
            // one (it waits out the initial fetch timeout otherwise): such
            // clusters' endpoints are due again.
            let clusters: HashMap<Arc<str>, Arc<str>> = wanted
                .map(|r| (r.name.clone(), r.version.clone()))
                .collect();
            let warming = clusters
                .iter()
                .filter(|(n, v)| self.sent_clusters.get(*n) != Some(*v))
                .map(|(n, _)| n);
            if let Some(eds) = self.types.get_mut(ResourceType::Endpoints)
                && warming.clone().any(|n| eds.names.contains(&**n))
            {
                eds.sent_version = None;
            }
            self.sent_clusters = clusters;
        }
        Some(DiscoveryResponse {
            version_info: version,
            resources,
            type_url: t.type_url().to_string(),
            nonce,
            ..Default::default()
        })
    }
}

async fn sotw_loop(
    ctx: &Ctx,
    mut opened: Opened,
    first: DiscoveryRequest,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
) -> Result<(), Status> {
    let node_id = opened.node_id.clone();
    let mut st = SotwStream {
        types: PerType::default(),
        nonce: 0,
        sent_clusters: HashMap::new(),
    };
    let mut next = Some(first);
    loop {
        let mut to_check: Vec<ResourceType> = Vec::new();
        if let Some(req) = next.take() {
            check_node(req.node.as_ref(), &node_id)?;
            if let Some(t) = ResourceType::from_type_url(&req.type_url) {
                let state = st.types.entry(t);
                let stale = !req.response_nonce.is_empty()
                    && state.nonce.as_deref() != Some(req.response_nonce.as_str());
                if !stale {
                    if !req.response_nonce.is_empty() {
                        match &req.error_detail {
                            Some(err) => {
                                warn!(%node_id, type_url = %req.type_url, error = %err.message, "proxy rejected an update");
                                opened.counters.rejected(t, &err.message);
                                // Envoy kept its previous clusters: whichever the
                                // next CDS response lists count as changed.
                                if t == ResourceType::Cluster {
                                    st.sent_clusters.clear();
                                }
                            }
                            None => {
                                opened.counters.acked(t);
                                ctx.stats.acked();
                            }
                        }
                    }
                    state.names = req
                        .resource_names
                        .iter()
                        .filter(|n| *n != "*")
                        .cloned()
                        .collect();
                    if req.error_detail.is_none() {
                        to_check.push(t);
                        // A CDS response may make endpoints due again.
                        if t == ResourceType::Cluster {
                            to_check.push(ResourceType::Endpoints);
                        }
                    }
                }
            }
        }
        let snap = opened.snapshots.latest();
        if let Some(snap) = snap {
            for t in to_check {
                if let Some(resp) = st.response(t, &snap) {
                    send_sotw(ctx, &opened.counters, &node_id, tx, t, resp).await?;
                }
            }
        }
        tokio::select! {
            req = inbound.next() => match req {
                Some(Ok(r)) => next = Some(r),
                Some(Err(status)) => {
                    debug!(%node_id, %status, "stream error");
                    return Ok(());
                }
                None => return Ok(()),
            },
            changed = opened.snapshots.changed() => {
                let Some(snap) = changed else {
                    return Err(Status::unavailable("the proxy was removed"));
                };
                if let Some(snap) = snap {
                    // Clusters before endpoints: a CDS response may make endpoints due.
                    for t in ResourceType::ORDER {
                        if let Some(resp) = st.response(t, &snap) {
                            send_sotw(ctx, &opened.counters, &node_id, tx, t, resp).await?;
                        }
                    }
                }
            }
        }
    }
}

async fn send_sotw(
    ctx: &Ctx,
    counters: &StreamCounters,
    node_id: &str,
    tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
    t: ResourceType,
    resp: DiscoveryResponse,
) -> Result<(), Status> {
    debug!(
        node_id,
        type_url = t.type_url(),
        n = resp.resources.len(),
        version = %resp.version_info,
        "sending"
    );
    ctx.stats.sent(prost::Message::encoded_len(&resp));
    tx.send(Ok(resp))
        .await
        .map_err(|_| Status::cancelled("stream closed"))?;
    counters.sent(t);
    counters.sent_now();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_ack;
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    use envoy_types::pb::google::rpc::Status as RpcStatus;
    use prost::Message;

    const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

    fn ack() -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: CDS.into(),
            response_nonce: "12".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_ack_is_a_type_url_and_a_nonce() {
        let raw = ack().encode_to_vec();
        assert_eq!(parse_ack(&raw), Some((CDS.as_bytes(), b"12".as_slice())));
        // Field order does not matter.
        let mut swapped = DeltaDiscoveryRequest {
            response_nonce: "12".into(),
            ..Default::default()
        }
        .encode_to_vec();
        swapped.extend(
            DeltaDiscoveryRequest {
                type_url: CDS.into(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        assert_eq!(
            parse_ack(&swapped),
            Some((CDS.as_bytes(), b"12".as_slice()))
        );
    }

    #[test]
    fn anything_more_or_less_is_not_taken_as_an_ack() {
        let with = |f: fn(&mut DeltaDiscoveryRequest)| {
            let mut r = ack();
            f(&mut r);
            r.encode_to_vec()
        };
        let not_acks = [
            with(|r| r.response_nonce.clear()),
            with(|r| r.type_url.clear()),
            with(|r| {
                r.node = Some(Node {
                    id: "default.web-1".into(),
                    ..Default::default()
                })
            }),
            with(|r| r.resource_names_subscribe = vec!["a".into()]),
            with(|r| r.resource_names_unsubscribe = vec!["a".into()]),
            with(|r| {
                r.error_detail = Some(RpcStatus {
                    code: 3,
                    message: "rejected".into(),
                    ..Default::default()
                })
            }),
            with(|r| {
                r.initial_resource_versions = [("a".to_string(), "v".to_string())].into();
            }),
        ];
        for raw in not_acks {
            assert_eq!(parse_ack(&raw), None, "{raw:?}");
        }
        // A field twice (the last would count): left to the full decoder.
        let mut twice = ack().encode_to_vec();
        twice.extend(ack().encode_to_vec());
        assert_eq!(parse_ack(&twice), None);
        // Cut short, or a length past the end.
        let raw = ack().encode_to_vec();
        assert_eq!(parse_ack(&raw[..raw.len() - 1]), None);
        assert_eq!(parse_ack(&[0x12, 0xff, 0x01]), None);
        // A nonce that is no UTF-8: the decoder's error, as before.
        let mut bad = DeltaDiscoveryRequest {
            type_url: CDS.into(),
            ..Default::default()
        }
        .encode_to_vec();
        bad.extend([0x32, 0x01, 0xff]);
        assert_eq!(parse_ack(&bad), None);
        assert!(DeltaDiscoveryRequest::decode(&bad[..]).is_err());
        assert_eq!(parse_ack(&[]), None);
    }
}
