//! The REST client kumactl talks to a control plane with: Kuma's paths, bodies
//! and error format; Bearer token from `authConf.token`; CA file or skip-verify.

use std::fmt;
use std::time::Duration;

use anyhow::Context as _;
use kuma_model::{ResourceKind, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ApiServer, ControlPlane};

/// Kuma's error body.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct KumaError {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub invalid_parameters: Vec<InvalidParameter>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct InvalidParameter {
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub reason: String,
}

impl fmt::Display for KumaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.title)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        for p in &self.invalid_parameters {
            write!(f, "\n* {}: {}", p.field, p.reason)?;
        }
        Ok(())
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with Kuma's error body.
    #[error("{0}")]
    Kuma(KumaError),
    /// The server answered with an error status and some other body.
    #[error("unexpected status {status}: {body}")]
    Status { status: u16, body: String },
    /// The server refused the credential kumactl sent (401/403).
    #[error(
        "the Control Plane API Server at {url} refused the request: {status} {title}\n\
         credential used: {credential}{hint}"
    )]
    Auth {
        url: String,
        status: u16,
        title: String,
        credential: String,
        hint: String,
    },
    /// No answer (connection refused, TLS failure, timeout).
    #[error(
        "could not reach the Control Plane API Server at {url}: {cause}\n\
         Is the Control Plane running? Check its address with `kumactl config control-planes list`"
    )]
    Transport { url: String, cause: String },
    /// An answer kumactl could not read.
    #[error("could not read the response of the Control Plane API Server: {0}")]
    Decode(String),
}

/// The error and its causes on one line; the causes are not exposed as
/// `source()` so that `{:#}` does not print them twice.
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

impl ApiError {
    pub fn is_not_found(&self) -> bool {
        match self {
            ApiError::Kuma(e) => e.status == 404,
            ApiError::Status { status, .. } => *status == 404,
            ApiError::Auth { .. } | ApiError::Transport { .. } | ApiError::Decode(_) => false,
        }
    }
}

/// `GET /`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IndexResponse {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub product: String,
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub cluster_id: String,
}

/// One page of a list.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ListPage {
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub items: Vec<Value>,
    #[serde(default)]
    pub next: Option<String>,
}

/// Whether a PUT created or replaced the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Created,
    Updated,
}

/// The path of one resource: `/meshes/{mesh}/{plural}/{name}` or `/{plural}/{name}`.
pub fn resource_path(kind: ResourceKind, mesh: Option<&str>, name: &str) -> String {
    format!("{}/{}", collection_path(kind, mesh), encode(name))
}

/// The path of a kind's collection, in a mesh or across meshes.
pub fn collection_path(kind: ResourceKind, mesh: Option<&str>) -> String {
    match (kind.scope(), mesh) {
        (Scope::Mesh, Some(mesh)) => format!("/meshes/{}/{}", encode(mesh), kind.plural()),
        _ => format!("/{}", kind.plural()),
    }
}

fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    /// What the requests authenticate with, for 401/403 messages.
    credential: String,
    /// How to fix a refused credential.
    hint: String,
}

/// Names the credential a request carries, never its value.
fn describe_credential(api: &ApiServer, control_plane: Option<&str>) -> (String, String) {
    let cp = control_plane
        .map(|n| format!(" of Control Plane {n:?}"))
        .unwrap_or_default();
    if api.bearer_token().is_some() {
        (
            format!("user token from authConf.token (authType: tokens){cp}"),
            format!(
                "\nThe token may be expired, revoked or signed by another control plane; replace it with \
                 `kumactl config control-planes add --name {} --address {} --auth-type tokens --auth-conf token=NEW_TOKEN --overwrite`",
                control_plane.unwrap_or("NAME"),
                api.url
            ),
        )
    } else if !api.client_cert_file.is_empty() {
        (
            format!("client certificate {}{cp}", api.client_cert_file),
            String::new(),
        )
    } else {
        (
            format!("none (anonymous){cp}"),
            "\nOnly requests from localhost are admin without a token; add one with \
             `--auth-type tokens --auth-conf token=TOKEN` (`kumactl generate user-token`)"
                .to_owned(),
        )
    }
}

impl ApiClient {
    /// A client for the named control plane of the config.
    pub fn for_control_plane(cp: &ControlPlane, timeout: Duration) -> anyhow::Result<Self> {
        let mut client = Self::new(&cp.coordinates.api_server, timeout)?;
        (client.credential, client.hint) =
            describe_credential(&cp.coordinates.api_server, Some(&cp.name));
        Ok(client)
    }

