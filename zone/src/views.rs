//! Reading stored resources into the views kuma-xds generates from.

use kuma_model::{MeshName, Resource, ResourceKind};
use kuma_policy::{Policy, PolicySet};
use kuma_store::{ListFilter, ResourceStore, StoreError};
use kuma_xds::MeshContext;
use kuma_xds::input::{DataplaneView, MeshServiceView};
use std::sync::Arc;

pub fn dataplane_view(r: &Resource) -> Result<DataplaneView, serde_json::Error> {
    Ok(DataplaneView {
        name: r.key.name().to_string(),
        labels: r.meta.labels.clone(),
        spec: serde_json::from_value(r.spec.clone())?,
    })
}

pub fn mesh_service_view(r: &Resource) -> Result<MeshServiceView, serde_json::Error> {
    Ok(MeshServiceView {
        name: r.key.name().to_string(),
        labels: r.meta.labels.clone(),
        spec: serde_json::from_value(r.spec.clone())?,
        status: match &r.status {
            Some(s) if !s.is_null() => serde_json::from_value(s.clone())?,
            _ => Default::default(),
        },
    })
}

pub fn policy_view(r: &Resource) -> Policy {
    Policy {
        name: r.key.name().to_string(),
        labels: r.meta.labels.clone(),
        spec: r.spec.clone(),
    }
}

/// Lists one kind in one mesh.
pub async fn list(
    store: &dyn ResourceStore,
    kind: ResourceKind,
    mesh: &MeshName,
) -> Result<Vec<Resource>, StoreError> {
    Ok(store
        .list(&ListFilter::in_mesh(kind, mesh.clone()))
        .await?
        .items)
}

/// Builds a mesh's generation input straight from the store. Resources that
/// do not parse are skipped (they passed validation when written).
pub async fn load_mesh_context(
    store: &dyn ResourceStore,
    mesh: &MeshName,
) -> Result<MeshContext, StoreError> {
    let mut ctx = MeshContext {
        mesh: mesh.to_string(),
        ..Default::default()
    };
    for r in list(store, ResourceKind::Dataplane, mesh).await? {
        if let Ok(v) = dataplane_view(&r) {
            ctx.dataplanes.insert(v.name.clone(), Arc::new(v));
        }
    }
    for r in list(store, ResourceKind::MeshService, mesh).await? {
        if let Ok(v) = mesh_service_view(&r) {
            ctx.services.insert(v.name.clone(), Arc::new(v));
        }
    }
    ctx.timeouts = timeouts(store, mesh).await?;
    Ok(ctx)
}

/// The mesh's MeshTimeouts, parsed once for every proxy.
pub async fn timeouts(
    store: &dyn ResourceStore,
    mesh: &MeshName,
) -> Result<Arc<PolicySet>, StoreError> {
    let policies: Vec<_> = list(store, ResourceKind::MeshTimeout, mesh)
        .await?
        .iter()
        .map(policy_view)
        .collect();
    Ok(Arc::new(PolicySet::new(&policies)))
}
