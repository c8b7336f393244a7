//! targetRef matching and rule merging, as Kuma does it. Pure: no I/O.
//!
//! ```text
//!  policies of one kind (name, labels, spec)     a proxy (name, labels, inbounds)
//!          \                                     /
//!           select: top-level targetRef matches the proxy?
//!                          |
//!           sort by precedence (targetRef kind, sectionName, origin, name)
//!                          |
//!      to[]: per destination          rules[] / from[]: per inbound
//!      JSON-merge `default` in order  JSON-merge `default` in order
//!                          v
//!                   ProxyRules -> kuma-xds (Envoy config), `_rules` inspect
//! ```
//!
//! Every policy kind goes through the same engine; what a kind's `default`
//! means is the caller's business.

mod merge;
mod target;

pub use merge::merge_json;
pub use target::{DestinationRef, InboundRef, ProxyRef, TargetRef, TargetRefKind};

use serde::Serialize;
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The label Kuma puts on a policy to say where it was written.
pub const ORIGIN_LABEL: &str = "kuma.io/origin";

/// One policy of some kind, as the engine needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The policy's `spec` object (`targetRef`, `to`, `from`, `rules`).
    pub spec: Value,
}

/// Why a policy's spec could not be read. Validation should have caught it;
/// the engine skips such a policy rather than fail the proxy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {name}: {field}: {reason}")]
    Malformed {
        name: String,
        field: String,
        reason: String,
    },
}

/// A `default` that applies to something, with the policies that made it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Conf {
    /// The merged `default` object.
    pub conf: Value,
    /// Names of the contributing policies, in merge order.
    pub origin: Vec<String>,
}

/// One `to` entry of a selected policy, kept in precedence order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToRule {
    #[serde(rename = "targetRef")]
    pub target: TargetRef,
    pub conf: Value,
    pub policy: String,
}

/// One inbound-side entry (`rules[]` or `from[]`) of a selected policy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InboundRule {
    /// The top-level `sectionName` that limits it to one inbound, if any.
    #[serde(rename = "sectionName", skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    pub conf: Value,
    pub policy: String,
}

/// Everything one policy kind says about one proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProxyRules {
    /// Names of the policies that select the proxy, lowest precedence first.
    pub policies: Vec<String>,
    pub to: Vec<ToRule>,
    pub inbound: Vec<InboundRule>,
}

impl ProxyRules {
    /// The merged conf for traffic to `dest`, or `None` when no rule applies.
    pub fn to_conf(&self, dest: &DestinationRef<'_>) -> Option<Conf> {
        let mut applicable: Vec<(usize, &ToRule)> = self
            .to
            .iter()
            .enumerate()
            .filter(|(_, r)| r.target.matches_destination(dest))
            .collect();
        // Less specific targets first; equal specificity keeps policy precedence.
        applicable.sort_by(|(ia, a), (ib, b)| {
            a.target.to_rank().cmp(&b.target.to_rank()).then(ia.cmp(ib))
        });
        fold(applicable.into_iter().map(|(_, r)| (&r.conf, &r.policy)))
    }

    /// The merged conf for traffic arriving at `inbound`.
    pub fn inbound_conf(&self, inbound: &InboundRef<'_>) -> Option<Conf> {
        let mut applicable: Vec<(usize, &InboundRule)> = self
            .inbound
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.section_name
                    .as_deref()
                    .is_none_or(|s| inbound.is_named(s))
            })
            .collect();
        applicable.sort_by(|(ia, a), (ib, b)| {
            a.section_name
                .is_some()
                .cmp(&b.section_name.is_some())
                .then(ia.cmp(ib))
        });
        fold(applicable.into_iter().map(|(_, r)| (&r.conf, &r.policy)))
    }
}

fn fold<'a>(items: impl Iterator<Item = (&'a Value, &'a String)>) -> Option<Conf> {
    let mut out: Option<Conf> = None;
    for (conf, policy) in items {
        match &mut out {
            None => {
                out = Some(Conf {
                    conf: conf.clone(),
                    origin: vec![policy.clone()],
                })
            }
            Some(c) => {
                merge_json(&mut c.conf, conf);
                if !c.origin.contains(policy) {
                    c.origin.push(policy.clone());
                }
            }
        }
    }
    out
}

struct Selected<'a> {
    policy: &'a Policy,
    target: TargetRef,
}

fn origin_rank(p: &Policy) -> u8 {
    // A policy written in the zone is more specific than one synced from the global.
    match p.labels.get(ORIGIN_LABEL).map(String::as_str) {
        Some("zone") => 1,
        _ => 0,
    }
}

/// Kuma's precedence between two policies of one kind: `Less` merges first
/// (and so loses to the other).
fn precedence(a: &Selected<'_>, b: &Selected<'_>) -> Ordering {
    a.target
        .top_rank()
        .cmp(&b.target.top_rank())
        .then(
            a.target
                .section_name
                .is_some()
                .cmp(&b.target.section_name.is_some()),
        )
        .then(origin_rank(a.policy).cmp(&origin_rank(b.policy)))
        // Between equals, the lexicographically smaller name wins, so it merges last.
        .then(b.policy.name.cmp(&a.policy.name))
}

/// Computes what `policies` (all of one kind, all in the proxy's mesh) say
/// about `proxy`. Malformed policies are skipped and returned beside the rules.
pub fn rules_for(proxy: &ProxyRef<'_>, policies: &[Policy]) -> (ProxyRules, Vec<PolicyError>) {
    let mut errors = Vec::new();
    let mut selected = Vec::new();
    for p in policies {
        let target = match p.spec.get("targetRef") {
            None | Some(Value::Null) => TargetRef::mesh(),
            Some(v) => match TargetRef::parse(v) {
                Ok(t) => t,
                Err(reason) => {
                    errors.push(PolicyError::Malformed {
                        name: p.name.clone(),
                        field: "spec.targetRef".into(),
                        reason,
                    });
                    continue;
                }
            },
        };
        if target.selects_proxy(proxy) {
            selected.push(Selected { policy: p, target });
        }
    }
    selected.sort_by(precedence);

    let mut rules = ProxyRules::default();
    for s in &selected {
        rules.policies.push(s.policy.name.clone());
        let section = s.target.section_name.clone();
        for (i, item) in s
            .policy
            .spec
            .get("to")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let target = match item.get("targetRef").map(TargetRef::parse) {
                Some(Ok(t)) => t,
                Some(Err(reason)) => {
                    errors.push(PolicyError::Malformed {
                        name: s.policy.name.clone(),
                        field: format!("spec.to[{i}].targetRef"),
                        reason,
                    });
                    continue;
                }
                None => TargetRef::mesh(),
            };
            let conf = item
                .get("default")
                .cloned()
                .unwrap_or(Value::Object(Default::default()));
            rules.to.push(ToRule {
                target,
                conf,
                policy: s.policy.name.clone(),
            });
        }
        // `from[]` (Mesh only, the legacy inbound form) merges before `rules[]`.
        for item in s
            .policy
            .spec
            .get("from")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let conf = item
                .get("default")
                .cloned()
                .unwrap_or(Value::Object(Default::default()));
            rules.inbound.push(InboundRule {
                section_name: section.clone(),
                conf,
                policy: s.policy.name.clone(),
            });
        }
        for item in s
            .policy
            .spec
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let conf = item
                .get("default")
                .cloned()
                .unwrap_or(Value::Object(Default::default()));
            rules.inbound.push(InboundRule {
                section_name: section.clone(),
                conf,
                policy: s.policy.name.clone(),
            });
        }
    }
    (rules, errors)
}

#[cfg(test)]
mod tests;
