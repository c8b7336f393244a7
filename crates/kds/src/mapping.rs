//! Pure translation between stored resources and what travels on KDS.
//!
//! ```text
//!  global store --global_to_zone(zone)--> Wire --to_envoy--> DeltaDiscoveryResponse
//!  zone store   --zone_to_global(zone)--> Wire --to_envoy--> (ZoneToGlobalSync)
//!  received     --from_envoy--> Wire --accept_from_global / accept_from_zone--> store
//! ```
//!
//! As in Kuma, a synced resource gets a hash-suffixed name
//! (`<display-name>-<16 chars>`, from mesh, display name and zone) and the
//! `kuma.io/origin`, `kuma.io/zone` and `kuma.io/display-name` labels. No I/O.

use crate::pb::KumaResource;
use crate::pb::kuma_resource::Meta;
use envoy_types::pb::envoy::service::discovery::v3::Resource as EnvoyResource;
use envoy_types::pb::google::protobuf::Any;
use kuma_model::labels::{DISPLAY_NAME, ORIGIN, ZONE};
use kuma_model::{
    KdsFlags, MeshName, Resource, ResourceKey, ResourceKind, ResourceName, SpecLayout,
};
use prost::Message;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// `type_url` of every resource inside a KDS delta message.
pub const KUMA_RESOURCE_TYPE_URL: &str = "type.googleapis.com/kuma.mesh.v1alpha1.KumaResource";
/// Kuma's `k8s.kuma.io/namespace` label, part of the hashed name when present.
pub const NAMESPACE_LABEL: &str = "k8s.kuma.io/namespace";
pub const ORIGIN_GLOBAL: &str = "global";
pub const ORIGIN_ZONE: &str = "zone";

/// GlobalSecrets that never leave the global control plane.
const GLOBAL_ONLY_SECRETS: &[&str] = &[
    kuma_auth::secrets::ADMIN_USER_TOKEN_SECRET,
    kuma_auth::secrets::USER_TOKEN_REVOCATIONS,
    "envoy-admin-ca",
    "inter-cp-ca",
];

/// Why a received resource cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("resource {name:?}: cannot decode: {reason}")]
    Decode { name: String, reason: String },
    #[error("resource {name:?}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("{kind} is not synced in this direction")]
    WrongDirection { kind: ResourceKind },
    #[error(
        "resource {name:?} claims zone {claimed:?} but the stream is authenticated as zone {zone:?}"
    )]
    ZoneMismatch {
        name: String,
        claimed: String,
        zone: String,
    },
    #[error("resource {name:?} should be named {expected:?} (hash of mesh, display name and zone)")]
    WrongName { name: String, expected: String },
    #[error("resource {name:?} has origin {origin:?}, expected {expected:?}")]
    WrongOrigin {
        name: String,
        origin: String,
        expected: &'static str,
    },
}

/// One resource as it travels on KDS: the mapped name, mesh, labels and
/// Kuma's JSON content.
#[derive(Clone, Debug, PartialEq)]
pub struct Wire {
    pub kind: ResourceKind,
    pub name: String,
    pub mesh: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub spec: Value,
    pub status: Option<Value>,
}

/// Kuma's `hash.HashedName`: FNV-1a 64 over mesh, name and the extra values,
/// hex-encoded then mapped onto Kubernetes' "safe" alphabet; the name is cut
/// so that the result fits 253 characters.
pub fn hashed_name(mesh: &str, name: &str, extra: &[&str]) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for s in [mesh, name].into_iter().chain(extra.iter().copied()) {
        for b in s.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let hex = hex::encode(h.to_be_bytes());
    let safe: String = hex
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect();
    let max = 253 - 17;
    let short = if name.len() > max { &name[..max] } else { name };
    format!("{short}-{safe}")
}

/// The name of a resource in delta xDS: `name.mesh` for mesh-scoped kinds.
pub fn delta_name(name: &str, mesh: Option<&str>) -> String {
    match mesh {
        Some(m) if !m.is_empty() => format!("{name}.{m}"),
        _ => name.to_string(),
    }
}

/// Splits a delta name back into name and mesh, given the kind's scope.
pub fn split_delta_name(kind: ResourceKind, delta: &str) -> (String, Option<String>) {
    match kind.scope() {
        kuma_model::Scope::Global => (delta.to_string(), None),
        kuma_model::Scope::Mesh => match delta.rfind('.') {
            Some(i) => (delta[..i].to_string(), Some(delta[i + 1..].to_string())),
            None => (delta.to_string(), None),
        },
    }
}

