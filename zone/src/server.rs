//! The dp-server: one TLS port serving HTTP `/bootstrap` and gRPC ADS.

use crate::auth::DpAuthenticator;
use crate::bootstrap::{
    BootstrapParams, BootstrapRequest, BootstrapResponse, SidecarConfiguration, SidecarNetworking,
    envoy_bootstrap, node_id,
};
use crate::config::AdsApi;
use crate::lifecycle::{parse_dataplane_resource, stored_dataplane};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use kuma_store::ResourceStore;
use kuma_xds::input::DataplaneSpec;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// What `/bootstrap` needs.
pub struct BootstrapState {
    pub store: Arc<dyn ResourceStore>,
    pub auth: DpAuthenticator,
    pub port: u16,
    pub ads: AdsApi,
}

const DEFAULT_ADMIN_PORT: u32 = 9901;

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], msg.into()).into_response()
}

/// The host the proxy used to reach us (HTTP/1.1 `Host`, HTTP/2 `:authority`):
/// Envoy dials the same one for ADS.
fn host_of(uri: &Uri, headers: &HeaderMap) -> String {
    let raw = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("localhost");
    if let Some(rest) = raw.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("localhost").to_string();
    }
    raw.rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(raw)
        .to_string()
}

async fn bootstrap(
    State(st): State<Arc<BootstrapState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: BootstrapRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("could not parse the request: {e}"),
            );
        }
    };
    let mesh = if req.mesh.is_empty() {
        "default".to_string()
    } else {
        req.mesh.clone()
    };
    if req.name.is_empty() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "name: cannot be empty");
    }
    if !req.proxy_type.is_empty() && req.proxy_type != "dataplane" {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("proxyType: {:?} is not supported", req.proxy_type),
        );
    }
    let (labels, spec): (BTreeMap<String, String>, DataplaneSpec) = if !req
        .dataplane_resource
        .is_empty()
    {
        match parse_dataplane_resource(&req.dataplane_resource, &mesh, &req.name) {
            Ok((labels, spec)) => match serde_json::from_value(spec) {
                Ok(spec) => (labels, spec),
                Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            },
            Err(reason) => return error(StatusCode::UNPROCESSABLE_ENTITY, reason),
        }
    } else {
        match stored_dataplane(st.store.as_ref(), &mesh, &req.name).await {
            Some(dp) => (dp.labels, dp.spec),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    "Dataplane entity not found. If you are running on Universal please create a Dataplane entity on kuma-cp before starting kuma-dp or pass it to kuma-dp run --dataplane-file=/file",
                );
            }
        }
    };
    if let Err(e) = st
        .auth
        .verify(&req.dataplane_token, &mesh, &req.name, &labels, Some(&spec))
        .await
    {
        warn!(%mesh, name = %req.name, reason = %e, "bootstrap refused");
        return error(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let service = spec
        .networking
        .inbound
        .iter()
        .find_map(|i| i.service().map(str::to_string))
        .unwrap_or_else(|| req.name.clone());
    let admin_port = spec
        .networking
        .admin
        .as_ref()
        .map(|a| a.port)
        .unwrap_or(DEFAULT_ADMIN_PORT);
    let host = host_of(&uri, &headers);
    let params = BootstrapParams {
        node_id: node_id(&mesh, &req.name),
        service,
        admin_port,
        xds_host: &host,
        xds_port: st.port,
        ca_cert: &req.ca_cert,
        token: &req.dataplane_token,
        ads: st.ads,
        dataplane_resource: &req.dataplane_resource,
        version: &req.version,
        proxy_type: "dataplane",
        dns_port: req.dns_port,
    };
    let bootstrap = envoy_bootstrap(&params);
    let resp = BootstrapResponse {
        bootstrap: serde_json::to_vec_pretty(&bootstrap).expect("json"),
        kuma_sidecar_configuration: SidecarConfiguration {
            networking: SidecarNetworking {
                address: spec.networking.address.clone(),
            },
            metrics: serde_json::json!({ "aggregate": [] }),
        },
    };
    (StatusCode::OK, axum::Json(resp)).into_response()
}

pub fn router(bootstrap_state: Arc<BootstrapState>, ads: kuma_xds::AdsServer) -> Router {
    let grpc = tonic::service::Routes::new(ads.into_service()).into_axum_router();
    Router::new()
        .route("/bootstrap", post(bootstrap))
        .with_state(bootstrap_state)
        .merge(grpc)
}

/// Accepts TLS connections and serves `router` on each (HTTP/1.1 or HTTP/2 by ALPN).
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, router: Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(error) => {
                warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let svc = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(error) => {
                    debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(None::<u32>);
            if let Err(error) = builder.serve_connection(TokioIo::new(tls), svc).await {
                debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}
