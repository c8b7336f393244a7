//! The resource model: what a Kuma resource is, independent of where it is stored
//! or how it travels.
//!
//! ```text
//!  REST body / YAML file / KDS payload
//!        |  Resource::from_kuma_json  (envelope: type, mesh, name, labels)
//!        v
//!  ResourceKind -> KindDescriptor (plural, scope, KDS direction, read-only ...)
//!        |  specs::validate  (typed spec, every violation with its field path)
//!        v
//!  Resource { key, labels, spec, status, version, times }  -> store
//! ```
//!
//! Nothing here does I/O; every other crate builds on these types.

pub mod kinds;
pub mod labels;
pub mod names;
pub mod resource;
pub mod specs;
pub mod validate;

pub use kinds::{KdsFlags, KindDescriptor, PolicyShape, ResourceKind, Scope, SpecLayout};
pub use names::{MeshName, NameError, ResourceName};
pub use resource::{Resource, ResourceKey, ResourceMeta};
pub use validate::{Violation, Violations};
