//! Multizone end to end: one global `kuma-cp` on PostgreSQL, two federated
//! zones on embedded SQLite, real processes on free loopback ports.

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use kuma_kds::mapping::Wire;
use kuma_kds::pb::kds_sync_service_client::KdsSyncServiceClient;
use kuma_model::ResourceKind;
use kuma_store::testing::TestPostgres;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

fn kuma_cp() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| kuma_testkit::bin_dir(false).join("kuma-cp"))
}

use kuma_testkit::free_port;

/// A kuma-cp process, killed (SIGKILL) when dropped.
struct Cp {
    child: Option<Child>,
    api: String,
    log: PathBuf,
}

impl Cp {
    fn spawn(name: &str, dir: &Path, envs: &[(&str, String)]) -> Cp {
        let api_port = free_port();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(kuma_cp());
        cmd.arg("run")
            .env("KUMA_GENERAL_WORK_DIR", dir)
            .env("KUMA_API_SERVER_HTTP_PORT", api_port.to_string())
            .env("KUMA_API_SERVER_HTTP_INTERFACE", "127.0.0.1")
            .env("KUMA_API_SERVER_HTTPS_ENABLED", "false")
            .env("KUMA_API_SERVER_HTTPS_PORT", free_port().to_string())
            .env("KUMA_DP_SERVER_PORT", free_port().to_string())
            .env("KUMA_DIAGNOSTICS_SERVER_PORT", free_port().to_string())
            .env(
                "KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT",
                free_port().to_string(),
            );
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.stdout(out.try_clone().expect("log"))
            .stderr(out)
            .stdin(Stdio::null());
        let child = cmd.spawn().expect("starting kuma-cp");
        Cp {
            child: Some(child),
            api: format!("http://127.0.0.1:{api_port}"),
            log,
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Cp {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Polls until `check` returns `Some`; panics with `what` and the logs after a
/// generous limit (a liveness bound, not a performance assertion).
async fn eventually<T, F, Fut>(what: &str, cps: &[&Cp], mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = cps.iter().map(|c| c.output()).collect();
            panic!("gave up waiting for {what}\n{}", logs.join("\n-----\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get_json(url: &str) -> Option<Value> {
    let r = http().get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

async fn put(url: &str, body: Value) {
    let r = http().put(url).json(&body).send().await.expect("PUT");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "PUT {url}: {status} {text}");
}

/// Items of a list whose `kuma.io/display-name` label is `display`.
async fn find(api: &str, path: &str, display: &str) -> Option<Value> {
    let list = get_json(&format!("{api}{path}")).await?;
    list["items"]
        .as_array()?
        .iter()
        .find(|i| i["labels"]["kuma.io/display-name"] == display)
        .cloned()
}

fn timeout(name: &str) -> Value {
    json!({"type": "MeshTimeout", "mesh": "default", "name": name,
           "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                    "default": {"idleTimeout": "20s"}}]}})
}

fn mesh_service(name: &str) -> Value {
    json!({"type": "MeshService", "mesh": "default", "name": name,
           "spec": {"selector": {"dataplaneLabels": {"matchLabels": {"app": name}}},
                    "ports": [{"port": 80, "targetPort": 8080, "appProtocol": "http"}]}})
}

async fn zone_token(global: &Cp, zone: &str) -> String {
    eventually("the global API", &[global], || async {
        let r = http()
            .post(format!("{}/tokens/zone", global.api))
            .json(&json!({"zone": zone, "scope": ["cp"]}))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.text().await.ok()
    })
    .await
}

struct Global {
    cp: Cp,
    kds_port: u16,
    dir: PathBuf,
    envs: Vec<(&'static str, String)>,
}

fn start_global(pg: &TestPostgres, dir: &Path) -> Global {
    let cfg = pg.config();
    let kds_port = free_port();
    let envs = vec![
        ("KUMA_MODE", "global".to_string()),
        ("KUMA_STORE_TYPE", "postgres".to_string()),
        ("KUMA_STORE_POSTGRES_HOST", cfg.host.clone()),
        ("KUMA_STORE_POSTGRES_PORT", cfg.port.to_string()),
        ("KUMA_STORE_POSTGRES_USER", cfg.user.clone()),
        ("KUMA_STORE_POSTGRES_PASSWORD", cfg.password.clone()),
        ("KUMA_STORE_POSTGRES_DB_NAME", cfg.db_name.clone()),
    ];
    let status = Command::new(kuma_cp())
        .args(["migrate", "up"])
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("kuma-cp migrate up");
    assert!(status.success(), "kuma-cp migrate up failed");
    let mut all = envs.clone();
    all.push(("KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT", kds_port.to_string()));
    let cp = Cp::spawn("global", dir, &all);
    Global {
        cp,
        kds_port,
        dir: dir.to_path_buf(),
        envs: all,
    }
}

fn start_zone(name: &str, dir: &Path, global: &Global, token: &str) -> Cp {
    let token_path = dir.join("zone-token");
    std::fs::write(&token_path, token).expect("token file");
    Cp::spawn(
        name,
        dir,
        &[
            ("KUMA_MODE", "zone".into()),
            ("KUMA_STORE_TYPE", "sqlite".into()),
            ("KUMA_MULTIZONE_ZONE_NAME", name.into()),
            (
                "KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS",
                format!("grpcs://localhost:{}", global.kds_port),
            ),
            (
                "KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE",
                global.dir.join("kds-server.crt").display().to_string(),
            ),
            (
                "KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH",
                token_path.display().to_string(),
            ),
        ],
    )
}

async fn kds_channel(global: &Global) -> Channel {
    let ca = std::fs::read(global.dir.join("kds-server.crt")).expect("KDS certificate");
    Channel::from_shared(format!("https://localhost:{}", global.kds_port))
        .expect("uri")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("localhost"),
        )
        .expect("tls")
        .connect()
        .await
        .expect("connect to KDS")
}

fn with_md<T>(msg: T, client_id: &str, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("client-id", MetadataValue::try_from(client_id).expect("md"));
    r.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).expect("md"),
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_and_two_zones_converge_and_zones_only_speak_for_themselves() {
    kuma_cp();
    let pg = TestPostgres::start_async().await;
    let gdir = tempfile::tempdir().expect("tmp");
    let z1dir = tempfile::tempdir().expect("tmp");
    let z2dir = tempfile::tempdir().expect("tmp");
    let mut global = start_global(&pg, gdir.path());
    let t1 = zone_token(&global.cp, "zone-1").await;
    let t2 = zone_token(&global.cp, "zone-2").await;
    let zone1 = start_zone("zone-1", z1dir.path(), &global, &t1);
    let zone2 = start_zone("zone-2", z2dir.path(), &global, &t2);

    // A policy written on the global reaches both zones, hash-named, labelled.
    put(
        &format!("{}/meshes/default/meshtimeouts/t1", global.cp.api),
        timeout("t1"),
    )
    .await;
    for z in [&zone1, &zone2] {
        let item = eventually("t1 in a zone", &[&global.cp, z], || {
            find(&z.api, "/meshes/default/meshtimeouts", "t1")
        })
        .await;
        assert_eq!(item["labels"]["kuma.io/origin"], "global");
        assert_eq!(
            item["name"],
            kuma_kds::mapping::hashed_name("default", "t1", &[])
        );
    }

    // Zone resources go up; MeshServices on to the other zone.
    put(
        &format!("{}/meshes/default/dataplanes/dp-1", zone1.api),
        json!({"type": "Dataplane", "mesh": "default", "name": "dp-1",
               "networking": {"address": "127.0.0.1", "inbound": [
                   {"port": 8080, "tags": {"kuma.io/service": "backend"}}]}}),
    )
    .await;
    put(
        &format!("{}/meshes/default/meshservices/backend", zone1.api),
        mesh_service("backend"),
    )
    .await;
    let dp = eventually("dp-1 on the global", &[&global.cp, &zone1], || {
        find(&global.cp.api, "/meshes/default/dataplanes", "dp-1")
    })
    .await;
    assert_eq!(dp["labels"]["kuma.io/zone"], "zone-1");
    assert_eq!(dp["labels"]["kuma.io/origin"], "zone");
    let ms = eventually("backend in zone-2", &[&global.cp, &zone2], || {
        find(&zone2.api, "/meshes/default/meshservices", "backend")
    })
    .await;
    assert_eq!(ms["labels"]["kuma.io/zone"], "zone-1");
    assert!(
        find(&zone2.api, "/meshes/default/dataplanes", "dp-1")
            .await
            .is_none(),
        "dataplanes stay on their zone and the global"
    );

    // The global knows both zones, online, with ACKed responses and no NACKs.
    let overview = eventually("zone insights", &[&global.cp], || async {
        let v = get_json(&format!("{}/zones/_overview", global.cp.api)).await?;
        let items = v["items"].as_array()?.clone();
        let acked = items.iter().all(|z| {
            z["zoneInsight"]["subscriptions"]
                .as_array()
                .and_then(|s| s.last())
                .is_some_and(|s| s["status"]["total"]["responsesAcknowledged"] != Value::Null)
        });
        (items.len() == 2 && acked).then_some(items)
    })
    .await;
    for z in &overview {
        let sub = z["zoneInsight"]["subscriptions"]
            .as_array()
            .and_then(|s| s.last())
            .cloned()
            .unwrap_or_default();
        assert!(sub["connectTime"].is_string());
        assert!(sub["disconnectTime"].is_null());
        assert!(
            sub["status"]["total"]["responsesRejected"].is_null(),
            "{sub}"
        );
    }

    // A forged token is refused, with the reason.
    let channel = kds_channel(&global).await;
    let mut client = KdsSyncServiceClient::new(channel);
    let err = client
        .global_to_zone_sync(with_md(
            tokio_stream::iter(Vec::<DeltaDiscoveryRequest>::new()),
            "zone-1",
            "eyJhbGciOiJSUzI1NiJ9.eyJab25lIjoiem9uZS0xIn0.Zm9yZ2Vk",
        ))
        .await
        .expect_err("a forged token must be refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        err.message().contains("zone token is invalid"),
        "{}",
        err.message()
    );

    // zone-1's token cannot open a stream as zone-2 ...
    let err = client
        .zone_to_global_sync(with_md(
            tokio_stream::iter(Vec::<DeltaDiscoveryResponse>::new()),
            "zone-2",
            &t1,
        ))
        .await
        .expect_err("zone-1's token cannot speak for zone-2");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // ... nor publish a resource attributed to zone-2 on its own stream.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut requests = client
        .zone_to_global_sync(with_md(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            "zone-1",
            &t1,
        ))
        .await
        .expect("zone-1 with its own token")
        .into_inner();
    let mut forged = Wire {
        kind: ResourceKind::Dataplane,
        name: String::new(),
        mesh: Some("default".into()),
        labels: [
            ("kuma.io/origin", "zone"),
            ("kuma.io/zone", "zone-2"),
            ("kuma.io/display-name", "evil"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        spec: json!({"networking": {"address": "10.0.0.1", "inbound": [{"port": 1, "tags": {"kuma.io/service": "evil"}}]}}),
        status: None,
    };
    forged.name = forged.expected_hashed_name();
    let nack = loop {
        let req = requests
            .next()
            .await
            .expect("global keeps the stream")
            .expect("request");
        if req.type_url == "Dataplane" && req.response_nonce.is_empty() {
            tx.send(DeltaDiscoveryResponse {
                type_url: "Dataplane".into(),
                nonce: "1".into(),
                resources: vec![forged.to_envoy()],
                ..Default::default()
            })
            .await
            .expect("send");
        }
        if req.response_nonce == "1" {
            break req;
        }
    };
    let detail = nack.error_detail.expect("a NACK").message;
    assert!(detail.contains("claims zone \"zone-2\""), "{detail}");
    assert!(
        find(&global.cp.api, "/meshes/default/dataplanes", "evil")
            .await
            .is_none()
    );
    drop(tx);

    // kill -9 of the global; zones keep serving and accept local writes.
    global.cp.kill9();
    put(
        &format!("{}/meshes/default/meshservices/while-down", zone1.api),
        mesh_service("while-down"),
    )
    .await;
    assert!(
        find(&zone1.api, "/meshes/default/meshtimeouts", "t1")
            .await
            .is_some(),
        "zone-1 keeps what the global sent"
    );
    // Restart on the same database and port; everything converges.
    global.cp = Cp::spawn("global", &global.dir, &global.envs);
    eventually("while-down on the global", &[&global.cp, &zone1], || {
        find(&global.cp.api, "/meshes/default/meshservices", "while-down")
    })
    .await;
    eventually("while-down in zone-2", &[&global.cp, &zone2], || {
        find(&zone2.api, "/meshes/default/meshservices", "while-down")
    })
    .await;
    put(
        &format!("{}/meshes/default/meshtimeouts/t2", global.cp.api),
        timeout("t2"),
    )
    .await;
    for z in [&zone1, &zone2] {
        eventually("t2 in a zone", &[&global.cp, z], || {
            find(&z.api, "/meshes/default/meshtimeouts", "t2")
        })
        .await;
    }
    // A policy deleted on the global disappears from the zones.
    let r = http()
        .delete(format!("{}/meshes/default/meshtimeouts/t1", global.cp.api))
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success());
    for z in [&zone1, &zone2] {
        eventually("t1 removed from a zone", &[&global.cp, z], || async {
            find(&z.api, "/meshes/default/meshtimeouts", "t1")
                .await
                .is_none()
                .then_some(())
        })
        .await;
    }
}
