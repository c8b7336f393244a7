//! Kuma's Application Probe Proxy.
//!
//! With a transparent proxy every connection to the application goes through
//! Envoy and needs mTLS, so the kubelet's probes cannot reach the application
//! directly. Kuma rewrites the pod's probes to point at this server in kuma-dp
//! (`--application-probe-proxy-port`, default 9001, 0 disables it), which
//! probes the application itself and answers with the result:
//!
//! | request | probe |
//! |---|---|
//! | `/<port>/<path>?<query>` | `GET <scheme>://<address>:<port>/<path>?<query>` |
//! | `/tcp/<port>` | a TCP connect to `<address>:<port>` |
//! | `/grpc/<port>` | `grpc.health.v1.Health/Check` on `<address>:<port>` |
//!
//! Settings come in Kuma's request headers (see [`HEADER_TIMEOUT`] and its
//! siblings). The answer is `200 HEALTHY` or `503 UNHEALTHY`, except that an
//! HTTP application answering outside 2xx/3xx has its own status code passed
//! through (with the body `UNHEALTHY`) so that `kubectl describe` shows it.
//! A request whose port is missing or invalid gets `503 UNKNOWN`, as in Kuma.
//!
//! # Which address is probed
//!
//! Kuma probes the pod address, i.e. the Dataplane's `networking.address`
//! (kuma-dp takes it from the bootstrap response, the template, or falls back
//! to `127.0.0.1`), not loopback: an application bound to the pod IP only
//! would not be reachable on 127.0.0.1. The connection's *source* address is
//! `127.0.0.6` (`::6` for an IPv6 dataplane address), the address Kuma's
//! transparent proxy excludes from redirection, so the probe reaches the
//! application instead of being captured by Envoy's inbound listener. When
//! that source address cannot be bound on this machine (e.g. `::6` without the
//! transparent proxy, or 127.0.0.0/8 not all on loopback as on macOS) the
//! kernel picks the source; without a transparent proxy nothing captures the
//! probe anyway, which is the universal case.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::{debug, info};

/// Prefix of every Kuma probe header; such headers are not forwarded.
pub const HEADER_PREFIX: &str = "x-kuma-probes-";
/// Probe timeout in whole seconds (default 1).
pub const HEADER_TIMEOUT: &str = "x-kuma-probes-timeout";
/// `Host` header to send to the application.
pub const HEADER_HOST: &str = "x-kuma-probes-host";
/// `HTTPS` probes over TLS without verifying the certificate; anything else is HTTP.
pub const HEADER_SCHEME: &str = "x-kuma-probes-scheme";
/// Service name of a gRPC health check (default empty: the whole server).
pub const HEADER_GRPC_SERVICE: &str = "x-kuma-probes-grpc-service";

/// At most this much of an HTTP probe's response body is read.
pub const MAX_BODY: usize = 10 * 1024;

/// Kuma's source address for probes to an IPv4 (or host name) target.
pub const SOURCE_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
/// Kuma's source address for probes to an IPv6 target.
pub const SOURCE_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6));

/// TCP probe sockets linger one second on close, as in the kubelet and Kuma,
/// so probes don't pile up sockets in TIME-WAIT. A lingering close blocks
/// while sent data is unacknowledged; a TCP probe sends nothing, so its close
/// never blocks the runtime. gRPC and HTTP probes (which send data) close
/// normally.
const LINGER: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Healthy,
    Unhealthy,
    Unknown,
}

impl Outcome {
    fn text(self) -> &'static str {
        match self {
            Outcome::Healthy => "HEALTHY",
            Outcome::Unhealthy => "UNHEALTHY",
            Outcome::Unknown => "UNKNOWN",
        }
    }
}

/// The gRPC health-checking protocol's messages (`grpc.health.v1`).
pub mod health {
    /// `grpc.health.v1.HealthCheckRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HealthCheckRequest {
        #[prost(string, tag = "1")]
        pub service: String,
    }

    /// `grpc.health.v1.HealthCheckResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HealthCheckResponse {
        #[prost(enumeration = "ServingStatus", tag = "1")]
        pub status: i32,
    }

    /// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ServingStatus {
        Unknown = 0,
        Serving = 1,
        NotServing = 2,
        ServiceUnknown = 3,
    }

    /// Path of the `Check` method.
    pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
}

/// The probe proxy: where it probes and from which source address.
#[derive(Clone)]
pub struct Prober {
    inner: Arc<Inner>,
}

struct Inner {
    /// Host (IP address or name) of the application.
    target: String,
    source: Option<IpAddr>,
    http: reqwest::Client,
}

