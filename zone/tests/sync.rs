//! The sync task keeps connected proxies' snapshots current as MeshTimeouts
//! are created, updated and deleted (applied one event at a time).

use kuma_model::{MeshName, ResourceKey, ResourceKind, ResourceName};
use kuma_store::{MemoryStore, ResourceStore, Write};
use kuma_xds::plan::{FilterPlan, ResourcePlan};
use kuma_xds::{ProxyMeta, ResourceType};
use kuma_zone::sync::Signal;
use kuma_zone::{DpAuth, DpServer, DpServerConfig};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn key(kind: ResourceKind, name: &str) -> ResourceKey {
    ResourceKey::in_mesh(
        kind,
        MeshName::default_mesh(),
        ResourceName::new(name).unwrap(),
    )
    .unwrap()
}

fn write(spec: Value) -> Write {
    Write {
        labels: BTreeMap::new(),
        spec,
        status: None,
    }
}

/// A dp-server on a memory store with the default mesh.
async fn start() -> (tempfile::TempDir, Arc<dyn ResourceStore>, DpServer) {
    let work = tempfile::tempdir().unwrap();
    let store: Arc<dyn ResourceStore> = Arc::new(MemoryStore::new());
    let mesh =
        ResourceKey::global(ResourceKind::Mesh, ResourceName::new("default").unwrap()).unwrap();
    store.create(&mesh, write(json!({}))).await.unwrap();
    let mut config = DpServerConfig::new(work.path().to_path_buf());
    config.interface = "127.0.0.1".parse().unwrap();
    config.port = 0;
    config.auth = DpAuth::None;
    let server = DpServer::start(config, store.clone()).await.unwrap();
    (work, store, server)
}

/// web-1's proxy connects (as the lifecycle tells the sync task).
fn connect_web_1(server: &DpServer) {
    server.sync.signal(Signal::Connected {
        mesh: "default".into(),
        name: "web-1".into(),
        meta: ProxyMeta::default(),
    });
}

/// The request timeout (ms) of web-1's outbound listener, once its snapshot has one.
async fn outbound_request_ms(server: &DpServer) -> Option<u64> {
    server.sync.flush().await;
    let snap = server.cache.get("default.web-1")?;
    snap.of_type(ResourceType::Listener)
        .iter()
        .find_map(|r| match &r.plan {
            ResourcePlan::Listener(l) if !l.inbound => match &l.filter {
                FilterPlan::Http { timeouts, .. } => Some(timeouts.request_ms),
                _ => None,
            },
            _ => None,
        })
}

/// web-1's clusters and their versions.
async fn cluster_versions(server: &DpServer) -> Vec<(String, String)> {
    server.sync.flush().await;
    let snap = server.cache.get("default.web-1").expect("snapshot");
    snap.of_type(ResourceType::Cluster)
        .iter()
        .map(|r| (r.name.to_string(), r.version.to_string()))
        .collect()
}

async fn eventually(server: &DpServer, want: u64) {
    for _ in 0..200 {
        if outbound_request_ms(server).await == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "web-1's outbound request timeout stayed {:?}, wanted {want}",
        outbound_request_ms(server).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_timeout_create_update_delete_reach_connected_proxies() {
    let (_work, store, server) = start().await;

    for (name, service, outbound) in [
        ("backend-1", "backend", None),
        ("web-1", "web", Some("backend")),
    ] {
        let mut networking = json!({"address": "10.0.0.1",
            "inbound": [{"port": 8080, "tags": {"kuma.io/service": service, "kuma.io/protocol": "http"}}]});
        if let Some(o) = outbound {
            networking["outbound"] = json!([{"port": 10001, "tags": {"kuma.io/service": o}}]);
        }
        store
            .create(
                &key(ResourceKind::Dataplane, name),
                write(json!({"networking": networking})),
            )
            .await
            .unwrap();
    }
    connect_web_1(&server);
    // Kuma's default request timeout until a MeshTimeout says otherwise.
    eventually(&server, 15_000).await;
    let clusters = cluster_versions(&server).await;
    assert_eq!(clusters.len(), 2, "{clusters:?}");

    let mt = key(ResourceKind::MeshTimeout, "backend-timeouts");
    let spec = |t: &str| {
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
            "default": {"http": {"requestTimeout": t}}}]})
    };
    store.create(&mt, write(spec("3s"))).await.unwrap();
    eventually(&server, 3_000).await;
    // A request timeout is the route's: the clusters (and so their
    // endpoints) are not sent again.
    assert_eq!(cluster_versions(&server).await, clusters);

    let current = store.get(&mt).await.unwrap();
    store
        .update(&mt, write(spec("7s")), Some(current.meta.version))
        .await
        .unwrap();
    eventually(&server, 7_000).await;

    // A second policy of lower precedence does not override the first...
    store
        .create(
            &key(ResourceKind::MeshTimeout, "mesh-wide"),
            write(
                json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"http": {"requestTimeout": "1s"}}}]}),
            ),
        )
        .await
        .unwrap();
    server.sync.flush().await;
    eventually(&server, 7_000).await;
    // ...and takes over once the first is deleted.
    store.delete(&mt, None).await.unwrap();
    eventually(&server, 1_000).await;
    store
        .delete(&key(ResourceKind::MeshTimeout, "mesh-wide"), None)
        .await
        .unwrap();
    eventually(&server, 15_000).await;
}

#[tokio::test]
async fn a_proxy_whose_dataplane_went_while_connected_is_forgotten_when_it_leaves() {
    let (_work, store, server) = start().await;
    let dp = key(ResourceKind::Dataplane, "web-1");
    let networking = json!({"address": "10.0.0.1",
        "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]});
    store
        .create(&dp, write(json!({"networking": networking})))
        .await
        .unwrap();
    connect_web_1(&server);
    server.sync.flush().await;
    assert!(server.cache.get("default.web-1").is_some());

    // Deleted while connected: the proxy keeps what it has...
    store.delete(&dp, None).await.unwrap();
    server.sync.flush().await;
    assert!(server.cache.get("default.web-1").is_some());
    // ...until it disconnects.
    server.sync.signal(Signal::Disconnected {
        mesh: "default".into(),
        name: "web-1".into(),
    });
    server.sync.flush().await;
    assert!(server.cache.get("default.web-1").is_none());
}
