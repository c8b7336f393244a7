//! Pieces shared by the SQL backends: keys to and from columns, and the error
//! for rows that cannot be read back.

use crate::StoreError;
use kuma_model::{MeshName, ResourceKey, ResourceKind, ResourceName};
use std::collections::BTreeMap;

/// A stored row that does not decode (edited by hand, or written by a newer
/// kuma-cp that knows more kinds). Only reaches logs, as a Backend source.
#[derive(Debug, thiserror::Error)]
#[error("stored resource {kind}/{mesh}/{name} cannot be read: {reason}")]
pub(crate) struct CorruptRow {
    kind: String,
    mesh: String,
    name: String,
    reason: String,
}

/// The `mesh` column value: '' for global kinds.
pub(crate) fn mesh_col(key: &ResourceKey) -> &str {
    key.mesh().map(MeshName::as_str).unwrap_or("")
}

pub(crate) fn decode_key(kind: &str, mesh: &str, name: &str) -> Result<ResourceKey, StoreError> {
    let corrupt = |reason: String| {
        StoreError::backend(CorruptRow {
            kind: kind.into(),
            mesh: mesh.into(),
            name: name.into(),
            reason,
        })
    };
    let k = ResourceKind::from_name(kind).ok_or_else(|| corrupt("unknown kind".into()))?;
    let n = ResourceName::new(name).map_err(|e| corrupt(e.to_string()))?;
    let m = if mesh.is_empty() {
        None
    } else {
        Some(MeshName::new(mesh).map_err(|e| corrupt(e.to_string()))?)
    };
    ResourceKey::new(k, m, n).map_err(|e| corrupt(e.to_string()))
}

pub(crate) fn decode_labels(
    key: &ResourceKey,
    v: serde_json::Value,
) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_value(v).map_err(|e| corrupt_json(key, e))
}

pub(crate) fn corrupt_json(key: &ResourceKey, e: serde_json::Error) -> StoreError {
    StoreError::backend(CorruptRow {
        kind: key.kind().name().into(),
        mesh: mesh_col(key).into(),
        name: key.name().to_string(),
        reason: e.to_string(),
    })
}

/// The name of the Mesh whose deletion cascades, when `key` is a Mesh.
pub(crate) fn cascading_mesh(key: &ResourceKey) -> Option<&str> {
    (key.kind() == ResourceKind::Mesh).then(|| key.name().as_str())
}

/// Versions are u64 in the API and BIGINT in SQL; both stay far below 2^63.
pub(crate) fn version_to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn version_from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