impl Prober {
    /// A prober of `target` (the Dataplane's address) from Kuma's source
    /// address, if this machine can bind it (see the module documentation).
    pub fn new(target: impl Into<String>) -> anyhow::Result<Prober> {
        let target = target.into();
        let wanted = match target.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => SOURCE_V6,
            _ => SOURCE_V4,
        };
        let source = match std::net::TcpListener::bind((wanted, 0)) {
            Ok(_) => Some(wanted),
            Err(error) => {
                info!(source = %wanted, %error, "probes use the kernel's source address");
                None
            }
        };
        Prober::with_source(target, source)
    }

    /// A prober of `target` from `source` (`None`: the kernel chooses).
    pub fn with_source(
        target: impl Into<String>,
        source: Option<IpAddr>,
    ) -> anyhow::Result<Prober> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut http = reqwest::Client::builder()
            // Kuma's transport: HTTP/1.1, no keep-alive, certificates not
            // verified, Go's default of following up to 10 redirects.
            .http1_only()
            .pool_max_idle_per_host(0)
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::limited(10));
        if let Some(source) = source {
            http = http.local_address(source);
        }
        Ok(Prober {
            inner: Arc::new(Inner {
                target: target.into(),
                source,
                http: http.build()?,
            }),
        })
    }

    /// The source address probes use (`None`: the kernel's choice).
    pub fn source(&self) -> Option<IpAddr> {
        self.inner.source
    }

    /// The HTTP application answering probe requests (any method, any path).
    pub fn router(&self) -> axum::Router {
        let prober = self.clone();
        axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let prober = prober.clone();
            async move { prober.handle(&uri, &headers).await }
        })
    }

    /// Serves probe requests on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, target = %self.inner.target, "starting Application Probe Proxy server");
        }
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        info!("stopped Application Probe Proxy server");
        result
    }

    async fn handle(&self, uri: &Uri, headers: &HeaderMap) -> Response {
        let path = uri.path();
        let (outcome, status) = if let Some(rest) = path.strip_prefix("/tcp/") {
            match port_of(rest) {
                Some((port, _)) => (self.probe_tcp(port, timeout(headers)).await, None),
                None => (Outcome::Unknown, None),
            }
        } else if let Some(rest) = path.strip_prefix("/grpc/") {
            match port_of(rest) {
                Some((port, _)) => (self.probe_grpc(port, headers).await, None),
                None => (Outcome::Unknown, None),
            }
        } else {
            match path.strip_prefix('/').and_then(port_of) {
                Some((port, rest)) => self.probe_http(port, rest, uri.query(), headers).await,
                None => (Outcome::Unknown, None),
            }
        };
        if outcome == Outcome::Unknown {
            debug!(%uri, "probe request without a valid port");
        }
        let status = status.unwrap_or(if outcome == Outcome::Healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        });
        let mut response = Response::new(Body::from(format!("{}\n", outcome.text())));
        *response.status_mut() = status;
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }

    fn host_port(&self, port: u16) -> String {
        match self.inner.target.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
            _ => format!("{}:{port}", self.inner.target),
        }
    }

    /// A TCP connection to the target from the source address.
    async fn connect(&self, port: u16, linger: bool) -> std::io::Result<TcpStream> {
        let mut last = None;
        for addr in tokio::net::lookup_host(self.host_port(port)).await? {
            match self.connect_addr(addr, linger).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("the target has no address")))
    }

    async fn connect_addr(&self, addr: SocketAddr, linger: bool) -> std::io::Result<TcpStream> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if linger {
            #[allow(deprecated)] // see LINGER: nothing is sent, close does not block
            socket.set_linger(Some(LINGER))?;
        }
        if let Some(source) = self.inner.source
            && source.is_ipv4() == addr.is_ipv4()
        {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        socket.connect(addr).await
    }

    async fn probe_tcp(&self, port: u16, timeout: i64) -> Outcome {
        let connect = self.connect(port, true);
        // Go's dialer: no timeout for 0, an expired one when negative.
        let result = match timeout {
            0 => connect.await,
            t if t < 0 => return Outcome::Unhealthy,
            t => match tokio::time::timeout(secs(t), connect).await {
                Ok(r) => r,
                Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
            },
        };
        match result {
            Ok(_) => Outcome::Healthy,
            Err(error) => {
                debug!(port, %error, "TCP probe failed");
                Outcome::Unhealthy
            }
        }
    }

    async fn probe_http(
        &self,
        port: u16,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> (Outcome, Option<StatusCode>) {
        let https = headers
            .get(HEADER_SCHEME)
            .is_some_and(|v| v.as_bytes() == b"HTTPS");
        let mut url = format!(
            "{}://{}{}",
            if https { "https" } else { "http" },
            self.host_port(port),
            if path.is_empty() { "/" } else { path }
        );
        if let Some(q) = query {
            url.push('?');
            url.push_str(q);
        }
        let mut forwarded = HeaderMap::new();
        for (name, value) in headers {
            let n = name.as_str();
            if !n.starts_with(HEADER_PREFIX) && !HOP_BY_HOP.contains(&n) {
                forwarded.append(name.clone(), value.clone());
            }
        }
        // Kuma means to send this Host header (Go's client silently ignores
        // it; the kubelet, whose probes these replace, honours it).
        if let Some(host) = headers.get(HEADER_HOST) {
            forwarded.insert(header::HOST, host.clone());
        }
        if !forwarded.contains_key(header::USER_AGENT) {
            forwarded.insert(
                header::USER_AGENT,
                HeaderValue::from_static(concat!("kuma-probe/", env!("CARGO_PKG_VERSION"))),
            );
        }
        let mut request = self.inner.http.get(&url).headers(forwarded);
        // Go's client: a deadline only for a positive timeout; it covers the body.
        let t = timeout(headers);
        if t > 0 {
            request = request.timeout(secs(t));
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(error) => {
                debug!(%url, %error, "HTTP probe failed");
                return (Outcome::Unhealthy, None);
            }
        };
        let mut read = 0;
        while read < MAX_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) => break,
                Err(error) => {
                    debug!(%url, %error, "reading the HTTP probe's response failed");
                    return (Outcome::Unhealthy, None);
                }
            }
        }
        let status = response.status();
        if (200..400).contains(&status.as_u16()) {
            (Outcome::Healthy, None)
        } else {
            debug!(%url, %status, "HTTP probe failed");
            (
                Outcome::Unhealthy,
                StatusCode::from_u16(status.as_u16()).ok(),
            )
        }
    }

    async fn probe_grpc(&self, port: u16, headers: &HeaderMap) -> Outcome {
        let service = headers
            .get(HEADER_GRPC_SERVICE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let t = timeout(headers);
        if t <= 0 {
            // Go's context.WithTimeout with no time left.
            return Outcome::Unhealthy;
        }
        match tokio::time::timeout(secs(t), self.grpc_check(port, service)).await {
            Ok(Ok(status)) if status == health::ServingStatus::Serving as i32 => Outcome::Healthy,
            Ok(Ok(status)) => {
                debug!(port, status, "gRPC probe: not serving");
                Outcome::Unhealthy
            }
            Ok(Err(error)) => {
                debug!(port, %error, "gRPC probe failed");
                Outcome::Unhealthy
            }
            Err(_) => {
                debug!(port, "gRPC probe timed out");
                Outcome::Unhealthy
            }
        }
    }

    async fn grpc_check(&self, port: u16, service: String) -> anyhow::Result<i32> {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.host_port(port)))?
                .user_agent(concat!("kube-probe/", env!("CARGO_PKG_VERSION")))?;
        let prober = self.clone();
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let prober = prober.clone();
            async move {
                prober
                    .connect(port, false)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        });
        let channel = endpoint.connect_with_connector(connector).await?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await?;
        let response: tonic::Response<health::HealthCheckResponse> = grpc
            .unary(
                tonic::Request::new(health::HealthCheckRequest { service }),
                tonic::codegen::http::uri::PathAndQuery::from_static(health::CHECK_PATH),
                tonic_prost::ProstCodec::default(),
            )
            .await?;
        Ok(response.into_inner().status)
    }
}

