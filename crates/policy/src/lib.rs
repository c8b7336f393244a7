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
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

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
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
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

/// One policy parsed once: its top-level target and its rules.
#[derive(Debug)]
struct Compiled {
    policy: Policy,
    target: TargetRef,
    to: Vec<ToRule>,
    inbound: Vec<InboundRule>,
    /// Malformed `to[]` entries, reported to the proxies the policy selects.
    errors: Vec<PolicyError>,
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
fn precedence(a: &Compiled, b: &Compiled) -> Ordering {
    a.target
        .top_rank()
        .cmp(&b.target.top_rank())
        .then(
            a.target
                .section_name
                .is_some()
                .cmp(&b.target.section_name.is_some()),
        )
        .then(origin_rank(&a.policy).cmp(&origin_rank(&b.policy)))
        // Between equals, the lexicographically smaller name wins, so it merges last.
        .then(b.policy.name.cmp(&a.policy.name))
}

fn default_of(item: &Value) -> Value {
    item.get("default")
        .cloned()
        .unwrap_or(Value::Object(Default::default()))
}

impl Compiled {
    fn new(p: &Policy) -> Result<Compiled, PolicyError> {
        let target = match p.spec.get("targetRef") {
            None | Some(Value::Null) => TargetRef::mesh(),
            Some(v) => TargetRef::parse(v).map_err(|reason| PolicyError::Malformed {
                name: p.name.clone(),
                field: "spec.targetRef".into(),
                reason,
            })?,
        };
        let items = |field: &str| {
            p.spec
                .get(field)
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[])
        };
        let mut errors = Vec::new();
        let mut to = Vec::new();
        for (i, item) in items("to").iter().enumerate() {
            let target = match item.get("targetRef").map(TargetRef::parse) {
                Some(Ok(t)) => t,
                Some(Err(reason)) => {
                    errors.push(PolicyError::Malformed {
                        name: p.name.clone(),
                        field: format!("spec.to[{i}].targetRef"),
                        reason,
                    });
                    continue;
                }
                None => TargetRef::mesh(),
            };
            to.push(ToRule {
                target,
                conf: default_of(item),
                policy: p.name.clone(),
            });
        }
        // `from[]` (Mesh only, the legacy inbound form) merges before `rules[]`.
        let inbound = items("from")
            .iter()
            .chain(items("rules"))
            .map(|item| InboundRule {
                section_name: target.section_name.clone(),
                conf: default_of(item),
                policy: p.name.clone(),
            })
            .collect();
        Ok(Compiled {
            policy: p.clone(),
            target,
            to,
            inbound,
            errors,
        })
    }
}

/// What a set of policies says about one proxy (shared by every proxy the
/// same policies select), and the malformed parts that were skipped.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub rules: Arc<ProxyRules>,
    pub errors: Arc<[PolicyError]>,
}

/// All policies of one kind in one mesh, parsed once. Proxies selected by the
/// same policies share one computed [`ProxyRules`]: a mesh-wide change costs
/// one merge, not one per proxy.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// Well-formed policies in precedence order (lowest first).
    compiled: Vec<Compiled>,
    /// Why the policies whose top-level targetRef does not parse are skipped.
    errors: Vec<PolicyError>,
    /// Those policies, kept so that [`PolicySet::policies`] returns every input.
    malformed: Vec<Policy>,
    /// Rules by the indices (into `compiled`) of the selecting policies.
    memo: Mutex<HashMap<Vec<u32>, Selection>>,
}

impl PolicySet {
    pub fn new(policies: &[Policy]) -> PolicySet {
        let mut set = PolicySet::default();
        for p in policies {
            match Compiled::new(p) {
                Ok(c) => set.compiled.push(c),
                Err(e) => {
                    set.errors.push(e);
                    set.malformed.push(p.clone());
                }
            }
        }
        set.compiled.sort_by(precedence);
        set
    }

    /// Every policy the set was built from: the well-formed ones in
    /// precedence order (lowest first), then the malformed ones.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.compiled
            .iter()
            .map(|c| &c.policy)
            .chain(&self.malformed)
    }

    /// What the policies say about `proxy`, and the problems met on the way
    /// (malformed policies are skipped).
    pub fn rules_for(&self, proxy: &ProxyRef<'_>) -> Selection {
        let selected: Vec<u32> = self
            .compiled
            .iter()
            .enumerate()
            .filter(|(_, c)| c.target.selects_proxy(proxy))
            .map(|(i, _)| i as u32)
            .collect();
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = memo.get(&selected) {
            return r.clone();
        }
        let mut rules = ProxyRules::default();
        let mut errors = self.errors.clone();
        for &i in &selected {
            let c = &self.compiled[i as usize];
            rules.policies.push(c.policy.name.clone());
            rules.to.extend(c.to.iter().cloned());
            rules.inbound.extend(c.inbound.iter().cloned());
            errors.extend(c.errors.iter().cloned());
        }
        let r = Selection {
            rules: Arc::new(rules),
            errors: errors.into(),
        };
        memo.insert(selected, r.clone());
        r
    }
}

/// Computes what `policies` (all of one kind, all in the proxy's mesh) say
/// about `proxy`. Malformed policies are skipped and returned beside the rules.
pub fn rules_for(proxy: &ProxyRef<'_>, policies: &[Policy]) -> (ProxyRules, Vec<PolicyError>) {
    let r = PolicySet::new(policies).rules_for(proxy);
    ((*r.rules).clone(), r.errors.to_vec())
}

#[cfg(test)]
mod tests;
