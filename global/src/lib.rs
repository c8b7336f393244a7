//! The global control plane's KDS server (gRPC over TLS, port 5685).
//!
//! ```text
//!  zone --TLS + client-id + zone token--> authenticate (zone = token's zone)
//!    GlobalToZoneSync: run_sender(store mapped by global_to_zone(zone))  -> ZoneInsight stats
//!    ZoneToGlobalSync: run_receiver -> StoreSink(accept_from_zone(zone), owned = zone's own)
//!    HealthCheck:      interval, ZoneInsight healthCheck
//! ```
//!
//! Everything received on a stream is attributed to the zone its token
//! names; a resource claiming another zone is rejected (NACK), and a zone
//! can only overwrite or delete resources it owns.

pub mod insight;
pub mod tls;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use futures::Stream;
use kuma_kds::mapping::{self, ORIGIN_ZONE};
use kuma_kds::pb::global_kds_service_server::{GlobalKdsService, GlobalKdsServiceServer};
use kuma_kds::pb::kds_sync_service_server::{KdsSyncService, KdsSyncServiceServer};
use kuma_kds::pb::{
    ClustersRequest, ClustersResponse, StatsRequest, StatsResponse, XdsConfigRequest,
    XdsConfigResponse, ZoneHealthCheckRequest, ZoneHealthCheckResponse,
};
use kuma_kds::sync::{self, StoreSink, StoreSource, SyncConfig};
use kuma_model::ResourceName;
use kuma_model::labels::{ORIGIN, ZONE};
use kuma_store::ResourceStore;
use kuma_tokens::TokenService;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

/// How zones prove who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KdsAuth {
    /// Zone tokens (`kumactl generate zone-token`), Kuma's default.
    CpToken,
    /// Trust the `client-id` the zone sends (development only).
    None,
}

impl KdsAuth {
    pub fn parse(s: &str) -> Result<KdsAuth, String> {
        match s {
            "cpToken" | "" => Ok(KdsAuth::CpToken),
            "none" => Ok(KdsAuth::None),
            other => Err(format!(
                "invalid value {other:?} for multizone.global.kds.auth.type (KUMA_MULTIZONE_GLOBAL_KDS_AUTH_TYPE): expected cpToken or none"
            )),
        }
    }
}

/// The KDS server's settings.
#[derive(Clone, Debug)]
pub struct GlobalKdsConfig {
    pub interface: String,
    pub port: u16,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub work_dir: PathBuf,
    pub auth: KdsAuth,
    pub instance_id: String,
    pub health_check_interval: Duration,
    pub sync: SyncConfig,
}

