//! Multizone with real proxies: one global control plane on PostgreSQL and two
//! zones (embedded stores), each zone with a web and a backend behind kuma-dp
//! and Envoy 1.40. Policies are written once, on the global; they must reach
//! the Envoy of every proxy in both zones, while traffic keeps flowing in each.

use anyhow::{Context, Result, bail};
use kuma_e2e::{
    App, ControlPlane, Proxy, ProxySpec, bin_dir, free_port, http_get as get, wait_for,
};
use kuma_store::testing::TestPostgres;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

async fn put(url: &str, body: serde_json::Value) -> Result<()> {
    let r = reqwest::Client::new().put(url).json(&body).send().await?;
    if !r.status().is_success() {
        bail!("PUT {url}: {} {}", r.status(), r.text().await?);
    }
    Ok(())
}

async fn start_global(pg: &TestPostgres) -> Result<ControlPlane> {
    let cfg = pg.config();
    let store = vec![
        ("KUMA_STORE_TYPE", "postgres".to_string()),
        ("KUMA_STORE_POSTGRES_HOST", cfg.host.clone()),
        ("KUMA_STORE_POSTGRES_PORT", cfg.port.to_string()),
        ("KUMA_STORE_POSTGRES_USER", cfg.user.clone()),
        ("KUMA_STORE_POSTGRES_PASSWORD", cfg.password.clone()),
        ("KUMA_STORE_POSTGRES_DB_NAME", cfg.db_name.clone()),
    ];
    let status = Command::new(bin_dir().join("kuma-cp"))
        .args(["migrate", "up"])
        .envs(store.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("kuma-cp migrate up failed: {status}");
    }
    let mut envs = store;
    envs.push(("KUMA_MODE", "global".into()));
    let global = ControlPlane::start_with("none", &envs).await?;
    // Its API answers before its KDS server is up, and zones read the KDS
    // server's certificate when they start: it is written by the time the
    // KDS port accepts connections.
    wait_for(
        "the global's KDS server",
        Duration::from_secs(30),
        || async {
            let addr = ("127.0.0.1", global.kds_port);
            tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
        },
    )
    .await?;
    Ok(global)
}