    pub fn new(api: &ApiServer, timeout: Duration) -> anyhow::Result<Self> {
        // reqwest is built without a provider; ring is the only one we ship.
        // Installing twice is harmless (the second call is refused).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = api.bearer_token() {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("authConf.token is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        for h in &api.headers {
            headers.insert(
                reqwest::header::HeaderName::from_bytes(h.key.as_bytes())
                    .with_context(|| format!("invalid header name {:?}", h.key))?,
                reqwest::header::HeaderValue::from_str(&h.value)
                    .with_context(|| format!("invalid value for header {:?}", h.key))?,
            );
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("kumactl/", env!("CARGO_PKG_VERSION")));
        if !timeout.is_zero() {
            builder = builder.timeout(timeout);
        }
        if !api.ca_cert_file.is_empty() {
            let pem = std::fs::read(&api.ca_cert_file)
                .with_context(|| format!("could not read caCertFile {}", api.ca_cert_file))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!("caCertFile {} holds no PEM certificate", api.ca_cert_file)
            })? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if !api.client_cert_file.is_empty() && !api.client_key_file.is_empty() {
            let mut pem = std::fs::read(&api.client_cert_file).with_context(|| {
                format!("could not read clientCertFile {}", api.client_cert_file)
            })?;
            pem.extend(std::fs::read(&api.client_key_file).with_context(|| {
                format!("could not read clientKeyFile {}", api.client_key_file)
            })?);
            builder = builder.identity(
                reqwest::Identity::from_pem(&pem).context("invalid client certificate or key")?,
            );
        }
        if api.skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder.build().context("could not build the HTTP client")?;
        let (credential, hint) = describe_credential(api, None);
        Ok(ApiClient {
            http,
            base: api.url.trim_end_matches('/').to_owned(),
            credential,
            hint,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let response = request.send().await.map_err(|e| ApiError::Transport {
            url: self.base.clone(),
            cause: error_chain(&e),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        if matches!(status.as_u16(), 401 | 403) {
            let kuma = serde_json::from_str::<KumaError>(&body).unwrap_or_default();
            let mut title = status.canonical_reason().unwrap_or("").to_owned();
            for part in [&kuma.title, &kuma.detail] {
                if !part.is_empty() && !title.contains(part.as_str()) {
                    title = format!("{title}: {part}");
                }
            }
            return Err(ApiError::Auth {
                url: self.base.clone(),
                status: status.as_u16(),
                title,
                credential: self.credential.clone(),
                hint: self.hint.clone(),
            });
        }
        Err(match serde_json::from_str::<KumaError>(&body) {
            Ok(err) if !err.title.is_empty() => ApiError::Kuma(KumaError {
                status: status.as_u16(),
                ..err
            }),
            _ => ApiError::Status {
                status: status.as_u16(),
                body,
            },
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ApiError> {
        let response = self.send(self.http.get(self.url(path))).await?;
        response
            .json()
            .await
            .map_err(|e| ApiError::Decode(e.to_string()))
    }

    /// Every page of a list, as one `{total, items, next: null}`.
    pub async fn list_all_json(&self, path: &str) -> Result<Value, ApiError> {
        let mut items = Vec::new();
        let mut url = self.url(path);
        loop {
            let page: ListPage = self
                .send(self.http.get(&url))
                .await?
                .json()
                .await
                .map_err(|e| ApiError::Decode(e.to_string()))?;
            items.extend(page.items);
            // Follow `next` on our own base: the server builds it from the
            // Host it saw, which may not be the address we use.
            match page.next.as_deref().and_then(|n| n.split_once('?')) {
                Some((_, query)) if !query.is_empty() => {
                    url = format!("{}?{query}", self.url(path))
                }
                _ => break,
            }
        }
        Ok(serde_json::json!({"total": items.len(), "items": items, "next": null}))
    }

    pub async fn index(&self) -> Result<IndexResponse, ApiError> {
        self.get_json("/").await
    }

    pub async fn get_resource(
        &self,
        kind: ResourceKind,
        mesh: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.get_json(&resource_path(kind, mesh, name)).await
    }

    pub async fn list(
        &self,
        kind: ResourceKind,
        mesh: Option<&str>,
        size: Option<u32>,
        offset: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let mut url = self.url(&collection_path(kind, mesh));
        let mut query = Vec::new();
        if let Some(size) = size {
            query.push(format!("size={size}"));
        }
        if let Some(offset) = offset {
            query.push(format!("offset={}", encode(offset)));
        }
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        let response = self.send(self.http.get(url)).await?;
        response
            .json()
            .await
            .map_err(|e| ApiError::Decode(e.to_string()))
    }

    pub async fn put_resource(
        &self,
        kind: ResourceKind,
        mesh: Option<&str>,
        name: &str,
        body: &Value,
    ) -> Result<(Upsert, Vec<String>), ApiError> {
        let response = self
            .send(
                self.http
                    .put(self.url(&resource_path(kind, mesh, name)))
                    .json(body),
            )
            .await?;
        let outcome = if response.status() == reqwest::StatusCode::CREATED {
            Upsert::Created
        } else {
            Upsert::Updated
        };
        let warnings = response
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v.get("warnings").cloned())
            .and_then(|w| serde_json::from_value::<Vec<String>>(w).ok())
            .unwrap_or_default();
        Ok((outcome, warnings))
    }

    pub async fn delete_resource(
        &self,
        kind: ResourceKind,
        mesh: Option<&str>,
        name: &str,
    ) -> Result<(), ApiError> {
        self.send(self.http.delete(self.url(&resource_path(kind, mesh, name))))
            .await
            .map(|_| ())
    }

    /// `POST /tokens/{dataplane|zone|user}`: the body is the token as text.
    pub async fn generate_token(&self, which: &str, request: &Value) -> Result<String, ApiError> {
        let response = self
            .send(
                self.http
                    .post(self.url(&format!("/tokens/{which}")))
                    .json(request),
            )
            .await?;
        response
            .text()
            .await
            .map_err(|e| ApiError::Decode(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn kind(word: &str) -> ResourceKind {
        ResourceKind::from_kumactl_word(word).unwrap()
    }

    #[test]
    fn paths_follow_kumas_rest_api() {
        let mesh = kind("mesh");
        assert_eq!(resource_path(mesh, None, "demo"), "/meshes/demo");
        let mt = ResourceKind::from_name("MeshTimeout").unwrap();
        assert_eq!(
            resource_path(mt, Some("default"), "t 1"),
            "/meshes/default/meshtimeouts/t%201"
        );
        assert_eq!(collection_path(mt, None), "/meshtimeouts");
    }

    #[test]
    fn kuma_errors_print_their_fields() {
        let err = KumaError {
            kind: "/std-errors".into(),
            status: 400,
            title: "Could not process a resource".into(),
            detail: "Resource is not valid".into(),
            invalid_parameters: vec![InvalidParameter {
                field: "spec.to".into(),
                reason: "must not be empty".into(),
            }],
        };
        assert_eq!(
            ApiError::Kuma(err).to_string(),
            "Could not process a resource (Resource is not valid)\n* spec.to: must not be empty"
        );
    }

    /// Serves one canned HTTP response and hands back the request it received.
    async fn one_shot(status: &str, body: &str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let handle = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 16 * 1024];
            let mut received = Vec::new();
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                received.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&received);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if received.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            socket.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&received).into_owned()
        });
        (format!("http://{addr}"), handle)
    }

    fn api(url: &str, token: Option<&str>) -> ApiServer {
        let mut api = ApiServer {
            url: url.into(),
            ..ApiServer::default()
        };
        if let Some(t) = token {
            api.auth_type = "tokens".into();
            api.auth_conf.insert("token".into(), t.into());
        }
        api
    }

    #[tokio::test]
    async fn sends_the_bearer_token_and_reads_the_index() {
        let (url, server) = one_shot(
            "200 OK",
            r#"{"version":"2.9.0","product":"Kuma","instanceId":"cp-1","hostname":"h","clusterId":"c"}"#,
        )
        .await;
        let client =
            ApiClient::new(&api(&url, Some("abc.def.ghi")), Duration::from_secs(5)).unwrap();
        let index = client.index().await.unwrap();
        assert_eq!(index.product, "Kuma");
        assert_eq!(index.instance_id, "cp-1");
        let request = server.await.unwrap();
        assert!(request.starts_with("GET / HTTP/1.1"), "{request}");
        assert!(
            request
                .to_ascii_lowercase()
                .contains("authorization: bearer abc.def.ghi"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn put_reports_created_and_errors_keep_kumas_fields() {
        let (url, server) = one_shot("201 Created", "{}").await;
        let client = ApiClient::new(&api(&url, None), Duration::from_secs(5)).unwrap();
        let body = serde_json::json!({"type": "Mesh", "name": "demo"});
        let (outcome, _) = client
            .put_resource(kind("mesh"), None, "demo", &body)
            .await
            .unwrap();
        assert_eq!(outcome, Upsert::Created);
        let request = server.await.unwrap();
        assert!(
            request.starts_with("PUT /meshes/demo HTTP/1.1"),
            "{request}"
        );
        assert!(
            request.ends_with(r#"{"type":"Mesh","name":"demo"}"#),
            "{request}"
        );

        let (url, _server) = one_shot(
            "404 Not Found",
            r#"{"type":"/std-errors","status":404,"title":"Could not get a resource","detail":"Not found"}"#,
        )
        .await;
        let client = ApiClient::new(&api(&url, None), Duration::from_secs(5)).unwrap();
        let err = client
            .get_resource(kind("mesh"), None, "nope")
            .await
            .unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(err.to_string(), "Could not get a resource (Not found)");
    }

    #[tokio::test]
    async fn unreachable_server_is_a_transport_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = ApiClient::new(&api(&url, None), Duration::from_secs(5)).unwrap();
        let err = client.index().await.unwrap_err();
        assert!(matches!(err, ApiError::Transport { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&url), "{text}");
        assert!(
            text.contains("kumactl config control-planes list"),
            "{text}"
        );
    }
}
