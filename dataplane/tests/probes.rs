//! The application probe proxy against real applications on loopback: an axum
//! HTTP app, plain TCP ports and a tonic gRPC health server. Statuses are
//! the ones Kuma's kuma-dp answers.

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::get;
use kuma_dp_bin::probes::health::{
    CHECK_PATH, HealthCheckRequest, HealthCheckResponse, ServingStatus,
};
use kuma_dp_bin::probes::{self, Prober};
use kuma_testkit::free_port;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codegen::{BoxFuture, Service, http};

/// A probe proxy serving on a loopback port, probing 127.0.0.1.
struct Proxy {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn proxy() -> Proxy {
    let prober = Prober::new("127.0.0.1").unwrap();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(prober.serve(listener, async {
        let _ = stopped.await;
    }));
    Proxy {
        addr,
        stop: Some(stop),
        task,
    }
}

struct Answer {
    status: u16,
    body: String,
    content_type: String,
}

impl Proxy {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut req = reqwest::Client::new().get(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        Answer {
            status,
            body: resp.text().await.unwrap(),
            content_type,
        }
    }

    async fn status(&self, path: &str, headers: &[(&str, &str)]) -> u16 {
        self.get(path, headers).await.status
    }
}

/// The HTTP application: answers on 127.0.0.1, returns its port.
async fn http_app() -> u16 {
    let expect_headers = |headers: HeaderMap| async move {
        let h = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_string());
        let kuma = headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-kuma-probes-"))
            .count();
        if h("x-custom").as_deref() == Some("v")
            && h("host").as_deref() == Some("app.example")
            && h("user-agent").as_deref() == Some("kube-probe/1.33")
            && kuma == 0
        {
            (StatusCode::OK, String::new())
        } else {
            (StatusCode::IM_A_TEAPOT, format!("{headers:?}"))
        }
    };
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/unhealthy",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "late"
            }),
        )
        .route(
            "/redirect",
            get(|| async { (StatusCode::FOUND, [("location", "/unhealthy")]) }),
        )
        .route("/moved", get(|| async { (StatusCode::NOT_MODIFIED, "") }))
        .route("/headers", get(expect_headers))
        .route(
            "/default-ua",
            get(|headers: HeaderMap| async move {
                let ua = headers["user-agent"].to_str().unwrap().to_string();
                if ua == concat!("kuma-probe/", env!("CARGO_PKG_VERSION")) {
                    StatusCode::OK
                } else {
                    StatusCode::IM_A_TEAPOT
                }
            }),
        )
        .route(
            "/query",
            get(|uri: Uri| async move {
                if uri.query() == Some("a=1&b=2") {
                    StatusCode::OK
                } else {
                    StatusCode::IM_A_TEAPOT
                }
            }),
        )
        .route(
            "/big",
            get(|| async { (StatusCode::BAD_GATEWAY, "x".repeat(1 << 20)) }),
        );
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    port
}

#[tokio::test]
async fn http_probes_map_statuses_like_kuma() {
    let app = http_app().await;
    let proxy = proxy().await;

    let ok = proxy.get(&format!("/{app}/healthz"), &[]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, "HEALTHY\n");
    assert_eq!(ok.content_type, "text/plain; charset=utf-8");

    // The application's own failure status is passed through.
    let bad = proxy.get(&format!("/{app}/unhealthy"), &[]).await;
    assert_eq!((bad.status, bad.body.as_str()), (500, "UNHEALTHY\n"));
    assert_eq!(proxy.status(&format!("/{app}/nowhere"), &[]).await, 404);
    // 3xx is healthy; redirects are followed like Go's client does.
    assert_eq!(proxy.status(&format!("/{app}/moved"), &[]).await, 200);
    assert_eq!(proxy.status(&format!("/{app}/redirect"), &[]).await, 500);
    // Only the first 10 KiB of the body are read; the status still counts.
    assert_eq!(proxy.status(&format!("/{app}/big"), &[]).await, 502);

    // Beyond the timeout (1s by default, here from Kuma's header): 503.
    let slow = proxy
        .get(&format!("/{app}/slow"), &[(probes::HEADER_TIMEOUT, "1")])
        .await;
    assert_eq!((slow.status, slow.body.as_str()), (503, "UNHEALTHY\n"));

    // Nothing listening: 503.
    let closed = free_port();
    assert_eq!(proxy.status(&format!("/{closed}/healthz"), &[]).await, 503);
}

#[tokio::test]
async fn http_probes_forward_headers_query_and_host() {
    let app = http_app().await;
    let proxy = proxy().await;
    let headers = [
        ("x-custom", "v"),
        ("user-agent", "kube-probe/1.33"),
        (probes::HEADER_HOST, "app.example"),
        (probes::HEADER_TIMEOUT, "5"),
        (probes::HEADER_GRPC_SERVICE, "ignored"),
    ];
    let a = proxy.get(&format!("/{app}/headers"), &headers).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(proxy.status(&format!("/{app}/default-ua"), &[]).await, 200);
    assert_eq!(
        proxy.status(&format!("/{app}/query?a=1&b=2"), &[]).await,
        200
    );
    // HTTPS against a plain-HTTP port fails the handshake: unhealthy.
    let https = [(probes::HEADER_SCHEME, "HTTPS")];
    assert_eq!(proxy.status(&format!("/{app}/healthz"), &https).await, 503);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn probes_come_from_kumas_source_address() {
    let app = source_checking_app().await;
    let prober = Prober::new("127.0.0.1").unwrap();
    assert_eq!(prober.source(), Some(probes::SOURCE_V4));
    let proxy = proxy().await;
    // The application sees the probe coming from 127.0.0.6, not 127.0.0.1.
    assert_eq!(proxy.status(&format!("/{app}/"), &[]).await, 200);
}

/// 200 only for connections from 127.0.0.6.
async fn source_checking_app() -> u16 {
    let app = axum::Router::new().route(
        "/",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
            if peer.ip() == probes::SOURCE_V4 {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            }
        }),
    );
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    port
}

