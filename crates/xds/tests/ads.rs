//! The ADS server over a real gRPC connection: delta and state of the world,
//! ACK/NACK handling, resumption, and refusals.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use kuma_xds::conn;
use kuma_xds::plan::{
    ClusterPlan, ClusterSource, EndpointsPlan, FilterPlan, ListenerPlan, Protocol, SocketAddr,
};
use kuma_xds::server::StreamCounters;
use kuma_xds::{
    AdsServer, ClusterTimeouts, ResourcePlan, ResourceType, SnapshotCache, StreamAuth,
    StreamEvents, Timeouts,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const NODE: &str = "default.web-1";

struct TokenAuth;

#[tonic::async_trait]
impl StreamAuth for TokenAuth {
    async fn authenticate(&self, _node: &Node, metadata: &MetadataMap) -> Result<(), Status> {
        match metadata.get("authorization").and_then(|v| v.to_str().ok()) {
            Some("good") => Ok(()),
            _ => Err(Status::unauthenticated(
                "invalid dataplane token: bad signature",
            )),
        }
    }
}

#[derive(Default)]
struct Recorder {
    counters: Mutex<Vec<Arc<StreamCounters>>>,
    connected: Mutex<Vec<u64>>,
    disconnected: Mutex<Vec<u64>>,
}

#[tonic::async_trait]
impl StreamEvents for Recorder {
    async fn connected(
        &self,
        id: u64,
        _node: &Node,
        counters: Arc<StreamCounters>,
    ) -> Result<(), Status> {
        self.connected.lock().unwrap().push(id);
        self.counters.lock().unwrap().push(counters);
        Ok(())
    }
    async fn disconnected(&self, id: u64, _node_id: &str) {
        self.disconnected.lock().unwrap().push(id);
    }
}

/// `plans(&[8080], 10001)` with only the cluster changed: another connect timeout.
fn plans_with_connect_timeout(ms: u64) -> Vec<ResourcePlan> {
    let mut p = plans(&[8080], 10001);
    if let ResourcePlan::Cluster(c) = &mut p[0] {
        c.timeouts.connection_ms = ms;
    }
    p
}

fn plans(backend_ports: &[u32], listener_port: u32) -> Vec<ResourcePlan> {
    let cluster = "default_backend___msvc_80".to_string();
    vec![
        ResourcePlan::Cluster(ClusterPlan {
            name: cluster.clone(),
            protocol: Protocol::Http,
            source: ClusterSource::Eds,
            timeouts: ClusterTimeouts::default(),
        }),
        ResourcePlan::Endpoints(EndpointsPlan {
            cluster: cluster.clone(),
            endpoints: backend_ports
                .iter()
                .map(|p| SocketAddr {
                    address: "127.0.0.2".into(),
                    port: *p,
                })
                .collect(),
        }),
        ResourcePlan::Listener(ListenerPlan {
            name: "outbound:127.0.0.1:10001".into(),
            address: SocketAddr {
                address: "127.0.0.1".into(),
                port: listener_port,
            },
            inbound: false,
            bind_to_port: true,
            use_original_dst: false,
            stat_prefix: "out".into(),
            filter: FilterPlan::Http {
                cluster,
                protocol: Protocol::Http,
                timeouts: Timeouts::default(),
            },
        }),
    ]
}

/// An ADS server as the dp-server runs it ([`kuma_xds::conn`]: delta
/// streams inline, state of the world through the gRPC service), and a
/// client connected to it.
async fn start() -> (
    Arc<SnapshotCache>,
    Arc<Recorder>,
    AggregatedDiscoveryServiceClient<Channel>,
) {
    let (cache, events, addr) = serve().await;
    let client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (cache, events, client)
}

async fn serve() -> (Arc<SnapshotCache>, Arc<Recorder>, std::net::SocketAddr) {
    let cache = Arc::new(SnapshotCache::new());
    let events = Arc::new(Recorder::default());
    let ads = AdsServer::new(cache.clone(), Arc::new(TokenAuth), events.clone()).into_service();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let ads = ads.clone();
            tokio::spawn(async move {
                let grpc = ads.clone();
                let _ = conn::serve(&ads, tcp, move |req| {
                    let call =
                        tower::ServiceExt::oneshot(grpc.clone(), req.map(tonic::body::Body::new));
                    async move {
                        match call.await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        }
                    }
                })
                .await;
            });
        }
    });
    (cache, events, addr)
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.into(),
        ..Default::default()
    })
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", token.parse().unwrap());
    r
}

struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: tonic::Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    async fn open(
        client: &mut AggregatedDiscoveryServiceClient<Channel>,
        first: DeltaDiscoveryRequest,
    ) -> Result<Delta, Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let resp = client
            .delta_aggregated_resources(with_token(ReceiverStream::new(rx), "good"))
            .await?;
        Ok(Delta {
            tx,
            rx: resp.into_inner(),
        })
    }
    /// A stream for NODE whose first request subscribes to every cluster.
    async fn open_cds(client: &mut AggregatedDiscoveryServiceClient<Channel>) -> Delta {
        let mut first = sub(ResourceType::Cluster, &[]);
        first.node = node(NODE);
        Delta::open(client, first).await.unwrap()
    }
    /// [`Delta::open_cds`], then the backend's endpoints, both ACKed:
    /// the stream and its CDS and EDS responses.
    async fn open_cds_and_backend_eds(
        client: &mut AggregatedDiscoveryServiceClient<Channel>,
    ) -> (Delta, DeltaDiscoveryResponse, DeltaDiscoveryResponse) {
        let mut s = Delta::open_cds(client).await;
        let cds = s.recv().await;
        s.ack(&cds).await;
        s.send(sub(ResourceType::Endpoints, &["default_backend___msvc_80"]))
            .await;
        let eds = s.recv().await;
        s.ack(&eds).await;
        (s, cds, eds)
    }
    async fn send(&self, r: DeltaDiscoveryRequest) {
        self.tx.send(r).await.unwrap();
    }
    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        self.rx
            .next()
            .await
            .expect("stream open")
            .expect("response")
    }
    async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }
}

/// A server with NODE's usual snapshot, and a delta stream of NODE that
/// got its first CDS response (not ACKed yet).
async fn started_with_cds() -> (
    Arc<SnapshotCache>,
    Arc<Recorder>,
    Delta,
    DeltaDiscoveryResponse,
) {
    let (cache, events, mut client) = start().await;
    cache.set(NODE, &plans(&[8080], 10001));
    let mut s = Delta::open_cds(&mut client).await;
    let cds = s.recv().await;
    (cache, events, s, cds)
}

