//! State-of-the-world ADS against a real Envoy 1.40: the bootstrap comes from
//! kuma-cp's `POST /bootstrap` exactly as kuma-dp asks for it, with every
//! `api_type: DELTA_GRPC` turned into `GRPC`, and Envoy is started directly.
//!
//! web (SotW) -> backend-1 / backend-2 (SotW) -> backend apps; the client's
//! Envoy follows a MeshTimeout (written, then deleted), a new backend instance
//! (endpoint added) and a deleted Dataplane (endpoint removed), rejecting nothing.

use anyhow::{Context, Result, bail};
use kuma_e2e::{App, ControlPlane, Proc, ensure_envoy, free_port, http_get as get, wait_for};
use kuma_zone::bootstrap::{BootstrapRequest, BootstrapResponse};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

/// Replaces every `"api_type": "DELTA_GRPC"` in `v`; returns how many.
fn to_state_of_the_world(v: &mut Value) -> usize {
    match v {
        Value::Object(map) => {
            let mut n = 0;
            for (k, child) in map.iter_mut() {
                if k == "api_type" && child == "DELTA_GRPC" {
                    *child = Value::String("GRPC".into());
                    n += 1;
                } else {
                    n += to_state_of_the_world(child);
                }
            }
            n
        }
        Value::Array(items) => items.iter_mut().map(to_state_of_the_world).sum(),
        _ => 0,
    }
}

/// One proxy: Envoy on a state-of-the-world bootstrap, no kuma-dp.
struct SotwProxy {
    name: String,
    admin_port: u16,
    proc: Proc,
}

struct Spec<'a> {
    name: &'a str,
    service: &'a str,
    address: &'a str,
    inbound_port: u16,
    app_port: u16,
    /// `(local port, kuma.io/service)`.
    outbounds: Vec<(u16, &'a str)>,
}

impl SotwProxy {
    async fn start(cp: &ControlPlane, token: &str, spec: &Spec<'_>) -> Result<SotwProxy> {
        ensure_envoy();
        let admin_port = free_port();
        let dir = cp.work_dir.path().join(spec.name);
        std::fs::create_dir_all(&dir)?;
        let mut dataplane = json!({
            "type": "Dataplane",
            "mesh": "default",
            "name": spec.name,
            "networking": {
                "address": spec.address,
                "admin": { "port": admin_port },
                "inbound": [{
                    "port": spec.inbound_port,
                    "servicePort": spec.app_port,
                    "tags": { "kuma.io/service": spec.service, "kuma.io/protocol": "http" }
                }]
            }
        });
        if !spec.outbounds.is_empty() {
            dataplane["networking"]["outbound"] = spec
                .outbounds
                .iter()
                .map(|(port, svc)| json!({ "port": port, "tags": { "kuma.io/service": svc } }))
                .collect();
        }
        let ca = std::fs::read_to_string(cp.cert())?;
        // What kuma-dp sends, minus the delta feature this proxy will not use.
        let request = BootstrapRequest {
            mesh: "default".into(),
            name: spec.name.into(),
            proxy_type: "dataplane".into(),
            dataplane_token: token.into(),
            dataplane_resource: dataplane.to_string(),
            version: json!({
                "kumaDp": { "version": "e2e", "gitTag": "unknown", "gitCommit": "unknown", "buildDate": "unknown" },
                "envoy": { "version": "1.40.0", "build": "unknown", "kumaDpCompatible": true }
            }),
            ca_cert: ca.clone(),
            workdir: dir.display().to_string(),
            operating_system: std::env::consts::OS.into(),
            ..Default::default()
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.as_bytes())?)
            .build()?;
        let r = client
            .post(format!("https://127.0.0.1:{}/bootstrap", cp.dp_port))
            .json(&request)
            .send()
            .await
            .context("POST /bootstrap")?;
        if !r.status().is_success() {
            bail!("bootstrap refused: {} {}", r.status(), r.text().await?);
        }
        let resp: BootstrapResponse = r.json().await?;
        let mut bootstrap: Value = serde_json::from_slice(&resp.bootstrap)?;
        assert_eq!(
            bootstrap["dynamic_resources"]["ads_config"]["api_type"], "DELTA_GRPC",
            "kuma-cp's default is delta"
        );
        assert!(to_state_of_the_world(&mut bootstrap) >= 1);
        let path = dir.join("bootstrap.yaml");
        std::fs::write(&path, serde_json::to_vec_pretty(&bootstrap)?)?;

