//! Inspect: what a proxy is served (`_config`) and the merged policy rules
//! (`_rules`), computed from the store alone, so the API server can call them.

use crate::views;
use kuma_model::MeshName;
use kuma_store::{ResourceStore, StoreError};
use kuma_xds::{MeshEndpoints, SnapshotCache, generate};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("dataplane {name} not found in mesh {mesh}")]
    NotFound { mesh: String, name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

async fn plan_for(
    store: &dyn ResourceStore,
    mesh: &MeshName,
    name: &str,
) -> Result<kuma_xds::ProxyPlan, InspectError> {
    let ctx = views::load_mesh_context(store, mesh).await?;
    let dp = ctx
        .dataplanes
        .get(name)
        .cloned()
        .ok_or_else(|| InspectError::NotFound {
            mesh: mesh.to_string(),
            name: name.to_string(),
        })?;
    let endpoints = MeshEndpoints::compute(&ctx);
    Ok(generate(&ctx, &endpoints, &dp))
}

/// `GET /meshes/{mesh}/dataplanes/{name}/_config`: the xDS resources of the
/// proxy, by type, each with its name, version and content.
pub async fn dataplane_config(
    store: &dyn ResourceStore,
    mesh: &MeshName,
    name: &str,
) -> Result<Value, InspectError> {
    let plan = plan_for(store, mesh, name).await?;
    let snap = SnapshotCache::new().build(&plan.resources);
    let mut out = serde_json::Map::new();
    for t in kuma_xds::ResourceType::ORDER {
        let items = snap.of_type(t);
        if items.is_empty() {
            continue;
        }
        let list: Vec<Value> = items
            .iter()
            .map(|r| json!({ "name": r.name, "version": r.version, "typeUrl": t.type_url(), "config": r.plan }))
            .collect();
        let key = match t {
            kuma_xds::ResourceType::Cluster => "clusters",
            kuma_xds::ResourceType::Endpoints => "endpoints",
            kuma_xds::ResourceType::Listener => "listeners",
            kuma_xds::ResourceType::Route => "routes",
        };
        out.insert(key.into(), Value::Array(list));
    }
    Ok(json!({ "name": name, "mesh": mesh.as_str(), "xds": out, "warnings": plan.warnings }))
}

/// `GET /meshes/{mesh}/dataplanes/{name}/_rules`: the merged rules of every
/// policy kind the engine handles (MeshTimeout today).
pub async fn dataplane_rules(
    store: &dyn ResourceStore,
    mesh: &MeshName,
    name: &str,
) -> Result<Value, InspectError> {
    let plan = plan_for(store, mesh, name).await?;
    let r = &plan.timeout_rules;
    let entry = |kind: &str| {
        json!({
            "type": kind,
            "policies": r.policies,
            "toRules": r.to.iter().map(|t| json!({
                "targetRef": t.target, "conf": t.conf, "origin": [t.policy],
            })).collect::<Vec<_>>(),
            "inboundRules": r.inbound.iter().map(|i| json!({
                "sectionName": i.section_name, "conf": i.conf, "origin": [i.policy],
            })).collect::<Vec<_>>(),
        })
    };
    Ok(
        json!({ "rules": if r.policies.is_empty() { vec![] } else { vec![entry("MeshTimeout")] }, "warnings": plan.warnings }),
    )
}
