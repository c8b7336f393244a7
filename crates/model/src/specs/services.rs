//! The service kinds: MeshService (a group of dataplane inbounds in one
//! zone), MeshExternalService (a destination outside the mesh) and
//! MeshMultiZoneService (MeshServices from several zones behind one name).

use super::common::{
    LabelSelector, PROTOCOLS, SecureDataSource, SecureDataSourceType, is_dns_name, is_ip,
    rfc1035_name, supported_app_protocol, validate_secure_data_source,
};
use super::meshtls::TlsVersionRange;
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------
// MeshService
// ---------------------------------------------------------------------------

/// A service: the dataplanes it selects and the ports it exposes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshService {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MeshServiceState>,
    #[serde(default)]
    pub selector: MeshServiceSelector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<MeshServicePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identities: Option<Vec<MeshServiceIdentity>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MeshServiceState {
    Available,
    Unavailable,
}

/// At most one of `dataplaneRef`, `dataplaneLabels` and `dataplaneTags`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshServiceSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_ref: Option<DataplaneRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_labels: Option<LabelSelector>,
    /// Kuma 2.x form: dataplanes whose inbounds carry all of these tags. The
    /// control plane uses it for MeshServices it generates from `kuma.io/service`
    /// tags, so those stay valid (and re-appliable) resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_tags: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataplaneRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: i32,
    /// Port number or inbound name on the selected dataplanes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<super::common::IntOrString>,
    /// http, http2, grpc or tcp (default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app_protocol: String,
}

