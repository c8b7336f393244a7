//! The zone end of KDS: dials the global, keeps both sync streams up, and
//! reconnects with backoff. While the global is away the zone store simply
//! stays as it was; the next connection converges it.
//!
//! ```text
//!  zone store --zone_to_global--> run_sender ---- ZoneToGlobalSync ----> global
//!  zone store <--StoreSink------- run_receiver <-- GlobalToZoneSync ---- global
//! ```

use crate::mapping::{self, ORIGIN_GLOBAL};
use crate::pb::ZoneHealthCheckRequest;
use crate::pb::global_kds_service_client::GlobalKdsServiceClient;
use crate::pb::kds_sync_service_client::KdsSyncServiceClient;
use crate::sync::{self, NoObserver, StoreSink, StoreSource, SyncConfig};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue, value::Kind};
use hyper_util::rt::TokioIo;
use kuma_model::ResourceKind;
use kuma_store::ResourceStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

/// Features this zone announces, in gRPC metadata and Node metadata (Kuma's names).
pub const FEATURES: &[&str] = &[
    "zone-token",
    "zone-ping-health",
    "hash-suffix",
    "hg-mz-selector",
];

/// How the zone reaches the global.
#[derive(Clone, Debug)]
pub struct ZoneClientConfig {
    /// `grpcs://HOST:PORT` (or `grpc://` for a plaintext global).
    pub global_address: String,
    pub zone: String,
    pub root_ca_file: Option<PathBuf>,
    pub tls_skip_verify: bool,
    /// File with the zone token; `None` sends no token.
    pub token_path: Option<PathBuf>,
    pub instance_id: String,
    pub version: String,
    /// The zone's effective configuration (JSON), shown on the global.
    pub config_json: String,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub sync: SyncConfig,
}

impl ZoneClientConfig {
    pub fn new(global_address: impl Into<String>, zone: impl Into<String>) -> Self {
        ZoneClientConfig {
            global_address: global_address.into(),
            zone: zone.into(),
            root_ca_file: None,
            tls_skip_verify: false,
            token_path: None,
            instance_id: "kuma-cp".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            config_json: "{}".into(),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            sync: SyncConfig::default(),
        }
    }
}

/// Why the zone cannot dial the global at all (configuration problems).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid global address {0:?}: expected grpcs://HOST:PORT")]
    Address(String),
    #[error("cannot read the KDS root CA file {path}: {source}")]
    RootCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the KDS root CA file {0} holds no PEM certificate")]
    RootCaEmpty(PathBuf),
}

/// One connection attempt's failure; the client retries after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to the global control plane: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot read the zone token {path}: {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the global control plane refused the stream: {0}")]
    Refused(tonic::Status),
    #[error(transparent)]
    Sync(#[from] sync::SyncError),
}

/// A [`Node`] as Kuma's zone sends it: id = zone name, metadata with the
/// version, config, control-plane id and features.
pub fn zone_node(cfg: &ZoneClientConfig) -> Node {
    let s = |v: &str| PbValue {
        kind: Some(Kind::StringValue(v.to_string())),
    };
    let version = Struct {
        fields: [(
            "kumaCp".to_string(),
            PbValue {
                kind: Some(Kind::StructValue(Struct {
                    fields: [("version".to_string(), s(&cfg.version))]
                        .into_iter()
                        .collect(),
                })),
            },
        )]
        .into_iter()
        .collect(),
    };
    let features = ListValue {
        values: FEATURES.iter().map(|f| s(f)).collect(),
    };
    Node {
        id: cfg.zone.clone(),
        metadata: Some(Struct {
            fields: [
                (
                    "version".to_string(),
                    PbValue {
                        kind: Some(Kind::StructValue(version)),
                    },
                ),
                ("config".to_string(), s(&cfg.config_json)),
                ("control-plane-id".to_string(), s(&cfg.instance_id)),
                (
                    "features".to_string(),
                    PbValue {
                        kind: Some(Kind::ListValue(features)),
                    },
                ),
            ]
            .into_iter()
            .collect(),
        }),
        ..Default::default()
    }
}

/// Accepts any server certificate (`KUMA_MULTIZONE_ZONE_KDS_TLS_SKIP_VERIFY`).
#[derive(Debug)]
struct SkipVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

struct Target {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
}

fn target(cfg: &ZoneClientConfig) -> Result<Target, ConfigError> {
    let bad = || ConfigError::Address(cfg.global_address.clone());
    let (tls, rest) = if let Some(r) = cfg.global_address.strip_prefix("grpcs://") {
        (true, r)
    } else if let Some(r) = cfg.global_address.strip_prefix("grpc://") {
        (false, r)
    } else {
        return Err(bad());
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(bad());
    }
    let tls = if tls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let mut config = if cfg.tls_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            if let Some(path) = &cfg.root_ca_file {
                let pem = std::fs::read(path).map_err(|source| ConfigError::RootCa {
                    path: path.clone(),
                    source,
                })?;
                for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(ConfigError::RootCaEmpty(path.clone()));
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Some(Arc::new(config))
    } else {
        None
    };
    Ok(Target { host, port, tls })
}

type BoxIo = Box<dyn IoStream>;
trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> IoStream for T {}

