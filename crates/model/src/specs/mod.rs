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

/// Every structural violation of `value` against `T`'s JSON schema, with
/// Kuma-style field paths. Only used once serde has refused the value, so its
/// cost is paid on bad input alone.
fn schema_violations<T: Spec + 'static>(root: &Path, value: &Value) -> Violations {
    use std::any::TypeId;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static VALIDATORS: OnceLock<Mutex<HashMap<TypeId, Arc<jsonschema::Validator>>>> =
        OnceLock::new();
    let cache = VALIDATORS.get_or_init(Default::default);
    let cached = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&TypeId::of::<T>())
        .cloned();
    let validator = match cached {
        Some(v) => v,
        None => {
            let schema = SchemaGenerator::default().into_root_schema_for::<T>();
            let Ok(v) = jsonschema::validator_for(schema.as_value()) else {
                return Violations::new();
            };
            let v = Arc::new(v);
            cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(TypeId::of::<T>(), v.clone());
            v
        }
    };
    let mut flat = Vec::new();
    for err in validator.iter_errors(value) {
        flatten_optional(&err, &mut flat);
    }
    let mut out = Violations::new();
    for (pointer, message) in flat {
        let mut path = root.clone();
        for seg in pointer.split('/').skip(1) {
            let seg = seg.replace("~1", "/").replace("~0", "~");
            path = match seg.parse::<usize>() {
                Ok(i) => path.index(i),
                Err(_) => path.field(&seg),
            };
        }
        let field = if path.as_str().is_empty() {
            root.as_str().to_string()
        } else {
            path.as_str().to_string()
        };
        out.add(field, message);
    }
    out
}

/// `Option<T>` becomes `anyOf: [T, null]` in the schema, whose error only says
/// "not valid under any of the schemas". When every branch but one merely
/// failed the `null` type check, report that one branch's errors instead.
/// Yields `(JSON pointer, message)` pairs.
fn flatten_optional(err: &jsonschema::ValidationError<'_>, out: &mut Vec<(String, String)>) {
    if let jsonschema::error::ValidationErrorKind::AnyOf { context } = err.kind() {
        let is_null_branch = |branch: &Vec<jsonschema::ValidationError<'static>>| {
            branch.len() == 1 && branch[0].to_string().ends_with("is not of type \"null\"")
        };
        let rest: Vec<_> = context.iter().filter(|b| !is_null_branch(b)).collect();
        if rest.len() == 1 && !rest[0].is_empty() {
            for e in rest[0].iter() {
                flatten_optional(e, out);
            }
            return;
        }
    }
    if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } = err.kind()
    {
        // Name the unknown field itself, as serde (and Kuma) do.
        for name in unexpected {
            let pointer = format!(
                "{}/{}",
                err.instance_path().as_str(),
                name.replace('~', "~0").replace('/', "~1")
            );
            out.push((pointer, "unknown field".to_string()));
        }
        return;
    }
    out.push((err.instance_path().as_str().to_string(), err.to_string()));
}

fn check<T: Spec + 'static>(ctx: &Context<'_>, value: &Value) -> Result<Value, Violations> {
    let path = root(ctx.kind);
    let typed: T = serde_path_to_error::deserialize(value).map_err(|e| {
        // serde stops at the first problem; the schema names them all.
        // serde's first error has the precise path and Kuma's wording; the
        // schema adds every other problem (not the ones on serde's path).
        let first = from_serde_error(&path, e);
        let mut all = Violations::new();
        let first_field = first
            .iter()
            .next()
            .map(|v| v.field.clone())
            .unwrap_or_default();
        for v in schema_violations::<T>(&path, value).into_vec() {
            let on_serde_path = first_field == v.field
                || first_field.starts_with(&format!("{}.", v.field))
                || first_field.starts_with(&format!("{}[", v.field))
                || v.field.is_empty();
            if !on_serde_path {
                all.add(v.field, v.reason);
            }
        }
        let mut out = first;
        out.extend(all);
        out
    })?;
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

#[cfg(test)]
mod structural_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_structural_violation_is_reported_at_once() {
        let labels = BTreeMap::new();
        let ctx = Context {
            kind: ResourceKind::MeshTimeout,
            mesh: Some("default"),
            name: "t",
            labels: &labels,
        };
        let spec = json!({
            "targetRef": {"kind": "Mesh", "bogus": 1},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": 5, "http": {"requestTimeout": true}}}]
        });
        let errs = validate(&ctx, &spec).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|v| v.field.as_str()).collect();
        assert!(fields.contains(&"spec.targetRef.bogus"), "{errs}");
        assert_eq!(fields.len(), 3, "{errs}");
        assert!(fields.contains(&"spec.to[0].default.idleTimeout"), "{errs}");
        assert!(
            fields.contains(&"spec.to[0].default.http.requestTimeout"),
            "{errs}"
        );
    }
}