impl MeshServicePort {
    /// The port's name, or its number when unnamed.
    pub fn section_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.port.to_string())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MeshServiceIdentityType {
    SpiffeID,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshServiceIdentity {
    #[serde(rename = "type")]
    pub type_: MeshServiceIdentityType,
    pub value: String,
}

/// What the control plane reports about a MeshService (kept by the envelope
/// as raw JSON; typed here for consumers).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshServiceStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<super::hostnamegenerator::Address>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<Vip>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostname_generators: Vec<super::hostnamegenerator::HostnameGeneratorStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_proxies: Option<DataplaneProxies>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Vip {
    #[serde(default)]
    pub ip: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsStatus {
    /// `Ready` or `NotReady`.
    #[serde(default)]
    pub status: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneProxies {
    #[serde(default)]
    pub connected: i64,
    #[serde(default)]
    pub healthy: i64,
    #[serde(default)]
    pub total: i64,
}

fn app_protocol(p: &str, path: &Path, errs: &mut Violations) {
    if !p.is_empty() && !supported_app_protocol(p) {
        errs.at(
            path,
            format!("appProtocol must be one of: {}", PROTOCOLS.join(", ")),
        );
    }
}

impl Spec for MeshService {
    fn validate(&self, ctx: &Context<'_>, path: &Path, errs: &mut Violations) {
        rfc1035_name(ctx.name, errs);
        for (i, p) in self.ports.iter().enumerate() {
            let pp = path.field("ports").index(i);
            if !(1..=65535).contains(&p.port) {
                errs.at(&pp.field("port"), "port must be a valid (1-65535)");
            }
            app_protocol(&p.app_protocol, &pp.field("appProtocol"), errs);
        }
        let selectors = [
            self.selector.dataplane_ref.is_some(),
            self.selector.dataplane_labels.is_some(),
            self.selector.dataplane_tags.is_some(),
        ];
        if selectors.iter().filter(|s| **s).count() > 1 {
            errs.at(
                &path.field("selector"),
                "must specify only one of: dataplaneRef, dataplaneLabels or dataplaneTags",
            );
        }
        for (k, v) in self.selector.dataplane_tags.iter().flatten() {
            let tp = path.field("selector").field("dataplaneTags").key(k);
            if k.is_empty() || v.is_empty() {
                errs.at(&tp, "tag name and value cannot be empty");
            }
        }
        for (i, id) in self.identities.iter().flatten().enumerate() {
            if let Err(e) = super::common::spiffe_id(&id.value) {
                errs.at(
                    &path.field("identities").index(i).field("value"),
                    format!("must be a valid Spiffe ID: {e}"),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// MeshExternalService
// ---------------------------------------------------------------------------

/// A destination outside the mesh, reachable through the mesh's egress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshExternalService {
    /// The port and protocol clients use.
    #[serde(rename = "match")]
    pub match_: ExternalMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Extension>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<ExternalEndpoint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ExternalTls>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ExternalMatchType {
    #[default]
    HostnameGenerator,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalMatch {
    #[serde(rename = "type", default)]
    pub type_: ExternalMatchType,
    pub port: i32,
    /// tcp (default), http, http2 or grpc.
    #[serde(default = "default_tcp")]
    pub protocol: String,
}

fn default_tcp() -> String {
    "tcp".into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Extension {
    #[serde(rename = "type")]
    pub type_: String,
    /// Free-form configuration of the extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalEndpoint {
    /// IP address, hostname, or `unix://` socket path.
    pub address: String,
    #[serde(default)]
    pub port: i32,
    /// Lower values are preferred; failover goes to the next priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalTls {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<TlsVersionRange>,
    #[serde(default)]
    pub allow_renegotiation: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VerificationMode {
    SkipSAN,
    SkipCA,
    SkipAll,
    Secured,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Verification {
    #[serde(default = "default_secured")]
    pub mode: VerificationMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Option<Vec<SanMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<SecureDataSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<SecureDataSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<SecureDataSource>,
}

fn default_secured() -> VerificationMode {
    VerificationMode::Secured
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SanMatchType {
    Exact,
    Prefix,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SanMatch {
    #[serde(rename = "type")]
    pub type_: SanMatchType,
    pub value: String,
}

/// Status the control plane fills for a MeshExternalService.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshExternalServiceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Vip>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<super::hostnamegenerator::Address>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostname_generators: Vec<super::hostnamegenerator::HostnameGeneratorStatus>,
}

impl Spec for MeshExternalService {
    fn validate(&self, ctx: &Context<'_>, path: &Path, errs: &mut Violations) {
        rfc1035_name(ctx.name, errs);
        let m = path.field("match");
        if !(1..=65535).contains(&self.match_.port) {
            errs.at(&m.field("port"), "port must be a valid (1-65535)");
        }
        if !supported_app_protocol(&self.match_.protocol) {
            errs.at(
                &m.field("protocol"),
                "\"protocol\" must be one of [\"tcp\", \"grpc\", \"http\", \"http2\"]",
            );
        }
        match &self.extension {
            None => {
                for (i, e) in self.endpoints.iter().flatten().enumerate() {
                    let ep = path.field("endpoints").index(i);
                    if e.address.starts_with("unix://") {
                        continue;
                    }
                    if is_ip(&e.address) || is_dns_name(&e.address) {
                        if !(1..=65535).contains(&e.port) {
                            errs.at(&ep.field("port"), "port must be a valid (1-65535)");
                        }
                    } else {
                        errs.at(
                            &ep.field("address"),
                            "address has to be a valid IP or hostname",
                        );
                    }
                }
                if let Some(tls) = &self.tls {
                    let tp = path.field("tls");
                    if let Some(v) = &tls.version {
                        super::meshtls::validate_tls_version(v, &tp.field("version"), errs);
                    }
                    if let Some(v) = &tls.verification {
                        verification(v, &tp.field("verification"), errs);
                    }
                }
            }
            Some(ext) => {
                if ext.type_.is_empty() {
                    errs.at(&path.field("extension").field("type"), "must not be empty");
                }
                if let Some(v) = self.tls.as_ref().and_then(|t| t.verification.as_ref()) {
                    data_sources(v, &path.field("tls").field("verification"), errs);
                }
            }
        }
    }
}

fn verification(v: &Verification, path: &Path, errs: &mut Violations) {
    if let Some(sn) = &v.server_name
        && !is_dns_name(sn)
    {
        errs.at(&path.field("serverName"), "must be a valid DNS name");
    }
    if v.client_cert.is_some() && v.client_key.is_none() {
        errs.at(
            &path.field("clientKey"),
            "must be defined when clientCert is defined",
        );
    }
    if v.client_key.is_some() && v.client_cert.is_none() {
        errs.at(
            &path.field("clientCert"),
            "must be defined when clientKey is defined",
        );
    }
    data_sources(v, path, errs);
}

/// File and EnvVar sources would be read from the control plane's own host:
/// only Secret references and inline values are accepted.
fn data_sources(v: &Verification, path: &Path, errs: &mut Violations) {
    for (name, s) in [
        ("caCert", &v.ca_cert),
        ("clientCert", &v.client_cert),
        ("clientKey", &v.client_key),
    ] {
        let Some(s) = s else { continue };
        let p = path.field(name);
        if matches!(
            s.type_,
            SecureDataSourceType::File | SecureDataSourceType::EnvVar
        ) {
            errs.at(
                &p.field("type"),
                format!("{:?} must be one of: Secret, InsecureInline", s.type_),
            );
        } else {
            validate_secure_data_source(s, &p, errs);
        }
    }
}

// ---------------------------------------------------------------------------
// MeshMultiZoneService
// ---------------------------------------------------------------------------

/// One service name for MeshServices in several zones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshMultiZoneService {
    pub selector: MultiZoneSelector,
    pub ports: Vec<MultiZonePort>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MultiZoneSelector {
    /// Labels of the MeshServices grouped by this service.
    pub mesh_service: LabelSelector,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MultiZonePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: i32,
    #[serde(default = "default_tcp")]
    pub app_protocol: String,
}

/// Status the control plane fills for a MeshMultiZoneService.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshMultiZoneServiceStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<super::hostnamegenerator::Address>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<Vip>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mesh_services: Vec<MatchedMeshService>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostname_generators: Vec<super::hostnamegenerator::HostnameGeneratorStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchedMeshService {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mesh: String,
}

impl Spec for MeshMultiZoneService {
    fn validate(&self, ctx: &Context<'_>, path: &Path, errs: &mut Violations) {
        rfc1035_name(ctx.name, errs);
        if self
            .selector
            .mesh_service
            .match_labels
            .as_ref()
            .is_none_or(|m| m.is_empty())
        {
            errs.at(
                &path
                    .field("selector")
                    .field("meshService")
                    .field("matchLabels"),
                "cannot be empty",
            );
        }
        if self.ports.is_empty() {
            errs.at(&path.field("ports"), "cannot be empty");
        }
        for (i, p) in self.ports.iter().enumerate() {
            let pp = path.field("ports").index(i);
            if p.name.as_deref() == Some("") {
                errs.at(&pp.field("name"), "must not be empty");
            }
            if !(1..=65535).contains(&p.port) {
                errs.at(&pp.field("port"), "port must be a valid (1-65535)");
            }
            app_protocol(&p.app_protocol, &pp.field("appProtocol"), errs);
        }
    }
}
