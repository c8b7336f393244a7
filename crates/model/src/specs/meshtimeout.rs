//! MeshTimeout: connection, idle and HTTP timeouts for outbound (`to`) and
//! inbound (`rules`) traffic.

use super::common::{
    Duration, Match, RefRules, TO_ALL, TOP_MESH_DP, TargetRef, TargetRefKind,
    duration_not_negative, duration_positive, has_spiffe_match, validate_matches,
    validate_target_ref,
};
use super::policy::{sections_exclusive, top_level};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Timeout limits for service-to-service traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTimeout {
    /// The proxies this policy applies to; all proxies of the mesh when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// Outbound timeouts, per group of destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<MeshTimeoutTo>>,
    /// Inbound timeouts, optionally conditioned on the traffic source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<MeshTimeoutRule>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTimeoutTo {
    /// The destinations this entry configures.
    pub target_ref: TargetRef,
    #[serde(default)]
    pub default: MeshTimeoutConf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTimeoutRule {
    /// Predicates on the source of the traffic; all inbound traffic when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<Match>>,
    #[serde(default)]
    pub default: MeshTimeoutConf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTimeoutConf {
    /// How long to wait for a TCP connection to be established. Default 5s; cannot be 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_timeout: Option<Duration>,
    /// Period without bytes sent or received after which a connection is closed. 0 disables it. Default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// HTTP specific timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<MeshTimeoutHttp>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTimeoutHttp {
    /// Time to receive the entire request. 0 disables it. Default 15s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Duration>,
    /// Time a stream may exist without activity. 0 disables it. Default 30m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_timeout: Option<Duration>,
    /// Maximum lifetime of a stream. Disabled by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stream_duration: Option<Duration>,
    /// Time after which a connection is drained. Disabled by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<Duration>,
    /// Time to receive the request headers. Disabled by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers_timeout: Option<Duration>,
}

impl Spec for MeshTimeout {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        let inbound = self.rules.as_ref().is_some_and(|r| !r.is_empty());
        top_level(&self.target_ref, TOP_MESH_DP, inbound, path, errs);
        sections_exclusive(
            self.to.as_deref().unwrap_or_default().len(),
            self.rules.as_deref().unwrap_or_default().len(),
            path,
            errs,
        );
        let top = TargetRef::kind_or_mesh(&self.target_ref);
        for (i, to) in self.to.iter().flatten().enumerate() {
            let p = path.field("to").index(i);
            let kinds: &[TargetRefKind] = if top == TargetRefKind::MeshHTTPRoute {
                &[TargetRefKind::Mesh, TargetRefKind::MeshExternalService]
            } else {
                TO_ALL
            };
            validate_target_ref(
                &to.target_ref,
                RefRules {
                    kinds,
                    inbound: false,
                },
                &p.field("targetRef"),
                errs,
            );
            to.default.check(top, &p.field("default"), errs);
        }
        for (i, rule) in self.rules.iter().flatten().enumerate() {
            let p = path.field("rules").index(i);
            validate_matches(&rule.matches, &p.field("matches"), errs);
            if has_spiffe_match(&rule.matches) {
                rule.default
                    .check_source_conditioned(&p.field("default"), errs);
            }
            rule.default.check(top, &p.field("default"), errs);
        }
    }
}

impl MeshTimeoutConf {
    fn check(&self, top: TargetRefKind, path: &Path, errs: &mut Violations) {
        if self.connection_timeout.is_none() && self.idle_timeout.is_none() && self.http.is_none() {
            errs.at(path, "at least one timeout should be configured");
            return;
        }
        if top == TargetRefKind::MeshHTTPRoute {
            let msg = "can't be specified when top-level TargetRef is referencing MeshHTTPRoute";
            self.forbid_connection_level(path, msg, errs);
        }
        duration_positive(
            &self.connection_timeout,
            &path.field("connectionTimeout"),
            errs,
        );
        duration_not_negative(&self.idle_timeout, &path.field("idleTimeout"), errs);
        if let Some(http) = &self.http {
            let p = path.field("http");
            if http.request_timeout.is_none()
                && http.stream_idle_timeout.is_none()
                && http.max_stream_duration.is_none()
                && http.max_connection_duration.is_none()
            {
                errs.at(
                    &p,
                    "at least one timeout in this section should be configured",
                );
            }
            duration_not_negative(&http.request_timeout, &p.field("requestTimeout"), errs);
            duration_not_negative(
                &http.stream_idle_timeout,
                &p.field("streamIdleTimeout"),
                errs,
            );
            duration_not_negative(
                &http.max_stream_duration,
                &p.field("maxStreamDuration"),
                errs,
            );
            duration_not_negative(
                &http.max_connection_duration,
                &p.field("maxConnectionDuration"),
                errs,
            );
            duration_not_negative(
                &http.request_headers_timeout,
                &p.field("requestHeadersTimeout"),
                errs,
            );
        }
    }

    fn forbid_connection_level(&self, path: &Path, msg: &str, errs: &mut Violations) {
        if self.connection_timeout.is_some() {
            errs.at(&path.field("connectionTimeout"), msg);
        }
        if self.idle_timeout.is_some() {
            errs.at(&path.field("idleTimeout"), msg);
        }
        if let Some(http) = &self.http {
            if http.max_stream_duration.is_some() {
                errs.at(&path.field("http").field("maxStreamDuration"), msg);
            }
            if http.max_connection_duration.is_some() {
                errs.at(&path.field("http").field("maxConnectionDuration"), msg);
            }
        }
    }

    /// Timeouts set before the source identity is known cannot depend on it.
    fn check_source_conditioned(&self, path: &Path, errs: &mut Violations) {
        let msg = "can't be specified when matches contain spiffeID because this field cannot be conditioned on source identity";
        if self.connection_timeout.is_some() {
            errs.at(&path.field("connectionTimeout"), msg);
        }
        if self.idle_timeout.is_some() {
            errs.at(&path.field("idleTimeout"), msg);
        }
        if let Some(http) = &self.http {
            let p = path.field("http");
            if http.request_headers_timeout.is_some() {
                errs.at(&p.field("requestHeadersTimeout"), msg);
            }
            if http.max_stream_duration.is_some() {
                errs.at(&p.field("maxStreamDuration"), msg);
            }
            if http.max_connection_duration.is_some() {
                errs.at(&p.field("maxConnectionDuration"), msg);
            }
        }
    }
}
