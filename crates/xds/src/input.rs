//! What generation reads: views of the mesh's resources, as Kuma's JSON has them.

use kuma_policy::PolicySet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub const SERVICE_TAG: &str = "kuma.io/service";
pub const PROTOCOL_TAG: &str = "kuma.io/protocol";

/// A Dataplane's spec (the fields generation uses).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneSpec {
    #[serde(default)]
    pub networking: Networking,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Networking {
    #[serde(default)]
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_address: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<Inbound>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<Outbound>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparent_proxying: Option<TransparentProxying>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inbound {
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    #[serde(default)]
    pub ready: bool,
}

impl Inbound {
    /// Whether this inbound should receive traffic.
    pub fn is_ready(&self) -> bool {
        match self.state.as_deref() {
            Some("NotReady") | Some("Ignored") => false,
            Some(_) => true,
            None => self.health.as_ref().is_none_or(|h| h.ready),
        }
    }

    pub fn service(&self) -> Option<&str> {
        self.tags.get(SERVICE_TAG).map(String::as_str)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outbound {
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<BackendRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Admin {
    pub port: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransparentProxying {
    #[serde(default)]
    pub redirect_port_inbound: u32,
    #[serde(default)]
    pub redirect_port_outbound: u32,
}

/// A MeshService's spec and status (the fields generation uses).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshServiceSpec {
    #[serde(default)]
    pub selector: Selector,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_ref: Option<DataplaneRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataplaneRef {
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshServiceStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<Vip>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Address>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Vip {
    pub ip: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// One Dataplane of the mesh.
#[derive(Clone, Debug, PartialEq)]
pub struct DataplaneView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: DataplaneSpec,
}

/// One MeshService of the mesh.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshServiceView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: MeshServiceSpec,
    pub status: MeshServiceStatus,
}

impl MeshServiceView {
    /// Whether the service selects `dp` (any of its inbounds).
    pub fn selects(&self, dp: &DataplaneView) -> bool {
        if let Some(r) = &self.spec.selector.dataplane_ref {
            return r.name == dp.name;
        }
        match &self.spec.selector.dataplane_tags {
            Some(want) if !want.is_empty() => dp
                .spec
                .networking
                .inbound
                .iter()
                .any(|i| want.iter().all(|(k, v)| i.tags.get(k) == Some(v))),
            _ => false,
        }
    }
}

/// Everything generation reads for one mesh. Built once per change and
/// shared by every proxy of the mesh.
#[derive(Clone, Debug, Default)]
pub struct MeshContext {
    pub mesh: String,
    pub dataplanes: BTreeMap<String, Arc<DataplaneView>>,
    pub services: BTreeMap<String, Arc<MeshServiceView>>,
    /// MeshTimeout policies of the mesh, parsed once.
    pub timeouts: Arc<PolicySet>,
    /// Dataplanes known to be disconnected: not endpoints for anyone.
    pub offline: BTreeSet<String>,
}
