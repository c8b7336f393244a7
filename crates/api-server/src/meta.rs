//! `GET /`, `/_resources` and `/config`.

use crate::SharedState;
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};
use kuma_model::{KdsFlags, ResourceKind, Scope};
use schemars::JsonSchema;
use serde::Serialize;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/", get(index))
        .route("/_resources", get(resource_types))
        .route("/config", get(config))
}

/// `GET /`: what answers on this port.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexResponse {
    pub hostname: String,
    pub tagline: String,
    pub product: String,
    pub version: String,
    pub instance_id: String,
    pub cluster_id: String,
    pub gui: String,
    pub build: BuildResponse,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildResponse {
    pub version: String,
    pub git_tag: String,
    pub git_commit: String,
    pub build_date: String,
}

async fn index(State(state): State<SharedState>) -> Json<IndexResponse> {
    let c = &state.config;
    Json(IndexResponse {
        hostname: c.hostname.clone(),
        tagline: c.build.product.clone(),
        product: c.build.product.clone(),
        version: c.build.version.clone(),
        instance_id: c.instance_id.clone(),
        cluster_id: c.cluster_id.clone(),
        gui: "The gui is not served by this control plane".into(),
        build: BuildResponse {
            version: c.build.version.clone(),
            git_tag: c.build.git_tag.clone(),
            git_commit: c.build.git_commit.clone(),
            build_date: c.build.build_date.clone(),
        },
    })
}

/// Which targetRef sections a policy type supports.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDescription {
    pub is_target_ref: bool,
    pub has_to_target_ref: bool,
    pub has_from_target_ref: bool,
    pub has_rules_target_ref: bool,
    pub is_from_as_rules: bool,
}

/// One resource type the API serves.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceTypeDescription {
    pub name: String,
    /// `Mesh` or `Global`.
    pub scope: String,
    pub read_only: bool,
    pub path: String,
    pub singular_display_name: String,
    pub plural_display_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub short_name: String,
    pub include_in_federation: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyDescription>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ResourceTypeDescriptionList {
    pub resources: Vec<ResourceTypeDescription>,
}

/// The `/_resources` body, from the kind descriptors.
pub fn describe_resources() -> ResourceTypeDescriptionList {
    let mut resources: Vec<_> = ResourceKind::ALL
        .iter()
        .map(|k| {
            let d = k.descriptor();
            ResourceTypeDescription {
                name: d.name.into(),
                scope: match d.scope {
                    Scope::Mesh => "Mesh".into(),
                    Scope::Global => "Global".into(),
                },
                read_only: d.read_only,
                path: d.plural.into(),
                singular_display_name: d.singular_display.into(),
                plural_display_name: d.plural_display.into(),
                short_name: d.short_name.into(),
                include_in_federation: d.kds.contains(KdsFlags::GLOBAL_TO_ZONES) && !d.read_only,
                policy: d.policy.map(|p| PolicyDescription {
                    is_target_ref: true,
                    has_to_target_ref: p.to,
                    has_from_target_ref: p.from,
                    has_rules_target_ref: p.rules,
                    is_from_as_rules: false,
                }),
            }
        })
        .collect();
    resources.sort_by(|a, b| a.name.cmp(&b.name));
    ResourceTypeDescriptionList { resources }
}

async fn resource_types() -> Json<ResourceTypeDescriptionList> {
    Json(describe_resources())
}

/// The effective configuration, secrets redacted. Admins only: it names hosts and files.
async fn config(
    State(state): State<SharedState>,
    Extension(identity): Extension<Identity>,
) -> ApiResult<Json<serde_json::Value>> {
    if !identity.is_authenticated() {
        return Err(ApiError::unauthenticated(
            "authentication required: present a user token",
        ));
    }
    Ok(Json(state.config.effective_config.clone()))
}