/// JSON with object keys sorted, so that equal content hashes equally
/// whatever order a backend (PostgreSQL JSONB) returns keys in.
/// `v` as JSON with object keys sorted, written straight into `out`.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                scalar(out, k);
                out.push(b':');
                canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        other => scalar(out, other),
    }
}

/// A JSON key or scalar, written as `serde_json::to_string` writes it.
fn scalar<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing into a Vec cannot fail, and strings and Values always serialize.
    let _ = serde_json::to_writer(out, v);
}

/// [`Wire::version`] of content given by parts (no [`Wire`] needed).
pub fn content_version(
    name: &str,
    mesh: Option<&str>,
    labels: &BTreeMap<String, String>,
    spec: &Value,
    status: Option<&Value>,
) -> String {
    let mut s = Vec::with_capacity(256);
    s.extend_from_slice(name.as_bytes());
    s.push(b'\n');
    s.extend_from_slice(mesh.unwrap_or("").as_bytes());
    s.push(b'\n');
    for (k, v) in labels {
        s.extend_from_slice(k.as_bytes());
        s.push(b'=');
        s.extend_from_slice(v.as_bytes());
        s.push(b'\n');
    }
    canonical(spec, &mut s);
    s.push(b'\n');
    if let Some(st) = status {
        canonical(st, &mut s);
    }
    let digest = Sha256::digest(&s);
    hex::encode(&digest[..10])
}

impl Wire {
    /// The resource as stored, unmapped.
    pub fn from_resource(r: &Resource) -> Wire {
        Wire {
            kind: r.kind(),
            name: r.key.name().to_string(),
            mesh: r.key.mesh().map(|m| m.to_string()),
            labels: r.meta.labels.clone(),
            spec: r.spec.clone(),
            status: r.status.clone(),
        }
    }

    pub fn delta_name(&self) -> String {
        delta_name(&self.name, self.mesh.as_deref())
    }

    /// The version both ends compute from content alone, so that a receiver
    /// can state what it holds (`initial_resource_versions`) after a restart
    /// without remembering anything the sender told it.
    pub fn version(&self) -> String {
        content_version(
            &self.name,
            self.mesh.as_deref(),
            &self.labels,
            &self.spec,
            self.status.as_ref(),
        )
    }

    /// Delta name and [`Wire::version`] of a stored resource, as
    /// `Wire::from_resource(r)` would give them, without copying it.
    pub fn name_and_version(r: &Resource) -> (String, String) {
        let name = r.key.name().as_str();
        let mesh = r.key.mesh().map(|m| m.as_str());
        (
            delta_name(name, mesh),
            content_version(name, mesh, &r.meta.labels, &r.spec, r.status.as_ref()),
        )
    }

    /// The store key this resource is written under.
    pub fn key(&self) -> Result<ResourceKey, MapError> {
        let invalid = |reason: String| MapError::Invalid {
            name: self.delta_name(),
            reason,
        };
        let name =
            ResourceName::new(self.name.as_str()).map_err(|e| invalid(format!("name: {e}")))?;
        let mesh = self
            .mesh
            .as_deref()
            .map(MeshName::new)
            .transpose()
            .map_err(|e| invalid(format!("mesh: {e}")))?;
        ResourceKey::new(self.kind, mesh, name).map_err(|e| invalid(e.to_string()))
    }

    /// Kuma's KumaResource. The spec of a kind Kuma defines in protobuf
    /// (Mesh, Dataplane, Secret… see [`crate::legacy`]) is that message in
    /// `Any` under its type URL; every other spec, and status, is JSON
    /// inside `Any` with an empty type URL, which is how Kuma carries its
    /// non-protobuf kinds. A spec with no protobuf form (a field Kuma's
    /// message lacks) falls back to JSON, which our own peers still read.
    pub fn to_proto(&self) -> KumaResource {
        let json_any = |v: &Value| Any {
            type_url: String::new(),
            value: serde_json::to_vec(v).unwrap_or_default(),
        };
        let spec = match crate::legacy::encode(self.kind, &self.spec) {
            Some(Ok(any)) => any,
            Some(Err(reason)) => {
                tracing::warn!(resource = %self.delta_name(), %reason, "sending spec as JSON");
                json_any(&self.spec)
            }
            None => json_any(&self.spec),
        };
        let has_status = self.kind.descriptor().has_status;
        KumaResource {
            meta: Some(Meta {
                name: self.name.clone(),
                mesh: self.mesh.clone().unwrap_or_default(),
                version: String::new(),
                labels: self.labels.clone().into_iter().collect(),
            }),
            spec: Some(spec),
            status: if has_status {
                self.status.as_ref().map(json_any)
            } else {
                None
            },
        }
    }

