//! MeshTrace: distributed tracing backends, sampling and span tags.

use super::common::TargetRef;
use super::common::{
    BackendResourceRef, IntOrString, TOP_MESH_DP, is_url, validate_backend_resource_ref,
};
use super::policy::top_level;
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Tracing for the selected proxies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTrace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default)]
    pub default: MeshTraceConf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTraceConf {
    /// Zero or one backend; none disables tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<TraceBackend>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<TraceTag>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TraceBackendType {
    Zipkin,
    Datadog,
    OpenTelemetry,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceBackend {
    #[serde(rename = "type")]
    pub type_: TraceBackendType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog: Option<DatadogBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_telemetry: Option<OtelTraceBackend>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZipkinBackend {
    pub url: String,
    #[serde(rename = "traceId128bit", default)]
    pub trace_id_128bit: bool,
    /// `httpJson` (default) or `httpProto`.
    #[serde(default = "default_zipkin_api")]
    pub api_version: String,
    #[serde(default = "default_true")]
    pub shared_span_context: bool,
}

fn default_zipkin_api() -> String {
    "httpJson".into()
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatadogBackend {
    /// `http://host:port` of the Datadog agent.
    pub url: String,
    #[serde(default)]
    pub split_service: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelTraceBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<BackendResourceRef>,
}

/// Sampling percentages, 0-100.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sampling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overall: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<IntOrString>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceTag {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderTag>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderTag {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

impl Spec for MeshTrace {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        top_level(&self.target_ref, TOP_MESH_DP, false, path, errs);
        let d = path.field("default");
        let bp = d.field("backends");
        match &self.default.backends {
            None => errs.at(&bp, "must be defined"),
            Some(b) if b.len() > 1 => errs.at(&bp, "must have zero or one backend defined"),
            Some(b) => {
                for (i, backend) in b.iter().enumerate() {
                    check_backend(backend, &bp.index(i), errs);
                }
            }
        }
        if let Some(s) = &self.default.sampling {
            for (name, v) in [
                ("overall", &s.overall),
                ("client", &s.client),
                ("random", &s.random),
            ] {
                match v.as_ref().map(IntOrString::as_f64) {
                    Some(None) => {
                        errs.at(&d.field("sampling").field(name), "string is not a number")
                    }
                    Some(Some(v)) if !(0.0..=100.0).contains(&v) => errs.at(
                        &d.field("sampling").field(name),
                        "must be between 0 and 100",
                    ),
                    _ => {}
                }
            }
        }
        for (i, t) in self.default.tags.iter().flatten().enumerate() {
            let p = d.field("tags").index(i);
            if t.name.is_empty() {
                errs.at(&p.field("name"), "must not be empty");
            }
            if t.literal.is_some() == t.header.is_some() {
                errs.at(&p, "tag must have only one type defined: header, literal");
            }
        }
    }
}

fn check_backend(b: &TraceBackend, path: &Path, errs: &mut Violations) {
    match b.type_ {
        TraceBackendType::Zipkin => match &b.zipkin {
            None => errs.at(&path.field("zipkin"), "must be defined"),
            Some(z) if z.url.is_empty() => {
                errs.at(&path.field("zipkin").field("url"), "must not be empty")
            }
            Some(z) if !is_url(&z.url) => {
                errs.at(&path.field("zipkin").field("url"), "must be a valid url")
            }
            Some(_) => {}
        },
        TraceBackendType::Datadog => match &b.datadog {
            None => errs.at(&path.field("datadog"), "must be defined"),
            Some(dd) => {
                let up = path.field("datadog").field("url");
                if !is_url(&dd.url) {
                    errs.at(&up, "must be a valid url");
                } else if !dd.url.starts_with("http://") {
                    errs.at(&up, "scheme must be http");
                } else {
                    let rest = &dd.url["http://".len()..];
                    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
                    let tail = &rest[authority.len()..];
                    // The agent URL is host and port only.
                    for (name, present) in [
                        ("user", authority.contains('@')),
                        (
                            "path",
                            tail.split(['?', '#']).next().is_some_and(|p| !p.is_empty()),
                        ),
                        ("query", tail.contains('?')),
                        ("fragment", tail.contains('#')),
                    ] {
                        if present {
                            errs.at(&up, format!("{name} must not be defined"));
                        }
                    }
                    match authority.rsplit_once(':') {
                        None => errs.at(&up, "port must be defined"),
                        Some((_, port)) if !port.parse::<u16>().is_ok_and(|p| p > 0) => {
                            errs.at(&up, "port must be a valid (1-65535)")
                        }
                        Some(_) => {}
                    }
                }
            }
        },
        TraceBackendType::OpenTelemetry => match &b.open_telemetry {
            None => errs.at(&path.field("openTelemetry"), "must be defined"),
            Some(o) => validate_backend_resource_ref(
                &o.backend_ref,
                &path.field("openTelemetry").field("backendRef"),
                errs,
            ),
        },
    }
}
