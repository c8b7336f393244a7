//! The zone control plane's data-plane side.
//!
//! ```text
//!  kuma-dp --POST /bootstrap--> dp-server (TLS :5678) --verifies token--> Envoy bootstrap
//!  Envoy  --ADS (delta / SotW)--> dp-server --auth, lifecycle (Dataplane, DataplaneInsight)
//!                                     ^
//!  store change feed --> sync: mesh views, MeshService generation (VIPs, hostnames),
//!                        dependency index -> affected proxies only -> debounce
//!                        -> kuma-xds generate -> SnapshotCache -> streams push deltas
//! ```

pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod inspect;
pub mod lifecycle;
pub mod meshservice;
pub mod server;
pub mod sync;
pub mod tls;
pub mod views;

pub use config::{AdsApi, DpAuth, DpServerConfig};

use kuma_store::ResourceStore;
use kuma_tokens::TokenService;
use kuma_xds::{AdsServer, SnapshotCache};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum DpServerError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running dp-server.
pub struct DpServer {
    pub local_addr: SocketAddr,
    /// The certificate it serves (kuma-dp's `--ca-cert-file` when self-signed).
    pub cert_file: PathBuf,
    pub cache: Arc<SnapshotCache>,
    pub sync: sync::SyncHandle,
    pub lifecycle: Arc<lifecycle::Lifecycle>,
    pub ads_stats: Arc<kuma_xds::server::AdsStats>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DpServer {
    /// Binds the port and starts serving, the sync task and the lifecycle.
    pub async fn start(
        config: DpServerConfig,
        store: Arc<dyn ResourceStore>,
    ) -> Result<DpServer, DpServerError> {
        let (cert, key) = tls::ensure_cert(
            config.tls_cert_file.as_deref(),
            config.tls_key_file.as_deref(),
            &config.work_dir,
        )?;
        let tls = tls::server_config(&cert, &key)?;
        let addr = SocketAddr::new(config.interface, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| DpServerError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| DpServerError::Bind { addr, source })?;

        let cache = Arc::new(SnapshotCache::new());
        let sync = sync::spawn(
            store.clone(),
            cache.clone(),
            sync::SyncConfig {
                debounce: config.debounce,
                vip_cidr: config.vip_cidr,
                zone: config.zone.clone(),
            },
        );
        let lifecycle = lifecycle::Lifecycle::new(
            store.clone(),
            sync.clone(),
            config.instance_id.clone(),
            config.deregistration_delay,
            config.status_flush_interval,
        );
        let authenticator =
            auth::DpAuthenticator::new(config.auth, Arc::new(TokenService::new(store.clone())));
        let ads = AdsServer::new(
            cache.clone(),
            Arc::new(auth::AdsAuth {
                auth: authenticator.clone(),
                store: store.clone(),
            }),
            lifecycle.clone(),
        );
        let ads_stats = ads.stats();
        let state = Arc::new(server::BootstrapState {
            store,
            auth: authenticator,
            port: local_addr.port(),
            ads: config.ads_api,
        });
        let router = server::router(state, ads);
        let task = tokio::spawn(server::serve(
            listener,
            tokio_rustls::TlsAcceptor::from(tls),
            router,
        ));
        Ok(DpServer {
            local_addr,
            cert_file: cert,
            cache,
            sync,
            lifecycle,
            ads_stats,
            task: Some(task),
        })
    }

    /// Runs until the server stops (it does not on its own).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for DpServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