    pub fn from_proto(kind: ResourceKind, kr: &KumaResource) -> Result<Wire, MapError> {
        let meta = kr.meta.clone().unwrap_or_default();
        let name = meta.name.clone();
        let decode = |a: &Any| -> Result<Value, MapError> {
            serde_json::from_slice(&a.value).map_err(|e| MapError::Decode {
                name: name.clone(),
                reason: format!("{kind} content is not JSON: {e}"),
            })
        };
        let spec = match &kr.spec {
            Some(a) if !a.type_url.is_empty() => {
                crate::legacy::decode(kind, a).map_err(|reason| MapError::Decode {
                    name: name.clone(),
                    reason,
                })?
            }
            Some(a) => decode(a)?,
            None => Value::Object(Default::default()),
        };
        let status = match (&kr.status, kind.descriptor().has_status) {
            (Some(a), true) if !a.value.is_empty() => Some(decode(a)?),
            _ => None,
        };
        if kind.descriptor().layout == SpecLayout::Inline && !spec.is_object() {
            return Err(MapError::Invalid {
                name,
                reason: "content must be an object".into(),
            });
        }
        Ok(Wire {
            kind,
            name: meta.name,
            mesh: Some(meta.mesh).filter(|m| !m.is_empty()),
            labels: meta.labels.into_iter().collect(),
            spec,
            status,
        })
    }

    /// The delta xDS envelope: name, content version and the packed resource.
    pub fn to_envoy(&self) -> EnvoyResource {
        self.to_envoy_versioned(self.version())
    }

    /// [`Wire::to_envoy`] with the version already computed.
    pub fn to_envoy_versioned(&self, version: String) -> EnvoyResource {
        EnvoyResource {
            name: self.delta_name(),
            version,
            resource: Some(Any {
                type_url: KUMA_RESOURCE_TYPE_URL.to_string(),
                value: self.to_proto().encode_to_vec(),
            }),
            ..Default::default()
        }
    }

    pub fn from_envoy(kind: ResourceKind, r: &EnvoyResource) -> Result<Wire, MapError> {
        let any = r.resource.as_ref().ok_or_else(|| MapError::Decode {
            name: r.name.clone(),
            reason: "no resource".into(),
        })?;
        if any.type_url != KUMA_RESOURCE_TYPE_URL {
            return Err(MapError::Decode {
                name: r.name.clone(),
                reason: format!("type URL {:?}", any.type_url),
            });
        }
        let kr = KumaResource::decode(any.value.as_slice()).map_err(|e| MapError::Decode {
            name: r.name.clone(),
            reason: e.to_string(),
        })?;
        Wire::from_proto(kind, &kr)
    }

    fn display_name(&self) -> String {
        self.labels
            .get(DISPLAY_NAME)
            .cloned()
            .unwrap_or_else(|| self.name.clone())
    }

    /// Kuma's name for a synced resource: hash of mesh, display name and the
    /// zone and namespace labels present.
    pub fn expected_hashed_name(&self) -> String {
        let display = self.display_name();
        let extra: Vec<&str> = [ZONE, NAMESPACE_LABEL]
            .iter()
            .filter_map(|l| self.labels.get(*l).map(String::as_str))
            .collect();
        hashed_name(self.mesh.as_deref().unwrap_or(""), &display, &extra)
    }

    fn rename_hashed(mut self) -> Wire {
        if skips_hash(self.kind) {
            return self;
        }
        let display = self.display_name();
        self.labels.insert(DISPLAY_NAME.into(), display);
        self.name = self.expected_hashed_name();
        self
    }
}

/// Kinds Kuma syncs under their own name (`SkipKDSHash`): meshes, and
/// secrets, which zones look up by well-known names.
pub fn skips_hash(kind: ResourceKind) -> bool {
    matches!(
        kind,
        ResourceKind::Mesh | ResourceKind::Secret | ResourceKind::GlobalSecret
    )
}

