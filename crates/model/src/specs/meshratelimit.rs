//! MeshRateLimit: local HTTP request and TCP connection rate limits.

use super::common::{Duration, Match, TOP_MESH_DP, TargetRef, TargetRefKind, validate_matches};
use super::meshhttproute::HeaderKeyValue;
use super::policy::{check_rules, check_to, len, top_level};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Rate limits for traffic to the selected proxies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<MeshRateLimitTo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<MeshRateLimitRule>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshRateLimitTo {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub default: MeshRateLimitConf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshRateLimitRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<Match>>,
    #[serde(default)]
    pub default: MeshRateLimitConf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshRateLimitConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalRateLimit>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<LocalHttp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<LocalTcp>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalHttp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rate_limit: Option<OnRateLimit>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnRateLimit {
    /// Status returned to limited requests; 429 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<RateLimitHeaders>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitHeaders {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<HeaderKeyValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<Vec<HeaderKeyValue>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalTcp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_rate: Option<Rate>,
}

/// `num` events per `interval`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rate {
    pub num: u32,
    pub interval: Duration,
}

impl Spec for MeshRateLimit {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        let (to, rules) = (len(&self.to), len(&self.rules));
        top_level(&self.target_ref, TOP_MESH_DP, rules > 0, path, errs);
        if to > 0 && rules > 0 {
            errs.at(path, "field 'to' must be empty when 'rules' is defined");
        }
        if to == 0 && rules == 0 {
            errs.at(path, "at least one of 'to' or 'rules' has to be defined");
        }
        let top = TargetRef::kind_or_mesh(&self.target_ref);
        if top == TargetRefKind::MeshHTTPRoute && rules > 0 {
            errs.at(&path.field("rules"), "must not be defined");
        }
        check_rules(&self.rules, path, errs, |r, p, errs| {
            validate_matches(&r.matches, &p.field("matches"), errs);
            if super::common::has_spiffe_match(&r.matches)
                && r.default.local.as_ref().is_some_and(|l| l.tcp.is_some())
            {
                // Connections are limited before the client's identity is known.
                errs.at(
                    &p.field("default").field("local").field("tcp"),
                    "can't be specified when matches contain spiffeID because this field cannot be conditioned on source identity",
                );
            }
            r.default.check(&p.field("default"), errs);
        });
        // Outbound rate limiting is only offered mesh-wide (for gateways).
        if to > 0 && !matches!(top, TargetRefKind::Mesh | TargetRefKind::MeshHTTPRoute) {
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

fn rate(r: &Rate, path: &Path, errs: &mut Violations) {
    if r.num == 0 {
        errs.at(&path.field("num"), "must be greater than 0");
    }
    if r.interval.nanos() <= 50_000_000 {
        errs.at(&path.field("interval"), "must be greater than: 50ms");
    }
}

impl MeshRateLimitConf {
    fn check(&self, path: &Path, errs: &mut Violations) {
        let p = path.field("local");
        let Some(local) = &self.local else {
            errs.at(&p, "must be defined");
            return;
        };
        if local.http.is_none() && local.tcp.is_none() {
            errs.at(&p, "must have at least one defined: tcp, http");
        }
        if let Some(h) = &local.http {
            let hp = p.field("http");
            if h.disabled.is_none() && h.request_rate.is_none() && h.on_rate_limit.is_none() {
                errs.at(
                    &hp,
                    "must have at least one defined: disabled, requestRate, onRateLimit",
                );
            }
            if let Some(r) = &h.request_rate {
                rate(r, &hp.field("requestRate"), errs);
            }
            if let Some(o) = &h.on_rate_limit
                && o.status == Some(0)
            {
                errs.at(
                    &hp.field("onRateLimit").field("status"),
                    "must be greater than 0",
                );
            }
        }
        if let Some(t) = &local.tcp {
            let tp = p.field("tcp");
            if t.disabled.is_none() && t.connection_rate.is_none() {
                errs.at(
                    &tp,
                    "must have at least one defined: disabled, connectionRate",
                );
            }
            if let Some(r) = &t.connection_rate {
                rate(r, &tp.field("connectionRate"), errs);
            }
        }
    }
}
