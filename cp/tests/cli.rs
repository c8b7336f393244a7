//! kuma-cp as a user runs it: the real binary, real SQLite and PostgreSQL.

use kuma_store::testing::TestPostgres;
use kuma_testkit::free_port;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kuma-cp");

/// A running kuma-cp, killed on drop.
struct Cp {
    child: Child,
    api: u16,
}

impl Drop for Cp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base_env(cmd: &mut Command, work: &Path) {
    cmd.env("KUMA_GENERAL_WORK_DIR", work)
        .env("KUMA_API_SERVER_HTTP_INTERFACE", "127.0.0.1")
        .env("KUMA_API_SERVER_HTTP_PORT", free_port().to_string())
        .env("KUMA_DIAGNOSTICS_SERVER_PORT", free_port().to_string())
        .env("KUMA_DP_SERVER_PORT", free_port().to_string())
        .env(
            "KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT",
            free_port().to_string(),
        );
}

fn start(work: &Path, extra: &[(&str, String)]) -> Cp {
    // A port picked as free can be taken by a test running in parallel before
    // kuma-cp binds it: kuma-cp then exits, and we try again with new ports.
    for _ in 0..5 {
        if let Some(cp) = try_start(work, extra) {
            return cp;
        }
    }
    panic!("kuma-cp did not start in 5 attempts");
}

fn try_start(work: &Path, extra: &[(&str, String)]) -> Option<Cp> {
    let mut cmd = Command::new(BIN);
    cmd.arg("run").arg("--log-level").arg("warn");
    base_env(&mut cmd, work);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let port_of = |var: &str| -> u16 {
        cmd.get_envs()
            .find(|(k, _)| *k == var)
            .and_then(|(_, v)| v?.to_str()?.parse().ok())
            .unwrap()
    };
    let api = port_of("KUMA_API_SERVER_HTTP_PORT");
    let diag = port_of("KUMA_DIAGNOSTICS_SERVER_PORT");
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut cp = Cp { child, api };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if cp.child.try_wait().unwrap().is_some() {
            return None;
        }
        if http("GET", diag, "/ready", None).0 == 200 {
            return Some(cp);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("kuma-cp did not become ready");
}

/// A minimal HTTP/1.1 client (one request per connection), enough for tests.
fn http(method: &str, port: u16, path: &str, body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn run_to_end(args: &[&str], work: &Path, extra: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    base_env(&mut cmd, work);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

const TIMEOUT: &str = r#"{"type":"MeshTimeout","mesh":"default","name":"t1","spec":{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"idleTimeout":"20s"}}]}}"#;

#[test]
fn invalid_configuration_exits_naming_the_key() {
    let work = tempfile::tempdir().unwrap();
    let out = run_to_end(
        &["run"],
        work.path(),
        &[("KUMA_API_SERVER_HTTP_PORT", "not-a-port".into())],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KUMA_API_SERVER_HTTP_PORT") && err.contains("apiServer.http.port"),
        "{err}"
    );

    let file = work.path().join("cp.yaml");
    std::fs::write(&file, "store:\n  type: etcd\n").unwrap();
    let out = run_to_end(&["run", "-c", file.to_str().unwrap()], work.path(), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store.type"), "{err}");
}

#[test]
fn embedded_store_survives_a_restart() {
    let work = tempfile::tempdir().unwrap();
    {
        let cp = start(work.path(), &[]);
        let (status, body) = http(
            "PUT",
            cp.api,
            "/meshes/default/meshtimeouts/t1",
            Some(TIMEOUT),
        );
        assert_eq!(status, 201, "{body}");
    }
    let cp = start(work.path(), &[]);
    let (status, body) = http("GET", cp.api, "/meshes/default/meshtimeouts/t1", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"idleTimeout\":\"20s\""), "{body}");
    assert!(work.path().join("kuma.db").exists());
}

#[test]
fn skip_mesh_creation() {
    let work = tempfile::tempdir().unwrap();
    let cp = start(
        work.path(),
        &[("KUMA_DEFAULTS_SKIP_MESH_CREATION", "true".into())],
    );
    let (status, body) = http("GET", cp.api, "/meshes", None);
    assert_eq!(status, 200);
    assert!(body.contains("\"total\":0"), "{body}");
}

#[test]
fn postgres_needs_migrations_then_two_instances_share_one_database() {
    let pg = TestPostgres::start();
    let cfg = pg.config();
    let env: Vec<(&str, String)> = vec![
        ("KUMA_STORE_TYPE", "postgres".into()),
        ("KUMA_STORE_POSTGRES_HOST", cfg.host.clone()),
        ("KUMA_STORE_POSTGRES_PORT", cfg.port.to_string()),
        ("KUMA_STORE_POSTGRES_USER", cfg.user.clone()),
        ("KUMA_STORE_POSTGRES_PASSWORD", cfg.password.clone()),
        ("KUMA_STORE_POSTGRES_DB_NAME", cfg.db_name.clone()),
    ];
    let work = tempfile::tempdir().unwrap();

    // Schema behind: a clear refusal.
    let out = run_to_end(&["run"], work.path(), &env);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kuma-cp migrate up"), "{err}");

    let out = run_to_end(&["migrate", "up"], work.path(), &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let w1 = tempfile::tempdir().unwrap();
    let w2 = tempfile::tempdir().unwrap();
    let a = start(w1.path(), &env);
    let b = start(w2.path(), &env);
    let (status, body) = http(
        "PUT",
        a.api,
        "/meshes/default/meshtimeouts/t1",
        Some(TIMEOUT),
    );
    assert_eq!(status, 201, "{body}");
    // B serves reads from its cache, fed by LISTEN/NOTIFY: poll until it sees the write.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http("GET", b.api, "/meshes/default/meshtimeouts/t1", None);
        if status == 200 {
            assert!(body.contains("\"idleTimeout\":\"20s\""), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "instance B never saw instance A's write"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Both started against one database: still exactly one default mesh.
    let (_, meshes) = http("GET", b.api, "/meshes", None);
    assert!(meshes.contains("\"total\":1"), "{meshes}");
}

#[test]
fn mesh_service_vips_come_from_kuma_ipam_mesh_service_cidr() {
    let work = tempfile::tempdir().unwrap();
    let cp = start(
        work.path(),
        &[
            ("KUMA_STORE_TYPE", "memory".into()),
            ("KUMA_IPAM_MESH_SERVICE_CIDR", "10.200.0.0/16".into()),
        ],
    );
    let dp = r#"{"type": "Dataplane", "mesh": "default", "name": "web-1",
        "networking": {"address": "127.0.0.1",
          "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]}}"#;
    let (status, body) = http("PUT", cp.api, "/meshes/default/dataplanes/web-1", Some(dp));
    assert!(status == 201 || status == 200, "{status} {body}");
    // The MeshService generated from the kuma.io/service tag gets its VIP there.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http("GET", cp.api, "/meshes/default/meshservices/web", None);
        if status == 200 {
            let ms: serde_json::Value = serde_json::from_str(&body).unwrap();
            if let Some(ip) = ms["status"]["vips"][0]["ip"].as_str() {
                assert!(ip.starts_with("10.200."), "{ms}");
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no VIP after 30 s: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
