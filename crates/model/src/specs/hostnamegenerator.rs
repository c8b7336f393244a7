//! HostnameGenerator (hostnames for services), MeshOpenTelemetryBackend (a
//! shared OTLP collector reference), MeshZoneAddress (the address other zones
//! reach this zone's ingress at) and Workload (a named workload identity).

use super::common::{LabelSelector, dns1123_subdomain, is_dns_name, is_ip, port};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Generates hostnames for the services its selector matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostnameGenerator {
    /// Exactly one of the selectors.
    #[serde(default)]
    pub selector: HostnameSelector,
    /// Go-style template, e.g. `{{ .DisplayName }}.{{ .Zone }}.mesh.local`.
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<HostnameExtension>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostnameSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_service: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_external_service: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_multi_zone_service: Option<LabelSelector>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostnameExtension {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
}

/// A hostname assigned to a service (status of the service kinds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// `HostnameGenerator` or `Kubernetes`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname_generator_ref: Option<HostnameGeneratorRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostnameGeneratorRef {
    #[serde(default)]
    pub core_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostnameGeneratorStatus {
    #[serde(default)]
    pub hostname_generator_ref: HostnameGeneratorRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<super::identity::Condition>,
}

/// Renders a hostname template with stub values, as Kuma does to validate it.
fn render_stub(t: &str) -> Result<String, String> {
    super::identity::check_template(t)?;
    let mut out = String::new();
    let mut rest = t;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").unwrap_or(after.len());
        let action = after[..end].trim();
        out.push_str(match action {
            ".Name" => "name",
            ".DisplayName" => "displayname",
            ".Namespace" => "namespace",
            ".Mesh" => "mesh",
            ".Zone" => "zone",
            _ => "label",
        });
        rest = after.get(end + 2..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

impl Spec for HostnameGenerator {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        let s = &self.selector;
        let n = [
            s.mesh_service.is_some(),
            s.mesh_external_service.is_some(),
            s.mesh_multi_zone_service.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n != 1 {
            errs.at(
                &path.field("selector"),
                "exact one selector (meshService, meshExternalService) must be defined",
            );
        }
        let tp = path.field("template");
        if self.template.is_empty() {
            errs.at(&tp, "must not be empty");
        } else {
            match render_stub(&self.template) {
                Err(e) => errs.at(&tp, e),
                Ok(rendered) => {
                    if let Err(e) = dns1123_subdomain(&rendered) {
                        errs.at(&tp, format!("template renders to {rendered:?} which is not a valid DNS name: {e}"));
                    }
                }
            }
        }
        if let Some(e) = &self.extension
            && e.type_.is_empty()
        {
            errs.at(&path.field("extension").field("type"), "must not be empty");
        }
    }
}

// ---------------------------------------------------------------------------
// MeshOpenTelemetryBackend
// ---------------------------------------------------------------------------

/// An OpenTelemetry collector that MeshTrace, MeshMetric and MeshAccessLog refer to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshOpenTelemetryBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<OtelEndpoint>,
    /// `grpc` (default) or `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<OtelProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvPolicy>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OtelProtocol {
    Grpc,
    Http,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Only for `http`: base path of the OTLP endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EnvMode {
    Disabled,
    Optional,
    Required,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EnvPrecedence {
    ExplicitFirst,
    EnvFirst,
}

/// Whether `OTEL_*` variables on the dataplane may configure the exporter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<EnvMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precedence: Option<EnvPrecedence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_signal_overrides: Option<bool>,
}

impl Spec for MeshOpenTelemetryBackend {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        let Some(e) = &self.endpoint else { return };
        let ep = path.field("endpoint");
        if let Some(a) = &e.address {
            if a.is_empty() {
                errs.at(&ep.field("address"), "must not be empty");
            } else if !is_ip(a) && !is_dns_name(a) {
                errs.at(
                    &ep.field("address"),
                    "address has to be a valid IP or hostname",
                );
            }
        }
        if let Some(p) = e.port
            && !(1..=65535).contains(&p)
        {
            errs.at(&ep.field("port"), "port must be a valid (1-65535)");
        }
        if let Some(p) = e.path.as_deref().filter(|p| !p.is_empty()) {
            let pp = ep.field("path");
            if self.protocol.unwrap_or(OtelProtocol::Grpc) == OtelProtocol::Grpc {
                errs.at(&pp, "must not be set when protocol is grpc");
            }
            if !p.starts_with('/') {
                errs.at(&pp, "must start with /");
            }
            if p.contains(['?', '#']) {
                errs.at(&pp, "must not contain query or fragment");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// MeshZoneAddress
// ---------------------------------------------------------------------------

/// The address and port other zones use to reach this zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshZoneAddress {
    pub address: String,
    pub port: i32,
}

impl Spec for MeshZoneAddress {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        let ap = path.field("address");
        if self.address.is_empty() {
            errs.at(&ap, "must not be empty");
        }
        if self.address == "0.0.0.0" || self.address == "::" {
            errs.at(&ap, "must not be 0.0.0.0 or ::");
        }
        if !is_ip(&self.address) && !is_dns_name(&self.address) {
            errs.at(&ap, "must be a valid IP address or domain name");
        }
        port(
            u32::try_from(self.port).unwrap_or(0),
            &path.field("port"),
            errs,
        );
    }
}

// ---------------------------------------------------------------------------
// Workload
// ---------------------------------------------------------------------------

/// A workload identity that dataplanes join by label; no configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {}

impl Spec for Workload {
    fn validate(&self, ctx: &Context<'_>, _: &Path, errs: &mut Violations) {
        if ctx.name.len() > 253 {
            errs.add("name", "must not be longer than 253 characters");
        }
    }
}