impl GlobalKdsConfig {
    pub fn new(work_dir: PathBuf) -> Self {
        GlobalKdsConfig {
            interface: "0.0.0.0".into(),
            port: 5685,
            tls_cert_file: None,
            tls_key_file: None,
            work_dir,
            auth: KdsAuth::CpToken,
            instance_id: "kuma-cp".into(),
            health_check_interval: Duration::from_secs(60),
            sync: SyncConfig::default(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen for KDS on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid KDS TLS configuration: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A running KDS server.
pub struct GlobalKds {
    pub local_addr: SocketAddr,
    /// The server certificate, for zones' `KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE`.
    pub cert_path: PathBuf,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GlobalKds {
    /// Binds and serves until `stop` resolves.
    pub async fn start(
        cfg: GlobalKdsConfig,
        store: Arc<dyn ResourceStore>,
        tokens: Arc<TokenService>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<GlobalKds, StartError> {
        let pair = tls::load_or_generate(
            cfg.tls_cert_file.as_deref(),
            cfg.tls_key_file.as_deref(),
            &cfg.work_dir,
        )?;
        let addr = format!("{}:{}", cfg.interface, cfg.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let service = KdsServer {
            store,
            tokens,
            cfg: cfg.clone(),
        };
        let max = cfg.sync.max_message_bytes;
        let router = tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&pair.cert_pem, &pair.key_pem),
            ))?
            .http2_keepalive_interval(Some(Duration::from_secs(15)))
            .add_service(
                KdsSyncServiceServer::new(service.clone())
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(GlobalKdsServiceServer::new(service));
        let incoming = TcpListenerStream::new(listener);
        let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop));
        Ok(GlobalKds {
            local_addr,
            cert_path: pair.cert_path,
            task,
        })
    }

    /// Waits for the server to stop.
    pub async fn wait(self) -> Result<(), tonic::transport::Error> {
        match self.task.await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}

#[derive(Clone)]
struct KdsServer {
    store: Arc<dyn ResourceStore>,
    tokens: Arc<TokenService>,
    cfg: GlobalKdsConfig,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl KdsServer {
    /// The zone this stream speaks for: the one its token proves.
    async fn authenticate<T>(&self, req: &Request<T>) -> Result<ResourceName, Status> {
        let md = req.metadata();
        let client_id = md
            .get("client-id")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::invalid_argument("\"client-id\" is not present in metadata"))?;
        if self.cfg.auth == KdsAuth::CpToken {
            let token = md
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(|t| t.strip_prefix("Bearer ").unwrap_or(t).trim())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    Status::unauthenticated(
                        "zone token is missing: generate one with `kumactl generate zone-token --zone ZONE --scope cp` and point KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH at it",
                    )
                })?;
            let claims = self
                .tokens
                .verify_zone_token(token)
                .await
                .map_err(|e| Status::unauthenticated(format!("zone token is invalid: {e}")))?;
            claims.identity.check_zone(client_id).map_err(|e| {
                Status::permission_denied(format!("zone token does not allow this zone: {e}"))
            })?;
            if !claims.identity.scope.is_empty() && !claims.identity.in_scope("cp") {
                return Err(Status::permission_denied(
                    "zone token has no \"cp\" scope: it cannot authenticate a zone control plane",
                ));
            }
        }
        ResourceName::new(client_id).map_err(|e| {
            Status::invalid_argument(format!("invalid zone name {client_id:?} in client-id: {e}"))
        })
    }

    async fn require_enabled(&self, zone: &ResourceName) -> Result<(), Status> {
        match insight::ensure_zone(self.store.as_ref(), zone).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Status::permission_denied(format!(
                "zone {zone} is disabled on the global control plane"
            ))),
            Err(e) => {
                warn!(%zone, error = %e, "cannot register the zone");
                Err(Status::unavailable("cannot register the zone; retry later"))
            }
        }
    }
}

#[tonic::async_trait]
impl KdsSyncService for KdsServer {
    type GlobalToZoneSyncStream = BoxStream<DeltaDiscoveryResponse>;
    type ZoneToGlobalSyncStream = BoxStream<DeltaDiscoveryRequest>;

