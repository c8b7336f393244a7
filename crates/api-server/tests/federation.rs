//! Multizone write rules: what the global and a federated zone refuse.

use crate::common::{Backend, dataplane, mesh_timeout, start_with};
use kuma_api_server::ApiConfig;
use kuma_model::labels::Mode;
use kuma_model::{ResourceKey, ResourceKind, ResourceName};
use kuma_store::Write;
use serde_json::json;
use std::collections::BTreeMap;

async fn synced(
    server: &crate::common::Server,
    kind: ResourceKind,
    name: &str,
    origin: &str,
    spec: serde_json::Value,
) {
    let key = ResourceKey::new(
        kind,
        Some(kuma_model::MeshName::new("default").unwrap()),
        ResourceName::new(name).unwrap(),
    )
    .unwrap();
    let labels = BTreeMap::from([("kuma.io/origin".to_string(), origin.to_string())]);
    server
        .store()
        .create(
            &key,
            Write {
                labels,
                spec,
                status: None,
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_global_refuses_zone_kinds_and_zone_synced_resources() {
    let s = start_with(
        Backend::Memory,
        ApiConfig {
            mode: Mode::Global,
            ..ApiConfig::default()
        },
    )
    .await;
    let errs = s
        .put(
            "/meshes/default/dataplanes/dp-1",
            &dataplane("default", "dp-1", "web", &[]),
        )
        .await;
    assert_eq!(errs.status, 405, "{}", errs.text);
    assert!(
        errs.text.contains("Use zone control plane"),
        "{}",
        errs.text
    );

    // A policy synced up from a zone is read-only here.
    synced(
        &s,
        ResourceKind::MeshTimeout,
        "from-zone",
        "zone",
        json!({"targetRef": {"kind": "Mesh"}}),
    )
    .await;
    let fields = s
        .put(
            "/meshes/default/meshtimeouts/from-zone",
            &mesh_timeout("default", "from-zone", "5s"),
        )
        .await
        .expect_error(400);
    assert_eq!(fields, vec!["labels[\"kuma.io/origin\"]"]);
    s.delete("/meshes/default/meshtimeouts/from-zone")
        .await
        .expect_error(400);

    // Policies written on the global itself are fine.
    s.put(
        "/meshes/default/meshtimeouts/global-one",
        &mesh_timeout("default", "global-one", "5s"),
    )
    .await
    .expect(201);
}

#[tokio::test]
async fn a_federated_zone_refuses_global_kinds_synced_resources_and_unlabelled_policies() {
    let config = ApiConfig {
        mode: Mode::Zone,
        federated: true,
        zone_name: "zone-1".into(),
        ..ApiConfig::default()
    };
    let s = start_with(Backend::Memory, config).await;

    let r = s
        .put("/meshes/other", &json!({"type": "Mesh", "name": "other"}))
        .await;
    assert_eq!(r.status, 405, "{}", r.text);

    synced(
        &s,
        ResourceKind::MeshTimeout,
        "from-global",
        "global",
        json!({"targetRef": {"kind": "Mesh"}}),
    )
    .await;
    let fields = s
        .put(
            "/meshes/default/meshtimeouts/from-global",
            &mesh_timeout("default", "from-global", "5s"),
        )
        .await
        .expect_error(400);
    assert_eq!(fields, vec!["labels[\"kuma.io/origin\"]"]);
    s.delete("/meshes/default/meshtimeouts/from-global")
        .await
        .expect_error(400);

    // A local policy must say it is local.
    let fields = s
        .put(
            "/meshes/default/meshtimeouts/local",
            &mesh_timeout("default", "local", "5s"),
        )
        .await
        .expect_error(400);
    assert_eq!(fields, vec!["labels[\"kuma.io/origin\"]"]);
    let mut labelled = mesh_timeout("default", "local", "5s");
    labelled["labels"] = json!({"kuma.io/origin": "zone"});
    s.put("/meshes/default/meshtimeouts/local", &labelled)
        .await
        .expect(201);

    // Zone-produced kinds need no label.
    s.put(
        "/meshes/default/dataplanes/dp-1",
        &dataplane("default", "dp-1", "web", &[]),
    )
    .await
    .expect(201);
}
