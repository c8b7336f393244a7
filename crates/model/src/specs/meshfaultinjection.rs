//! MeshFaultInjection: aborts, delays and bandwidth limits injected into
//! inbound HTTP traffic.

use super::common::{
    Duration, IntOrString, Match, TOP_MESH_DP, TargetRef, TargetRefKind, percentage,
    validate_matches,
};
use super::policy::{check_rules, check_to, len, top_level};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// Faults injected into HTTP traffic to test resilience.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshFaultInjection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// Only with a Mesh top-level targetRef: faults on outbound traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<MeshFaultInjectionTo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<MeshFaultInjectionRule>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshFaultInjectionTo {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub default: MeshFaultInjectionConf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshFaultInjectionRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<Match>>,
    pub default: MeshFaultInjectionConf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshFaultInjectionConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<FaultInjectionConf>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultInjectionConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_bandwidth: Option<ResponseBandwidthConf>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbortConf {
    /// Status code returned for aborted requests (100-599).
    pub http_status: i32,
    /// Share of requests aborted, 0-100.
    pub percentage: IntOrString,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DelayConf {
    pub value: Duration,
    pub percentage: IntOrString,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseBandwidthConf {
    /// Bandwidth limit such as `100kbps`, `10Mbps`, `1Gbps`.
    pub limit: String,
    pub percentage: IntOrString,
}

static BANDWIDTH: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^(\d*)\s?([GMk]+bps)$").expect("static regex"));

impl Spec for MeshFaultInjection {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        top_level(
            &self.target_ref,
            TOP_MESH_DP,
            len(&self.rules) > 0,
            path,
            errs,
        );
        check_rules(&self.rules, path, errs, |r, p, errs| {
            validate_matches(&r.matches, &p.field("matches"), errs);
            r.default.check(&p.field("default"), errs);
        });
        let top = TargetRef::kind_or_mesh(&self.target_ref);
        if len(&self.to) > 0 && !matches!(top, TargetRefKind::Mesh | TargetRefKind::MeshHTTPRoute) {
            errs.at(&path.field("to"), "must not be defined");
            return;
        }
        check_to(
            &self.to,
            &[TargetRefKind::Mesh],
            path,
            errs,
            |t| &t.target_ref,
            |t, p, errs| t.default.check(p, errs),
        );
    }
}

impl MeshFaultInjectionConf {
    fn check(&self, path: &Path, errs: &mut Violations) {
        let path = path.field("http");
        for (i, f) in self.http.iter().flatten().enumerate() {
            let p = path.index(i);
            if let Some(a) = &f.abort {
                let ap = p.field("abort");
                if !(100..600).contains(&a.http_status) {
                    errs.at(
                        &ap.field("httpStatus"),
                        "must be in inclusive range [100, 599]",
                    );
                }
                percentage(
                    &Some(a.percentage.clone()),
                    true,
                    true,
                    &ap.field("percentage"),
                    errs,
                );
            }
            if let Some(d) = &f.delay {
                let dp = p.field("delay");
                if d.value.is_negative() {
                    errs.at(&dp.field("value"), "must not be negative when defined");
                }
                percentage(
                    &Some(d.percentage.clone()),
                    true,
                    true,
                    &dp.field("percentage"),
                    errs,
                );
            }
            if let Some(b) = &f.response_bandwidth {
                let bp = p.field("responseBandwidth");
                if b.limit.is_empty() {
                    errs.at(&bp.field("limit"), "must be defined");
                } else if !BANDWIDTH.is_match(&b.limit) {
                    errs.at(&bp.field("limit"), "must be in kbps/Mbps/Gbps units");
                }
                percentage(
                    &Some(b.percentage.clone()),
                    true,
                    true,
                    &bp.field("percentage"),
                    errs,
                );
            }
        }
    }
}
