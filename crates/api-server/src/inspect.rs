//! Inspect endpoints: `/meshes/{mesh}/dataplanes/{name}/_config` (the xDS
//! resources the proxy is served) and `/_rules` (merged policy rules),
//! computed by the zone's xDS generator from the store.

use crate::SharedState;
use crate::error::{ApiError, ApiResult};
use crate::resources::require_mesh;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use kuma_zone::inspect::{InspectError, dataplane_config, dataplane_rules};
use serde_json::Value;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/meshes/{mesh}/dataplanes/{name}/_config", get(config))
        .route("/meshes/{mesh}/dataplanes/{name}/_rules", get(rules))
}

fn map(e: InspectError) -> ApiError {
    match e {
        InspectError::NotFound { .. } => ApiError::not_found(),
        InspectError::Store(s) => ApiError::from_store("Could not inspect a dataplane", s),
    }
}

async fn config(
    State(state): State<SharedState>,
    Path((mesh, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let mesh = require_mesh(&state, &mesh).await?;
    dataplane_config(state.store.as_ref(), &mesh, &name)
        .await
        .map(Json)
        .map_err(map)
}

async fn rules(
    State(state): State<SharedState>,
    Path((mesh, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let mesh = require_mesh(&state, &mesh).await?;
    dataplane_rules(state.store.as_ref(), &mesh, &name)
        .await
        .map(Json)
        .map_err(map)
}
