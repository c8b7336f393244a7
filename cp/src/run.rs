//! Composes the control plane from its crates: store, API server, diagnostics
//! and (by mode) the zone or global components.

use crate::config::{CpConfig, Loaded, redacted};
use crate::diagnostics::{self, Diagnostics};
use anyhow::{Context, Result, bail};
use kuma_api_server::{ApiConfig, ApiState, MeteredStore, auth};
use kuma_model::labels::{self, Mode};
use kuma_model::{ResourceKey, ResourceKind, ResourceName};
use kuma_store::{
    CachedStore, MemoryStore, PostgresStore, ResourceStore, SqliteStore, StoreError, Write,
};
use kuma_telemetry::Metrics;
use kuma_tokens::TokenService;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

fn mode_of(c: &CpConfig) -> Mode {
    if c.mode == "global" {
        Mode::Global
    } else {
        Mode::Zone
    }
}

async fn open_store(c: &CpConfig, work_dir: &Path) -> Result<Arc<dyn ResourceStore>> {
    Ok(match c.store.kind.as_str() {
        "memory" => Arc::new(MemoryStore::new()),
        "sqlite" => {
            let path = if c.store.sqlite.path.is_empty() {
                work_dir.join("kuma.db")
            } else {
                c.store.sqlite.path.clone().into()
            };
            info!(path = %path.display(), "using the embedded SQLite store");
            let store = SqliteStore::open(&path)
                .await
                .with_context(|| format!("cannot open the embedded store at {}", path.display()))?;
            // Reads are served from memory, kept current by the change feed.
            Arc::new(
                CachedStore::new(store)
                    .await
                    .context("cannot load the embedded store")?,
            )
        }
        "postgres" => {
            let pg = &c.store.postgres;
            info!(host = %pg.host, port = pg.port, db = %pg.db_name, "using the PostgreSQL store");
            let store = PostgresStore::open(pg).await.with_context(|| {
                format!(
                    "cannot use PostgreSQL at {}:{} (database {})",
                    pg.host, pg.port, pg.db_name
                )
            })?;
            Arc::new(
                CachedStore::new(store)
                    .await
                    .context("cannot load resources from PostgreSQL")?,
            )
        }
        other => bail!("invalid value {other:?} for store.type (KUMA_STORE_TYPE)"),
    })
}

pub async fn migrate_up(c: &CpConfig) -> Result<()> {
    if c.store.kind != "postgres" {
        bail!(
            "migrate up applies to the postgres store; store.type (KUMA_STORE_TYPE) is {:?}",
            c.store.kind
        );
    }
    let pg = &c.store.postgres;
    let v = kuma_store::migrate_up(pg).await.with_context(|| {
        format!(
            "cannot migrate PostgreSQL at {}:{} (database {})",
            pg.host, pg.port, pg.db_name
        )
    })?;
    info!(
        before = v.before,
        after = v.after,
        "database schema is up to date"
    );
    Ok(())
}

/// Creates the `default` mesh unless it exists.
async fn ensure_default_mesh(store: &Arc<dyn ResourceStore>, mode: Mode, zone: &str) -> Result<()> {
    let name = ResourceName::new("default").context("static name")?;
    let key = ResourceKey::global(ResourceKind::Mesh, name).context("static key")?;
    let write = Write {
        labels: labels::compute(
            ResourceKind::Mesh,
            None,
            "default",
            &BTreeMap::new(),
            mode,
            zone,
        ),
        spec: serde_json::json!({}),
        status: None,
    };
    match store.create(&key, write).await {
        Ok(_) => {
            info!(mesh = "default", "created the default mesh");
            Ok(())
        }
        Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e).context("cannot create the default mesh"),
    }
}

