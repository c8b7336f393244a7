//! `POST /tokens/dataplane`, `/tokens/zone`, `/tokens/user`: admin-only issuers.

use crate::SharedState;
use crate::auth::Identity;
use crate::body::read_limited;
use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use kuma_auth::{DataplaneIdentity, KeyOwner, ProxyType, UserIdentity, ZoneIdentity};
use kuma_tokens::TokensError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::time::Duration;

/// Body of `POST /tokens/dataplane`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataplaneTokenRequest {
    /// Dataplane name the token is bound to; empty binds none.
    #[serde(default)]
    pub name: String,
    /// Mesh the token is valid in.
    #[schemars(length(min = 1))]
    pub mesh: String,
    /// Tags the dataplane must carry (e.g. `kuma.io/service`), each a list of allowed values.
    #[serde(default)]
    pub tags: BTreeMap<String, Vec<String>>,
    /// `dataplane`, `ingress` or `egress`; empty means dataplane.
    #[serde(default, rename = "type")]
    pub proxy_type: String,
    /// How long the token is valid, e.g. `24h`; empty means 10 years, as Kuma.
    #[serde(default)]
    pub valid_for: String,
    /// Workload the token is bound to (`kuma.io/workload` label); empty binds none.
    #[serde(default)]
    pub workload: String,
}

/// Body of `POST /tokens/zone`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneTokenRequest {
    /// Zone the token is bound to.
    #[schemars(length(min = 1))]
    pub zone: String,
    /// What the token may be used for: `cp`, `ingress`, `egress`.
    #[serde(default)]
    #[schemars(extend("items" = { "type": "string", "enum": ["cp", "ingress", "egress"] }))]
    pub scope: Vec<String>,
    /// How long the token is valid, e.g. `24h`; empty means 10 years.
    #[serde(default)]
    pub valid_for: String,
}

/// Body of `POST /tokens/user`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserTokenRequest {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// How long the token is valid, e.g. `24h` (required).
    #[schemars(length(min = 1))]
    pub valid_for: String,
}

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/tokens/dataplane", post(dataplane_token))
        .route("/tokens/zone", post(zone_token))
        .route("/tokens/user", post(user_token))
}

fn require_admin(identity: &Identity, what: &str) -> ApiResult<()> {
    if !identity.is_admin() {
        return Err(ApiError::access_denied(format!(
            "user {:?} cannot generate {what}: only admins can",
            identity.name
        )));
    }
    Ok(())
}

async fn read_json<T: DeserializeOwned>(state: &SharedState, body: Body) -> ApiResult<T> {
    let bytes = read_limited(body, state.config.max_body_bytes).await?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let mut reason = e.into_inner().to_string();
        if let Some(i) = reason.find(" at line ") {
            reason.truncate(i);
        }
        let field = if field == "." { String::new() } else { field };
        ApiError::invalid_field("Invalid request", &field, reason)
    })
}

fn valid_for(raw: &str, default: Duration, required: bool) -> ApiResult<Duration> {
    if raw.is_empty() && !required {
        return Ok(default);
    }
    kuma_auth::parse_valid_for(raw)
        .map_err(|e| ApiError::invalid_field("Invalid request", "validFor", e.to_string()))
}

fn token_response(token: kuma_auth::Token) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        token.into_string(),
    )
        .into_response()
}

fn map_err(e: TokensError) -> ApiError {
    match e {
        TokensError::Store(s) => ApiError::from_store("Could not issue a token", s),
        TokensError::Token(t) => ApiError::bad_request(t.to_string()),
        other => ApiError::new(
            StatusCode::BAD_REQUEST,
            "Could not issue a token",
            other.to_string(),
        ),
    }
}

async fn dataplane_token(
    State(state): State<SharedState>,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> ApiResult<Response> {
    require_admin(&identity, "dataplane tokens")?;
    let req: DataplaneTokenRequest = read_json(&state, body).await?;
    let valid = valid_for(
        &req.valid_for,
        kuma_auth::DEFAULT_MACHINE_TOKEN_VALID_FOR,
        false,
    )?;
    let proxy_type = if req.proxy_type.is_empty() {
        None
    } else {
        Some(
            req.proxy_type
                .parse::<ProxyType>()
                .map_err(|e| ApiError::invalid_field("Invalid request", "type", e.to_string()))?,
        )
    };
    crate::resources::require_mesh(&state, &req.mesh)
        .await
        .map_err(|_| {
            ApiError::invalid_field(
                "Invalid request",
                "mesh",
                format!("mesh {:?} does not exist", req.mesh),
            )
        })?;
    let mut id = DataplaneIdentity::for_mesh(req.mesh);
    id.name = (!req.name.is_empty()).then_some(req.name);
    id.tags = req.tags;
    id.proxy_type = proxy_type;
    id.workload = (!req.workload.is_empty()).then_some(req.workload);
    let token = state
        .tokens
        .issue_dataplane_token(&id, valid)
        .await
        .map_err(map_err)?;
    Ok(token_response(token))
}

async fn zone_token(
    State(state): State<SharedState>,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> ApiResult<Response> {
    require_admin(&identity, "zone tokens")?;
    let req: ZoneTokenRequest = read_json(&state, body).await?;
    if req.zone.is_empty() {
        return Err(ApiError::invalid_field(
            "Invalid request",
            "zone",
            "cannot be empty",
        ));
    }
    let valid = valid_for(
        &req.valid_for,
        kuma_auth::DEFAULT_MACHINE_TOKEN_VALID_FOR,
        false,
    )?;
    let scope = if req.scope.is_empty() {
        vec![
            "cp".to_string(),
            "ingress".to_string(),
            "egress".to_string(),
        ]
    } else {
        req.scope
    };
    for (i, s) in scope.iter().enumerate() {
        if !matches!(s.as_str(), "cp" | "ingress" | "egress") {
            return Err(ApiError::invalid_field(
                "Invalid request",
                &format!("scope[{i}]"),
                "must be one of cp, ingress, egress",
            ));
        }
    }
    let token = state
        .tokens
        .issue_zone_token(&ZoneIdentity::new(req.zone, scope), valid)
        .await
        .map_err(map_err)?;
    Ok(token_response(token))
}

async fn user_token(
    State(state): State<SharedState>,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> ApiResult<Response> {
    require_admin(&identity, "user tokens")?;
    let req: UserTokenRequest = read_json(&state, body).await?;
    if req.name.is_empty() {
        return Err(ApiError::invalid_field(
            "Invalid request",
            "name",
            "cannot be empty",
        ));
    }
    let valid = valid_for(&req.valid_for, Duration::ZERO, true)?;
    // Kuma creates the first user-token signing key at start; do it on first
    // use too, so issuing works even when the admin-token bootstrap is off.
    state
        .tokens
        .ensure_signing_key(&KeyOwner::User)
        .await
        .map_err(map_err)?;
    let user = UserIdentity::new(req.name, req.groups);
    let token = state
        .tokens
        .issue_user_token(&user, valid)
        .await
        .map_err(map_err)?;
    Ok(token_response(token))
}
