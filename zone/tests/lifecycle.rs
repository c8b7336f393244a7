//! The dp-server over TLS: /bootstrap, then an ADS stream that registers the
//! Dataplane it carries, records an insight, and deregisters it after the
//! stream ends.

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