async fn bind(interface: &str, port: u16, what: &str, var: &str) -> Result<TcpListener> {
    let addr: SocketAddr = format!("{interface}:{port}")
        .parse()
        .or_else(|_| format!("[{interface}]:{port}").parse())
        .with_context(|| format!("invalid {what} address {interface}:{port}"))?;
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for the {what} on {addr} (set {var} to use another port)")
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = ctrl_c.await;
        return;
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

pub async fn run(loaded: Loaded) -> Result<()> {
    let c = &loaded.config;
    let effective = redacted(&loaded.merged);
    info!(config = %effective, "effective configuration");
    for key in &loaded.ignored_keys {
        warn!(%key, "configuration key is not supported by this control plane and is ignored");
    }
    let mode = mode_of(c);
    let work_dir = c.work_dir();
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create the work dir {}", work_dir.display()))?;

    let metrics = Metrics::new();
    let store = open_store(c, &work_dir).await?;
    let store: Arc<dyn ResourceStore> = Arc::new(MeteredStore::new(store, metrics.clone()));
    let tokens = Arc::new(TokenService::new(store.clone()));

    let federated_zone = mode == Mode::Zone && !c.multizone.zone.global_address.is_empty();
    if !c.defaults.skip_mesh_creation && !federated_zone {
        ensure_default_mesh(&store, mode, &c.multizone.zone.name).await?;
    }
    if c.api_server.authn.tokens.bootstrap_admin_token && !federated_zone {
        tokens
            .bootstrap_admin_token()
            .await
            .context("cannot bootstrap the admin user token")?;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let ready = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();

    let diag = bind(
        "0.0.0.0",
        c.diagnostics.server_port,
        "diagnostics server",
        "KUMA_DIAGNOSTICS_SERVER_PORT",
    )
    .await?;
    let diag_app = diagnostics::router(Diagnostics {
        ready: ready.clone(),
        metrics: metrics.clone(),
    });
    let diag_stop = stopped();
    tasks.spawn(async move {
        axum::serve(diag, diag_app)
            .with_graceful_shutdown(diag_stop)
            .await
            .context("diagnostics server failed")
    });

    if c.api_server.http.enabled {
        let listener = bind(
            &c.api_server.http.interface,
            c.api_server.http.port,
            "API server",
            "KUMA_API_SERVER_HTTP_PORT",
        )
        .await?;
        let api = Arc::new(ApiState {
            store: store.clone(),
            config: ApiConfig {
                mode,
                federated: federated_zone,
                zone_name: c.multizone.zone.name.clone(),
                max_body_bytes: c.api_server.max_request_body_bytes,
                hostname: hostname(),
                instance_id: format!("{}-{}", hostname(), std::process::id()),
                effective_config: effective.clone(),
                cors_allowed_origins: c.api_server.cors_allowed_domains.clone(),
                auth: auth::AuthConfig {
                    localhost_is_admin: c.api_server.authn.localhost_is_admin,
                    admin_users: c.access.static_.admin_resources.users.clone(),
                    admin_groups: c.access.static_.admin_resources.groups.clone(),
                },
                ..ApiConfig::default()
            },
            metrics: metrics.clone(),
            auth: auth::Authenticator::new(auth::AuthConfig {
                localhost_is_admin: c.api_server.authn.localhost_is_admin,
                admin_users: c.access.static_.admin_resources.users.clone(),
                admin_groups: c.access.static_.admin_resources.groups.clone(),
            }),
            tokens: tokens.clone(),
        });
        info!(address = %listener.local_addr()?, "API server listening");
        let api_stop = stopped();
        tasks.spawn(async move {
            kuma_api_server::serve(listener, api, api_stop)
                .await
                .context("API server failed")
        });
    }

    // Mode-specific components are started here.
    if mode == Mode::Zone {
        // dp-server: /bootstrap + ADS for the zone's proxies (kuma-zone).
        let mut dp = kuma_zone::DpServerConfig::new(work_dir.clone());
        dp.port = c.dp_server.port;
        dp.tls_cert_file = Some(c.dp_server.tls_cert_file.clone())
            .filter(|f| !f.is_empty())
            .map(Into::into);
        dp.tls_key_file = Some(c.dp_server.tls_key_file.clone())
            .filter(|f| !f.is_empty())
            .map(Into::into);
        dp.auth = kuma_zone::DpAuth::parse(&c.dp_server.authn.dp_proxy.kind)
            .map_err(anyhow::Error::msg)?;
        dp.zone = c.multizone.zone.name.clone();
        dp.instance_id = hostname();
        // Validated at load: a CIDR, durations not negative.
        if let Some(cidr) = c.ipam.mesh_service.parse() {
            dp.vip_cidr = cidr;
        }
        if let Some(d) = c.xds_server.dataplane_deregistration_delay.as_std() {
            dp.deregistration_delay = d;
        }
        if let Some(d) = c.xds_server.dataplane_status_flush_interval.as_std() {
            dp.status_flush_interval = d;
        }
        let server = kuma_zone::DpServer::start(dp, store.clone())
            .await
            .context("cannot start the dp-server (set KUMA_DP_SERVER_PORT to use another port)")?;
        info!(address = %server.local_addr, "dp-server listening");
        let dp_stop = stopped();
        tasks.spawn(async move {
            tokio::select! {
                _ = server.wait() => {},
                _ = dp_stop => {},
            }
            Ok(())
        });
    }

    if mode == Mode::Global {
        // KDS server: zones dial in here (kuma-global).
        let kds_cfg = &c.multizone.global.kds;
        let mut kds = kuma_global::GlobalKdsConfig::new(work_dir.clone());
        kds.port = kds_cfg.grpc_port;
        kds.tls_cert_file = Some(kds_cfg.tls_cert_file.clone())
            .filter(|f| !f.is_empty())
            .map(Into::into);
        kds.tls_key_file = Some(kds_cfg.tls_key_file.clone())
            .filter(|f| !f.is_empty())
            .map(Into::into);
        kds.auth = kuma_global::KdsAuth::parse(&kds_cfg.auth.kind).map_err(anyhow::Error::msg)?;
        kds.instance_id = hostname();
        let server = kuma_global::GlobalKds::start(kds, store.clone(), tokens.clone(), stopped())
            .await
            .context(
                "cannot start the KDS server (set KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT to use another port)",
            )?;
        info!(address = %server.local_addr, "KDS server listening");
        tasks.spawn(async move { server.wait().await.context("KDS server failed") });
    }
    if federated_zone {
        // KDS client: dial the global, sync both ways, reconnect (kuma-kds).
        let zc = &c.multizone.zone;
        let mut kds =
            kuma_kds::zone::ZoneClientConfig::new(zc.global_address.clone(), zc.name.clone());
        kds.root_ca_file = Some(zc.kds.root_ca_file.clone())
            .filter(|f| !f.is_empty())
            .map(Into::into);
        kds.tls_skip_verify = zc.kds.tls_skip_verify;
        kds.token_path = Some(zc.kds.auth.cp_token_path.clone())
            .filter(|f| !f.is_empty())
            .map(Into::into);
        kds.instance_id = hostname();
        kds.config_json = effective.to_string();
        let kds_store = store.clone();
        let kds_stop = stopped();
        tasks.spawn(async move {
            kuma_kds::zone::run(kds, kds_store, kds_stop, None)
                .await
                .context("invalid multizone.zone configuration")
        });
    }

    ready.store(true, Ordering::Release);
    info!(mode = mode.as_str(), "control plane ready");

    tokio::select! {
        _ = shutdown_signal() => info!("shutting down"),
        Some(res) = tasks.join_next() => {
            let _ = stop_tx.send(true);
            return match res {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e).context("component panicked"),
            };
        }
    }
    ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    while let Some(res) = tasks.join_next().await {
        if let Ok(Err(e)) = res {
            warn!(error = %e, "component stopped with an error");
        }
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "kuma-cp".into())
}