        let mut cmd = Command::new("envoy");
        cmd.arg("--config-path")
            .arg(&path)
            .args(["--drain-time-s", "1", "--disable-hot-restart"])
            .args(["--concurrency", "1", "--log-level", "info"]);
        let proc = Proc::spawn(&format!("envoy-{}", spec.name), cmd, cp.work_dir.path())?;
        Ok(SotwProxy {
            name: spec.name.into(),
            admin_port,
            proc,
        })
    }

    async fn admin(&self, path: &str) -> Result<String> {
        Ok(
            reqwest::get(format!("http://127.0.0.1:{}{path}", self.admin_port))
                .await?
                .text()
                .await?,
        )
    }

    /// Every `*.<counter>` stat that is not 0, after checking that CDS and
    /// LDS report it (and, for a proxy with outbounds, EDS).
    async fn nonzero(&self, counter: &str, eds: bool) -> Result<Vec<String>> {
        let stats = self.admin(&format!("/stats?filter={counter}")).await?;
        let counters: Vec<(String, u64)> = stats
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.ends_with(&format!(".{counter}")))
            .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
            .collect();
        let has = |prefix: &str| counters.iter().any(|(k, _)| k.starts_with(prefix));
        assert!(
            has("cluster_manager.cds.")
                && has("listener_manager.lds.")
                && (!eds || has("cluster.default_backend")),
            "{} reports {counter} for CDS, LDS and EDS: {stats}",
            self.name
        );
        Ok(counters
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .map(|(k, v)| format!("{k}: {v}"))
            .collect())
    }

    async fn wait_configured(&self, cp: &ControlPlane) -> Result<()> {
        wait_for(
            &format!("{} to be configured", self.name),
            Duration::from_secs(60),
            || async {
                let stats = self
                    .admin("/stats?filter=control_plane.connected_state|lds.update_success")
                    .await
                    .ok()?;
                (stats.contains("control_plane.connected_state: 1")
                    && !stats.contains("lds.update_success: 0"))
                .then_some(())
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", self.proc.output(), cp.proc.output()))
    }

    async fn config_dump(&self) -> Option<Value> {
        serde_json::from_str(&self.admin("/config_dump").await.ok()?).ok()
    }

    /// `ip:port` of the endpoints Envoy holds for clusters whose name contains `svc`.
    async fn endpoints(&self, svc: &str) -> Option<Vec<String>> {
        let clusters: Value =
            serde_json::from_str(&self.admin("/clusters?format=json").await.ok()?).ok()?;
        let mut out = Vec::new();
        for c in clusters["cluster_statuses"].as_array()? {
            if !c["name"].as_str()?.contains(svc) {
                continue;
            }
            for h in c["host_statuses"].as_array().into_iter().flatten() {
                let a = &h["address"]["socket_address"];
                out.push(format!("{}:{}", a["address"].as_str()?, a["port_value"]));
            }
        }
        out.sort();
        Some(out)
    }
}

/// The timeouts of the routes to backend and the connect timeouts of the
/// backend clusters in a config dump (route configurations are inline in the
/// listeners, so they show up as static ones).
fn timeouts(dump: &Value) -> (Vec<String>, Vec<String>) {
    let mut route = Vec::new();
    let mut connect = Vec::new();
    for config in dump["configs"].as_array().into_iter().flatten() {
        let static_routes = config["static_route_configs"].as_array().into_iter();
        let dynamic_routes = config["dynamic_route_configs"].as_array().into_iter();
        for rc in static_routes.chain(dynamic_routes).flatten() {
            for vh in rc["route_config"]["virtual_hosts"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for r in vh["routes"].as_array().into_iter().flatten() {
                    if r["route"]["cluster"]
                        .as_str()
                        .is_some_and(|c| c.contains("backend"))
                    {
                        route.push(r["route"]["timeout"].as_str().unwrap_or("").to_string());
                    }
                }
            }
        }
        for c in config["dynamic_active_clusters"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let cluster = &c["cluster"];
            if cluster["name"]
                .as_str()
                .is_some_and(|n| n.contains("backend"))
            {
                connect.push(
                    cluster["connect_timeout"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                );
            }
        }
    }
    (route, connect)
}

async fn put_mesh_timeout(cp: &ControlPlane) -> Result<()> {
    let r = reqwest::Client::new()
        .put(format!("{}/meshes/default/meshtimeouts/backend-timeouts", cp.api))
        .json(&json!({
            "type": "MeshTimeout", "mesh": "default", "name": "backend-timeouts",
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "labels": {"kuma.io/display-name": "backend"}},
                     "default": {"connectionTimeout": "3s", "http": {"requestTimeout": "7s"}}}]}
        }))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("{}", r.text().await?);
    }
    Ok(())
}

