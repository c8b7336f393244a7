//! `_config` and `_rules`: what a proxy is served, from the zone's generator.

use crate::common::{dataplane, mesh_timeout, start};

#[tokio::test]
async fn config_and_rules_of_a_dataplane() {
    let s = start().await;
    s.put(
        "/meshes/default/dataplanes/web-1",
        &dataplane("default", "web-1", "web", &[]),
    )
    .await
    .expect(201);
    s.put(
        "/meshes/default/meshtimeouts/t1",
        &mesh_timeout("default", "t1", "7s"),
    )
    .await
    .expect(201);

    let config = s
        .get("/meshes/default/dataplanes/web-1/_config")
        .await
        .expect(200);
    assert_eq!(config.json["name"], "web-1");
    let listeners = config.json["xds"]["listeners"]
        .as_array()
        .expect("listeners");
    assert!(!listeners.is_empty(), "{}", config.text);

    let rules = s
        .get("/meshes/default/dataplanes/web-1/_rules")
        .await
        .expect(200);
    assert_eq!(
        rules.json["rules"][0]["type"], "MeshTimeout",
        "{}",
        rules.text
    );
    assert!(rules.text.contains("t1"), "{}", rules.text);

    s.get("/meshes/default/dataplanes/nope/_config")
        .await
        .expect_error(404);
    s.get("/meshes/nope/dataplanes/web-1/_rules")
        .await
        .expect_error(404);
}
