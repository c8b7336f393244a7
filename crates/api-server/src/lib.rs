//! Kuma's REST API over a [`ResourceStore`].
//!
//! ```text
//!  HTTP :5681 --> middleware (metrics, Kuma-format errors, auth -> Identity)
//!              --> routes generated from ResourceKind descriptors
//!                    /meshes/{mesh}/{plural}/{name}, /{plural}, insights, tokens
//!              --> kuma_model validation --> store (versioned writes)
//! ```
//!
//! The OpenAPI document ([`openapi::document`]) is built from the same
//! descriptors and the model's schemas, so routes and spec cannot drift apart.

pub mod auth;
pub mod body;
pub mod error;
pub mod federation;
pub mod insights;
pub mod inspect;
pub mod meta;
pub mod metered;
pub mod openapi;
pub mod query;
pub mod resources;
pub mod tokens;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use kuma_model::labels::Mode;
use kuma_store::ResourceStore;
use kuma_telemetry::Metrics;
use std::sync::Arc;
use std::time::Instant;

pub use metered::MeteredStore;

/// Version facts shown by `GET /`.
#[derive(Clone, Debug)]
pub struct BuildInfo {
    pub product: String,
    pub version: String,
    pub git_tag: String,
    pub git_commit: String,
    pub build_date: String,
}

impl Default for BuildInfo {
    fn default() -> Self {
        BuildInfo {
            product: "Kuma".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            git_tag: format!("v{}", env!("CARGO_PKG_VERSION")),
            git_commit: "unknown".into(),
            build_date: "unknown".into(),
        }
    }
}

/// What the API server needs to know about the control plane it runs in.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub mode: Mode,
    /// A zone connected to a global (`KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS` set).
    pub federated: bool,
    /// This zone's name (zone mode); Kuma's default is `default`.
    pub zone_name: String,
    /// Request bodies over this size get 413.
    pub max_body_bytes: usize,
    pub build: BuildInfo,
    pub hostname: String,
    pub instance_id: String,
    pub cluster_id: String,
    /// The effective control-plane configuration, secrets already redacted,
    /// served at `/config`.
    pub effective_config: serde_json::Value,
    /// Origins allowed by CORS; empty means no CORS headers at all.
    pub cors_allowed_origins: Vec<String>,
    pub auth: auth::AuthConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            mode: Mode::Zone,
            federated: false,
            zone_name: "default".into(),
            max_body_bytes: 1024 * 1024,
            build: BuildInfo::default(),
            hostname: "localhost".into(),
            instance_id: "kuma-cp".into(),
            cluster_id: String::new(),
            effective_config: serde_json::json!({}),
            cors_allowed_origins: Vec::new(),
            auth: auth::AuthConfig::default(),
        }
    }
}

/// Shared by every handler.
pub struct ApiState {
    pub store: Arc<dyn ResourceStore>,
    pub config: ApiConfig,
    pub metrics: Metrics,
    pub auth: auth::Authenticator,
    pub tokens: Arc<kuma_tokens::TokenService>,
}

pub type SharedState = Arc<ApiState>;

/// The whole REST API as an axum router.
pub fn router(state: SharedState) -> Router {
    let routes = Router::new()
        .merge(meta::routes())
        .merge(resources::routes())
        .merge(insights::routes())
        .merge(inspect::routes())
        .merge(tokens::routes())
        .method_not_allowed_fallback(|req: Request| async move {
            error::ApiError::method_not_allowed(format!(
                "{} {}: {}",
                req.method(),
                req.uri().path(),
                error::UNSERVED_METHOD
            ))
        })
        .fallback(|| async { error::ApiError::unknown_path() });
    routes
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Records metrics, adds CORS headers when configured, and makes sure every
/// error a framework layer produced is in Kuma's format.
async fn observe(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .filter(|o| cors_allows(&state, o))
        .cloned();
    let preflight = origin.is_some()
        && req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        // A browser asking whether it may send the real request: answered
        // here, before authentication, as the CORS protocol requires.
        let requested_headers = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("authorization, content-type, if-match"));
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE, OPTIONS"),
        );
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested_headers);
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    let status = resp.status();
    if (status.is_client_error() || status.is_server_error()) && !is_json(&resp) {
        // Keep what the framework said (e.g. `Allow` on a 405), in Kuma's body.
        let mut headers = std::mem::take(resp.headers_mut());
        headers.remove(header::CONTENT_TYPE);
        headers.remove(header::CONTENT_LENGTH);
        resp = error::ApiError::new(
            status,
            status.canonical_reason().unwrap_or("Error"),
            status.canonical_reason().unwrap_or("Error"),
        )
        .into_response();
        for (name, value) in headers.iter() {
            if !resp.headers().contains_key(name) {
                resp.headers_mut().insert(name.clone(), value.clone());
            }
        }
    }
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("etag"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    state
        .metrics
        .observe_http(&method, &route, resp.status().as_u16(), started.elapsed());
    resp
}

/// Whether CORS lets a page at `origin` call this API.
fn cors_allows(state: &SharedState, origin: &HeaderValue) -> bool {
    state
        .config
        .cors_allowed_origins
        .iter()
        .any(|o| o == "*" || origin.to_str().is_ok_and(|s| s == o))
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: SharedState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
