//! MeshLoadBalancingStrategy: load balancer algorithm, hash policies and
//! locality-aware (zone) failover.

use super::common::{
    Duration, IntOrString, TO_ALL, TOP_MESH_DP, TargetRef, TargetRefKind, duration_positive,
    percentage,
};
use super::policy::{check_to, positive_u32, top_level};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How requests are spread over the endpoints of the selected destinations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshLoadBalancingStrategy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<MeshLoadBalancingStrategyTo>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshLoadBalancingStrategyTo {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub default: MeshLoadBalancingStrategyConf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshLoadBalancingStrategyConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_awareness: Option<LocalityAwareness>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicy>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityAwareness {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_zone: Option<LocalZone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_zone: Option<CrossZone>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalZone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_tags: Option<Vec<AffinityTag>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AffinityTag {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrossZone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Vec<Failover>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_threshold: Option<FailoverThreshold>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failover {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<FromZone>,
    pub to: ToZone,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromZone {
    pub zones: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ToZoneType {
    None,
    Only,
    Any,
    AnyExcept,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToZone {
    #[serde(rename = "type")]
    pub type_: ToZoneType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverThreshold {
    pub percentage: IntOrString,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LoadBalancerType {
    RoundRobin,
    LeastRequest,
    RingHash,
    Random,
    Maglev,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    #[serde(rename = "type")]
    pub type_: LoadBalancerType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_robin: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub least_request: Option<LeastRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<Maglev>,
}

/// An object with no fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeastRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_request_bias: Option<IntOrString>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HashFunctionType {
    XXHash,
    MurmurHash2,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_function: Option<HashFunctionType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ring_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ring_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicy>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicy>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HashPolicyType {
    Header,
    Cookie,
    Connection,
    QueryParameter,
    FilterState,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashPolicy {
    #[serde(rename = "type")]
    pub type_: HashPolicyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<NamedHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<NamedHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_state: Option<FilterStateHash>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedHash {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieHash {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionHash {
    #[serde(rename = "sourceIP", default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterStateHash {
    pub key: String,
}

impl Spec for MeshLoadBalancingStrategy {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        top_level(&self.target_ref, TOP_MESH_DP, false, path, errs);
        check_to(
            &self.to,
            TO_ALL,
            path,
            errs,
            |t| &t.target_ref,
            |t, p, errs| {
                t.default.check(t.target_ref.kind, p, errs);
            },
        );
    }
}

impl MeshLoadBalancingStrategyConf {
    fn check(&self, to_kind: TargetRefKind, path: &Path, errs: &mut Violations) {
        if to_kind == TargetRefKind::MeshHTTPRoute {
            let msg = "field is not allowed when targetRef.kind is MeshHTTPRoute, only hashPolicies is supported";
            if self.load_balancer.is_some() {
                errs.at(&path.field("loadBalancer"), msg);
            }
            if self.locality_awareness.is_some() {
                errs.at(&path.field("localityAwareness"), msg);
            }
        }
        if let Some(la) = &self.locality_awareness {
            let p = path.field("localityAwareness");
            if let Some(lz) = &la.local_zone {
                let tags = lz.affinity_tags.as_deref().unwrap_or_default();
                for (i, t) in tags.iter().enumerate() {
                    let tp = p.field("localZone").field("affinityTags").index(i);
                    if t.key.is_empty() {
                        errs.at(&tp.field("key"), "must not be empty");
                    }
                    positive_u32(t.weight, &tp.field("weight"), errs);
                }
                let weighted = tags.iter().filter(|t| t.weight.is_some()).count();
                if weighted != 0 && weighted != tags.len() {
                    errs.at(
                        &p.field("localZone").field("affinityTags"),
                        "all or none affinity tags should have weight",
                    );
                }
            }
            if let Some(cz) = &la.cross_zone {
                let cp = p.field("crossZone");
                if to_kind == TargetRefKind::MeshService {
                    errs.at(&cp, "must not be set: MeshService traffic is local");
                }
                for (i, f) in cz.failover.iter().flatten().enumerate() {
                    let fp = cp.field("failover").index(i);
                    if let Some(from) = &f.from {
                        if from.zones.is_empty() {
                            errs.at(&fp.field("from").field("zones"), "must not be empty");
                        }
                        for (j, z) in from.zones.iter().enumerate() {
                            if z.is_empty() {
                                errs.at(
                                    &fp.field("from").field("zones").index(j),
                                    "must not be empty",
                                );
                            }
                        }
                    }
                    let zones = f.to.zones.as_deref().unwrap_or_default();
                    let zp = fp.field("to").field("zones");
                    match f.to.type_ {
                        ToZoneType::Any | ToZoneType::None if !zones.is_empty() => {
                            errs.at(&zp, format!("must be empty when type is {:?}", f.to.type_))
                        }
                        ToZoneType::Only | ToZoneType::AnyExcept if zones.is_empty() => errs.at(
                            &zp,
                            format!("must not be empty when type is {:?}", f.to.type_),
                        ),
                        _ => {}
                    }
                }
                if let Some(t) = &cz.failover_threshold {
                    percentage(
                        &Some(t.percentage.clone()),
                        true,
                        false,
                        &cp.field("failoverThreshold").field("percentage"),
                        errs,
                    );
                }
            }
        }
        if let Some(lb) = &self.load_balancer {
            let p = path.field("loadBalancer");
            if let Some(lr) = &lb.least_request
                && let Some(bias) = &lr.active_request_bias
            {
                match bias.as_f64() {
                    None => errs.at(
                        &p.field("leastRequest").field("activeRequestBias"),
                        "string must be a valid number",
                    ),
                    Some(v) if v < 0.0 => errs.at(
                        &p.field("leastRequest").field("activeRequestBias"),
                        "must be greater or equal then: 0",
                    ),
                    Some(_) => {}
                }
            }
            if let Some(rh) = &lb.ring_hash {
                hash_policies(
                    &rh.hash_policies,
                    &p.field("ringHash").field("hashPolicies"),
                    errs,
                );
            }
            if let Some(m) = &lb.maglev {
                hash_policies(
                    &m.hash_policies,
                    &p.field("maglev").field("hashPolicies"),
                    errs,
                );
            }
        }
        hash_policies(&self.hash_policies, &path.field("hashPolicies"), errs);
    }
}

fn hash_policies(policies: &Option<Vec<HashPolicy>>, path: &Path, errs: &mut Violations) {
    for (i, h) in policies.iter().flatten().enumerate() {
        let p = path.index(i);
        match h.type_ {
            HashPolicyType::Header if h.header.is_none() => {
                errs.at(&p.field("header"), "must be defined")
            }
            HashPolicyType::Cookie => match &h.cookie {
                None => errs.at(&p.field("cookie"), "must be defined"),
                Some(c) => {
                    if c.path.as_ref().is_some_and(|p| !p.starts_with('/')) {
                        errs.at(&p.field("cookie").field("path"), "must be an absolute path");
                    }
                    duration_positive(&c.ttl, &p.field("cookie").field("ttl"), errs);
                }
            },
            HashPolicyType::QueryParameter if h.query_parameter.is_none() => {
                errs.at(&p.field("queryParameter"), "must be defined")
            }
            HashPolicyType::FilterState if h.filter_state.is_none() => {
                errs.at(&p.field("filterState"), "must be defined")
            }
            HashPolicyType::Connection if h.connection.is_none() => {
                errs.at(&p.field("connection"), "must be defined")
            }
            _ => {}
        }
    }
}