/// Headers that belong to one connection and are not forwarded.
const HOP_BY_HOP: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "content-length",
];

/// Binds the probe proxy's port on every interface (the kubelet probes the
/// pod address), like Kuma's `:<port>`: dual-stack when IPv6 is available.
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await,
    }
}

/// Splits `<port>[/<path>]` into the port and the path (`""` or starting with `/`).
fn port_of(s: &str) -> Option<(u16, &str)> {
    let end = s.find('/').unwrap_or(s.len());
    let (digits, rest) = s.split_at(end);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(|port| (port, rest))
}

/// Kuma's timeout header in seconds: 1 when missing or not an integer.
fn timeout(headers: &HeaderMap) -> i64 {
    headers
        .get(HEADER_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn secs(t: i64) -> Duration {
    Duration::from_secs(u64::try_from(t).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_paths() {
        assert_eq!(port_of("8080/healthz"), Some((8080, "/healthz")));
        assert_eq!(port_of("8080"), Some((8080, "")));
        assert_eq!(port_of("0/"), Some((0, "/")));
        assert_eq!(port_of("65536/x"), None);
        assert_eq!(port_of("99999999999999999999"), None);
        assert_eq!(port_of("+80"), None);
        assert_eq!(port_of("abc/x"), None);
        assert_eq!(port_of("/x"), None);
        assert_eq!(port_of("80abc"), None);
    }

    #[test]
    fn timeouts() {
        let mut h = HeaderMap::new();
        assert_eq!(timeout(&h), 1);
        h.insert(HEADER_TIMEOUT, HeaderValue::from_static("5"));
        assert_eq!(timeout(&h), 5);
        h.insert(HEADER_TIMEOUT, HeaderValue::from_static("five"));
        assert_eq!(timeout(&h), 1);
    }
}
