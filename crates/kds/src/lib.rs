//! KDS, Kuma's Discovery Service between a global control plane and its zones.
//!
//! ```text
//!  global store --mapping::global_to_zone--> sync::run_sender --GlobalToZoneSync--> zone::run
//!       ^                                                                                |
//!       |        sync::run_receiver <--ZoneToGlobalSync-- sync::run_sender <-- zone store
//!       '--- StoreSink(mapping::accept_from_zone) <--'
//! ```
//!
//! - [`pb`]: `kuma.mesh.v1alpha1` KDS services and `KumaResource`, compiled
//!   from `proto/kds.proto` by protox at build time; the delta discovery
//!   messages are envoy-types' own.
//! - [`legacy`]: Kuma's protobuf kinds (Mesh, Dataplane, Secret…) as
//!   protobuf `Any` on the wire, converted from and to our JSON.
//! - [`mapping`]: pure `Resource` <-> `KumaResource` with Kuma's names and labels.
//! - [`sync`]: the delta engine for either end of either stream.
//! - [`zone`]: the zone's client (dial, auth metadata, reconnect).
//!
//! The global's server lives in the `kuma-global` crate.

pub mod legacy;
pub mod mapping;
pub mod sync;
pub mod zone;

/// Generated from `proto/kds.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kuma.mesh.v1alpha1");
}
