//! The REST API as a Kuma user meets it: a real server on 127.0.0.1, real
//! HTTP, every assertion on status and body.

use crate::common::{Backend, Server, dataplane, mesh_timeout, start, start_with};
use kuma_api_server::ApiConfig;
use kuma_model::ResourceKind;
use reqwest::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------- meta

#[tokio::test]
async fn index_names_the_product_and_version() {
    let s = start().await;
    let r = s.get("/").await.expect(200);
    assert_eq!(r.json["product"], "Kuma");
    assert_eq!(r.json["tagline"], "Kuma");
    assert_eq!(r.json["version"], env!("CARGO_PKG_VERSION"));
    assert!(r.json["instanceId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(r.json["hostname"].is_string());
    assert_eq!(r.json["build"]["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn resources_lists_all_34_kinds() {
    let s = start().await;
    let r = s.get("/_resources").await.expect(200);
    let items = r.json["resources"].as_array().expect("resources list");
    assert_eq!(items.len(), 34, "{}", r.text);
    assert_eq!(ResourceKind::ALL.len(), 34);
    for kind in ResourceKind::ALL {
        let d = kind.descriptor();
        let item = items
            .iter()
            .find(|i| i["name"] == d.name)
            .unwrap_or_else(|| panic!("{} missing from /_resources", d.name));
        assert_eq!(item["path"], d.plural, "{}", d.name);
        assert_eq!(item["readOnly"], d.read_only, "{}", d.name);
    }
    let mt = items.iter().find(|i| i["name"] == "MeshTimeout").unwrap();
    assert_eq!(mt["scope"], "Mesh");
    assert_eq!(mt["policy"]["hasToTargetRef"], true);
    assert_eq!(mt["policy"]["isTargetRef"], true);
    let mesh = items.iter().find(|i| i["name"] == "Mesh").unwrap();
    assert_eq!(mesh["scope"], "Global");
    assert!(mesh.get("policy").is_none());
}

// ---------------------------------------------------------------- CRUD

async fn crud_global_kind(s: &Server) {
    let hg = json!({
        "type": "HostnameGenerator", "name": "local",
        "spec": { "selector": { "meshService": { "matchLabels": { "team": "a" } } },
                  "template": "{{ .DisplayName }}.mesh.local" }
    });
    let r = s.put("/hostnamegenerators/local", &hg).await.expect(201);
    assert_eq!(r.json, json!({ "warnings": [] }));
    assert!(r.header("etag").is_some(), "create returns an ETag");

    let got = s.get("/hostnamegenerators/local").await.expect(200);
    assert_eq!(got.json["type"], "HostnameGenerator");
    assert_eq!(got.json["name"], "local");
    assert!(got.json.get("mesh").is_none(), "global kinds have no mesh");
    assert_eq!(
        got.json["spec"]["template"],
        "{{ .DisplayName }}.mesh.local"
    );
    assert!(got.json["creationTime"].is_string());
    assert!(got.json["modificationTime"].is_string());

    let mut changed = hg.clone();
    changed["spec"]["template"] = json!("{{ .DisplayName }}.other.local");
    let r = s
        .put("/hostnamegenerators/local", &changed)
        .await
        .expect(200);
    assert_eq!(r.json, json!({ "warnings": [] }));
    let got = s.get("/hostnamegenerators/local").await.expect(200);
    assert_eq!(
        got.json["spec"]["template"],
        "{{ .DisplayName }}.other.local"
    );

    let list = s.get("/hostnamegenerators").await.expect(200);
    assert_eq!(list.json["total"], 1);
    assert_eq!(list.json["items"][0]["name"], "local");
    assert_eq!(list.json["next"], Value::Null);

    let r = s.delete("/hostnamegenerators/local").await.expect(200);
    assert_eq!(r.json, json!({}));
    s.get("/hostnamegenerators/local").await.expect_error(404);
    s.delete("/hostnamegenerators/local")
        .await
        .expect_error(404);
}

#[tokio::test]
async fn crud_global_kind_memory() {
    crud_global_kind(&start().await).await;
}

#[tokio::test]
async fn crud_global_kind_sqlite() {
    crud_global_kind(&start_with(Backend::Sqlite, ApiConfig::default()).await).await;
}

async fn crud_mesh_policy(s: &Server) {
    let path = "/meshes/default/meshtimeouts/t1";
    let r = s
        .put(path, &mesh_timeout("default", "t1", "5s"))
        .await
        .expect(201);
    assert_eq!(r.json, json!({ "warnings": [] }));
    let got = s.get(path).await.expect(200);
    assert_eq!(got.json["type"], "MeshTimeout");
    assert_eq!(got.json["mesh"], "default");
    assert_eq!(got.json["name"], "t1");
    assert_eq!(
        got.json["spec"]["to"][0]["default"]["connectionTimeout"],
        "5s"
    );
    // The control plane adds Kuma's computed labels.
    assert_eq!(got.json["labels"]["kuma.io/mesh"], "default");

    let r = s
        .put(path, &mesh_timeout("default", "t1", "7s"))
        .await
        .expect(200);
    assert_eq!(r.json, json!({ "warnings": [] }));
    let got = s.get(path).await.expect(200);
    assert_eq!(
        got.json["spec"]["to"][0]["default"]["connectionTimeout"],
        "7s"
    );

    let r = s.delete(path).await.expect(200);
    assert_eq!(r.json, json!({}));
    s.get(path).await.expect_error(404);
}

#[tokio::test]
async fn crud_mesh_policy_memory() {
    crud_mesh_policy(&start().await).await;
}

#[tokio::test]
async fn crud_mesh_policy_sqlite() {
    crud_mesh_policy(&start_with(Backend::Sqlite, ApiConfig::default()).await).await;
}

#[tokio::test]
async fn crud_dataplane_inline_layout() {
    let s = start().await;
    let path = "/meshes/default/dataplanes/web-1";
    s.put(
        path,
        &dataplane("default", "web-1", "web", &[("version", "v1")]),
    )
    .await
    .expect(201);
    let got = s.get(path).await.expect(200);
    assert_eq!(got.json["type"], "Dataplane");
    assert_eq!(got.json["mesh"], "default");
    assert!(
        got.json.get("spec").is_none(),
        "Dataplane fields sit at the top level"
    );
    assert_eq!(got.json["networking"]["address"], "10.0.0.1");
    assert_eq!(
        got.json["networking"]["inbound"][0]["tags"]["kuma.io/service"],
        "web"
    );
    let mut dp = dataplane("default", "web-1", "web", &[("version", "v2")]);
    dp["networking"]["address"] = json!("10.0.0.2");
    s.put(path, &dp).await.expect(200);
    let got = s.get(path).await.expect(200);
    assert_eq!(got.json["networking"]["address"], "10.0.0.2");
    assert_eq!(
        got.json["networking"]["inbound"][0]["tags"]["version"],
        "v2"
    );
    s.delete(path).await.expect(200);
    s.get(path).await.expect_error(404);
}

#[tokio::test]
async fn yaml_bodies_are_accepted() {
    let s = start().await;
    let yaml = b"type: MeshTimeout\nname: from-yaml\nmesh: default\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 20s\n";
    s.put_raw(
        "/meshes/default/meshtimeouts/from-yaml",
        "application/yaml",
        yaml,
    )
    .await
    .expect(201);
    // Without a content type, YAML is recognised too.
    s.put_raw("/meshes/default/meshtimeouts/from-yaml", "", yaml)
        .await
        .expect(200);
    let got = s
        .get("/meshes/default/meshtimeouts/from-yaml")
        .await
        .expect(200);
    assert_eq!(got.json["spec"]["to"][0]["default"]["idleTimeout"], "20s");
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn secrets_are_admin_only() {
    let s = start().await;
    let secret = json!({ "type": "Secret", "mesh": "default", "name": "s1", "data": "c2VjcmV0" });
    s.put("/meshes/default/secrets/s1", &secret)
        .await
        .expect(201);

    // Localhost admin.
    let r = s.get("/meshes/default/secrets/s1").await.expect(200);
    assert_eq!(r.json["data"], "c2VjcmV0");
    s.get("/meshes/default/secrets").await.expect(200);

    // Anonymous, not localhost (came through a proxy).
    s.get_remote("/meshes/default/secrets/s1", None)
        .await
        .expect_error(401);
    s.get_remote("/meshes/default/secrets", None)
        .await
        .expect_error(401);
    s.get_remote("/global-secrets", None)
        .await
        .expect_error(401);

    // A user token of a non-admin user.
    let alice = s.user_token("alice", &["team-a"]).await;
    s.get_remote("/meshes/default/secrets/s1", Some(&alice))
        .await
        .expect_error(403);
    s.get_remote("/global-secrets", Some(&alice))
        .await
        .expect_error(403);
    // ... who may read other kinds.
    s.get_remote("/meshes/default/meshtimeouts", Some(&alice))
        .await
        .expect(200);

    // An admin user token, from a non-localhost caller.
    let admin = s.user_token("bob", &["mesh-system:admin"]).await;
    let r = s
        .get_remote("/meshes/default/secrets/s1", Some(&admin))
        .await
        .expect(200);
    assert_eq!(r.json["data"], "c2VjcmV0");
}

#[tokio::test]
async fn user_token_authenticates_a_remote_caller() {
    let s = start().await;
    let token = s.user_token("john.doe@example.com", &["users"]).await;
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    // Writes need a credential when not trusted localhost.
    let bearer = format!("Bearer {token}");
    let body = serde_json::to_vec(&mesh_timeout("default", "t", "1s")).unwrap();
    s.request(
        Method::PUT,
        "/meshes/default/meshtimeouts/t",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("content-type", "application/json"),
        ],
        Some(body.clone()),
    )
    .await
    .expect_error(401);
    let r = s
        .request(
            Method::PUT,
            "/meshes/default/meshtimeouts/t",
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("content-type", "application/json"),
                ("authorization", &bearer),
            ],
            Some(body),
        )
        .await
        .expect(201);
    assert_eq!(r.json, json!({ "warnings": [] }));

    // A forged or garbled token is refused, even from localhost.
    let mut forged = token.clone();
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    s.request(
        Method::GET,
        "/meshes",
        &[("authorization", &format!("Bearer {forged}"))],
        None,
    )
    .await
    .expect_error(401);
    s.request(
        Method::GET,
        "/meshes",
        &[("authorization", "Basic Zm9vOmJhcg==")],
        None,
    )
    .await
    .expect_error(401);

    // Only admins may issue tokens.
    s.request(
        Method::POST,
        "/tokens/user",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        Some(br#"{"name":"x","validFor":"1h"}"#.to_vec()),
    )
    .await
    .expect_error(403);
}

#[test]
fn forwarded_requests_are_not_localhost() {
    use kuma_api_server::auth::is_trusted_localhost;
    use reqwest::header::{HeaderMap, HeaderValue};
    let peer = Some("127.0.0.1:40000".parse().unwrap());
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("127.0.0.1:5681"));
    assert!(is_trusted_localhost(peer, &h));
    h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
    assert!(!is_trusted_localhost(peer, &h));
}

#[tokio::test]
async fn forwarded_localhost_request_is_anonymous() {
    let s = start().await;
    // Same loopback peer and Host; only the forwarding header differs.
    s.request(
        Method::PUT,
        "/meshes/default/meshtimeouts/t",
        &[
            ("x-forwarded-for", "127.0.0.1"),
            ("content-type", "application/json"),
        ],
        Some(serde_json::to_vec(&mesh_timeout("default", "t", "1s")).unwrap()),
    )
    .await
    .expect_error(401);
    s.request(
        Method::GET,
        "/meshes/default/secrets",
        &[("forwarded", "for=127.0.0.1")],
        None,
    )
    .await
    .expect_error(401);
    s.request(
        Method::GET,
        "/meshes/default/secrets",
        &[("origin", "https://evil.example")],
        None,
    )
    .await
    .expect_error(401);
    s.request(
        Method::GET,
        "/meshes/default/secrets",
        &[("host", "kuma.example.com")],
        None,
    )
    .await
    .expect_error(401);
}

#[tokio::test]
async fn dataplane_and_zone_tokens() {
    let s = start().await;
    let r = s
        .post(
            "/tokens/dataplane",
            &json!({ "name": "web-1", "mesh": "default", "tags": { "kuma.io/service": ["web"] }, "validFor": "24h" }),
        )
        .await
        .expect(200);
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain"));
    let claims = s
        .state
        .tokens
        .verify_dataplane_token(&r.text, "default")
        .await
        .expect("the issued dataplane token verifies");
    assert_eq!(claims.identity.name.as_deref(), Some("web-1"));

    // Kuma's own kumactl always sends `workload` (empty or not).
    let r = s
        .post(
            "/tokens/dataplane",
            &json!({ "name": "", "mesh": "default", "tags": {}, "type": "", "validFor": "", "workload": "web" }),
        )
        .await
        .expect(200);
    let claims = s
        .state
        .tokens
        .verify_dataplane_token(&r.text, "default")
        .await
        .expect("the issued dataplane token verifies");
    assert_eq!(claims.identity.workload.as_deref(), Some("web"));

    let r = s
        .post(
            "/tokens/zone",
            &json!({ "zone": "east", "scope": ["cp"], "validFor": "1h" }),
        )
        .await
        .expect(200);
    let claims = s
        .state
        .tokens
        .verify_zone_token(&r.text)
        .await
        .expect("the issued zone token verifies");
    assert_eq!(claims.identity.zone, "east");

    // Bad requests name the field.
    let f = s
        .post("/tokens/dataplane", &json!({ "mesh": "nope" }))
        .await
        .expect_error(400);
    assert_eq!(f, ["mesh"]);
    let f = s
        .post(
            "/tokens/zone",
            &json!({ "zone": "east", "scope": ["root"] }),
        )
        .await
        .expect_error(400);
    assert_eq!(f, ["scope[0]"]);
    let f = s
        .post(
            "/tokens/zone",
            &json!({ "zone": "east", "validFor": "forever" }),
        )
        .await
        .expect_error(400);
    assert_eq!(f, ["validFor"]);
    let f = s
        .post("/tokens/user", &json!({ "name": "x" }))
        .await
        .expect_error(400);
    assert_eq!(f.len(), 1, "missing validFor is named");
    let f = s
        .post("/tokens/zone", &json!({ "zone": 7 }))
        .await
        .expect_error(400);
    assert_eq!(f, ["zone"]);

    // Anonymous remote callers cannot issue tokens.
    s.request(
        Method::POST,
        "/tokens/zone",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("content-type", "application/json"),
        ],
        Some(br#"{"zone":"east"}"#.to_vec()),
    )
    .await
    .expect_error(401);
}

// ---------------------------------------------------------------- 400

#[tokio::test]
async fn invalid_bodies_list_every_violation() {
    let s = start().await;
    let path = "/meshes/default/meshtimeouts/t1";

    // Malformed JSON.
    s.put_raw(path, "application/json", b"{\"type\": \"MeshTimeout\",")
        .await
        .expect_error(400);
    // Neither JSON nor YAML.
    s.put_raw(path, "", b"{ : : [").await.expect_error(400);
    // Declared YAML that is not.
    s.put_raw(
        path,
        "application/yaml",
        b"type: MeshTimeout\n  name: [x\n\t- :",
    )
    .await
    .expect_error(400);

    // Wrong JSON type deep inside the spec.
    let mut body = mesh_timeout("default", "t1", "5s");
    body["spec"]["to"][0]["default"]["connectionTimeout"] = json!(5);
    let f = s.put(path, &body).await.expect_error(400);
    assert_eq!(f, ["spec.to[0].default.connectionTimeout"]);

    // Name from the URL differs from the body.
    let f = s
        .put(path, &mesh_timeout("default", "other", "5s"))
        .await
        .expect_error(400);
    assert_eq!(f, ["name"]);

    // Mesh from the URL differs from the body.
    let f = s
        .put(path, &mesh_timeout("other", "t1", "5s"))
        .await
        .expect_error(400);
    assert_eq!(f, ["mesh"]);

    // Invalid name.
    let f = s
        .put(
            "/meshes/default/meshtimeouts/Bad_Name",
            &mesh_timeout("default", "Bad_Name", "5s"),
        )
        .await
        .expect_error(400);
    assert_eq!(f, ["name"]);

    // Several problems at once: all of them are listed.
    let mut body = mesh_timeout("other", "t1", "soon");
    body["labels"] = json!({ "bad key!": "v" });
    body["spec"]["targetRef"]["kind"] = json!("Nonsense");
    let r = s.put(path, &body).await.expect(400);
    crate::common::assert_kuma_error(&r.json, 400);
    let f = r.invalid_fields();
    assert_eq!(r.json["title"], "Could not process a resource");
    for expected in ["mesh", "labels[\"bad key!\"]", "spec.targetRef.kind"] {
        assert!(f.iter().any(|x| x == expected), "{expected} not in {f:?}");
    }

    // Wrong type for the whole resource.
    let mut body = mesh_timeout("default", "t1", "5s");
    body["type"] = json!("MeshRetry");
    let f = s.put(path, &body).await.expect_error(400);
    assert_eq!(f, ["type"]);

    // Nothing was stored by any of this.
    s.get(path).await.expect_error(404);
}

#[tokio::test]
async fn invalid_fixtures_are_rejected_at_their_fields() {
    let s = start().await;
    let mut failures = Vec::new();
    let files = fixture_files("invalid");
    assert!(!files.is_empty());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let Ok(doc) = serde_yaml::from_str::<Value>(&text) else {
            continue;
        };
        let mut expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|l| l.trim().to_string())
            .collect();
        expected.sort();
        let Some(url) = url_of(&doc) else {
            // The envelope itself is broken (an invalid name, say): the URL
            // cannot name it, so it is covered by the name tests.
            continue;
        };
        let r = s.put_raw(&url, "application/yaml", text.as_bytes()).await;
        if r.status != 400 {
            failures.push(format!("{file}: {} {}", r.status, r.text));
            continue;
        }
        crate::common::assert_kuma_error(&r.json, 400);
        let mut got = r.invalid_fields();
        got.sort();
        if got != expected {
            failures.push(format!("{file}: fields {got:?}, expected {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------- 404, 405

#[tokio::test]
async fn not_found() {
    let s = start().await;
    s.put(
        "/meshes/default/meshtimeouts/t1",
        &mesh_timeout("default", "t1", "5s"),
    )
    .await
    .expect(201);
    // Unknown kind.
    s.get("/meshes/default/meshfoos").await.expect_error(404);
    s.get("/meshes/default/meshfoos/x").await.expect_error(404);
    s.get("/foos").await.expect_error(404);
    // Unknown mesh.
    let r = s.get("/meshes/nope/meshtimeouts").await;
    r.expect_error(404);
    s.get("/meshes/nope/meshtimeouts/t1")
        .await
        .expect_error(404);
    // Writing into a mesh that does not exist is a bad request naming the
    // mesh, as in Kuma.
    let f = s
        .put(
            "/meshes/nope/meshtimeouts/t1",
            &mesh_timeout("nope", "t1", "5s"),
        )
        .await
        .expect_error(400);
    assert_eq!(f, ["mesh"]);
    // Unknown name.
    let r = s.get("/meshes/default/meshtimeouts/nope").await;
    r.expect_error(404);
    s.get("/meshes/nope").await.expect_error(404);
    s.delete("/meshes/default/meshtimeouts/nope")
        .await
        .expect_error(404);
    // A name no resource could have is simply not there.
    s.get("/meshes/default/meshtimeouts/UPPER")
        .await
        .expect_error(404);
}

#[tokio::test]
async fn read_only_kinds_refuse_writes() {
    let s = start().await;
    let body =
        json!({ "type": "DataplaneInsight", "mesh": "default", "name": "x", "subscriptions": [] });
    let r = s.put("/meshes/default/dataplane-insights/x", &body).await;
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    r.expect_error(405);
    s.delete("/meshes/default/dataplane-insights/x")
        .await
        .expect_error(405);
    s.put(
        "/zone-insights/x",
        &json!({ "type": "ZoneInsight", "name": "x" }),
    )
    .await
    .expect_error(405);
    // Methods a path never serves.
    s.request(Method::POST, "/meshes/default/meshtimeouts", &[], None)
        .await
        .expect_error(405);
    // Reading still works.
    let r = s
        .get("/meshes/default/dataplane-insights")
        .await
        .expect(200);
    assert_eq!(r.json["total"], 0);
}

// ---------------------------------------------------------------- 409, ETag

async fn stale_writes_conflict(s: &Server) {
    let path = "/meshes/default/meshtimeouts/t1";
    let created = s
        .put(path, &mesh_timeout("default", "t1", "1s"))
        .await
        .expect(201);
    let v1 = created.header("etag").expect("ETag on create");

    let got = s.get(path).await.expect(200);
    assert_eq!(got.header("etag").as_deref(), Some(v1.as_str()));

    // Writer A updates with the version it read.
    let a = s
        .put_with(
            path,
            &[("if-match", &v1), ("content-type", "application/json")],
            &mesh_timeout("default", "t1", "2s"),
        )
        .await
        .expect(200);
    let v2 = a.header("etag").expect("ETag on update");
    assert_ne!(v1, v2);

    // Writer B still holds v1: refused, and A's write is intact.
    s.put_with(
        path,
        &[("if-match", &v1), ("content-type", "application/json")],
        &mesh_timeout("default", "t1", "3s"),
    )
    .await
    .expect_error(409);
    let got = s.get(path).await.expect(200);
    assert_eq!(
        got.json["spec"]["to"][0]["default"]["connectionTimeout"],
        "2s"
    );
    assert_eq!(got.header("etag"), Some(v2.clone()));

    // A stale delete is refused too; the current version deletes.
    s.request(Method::DELETE, path, &[("if-match", &v1)], None)
        .await
        .expect_error(409);
    s.get(path).await.expect(200);
    // If-Match on something that does not exist.
    s.put_with(
        "/meshes/default/meshtimeouts/new",
        &[("if-match", "\"1\""), ("content-type", "application/json")],
        &mesh_timeout("default", "new", "3s"),
    )
    .await
    .expect_error(409);
    s.get("/meshes/default/meshtimeouts/new")
        .await
        .expect_error(404);
    // A garbled If-Match names the header.
    let f = s
        .put_with(
            path,
            &[
                ("if-match", "yesterday"),
                ("content-type", "application/json"),
            ],
            &mesh_timeout("default", "t1", "3s"),
        )
        .await
        .expect_error(400);
    assert_eq!(f, ["If-Match"]);
    s.request(Method::DELETE, path, &[("if-match", &v2)], None)
        .await
        .expect(200);
    s.get(path).await.expect_error(404);
}

#[tokio::test]
async fn stale_writes_conflict_memory() {
    stale_writes_conflict(&start().await).await;
}

#[tokio::test]
async fn stale_writes_conflict_sqlite() {
    stale_writes_conflict(&start_with(Backend::Sqlite, ApiConfig::default()).await).await;
}

// ---------------------------------------------------------------- 413

#[tokio::test]
async fn oversized_bodies_get_413() {
    let s = start_with(
        Backend::Memory,
        ApiConfig {
            max_body_bytes: 512,
            ..ApiConfig::default()
        },
    )
    .await;
    let mut body = mesh_timeout("default", "big", "1s");
    body["labels"] = json!({ "filler": "x".repeat(40) });
    for i in 0..40 {
        body["labels"][format!("k{i}")] = json!("v".repeat(20));
    }
    let r = s.put("/meshes/default/meshtimeouts/big", &body).await;
    let r = r.expect(413);
    crate::common::assert_kuma_error(&r.json, 413);
    assert!(
        r.json["detail"].as_str().unwrap().contains("512"),
        "{}",
        r.text
    );
    s.get("/meshes/default/meshtimeouts/big")
        .await
        .expect_error(404);
    // Token issuers have the same limit.
    let big = json!({ "zone": "z".repeat(1024) });
    s.post("/tokens/zone", &big).await.expect_error(413);
    // A small body still works.
    s.put(
        "/meshes/default/meshtimeouts/small",
        &mesh_timeout("default", "small", "1s"),
    )
    .await
    .expect(201);
}

// ---------------------------------------------------------------- lists

async fn paging(s: &Server) {
    for i in 0..5 {
        let name = format!("t{i}");
        s.put(
            &format!("/meshes/default/meshtimeouts/{name}"),
            &mesh_timeout("default", &name, "1s"),
        )
        .await
        .expect(201);
    }
    let r = s
        .get("/meshes/default/meshtimeouts?size=2")
        .await
        .expect(200);
    assert_eq!(r.json["total"], 5);
    assert_eq!(names(&r.json), ["t0", "t1"]);
    let next = r.json["next"].as_str().expect("next page URL").to_string();
    assert!(next.contains("offset=2"), "{next}");
    assert!(next.contains("size=2"), "{next}");
    let next_path = next
        .split_once("/meshes/")
        .map(|(_, p)| format!("/meshes/{p}"))
        .unwrap();
    let r = s.get(&next_path).await.expect(200);
    assert_eq!(names(&r.json), ["t2", "t3"]);
    let r = s
        .get("/meshes/default/meshtimeouts?size=2&offset=4")
        .await
        .expect(200);
    assert_eq!(names(&r.json), ["t4"]);
    assert_eq!(r.json["next"], Value::Null);
    assert_eq!(r.json["total"], 5);
    let r = s
        .get("/meshes/default/meshtimeouts?offset=10")
        .await
        .expect(200);
    assert_eq!(r.json["items"], json!([]));
    assert_eq!(r.json["total"], 5);
    let r = s.get("/meshes/default/meshtimeouts").await.expect(200);
    assert_eq!(r.json["items"].as_array().unwrap().len(), 5);
    assert_eq!(r.json["next"], Value::Null);

    for bad in ["size=0", "size=1001", "size=-1", "size=abc"] {
        let f = s
            .get(&format!("/meshes/default/meshtimeouts?{bad}"))
            .await
            .expect_error(400);
        assert_eq!(f, ["size"], "{bad}");
    }
    let f = s
        .get("/meshes/default/meshtimeouts?offset=-3")
        .await
        .expect_error(400);
    assert_eq!(f, ["offset"]);
    s.get("/meshes/default/meshtimeouts?size=1000")
        .await
        .expect(200);
}

#[tokio::test]
async fn paging_memory() {
    paging(&start().await).await;
}

#[tokio::test]
async fn paging_sqlite() {
    paging(&start_with(Backend::Sqlite, ApiConfig::default()).await).await;
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

async fn filters(s: &Server) {
    for (name, team) in [("alpha-web", "a"), ("beta-web", "b"), ("gamma-db", "a")] {
        let mut body = mesh_timeout("default", name, "1s");
        body["labels"] = json!({ "team": team });
        s.put(&format!("/meshes/default/meshtimeouts/{name}"), &body)
            .await
            .expect(201);
    }
    let r = s
        .get("/meshes/default/meshtimeouts?name=web")
        .await
        .expect(200);
    assert_eq!(names(&r.json), ["alpha-web", "beta-web"]);
    assert_eq!(r.json["total"], 2);
    let r = s
        .get("/meshes/default/meshtimeouts?filter%5Blabels.team%5D=a")
        .await
        .expect(200);
    assert_eq!(names(&r.json), ["alpha-web", "gamma-db"]);
    let r = s
        .get("/meshes/default/meshtimeouts?filter[labels.team]=a&name=web")
        .await
        .expect(200);
    assert_eq!(names(&r.json), ["alpha-web"]);
    let r = s
        .get("/meshes/default/meshtimeouts?filter[labels.team]=z")
        .await
        .expect(200);
    assert_eq!(r.json["total"], 0);

    for (name, svc, version) in [
        ("web-1", "web", "v1"),
        ("web-2", "web", "v2"),
        ("db-1", "db", "v1"),
    ] {
        s.put(
            &format!("/meshes/default/dataplanes/{name}"),
            &dataplane("default", name, svc, &[("version", version)]),
        )
        .await
        .expect(201);
    }
    let r = s
        .get("/meshes/default/dataplanes?tag=kuma.io/service:web")
        .await
        .expect(200);
    assert_eq!(names(&r.json), ["web-1", "web-2"]);
    let r = s
        .get("/meshes/default/dataplanes?tag=kuma.io/service:web&tag=version:v2")
        .await
        .expect(200);
    assert_eq!(names(&r.json), ["web-2"]);
    let f = s
        .get("/meshes/default/dataplanes?tag=nocolon")
        .await
        .expect_error(400);
    assert_eq!(f, ["tag"]);
}

#[tokio::test]
async fn filters_memory() {
    filters(&start().await).await;
}

#[tokio::test]
async fn filters_sqlite() {
    filters(&start_with(Backend::Sqlite, ApiConfig::default()).await).await;
}

#[tokio::test]
async fn cross_mesh_list() {
    let s = start().await;
    s.put("/meshes/other", &json!({ "type": "Mesh", "name": "other" }))
        .await
        .expect(201);
    s.put(
        "/meshes/default/meshtimeouts/a",
        &mesh_timeout("default", "a", "1s"),
    )
    .await
    .expect(201);
    s.put(
        "/meshes/other/meshtimeouts/b",
        &mesh_timeout("other", "b", "1s"),
    )
    .await
    .expect(201);
    let r = s.get("/meshtimeouts").await.expect(200);
    assert_eq!(r.json["total"], 2);
    let meshes: Vec<_> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["mesh"].as_str().unwrap(), i["name"].as_str().unwrap()))
        .collect();
    assert!(meshes.contains(&("default", "a")), "{meshes:?}");
    assert!(meshes.contains(&("other", "b")), "{meshes:?}");
    let r = s.get("/meshes/other/meshtimeouts").await.expect(200);
    assert_eq!(names(&r.json), ["b"]);
    let r = s.get("/meshtimeouts?size=1").await.expect(200);
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    assert!(r.json["next"].is_string());
}

#[tokio::test]
async fn deleting_a_mesh() {
    let s = start().await;
    s.put(
        "/meshes/doomed",
        &json!({ "type": "Mesh", "name": "doomed" }),
    )
    .await
    .expect(201);
    s.put(
        "/meshes/doomed/meshtimeouts/t",
        &mesh_timeout("doomed", "t", "1s"),
    )
    .await
    .expect(201);
    s.put(
        "/meshes/doomed/dataplanes/dp",
        &dataplane("doomed", "dp", "web", &[]),
    )
    .await
    .expect(201);

    // Refused while dataplanes are attached; nothing deleted.
    let f = s.delete("/meshes/doomed").await.expect_error(400);
    assert_eq!(f, ["mesh"]);
    s.get("/meshes/doomed/meshtimeouts/t").await.expect(200);

    s.delete("/meshes/doomed/dataplanes/dp").await.expect(200);
    s.delete("/meshes/doomed").await.expect(200);
    s.get("/meshes/doomed").await.expect_error(404);
    // Its policies went with it.
    let r = s.get("/meshtimeouts").await.expect(200);
    assert_eq!(r.json["total"], 0, "{}", r.text);
    // Recreating the mesh does not bring them back.
    s.put(
        "/meshes/doomed",
        &json!({ "type": "Mesh", "name": "doomed" }),
    )
    .await
    .expect(201);
    s.get("/meshes/doomed/meshtimeouts/t")
        .await
        .expect_error(404);
}

// ---------------------------------------------------------------- insights

fn online_insight(kuma_dp: &str) -> Value {
    json!({ "subscriptions": [{
        "id": "1", "controlPlaneInstanceId": "cp-1",
        "connectTime": "2024-01-01T00:00:00Z",
        "status": { "lastUpdateTime": "2024-01-01T00:00:01Z", "total": {} },
        "version": { "kumaDp": { "version": kuma_dp }, "envoy": { "version": "1.30.1" } }
    }] })
}

#[tokio::test]
async fn insights_from_real_dataplanes() {
    let s = start().await;
    for (name, svc) in [("web-1", "web"), ("web-2", "web"), ("db-1", "db")] {
        s.put(
            &format!("/meshes/default/dataplanes/{name}"),
            &dataplane("default", name, svc, &[]),
        )
        .await
        .expect(201);
    }
    s.put(
        "/meshes/default/meshtimeouts/t",
        &mesh_timeout("default", "t", "1s"),
    )
    .await
    .expect(201);
    // web-1 is connected; the others never connected.
    s.store_create(
        ResourceKind::DataplaneInsight,
        Some("default"),
        "web-1",
        online_insight("2.9.0"),
    )
    .await;

    let mi = s.get("/mesh-insights/default").await.expect(200);
    assert_eq!(mi.json["type"], "MeshInsight");
    assert_eq!(mi.json["name"], "default");
    assert_eq!(
        mi.json["dataplanes"],
        json!({ "total": 3, "online": 1, "offline": 2, "partiallyDegraded": 0 })
    );
    assert_eq!(mi.json["dataplanesByType"]["standard"]["total"], 3);
    assert_eq!(mi.json["policies"]["MeshTimeout"]["total"], 1);
    assert_eq!(mi.json["services"]["internal"], 2);
    assert_eq!(
        mi.json["dpVersions"]["kumaDp"]["2.9.0"],
        json!({ "total": 1, "online": 1 })
    );
    s.get("/mesh-insights/nope").await.expect_error(404);
    let list = s.get("/mesh-insights").await.expect(200);
    assert_eq!(list.json["total"], 1);
    assert_eq!(list.json["items"][0]["name"], "default");

    let si = s.get("/meshes/default/service-insights").await.expect(200);
    assert_eq!(si.json["total"], 2);
    let web = si.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "web")
        .expect("web service");
    assert_eq!(web["status"], "partially_degraded");
    assert_eq!(web["dataplanes"]["online"], 1);
    assert_eq!(web["dataplanes"]["total"], 2);
    let db = s
        .get("/meshes/default/service-insights/db")
        .await
        .expect(200);
    assert_eq!(db.json["status"], "offline");
    s.get("/meshes/default/service-insights/nope")
        .await
        .expect_error(404);
    s.get("/meshes/nope/service-insights")
        .await
        .expect_error(404);

    let ov = s
        .get("/meshes/default/dataplanes/_overview")
        .await
        .expect(200);
    assert_eq!(ov.json["total"], 3);
    let web1 = ov.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "web-1")
        .unwrap();
    assert_eq!(web1["type"], "DataplaneOverview");
    assert_eq!(web1["dataplane"]["networking"]["address"], "10.0.0.1");
    assert_eq!(
        web1["dataplaneInsight"]["subscriptions"][0]["controlPlaneInstanceId"],
        "cp-1"
    );
    let ov = s
        .get("/meshes/default/dataplanes/_overview?tag=kuma.io/service:db")
        .await
        .expect(200);
    assert_eq!(names(&ov.json), ["db-1"]);
    let one = s
        .get("/meshes/default/dataplanes/db-1/_overview")
        .await
        .expect(200);
    assert_eq!(one.json["dataplaneInsight"]["subscriptions"], json!([]));

    let gi = s.get("/global-insight").await.expect(200);
    assert_eq!(gi.json["type"], "GlobalInsight");
    assert_eq!(gi.json["meshes"]["total"], 1);
    assert_eq!(gi.json["policies"]["total"], 1);
    assert_eq!(gi.json["dataplanes"]["standard"]["total"], 3);
    assert_eq!(gi.json["dataplanes"]["standard"]["online"], 1);
    assert_eq!(gi.json["services"]["internal"]["total"], 2);
    assert_eq!(gi.json["resources"]["Dataplane"]["total"], 3);
}

// ---------------------------------------------------------------- CORS

#[tokio::test]
async fn no_cors_unless_configured() {
    let s = start().await;
    let r = s
        .request(
            Method::GET,
            "/meshes",
            &[("origin", "https://gui.example")],
            None,
        )
        .await
        .expect(200);
    assert_eq!(r.header("access-control-allow-origin"), None);

    let s = start_with(
        Backend::Memory,
        ApiConfig {
            cors_allowed_origins: vec!["https://gui.example".into()],
            ..ApiConfig::default()
        },
    )
    .await;
    let r = s
        .request(
            Method::GET,
            "/meshes",
            &[("origin", "https://gui.example")],
            None,
        )
        .await
        .expect(200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://gui.example")
    );
    let r = s
        .request(
            Method::GET,
            "/meshes",
            &[("origin", "https://evil.example")],
            None,
        )
        .await
        .expect(200);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // The browser's preflight for a PUT with JSON and a token succeeds.
    let r = s
        .request(
            Method::OPTIONS,
            "/meshes/default/meshtimeouts/t",
            &[
                ("origin", "https://gui.example"),
                ("access-control-request-method", "PUT"),
                (
                    "access-control-request-headers",
                    "authorization, content-type",
                ),
            ],
            None,
        )
        .await
        .expect(204);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://gui.example")
    );
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("PUT")
    );
    assert_eq!(
        r.header("access-control-allow-headers").as_deref(),
        Some("authorization, content-type")
    );
    // Not for other origins; and errors carry the header too, so the page can read them.
    let r = s
        .request(
            Method::OPTIONS,
            "/meshes",
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "PUT"),
            ],
            None,
        )
        .await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = s
        .request(
            Method::GET,
            "/meshes/nope",
            &[("origin", "https://gui.example")],
            None,
        )
        .await;
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://gui.example")
    );
    r.expect_error(404);
}