/// Kuma's "locally originated": no origin label, or the given one.
pub fn originated_in(r: &BTreeMap<String, String>, origin: &str) -> bool {
    r.get(ORIGIN).is_none_or(|o| o == origin)
}

/// Kinds the global sends to zones.
pub fn global_to_zone_kinds() -> Vec<ResourceKind> {
    ResourceKind::ALL
        .iter()
        .copied()
        .filter(|k| {
            let f = k.descriptor().kds;
            f.contains(KdsFlags::GLOBAL_TO_ZONES) || f.contains(KdsFlags::SYNCED_ACROSS_ZONES)
        })
        .collect()
}

/// Kinds zones send to the global.
pub fn zone_to_global_kinds() -> Vec<ResourceKind> {
    ResourceKind::ALL
        .iter()
        .copied()
        .filter(|k| k.descriptor().kds.contains(KdsFlags::ZONE_TO_GLOBAL))
        .collect()
}

/// What the global sends to `zone` for a stored resource, or `None` when it
/// stays on the global: global-origin kinds flagged GLOBAL_TO_ZONES, and
/// other zones' resources of kinds SYNCED_ACROSS_ZONES (not policies: Kuma
/// only forwards producer policies, which need the role computation).
pub fn global_to_zone(r: &Resource, zone: &str) -> Option<Wire> {
    let d = r.kind().descriptor();
    let is_global = originated_in(&r.meta.labels, ORIGIN_GLOBAL);
    let forward = if is_global {
        d.kds.contains(KdsFlags::GLOBAL_TO_ZONES)
    } else {
        d.kds.contains(KdsFlags::SYNCED_ACROSS_ZONES)
            && d.policy.is_none()
            && r.meta.labels.get(ZONE).is_some_and(|z| z != zone)
    };
    if !forward {
        return None;
    }
    let mut w = Wire::from_resource(r);
    if r.kind() == ResourceKind::GlobalSecret {
        let name = r.key.name().as_str();
        if GLOBAL_ONLY_SECRETS.contains(&name)
            || name.starts_with(kuma_auth::secrets::USER_TOKEN_SIGNING_KEY_PREFIX)
        {
            return None;
        }
        if let Some(serial) = name.strip_prefix(kuma_auth::secrets::ZONE_TOKEN_SIGNING_KEY_PREFIX) {
            // Zones verify zone tokens; only the global signs them.
            let bytes = kuma_tokens::secret_bytes(r)?;
            let key = kuma_auth::SigningKey::from_secret_data(&bytes).ok()?;
            w.name = format!(
                "{}{serial}",
                kuma_auth::secrets::ZONE_TOKEN_SIGNING_PUBLIC_KEY_PREFIX
            );
            w.labels.insert(DISPLAY_NAME.into(), w.name.clone());
            w.spec = kuma_tokens::secret_spec(key.public_key().to_pem().as_bytes());
        }
    }
    w.labels.insert(ORIGIN.into(), ORIGIN_GLOBAL.into());
    w.status = None;
    Some(w.rename_hashed())
}

/// What a zone sends up for a stored resource: zone-originated resources of
/// kinds flagged ZONE_TO_GLOBAL, labelled with the zone and hash-named.
pub fn zone_to_global(r: &Resource, zone: &str) -> Option<Wire> {
    let d = r.kind().descriptor();
    if !d.kds.contains(KdsFlags::ZONE_TO_GLOBAL) || !originated_in(&r.meta.labels, ORIGIN_ZONE) {
        return None;
    }
    let mut w = Wire::from_resource(r);
    w.labels.insert(ORIGIN.into(), ORIGIN_ZONE.into());
    w.labels.insert(ZONE.into(), zone.into());
    Some(w.rename_hashed())
}

