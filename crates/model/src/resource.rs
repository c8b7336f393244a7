//! A stored resource and its Kuma JSON form.

use crate::kinds::{ResourceKind, Scope, SpecLayout};
use crate::names::{MeshName, ResourceName};
use crate::validate::Violations;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// Identifies one resource. Can only be built with a mesh for mesh-scoped
/// kinds and without one for global kinds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    kind: ResourceKind,
    mesh: Option<MeshName>,
    name: ResourceName,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{kind} is mesh-scoped: a mesh is required")]
    MeshRequired { kind: ResourceKind },
    #[error("{kind} is not mesh-scoped: it cannot belong to a mesh")]
    MeshNotAllowed { kind: ResourceKind },
}

impl ResourceKey {
    pub fn new(
        kind: ResourceKind,
        mesh: Option<MeshName>,
        name: ResourceName,
    ) -> Result<Self, KeyError> {
        match (kind.scope(), &mesh) {
            (Scope::Mesh, None) => Err(KeyError::MeshRequired { kind }),
            (Scope::Global, Some(_)) => Err(KeyError::MeshNotAllowed { kind }),
            _ => Ok(Self { kind, mesh, name }),
        }
    }

    /// A key for a global-scoped kind.
    pub fn global(kind: ResourceKind, name: ResourceName) -> Result<Self, KeyError> {
        Self::new(kind, None, name)
    }

    /// A key for a mesh-scoped kind.
    pub fn in_mesh(
        kind: ResourceKind,
        mesh: MeshName,
        name: ResourceName,
    ) -> Result<Self, KeyError> {
        Self::new(kind, Some(mesh), name)
    }

    pub fn kind(&self) -> ResourceKind {
        self.kind
    }
    pub fn mesh(&self) -> Option<&MeshName> {
        self.mesh.as_ref()
    }
    pub fn name(&self) -> &ResourceName {
        &self.name
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mesh {
            Some(m) => write!(f, "{}/{}/{}", self.kind, m, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// What the store keeps beside the content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceMeta {
    pub labels: BTreeMap<String, String>,
    /// Bumped by the store on every write; the optimistic-concurrency token.
    pub version: u64,
    pub creation_time: DateTime<Utc>,
    pub modification_time: DateTime<Utc>,
}

/// A resource as stored: key, metadata and its content as Kuma's JSON.
///
/// `spec` holds the kind's content: the object under `spec` for nested kinds,
/// the top-level fields (minus the envelope) for inline kinds. It has passed
/// [`crate::specs::validate`] before it reaches a store.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub key: ResourceKey,
    pub meta: ResourceMeta,
    pub spec: Value,
    pub status: Option<Value>,
}

/// Envelope fields of Kuma's resource JSON; everything else on an inline kind is spec.
const ENVELOPE: &[&str] = &[
    "type",
    "mesh",
    "name",
    "labels",
    "creationTime",
    "modificationTime",
    "kri",
];

/// Formats a timestamp as Kuma does (RFC 3339, UTC, sub-second digits as needed).
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl Resource {
    pub fn kind(&self) -> ResourceKind {
        self.key.kind()
    }

    /// Kuma's REST representation.
    pub fn to_kuma_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("type".into(), Value::String(self.kind().name().into()));
        if let Some(m) = self.key.mesh() {
            out.insert("mesh".into(), Value::String(m.to_string()));
        }
        out.insert("name".into(), Value::String(self.key.name().to_string()));
        out.insert(
            "creationTime".into(),
            Value::String(format_time(&self.meta.creation_time)),
        );
        out.insert(
            "modificationTime".into(),
            Value::String(format_time(&self.meta.modification_time)),
        );
        if !self.meta.labels.is_empty() {
            let labels = self
                .meta
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            out.insert("labels".into(), Value::Object(labels));
        }
        match self.kind().descriptor().layout {
            SpecLayout::Inline => {
                if let Value::Object(fields) = &self.spec {
                    for (k, v) in fields {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            SpecLayout::Nested => {
                out.insert("spec".into(), self.spec.clone());
                if self.kind().descriptor().has_status {
                    out.insert(
                        "status".into(),
                        self.status
                            .clone()
                            .unwrap_or_else(|| Value::Object(Map::new())),
                    );
                }
            }
        }
        Value::Object(out)
    }
}

/// A resource as a client sent it: the envelope read, the content not yet
/// validated against its kind.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceInput {
    pub kind: ResourceKind,
    pub mesh: Option<String>,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub spec: Value,
    pub status: Option<Value>,
}

impl ResourceInput {
    /// Reads Kuma's resource JSON. `expected` is the kind the URL names; when
    /// given, `type` may be omitted but must match if present.
    pub fn from_kuma_json(
        value: Value,
        expected: Option<ResourceKind>,
    ) -> Result<ResourceInput, Violations> {
        let Value::Object(mut obj) = value else {
            return Err(Violations::single("", "must be an object"));
        };
        let mut errs = Violations::new();
        let kind = match (obj.remove("type"), expected) {
            (Some(Value::String(t)), Some(k)) if t == k.name() => Some(k),
            (Some(Value::String(t)), Some(k)) => {
                errs.add(
                    "type",
                    format!("invalid type {t:?}, expected {:?}", k.name()),
                );
                Some(k)
            }
            (Some(Value::String(t)), None) => {
                let k = ResourceKind::from_name(&t);
                if k.is_none() {
                    errs.add("type", format!("unknown type {t:?}"));
                }
                k
            }
            (Some(_), _) => {
                errs.add("type", "must be a string");
                expected
            }
            (None, Some(k)) => Some(k),
            (None, None) => {
                errs.add("type", "cannot be empty");
                None
            }
        };
        let mut string_field = |obj: &mut Map<String, Value>, name: &str| match obj.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                errs.add(name, "must be a string");
                None
            }
        };
        let mesh = string_field(&mut obj, "mesh");
        let name = string_field(&mut obj, "name");
        let mut labels = BTreeMap::new();
        match obj.remove("labels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            labels.insert(k, s);
                        }
                        _ => errs.add(format!("labels[{k:?}]"), "must be a string"),
                    }
                }
            }
            Some(_) => errs.add("labels", "must be an object of strings"),
        }
        // Read-only envelope fields a client may echo back from a GET.
        for f in ENVELOPE {
            obj.remove(*f);
        }
        let Some(kind) = kind else {
            return Err(errs);
        };
        let (spec, status) = match kind.descriptor().layout {
            SpecLayout::Inline => (Value::Object(obj), None),
            SpecLayout::Nested => {
                let spec = match obj.remove("spec") {
                    None | Some(Value::Null) => Value::Object(Map::new()),
                    Some(v @ Value::Object(_)) => v,
                    Some(_) => {
                        errs.add("spec", "must be an object");
                        Value::Object(Map::new())
                    }
                };
                let status = obj.remove("status").filter(|s| !s.is_null());
                for k in obj.keys() {
                    errs.add(k.as_str(), "unknown field");
                }
                (spec, status)
            }
        };
        errs.into_result()?;
        Ok(ResourceInput {
            kind,
            mesh,
            name,
            labels,
            spec,
            status,
        })
    }
}

