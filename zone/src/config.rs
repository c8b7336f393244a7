//! What the zone's dp-server needs to know. `kuma-cp` fills it from its
//! configuration (`dpServer.*`, `general.workDir`, `KUMA_*` variables).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// How proxies prove who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DpAuth {
    /// Dataplane tokens (RS256 JWTs signed with the mesh's keys). The default.
    DpToken,
    /// No authentication (`KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE=none`): development only.
    None,
}

impl DpAuth {
    /// Reads Kuma's `dpServer.authn.dpProxy.type` (`dpToken`, `none`; empty is the default).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" | "dpToken" => Ok(DpAuth::DpToken),
            "none" => Ok(DpAuth::None),
            other => Err(format!(
                "unknown dp-server authentication type {other:?} (dpToken, none)"
            )),
        }
    }
}

/// Which ADS flavour the bootstrap tells Envoy to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdsApi {
    Delta,
    StateOfTheWorld,
}

#[derive(Clone, Debug)]
pub struct DpServerConfig {
    pub interface: IpAddr,
    pub port: u16,
    /// PEM files; when both are `None`, a self-signed certificate is generated into `work_dir`.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub work_dir: PathBuf,
    pub auth: DpAuth,
    pub ads_api: AdsApi,
    /// How long a disconnected proxy's Dataplane is kept before it is deleted
    /// (`KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY`).
    pub deregistration_delay: Duration,
    /// How often DataplaneInsights (sent/ACK/NACK counts) are written
    /// (`KUMA_XDS_SERVER_DATAPLANE_STATUS_FLUSH_INTERVAL`).
    pub status_flush_interval: Duration,
    /// Quiet time that batches store changes before proxies are regenerated.
    pub debounce: Duration,
    /// Where MeshService VIPs are allocated from (Kuma's default 241.0.0.0/8).
    pub vip_cidr: (Ipv4Addr, u8),
    /// Name of this control plane instance (for insights).
    pub instance_id: String,
    /// Zone name, for generated MeshServices' labels.
    pub zone: String,
}

impl DpServerConfig {
    pub fn new(work_dir: PathBuf) -> Self {
        DpServerConfig {
            interface: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 5678,
            tls_cert_file: None,
            tls_key_file: None,
            work_dir,
            auth: DpAuth::DpToken,
            ads_api: AdsApi::Delta,
            deregistration_delay: Duration::from_secs(10),
            status_flush_interval: Duration::from_secs(10),
            debounce: Duration::from_millis(20),
            vip_cidr: (Ipv4Addr::new(241, 0, 0, 0), 8),
            instance_id: std::env::var("HOSTNAME").unwrap_or_else(|_| "kuma-cp".into()),
            zone: "default".into(),
        }
    }
}