/// A zone of `global`, authenticated with a zone token the global issued.
/// It is ready once the default mesh has come down from the global.
async fn start_zone(
    global: &ControlPlane,
    name: &str,
    dir: &std::path::Path,
) -> Result<ControlPlane> {
    let r = reqwest::Client::new()
        .post(format!("{}/tokens/zone", global.api))
        .json(&json!({"zone": name, "scope": ["cp"]}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("zone token: {} {}", r.status(), r.text().await?);
    }
    let token_path = dir.join(format!("{name}.token"));
    std::fs::write(&token_path, r.text().await?)?;
    ControlPlane::start_with(
        "none",
        &[
            ("KUMA_MODE", "zone".into()),
            ("KUMA_MULTIZONE_ZONE_NAME", name.into()),
            (
                "KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS",
                format!("grpcs://localhost:{}", global.kds_port),
            ),
            (
                "KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE",
                global
                    .work_dir
                    .path()
                    .join("kds-server.crt")
                    .display()
                    .to_string(),
            ),
            (
                "KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH",
                token_path.display().to_string(),
            ),
        ],
    )
    .await
    .with_context(|| format!("zone {name}\nglobal:\n{}", global.proc.output()))
}

/// A zone's web (with an outbound to its backend) and backend, both configured.
struct ZoneProxies {
    web: Proxy,
    backend: Proxy,
    outbound: u16,
    _apps: (App, App),
}

async fn start_proxies(
    cp: &ControlPlane,
    zone: &str,
    backend_name: &'static str,
) -> Result<ZoneProxies> {
    let backend_app = App::start(backend_name).await?;
    let web_app = App::start("web").await?;
    let outbound = free_port();
    let backend = Proxy::start(
        cp,
        &ProxySpec {
            name: format!("backend-{zone}"),
            service: "backend".into(),
            app_port: backend_app.port,
            ..Default::default()
        },
    )?;
    let web = Proxy::start(
        cp,
        &ProxySpec {
            name: format!("web-{zone}"),
            service: "web".into(),
            app_port: web_app.port,
            outbounds: vec![(outbound, "backend".into())],
            ..Default::default()
        },
    )?;
    for p in [&backend, &web] {
        wait_for(
            &format!("{} to be configured", p.name),
            Duration::from_secs(90),
            || async { p.is_configured().await.then_some(()) },
        )
        .await
        .with_context(|| format!("{}\n{}", p.proc.output(), cp.proc.output()))?;
    }
    Ok(ZoneProxies {
        web,
        backend,
        outbound,
        _apps: (backend_app, web_app),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_written_on_the_global_reaches_envoy_in_both_zones() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pg = TestPostgres::start_async().await;
    let dir = tempfile::tempdir()?;
    let global = start_global(&pg).await?;
    let zone1 = start_zone(&global, "zone-1", dir.path()).await?;
    let zone2 = start_zone(&global, "zone-2", dir.path()).await?;
    let z1 = start_proxies(&zone1, "zone-1", "backend of zone-1").await?;
    let z2 = start_proxies(&zone2, "zone-2", "backend of zone-2").await?;

    // Traffic flows inside each zone, to that zone's backend.
    for (z, body) in [(&z1, "backend of zone-1"), (&z2, "backend of zone-2")] {
        let url = format!("http://127.0.0.1:{}/", z.outbound);
        let got = wait_for(
            "a response through web's outbound",
            Duration::from_secs(30),
            || async { get(&url).await.filter(|(s, _)| *s == 200) },
        )
        .await?;
        assert_eq!(got.1, body);
    }

    // MeshTimeouts, written on the global only: one for outbound traffic, one inbound.
    put(
        &format!("{}/meshes/default/meshtimeouts/everywhere", global.api),
        json!({"type": "MeshTimeout", "mesh": "default", "name": "everywhere",
               "spec": {"targetRef": {"kind": "Mesh"},
                        "to": [{"targetRef": {"kind": "Mesh"},
                                "default": {"connectionTimeout": "3s", "http": {"requestTimeout": "7s"}}}]}}),
    )
    .await?;
    put(
        &format!(
            "{}/meshes/default/meshtimeouts/inbound-everywhere",
            global.api
        ),
        json!({"type": "MeshTimeout", "mesh": "default", "name": "inbound-everywhere",
               "spec": {"targetRef": {"kind": "Mesh"},
                        "rules": [{"default": {"http": {"requestTimeout": "11s"}}}]}}),
    )
    .await?;
    for (name, zone, z) in [("zone-1", &zone1, &z1), ("zone-2", &zone2, &z2)] {
        // `to` shapes web's outbound; `rules` shapes the backend's inbound.
        for (p, want) in [
            (
                &z.web,
                ["\"timeout\": \"7s\"", "\"connect_timeout\": \"3s\""],
            ),
            (&z.backend, ["\"timeout\": \"11s\"", "\"timeout\": \"11s\""]),
        ] {
            wait_for(
                &format!("the global MeshTimeout in {}'s Envoy ({name})", p.name),
                Duration::from_secs(30),
                || async {
                    let dump = p.admin("/config_dump").await.ok()?;
                    want.iter().all(|w| dump.contains(w)).then_some(())
                },
            )
            .await
            .with_context(|| format!("{name}:\n{}", zone.proc.output()))?;
        }
        // The zone holds it as a read-only, global-origin copy.
        let list: serde_json::Value =
            reqwest::get(format!("{}/meshes/default/meshtimeouts", zone.api))
                .await?
                .json()
                .await?;
        let item = list["items"]
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .find(|i| i["labels"]["kuma.io/display-name"] == "everywhere")
            })
            .with_context(|| format!("{list}"))?;
        assert_eq!(item["labels"]["kuma.io/origin"], "global", "{item}");
    }

    // Changed on the global: both zones' proxies follow.
    put(
        &format!("{}/meshes/default/meshtimeouts/everywhere", global.api),
        json!({"type": "MeshTimeout", "mesh": "default", "name": "everywhere",
               "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                        "default": {"http": {"requestTimeout": "9s"}}}]}}),
    )
    .await?;
    for z in [&z1, &z2] {
        wait_for(
            &format!("the updated MeshTimeout in {}'s Envoy", z.web.name),
            Duration::from_secs(30),
            || async {
                let dump = z.web.admin("/config_dump").await.ok()?;
                (dump.contains("\"timeout\": \"9s\"")
                    && !dump.contains("\"connect_timeout\": \"3s\""))
                .then_some(())
            },
        )
        .await?;
    }

    // Deleted on the global: back to Kuma's defaults everywhere.
    let r = reqwest::Client::new()
        .delete(format!(
            "{}/meshes/default/meshtimeouts/everywhere",
            global.api
        ))
        .send()
        .await?;
    assert!(r.status().is_success(), "{}", r.text().await?);
    for z in [&z1, &z2] {
        wait_for(
            &format!("defaults back in {}'s Envoy", z.web.name),
            Duration::from_secs(30),
            || async {
                let dump = z.web.admin("/config_dump").await.ok()?;
                (dump.contains("\"timeout\": \"15s\"") && !dump.contains("\"timeout\": \"9s\""))
                    .then_some(())
            },
        )
        .await?;
    }

    // Each zone's Dataplanes show up on the global, attributed to their zone.
    for (zone, dp) in [("zone-1", "web-zone-1"), ("zone-2", "backend-zone-2")] {
        let found = wait_for(
            &format!("{dp} on the global"),
            Duration::from_secs(30),
            || async {
                let list: serde_json::Value =
                    reqwest::get(format!("{}/meshes/default/dataplanes", global.api))
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                list["items"]
                    .as_array()?
                    .iter()
                    .find(|i| i["labels"]["kuma.io/display-name"] == dp)
                    .cloned()
            },
        )
        .await?;
        assert_eq!(found["labels"]["kuma.io/zone"], zone, "{found}");
    }

    for z in [&z1, &z2] {
        for p in [&z.web, &z.backend] {
            assert_eq!(
                p.update_rejected().await?,
                0,
                "{} rejected no update",
                p.name
            );
        }
    }
    Ok(())
}
