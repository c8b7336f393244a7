//! targetRef: what a policy (top level) or one of its entries (`to[]`) points at.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The targetRef kinds this engine understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TargetRefKind {
    Mesh,
    MeshSubset,
    MeshService,
    MeshServiceSubset,
    Dataplane,
    MeshExternalService,
    MeshMultiZoneService,
    MeshHTTPRoute,
}

impl TargetRefKind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Mesh" => Self::Mesh,
            "MeshSubset" => Self::MeshSubset,
            "MeshService" => Self::MeshService,
            "MeshServiceSubset" => Self::MeshServiceSubset,
            "Dataplane" => Self::Dataplane,
            "MeshExternalService" => Self::MeshExternalService,
            "MeshMultiZoneService" => Self::MeshMultiZoneService,
            "MeshHTTPRoute" => Self::MeshHTTPRoute,
            _ => return None,
        })
    }
}

/// A parsed targetRef.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetRef {
    pub kind: TargetRefKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(rename = "sectionName", skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

fn string_map(v: Option<&Value>, field: &str) -> Result<BTreeMap<String, String>, String> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or_else(|| format!("{field}.{k} must be a string"))
            })
            .collect(),
        Some(_) => Err(format!("{field} must be an object")),
    }
}

fn opt_string(v: Option<&Value>, field: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

/// The proxy a policy may select.
#[derive(Clone, Debug)]
pub struct ProxyRef<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub inbounds: Vec<InboundRef<'a>>,
}

/// One inbound of a proxy.
#[derive(Clone, Debug)]
pub struct InboundRef<'a> {
    pub name: Option<&'a str>,
    pub port: u32,
    pub tags: &'a BTreeMap<String, String>,
}

impl InboundRef<'_> {
    /// Whether a `sectionName` names this inbound (by its name or its port).
    pub fn is_named(&self, section: &str) -> bool {
        self.name == Some(section) || section == self.port.to_string()
    }
}

/// A destination of outbound traffic.
#[derive(Clone, Debug)]
pub struct DestinationRef<'a> {
    /// The MeshService name.
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub port: u32,
    pub port_name: Option<&'a str>,
}

fn has_all(have: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

impl TargetRef {
    pub fn mesh() -> Self {
        TargetRef {
            kind: TargetRefKind::Mesh,
            name: None,
            labels: BTreeMap::new(),
            tags: BTreeMap::new(),
            section_name: None,
        }
    }

    /// Reads a targetRef object.
    pub fn parse(v: &Value) -> Result<Self, String> {
        let Value::Object(m) = v else {
            return Err("must be an object".into());
        };
        let kind = match m.get("kind") {
            Some(Value::String(k)) => {
                TargetRefKind::parse(k).ok_or_else(|| format!("unsupported kind {k:?}"))?
            }
            _ => return Err("kind is required".into()),
        };
        Ok(TargetRef {
            kind,
            name: opt_string(m.get("name"), "name")?,
            labels: string_map(m.get("labels"), "labels")?,
            tags: string_map(m.get("tags"), "tags")?,
            section_name: opt_string(m.get("sectionName"), "sectionName")?,
        })
    }

    /// Whether a top-level targetRef selects `proxy`.
    pub fn selects_proxy(&self, proxy: &ProxyRef<'_>) -> bool {
        let section_ok = |p: &ProxyRef<'_>| {
            self.section_name
                .as_deref()
                .is_none_or(|s| p.inbounds.iter().any(|i| i.is_named(s)))
        };
        match self.kind {
            TargetRefKind::Mesh => true,
            TargetRefKind::MeshSubset => {
                self.tags.is_empty() || proxy.inbounds.iter().any(|i| has_all(i.tags, &self.tags))
            }
            TargetRefKind::MeshService | TargetRefKind::MeshServiceSubset => {
                proxy.inbounds.iter().any(|i| {
                    self.name.as_deref().is_some_and(|n| {
                        i.tags.get("kuma.io/service").map(String::as_str) == Some(n)
                    }) && has_all(i.tags, &self.tags)
                })
            }
            TargetRefKind::Dataplane => {
                self.name.as_deref().is_none_or(|n| n == proxy.name)
                    && has_all(proxy.labels, &self.labels)
                    && section_ok(proxy)
            }
            TargetRefKind::MeshExternalService
            | TargetRefKind::MeshMultiZoneService
            | TargetRefKind::MeshHTTPRoute => false,
        }
    }

    /// How specific a top-level targetRef is; higher wins.
    pub fn top_rank(&self) -> u8 {
        match self.kind {
            TargetRefKind::Mesh => 0,
            TargetRefKind::MeshSubset => 1,
            TargetRefKind::MeshService => 2,
            TargetRefKind::MeshServiceSubset => 3,
            TargetRefKind::Dataplane if self.name.is_some() => 5,
            TargetRefKind::Dataplane => 4,
            TargetRefKind::MeshExternalService
            | TargetRefKind::MeshMultiZoneService
            | TargetRefKind::MeshHTTPRoute => 6,
        }
    }

    /// Whether a `to[]` targetRef covers traffic to `dest`.
    pub fn matches_destination(&self, dest: &DestinationRef<'_>) -> bool {
        match self.kind {
            TargetRefKind::Mesh => true,
            TargetRefKind::MeshService => {
                (self.name.is_some() || !self.labels.is_empty())
                    && self.name.as_deref().is_none_or(|n| n == dest.name)
                    && has_all(dest.labels, &self.labels)
                    && self
                        .section_name
                        .as_deref()
                        .is_none_or(|s| dest.port_name == Some(s) || s == dest.port.to_string())
            }
            _ => false,
        }
    }

    /// How specific a `to[]` targetRef is; higher wins.
    pub fn to_rank(&self) -> u8 {
        match (self.kind, self.section_name.is_some()) {
            (TargetRefKind::Mesh, _) => 0,
            (_, false) => 1,
            (_, true) => 2,
        }
    }
}
