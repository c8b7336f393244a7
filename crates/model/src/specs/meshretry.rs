//! MeshRetry: retry policies for outbound TCP, HTTP and gRPC traffic.

use super::common::{Duration, TO_ALL, TOP_MESH_DP, TargetRef, TargetRefKind, duration_positive};
use super::policy::{check_to, top_level};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Retries for requests to the selected destinations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshRetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<MeshRetryTo>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshRetryTo {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub default: MeshRetryConf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshRetryConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<RetryTcp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<RetryHttp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<RetryGrpc>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryTcp {
    /// How many times to try to connect before giving up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connect_attempt: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryHttp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_off: Option<BackOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_back_off: Option<RateLimitedBackOff>,
    /// Conditions to retry on: `5xx`, `GatewayError`, `Reset`, `Retriable4xx`,
    /// `ConnectFailure`, `EnvoyRatelimited`, `RefusedStream`,
    /// `Http3PostConnectFailure`, `HttpMethod<Verb>`, or an HTTP status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<super::common::IntOrString>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriable_response_headers: Option<Vec<super::meshhttproute::HeaderMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriable_request_headers: Option<Vec<super::meshhttproute::HeaderMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selection: Option<Vec<Predicate>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selection_max_attempts: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GrpcRetryOn {
    Canceled,
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    Unavailable,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryGrpc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_off: Option<BackOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_back_off: Option<RateLimitedBackOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<GrpcRetryOn>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackOff {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitedBackOff {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_headers: Option<Vec<ResetHeader>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RateLimitFormat {
    Seconds,
    UnixTimestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetHeader {
    pub name: String,
    pub format: RateLimitFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PredicateType {
    OmitPreviousHosts,
    OmitHostsWithTags,
    OmitPreviousPriorities,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Predicate {
    pub predicate: PredicateType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub update_frequency: i32,
}

const HTTP_RETRY_ON: &[&str] = &[
    "5xx",
    "GatewayError",
    "Reset",
    "Retriable4xx",
    "ConnectFailure",
    "EnvoyRatelimited",
    "RefusedStream",
    "Http3PostConnectFailure",
    "HttpMethodConnect",
    "HttpMethodDelete",
    "HttpMethodGet",
    "HttpMethodHead",
    "HttpMethodOptions",
    "HttpMethodPatch",
    "HttpMethodPost",
    "HttpMethodPut",
    "HttpMethodTrace",
];

impl Spec for MeshRetry {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        top_level(&self.target_ref, TOP_MESH_DP, false, path, errs);
        let kinds: &[TargetRefKind] =
            if TargetRef::kind_or_mesh(&self.target_ref) == TargetRefKind::MeshHTTPRoute {
                &[TargetRefKind::Mesh, TargetRefKind::MeshExternalService]
            } else {
                TO_ALL
            };
        check_to(
            &self.to,
            kinds,
            path,
            errs,
            |t| &t.target_ref,
            |t, p, errs| t.default.check(p, errs),
        );
    }
}

impl MeshRetryConf {
    fn check(&self, path: &Path, errs: &mut Violations) {
        if self.tcp.is_none() && self.http.is_none() && self.grpc.is_none() {
            errs.at(
                path,
                "at least one of the 'tcp', 'http', 'grpc' must be specified",
            );
        }
        if let Some(tcp) = &self.tcp {
            match tcp.max_connect_attempt {
                None => errs.at(&path.field("tcp"), "must not be empty"),
                Some(0) => errs.at(
                    &path.field("tcp").field("maxConnectAttempt"),
                    "must be greater than 0",
                ),
                Some(_) => {}
            }
        }
        if let Some(h) = &self.http {
            let p = path.field("http");
            if h.num_retries.is_none()
                && h.per_try_timeout.is_none()
                && h.back_off.is_none()
                && h.retry_on.is_none()
                && h.retriable_request_headers.is_none()
                && h.retriable_response_headers.is_none()
                && h.rate_limited_back_off.is_none()
                && h.host_selection.is_none()
            {
                errs.at(&p, "must not be empty");
            }
            duration_positive(&h.per_try_timeout, &p.field("perTryTimeout"), errs);
            back_off(&h.back_off, &p.field("backOff"), errs);
            rate_limited(
                &h.rate_limited_back_off,
                &p.field("rateLimitedBackOff"),
                errs,
            );
            for (i, r) in h.retry_on.iter().flatten().enumerate() {
                // A condition name, or an HTTP status code (number or string).
                let (text, code) = match r {
                    super::common::IntOrString::Int(n) => (n.to_string(), Some(*n)),
                    super::common::IntOrString::String(s) => (s.clone(), s.parse::<i64>().ok()),
                };
                let status = code.is_some_and(|c| (100..600).contains(&c));
                if !HTTP_RETRY_ON.contains(&text.as_str()) && !status {
                    errs.at(
                        &p.field("retryOn").index(i),
                        format!("unknown item '{text}'"),
                    );
                }
            }
            let mut priorities = false;
            for (i, pred) in h.host_selection.iter().flatten().enumerate() {
                let pp = p.field("hostSelection").index(i);
                match pred.predicate {
                    PredicateType::OmitHostsWithTags if pred.tags.is_none() => {
                        errs.at(&pp.field("tags"), "must be defined")
                    }
                    PredicateType::OmitPreviousPriorities => {
                        if priorities {
                            errs.at(
                                &pp.field("predicate"),
                                "OmitPreviousPriorities must only be specified once",
                            );
                        }
                        if pred.update_frequency <= 0 {
                            errs.at(
                                &pp.field("updateFrequency"),
                                "must be defined and greater than zero",
                            );
                        }
                        priorities = true;
                    }
                    _ => {}
                }
            }
        }
        if let Some(g) = &self.grpc {
            let p = path.field("grpc");
            if g.num_retries.is_none()
                && g.per_try_timeout.is_none()
                && g.back_off.is_none()
                && g.retry_on.is_none()
                && g.rate_limited_back_off.is_none()
            {
                errs.at(&p, "must not be empty");
            }
            duration_positive(&g.per_try_timeout, &p.field("perTryTimeout"), errs);
            back_off(&g.back_off, &p.field("backOff"), errs);
            rate_limited(
                &g.rate_limited_back_off,
                &p.field("rateLimitedBackOff"),
                errs,
            );
        }
    }
}

fn back_off(b: &Option<BackOff>, path: &Path, errs: &mut Violations) {
    if let Some(b) = b {
        if b.base_interval.is_none() && b.max_interval.is_none() {
            errs.at(path, "must not be empty");
        }
        duration_positive(&b.base_interval, &path.field("baseInterval"), errs);
        duration_positive(&b.max_interval, &path.field("maxInterval"), errs);
    }
}

fn rate_limited(r: &Option<RateLimitedBackOff>, path: &Path, errs: &mut Violations) {
    let Some(r) = r else { return };
    if let Some(d) = &r.max_interval
        && d.nanos() <= 0
    {
        errs.at(
            &path.field("maxInterval"),
            "must be defined and greater than zero",
        );
    }
    match &r.reset_headers {
        None => errs.at(&path.field("resetHeaders"), "must be defined"),
        Some(hs) => {
            for (i, h) in hs.iter().enumerate() {
                if h.name.is_empty() {
                    errs.at(
                        &path.field("resetHeaders").index(i).field("name"),
                        "must be defined",
                    );
                }
            }
        }
    }
}
