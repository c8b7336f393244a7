//! The dp-server over TLS: /bootstrap, then an ADS stream that registers the
//! Dataplane it carries, records an insight, and deregisters it after the
//! stream ends; /bootstrap over HTTP/1.1 and HTTP/2; delta ADS requests it
//! cannot read get a gRPC status that says why.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use kuma_model::{MeshName, ResourceKey, ResourceKind, ResourceName};
use kuma_store::{MemoryStore, ResourceStore, StoreError, Write};
use kuma_zone::{DpAuth, DpServer, DpServerConfig};
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

const DATAPLANE: &str = r#"{"type": "Dataplane", "mesh": "default", "name": "web-1",
  "networking": {"address": "127.0.0.1",
    "inbound": [{"port": 20001, "servicePort": 8080, "tags": {"kuma.io/service": "web", "kuma.io/protocol": "http"}}]}}"#;

fn tls_config(cert: &std::path::Path) -> rustls::ClientConfig {
    let pem = std::fs::read(cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg
}

async fn wait_until<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) {
    while !f().await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_register_get_insights_and_deregister() {
    let work = tempfile::tempdir().unwrap();
    let store: Arc<dyn ResourceStore> = Arc::new(MemoryStore::new());
    let mesh =
        ResourceKey::global(ResourceKind::Mesh, ResourceName::new("default").unwrap()).unwrap();
    store
        .create(
            &mesh,
            Write {
                labels: BTreeMap::new(),
                spec: json!({}),
                status: None,
            },
        )
        .await
        .unwrap();

    let mut config = DpServerConfig::new(work.path().to_path_buf());
    config.interface = "127.0.0.1".parse().unwrap();
    config.port = 0;
    config.auth = DpAuth::None;
    config.deregistration_delay = Duration::from_millis(100);
    let server = DpServer::start(config, store.clone()).await.unwrap();
    let addr = server.local_addr;

    // The bootstrap carries the Dataplane into the node metadata.
    let tls = tls_config(&server.cert_file);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .unwrap();

    let metadata = Struct {
        fields: [(
            "dataplane.resource".to_string(),
            PbValue {
                kind: Some(Kind::StringValue(DATAPLANE.into())),
            },
        )]
        .into_iter()
        .collect(),
    };
    let (tx, rx) = mpsc::channel(8);
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: "default.web-1".into(),
            metadata: Some(metadata),
            ..Default::default()
        }),
        type_url: kuma_xds::ResourceType::Listener.type_url().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let lds = stream.next().await.unwrap().unwrap();
    assert_eq!(lds.resources[0].name, "inbound:127.0.0.1:20001");
    tx.send(DeltaDiscoveryRequest {
        type_url: lds.type_url.clone(),
        response_nonce: lds.nonce,
        ..Default::default()
    })
    .await
    .unwrap();

    let dp_key = ResourceKey::in_mesh(
        ResourceKind::Dataplane,
        MeshName::default_mesh(),
        ResourceName::new("web-1").unwrap(),
    )
    .unwrap();
    let insight_key = ResourceKey::in_mesh(
        ResourceKind::DataplaneInsight,
        MeshName::default_mesh(),
        ResourceName::new("web-1").unwrap(),
    )
    .unwrap();
    let dp = store.get(&dp_key).await.unwrap();
    assert_eq!(dp.spec["networking"]["inbound"][0]["port"], 20001);
    let insight = store.get(&insight_key).await.unwrap();
    assert!(
        insight.spec["subscriptions"][0]["connectTime"].is_string(),
        "{}",
        insight.spec
    );

    // The periodic flush (batched) records what was sent and acknowledged
    // (the ACK above is processed asynchronously: flush until it shows).
    let counts = |spec: &serde_json::Value, field: &str| {
        spec["subscriptions"][0]["status"]["total"][field]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
    };
    wait_until(|| {
        let (store, key, lifecycle) =
            (store.clone(), insight_key.clone(), server.lifecycle.clone());
        async move {
            lifecycle.flush().await;
            let spec = store.get(&key).await.unwrap().spec;
            counts(&spec, "responsesAcknowledged").is_some_and(|n| n >= 1)
        }
    })
    .await;
    let spec = store.get(&insight_key).await.unwrap().spec;
    assert!(
        counts(&spec, "responsesSent").is_some_and(|n| n >= 1),
        "{spec}"
    );
    assert_eq!(counts(&spec, "responsesRejected"), Some(0), "{spec}");

    // The generated MeshService appears for the kuma.io/service tag.
    let ms_key = ResourceKey::in_mesh(
        ResourceKind::MeshService,
        MeshName::default_mesh(),
        ResourceName::new("web").unwrap(),
    )
    .unwrap();
    wait_until(|| {
        let store = store.clone();
        let key = ms_key.clone();
        async move { store.get(&key).await.is_ok_and(|m| m.status.is_some()) }
    })
    .await;

    // The stream ends: the insight gets a disconnect time and, after the
    // deregistration delay, the Dataplane and its insight are deleted.
    drop(tx);
    drop(stream);
    wait_until(|| {
        let store = store.clone();
        let key = dp_key.clone();
        async move { matches!(store.get(&key).await, Err(StoreError::NotFound(_))) }
    })
    .await;
    assert!(matches!(
        store.get(&insight_key).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn start_server(store: Arc<dyn ResourceStore>) -> (tempfile::TempDir, DpServer) {
    let work = tempfile::tempdir().unwrap();
    let mut config = DpServerConfig::new(work.path().to_path_buf());
    config.interface = "127.0.0.1".parse().unwrap();
    config.port = 0;
    config.auth = DpAuth::None;
    let server = DpServer::start(config, store).await.unwrap();
    (work, server)
}

/// One request on a connection of its own, HTTP/2 (ALPN `h2`) or HTTP/1.1:
/// the response head and its whole body, trailers included.
async fn request(
    server: &DpServer,
    h2: bool,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> (http::response::Parts, bytes::Bytes, Option<http::HeaderMap>) {
    use http_body_util::BodyExt;
    let mut tls = tls_config(&server.cert_file);
    tls.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let tcp = tokio::net::TcpStream::connect(server.local_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let io = hyper_util::rt::TokioIo::new(tls);
    let response = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (parts, collected.to_bytes(), trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_answers_over_http1_and_http2() {
    let store: Arc<dyn ResourceStore> = Arc::new(MemoryStore::new());
    let mesh =
        ResourceKey::global(ResourceKind::Mesh, ResourceName::new("default").unwrap()).unwrap();
    let write = Write {
        labels: BTreeMap::new(),
        spec: json!({}),
        status: None,
    };
    store.create(&mesh, write).await.unwrap();
    let (_work, server) = start_server(store).await;
    for h2 in [false, true] {
        let body = json!({"mesh": "default", "name": "web-1", "proxyType": "dataplane",
            "dataplaneResource": DATAPLANE, "version": {}});
        let req = http::Request::post("https://localhost/bootstrap")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let (head, body, _) = request(&server, h2, req).await;
        assert_eq!(
            head.version,
            if h2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            }
        );
        assert_eq!(head.status, 200, "{}", String::from_utf8_lossy(&body));
        let resp: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            resp["kumaSidecarConfiguration"]["networking"]["address"],
            "127.0.0.1"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_requests_it_cannot_read_get_a_status_that_says_why() {
    let store: Arc<dyn ResourceStore> = Arc::new(MemoryStore::new());
    let (_work, server) = start_server(store).await;
    let delta = |encoding: Option<&str>, message: &[u8]| {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(message);
        let mut req = http::Request::post(format!("https://localhost{}", kuma_xds::DELTA_PATH))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(e) = encoding {
            req = req.header("grpc-encoding", e);
        }
        req.body(http_body_util::Full::new(bytes::Bytes::from(framed)))
            .unwrap()
    };
    let status = |trailers: Option<http::HeaderMap>| {
        let t = trailers.expect("trailers");
        let code = t["grpc-status"].to_str().unwrap().to_string();
        let message = t
            .get("grpc-message")
            .map(|m| percent_decode(m.to_str().unwrap()))
            .unwrap_or_default();
        (code, message)
    };

    // Compressed messages: UNIMPLEMENTED, naming the encoding.
    let (head, _, trailers) = request(&server, true, delta(Some("gzip"), b"")).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-type"], "application/grpc");
    let (code, message) = status(trailers);
    assert_eq!(code, "12");
    assert!(message.contains("gzip"), "{message}");

    // Bytes that are no DeltaDiscoveryRequest: INVALID_ARGUMENT.
    let (_, _, trailers) = request(&server, true, delta(None, &[0xff, 0xff, 0xff])).await;
    let (code, message) = status(trailers);
    assert_eq!(code, "3");
    assert!(message.contains("does not decode"), "{message}");

    // A first request without the node: INVALID_ARGUMENT, saying so.
    let (_, _, trailers) = request(&server, true, delta(None, b"")).await;
    let (code, message) = status(trailers);
    assert_eq!(code, "3");
    assert!(message.contains("must carry the node"), "{message}");

    // A compressed message on a stream that named no encoding: INTERNAL.
    let mut req = delta(None, b"");
    *req.body_mut() = http_body_util::Full::new(bytes::Bytes::from_static(&[1, 0, 0, 0, 0]));
    let (_, _, trailers) = request(&server, true, req).await;
    let (code, message) = status(trailers);
    assert_eq!(code, "13");
    assert!(message.contains("grpc-encoding"), "{message}");

    // A length prefix over the limit: RESOURCE_EXHAUSTED, before any of it is read.
    let mut req = delta(None, b"");
    *req.body_mut() = http_body_util::Full::new(bytes::Bytes::from_static(&[0, 0x7f, 0, 0, 0]));
    let (_, _, trailers) = request(&server, true, req).await;
    let (code, message) = status(trailers);
    assert_eq!(code, "8");
    assert!(message.contains("over the limit"), "{message}");
}

/// grpc-message is percent-encoded (gRPC over HTTP/2).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
