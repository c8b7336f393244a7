//! `_config` and `_rules` computed from a store.

use kuma_model::{MeshName, ResourceKey, ResourceKind, ResourceName};
use kuma_store::{MemoryStore, ResourceStore, Write};
use kuma_zone::inspect::{InspectError, dataplane_config, dataplane_rules};
use serde_json::{Value, json};
use std::collections::BTreeMap;

async fn put(
    store: &MemoryStore,
    kind: ResourceKind,
    name: &str,
    spec: Value,
    status: Option<Value>,
) {
    let key = match kind.scope() {
        kuma_model::Scope::Global => {
            ResourceKey::global(kind, ResourceName::new(name).unwrap()).unwrap()
        }
        kuma_model::Scope::Mesh => ResourceKey::in_mesh(
            kind,
            MeshName::default_mesh(),
            ResourceName::new(name).unwrap(),
        )
        .unwrap(),
    };
    let labels: BTreeMap<String, String> =
        [("kuma.io/display-name".to_string(), name.to_string())].into();
    store
        .create(
            &key,
            Write {
                labels,
                spec,
                status,
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn config_and_rules_of_a_dataplane() {
    let store = MemoryStore::new();
    put(&store, ResourceKind::Mesh, "default", json!({}), None).await;
    put(
        &store,
        ResourceKind::Dataplane,
        "web-1",
        json!({"networking": {"address": "10.0.0.1",
            "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web", "kuma.io/protocol": "http"}}],
            "outbound": [{"port": 10001, "tags": {"kuma.io/service": "backend"}}]}}),
        None,
    )
    .await;
    put(
        &store,
        ResourceKind::Dataplane,
        "backend-1",
        json!({"networking": {"address": "10.0.0.2",
            "inbound": [{"port": 8080, "tags": {"kuma.io/service": "backend", "kuma.io/protocol": "http"}}]}}),
        None,
    )
    .await;
    put(
        &store,
        ResourceKind::MeshService,
        "backend",
        json!({"selector": {"dataplaneTags": {"kuma.io/service": "backend"}},
               "ports": [{"port": 8080, "targetPort": 8080, "appProtocol": "http"}]}),
        Some(json!({"vips": [{"ip": "241.0.0.1"}]})),
    )
    .await;
    put(
        &store,
        ResourceKind::MeshTimeout,
        "to-backend",
        json!({"targetRef": {"kind": "Mesh"},
               "to": [{"targetRef": {"kind": "MeshService", "labels": {"kuma.io/display-name": "backend"}},
                       "default": {"http": {"requestTimeout": "2s"}}}]}),
        None,
    )
    .await;

    let mesh = MeshName::default_mesh();
    let config = dataplane_config(&store, &mesh, "web-1").await.unwrap();
    let listeners: Vec<&str> = config["xds"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        listeners,
        vec!["inbound:10.0.0.1:8080", "outbound:127.0.0.1:10001"]
    );
    let eds = &config["xds"]["endpoints"][0];
    assert_eq!(eds["name"], "default_backend___msvc_8080");
    assert_eq!(
        eds["config"]["endpoints"]["endpoints"][0]["address"], "10.0.0.2",
        "{config}"
    );
    let outbound = &config["xds"]["listeners"][1]["config"]["listener"]["filter"]["http"];
    assert_eq!(outbound["timeouts"]["requestMs"], 2000, "{config}");

    let rules = dataplane_rules(&store, &mesh, "web-1").await.unwrap();
    let r = &rules["rules"][0];
    assert_eq!(r["type"], "MeshTimeout");
    assert_eq!(r["policies"], json!(["to-backend"]));
    assert_eq!(
        r["toRules"][0]["conf"],
        json!({"http": {"requestTimeout": "2s"}})
    );

    let missing = dataplane_config(&store, &mesh, "nope").await.unwrap_err();
    assert!(matches!(missing, InspectError::NotFound { .. }));
}
