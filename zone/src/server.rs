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
use kuma_store::ResourceStore;
use kuma_xds::input::DataplaneSpec;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
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

/// What the dp-server serves: `/bootstrap` and both ADS methods in one
/// router, and the delta ADS service on its own for the HTTP/2
/// connections of [`kuma_xds::conn`], which serve delta streams without
/// the router (see [`serve`]).
#[derive(Clone)]
pub struct Routes {
    router: Router,
    ads: kuma_xds::AdsService,
}

pub fn router(bootstrap_state: Arc<BootstrapState>, ads: kuma_xds::AdsServer) -> Routes {
    let ads = ads.into_service();
    let grpc = tonic::service::Routes::new(ads.clone()).into_axum_router();
    Routes {
        router: Router::new()
            .route("/bootstrap", post(bootstrap))
            .with_state(bootstrap_state)
            .merge(grpc),
        ads,
    }
}

/// Serves `req` with `router` in a task of the `main` runtime: handlers
/// that reach the store (bootstrap, tokens, the state-of-the-world stream)
/// run where the store's connections live, never on a connection thread.
async fn on_main<B>(
    main: &tokio::runtime::Handle,
    router: Router,
    req: http::Request<B>,
) -> http::Response<axum::body::Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    // Aborted if the client goes away first: no handler keeps working
    // (reading the store) for nobody.
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let req = req.map(axum::body::Body::new);
    let mut served = AbortOnDrop(main.spawn(tower::ServiceExt::oneshot(router, req)));
    match (&mut served.0).await {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        // The control plane is shutting down.
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Connection threads for `cores` cores: half of them, at least one. The
/// other half is left to the sync task, the API and the store. Measured on
/// 2 cores with 10k proxies (docs/benchmarks/ads-delta.md): one connection
/// thread spends 12 % less CPU on a mesh-wide change than two, which wake
/// and park each other's way through the same work, and serves the 10k
/// connections as fast.
fn shard_count(cores: usize) -> usize {
    (cores / 2).max(1)
}

/// The threads that serve the dp-server's connections, each a runtime of
/// one worker; a connection stays on one of them for its whole life: no
/// hand-off between worker threads for every response and ACK, no
/// stealing. Dropping `Shards` ends the threads and every connection on
/// them.
struct Shards {
    runtimes: Vec<tokio::runtime::Runtime>,
    next: usize,
}

impl Shards {
    fn start() -> std::io::Result<Shards> {
        let n = shard_count(std::thread::available_parallelism().map_or(1, |n| n.get()));
        // Built into `Shards` one by one: if one fails, its `Drop` shuts
        // down those already running (dropping a runtime here would block).
        let mut shards = Shards {
            runtimes: Vec::with_capacity(n),
            next: 0,
        };
        for i in 0..n {
            // One worker: a wake-up from another thread (the sync task's
            // snapshot notices) costs a syscall only when the worker is
            // parked, not every time as with a current-thread runtime.
            shards.runtimes.push(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(format!("dp-server-{i}"))
                    .enable_all()
                    .build()?,
            );
        }
        Ok(shards)
    }

    /// The thread for the next connection (round robin).
    fn pick(&mut self) -> &tokio::runtime::Handle {
        let i = self.next % self.runtimes.len();
        self.next = self.next.wrapping_add(1);
        self.runtimes[i].handle()
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        // Dropped by the accept loop's task: no blocking wait here.
        for rt in self.runtimes.drain(..) {
            rt.shutdown_background();
        }
    }
}

/// Accepts TLS connections and serves `routes` on each: HTTP/2 with
/// [`kuma_xds::conn`] when the client asked for it by ALPN (Envoy, gRPC
/// clients), else HTTP/1.1 or HTTP/2 by what the client sends, with hyper.
/// Connections are served on [`Shards`] (on the calling runtime if its
/// threads cannot start).
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, routes: Routes) {
    let main = tokio::runtime::Handle::current();
    let mut shards = match Shards::start() {
        Ok(s) => Some(s),
        Err(error) => {
            warn!(%error, "dp-server threads did not start; serving on the main runtime");
            None
        }
    };
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
        let connection = Connection {
            tcp,
            peer,
            acceptor: acceptor.clone(),
            routes: routes.clone(),
            main: main.clone(),
        };
        match shards.as_mut() {
            Some(shards) => {
                // Registered again with the I/O driver of its thread.
                let tcp = match connection.tcp.into_std() {
                    Ok(t) => t,
                    Err(error) => {
                        debug!(%peer, %error, "connection lost before it was served");
                        continue;
                    }
                };
                shards.pick().spawn(async move {
                    match TcpStream::from_std(tcp) {
                        Ok(tcp) => Connection { tcp, ..connection }.run().await,
                        Err(error) => debug!(%peer, %error, "connection not served"),
                    }
                });
            }
            None => {
                tokio::spawn(connection.run());
            }
        }
    }
}

/// An accepted connection, to serve on the runtime it is spawned on.
struct Connection {
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    routes: Routes,
    main: tokio::runtime::Handle,
}

impl Connection {
    async fn run(self) {
        let Connection {
            tcp,
            peer,
            acceptor,
            routes,
            main,
        } = self;
        let tls = match acceptor.accept(tcp).await {
            Ok(t) => t,
            Err(error) => {
                debug!(%peer, %error, "TLS handshake failed");
                return;
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let served = if h2 {
            // Delta ADS streams inline, everything else on the router.
            let Routes { router, ads } = routes;
            kuma_xds::conn::serve(&ads, tls, move |req| {
                let (main, router) = (main.clone(), router.clone());
                async move { on_main(&main, router, req).await }
            })
            .await
            .map_err(|e| e.to_string())
        } else {
            let router = routes.router;
            let svc = hyper::service::service_fn(move |req| {
                let (main, router) = (main.clone(), router.clone());
                async move { Ok::<_, std::convert::Infallible>(on_main(&main, router, req).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(None::<u32>);
            builder
                .serve_connection(TokioIo::new(tls), svc)
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(error) = served {
            debug!(%peer, %error, "connection ended with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shard_count;

    #[test]
    fn connection_threads_take_half_the_cores() {
        assert_eq!(shard_count(1), 1);
        assert_eq!(shard_count(2), 1);
        assert_eq!(shard_count(3), 1);
        assert_eq!(shard_count(8), 4);
    }
}
