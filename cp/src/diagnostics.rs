//! The diagnostics server (5680): `/ready`, `/healthy`, `/metrics`.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kuma_telemetry::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone)]
pub struct Diagnostics {
    pub ready: Arc<AtomicBool>,
    pub metrics: Metrics,
}

pub fn router(d: Diagnostics) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/healthy", get(|| async { (StatusCode::OK, "OK") }))
        .route("/metrics", get(metrics))
        .with_state(d)
}

async fn ready(State(d): State<Diagnostics>) -> impl IntoResponse {
    if d.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "OK")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(d): State<Diagnostics>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        d.metrics.encode(),
    )
}
