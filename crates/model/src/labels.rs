//! Labels the control plane computes on every write, as Kuma does, so that
//! clients and KDS can tell where a resource came from.

use crate::kinds::{KdsFlags, ResourceKind, Scope};
use std::collections::BTreeMap;

pub const DISPLAY_NAME: &str = "kuma.io/display-name";
pub const MESH: &str = "kuma.io/mesh";
pub const ORIGIN: &str = "kuma.io/origin";
pub const ZONE: &str = "kuma.io/zone";
pub const ENV: &str = "kuma.io/env";

/// Which control plane a write happens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Zone,
    Global,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Zone => "zone",
            Mode::Global => "global",
        }
    }
}

/// Computes the labels stored with a write: the user's labels plus
/// `kuma.io/display-name`, `kuma.io/mesh`, `kuma.io/origin` and, for kinds a
/// zone provides, `kuma.io/zone` and `kuma.io/env`.
pub fn compute(
    kind: ResourceKind,
    mesh: Option<&str>,
    name: &str,
    user: &BTreeMap<String, String>,
    mode: Mode,
    zone: &str,
) -> BTreeMap<String, String> {
    let d = kind.descriptor();
    let mut labels = user.clone();
    labels.insert(DISPLAY_NAME.into(), name.into());
    if d.scope == Scope::Mesh {
        labels
            .entry(MESH.into())
            .or_insert_with(|| mesh.unwrap_or("default").into());
    }
    labels.insert(ORIGIN.into(), mode.as_str().into());
    if mode == Mode::Zone
        && (d.kds.contains(KdsFlags::PROVIDED_BY_ZONE) || d.kds.contains(KdsFlags::ZONE_TO_GLOBAL))
    {
        labels.entry(ZONE.into()).or_insert_with(|| zone.into());
        labels
            .entry(ENV.into())
            .or_insert_with(|| "universal".into());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_policy_labels() {
        let l = compute(
            ResourceKind::MeshTimeout,
            Some("default"),
            "t1",
            &BTreeMap::new(),
            Mode::Zone,
            "zone-1",
        );
        assert_eq!(l[DISPLAY_NAME], "t1");
        assert_eq!(l[MESH], "default");
        assert_eq!(l[ORIGIN], "zone");
        assert_eq!(l[ZONE], "zone-1");
        assert_eq!(l[ENV], "universal");
    }

    #[test]
    fn global_mesh_labels() {
        let mut user = BTreeMap::new();
        user.insert("team".to_string(), "a".to_string());
        let l = compute(ResourceKind::Mesh, None, "m1", &user, Mode::Global, "");
        assert_eq!(l.get(MESH), None);
        assert_eq!(l[ORIGIN], "global");
        assert_eq!(l["team"], "a");
        assert_eq!(l.get(ZONE), None);
    }
}
