//! MeshHealthCheck: active health checking of upstream endpoints.

use super::common::{Duration, TO_SERVICES, TOP_MESH_DP, TargetRef, duration_positive};
use super::policy::{check_to, top_level};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Active health checks for the selected destinations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<MeshHealthCheckTo>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshHealthCheckTo {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub default: MeshHealthCheckConf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshHealthCheckConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_jitter: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_jitter: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_jitter_percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_traffic_on_panic: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_log_health_check_failures: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_traffic_interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_connection: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Base64 payload sent on connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// Base64 payloads expected in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers_to_add: Option<HealthCheckHeaders>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_statuses: Option<Vec<i32>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckHeaders {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<super::meshhttproute::HeaderKeyValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<Vec<super::meshhttproute::HeaderKeyValue>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

impl Spec for MeshHealthCheck {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        top_level(&self.target_ref, TOP_MESH_DP, false, path, errs);
        check_to(
            &self.to,
            TO_SERVICES,
            path,
            errs,
            |t| &t.target_ref,
            |t, p, errs| t.default.check(p, errs),
        );
    }
}

impl MeshHealthCheckConf {
    fn check(&self, path: &Path, errs: &mut Violations) {
        duration_positive(&self.interval, &path.field("interval"), errs);
        duration_positive(&self.timeout, &path.field("timeout"), errs);
        for (name, v) in [
            ("unhealthyThreshold", self.unhealthy_threshold),
            ("healthyThreshold", self.healthy_threshold),
        ] {
            if v.is_some_and(|v| v <= 0) {
                errs.at(&path.field(name), "must be greater than zero when defined");
            }
        }
        duration_positive(&self.initial_jitter, &path.field("initialJitter"), errs);
        duration_positive(&self.interval_jitter, &path.field("intervalJitter"), errs);
        if self
            .interval_jitter_percent
            .is_some_and(|v| !(0..=100).contains(&v))
        {
            errs.at(
                &path.field("intervalJitterPercent"),
                "must be in inclusive range [0, 100]",
            );
        }
        duration_positive(
            &self.no_traffic_interval,
            &path.field("noTrafficInterval"),
            errs,
        );
        if let Some(p) = &self.event_log_path
            && !super::common::is_file_path(p)
        {
            errs.at(
                &path.field("eventLogPath"),
                "must be a valid path when defined",
            );
        }
        if self.tcp.is_none() && self.http.is_none() && self.grpc.is_none() {
            errs.at(path, "must have at least one defined: http, tcp, grpc");
        }
        if let Some(http) = &self.http {
            let p = path.field("http");
            if let Some(path_value) = &http.path
                && path_value.is_empty()
            {
                errs.at(&p.field("path"), "must be defined");
            }
            for (i, s) in http.expected_statuses.iter().flatten().enumerate() {
                if !(100..600).contains(s) {
                    errs.at(
                        &p.field("expectedStatuses").index(i),
                        "must be in inclusive range [100, 599]",
                    );
                }
            }
        }
    }
}
