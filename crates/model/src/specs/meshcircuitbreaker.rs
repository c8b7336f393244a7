//! MeshCircuitBreaker: connection limits and outlier detection.

use super::common::{
    Duration, IntOrString, TO_SERVICES, TOP_MESH_DP, TargetRef, duration_positive, percentage,
};
use super::policy::{check_rules, check_to, len, positive_u32, top_level};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Circuit breaking for outbound (`to`) or inbound (`rules`) traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshCircuitBreaker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<MeshCircuitBreakerTo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<MeshCircuitBreakerRule>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshCircuitBreakerTo {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub default: MeshCircuitBreakerConf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshCircuitBreakerRule {
    #[serde(default)]
    pub default: MeshCircuitBreakerConf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshCircuitBreakerConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limits: Option<ConnectionLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_pools: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Time between ejection analysis sweeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// At most this percentage of hosts is ejected, 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_and_local_errors: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detectors: Option<Detectors>,
    /// Percentage of healthy hosts below which panic mode starts, 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_panic_threshold: Option<IntOrString>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Detectors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_failures: Option<ConsecutiveDetector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_failures: Option<ConsecutiveDetector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_origin_failures: Option<ConsecutiveDetector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRateDetector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_percentage: Option<FailurePercentageDetector>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsecutiveDetector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuccessRateDetector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_hosts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_volume: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_deviation_factor: Option<IntOrString>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailurePercentageDetector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_hosts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_volume: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
}

impl Spec for MeshCircuitBreaker {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        top_level(
            &self.target_ref,
            TOP_MESH_DP,
            len(&self.rules) > 0,
            path,
            errs,
        );
        if len(&self.to) == 0 && len(&self.rules) == 0 {
            errs.at(path, "at least one of 'to' or 'rules' has to be defined");
        }
        check_rules(&self.rules, path, errs, |r, p, errs| {
            r.default.check(&p.field("default"), errs)
        });
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

fn over_100(v: Option<u32>, path: &Path, errs: &mut Violations) {
    if v.is_some_and(|v| v > 100) {
        errs.at(path, "must be in inclusive range [0, 100]");
    }
}

impl MeshCircuitBreakerConf {
    fn check(&self, path: &Path, errs: &mut Violations) {
        if self.connection_limits.is_none() && self.outlier_detection.is_none() {
            errs.at(
                path,
                "at least one of: 'connectionLimits' or 'outlierDetection' should be configured",
            );
            return;
        }
        if let Some(l) = &self.connection_limits {
            let p = path.field("connectionLimits");
            positive_u32(l.max_connections, &p.field("maxConnections"), errs);
            positive_u32(l.max_connection_pools, &p.field("maxConnectionPools"), errs);
            positive_u32(l.max_pending_requests, &p.field("maxPendingRequests"), errs);
            positive_u32(l.max_retries, &p.field("maxRetries"), errs);
            positive_u32(l.max_requests, &p.field("maxRequests"), errs);
        }
        if let Some(o) = &self.outlier_detection {
            let p = path.field("outlierDetection");
            duration_positive(&o.interval, &p.field("interval"), errs);
            duration_positive(&o.base_ejection_time, &p.field("baseEjectionTime"), errs);
            over_100(o.max_ejection_percent, &p.field("maxEjectionPercent"), errs);
            percentage(
                &o.healthy_panic_threshold,
                false,
                true,
                &p.field("healthyPanicThreshold"),
                errs,
            );
            if o.disabled != Some(true) {
                let dp = p.field("detectors");
                match &o.detectors {
                    None => errs.at(&dp, "must be defined"),
                    Some(d) => {
                        if d.total_failures.is_none()
                            && d.gateway_failures.is_none()
                            && d.local_origin_failures.is_none()
                            && d.success_rate.is_none()
                            && d.failure_percentage.is_none()
                        {
                            errs.at(&dp, "must have at least one defined: totalFailures, gatewayFailures, localOriginFailures, successRate, failurePercentage");
                        }
                        for (name, c) in [
                            ("totalFailures", &d.total_failures),
                            ("gatewayFailures", &d.gateway_failures),
                            ("localOriginFailures", &d.local_origin_failures),
                        ] {
                            if let Some(c) = c {
                                positive_u32(
                                    c.consecutive,
                                    &dp.field(name).field("consecutive"),
                                    errs,
                                );
                            }
                        }
                        if let Some(s) = &d.success_rate {
                            let sp = dp.field("successRate");
                            positive_u32(s.minimum_hosts, &sp.field("minimumHosts"), errs);
                            positive_u32(s.request_volume, &sp.field("requestVolume"), errs);
                            match s
                                .standard_deviation_factor
                                .as_ref()
                                .map(IntOrString::as_f64)
                            {
                                Some(None) => {
                                    errs.at(&sp.field("standardDeviationFactor"), "invalid number")
                                }
                                Some(Some(v)) if v <= 0.0 => errs.at(
                                    &sp.field("standardDeviationFactor"),
                                    "must be greater than 0",
                                ),
                                _ => {}
                            }
                        }
                        if let Some(f) = &d.failure_percentage {
                            let fp = dp.field("failurePercentage");
                            positive_u32(f.minimum_hosts, &fp.field("minimumHosts"), errs);
                            positive_u32(f.request_volume, &fp.field("requestVolume"), errs);
                            over_100(f.threshold, &fp.field("threshold"), errs);
                        }
                    }
                }
            }
        }
    }
}