#[tokio::test]
async fn tcp_probes() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let open = listener.local_addr().unwrap().port();
    let proxy = proxy().await;
    let ok = proxy.get(&format!("/tcp/{open}"), &[]).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "HEALTHY\n"));
    // Anything after the port is ignored, as in Kuma's pattern.
    assert_eq!(proxy.status(&format!("/tcp/{open}/x"), &[]).await, 200);
    let closed = free_port();
    let bad = proxy.get(&format!("/tcp/{closed}"), &[]).await;
    assert_eq!((bad.status, bad.body.as_str()), (503, "UNHEALTHY\n"));
    drop(listener);
}

/// `grpc.health.v1.Health` with a fixed status per service.
#[derive(Clone)]
struct Health(HashMap<String, ServingStatus>);

impl tonic::server::NamedService for Health {
    const NAME: &'static str = "grpc.health.v1.Health";
}

struct Check(Health);

impl tonic::server::UnaryService<HealthCheckRequest> for Check {
    type Response = HealthCheckResponse;
    type Future = BoxFuture<tonic::Response<HealthCheckResponse>, tonic::Status>;

    fn call(&mut self, req: tonic::Request<HealthCheckRequest>) -> Self::Future {
        let known = self.0.0.get(&req.get_ref().service).copied();
        Box::pin(async move {
            match known {
                Some(s) => Ok(tonic::Response::new(HealthCheckResponse {
                    status: s as i32,
                })),
                None => Err(tonic::Status::not_found("unknown service")),
            }
        })
    }
}

impl Service<http::Request<tonic::body::Body>> for Health {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            if req.uri().path() == CHECK_PATH {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(Check(me), req).await)
            } else {
                Ok(tonic::Status::unimplemented("").into_http())
            }
        })
    }
}

async fn grpc_app() -> u16 {
    let health = Health(HashMap::from([
        (String::new(), ServingStatus::Serving),
        ("liveness".to_string(), ServingStatus::Serving),
        ("readiness".to_string(), ServingStatus::NotServing),
    ]));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    port
}

#[tokio::test]
async fn grpc_probes() {
    let grpc = grpc_app().await;
    let http = http_app().await;
    let proxy = proxy().await;
    let svc = |s| {
        [
            (probes::HEADER_GRPC_SERVICE, s),
            (probes::HEADER_TIMEOUT, "5"),
        ]
    };

    let ok = proxy.get(&format!("/grpc/{grpc}"), &[]).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "HEALTHY\n"));
    assert_eq!(
        proxy
            .status(&format!("/grpc/{grpc}"), &svc("liveness"))
            .await,
        200
    );
    let not_serving = proxy.get(&format!("/grpc/{grpc}"), &svc("readiness")).await;
    assert_eq!(
        (not_serving.status, not_serving.body.as_str()),
        (503, "UNHEALTHY\n")
    );
    // An error from the health service (NOT_FOUND for an unknown service).
    assert_eq!(
        proxy.status(&format!("/grpc/{grpc}"), &svc("other")).await,
        503
    );
    // Not a gRPC server, and nothing listening.
    assert_eq!(proxy.status(&format!("/grpc/{http}"), &svc("")).await, 503);
    let closed = free_port();
    assert_eq!(proxy.status(&format!("/grpc/{closed}"), &[]).await, 503);
}

#[tokio::test]
async fn requests_without_a_valid_port_are_unknown() {
    let proxy = proxy().await;
    for path in [
        "/",
        "/healthz",
        "/abc/healthz",
        "/65536/healthz",
        "/99999999999999999999999/x",
        "/8080abc",
        "/tcp/",
        "/tcp/abc",
        "/tcp",
        "/grpc/70000",
        "/grpc/-1",
    ] {
        let a = proxy.get(path, &[]).await;
        assert_eq!((a.status, a.body.as_str()), (503, "UNKNOWN\n"), "{path}");
    }
}

#[tokio::test]
async fn stops_on_shutdown() {
    let mut proxy = proxy().await;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let open = listener.local_addr().unwrap().port();
    assert_eq!(proxy.status(&format!("/tcp/{open}"), &[]).await, 200);
    proxy.stop.take().unwrap().send(()).unwrap();
    proxy.task.await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(proxy.addr).await.is_err());
}

/// A self-signed HTTPS application: 200 on `/healthz?scheme=https`.
async fn https_app() -> u16 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["mock-application".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let app = axum::Router::new().route(
        "/healthz",
        get(|uri: Uri| async move {
            if uri.query() == Some("scheme=https") {
                StatusCode::OK
            } else {
                StatusCode::IM_A_TEAPOT
            }
        }),
    );
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let svc = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_probes_skip_certificate_verification_and_keep_the_query() {
    let app = https_app().await;
    let proxy = proxy().await;
    let https = [(probes::HEADER_SCHEME, "HTTPS")];
    let path = format!("/{app}/healthz?scheme=https");
    assert_eq!(proxy.status(&path, &https).await, 200);
    // Kuma compares the scheme exactly: anything but "HTTPS" is plain HTTP,
    // which a TLS server does not answer.
    assert_eq!(
        proxy
            .status(&path, &[(probes::HEADER_SCHEME, "https")])
            .await,
        503
    );
    assert_eq!(proxy.status(&path, &[]).await, 503);
}
