//! client -> web's Envoy (outbound) -> backend's Envoy (inbound) -> backend app,
//! with real kuma-cp, kuma-dp and Envoy 1.40.

use kuma_e2e::{
    App, ControlPlane, Proxy, ProxySpec, free_port, http_get as get, resolve_a, wait_for,
};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_balances_fails_over_and_follows_mesh_timeout() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cp = ControlPlane::start("dpToken").await?;
    let token = cp.dataplane_token(json!({"mesh": "default"})).await?;

    let b1 = App::start("backend-1").await?;
    let b2 = App::start("backend-2").await?;
    let web_app = App::start("web").await?;
    let outbound = free_port();
    let backend_port = free_port();
    let spec = |name: &str, service: &str, app: &App, address: &str| ProxySpec {
        name: name.into(),
        service: service.into(),
        app_port: app.port,
        outbounds: vec![],
        token: Some(token.clone()),
        address: Some(address.into()),
        inbound_port: (service == "backend").then_some(backend_port),
        dns_port: None,
    };
    // Instances of one service expose the same port, each on its own address.
    let backend1 = Proxy::start(&cp, &spec("backend-1", "backend", &b1, "127.0.0.2"))?;
    let mut backend2 = Proxy::start(&cp, &spec("backend-2", "backend", &b2, "127.0.0.3"))?;
    let dns_port = free_port();
    let web = Proxy::start(
        &cp,
        &ProxySpec {
            outbounds: vec![(outbound, "backend".into())],
            dns_port: Some(dns_port),
            ..spec("web-1", "web", &web_app, "127.0.0.1")
        },
    )?;

    for p in [&backend1, &backend2, &web] {
        wait_for(
            &format!("{} to be configured", p.name),
            Duration::from_secs(60),
            || async { p.is_configured().await.then_some(()) },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", p.proc.output(), cp.proc.output()))?;
    }

    // Both backends take traffic once the client's Envoy knows both endpoints.
    let url = format!("http://127.0.0.1:{outbound}/");
    wait_for(
        "both backends to receive traffic",
        Duration::from_secs(30),
        || async {
            get(&url).await;
            (b1.hits() > 0 && b2.hits() > 0).then_some(())
        },
    )
    .await?;
    let mut ok = 0;
    for _ in 0..40 {
        if let Some((200, body)) = get(&url).await {
            assert!(
                body == "backend-1" || body == "backend-2",
                "unexpected body {body:?}"
            );
            ok += 1;
        }
    }
    assert_eq!(ok, 40, "every request through the mesh succeeds");

    // The MeshService was generated from the kuma.io/service tag, with a VIP.
    let ms: serde_json::Value =
        reqwest::get(format!("{}/meshes/default/meshservices/backend", cp.api))
            .await?
            .json()
            .await?;
    assert!(
        ms["status"]["vips"][0]["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("241.")),
        "{ms}"
    );
    assert_eq!(
        ms["status"]["addresses"][0]["hostname"],
        "backend.svc.mesh.local"
    );
    // kuma-dp's DNS port answers the mesh's hostnames with their VIPs.
    let vip: std::net::Ipv4Addr = ms["status"]["vips"][0]["ip"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    let resolved = wait_for(
        "backend.svc.mesh.local to resolve",
        Duration::from_secs(20),
        || async { resolve_a(dns_port, "backend.svc.mesh.local").await },
    )
    .await?;
    assert_eq!(resolved, vip);

    // A MeshTimeout written through the API reaches Envoy.
    let r = reqwest::Client::new()
        .put(format!("{}/meshes/default/meshtimeouts/backend-timeouts", cp.api))
        .json(&json!({
            "type": "MeshTimeout", "mesh": "default", "name": "backend-timeouts",
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "labels": {"kuma.io/display-name": "backend"}},
                     "default": {"connectionTimeout": "3s", "http": {"requestTimeout": "7s"}}}]}
        }))
        .send()
        .await?;
    assert!(r.status().is_success(), "{}", r.text().await?);
    wait_for(
        "the MeshTimeout in web's config_dump",
        Duration::from_secs(20),
        || async {
            let dump = web.admin("/config_dump").await.ok()?;
            (dump.contains("\"timeout\": \"7s\"") && dump.contains("\"connect_timeout\": \"3s\""))
                .then_some(())
        },
    )
    .await?;

    // The changed cluster becomes active: its endpoints are resent with it,
    // so Envoy does not wait out its 15 s initial fetch for them.
    wait_for(
        "web's clusters to finish warming",
        Duration::from_secs(30),
        || async {
            let stats = web
                .admin("/stats?filter=cluster_manager.warming_clusters")
                .await
                .ok()?;
            stats
                .contains("cluster_manager.warming_clusters: 0")
                .then_some(())
        },
    )
    .await?;
    let stats = web.admin("/stats?filter=init_fetch_timeout").await?;
    let timed_out: Vec<&str> = stats
        .lines()
        .filter(|l| l.contains("init_fetch_timeout") && !l.ends_with(": 0"))
        .collect();
    assert!(
        stats.contains("init_fetch_timeout") && timed_out.is_empty(),
        "web waited out initial fetches: {timed_out:?}\n{stats}"
    );

    // The DataplaneInsight shows the stream and its ACKs.
    let insight: serde_json::Value = reqwest::get(format!(
        "{}/meshes/default/dataplane-insights/web-1",
        cp.api
    ))
    .await?
    .json()
    .await?;
    let sub = &insight["subscriptions"][0];
    assert!(sub["connectTime"].is_string(), "{insight}");
    assert_eq!(
        sub["status"]["total"]["responsesRejected"], "0",
        "{insight}"
    );

    // Stop one backend: after 2 s no request fails.
    let status = backend2.proc.terminate().await?;
    assert!(
        status.success(),
        "kuma-dp exits with Envoy's status: {status}"
    );
    b2.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = b1.hits();
    for _ in 0..40 {
        let (status, body) = get(&url).await.expect("request completes");
        assert_eq!((status, body.as_str()), (200, "backend-1"));
    }
    assert_eq!(b1.hits() - before, 40);

    for p in [&backend1, &web] {
        assert_eq!(
            p.update_rejected().await?,
            0,
            "{} rejected no update",
            p.name
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_expired_tokens_are_refused() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cp = ControlPlane::start("dpToken").await?;
    let app = App::start("app").await?;
    let good = cp.dataplane_token(json!({"mesh": "default"})).await?;

    // A token whose signature does not verify.
    let mut forged = good.clone();
    let last = forged.pop().expect("non-empty");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    // A token bound to another dataplane name.
    let other_name = cp
        .dataplane_token(json!({"mesh": "default", "name": "someone-else"}))
        .await?;
    // A token that expires at once.
    let expired = cp
        .dataplane_token(json!({"mesh": "default", "validFor": "1s"}))
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    for (name, token, reason) in [
        ("forged", forged, "invalid dataplane token"),
        ("misbound", other_name, "invalid dataplane token"),
        ("expired", expired, "invalid dataplane token"),
        ("missing", String::new(), "token is required"),
    ] {
        let spec = ProxySpec {
            name: name.into(),
            service: "svc".into(),
            app_port: app.port,
            outbounds: vec![],
            token: (!token.is_empty()).then_some(token),
            address: None,
            inbound_port: None,
            dns_port: None,
        };
        let mut p = Proxy::start(&cp, &spec)?;
        let status = p.proc.wait().await?;
        assert!(!status.success(), "{name}: kuma-dp must fail");
        let out = p.proc.output();
        assert!(out.contains("401") && out.contains(reason), "{name}: {out}");
    }

    // Nothing refused was registered.
    let dps: serde_json::Value = reqwest::get(format!("{}/meshes/default/dataplanes", cp.api))
        .await?
        .json()
        .await?;
    assert_eq!(dps["total"], 0, "{dps}");
    Ok(())
}