/// Checks a resource a zone sent: right direction, attributed to the zone
/// the stream is authenticated as, named as Kuma names it.
pub fn accept_from_zone(w: Wire, zone: &str) -> Result<Wire, MapError> {
    if !w.kind.descriptor().kds.contains(KdsFlags::ZONE_TO_GLOBAL) {
        return Err(MapError::WrongDirection { kind: w.kind });
    }
    match w.labels.get(ZONE) {
        Some(z) if z == zone => {}
        claimed => {
            return Err(MapError::ZoneMismatch {
                name: w.delta_name(),
                claimed: claimed.cloned().unwrap_or_default(),
                zone: zone.into(),
            });
        }
    }
    if w.labels.get(ORIGIN).map(String::as_str) != Some(ORIGIN_ZONE) {
        return Err(MapError::WrongOrigin {
            name: w.delta_name(),
            origin: w.labels.get(ORIGIN).cloned().unwrap_or_default(),
            expected: ORIGIN_ZONE,
        });
    }
    let expected = w.expected_hashed_name();
    if !skips_hash(w.kind) && w.name != expected {
        return Err(MapError::WrongName {
            name: w.delta_name(),
            expected,
        });
    }
    Ok(w)
}

/// Checks a resource the global sent.
pub fn accept_from_global(w: Wire) -> Result<Wire, MapError> {
    let f = w.kind.descriptor().kds;
    if !f.contains(KdsFlags::GLOBAL_TO_ZONES) && !f.contains(KdsFlags::SYNCED_ACROSS_ZONES) {
        return Err(MapError::WrongDirection { kind: w.kind });
    }
    if w.labels.get(ORIGIN).map(String::as_str) != Some(ORIGIN_GLOBAL) {
        return Err(MapError::WrongOrigin {
            name: w.delta_name(),
            origin: w.labels.get(ORIGIN).cloned().unwrap_or_default(),
            expected: ORIGIN_GLOBAL,
        });
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The former encoding (allocating per key and scalar): versions must not
    /// change, or every zone would be sent everything again after an upgrade.
    fn canonical_string(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical_string(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical_string(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    #[test]
    fn canonical_bytes_unchanged() {
        let v = serde_json::json!({
            "z": [1, -2.5, 1e300, true, null, "q\"uote\\ \u{1}é\n"],
            "a": {"y": {}, "x": [], "\u{7f}k\"": 18446744073709551615u64},
        });
        let mut old = String::new();
        canonical_string(&v, &mut old);
        let mut new = Vec::new();
        canonical(&v, &mut new);
        assert_eq!(String::from_utf8(new).unwrap(), old);
    }
    use chrono::Utc;
    use kuma_model::ResourceMeta;
    use serde_json::json;

    fn mk(
        kind: ResourceKind,
        mesh: Option<&str>,
        name: &str,
        labels: &[(&str, &str)],
        spec: Value,
    ) -> Resource {
        Resource {
            key: ResourceKey::new(
                kind,
                mesh.map(|m| MeshName::new(m).unwrap()),
                ResourceName::new(name).unwrap(),
            )
            .unwrap(),
            meta: ResourceMeta {
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                version: 1,
                creation_time: Utc::now(),
                modification_time: Utc::now(),
            },
            spec,
            status: Some(json!({"addresses": []})),
        }
    }

    #[test]
    fn hashed_names_match_kuma() {
        // From Kuma's pkg/kds/context/testdata/full_sync/policy-simple golden file.
        assert_eq!(
            hashed_name("default", "default-timeout-global", &[]),
            "default-timeout-global-54dbd4c66zwbcf9c"
        );
        let long = "a".repeat(300);
        let h = hashed_name("m", &long, &[]);
        assert_eq!(h.len(), 253);
    }

    #[test]
    fn global_policy_goes_down_hash_named_with_origin() {
        let r = mk(
            ResourceKind::MeshTimeout,
            Some("default"),
            "t1",
            &[
                ("kuma.io/origin", "global"),
                ("kuma.io/display-name", "t1"),
                ("kuma.io/mesh", "default"),
            ],
            json!({"targetRef": {"kind": "Mesh"}}),
        );
        let w = global_to_zone(&r, "zone-1").unwrap();
        assert_eq!(w.name, hashed_name("default", "t1", &[]));
        assert_eq!(w.labels[DISPLAY_NAME], "t1");
        assert_eq!(w.labels[ORIGIN], "global");
        assert_eq!(w.delta_name(), format!("{}.default", w.name));
        let back = Wire::from_envoy(ResourceKind::MeshTimeout, &w.to_envoy()).unwrap();
        assert_eq!(back, w);
        assert_eq!(accept_from_global(back).unwrap(), w);
    }

    #[test]
    fn zone_resources_stay_on_zones_except_synced_kinds_from_other_zones() {
        let dp = mk(
            ResourceKind::Dataplane,
            Some("default"),
            "dp-1",
            &[("kuma.io/origin", "zone"), ("kuma.io/zone", "zone-1")],
            json!({}),
        );
        assert!(global_to_zone(&dp, "zone-2").is_none());
        let ms = mk(
            ResourceKind::MeshService,
            Some("default"),
            "backend-xyz",
            &[
                ("kuma.io/origin", "zone"),
                ("kuma.io/zone", "zone-1"),
                ("kuma.io/display-name", "backend"),
            ],
            json!({}),
        );
        assert!(
            global_to_zone(&ms, "zone-1").is_none(),
            "never echoed to its own zone"
        );
        let w = global_to_zone(&ms, "zone-2").unwrap();
        assert_eq!(w.name, hashed_name("default", "backend", &["zone-1"]));
        assert_eq!(w.labels[ZONE], "zone-1");
        assert_eq!(w.status, None);
    }

    #[test]
    fn zone_sends_up_its_own_resources_only() {
        let dp = mk(
            ResourceKind::Dataplane,
            Some("default"),
            "dp-1",
            &[("kuma.io/origin", "zone"), ("kuma.io/display-name", "dp-1")],
            json!({}),
        );
        let w = zone_to_global(&dp, "zone-1").unwrap();
        assert_eq!(w.labels[ZONE], "zone-1");
        assert_eq!(w.name, hashed_name("default", "dp-1", &["zone-1"]));
        assert!(accept_from_zone(w.clone(), "zone-1").is_ok());
        assert!(matches!(
            accept_from_zone(w.clone(), "zone-2"),
            Err(MapError::ZoneMismatch { .. })
        ));
        let mut renamed = w;
        renamed.name = "dp-1".into();
        assert!(matches!(
            accept_from_zone(renamed, "zone-1"),
            Err(MapError::WrongName { .. })
        ));
        let synced = mk(
            ResourceKind::MeshService,
            Some("default"),
            "b",
            &[("kuma.io/origin", "global")],
            json!({}),
        );
        assert!(zone_to_global(&synced, "zone-1").is_none());
        let mesh = mk(ResourceKind::Mesh, None, "default", &[], json!({}));
        assert!(zone_to_global(&mesh, "zone-1").is_none());
    }

    #[test]
    fn admin_token_and_user_signing_keys_never_leave_the_global() {
        for name in [
            "admin-user-token",
            "user-token-signing-key-1",
            "user-token-revocations",
        ] {
            let s = mk(
                ResourceKind::GlobalSecret,
                None,
                name,
                &[("kuma.io/origin", "global")],
                json!({"data": "eA=="}),
            );
            assert!(global_to_zone(&s, "zone-1").is_none(), "{name}");
        }
    }

    #[test]
    fn zone_token_signing_key_goes_down_as_public_key() {
        let key = kuma_auth::SigningKey::generate_with_bits(1024).unwrap();
        let s = mk(
            ResourceKind::GlobalSecret,
            None,
            "zone-token-signing-key-1",
            &[("kuma.io/origin", "global")],
            kuma_tokens::secret_spec(key.to_pem().as_bytes()),
        );
        let w = global_to_zone(&s, "zone-1").unwrap();
        assert_eq!(w.labels[DISPLAY_NAME], "zone-token-signing-public-key-1");
        let data = String::from_utf8(
            base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                w.spec["data"].as_str().unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert!(data.contains("PUBLIC KEY"));
        assert!(!data.contains("PRIVATE"));
    }

    #[test]
    fn versions_ignore_key_order() {
        let mut a = Wire::from_resource(&mk(
            ResourceKind::Mesh,
            None,
            "m",
            &[],
            json!({"a": 1, "b": {"c": 2, "d": 3}}),
        ));
        let b = a.clone();
        a.spec = json!({"b": {"d": 3, "c": 2}, "a": 1});
        assert_eq!(a.version(), b.version());
        a.spec = json!({"b": {"d": 4, "c": 2}, "a": 1});
        assert_ne!(a.version(), b.version());
    }

    #[test]
    fn delta_names_split_by_scope() {
        assert_eq!(
            split_delta_name(ResourceKind::MeshTimeout, "t-1.x.default"),
            ("t-1.x".into(), Some("default".into()))
        );
        assert_eq!(
            split_delta_name(ResourceKind::Mesh, "a.b"),
            ("a.b".into(), None)
        );
    }
}