async fn delete(cp: &ControlPlane, path: &str) -> Result<()> {
    let r = reqwest::Client::new()
        .delete(format!("{}{path}", cp.api))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("DELETE {path}: {} {}", r.status(), r.text().await?);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_on_state_of_the_world_ads_follows_changes() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cp = ControlPlane::start("dpToken").await?;
    let token = cp.dataplane_token(json!({"mesh": "default"})).await?;

    let b1 = App::start("backend-1").await?;
    let b2 = App::start("backend-2").await?;
    let web_app = App::start("web").await?;
    let outbound = free_port();
    let backend_port = free_port();
    let backend = |name, address, app: &App| Spec {
        name,
        service: "backend",
        address,
        inbound_port: backend_port,
        app_port: app.port,
        outbounds: vec![],
    };
    let backend1 = SotwProxy::start(&cp, &token, &backend("backend-1", "127.0.0.2", &b1)).await?;
    let web = SotwProxy::start(
        &cp,
        &token,
        &Spec {
            name: "web-1",
            service: "web",
            address: "127.0.0.1",
            inbound_port: free_port(),
            app_port: web_app.port,
            outbounds: vec![(outbound, "backend")],
        },
    )
    .await?;
    for p in [&backend1, &web] {
        p.wait_configured(&cp).await?;
    }
    // The proxy really runs state of the world.
    let dump = web.config_dump().await.context("config_dump")?;
    assert_eq!(
        dump["configs"][0]["bootstrap"]["dynamic_resources"]["ads_config"]["api_type"], "GRPC",
        "{dump}"
    );

    // 1. Listeners, routes, clusters and endpoints arrive: traffic flows.
    let url = format!("http://127.0.0.1:{outbound}/");
    wait_for(
        "backend-1 to receive traffic through web's outbound",
        Duration::from_secs(60),
        || async { (get(&url).await? == (200, "backend-1".to_string())).then_some(()) },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", web.proc.output()))?;
    let b1_addr = format!("127.0.0.2:{backend_port}");
    let b2_addr = format!("127.0.0.3:{backend_port}");
    assert_eq!(web.endpoints("backend").await, Some(vec![b1_addr.clone()]));
    let dump = web.config_dump().await.context("config_dump")?;
    let (default_route, default_connect) = timeouts(&dump);
    assert!(!default_route.is_empty(), "a route to backend: {dump}");
    assert!(!default_connect.is_empty(), "a backend cluster: {dump}");
    assert!(
        !default_route.contains(&"7s".to_string()),
        "{default_route:?}"
    );
    assert!(
        !default_connect.contains(&"3s".to_string()),
        "{default_connect:?}"
    );

    // 2a. A MeshTimeout written through the API reaches Envoy: the route
    // (inline in the LDS listener) and the cluster (CDS, then EDS re-warming).
    put_mesh_timeout(&cp).await?;
    wait_for(
        "the MeshTimeout in web's config_dump",
        Duration::from_secs(30),
        || async {
            let (route, connect) = timeouts(&web.config_dump().await?);
            let applied = !route.is_empty()
                && !connect.is_empty()
                && route.iter().all(|t| t == "7s")
                && connect.iter().all(|t| t == "3s");
            applied.then_some(())
        },
    )
    .await?;

    // 2b. A second backend instance shows up in EDS and takes traffic.
    let backend2 = SotwProxy::start(&cp, &token, &backend("backend-2", "127.0.0.3", &b2)).await?;
    backend2.wait_configured(&cp).await?;
    wait_for(
        "backend-2 in web's endpoints",
        Duration::from_secs(30),
        || async {
            let eps = web.endpoints("backend").await?;
            (eps == [b1_addr.clone(), b2_addr.clone()]).then_some(())
        },
    )
    .await?;
    wait_for(
        "backend-2 to receive traffic",
        Duration::from_secs(30),
        || async {
            get(&url).await;
            (b2.hits() > 0).then_some(())
        },
    )
    .await?;
    for _ in 0..20 {
        let (status, body) = get(&url).await.expect("request completes");
        assert_eq!(status, 200);
        assert!(body == "backend-1" || body == "backend-2", "{body:?}");
    }

    // 4a. Deleting the MeshTimeout restores the defaults.
    delete(&cp, "/meshes/default/meshtimeouts/backend-timeouts").await?;
    wait_for(
        "web's timeouts back to the defaults",
        Duration::from_secs(30),
        || async {
            let (route, connect) = timeouts(&web.config_dump().await?);
            (route == default_route && connect == default_connect).then_some(())
        },
    )
    .await?;

    // 4b. backend-2 goes away and its Dataplane is deleted: its endpoint leaves
    // web's EDS and every request lands on backend-1.
    let mut backend2 = backend2;
    backend2.proc.terminate().await?;
    delete(&cp, "/meshes/default/dataplanes/backend-2").await?;
    wait_for(
        "backend-2 to leave web's endpoints",
        Duration::from_secs(30),
        || async { (web.endpoints("backend").await? == [b1_addr.clone()]).then_some(()) },
    )
    .await?;
    let before = b1.hits();
    for _ in 0..20 {
        let (status, body) = get(&url).await.expect("request completes");
        assert_eq!((status, body.as_str()), (200, "backend-1"));
    }
    assert_eq!(b1.hits() - before, 20);

    // 3. Nothing was rejected, and no subscription had to wait out its
    // initial fetch timeout (Envoy's answer to a server that does not send
    // the endpoints of a cluster it updated): by Envoy's counts and by the
    // control plane's.
    for (p, eds) in [(&backend1, false), (&web, true)] {
        let rejected = p.nonzero("update_rejected", eds).await?;
        assert!(
            rejected.is_empty(),
            "{} rejected updates: {rejected:?}",
            p.name
        );
        let timed_out = p.nonzero("init_fetch_timeout", eds).await?;
        assert!(
            timed_out.is_empty(),
            "{} waited out initial fetches: {timed_out:?}",
            p.name
        );
    }
    let eds = web.admin("/stats?filter=update_success").await?;
    assert!(
        eds.lines()
            .any(|l| l.starts_with("cluster.") && l.contains("backend") && !l.ends_with(": 0")),
        "web took EDS updates: {eds}"
    );
    let insight: Value = reqwest::get(format!(
        "{}/meshes/default/dataplane-insights/web-1",
        cp.api
    ))
    .await?
    .json()
    .await?;
    let sub = &insight["subscriptions"][0];
    assert_eq!(
        sub["status"]["total"]["responsesRejected"], "0",
        "{insight}"
    );
    Ok(())
}
