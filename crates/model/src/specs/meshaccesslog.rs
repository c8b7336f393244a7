//! MeshAccessLog: where and how proxies log each request or connection.

use super::common::{
    BackendResourceRef, Match, TO_ALL, TOP_MESH_DP, TargetRef, validate_backend_resource_ref,
    validate_matches,
};
use super::policy::{check_rules, check_to, len, top_level};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// Access logging for inbound (`rules`) or outbound (`to`) traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshAccessLog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<MeshAccessLogTo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<MeshAccessLogRule>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshAccessLogTo {
    pub target_ref: TargetRef,
    pub default: MeshAccessLogConf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshAccessLogRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<Match>>,
    pub default: MeshAccessLogConf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshAccessLogConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<AccessLogBackend>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AccessLogBackendType {
    Tcp,
    File,
    OpenTelemetry,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogBackend {
    #[serde(rename = "type")]
    pub type_: AccessLogBackendType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_telemetry: Option<OtelAccessLogBackend>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// `host:port` of a TCP log collector.
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// File the proxy writes to, e.g. `/dev/stdout`.
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelAccessLogBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<KeyValue>>,
    /// Log record body: any JSON value, with `%COMMAND%` placeholders in strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<BackendResourceRef>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FormatType {
    Plain,
    Json,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Format {
    #[serde(rename = "type")]
    pub type_: FormatType,
    /// Envoy format string, e.g. `[%START_TIME%] %KUMA_SOURCE_SERVICE%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Vec<KeyValue>>,
    #[serde(default)]
    pub omit_empty_values: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

static OTEL_ATTR: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^[a-z](?:[a-z0-9]|[._][a-z0-9])*$").expect("static regex")
});

impl Spec for MeshAccessLog {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        let (to, rules) = (len(&self.to), len(&self.rules));
        top_level(&self.target_ref, TOP_MESH_DP, rules > 0, path, errs);
        if to > 0 && rules > 0 {
            errs.at(path, "'to' must be empty when 'rules' is defined");
        }
        if to == 0 && rules == 0 {
            errs.at(path, "at least one of 'to' or 'rules' has to be defined");
        }
        check_rules(&self.rules, path, errs, |r, p, errs| {
            validate_matches(&r.matches, &p.field("matches"), errs);
            r.default.check(&p.field("default"), errs);
        });
        check_to(
            &self.to,
            TO_ALL,
            path,
            errs,
            |t| &t.target_ref,
            |t, p, errs| t.default.check(p, errs),
        );
    }
}

impl MeshAccessLogConf {
    fn check(&self, path: &Path, errs: &mut Violations) {
        let Some(backends) = &self.backends else {
            errs.at(&path.field("backends"), "must be defined");
            return;
        };
        for (i, b) in backends.iter().enumerate() {
            let p = path.field("backends").index(i);
            match b.type_ {
                AccessLogBackendType::File => match &b.file {
                    None => errs.at(&p.field("file"), "must be defined"),
                    Some(f) => {
                        if !super::common::is_file_path(&f.path) {
                            errs.at(
                                &p.field("file").field("path"),
                                "file backend requires a valid path",
                            );
                        }
                        format(&f.format, &p.field("file").field("format"), errs);
                    }
                },
                AccessLogBackendType::Tcp => match &b.tcp {
                    None => errs.at(&p.field("tcp"), "must be defined"),
                    Some(t) => {
                        if !valid_tcp_address(&t.address) {
                            errs.at(
                                &p.field("tcp").field("address"),
                                "tcp backend requires valid address",
                            );
                        }
                        format(&t.format, &p.field("tcp").field("format"), errs);
                    }
                },
                AccessLogBackendType::OpenTelemetry => match &b.open_telemetry {
                    None => errs.at(&p.field("openTelemetry"), "must be defined"),
                    Some(o) => {
                        let op = p.field("openTelemetry");
                        validate_backend_resource_ref(
                            &o.backend_ref,
                            &op.field("backendRef"),
                            errs,
                        );
                        for (j, a) in o.attributes.iter().flatten().enumerate() {
                            otel_attribute_name(
                                &a.key,
                                &op.field("attributes").index(j).field("key"),
                                errs,
                            );
                        }
                    }
                },
            }
        }
    }
}

/// `host:port`, optionally with a scheme (`tcp://`).
fn valid_tcp_address(addr: &str) -> bool {
    let addr = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
}

fn otel_attribute_name(key: &str, path: &Path, errs: &mut Violations) {
    if key.is_empty() {
        errs.at(path, "must be defined");
    } else if key.contains('%') {
        errs.at(path, "must be a static OpenTelemetry attribute name; placeholders are only supported in values");
    } else if key.starts_with("otel.") {
        errs.at(
            path,
            "must not use the reserved OpenTelemetry prefix 'otel.'",
        );
    } else if !OTEL_ATTR.is_match(key) {
        errs.at(path, "must start with a lowercase letter, use only lowercase letters, digits, '.' or '_', avoid consecutive delimiters, and end with a letter or digit");
    }
}

fn format(f: &Option<Format>, path: &Path, errs: &mut Violations) {
    let Some(f) = f else { return };
    match f.type_ {
        FormatType::Plain => match &f.plain {
            None => errs.at(&path.field("plain"), "must be defined"),
            Some(p) if p.is_empty() => errs.at(&path.field("plain"), "must not be empty"),
            Some(_) => {}
        },
        FormatType::Json => match &f.json {
            None => errs.at(&path.field("json"), "must be defined"),
            Some(j) if j.is_empty() => errs.at(&path.field("json"), "must not be empty"),
            Some(j) => {
                for (i, kv) in j.iter().enumerate() {
                    let p = path.field("json").index(i);
                    if kv.key.is_empty() {
                        errs.at(&p.field("key"), "key cannot be empty");
                    }
                    if kv.value.is_empty() {
                        errs.at(&p.field("value"), "value cannot be empty");
                    }
                    // Both end up inside a JSON string literal in Envoy's format.
                    let breaks_json =
                        |s: &str| s.contains(['"', '\\']) || s.chars().any(char::is_control);
                    if breaks_json(&kv.key) || breaks_json(&kv.value) {
                        errs.at(&p, "is not a valid JSON object");
                    }
                }
            }
        },
    }
}