async fn dial(t: &Target) -> Result<Channel, tonic::transport::Error> {
    let host = t.host.clone();
    let port = t.port;
    let tls = t.tls.clone();
    let connector = tower::service_fn(move |_: http::Uri| {
        let host = host.clone();
        let tls = tls.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let io: BoxIo = match tls {
                Some(config) => {
                    let name = ServerName::try_from(host.clone())
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                    Box::new(
                        tokio_rustls::TlsConnector::from(config)
                            .connect(name, tcp)
                            .await?,
                    )
                }
                None => Box::new(tcp),
            };
            Ok::<_, std::io::Error>(TokioIo::new(io))
        }
    });
    Endpoint::from_shared(format!("http://{}:{}", t.host, t.port))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_with_connector(connector)
        .await
}

fn with_metadata<T>(msg: T, zone: &str, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let md = req.metadata_mut();
    if let Ok(v) = MetadataValue::try_from(zone) {
        md.insert("client-id", v);
    }
    for f in FEATURES {
        md.append("features", MetadataValue::from_static(f));
    }
    md.insert("version", MetadataValue::from_static("v3"));
    if let Some(t) = token
        && let Ok(v) = MetadataValue::try_from(format!("Bearer {t}"))
    {
        md.insert("authorization", v);
    }
    req
}

/// Runs the zone's KDS client until `stop` resolves, reconnecting forever.
/// `on_applied` is told the kind of every response applied (tests and
/// benchmarks wait on it instead of polling).
pub async fn run(
    cfg: ZoneClientConfig,
    store: Arc<dyn ResourceStore>,
    stop: impl std::future::Future<Output = ()>,
    on_applied: Option<mpsc::UnboundedSender<ResourceKind>>,
) -> Result<(), ConfigError> {
    let target = target(&cfg)?;
    tokio::pin!(stop);
    let mut backoff = cfg.backoff_initial;
    loop {
        let started = tokio::time::Instant::now();
        tokio::select! {
            _ = &mut stop => return Ok(()),
            res = session(&cfg, &target, store.clone(), on_applied.clone()) => {
                match res {
                    Ok(()) => info!(global = %cfg.global_address, "KDS session ended; reconnecting"),
                    Err(error) => warn!(global = %cfg.global_address, %error, "KDS session failed; reconnecting"),
                }
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = cfg.backoff_initial;
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

async fn session(
    cfg: &ZoneClientConfig,
    target: &Target,
    store: Arc<dyn ResourceStore>,
    on_applied: Option<mpsc::UnboundedSender<ResourceKind>>,
) -> Result<(), ConnectError> {
    let token = match &cfg.token_path {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|source| ConnectError::Token {
                    path: p.clone(),
                    source,
                })?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let channel = dial(target).await?;
    let max = cfg.sync.max_message_bytes;
    let mut sync_client = KdsSyncServiceClient::new(channel.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let mut health = GlobalKdsServiceClient::new(channel);
    let zone = cfg.zone.clone();
    let node = zone_node(cfg);

    // GlobalToZoneSync: we are the delta client.
    let (req_tx, req_rx) = mpsc::channel(64);
    let g2z = sync_client
        .global_to_zone_sync(with_metadata(
            ReceiverStream::new(req_rx),
            &zone,
            token.as_deref(),
        ))
        .await
        .map_err(ConnectError::Refused)?
        .into_inner();
    info!(global = %cfg.global_address, zone = %zone, "connected to the global control plane");
    let sink = Arc::new(StoreSink::new(
        store.clone(),
        mapping::accept_from_global,
        |r: &kuma_model::Resource| {
            r.meta
                .labels
                .get(kuma_model::labels::ORIGIN)
                .map(String::as_str)
                == Some(ORIGIN_GLOBAL)
        },
    ));
    let receiver = sync::run_receiver(
        sink,
        mapping::global_to_zone_kinds(),
        node,
        g2z,
        req_tx,
        on_applied,
    );

    // ZoneToGlobalSync: we are the delta server.
    let (resp_tx, resp_rx) = mpsc::channel(64);
    let z2g = sync_client
        .zone_to_global_sync(with_metadata(
            ReceiverStream::new(resp_rx),
            &zone,
            token.as_deref(),
        ))
        .await
        .map_err(ConnectError::Refused)?
        .into_inner();
    let zone_for_map = zone.clone();
    let source = Arc::new(StoreSource {
        store,
        map: move |r: &kuma_model::Resource| mapping::zone_to_global(r, &zone_for_map),
    });
    let sender = sync::run_sender(
        source,
        mapping::zone_to_global_kinds(),
        cfg.sync.clone(),
        Arc::new(NoObserver),
        z2g,
        resp_tx,
    );

    // HealthCheck at the interval the global asks for.
    let health_zone = zone.clone();
    let health_token = token.clone();
    let pinger = async move {
        let mut interval = Duration::from_secs(60);
        loop {
            match health
                .health_check(with_metadata(
                    ZoneHealthCheckRequest {},
                    &health_zone,
                    health_token.as_deref(),
                ))
                .await
            {
                Ok(resp) => {
                    if let Some(d) = resp.into_inner().interval
                        && d.seconds > 0
                    {
                        interval = Duration::from_secs(d.seconds as u64);
                    }
                }
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    return std::future::pending::<Result<(), ConnectError>>().await;
                }
                Err(s) => return Err(ConnectError::Refused(s)),
            }
            tokio::time::sleep(interval).await;
        }
    };

    tokio::select! {
        r = receiver => r.map_err(Into::into),
        r = sender => r.map_err(Into::into),
        r = pinger => r,
    }
}