/// Checks label keys and values as Kubernetes does (Kuma applies the same rules).
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Violations {
    static KEY: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
            .expect("static regex")
    });
    static VALUE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$").expect("static regex")
    });
    let mut v = Violations::new();
    for (k, val) in labels {
        let field = format!("labels[{k:?}]");
        let name = k.rsplit('/').next().unwrap_or(k);
        if !KEY.is_match(k) || name.len() > 63 || k.len() > 316 {
            v.add(field.clone(), "label key must be a qualified name: an optional DNS prefix and '/', then at most 63 alphanumeric characters, '-', '_' or '.'");
        }
        if val.len() > 63 || !VALUE.is_match(val) {
            v.add(field, "label value must be at most 63 alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character");
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T10:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn key_scope_is_enforced() {
        let n = ResourceName::new("x").unwrap();
        assert!(ResourceKey::global(ResourceKind::MeshTimeout, n.clone()).is_err());
        assert!(
            ResourceKey::in_mesh(ResourceKind::Mesh, MeshName::default_mesh(), n.clone()).is_err()
        );
        assert!(ResourceKey::global(ResourceKind::Mesh, n).is_ok());
    }

    #[test]
    fn nested_round_trip() {
        let input = ResourceInput::from_kuma_json(
            json!({"type": "MeshTimeout", "mesh": "default", "name": "t1", "labels": {"a": "b"}, "spec": {"to": []}}),
            Some(ResourceKind::MeshTimeout),
        )
        .unwrap();
        assert_eq!(input.name.as_deref(), Some("t1"));
        let r = Resource {
            key: ResourceKey::in_mesh(
                ResourceKind::MeshTimeout,
                MeshName::default_mesh(),
                ResourceName::new("t1").unwrap(),
            )
            .unwrap(),
            meta: ResourceMeta {
                labels: input.labels,
                version: 1,
                creation_time: t(),
                modification_time: t(),
            },
            spec: input.spec,
            status: None,
        };
        assert_eq!(
            r.to_kuma_json(),
            json!({"type": "MeshTimeout", "mesh": "default", "name": "t1",
                   "creationTime": "2024-05-01T10:00:00.500Z", "modificationTime": "2024-05-01T10:00:00.500Z",
                   "labels": {"a": "b"}, "spec": {"to": []}})
        );
    }

    #[test]
    fn inline_kinds_keep_fields_at_top_level() {
        let input = ResourceInput::from_kuma_json(
            json!({"type": "Mesh", "name": "m1", "mtls": {"enabledBackend": "ca-1"}, "creationTime": "x"}),
            None,
        )
        .unwrap();
        assert_eq!(input.kind, ResourceKind::Mesh);
        assert_eq!(input.spec, json!({"mtls": {"enabledBackend": "ca-1"}}));
    }

    #[test]
    fn envelope_errors_are_all_reported() {
        let err = ResourceInput::from_kuma_json(
            json!({"type": "MeshRetry", "name": 3, "labels": {"a": 1}, "extra": true}),
            Some(ResourceKind::MeshTimeout),
        )
        .unwrap_err();
        let fields: Vec<_> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, vec!["type", "name", "labels[\"a\"]", "extra"]);
    }

    #[test]
    fn labels() {
        let mut l = BTreeMap::new();
        l.insert("kuma.io/origin".to_string(), "zone".to_string());
        l.insert("team".to_string(), "a b".to_string());
        let v = validate_labels(&l);
        assert_eq!(v.len(), 1);
        assert_eq!(v.iter().next().unwrap().field, "labels[\"team\"]");
    }
}
