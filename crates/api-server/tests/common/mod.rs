//! A real API server on 127.0.0.1:0 over a memory or SQLite store, and a
//! small client that returns status, headers and the JSON body together.
#![allow(dead_code)]

use kuma_api_server::{ApiConfig, ApiState, SharedState, auth};
use kuma_model::{ResourceKey, ResourceKind, ResourceName};
use kuma_store::{MemoryStore, ResourceStore, SqliteStore, Write};
use kuma_telemetry::Metrics;
use kuma_tokens::TokenService;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Once};
use tokio::sync::oneshot;

/// A running API server; stops when dropped.
pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub state: SharedState,
    stop: Option<oneshot::Sender<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What a request got back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// Fails with the whole reply when the status is not `status`.
    #[track_caller]
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(
            self.status, status,
            "expected {status}, got {}: {}",
            self.status, self.text
        );
        self
    }

    /// Asserts a Kuma-format error with this status; returns the invalid fields.
    #[track_caller]
    pub fn expect_error(self, status: u16) -> Vec<String> {
        let r = self.expect(status);
        assert_kuma_error(&r.json, status);
        r.invalid_fields()
    }

    pub fn invalid_fields(&self) -> Vec<String> {
        self.json["invalid_parameters"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p["field"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// Kuma's error body: `type`, `status`, `title`, `detail`, and well-formed
/// `invalid_parameters` when present.
#[track_caller]
pub fn assert_kuma_error(body: &Value, status: u16) {
    assert_eq!(body["type"], "/std-errors", "error type in {body}");
    assert_eq!(body["status"], status, "status in {body}");
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "title in {body}"
    );
    assert!(body["detail"].is_string(), "detail in {body}");
    if let Some(params) = body.get("invalid_parameters") {
        for p in params.as_array().expect("invalid_parameters is a list") {
            assert!(p["field"].is_string(), "field in {p}");
            assert!(
                p["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "reason in {p}"
            );
        }
    }
}

fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Which store backs the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
}

/// A server over a memory store with the `default` mesh.
pub async fn start() -> Server {
    start_with(Backend::Memory, ApiConfig::default()).await
}

pub async fn start_with(backend: Backend, config: ApiConfig) -> Server {
    install_crypto();
    let (store, dir): (Arc<dyn ResourceStore>, _) = match backend {
        Backend::Memory => (Arc::new(MemoryStore::new()), None),
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = SqliteStore::open(dir.path().join("kuma.db"))
                .await
                .expect("open sqlite store");
            (Arc::new(store), Some(dir))
        }
    };
    let tokens = Arc::new(TokenService::new(store.clone()));
    let state = Arc::new(ApiState {
        store: store.clone(),
        auth: auth::Authenticator::new(config.auth.clone()),
        config,
        metrics: Metrics::new(),
        tokens,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let serve_state = state.clone();
    tokio::spawn(async move {
        kuma_api_server::serve(listener, serve_state, async {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    let server = Server {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        state,
        stop: Some(stop),
        _dir: dir,
    };
    if server.state.config.federated {
        // A federated zone gets its meshes from the global, not over REST.
        server
            .store_create(ResourceKind::Mesh, None, "default", json!({}))
            .await;
    } else {
        server
            .put(
                "/meshes/default",
                &json!({"type": "Mesh", "name": "default"}),
            )
            .await
            .expect(201);
    }
    server
}

impl Server {
    pub fn store(&self) -> &Arc<dyn ResourceStore> {
        &self.state.store
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(
                HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                HeaderValue::from_str(v).expect("header value"),
            );
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, &[], None).await
    }

    /// A GET as a caller that is not trusted localhost (it came through a proxy).
    pub async fn get_remote(&self, path: &str, token: Option<&str>) -> Reply {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut h = vec![("x-forwarded-for", "203.0.113.7")];
        if let Some(b) = &bearer {
            h.push(("authorization", b.as_str()));
        }
        self.request(Method::GET, path, &h, None).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.put_with(path, &[("content-type", "application/json")], body)
            .await
    }

    pub async fn put_with(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        self.request(
            Method::PUT,
            path,
            headers,
            Some(serde_json::to_vec(body).expect("json")),
        )
        .await
    }

    pub async fn put_raw(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        self.request(
            Method::PUT,
            path,
            &[("content-type", content_type)],
            Some(body.to_vec()),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.request(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            Some(serde_json::to_vec(body).expect("json")),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.request(Method::DELETE, path, &[], None).await
    }

    /// Writes a resource straight into the store, as a control-plane
    /// component (not a REST client) would.
    pub async fn store_create(
        &self,
        kind: ResourceKind,
        mesh: Option<&str>,
        name: &str,
        spec: Value,
    ) {
        let key = ResourceKey::new(
            kind,
            mesh.map(|m| kuma_model::MeshName::new(m).expect("mesh name")),
            ResourceName::new(name).expect("name"),
        )
        .expect("key");
        self.store()
            .create(
                &key,
                Write {
                    labels: BTreeMap::new(),
                    spec,
                    status: None,
                },
            )
            .await
            .expect("store create");
    }

    /// Issues a user token through the API as the localhost admin.
    pub async fn user_token(&self, name: &str, groups: &[&str]) -> String {
        let r = self
            .post(
                "/tokens/user",
                &json!({"name": name, "groups": groups, "validFor": "1h"}),
            )
            .await
            .expect(200);
        r.text
    }
}

/// A dataplane in `mesh` with one inbound for `service`.
pub fn dataplane(mesh: &str, name: &str, service: &str, extra_tags: &[(&str, &str)]) -> Value {
    let mut tags = serde_json::Map::new();
    tags.insert("kuma.io/service".into(), json!(service));
    for (k, v) in extra_tags {
        tags.insert((*k).into(), json!(v));
    }
    json!({
        "type": "Dataplane", "mesh": mesh, "name": name,
        "networking": {
            "address": "10.0.0.1",
            "inbound": [{ "port": 8080, "servicePort": 18080, "tags": tags }]
        }
    })
}

/// A valid MeshTimeout.
pub fn mesh_timeout(mesh: &str, name: &str, timeout: &str) -> Value {
    json!({
        "type": "MeshTimeout", "mesh": mesh, "name": name,
        "spec": {
            "targetRef": { "kind": "Mesh" },
            "to": [{ "targetRef": { "kind": "Mesh" },
                     "default": { "connectionTimeout": timeout } }]
        }
    })
}
