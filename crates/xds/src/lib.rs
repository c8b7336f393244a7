//! Model -> Envoy resources, the snapshot cache and the ADS server.
//!
//! ```text
//!  MeshContext (Dataplanes, MeshServices, policies of one mesh)
//!        |  generate (pure; kuma-policy merges the rules)
//!        v
//!  ProxyPlan: ResourcePlan per listener / cluster / endpoints, versioned by content hash
//!        |  SnapshotCache::set (interns equal plans: built and encoded once, shared by Arc;
//!        |  the delta wire form too, see `wire`)
//!        v
//!  per-proxy Snapshot (a slot each stream of the proxy follows)
//!        |  AdsServer: delta or state-of-the-world stream, per-type ACK/NACK tracking,
//!        v  only changed resources are sent
//!  Envoy
//! ```

pub mod cache;
pub mod conn;
pub mod envoy;
pub mod generate;
mod hpack;
pub mod input;
pub mod plan;
pub mod server;
pub mod timeout;
pub mod wire;

pub use cache::{
    BuildMemo, SlotHandle, Snapshot, SnapshotCache, SnapshotWatch, Staged, VersionedResource,
};
pub use generate::{
    MeshEndpoints, OutboundMemo, ProxyMeta, ProxyPlan, generate, generate_memo, generate_with,
    service_cluster_name,
};
pub use input::MeshContext;
pub use plan::{ResourcePlan, ResourceType};
pub use server::{AdsServer, DeltaBody, StreamAuth, StreamCounters, StreamEvents, TypeCounts};
pub use timeout::{ClusterTimeouts, Timeouts};
pub use wire::{AdsService, DELTA_PATH, EncodedDelta};