fn sub(t: ResourceType, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: t.type_url().into(),
        resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn delta_sends_only_what_changed_and_backs_off_on_nack() {
    let (cache, events, mut s, cds) = started_with_cds().await;
    assert_eq!(cds.type_url, ResourceType::Cluster.type_url());
    assert_eq!(cds.resources.len(), 1);
    s.ack(&cds).await;
    s.send(sub(ResourceType::Endpoints, &["default_backend___msvc_80"]))
        .await;
    let eds = s.recv().await;
    assert_eq!(eds.resources[0].name, "default_backend___msvc_80");
    s.ack(&eds).await;
    s.send(sub(ResourceType::Listener, &[])).await;
    let lds = s.recv().await;
    assert_eq!(lds.resources.len(), 1);
    s.ack(&lds).await;

    // A new endpoint: only the endpoints are resent.
    cache.set(NODE, &plans(&[8080, 8081], 10001));
    let eds2 = s.recv().await;
    assert_eq!(eds2.type_url, ResourceType::Endpoints.type_url());
    assert_eq!(eds2.resources.len(), 1);
    assert_ne!(eds2.resources[0].version, eds.resources[0].version);

    // NACK it: nothing is resent until something changes again; then the
    // rejected endpoints come back along with the change.
    s.send(DeltaDiscoveryRequest {
        type_url: eds2.type_url.clone(),
        response_nonce: eds2.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "bad endpoint".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    // Wait for the server to have taken the NACK in.
    let counters = events.counters.lock().unwrap()[0].clone();
    while counters.get(ResourceType::Endpoints).rejected == 0 {
        tokio::task::yield_now().await;
    }
    cache.set(NODE, &plans(&[8080, 8081], 10002));
    let next = s.recv().await;
    assert_eq!(
        next.type_url,
        ResourceType::Endpoints.type_url(),
        "the rejected type is retried with the next change"
    );
    let next2 = s.recv().await;
    assert_eq!(next2.type_url, ResourceType::Listener.type_url());
    assert_eq!(next2.resources.len(), 1);

    let eds = counters.get(ResourceType::Endpoints);
    assert_eq!(eds.rejected, 1);
    assert_eq!(
        eds.sent, 3,
        "the first push, the rejected one and the retry"
    );
    assert_eq!(
        counters.last_rejection().as_deref(),
        Some("bad endpoint"),
        "the proxy's reason is kept for the insight"
    );
    assert!(counters.get(ResourceType::Cluster).acked >= 1);
    assert!(counters.last_sent().is_some());
}

#[tokio::test]
async fn delta_counts_only_the_ack_of_the_latest_nonce() {
    let (cache, events, mut s, cds) = started_with_cds().await;
    let ack = |nonce: &str, type_url: &str| DeltaDiscoveryRequest {
        type_url: type_url.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    };
    let cds_url = ResourceType::Cluster.type_url();
    // A stale nonce, a nonce with a leading zero, an unknown type: none
    // counts, none ends the stream.
    s.send(ack("999", cds_url)).await;
    s.send(ack(&format!("0{}", cds.nonce), cds_url)).await;
    s.send(ack(&cds.nonce, "type.googleapis.com/example.Unknown"))
        .await;
    // The ACK, then the same again: counted once.
    s.send(ack(&cds.nonce, cds_url)).await;
    s.send(ack(&cds.nonce, cds_url)).await;
    let counters = events.counters.lock().unwrap()[0].clone();
    // Requests are taken in order: once the ACK counts, the three before
    // it were taken in (and did not count).
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while counters.get(ResourceType::Cluster).acked == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the ACK is counted");
    // The stream still serves: a change arrives after all of the above.
    cache.set(NODE, &plans_with_connect_timeout(7000));
    let next = s.recv().await;
    assert_eq!(next.type_url, cds_url);
    let cds_counts = counters.get(ResourceType::Cluster);
    assert_eq!(cds_counts.acked, 1, "{cds_counts:?}");
    assert_eq!(cds_counts.rejected, 0);
}

#[tokio::test]
async fn delta_resends_the_endpoints_of_a_changed_cluster() {
    let (cache, _events, mut client) = start().await;
    cache.set(NODE, &plans(&[8080], 10001));
    let (mut s, cds, eds) = Delta::open_cds_and_backend_eds(&mut client).await;
    s.send(sub(ResourceType::Listener, &[])).await;
    let lds = s.recv().await;
    s.ack(&lds).await;

    // Only the cluster changes (a new connect timeout): Envoy keeps it
    // warming until it gets the endpoints again, so they follow it,
    // unchanged, before the listeners.
    let changed = plans_with_connect_timeout(3_000);
    cache.set(NODE, &changed);
    let cds2 = s.recv().await;
    assert_eq!(cds2.type_url, ResourceType::Cluster.type_url());
    assert_ne!(cds2.resources[0].version, cds.resources[0].version);
    s.ack(&cds2).await;
    let eds2 = s.recv().await;
    assert_eq!(eds2.type_url, ResourceType::Endpoints.type_url());
    assert_eq!(eds2.resources.len(), 1);
    assert_eq!(eds2.resources[0].name, "default_backend___msvc_80");
    assert_eq!(eds2.resources[0].version, eds.resources[0].version);
    s.ack(&eds2).await;

    // A listener-only change sends listeners and nothing else.
    let mut changed2 = changed.clone();
    if let ResourcePlan::Listener(l) = &mut changed2[2] {
        l.stat_prefix = "out2".into();
    }
    cache.set(NODE, &changed2);
    let lds2 = s.recv().await;
    assert_eq!(lds2.type_url, ResourceType::Listener.type_url());
}

#[tokio::test]
async fn delta_resumes_from_initial_resource_versions_and_removes_deleted() {
    let (cache, _events, mut client) = start().await;
    cache.set(NODE, &plans(&[8080], 10001));
    let snap = cache.get(NODE).unwrap();
    let held: HashMap<String, String> = snap
        .of_type(ResourceType::Cluster)
        .iter()
        .map(|r| (r.name.to_string(), r.version.to_string()))
        .collect();

    // Reconnect claiming the clusters already: CDS has nothing to send, so the
    // first response is for LDS.
    let mut first = sub(ResourceType::Cluster, &[]);
    first.node = node(NODE);
    first.initial_resource_versions = held;
    let mut s = Delta::open(&mut client, first).await.unwrap();
    s.send(sub(ResourceType::Listener, &[])).await;
    let lds = s.recv().await;
    assert_eq!(lds.type_url, ResourceType::Listener.type_url());
    s.ack(&lds).await;

    // The listener disappears: it is removed by name.
    let mut p = plans(&[8080], 10001);
    p.pop();
    cache.set(NODE, &p);
    let removal = s.recv().await;
    assert_eq!(removal.type_url, ResourceType::Listener.type_url());
    assert_eq!(
        removal.removed_resources,
        vec!["outbound:127.0.0.1:10001".to_string()]
    );
}

#[tokio::test]
async fn delta_reconnect_with_a_stale_cluster_gets_its_endpoints_again() {
    let (cache, _events, mut client) = start().await;
    cache.set(NODE, &plans(&[8080], 10001));
    let versions = |t: ResourceType| -> HashMap<String, String> {
        cache
            .get(NODE)
            .unwrap()
            .of_type(t)
            .iter()
            .map(|r| (r.name.to_string(), r.version.to_string()))
            .collect()
    };
    let old_clusters = versions(ResourceType::Cluster);
    let endpoints = versions(ResourceType::Endpoints);
    // While the proxy was away its cluster changed; its endpoints did not.
    let changed = plans_with_connect_timeout(3_000);
    cache.set(NODE, &changed);

    let mut first = sub(ResourceType::Cluster, &[]);
    first.node = node(NODE);
    first.initial_resource_versions = old_clusters;
    let mut s = Delta::open(&mut client, first).await.unwrap();
    let cds = s.recv().await;
    assert_eq!(cds.type_url, ResourceType::Cluster.type_url());
    s.ack(&cds).await;
    // Envoy resubscribes to the endpoints it holds, at the version it holds:
    // they come anyway, or the changed cluster would warm for 15 s.
    let mut eds_sub = sub(ResourceType::Endpoints, &["default_backend___msvc_80"]);
    eds_sub.initial_resource_versions = endpoints.clone();
    s.send(eds_sub).await;
    let eds = s.recv().await;
    assert_eq!(eds.type_url, ResourceType::Endpoints.type_url());
    assert_eq!(eds.resources.len(), 1);
    assert_eq!(
        Some(&eds.resources[0].version),
        endpoints.get("default_backend___msvc_80")
    );
}

#[tokio::test]
async fn refusals_say_why() {
    let (cache, _events, mut client) = start().await;
    cache.set(NODE, &plans(&[8080], 10001));

    let err = forged_delta(&mut client).await;
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("invalid dataplane token"));

    let err = node_change(&mut client).await;
    assert_eq!(err.code(), Code::PermissionDenied);
}

/// A delta stream for NODE with a forged token: the error that ends it.
async fn forged_delta(client: &mut AggregatedDiscoveryServiceClient<Channel>) -> Status {
    let (tx, rx) = mpsc::channel(4);
    let mut first = sub(ResourceType::Cluster, &[]);
    first.node = node(NODE);
    tx.send(first).await.unwrap();
    let mut stream = client
        .delta_aggregated_resources(with_token(ReceiverStream::new(rx), "forged"))
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap_err()
}

/// A delta stream for NODE whose second request names another node: the
/// error that ends it (the node id cannot change within a stream).
async fn node_change(client: &mut AggregatedDiscoveryServiceClient<Channel>) -> Status {
    let mut s = Delta::open_cds(client).await;
    let cds = s.recv().await;
    let mut again = sub(ResourceType::Listener, &[]);
    again.node = node("default.someone-else");
    again.response_nonce = cds.nonce;
    s.send(again).await;
    s.rx.next().await.unwrap().unwrap_err()
}

/// Every delta stream that was announced connected is announced gone exactly
/// once, whether the client leaves or the server ends it; a refused one never.
#[tokio::test]
async fn delta_disconnects_are_announced_once() {
    let (cache, events, mut client) = start().await;
    cache.set(NODE, &plans(&[8080], 10001));
    let settle = || async {
        for _ in 0..100 {
            let (c, d) = (
                events.connected.lock().unwrap().len(),
                events.disconnected.lock().unwrap().len(),
            );
            if c == d {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut c = events.connected.lock().unwrap().clone();
        let mut d = events.disconnected.lock().unwrap().clone();
        c.sort();
        d.sort();
        (c, d)
    };

    // Refused: never connected, never disconnected.
    forged_delta(&mut client).await;
    assert_eq!(settle().await, (vec![], vec![]));

    // The client goes away.
    let mut s = Delta::open_cds(&mut client).await;
    s.recv().await;
    drop(s);
    let (c, d) = settle().await;
    assert_eq!((c.len(), &c), (1, &d));

    // The server ends the stream (the node id changed).
    node_change(&mut client).await;
    let (c, d) = settle().await;
    assert_eq!((c.len(), &c), (2, &d));
}

/// A state-of-the-world stream for NODE whose first request asks for clusters.
async fn open_sotw(
    client: &mut AggregatedDiscoveryServiceClient<Channel>,
) -> (
    mpsc::Sender<DiscoveryRequest>,
    tonic::Streaming<DiscoveryResponse>,
) {
    let (tx, rx) = mpsc::channel(16);
    tx.send(DiscoveryRequest {
        node: node(NODE),
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let stream = client
        .stream_aggregated_resources(with_token(ReceiverStream::new(rx), "good"))
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}

async fn next(s: &mut tonic::Streaming<DiscoveryResponse>) -> DiscoveryResponse {
    s.next().await.expect("stream open").expect("response")
}

#[tokio::test]
async fn state_of_the_world_lists_everything_and_ignores_stale_nonces() {
    let (cache, _events, mut client) = start().await;
    cache.set(NODE, &plans(&[8080], 10001));
    let (tx, mut stream) = open_sotw(&mut client).await;
    let cds = next(&mut stream).await;
    assert_eq!(cds.resources.len(), 1);
    let ack = |r: &DiscoveryResponse, names: Vec<String>| DiscoveryRequest {
        type_url: r.type_url.clone(),
        version_info: r.version_info.clone(),
        response_nonce: r.nonce.clone(),
        resource_names: names,
        ..Default::default()
    };
    tx.send(ack(&cds, vec![])).await.unwrap();
    tx.send(DiscoveryRequest {
        type_url: ResourceType::Endpoints.type_url().into(),
        resource_names: vec!["default_backend___msvc_80".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let eds = next(&mut stream).await;
    assert_eq!(eds.type_url, ResourceType::Endpoints.type_url());
    tx.send(ack(&eds, vec!["default_backend___msvc_80".into()]))
        .await
        .unwrap();
    // A stale nonce for CDS changes nothing.
    tx.send(DiscoveryRequest {
        type_url: ResourceType::Cluster.type_url().into(),
        response_nonce: "0".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    tx.send(DiscoveryRequest {
        type_url: ResourceType::Listener.type_url().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let lds = next(&mut stream).await;
    assert_eq!(lds.type_url, ResourceType::Listener.type_url());
    tx.send(ack(&lds, vec![])).await.unwrap();

    // A change of endpoints sends EDS only, with every requested resource.
    cache.set(NODE, &plans(&[8080, 8081], 10001));
    let eds2 = next(&mut stream).await;
    assert_eq!(eds2.type_url, ResourceType::Endpoints.type_url());
    assert_eq!(eds2.resources.len(), 1);
    assert_ne!(eds2.version_info, eds.version_info);
}

#[tokio::test]
async fn state_of_the_world_resends_endpoints_of_a_changed_cluster() {
    let (cache, _events, mut client) = start().await;
    cache.set(NODE, &plans(&[8080], 10001));
    let (tx, mut stream) = open_sotw(&mut client).await;
    let ack = |r: &DiscoveryResponse, names: &[&str]| DiscoveryRequest {
        type_url: r.type_url.clone(),
        version_info: r.version_info.clone(),
        response_nonce: r.nonce.clone(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    };
    let eds_name = "default_backend___msvc_80";
    let cds = next(&mut stream).await;
    tx.send(ack(&cds, &[])).await.unwrap();
    tx.send(DiscoveryRequest {
        type_url: ResourceType::Endpoints.type_url().into(),
        resource_names: vec![eds_name.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let eds = next(&mut stream).await;
    assert_eq!(eds.type_url, ResourceType::Endpoints.type_url());
    tx.send(ack(&eds, &[eds_name])).await.unwrap();
    tx.send(DiscoveryRequest {
        type_url: ResourceType::Listener.type_url().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let lds = next(&mut stream).await;
    assert_eq!(lds.type_url, ResourceType::Listener.type_url());
    tx.send(ack(&lds, &[])).await.unwrap();

    // Only the listener changes: LDS alone, no endpoints.
    cache.set(NODE, &plans(&[8080], 10002));
    let lds2 = next(&mut stream).await;
    assert_eq!(lds2.type_url, ResourceType::Listener.type_url());
    tx.send(ack(&lds2, &[])).await.unwrap();

    // The cluster changes, its endpoints do not: Envoy warms the new cluster
    // until it gets a ClusterLoadAssignment, so the unchanged endpoints come
    // again right after the clusters, under a new nonce.
    let mut changed = plans(&[8080], 10002);
    if let ResourcePlan::Cluster(c) = &mut changed[0] {
        c.timeouts.connection_ms = 3_000;
    }
    cache.set(NODE, &changed);
    let cds2 = next(&mut stream).await;
    assert_eq!(cds2.type_url, ResourceType::Cluster.type_url());
    assert_ne!(cds2.version_info, cds.version_info);
    // (A generous bound only so that a regression fails instead of hanging.)
    let eds2 = tokio::time::timeout(std::time::Duration::from_secs(30), next(&mut stream))
        .await
        .expect("the endpoints of the changed cluster are sent again");
    assert_eq!(eds2.type_url, ResourceType::Endpoints.type_url());
    assert_eq!(eds2.version_info, eds.version_info);
    assert_ne!(eds2.nonce, eds.nonce);
    assert_eq!(eds2.resources, eds.resources);

    // Envoy's re-request for the warming cluster crosses that response (a
    // stale nonce), then it ACKs: nothing more is sent; the next message is
    // for the next change.
    tx.send(ack(&cds2, &[])).await.unwrap();
    tx.send(ack(&eds, &[eds_name])).await.unwrap();
    tx.send(ack(&eds2, &[eds_name])).await.unwrap();
    if let ResourcePlan::Listener(l) = &mut changed[2] {
        l.address.port = 10003;
    }
    cache.set(NODE, &changed);
    let lds3 = next(&mut stream).await;
    assert_eq!(lds3.type_url, ResourceType::Listener.type_url());
}

/// A stream that is up to date with a snapshot still answers a request that
/// subscribes to more of it: the unchanged snapshot is no reason to skip it.
#[tokio::test]
async fn delta_answers_a_new_subscription_without_a_snapshot_change() {
    let (cache, _events, mut client) = start().await;
    let mut p = plans(&[8080], 10001);
    p.push(ResourcePlan::Endpoints(EndpointsPlan {
        cluster: "other".into(),
        endpoints: [SocketAddr {
            address: "127.0.0.3".into(),
            port: 9090,
        }]
        .into_iter()
        .collect(),
    }));
    cache.set(NODE, &p);
    let (mut s, _, _) = Delta::open_cds_and_backend_eds(&mut client).await;

    // The stream is in step with the snapshot, which does not change.
    s.send(sub(ResourceType::Endpoints, &["other"])).await;
    let other = tokio::time::timeout(std::time::Duration::from_secs(5), s.recv())
        .await
        .expect("the new subscription is answered");
    assert_eq!(other.type_url, ResourceType::Endpoints.type_url());
    let names: Vec<&str> = other.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["other"]);
}

#[tokio::test]
async fn delta_and_sotw_streams_of_a_removed_proxy_end_unavailable() {
    let (cache, _events, mut client) = start().await;
    cache.set(NODE, &plans(&[8080], 10001));
    let (mut delta, _, _) = Delta::open_cds_and_backend_eds(&mut client).await;
    let (_sotw_tx, mut sotw) = open_sotw(&mut client).await;
    let _ = next(&mut sotw).await;

    cache.remove(NODE);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), delta.rx.next())
        .await
        .expect("the delta stream ends");
    let status = ended.expect("a status").expect_err("an error status");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("removed"), "{status:?}");
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), sotw.next())
        .await
        .expect("the sotw stream ends");
    let status = ended.expect("a status").expect_err("an error status");
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn delta_keeps_watching_after_a_change_that_calls_for_nothing() {
    let (cache, _events, mut s, cds) = started_with_cds().await;
    s.ack(&cds).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    // Only endpoints change, and the stream follows clusters alone: no
    // response, and the client has nothing in flight.
    cache.set(NODE, &plans(&[8080, 8081], 10001));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // The next change still reaches it.
    let mut changed = plans(&[8080, 8081], 10001);
    if let ResourcePlan::Cluster(c) = &mut changed[0] {
        c.timeouts.connection_ms = 7000;
    }
    cache.set(NODE, &changed);
    let cds = tokio::time::timeout(std::time::Duration::from_secs(5), s.recv())
        .await
        .expect("the cluster change arrives");
    assert_eq!(cds.type_url, ResourceType::Cluster.type_url());
    assert_eq!(cds.resources.len(), 1);
}

/// A client that speaks HTTP/2 frame by frame, for what a gRPC client
/// never sends.
struct RawH2 {
    tcp: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawH2 {
    async fn open(addr: std::net::SocketAddr) -> RawH2 {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut c = RawH2 {
            tcp,
            buf: Vec::new(),
        };
        c.send(4, 0, 0, &[]).await;
        c
    }

    async fn send(&mut self, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend([ty, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        self.tcp.write_all(&f).await.unwrap();
    }

    /// The next frame (type, flags, stream, payload); `None` once the
    /// server closed the connection.
    async fn frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f: Vec<u8> = self.buf.drain(..9 + len).collect();
                    let stream = u32::from_be_bytes([f[5], f[6], f[7], f[8]]);
                    return Some((f[3], f[4], stream, f[9..].to_vec()));
                }
            }
            let mut chunk = [0u8; 4096];
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(5), self.tcp.read(&mut chunk))
                    .await
                    .expect("the server answers within 5 s")
                    .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[tokio::test]
async fn http2_settings_and_pings_are_acknowledged() {
    let (_cache, _events, addr) = serve().await;
    let mut c = RawH2::open(addr).await;
    c.send(6, 0, 0, b"12345678").await;
    let mut settings = None;
    let mut settings_acked = false;
    loop {
        let (ty, flags, stream, payload) = c.frame().await.expect("connection open");
        assert_eq!(stream, 0);
        match (ty, flags) {
            (4, 0) => settings = Some(payload),
            (4, 1) => settings_acked = true,
            (6, 1) => {
                assert_eq!(payload, b"12345678");
                break;
            }
            _ => {}
        }
    }
    // MAX_CONCURRENT_STREAMS 1024, INITIAL_WINDOW_SIZE 1 MiB,
    // MAX_HEADER_LIST_SIZE 64 KiB.
    assert_eq!(
        settings.expect("server SETTINGS"),
        [0, 3, 0, 0, 4, 0, 0, 4, 0, 0x10, 0, 0, 0, 6, 0, 1, 0, 0]
    );
    assert!(settings_acked, "our SETTINGS acknowledged before the PING");
}

#[tokio::test]
async fn http2_frames_out_of_bounds_end_the_connection_with_a_goaway() {
    let (_cache, _events, addr) = serve().await;
    // A frame over the 16 KB we take, a PING of the wrong size, DATA on
    // stream 0: each a connection error with its code.
    for (head, code) in [
        (vec![0x01, 0x00, 0x00, 0, 0, 0, 0, 0, 1], 0x6),
        (vec![0, 0, 4, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4], 0x6),
        (vec![0, 0, 1, 0, 0, 0, 0, 0, 0, 9], 0x1),
    ] {
        let mut c = RawH2::open(addr).await;
        {
            use tokio::io::AsyncWriteExt;
            c.tcp.write_all(&head).await.unwrap();
        }
        let mut goaway = None;
        while let Some((ty, _, _, payload)) = c.frame().await {
            if ty == 7 {
                goaway = Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
        }
        assert_eq!(goaway, Some(code), "GOAWAY for {head:?}");
    }
}

#[tokio::test]
async fn http2_header_blocks_are_read_through_padding_priority_and_continuation() {
    let (_cache, _events, addr) = serve().await;
    let mut c = RawH2::open(addr).await;
    let block = loona_hpack::Encoder::new().encode([
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (
            b":path",
            b"/envoy.service.discovery.v3.AggregatedDiscoveryService/NoSuchMethod",
        ),
        (b":authority", b"localhost"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]);
    let (first, rest) = block.split_at(block.len() / 2);
    // PADDED (3 bytes) and PRIORITY, no END_HEADERS.
    let mut headers = vec![3, 0, 0, 0, 0, 16];
    headers.extend_from_slice(first);
    headers.extend([0, 0, 0]);
    c.send(1, 0x8 | 0x20, 1, &headers).await;
    c.send(9, 0x4, 1, rest).await;
    c.send(0, 0x1, 1, &[]).await;
    // The handler's answer, decoded: UNIMPLEMENTED, trailers-only (one
    // HEADERS frame that ends the stream, as gRPC clients expect).
    let mut decoder = loona_hpack::Decoder::new();
    let mut fields = Vec::new();
    loop {
        let (ty, flags, stream, payload) = c.frame().await.expect("connection open");
        if stream != 1 || ty == 3 {
            continue;
        }
        assert_eq!(ty, 1, "a trailers-only response is one HEADERS frame");
        fields.extend(decoder.decode(&payload).unwrap());
        assert_ne!(flags & 0x1, 0, "END_STREAM on the response's HEADERS");
        break;
    }
    let field = |name: &[u8]| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
    };
    assert_eq!(field(b":status").as_deref(), Some("200"));
    assert_eq!(field(b"grpc-status").as_deref(), Some("12"));
}

/// `n` outbound listeners (some 100 bytes each on the wire).
fn listeners(n: u32) -> Vec<ResourcePlan> {
    (0..n)
        .map(|i| {
            ResourcePlan::Listener(ListenerPlan {
                name: format!("outbound:127.0.0.1:{}", 20000 + i),
                address: SocketAddr {
                    address: "127.0.0.1".into(),
                    port: 20000 + i,
                },
                inbound: false,
                bind_to_port: true,
                use_original_dst: false,
                stat_prefix: format!("outbound_127_0_0_1_{}", 20000 + i),
                filter: FilterPlan::Http {
                    cluster: "default_backend___msvc_80".into(),
                    protocol: Protocol::Http,
                    timeouts: Timeouts::default(),
                },
            })
        })
        .collect()
}

#[tokio::test]
async fn http2_frames_are_read_again_once_a_blocked_write_drains() {
    // A response of some 600 KB to a client that does not read at first,
    // through small socket buffers: the server's output backs up past the
    // point where it stops reading. The PING sent meanwhile must be read
    // (and answered) once the client has drained the response.
    let cache = Arc::new(SnapshotCache::new());
    cache.set(NODE, &listeners(6000));
    let ads =
        AdsServer::new(cache, Arc::new(TokenAuth), Arc::new(Recorder::default())).into_service();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&tcp)
            .set_send_buffer_size(4096)
            .unwrap();
        let _ = conn::serve(&ads, tcp, |_req: http::Request<conn::RequestBody>| async {
            http::Response::new(Once(None))
        })
        .await;
    });
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let mut c = RawH2 {
        tcp,
        buf: Vec::new(),
    };
    {
        use tokio::io::AsyncWriteExt;
        c.tcp
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
    }
    // Windows as large as they go: only the sockets hold the response back.
    c.send(4, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]).await;
    c.send(8, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes())
        .await;
    let block = loona_hpack::Encoder::new().encode([
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", kuma_xds::DELTA_PATH.as_bytes()),
        (b":authority", b"localhost"),
        (b"content-type", b"application/grpc"),
        (b"authorization", b"good"),
    ]);
    c.send(1, 0x4, 1, &block).await;
    let mut first = sub(ResourceType::Listener, &[]);
    first.node = node(NODE);
    let msg = prost::Message::encode_to_vec(&first);
    let mut data = vec![0];
    data.extend((msg.len() as u32).to_be_bytes());
    data.extend(msg);
    c.send(0, 0, 1, &data).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    c.send(6, 0, 0, b"drained?").await;
    let mut response = 0;
    loop {
        let (ty, flags, stream, payload) = c.frame().await.expect("connection open");
        match (ty, stream) {
            (0, 1) => response += payload.len(),
            (6, 0) if flags & 0x1 != 0 => {
                assert_eq!(payload, b"drained?");
                break;
            }
            _ => {}
        }
    }
    assert!(
        response > 300_000,
        "{response} bytes of response before the PING's ACK"
    );
}

#[tokio::test]
async fn a_response_larger_than_the_clients_window_arrives_whole() {
    let (cache, _events, addr) = serve().await;
    // 2 000 listeners: an LDS response of some 200 KB, through a stream
    // window of 16 KB and a connection window of 64 KB.
    let plans = listeners(2000);
    cache.set(NODE, &plans);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut first = sub(ResourceType::Listener, &[]);
    first.node = node(NODE);
    let mut s = Delta::open(&mut client, first).await.unwrap();
    let lds = s.recv().await;
    assert_eq!(lds.resources.len(), 2000);
    assert!(
        prost::Message::encoded_len(&lds) > 100_000,
        "{} bytes",
        prost::Message::encoded_len(&lds)
    );
    s.ack(&lds).await;
}

#[tokio::test]
async fn http2_headers_over_the_announced_size_get_431_and_the_connection_goes_on() {
    let (_cache, _events, addr) = serve().await;
    let mut c = RawH2::open(addr).await;
    // One 4 000-byte header, added to the table, then referred to 20 times:
    // 80 KB decoded from a 4 KB block.
    let mut block = loona_hpack::Encoder::new().encode([
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", b"/bootstrap"),
    ]);
    block.extend([0x40, 0x01, b'x', 0x7f]);
    let mut len = 4000 - 127;
    while len >= 128 {
        block.push((len % 128) as u8 | 0x80);
        len /= 128;
    }
    block.push(len as u8);
    block.extend(std::iter::repeat_n(b'v', 4000));
    block.extend(std::iter::repeat_n(0xbe, 20));
    c.send(1, 0x4 | 0x1, 1, &block).await;
    c.send(6, 0, 0, b"stillup!").await;
    let mut decoder = loona_hpack::Decoder::new();
    let mut status = None;
    loop {
        let (ty, flags, stream, payload) = c.frame().await.expect("connection open");
        match (ty, stream) {
            (1, 1) => {
                assert_ne!(flags & 0x1, 0, "the 431 ends the stream");
                status = decoder
                    .decode(&payload)
                    .unwrap()
                    .into_iter()
                    .find(|(n, _)| n == b":status")
                    .map(|(_, v)| v);
            }
            (6, 0) if flags & 0x1 != 0 => break,
            _ => {}
        }
    }
    assert_eq!(status.as_deref(), Some(&b"431"[..]));
}

/// A request body given in one piece.
struct Once(Option<bytes::Bytes>);

impl http_body::Body for Once {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
}

async fn body_len<B: http_body::Body + Unpin>(mut body: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut n = 0;
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        if let Ok(data) = frame.unwrap().into_data() {
            n += bytes::Buf::remaining(&data);
        }
    }
    n
}

#[tokio::test]
async fn a_request_body_larger_than_our_window_reaches_its_handler_whole() {
    // A handler that reads the whole body (in another task) and answers
    // with its length: 3 MiB through a 1 MiB window, given back as the
    // handler reads.
    let ads = AdsServer::new(
        Arc::new(SnapshotCache::new()),
        Arc::new(TokenAuth),
        Arc::new(Recorder::default()),
    )
    .into_service();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = conn::serve(
            &ads,
            tcp,
            |req: http::Request<conn::RequestBody>| async move {
                // Read in a task of its own, as the dp-server's router runs.
                let n = tokio::spawn(body_len(req.into_body())).await.unwrap();
                http::Response::new(Once(Some(n.to_string().into())))
            },
        )
        .await;
    });
    let mut channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let upload = bytes::Bytes::from(vec![7u8; 3 << 20]);
    let req = http::Request::post(format!("http://{addr}/upload"))
        .body(tonic::body::Body::new(Once(Some(upload))))
        .unwrap();
    let resp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tower::ServiceExt::oneshot(&mut channel, req),
    )
    .await
    .expect("answered within 10 s")
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx))
            .await
    {
        if let Ok(data) = frame.unwrap().into_data() {
            text.extend_from_slice(bytes::Buf::chunk(&data));
        }
    }
    assert_eq!(String::from_utf8(text).unwrap(), (3usize << 20).to_string());
}
