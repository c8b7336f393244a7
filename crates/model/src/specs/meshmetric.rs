//! MeshMetric: which proxy and application metrics are collected, and where
//! they are exposed or pushed.

use super::common::{
    BackendResourceRef, Duration, TOP_MESH_DP, TargetRef, duration_positive, port,
    validate_backend_resource_ref,
};
use super::policy::top_level;
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Metrics collection for the selected proxies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshMetric {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default)]
    pub default: MeshMetricConf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshMetricConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<Sidecar>,
    /// Application endpoints whose metrics are scraped and merged with the proxy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applications: Option<Vec<Application>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<MetricBackend>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles: Option<Profiles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_unused: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profiles {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_profiles: Option<Vec<Profile>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<Selector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<Selector>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProfileName {
    All,
    Basic,
    None,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    pub name: ProfileName,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorType {
    Prefix,
    Regex,
    Exact,
    Contains,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    #[serde(rename = "type")]
    pub type_: SelectorType,
    #[serde(rename = "match")]
    pub match_: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Application {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_metrics_path")]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub port: u32,
}

fn default_metrics_path() -> String {
    "/metrics/prometheus".into()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MetricBackendType {
    Prometheus,
    OpenTelemetry,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricBackend {
    #[serde(rename = "type")]
    pub type_: MetricBackendType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_telemetry: Option<OtelMetricBackend>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default = "default_prometheus_port")]
    pub port: u32,
    #[serde(default = "default_metrics_path")]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<PrometheusTls>,
}

fn default_prometheus_port() -> u32 {
    5670
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PrometheusTlsMode {
    Disabled,
    ProvidedTLS,
    ActiveMTLSBackend,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusTls {
    pub mode: PrometheusTlsMode,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelMetricBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<BackendResourceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<Duration>,
}

impl Spec for MeshMetric {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        top_level(&self.target_ref, TOP_MESH_DP, false, path, errs);
        let d = path.field("default");
        if let Some(profiles) = self
            .default
            .sidecar
            .as_ref()
            .and_then(|s| s.profiles.as_ref())
        {
            let pp = d.field("sidecar").field("profiles");
            for (name, list) in [
                ("include", &profiles.include),
                ("exclude", &profiles.exclude),
            ] {
                for (i, s) in list.iter().flatten().enumerate() {
                    if s.type_ == SelectorType::Regex && regex::Regex::new(&s.match_).is_err() {
                        errs.at(&pp.field(name).index(i).field("match"), "invalid regex");
                    }
                }
            }
        }
        for (i, a) in self.default.applications.iter().flatten().enumerate() {
            port(
                a.port,
                &d.field("applications").index(i).field("port"),
                errs,
            );
        }
        for (i, b) in self.default.backends.iter().flatten().enumerate() {
            let p = d.field("backends").index(i);
            match b.type_ {
                MetricBackendType::Prometheus => match &b.prometheus {
                    None => errs.at(&p.field("prometheus"), "must be defined"),
                    Some(prom) => port(prom.port, &p.field("prometheus").field("port"), errs),
                },
                MetricBackendType::OpenTelemetry => match &b.open_telemetry {
                    None => errs.at(&p.field("openTelemetry"), "must be defined"),
                    Some(o) => {
                        validate_backend_resource_ref(
                            &o.backend_ref,
                            &p.field("openTelemetry").field("backendRef"),
                            errs,
                        );
                        duration_positive(
                            &o.refresh_interval,
                            &p.field("openTelemetry").field("refreshInterval"),
                            errs,
                        );
                    }
                },
            }
        }
    }
}
