//! Typed specs for every kind, and the one entry point that validates them.
//!
//! Each kind's content is a Rust type with Kuma's field names (serde) and a JSON
//! schema (schemars) that the OpenAPI document is built from, so the schema can
//! never disagree with what the server accepts. Checking happens in two steps:
//! serde enforces shape (types, unknown fields, enum values), then
//! [`Spec::validate`] applies Kuma's semantic rules and reports every violation.

use crate::kinds::{ResourceKind, SpecLayout};
use crate::validate::{Path, Violations, from_serde_error};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;

pub mod common;
pub mod dataplane;
pub mod hostnamegenerator;
pub mod identity;
pub mod insights;
pub mod mesh;
pub mod meshaccesslog;
pub mod meshcircuitbreaker;
pub mod meshfaultinjection;
pub mod meshhealthcheck;
pub mod meshhttproute;
pub mod meshloadbalancingstrategy;
pub mod meshmetric;
pub mod meshpassthrough;
pub mod meshproxypatch;
pub mod meshratelimit;
pub mod meshretry;
pub mod meshtcproute;
pub mod meshtimeout;
pub mod meshtls;
pub mod meshtrace;
pub mod meshtrafficpermission;
mod policy;
pub mod services;
pub mod system;

pub use dataplane::Dataplane;
pub use hostnamegenerator::{
    HostnameGenerator, MeshOpenTelemetryBackend, MeshZoneAddress, Workload,
};
pub use identity::{MeshIdentity, MeshTrust};
pub use insights::{DataplaneInsight, MeshInsight, ServiceInsight, ZoneInsight};
pub use mesh::Mesh;
pub use meshaccesslog::MeshAccessLog;
pub use meshcircuitbreaker::MeshCircuitBreaker;
pub use meshfaultinjection::MeshFaultInjection;
pub use meshhealthcheck::MeshHealthCheck;
pub use meshhttproute::MeshHTTPRoute;
pub use meshloadbalancingstrategy::MeshLoadBalancingStrategy;
pub use meshmetric::MeshMetric;
pub use meshpassthrough::MeshPassthrough;
pub use meshproxypatch::MeshProxyPatch;
pub use meshratelimit::MeshRateLimit;
pub use meshretry::MeshRetry;
pub use meshtcproute::MeshTCPRoute;
pub use meshtimeout::MeshTimeout;
pub use meshtls::MeshTLS;
pub use meshtrace::MeshTrace;
pub use meshtrafficpermission::MeshTrafficPermission;
pub use services::{MeshExternalService, MeshMultiZoneService, MeshService};
pub use system::{GlobalSecret, Secret, Zone};

/// What a spec's validation may look at besides the spec itself.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub kind: ResourceKind,
    pub mesh: Option<&'a str>,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// One kind's content.
pub trait Spec: DeserializeOwned + Serialize + JsonSchema {
    /// Kuma's semantic rules. `path` is where the content sits: `spec` for
    /// nested kinds, the empty path for inline kinds.
    fn validate(&self, ctx: &Context<'_>, path: &Path, errs: &mut Violations);
}

fn root(kind: ResourceKind) -> Path {
    match kind.descriptor().layout {
        SpecLayout::Nested => Path::root("spec"),
        SpecLayout::Inline => Path::root(""),
    }
}

fn check<T: Spec>(ctx: &Context<'_>, value: &Value) -> Result<Value, Violations> {
    let path = root(ctx.kind);
    let typed: T =
        serde_path_to_error::deserialize(value).map_err(|e| from_serde_error(&path, e))?;
    let mut errs = Violations::new();
    typed.validate(ctx, &path, &mut errs);
    errs.into_result()?;
    // Store the canonical form: what the type serializes to.
    serde_json::to_value(&typed).map_err(|e| Violations::single(path.as_str(), e.to_string()))
}

macro_rules! spec_table {
    ($($kind:ident => $ty:ty),* $(,)?) => {
        /// Validates `value` as the content of `ctx.kind`, returning its canonical
        /// form, or every violation found.
        pub fn validate(ctx: &Context<'_>, value: &Value) -> Result<Value, Violations> {
            match ctx.kind {
                $(ResourceKind::$kind => check::<$ty>(ctx, value),)*
            }
        }

        /// The JSON schema of a kind's content (a `$ref` into the generator's
        /// definitions).
        pub fn schema(kind: ResourceKind, generator: &mut SchemaGenerator) -> Schema {
            match kind {
                $(ResourceKind::$kind => generator.subschema_for::<$ty>(),)*
            }
        }
    };
}

spec_table! {
    Mesh => Mesh,
    Dataplane => Dataplane,
    DataplaneInsight => DataplaneInsight,
    Zone => Zone,
    ZoneInsight => ZoneInsight,
    MeshInsight => MeshInsight,
    ServiceInsight => ServiceInsight,
    Secret => Secret,
    GlobalSecret => GlobalSecret,
    MeshService => MeshService,
    MeshExternalService => MeshExternalService,
    MeshMultiZoneService => MeshMultiZoneService,
    HostnameGenerator => HostnameGenerator,
    MeshIdentity => MeshIdentity,
    MeshTrust => MeshTrust,
    MeshOpenTelemetryBackend => MeshOpenTelemetryBackend,
    MeshZoneAddress => MeshZoneAddress,
    Workload => Workload,
    MeshAccessLog => MeshAccessLog,
    MeshCircuitBreaker => MeshCircuitBreaker,
    MeshFaultInjection => MeshFaultInjection,
    MeshHealthCheck => MeshHealthCheck,
    MeshHTTPRoute => MeshHTTPRoute,
    MeshLoadBalancingStrategy => MeshLoadBalancingStrategy,
    MeshMetric => MeshMetric,
    MeshPassthrough => MeshPassthrough,
    MeshProxyPatch => MeshProxyPatch,
    MeshRateLimit => MeshRateLimit,
    MeshRetry => MeshRetry,
    MeshTCPRoute => MeshTCPRoute,
    MeshTimeout => MeshTimeout,
    MeshTLS => MeshTLS,
    MeshTrace => MeshTrace,
    MeshTrafficPermission => MeshTrafficPermission,
}