    async fn global_to_zone_sync(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::GlobalToZoneSyncStream>, Status> {
        let zone = self.authenticate(&request).await?;
        self.require_enabled(&zone).await?;
        let token_provided = request.metadata().get("authorization").is_some();
        info!(%zone, "zone connected (GlobalToZoneSync)");
        let sub = insight::Subscription::new(
            self.store.clone(),
            zone.clone(),
            &self.cfg.instance_id,
            token_provided,
        );
        let zone_name = zone.to_string();
        let source = Arc::new(StoreSource {
            store: self.store.clone(),
            map: move |r: &kuma_model::Resource| mapping::global_to_zone(r, &zone_name),
        });
        let (tx, rx) = mpsc::channel(64);
        let inbound = request.into_inner();
        let cfg = self.cfg.sync.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(sub.clone().run_flusher(async move {
            let _ = done_rx.await;
        }));
        tokio::spawn(async move {
            let res = sync::run_sender(
                source,
                mapping::global_to_zone_kinds(),
                cfg,
                sub,
                inbound,
                tx,
            )
            .await;
            match res {
                Ok(()) => info!(%zone, "zone disconnected (GlobalToZoneSync)"),
                Err(error) => info!(%zone, %error, "zone stream ended (GlobalToZoneSync)"),
            }
            let _ = done_tx.send(());
        });
        Ok(Response::new(ok_stream(rx)))
    }

    async fn zone_to_global_sync(
        &self,
        request: Request<Streaming<DeltaDiscoveryResponse>>,
    ) -> Result<Response<Self::ZoneToGlobalSyncStream>, Status> {
        let zone = self.authenticate(&request).await?;
        self.require_enabled(&zone).await?;
        info!(%zone, "zone connected (ZoneToGlobalSync)");
        let accept_zone = zone.to_string();
        let owned_zone = zone.to_string();
        let sink = Arc::new(StoreSink::new(
            self.store.clone(),
            move |w| mapping::accept_from_zone(w, &accept_zone),
            move |r: &kuma_model::Resource| {
                r.meta.labels.get(ORIGIN).map(String::as_str) == Some(ORIGIN_ZONE)
                    && r.meta.labels.get(ZONE) == Some(&owned_zone)
            },
        ));
        let (tx, rx) = mpsc::channel(64);
        let inbound = request.into_inner();
        let node = Node {
            id: self.cfg.instance_id.clone(),
            ..Default::default()
        };
        tokio::spawn(async move {
            let res = sync::run_receiver(
                sink,
                mapping::zone_to_global_kinds(),
                node,
                inbound,
                tx,
                None,
            )
            .await;
            if let Err(error) = res {
                info!(%zone, %error, "zone stream ended (ZoneToGlobalSync)");
            }
        });
        Ok(Response::new(ok_stream(rx)))
    }
}

/// A channel of messages as a gRPC response stream.
fn ok_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> BoxStream<T> {
    Box::pin(futures::StreamExt::map(ReceiverStream::new(rx), Ok))
}

/// Keeps an envoy-admin stream open (the zone expects it to be) until the
/// zone closes its side. This control plane does not yet send requests on it.
fn hold_open<In, Out>(mut inbound: Streaming<In>) -> BoxStream<Out>
where
    In: Send + 'static,
    Out: Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<Out, Status>>(1);
    tokio::spawn(async move {
        while let Ok(Some(_)) = inbound.message().await {}
        drop(tx);
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl GlobalKdsService for KdsServer {
    type StreamXDSConfigsStream = BoxStream<XdsConfigRequest>;
    type StreamStatsStream = BoxStream<StatsRequest>;
    type StreamClustersStream = BoxStream<ClustersRequest>;

    async fn stream_xds_configs(
        &self,
        request: Request<Streaming<XdsConfigResponse>>,
    ) -> Result<Response<Self::StreamXDSConfigsStream>, Status> {
        self.authenticate(&request).await?;
        Ok(Response::new(hold_open(request.into_inner())))
    }

    async fn stream_stats(
        &self,
        request: Request<Streaming<StatsResponse>>,
    ) -> Result<Response<Self::StreamStatsStream>, Status> {
        self.authenticate(&request).await?;
        Ok(Response::new(hold_open(request.into_inner())))
    }

    async fn stream_clusters(
        &self,
        request: Request<Streaming<ClustersResponse>>,
    ) -> Result<Response<Self::StreamClustersStream>, Status> {
        self.authenticate(&request).await?;
        Ok(Response::new(hold_open(request.into_inner())))
    }

    async fn health_check(
        &self,
        request: Request<ZoneHealthCheckRequest>,
    ) -> Result<Response<ZoneHealthCheckResponse>, Status> {
        self.authenticate(&request).await?;
        let d = self.cfg.health_check_interval;
        Ok(Response::new(ZoneHealthCheckResponse {
            interval: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            }),
        }))
    }
}
