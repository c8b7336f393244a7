//! Read-only kinds the control plane computes: DataplaneInsight, ZoneInsight,
//! MeshInsight and ServiceInsight. Typed after Kuma's protobufs; unknown
//! fields are tolerated (a newer peer may send more over KDS) and validation
//! only checks shape.

use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// A protobuf uint64: JSON string on the wire (protojson), a number accepted too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[schemars(with = "String")]
pub struct ProtoU64(pub u64);

impl Serialize for ProtoU64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for ProtoU64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum N {
            Num(u64),
            Str(String),
        }
        match N::deserialize(d)? {
            N::Num(n) => Ok(ProtoU64(n)),
            N::Str(s) => s.parse().map(ProtoU64).map_err(serde::de::Error::custom),
        }
    }
}

fn is_zero_u64(v: &ProtoU64) -> bool {
    v.0 == 0
}

// ---------------------------------------------------------------------------
// DataplaneInsight
// ---------------------------------------------------------------------------

/// What the control plane knows about a dataplane's xDS connections and certificates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneInsight {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<DiscoverySubscription>,
    #[serde(rename = "mTLS", default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<DataplaneMtls>,
    /// Free-form metadata reported by kuma-dp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_telemetry: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneMtls {
    /// RFC 3339 timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expiration_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_certificate_regeneration: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub certificate_regenerations: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issued_backend: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supported_backends: Vec<String>,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// One xDS stream of a dataplane to a control plane instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoverySubscription {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub control_plane_instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_time: Option<String>,
    #[serde(default)]
    pub status: DiscoverySubscriptionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<DataplaneVersion>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub generation: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoverySubscriptionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    #[serde(default)]
    pub total: DiscoveryServiceStats,
    #[serde(default)]
    pub cds: DiscoveryServiceStats,
    #[serde(default)]
    pub eds: DiscoveryServiceStats,
    #[serde(default)]
    pub lds: DiscoveryServiceStats,
    #[serde(default)]
    pub rds: DiscoveryServiceStats,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryServiceStats {
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub responses_sent: ProtoU64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub responses_acknowledged: ProtoU64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub responses_rejected: ProtoU64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneVersion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kuma_dp: Option<KumaDpVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy: Option<EnvoyVersion>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KumaDpVersion {
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub git_tag: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub git_commit: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub build_date: String,
    #[serde(default)]
    pub kuma_cp_compatible: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyVersion {
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub build: String,
    #[serde(default)]
    pub kuma_dp_compatible: bool,
}

// ---------------------------------------------------------------------------
// ZoneInsight
// ---------------------------------------------------------------------------

/// What the global control plane knows about a zone's KDS connections.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZoneInsight {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<KdsSubscription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_admin_streams: Option<EnvoyAdminStreams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kds_streams: Option<KdsStreams>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyAdminStreams {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config_dump_global_instance_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stats_global_instance_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub clusters_global_instance_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KdsStreams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<KdsStream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_dump: Option<KdsStream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<KdsStream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_to_zone: Option<KdsStream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_to_global: Option<KdsStream>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KdsStream {
    #[serde(default)]
    pub global_instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KdsSubscription {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub global_instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_time: Option<String>,
    #[serde(default)]
    pub status: KdsSubscriptionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<KdsVersion>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub generation: u32,
    /// The zone control plane's configuration, as JSON text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config: String,
    #[serde(default)]
    pub auth_token_provided: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone_instance_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KdsSubscriptionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    #[serde(default)]
    pub total: DiscoveryServiceStats,
    /// Per resource type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stat: BTreeMap<String, DiscoveryServiceStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KdsVersion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kuma_cp: Option<KumaCpVersion>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KumaCpVersion {
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub git_tag: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub git_commit: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub build_date: String,
    #[serde(default)]
    pub kuma_cp_global_compatible: bool,
}

// ---------------------------------------------------------------------------
// MeshInsight
// ---------------------------------------------------------------------------

/// Counts of dataplanes and resources in one mesh.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshInsight {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplanes: Option<DataplaneStat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_versions: Option<DpVersions>,
    #[serde(rename = "mTLS", default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MeshInsightMtls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplanes_by_type: Option<DataplanesByType>,
    /// Per kind name (`MeshTimeout`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, ResourceStat>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneStat {
    #[serde(default)]
    pub total: u32,
    #[serde(default)]
    pub online: u32,
    #[serde(default)]
    pub offline: u32,
    #[serde(default)]
    pub partially_degraded: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DpVersions {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kuma_dp: BTreeMap<String, DataplaneStat>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub envoy: BTreeMap<String, DataplaneStat>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshInsightMtls {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub issued_backends: BTreeMap<String, DataplaneStat>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub supported_backends: BTreeMap<String, DataplaneStat>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataplanesByType {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard: Option<DataplaneStat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<DataplaneStat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_delegated: Option<DataplaneStat>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStat {
    #[serde(default)]
    pub total: u32,
}

// ---------------------------------------------------------------------------
// ServiceInsight
// ---------------------------------------------------------------------------

/// Per-service dataplane counts in one mesh.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInsight {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceStat>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    #[default]
    None,
    Offline,
    PartiallyDegraded,
    Online,
    NotAvailable,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceType {
    #[default]
    Internal,
    External,
    GatewayDelegated,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplanes: Option<ServiceDataplaneStat>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub issued_backends: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ServiceType>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address_port: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDataplaneStat {
    #[serde(default)]
    pub total: u32,
    #[serde(default)]
    pub online: u32,
    #[serde(default)]
    pub offline: u32,
}

macro_rules! shape_only {
    ($($t:ty),*) => {$(
        impl Spec for $t {
            /// Computed by the control plane: the types check the shape; there
            /// are no further rules.
            fn validate(&self, _: &Context<'_>, _: &Path, _: &mut Violations) {}
        }
    )*};
}

shape_only!(DataplaneInsight, ZoneInsight, MeshInsight, ServiceInsight);
