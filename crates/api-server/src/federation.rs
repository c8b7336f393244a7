//! Who may write what in a multizone deployment, as Kuma enforces it.
//!
//! - On the global, kinds that only zones produce (Dataplane, MeshService, …)
//!   are read-only, and so is anything a zone synced up (`kuma.io/origin: zone`).
//! - On a federated zone, kinds that only the global produces (Mesh, …) are
//!   read-only, anything synced down (`kuma.io/origin: global`) is read-only,
//!   and a new resource of a kind that also flows down must say
//!   `kuma.io/origin: zone`, so nobody mistakes a local policy for a global one.

use crate::SharedState;
use crate::error::{ApiError, ApiResult};
use kuma_model::labels::{Mode, ORIGIN};
use kuma_model::{KdsFlags, Resource, ResourceKind};
use std::collections::BTreeMap;

fn origin_field() -> String {
    format!("labels[{ORIGIN:?}]")
}

/// A kind the REST API of this control plane never writes, with the reason.
pub fn read_only_reason(state: &SharedState, kind: ResourceKind) -> Option<String> {
    let d = kind.descriptor();
    let down = d.kds.contains(KdsFlags::GLOBAL_TO_ZONES);
    let up = d.kds.contains(KdsFlags::ZONE_TO_GLOBAL);
    match state.config.mode {
        Mode::Global if up && !down => Some(format!(
            "On global control plane you can not modify {} resources. Use zone control plane instead.",
            d.plural_display
        )),
        Mode::Zone if state.config.federated && down && !up && kind != ResourceKind::Secret => {
            Some(format!(
                "On a zone control plane connected to a global you can not modify {} resources. Use the global control plane instead.",
                d.plural_display
            ))
        }
        _ => None,
    }
}

/// Checks a write (or delete, with `new_labels = None`) against the origin of
/// what is stored.
pub fn check_origin(
    state: &SharedState,
    kind: ResourceKind,
    existing: Option<&Resource>,
    new_labels: Option<&BTreeMap<String, String>>,
) -> ApiResult<()> {
    let title = "Could not modify a resource";
    let stored_origin = existing
        .and_then(|r| r.meta.labels.get(ORIGIN))
        .map(String::as_str);
    match (state.config.mode, stored_origin) {
        (Mode::Global, Some("zone")) => {
            return Err(ApiError::invalid_field(
                title,
                &origin_field(),
                "this resource was synced from a zone and is read-only on the global control plane; change it in its zone",
            ));
        }
        (Mode::Zone, Some("global")) if state.config.federated => {
            return Err(ApiError::invalid_field(
                title,
                &origin_field(),
                "this resource was synced from the global control plane and is read-only on a zone; change it on the global",
            ));
        }
        _ => {}
    }
    let flows_down = kind.descriptor().kds.contains(KdsFlags::GLOBAL_TO_ZONES);
    if let Some(labels) = new_labels
        && state.config.mode == Mode::Zone
        && state.config.federated
        && flows_down
        && kind != ResourceKind::Secret
        && labels.get(ORIGIN).map(String::as_str) != Some("zone")
    {
        return Err(ApiError::invalid_field(
            title,
            &origin_field(),
            "the origin label must be set to 'zone' on a zone control plane connected to a global",
        ));
    }
    Ok(())
}