// ---------------------------------------------------------------- hostile input

#[tokio::test]
async fn hostile_inputs_get_4xx_never_5xx() {
    let s = start().await;
    let mt = "/meshes/default/meshtimeouts/h";
    let dp = "/meshes/default/dataplanes/h";
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_obj = format!(
        "{{\"type\":\"MeshTimeout\",\"name\":\"h\",\"mesh\":\"default\",\"spec\":{}1{}}}",
        "{\"a\":".repeat(5000),
        "}".repeat(5000)
    );
    let deep_yaml = format!("{}x", "- ".repeat(50_000));
    let deep_yaml_flow = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let yaml_bomb = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    let cases: Vec<(&str, &str, &str, Vec<u8>)> = vec![
        ("empty body", mt, "application/json", vec![]),
        ("whitespace body", mt, "", b"  \n ".to_vec()),
        ("null", mt, "application/json", b"null".to_vec()),
        ("array", mt, "application/json", b"[1,2]".to_vec()),
        ("string", mt, "application/json", b"\"x\"".to_vec()),
        ("number", mt, "application/json", b"1e400".to_vec()),
        ("invalid utf-8", mt, "application/json", vec![0xff, 0xfe, 0x7b, 0x80]),
        ("invalid utf-8 yaml", mt, "application/yaml", vec![b'a', b':', b' ', 0xff]),
        ("invalid utf-8 in a string", mt, "application/json",
         b"{\"type\":\"MeshTimeout\",\"name\":\"h\xff\",\"mesh\":\"default\"}".to_vec()),
        ("deep array", mt, "application/json", deep_json.clone().into_bytes()),
        ("deep array, no type", mt, "", deep_json.into_bytes()),
        ("deep object", mt, "application/json", deep_obj.into_bytes()),
        ("deep yaml", mt, "application/yaml", deep_yaml.into_bytes()),
        ("deep yaml flow", mt, "application/yaml", deep_yaml_flow.into_bytes()),
        ("yaml bomb", mt, "application/yaml", yaml_bomb.as_bytes().to_vec()),
        ("yaml non-string keys", mt, "application/yaml", b"{[1,2]: 3}".to_vec()),
        ("yaml tags", mt, "application/yaml", b"!!binary aGVsbG8=".to_vec()),
        ("null spec", mt, "application/json",
         br#"{"type":"MeshTimeout","name":"h","mesh":"default","spec":null}"#.to_vec()),
        ("spec array", mt, "application/json",
         br#"{"type":"MeshTimeout","name":"h","mesh":"default","spec":[]}"#.to_vec()),
        ("type number", mt, "application/json",
         br#"{"type":1,"name":"h","mesh":"default","spec":{}}"#.to_vec()),
        ("name object", mt, "application/json",
         br#"{"type":"MeshTimeout","name":{},"mesh":"default","spec":{}}"#.to_vec()),
        ("labels array", mt, "application/json",
         br#"{"type":"MeshTimeout","name":"h","mesh":"default","labels":[1],"spec":{}}"#.to_vec()),
        ("labels numbers", mt, "application/json",
         br#"{"type":"MeshTimeout","name":"h","mesh":"default","labels":{"a":1},"spec":{}}"#.to_vec()),
        ("targetRef string", mt, "application/json",
         br#"{"type":"MeshTimeout","name":"h","mesh":"default","spec":{"targetRef":"Mesh"}}"#.to_vec()),
        ("to object", mt, "application/json",
         br#"{"type":"MeshTimeout","name":"h","mesh":"default","spec":{"targetRef":{"kind":"Mesh"},"to":{}}}"#.to_vec()),
        ("huge duration", mt, "application/json",
         br#"{"type":"MeshTimeout","name":"h","mesh":"default","spec":{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"idleTimeout":"99999999999999999999999h"}}]}}"#.to_vec()),
        ("negative duration", mt, "application/json",
         br#"{"type":"MeshTimeout","name":"h","mesh":"default","spec":{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"idleTimeout":"-5s"}}]}}"#.to_vec()),
        ("huge port", dp, "application/json",
         br#"{"type":"Dataplane","name":"h","mesh":"default","networking":{"address":"1.1.1.1","inbound":[{"port":99999999999999999999999}]}}"#.to_vec()),
        ("float port", dp, "application/json",
         br#"{"type":"Dataplane","name":"h","mesh":"default","networking":{"address":"1.1.1.1","inbound":[{"port":80.5}]}}"#.to_vec()),
        ("negative port", dp, "application/json",
         br#"{"type":"Dataplane","name":"h","mesh":"default","networking":{"address":"1.1.1.1","inbound":[{"port":-1}]}}"#.to_vec()),
        ("networking null", dp, "application/json",
         br#"{"type":"Dataplane","name":"h","mesh":"default","networking":null}"#.to_vec()),
        ("networking string", dp, "application/json",
         br#"{"type":"Dataplane","name":"h","mesh":"default","networking":"x"}"#.to_vec()),
        ("inbound of nulls", dp, "application/json",
         br#"{"type":"Dataplane","name":"h","mesh":"default","networking":{"address":"1.1.1.1","inbound":[null,null]}}"#.to_vec()),
        ("address number", dp, "application/json",
         br#"{"type":"Dataplane","name":"h","mesh":"default","networking":{"address":1,"inbound":[]}}"#.to_vec()),
        ("mesh body wrong types", "/meshes/h", "application/json",
         br#"{"type":"Mesh","name":"h","mtls":7,"skipCreatingInitialPolicies":{"a":1}}"#.to_vec()),
        ("secret data number", "/meshes/default/secrets/h", "application/json",
         br#"{"type":"Secret","name":"h","mesh":"default","data":5}"#.to_vec()),
        ("zone enabled string", "/zones/h", "application/json",
         br#"{"type":"Zone","name":"h","enabled":"yes"}"#.to_vec()),
        ("long name", "/meshes/default/meshtimeouts/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         "application/json",
         br#"{"type":"MeshTimeout","name":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","mesh":"default","spec":{"targetRef":{"kind":"Mesh"}}}"#.to_vec()),
        ("token body null", "/tokens/dataplane", "application/json", b"null".to_vec()),
        ("token body empty", "/tokens/zone", "application/json", vec![]),
        ("token body wrong types", "/tokens/user", "application/json",
         br#"{"name":["x"],"groups":"g","validFor":1}"#.to_vec()),
        ("token validFor huge", "/tokens/user", "application/json",
         br#"{"name":"x","validFor":"9999999999999999999h"}"#.to_vec()),
        ("token validFor negative", "/tokens/zone", "application/json",
         br#"{"zone":"x","validFor":"-1h"}"#.to_vec()),
        ("token tags wrong", "/tokens/dataplane", "application/json",
         br#"{"mesh":"default","tags":{"a":"b"}}"#.to_vec()),
    ];
    let mut failures = Vec::new();
    for (what, path, ct, body) in cases {
        let method = if path.starts_with("/tokens") {
            Method::POST
        } else {
            Method::PUT
        };
        let headers: Vec<(&str, &str)> = if ct.is_empty() {
            vec![]
        } else {
            vec![("content-type", ct)]
        };
        let r = s.request(method, path, &headers, Some(body)).await;
        if !(400..500).contains(&r.status) {
            failures.push(format!("{what}: {} {}", r.status, r.text));
            continue;
        }
        if r.json["status"] != r.status || r.json["type"] != "/std-errors" {
            failures.push(format!("{what}: not in Kuma's error format: {}", r.text));
        }
    }
    // Hostile URLs and query strings.
    let long_name = format!("/meshes/default/meshtimeouts/{}", "a".repeat(10_000));
    let urls = [
        "/meshes/default/meshtimeouts?size=99999999999999999999999999",
        "/meshes/default/meshtimeouts?offset=99999999999999999999999999",
        "/meshes/default/meshtimeouts?offset=18446744073709551615",
        "/meshes/default/meshtimeouts?size=1000&offset=18446744073709551615",
        "/meshes/default/meshtimeouts?size=%FF",
        "/meshes/default/meshtimeouts?name=%FF%FE",
        "/meshes/default/meshtimeouts?filter[labels.%FF]=%00",
        "/meshes/default/dataplanes?tag=%FF:%FE",
        "/meshes/%FF/meshtimeouts",
        "/meshes/default/meshtimeouts/%FF%FE",
        "/meshes/%00/meshtimeouts/x",
        long_name.as_str(),
        "/mesh-insights/%FF",
        "/mesh-insights?size=0",
        "/meshes/default/service-insights?offset=18446744073709551615",
        "/meshes/default/dataplanes/_overview?offset=18446744073709551615",
        "/zones/_overview?size=5000",
    ];
    for url in urls {
        let r = s.get(url).await;
        if r.status >= 500 {
            failures.push(format!("GET {url}: {} {}", r.status, r.text));
        }
    }
    // Hostile headers.
    for (name, value) in [
        ("if-match", "\"99999999999999999999999\""),
        ("if-match", "W/\"-1\""),
        ("authorization", "Bearer "),
        ("authorization", "Bearer a.b.c"),
        ("authorization", "Bearer eyJhbGciOiJub25lIn0.e30."),
        ("content-type", "application/json; charset=utf-16"),
    ] {
        let r = s
            .request(
                Method::PUT,
                mt,
                &[(name, value)],
                Some(serde_json::to_vec(&mesh_timeout("default", "h", "1s")).unwrap()),
            )
            .await;
        if r.status >= 500 {
            failures.push(format!("header {name}: {value}: {} {}", r.status, r.text));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // And the server is still serving.
    s.get("/").await.expect(200);
}

// ---------------------------------------------------------------- fixtures

fn fixture_files(dir: &str) -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../model/tests/fixtures")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The REST path of the resource a document describes.
fn url_of(doc: &Value) -> Option<String> {
    let kind = ResourceKind::from_name(doc["type"].as_str()?)?;
    let name = doc["name"].as_str()?;
    if kuma_model::ResourceName::new(name).is_err() {
        return None;
    }
    Some(match kind.scope() {
        kuma_model::Scope::Global => format!("/{}/{name}", kind.plural()),
        kuma_model::Scope::Mesh => {
            let mesh = doc["mesh"].as_str()?;
            kuma_model::MeshName::new(mesh).ok()?;
            format!("/meshes/{mesh}/{}/{name}", kind.plural())
        }
    })
}

/// The content of a resource document: `spec` for nested kinds, the
/// non-envelope fields for inline kinds.
fn content_of(kind: ResourceKind, doc: &Value) -> Value {
    match kind.descriptor().layout {
        kuma_model::SpecLayout::Nested => doc.get("spec").cloned().unwrap_or(json!({})),
        kuma_model::SpecLayout::Inline => {
            let mut obj = doc.as_object().cloned().unwrap_or_default();
            for f in [
                "type",
                "mesh",
                "name",
                "labels",
                "creationTime",
                "modificationTime",
                "kri",
            ] {
                obj.remove(f);
            }
            Value::Object(obj)
        }
    }
}

/// Whether everything in `want` is in `got` (objects may have more keys in `got`).
fn contains(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w.iter().all(|(k, wv)| {
            g.get(k).is_some_and(|gv| contains(gv, wv)) || (wv.is_null() && g.get(k).is_none())
        }),
        (Value::Array(g), Value::Array(w)) => {
            g.len() == w.len() && g.iter().zip(w).all(|(a, b)| contains(a, b))
        }
        (Value::Number(g), Value::Number(w)) => g.as_f64() == w.as_f64(),
        _ => got == want,
    }
}

/// Every valid fixture (Kuma-documentation-style examples of each kind,
/// including all 16 policies) goes in with PUT, comes back with GET with the
/// same content, and the fetched body can be PUT back unchanged.
#[tokio::test]
async fn valid_fixtures_round_trip_through_put_and_get() {
    let s = start().await;
    let mut failures = Vec::new();
    let mut policies_seen = std::collections::BTreeSet::new();
    for path in fixture_files("valid") {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        let kind = ResourceKind::from_name(doc["type"].as_str().unwrap()).unwrap();
        let url = url_of(&doc).unwrap_or_else(|| panic!("{file}: no URL"));
        if kind.is_policy() {
            policies_seen.insert(kind.name());
        }
        // As YAML, the way `kumactl apply -f` users write them.
        let r = s.put_raw(&url, "application/yaml", text.as_bytes()).await;
        if r.status != 201 && r.status != 200 {
            failures.push(format!("{file}: PUT {url}: {} {}", r.status, r.text));
            continue;
        }
        let got = s.get(&url).await;
        if got.status != 200 {
            failures.push(format!("{file}: GET {url}: {} {}", got.status, got.text));
            continue;
        }
        assert_eq!(got.json["type"], doc["type"], "{file}");
        assert_eq!(got.json["name"], doc["name"], "{file}");
        let want = content_of(kind, &doc);
        let have = content_of(kind, &got.json);
        if !contains(&have, &want) {
            failures.push(format!(
                "{file}: content changed:\n  sent {want}\n  got  {have}"
            ));
            continue;
        }
        if let Some(labels) = doc["labels"].as_object() {
            for (k, v) in labels {
                if k.starts_with("kuma.io/") {
                    continue; // computed labels may be overridden by the control plane
                }
                if got.json["labels"][k] != *v {
                    failures.push(format!("{file}: label {k} lost: {}", got.json["labels"]));
                }
            }
        }
        // What GET returned can be PUT back as is (kumactl get -o yaml | kumactl apply).
        let again = s.put(&url, &got.json).await;
        if again.status != 200 {
            failures.push(format!("{file}: re-PUT: {} {}", again.status, again.text));
            continue;
        }
        let after = s.get(&url).await.expect(200);
        if content_of(kind, &after.json) != have {
            failures.push(format!("{file}: re-PUT changed the content"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        policies_seen.len(),
        16,
        "fixtures cover only these policies: {policies_seen:?}"
    );
}
