//! `api/openapi.yaml` is generated from the server code; these tests keep the
//! committed file, the document and the router in step.
//!
//! `UPDATE_OPENAPI=1 cargo test -p kuma-api-server --test api openapi` rewrites it.

use kuma_api_server::error::{UNKNOWN_PATH, UNSERVED_METHOD};
use kuma_api_server::openapi;
use kuma_api_server::resources::{collection_path, is_computed, writable};
use kuma_model::{ResourceKind, Scope, SpecLayout};
use reqwest::Method;
use serde_json::Value;
use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../api/openapi.yaml")
}

#[test]
fn committed_openapi_matches_the_code() {
    let generated = openapi::document_yaml();
    assert!(!generated.is_empty(), "the document must serialize");
    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write api/openapi.yaml");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first_diff = committed
            .lines()
            .zip(generated.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("line {}:\n  committed: {a}\n  generated: {b}", i + 1))
            .unwrap_or_else(|| {
                format!(
                    "committed has {} lines, generated {}",
                    committed.lines().count(),
                    generated.lines().count()
                )
            });
        panic!(
            "api/openapi.yaml is out of date with the server code ({first_diff}).\n\
             Regenerate it with:\n  UPDATE_OPENAPI=1 cargo test -p kuma-api-server --test api openapi\n\
             and commit the result."
        );
    }
}

#[test]
fn document_is_openapi_3_0() {
    let yaml = openapi::document_yaml();
    let doc: openapiv3::OpenAPI =
        serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("not an OpenAPI 3.0 document: {e}"));
    assert!(doc.openapi.starts_with("3.0."), "{}", doc.openapi);
    assert!(!doc.paths.paths.is_empty());
    // Operation ids are unique (generated clients need that).
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in &doc.paths.paths {
        let item = item.as_item().expect("no path $refs");
        for (_, op) in item.iter() {
            let id = op
                .operation_id
                .clone()
                .unwrap_or_else(|| panic!("{path}: no operationId"));
            assert!(ids.insert(id.clone()), "duplicate operationId {id}");
        }
    }
}

/// Every `$ref` points at a schema the document defines.
#[test]
fn every_ref_resolves() {
    let doc = openapi::document();
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let mut missing = Vec::new();
    fn walk(v: &Value, schemas: &serde_json::Map<String, Value>, missing: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
                    if !schemas.contains_key(name) {
                        missing.push(r.clone());
                    }
                }
                m.values().for_each(|x| walk(x, schemas, missing));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, schemas, missing)),
            _ => {}
        }
    }
    walk(&doc, schemas, &mut missing);
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "dangling $refs: {missing:?}");
}

fn has_op(doc: &Value, path: &str, method: &str) -> bool {
    doc["paths"][path][method].is_object()
}

/// The routes the router generates for each kind are all documented.
#[test]
fn every_kind_route_is_documented() {
    let doc = openapi::document();
    let mut missing = Vec::new();
    for &kind in ResourceKind::ALL {
        if is_computed(kind) {
            continue;
        }
        let collection = collection_path(kind);
        let item = format!("{collection}/{{name}}");
        let mut want = vec![(collection.clone(), "get"), (item.clone(), "get")];
        if writable(kind) {
            want.push((item.clone(), "put"));
            want.push((item.clone(), "delete"));
        } else {
            // Served (with 405), but not offered.
            assert!(
                !has_op(&doc, &item, "put"),
                "{item}: read-only kind offers PUT"
            );
        }
        if kind.scope() == Scope::Mesh {
            want.push((format!("/{}", kind.plural()), "get"));
        }
        for (p, m) in want {
            if !has_op(&doc, &p, m) {
                missing.push(format!("{} {p}", m.to_uppercase()));
            }
        }
    }
    for (p, m) in [
        ("/", "get"),
        ("/_resources", "get"),
        ("/config", "get"),
        ("/mesh-insights", "get"),
        ("/mesh-insights/{name}", "get"),
        ("/meshes/{mesh}/service-insights", "get"),
        ("/meshes/{mesh}/service-insights/{name}", "get"),
        ("/meshes/{mesh}/dataplanes/_overview", "get"),
        ("/meshes/{mesh}/dataplanes/{name}/_overview", "get"),
        ("/zones/_overview", "get"),
        ("/global-insight", "get"),
        ("/tokens/dataplane", "post"),
        ("/tokens/zone", "post"),
        ("/tokens/user", "post"),
    ] {
        if !has_op(&doc, p, m) {
            missing.push(format!("{} {p}", m.to_uppercase()));
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from the OpenAPI document: {missing:#?}"
    );
}

/// ... and everything documented is served: no path or method in the
/// document meets the router's "no such endpoint" answers.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let s = crate::common::start().await;
    let doc = openapi::document();
    let mut unrouted = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let url = path.replace("{mesh}", "default").replace("{name}", "probe");
        for method in item.as_object().unwrap().keys() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = matches!(m, Method::PUT | Method::POST).then(|| b"{}".to_vec());
            let r = s
                .request(m, &url, &[("content-type", "application/json")], body)
                .await;
            let detail = r.json["detail"].as_str().unwrap_or_default();
            if detail == UNKNOWN_PATH || detail.ends_with(UNSERVED_METHOD) {
                unrouted.push(format!("{} {path}: {}", method.to_uppercase(), r.text));
            }
            assert!(r.status < 500, "{} {path}: {} {}", method, r.status, r.text);
        }
    }
    assert!(
        unrouted.is_empty(),
        "documented but not served: {unrouted:#?}"
    );
    // The probe itself can tell an unserved path apart.
    let r = s.get("/meshes/default/nonsense").await;
    assert_eq!(r.json["detail"], UNKNOWN_PATH);
    let r = s.request(Method::PATCH, "/meshes/default", &[], None).await;
    assert!(
        r.json["detail"]
            .as_str()
            .unwrap()
            .ends_with(UNSERVED_METHOD),
        "{}",
        r.text
    );
}

/// A schema is "bare" when it says nothing beyond `type: object`.
fn is_bare_object(schema: &Value) -> bool {
    let Some(m) = schema.as_object() else {
        return false;
    };
    let informative = ["properties", "oneOf", "anyOf", "allOf", "enum", "$ref"];
    !informative.iter().any(|k| m.contains_key(*k))
        && m.get("additionalProperties")
            .is_none_or(|ap| ap == &Value::Bool(true) || ap == &Value::Object(Default::default()))
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> (&'a Value, Option<String>) {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap().to_string();
            (&doc["components"]["schemas"][&name], Some(name))
        }
        None => (schema, None),
    }
}

/// Kinds with a typed spec have a real schema, not a bare `object`.
/// Kinds still mapped to the model's `Unchecked` placeholder are reported,
/// not failed, until the model types them.
#[test]
fn typed_specs_have_real_schemas() {
    let doc = openapi::document();
    let mut bare = Vec::new();
    let mut unchecked = Vec::new();
    for &kind in ResourceKind::ALL {
        if is_computed(kind) {
            continue;
        }
        let d = kind.descriptor();
        let item = &doc["components"]["schemas"][format!("{}Item", d.name)];
        assert!(item.is_object(), "{}Item missing", d.name);
        match d.layout {
            SpecLayout::Nested => {
                let (spec, name) = resolve(&doc, &item["properties"]["spec"]);
                if name.as_deref() == Some("Unchecked") {
                    unchecked.push(d.name);
                } else if is_bare_object(spec) {
                    bare.push(format!("{}: spec is {spec}", d.name));
                }
            }
            SpecLayout::Inline => {
                let mut g = schemars::generate::SchemaSettings::openapi3().into_generator();
                let r = kuma_model::specs::schema(kind, &mut g).to_value();
                if r["$ref"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("/Unchecked"))
                {
                    unchecked.push(d.name);
                    continue;
                }
                let envelope = [
                    "type",
                    "mesh",
                    "name",
                    "creationTime",
                    "modificationTime",
                    "labels",
                ];
                let content: Vec<_> = item["properties"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| !envelope.contains(&k.as_str()))
                    .collect();
                // Free-form fields (DataplaneInsight's `metadata`, a protobuf
                // Struct in Kuma) are fine; a content with no fields is not.
                if content.is_empty() {
                    bare.push(format!("{}: no content properties", d.name));
                }
            }
        }
    }
    if !unchecked.is_empty() {
        eprintln!("kinds still without a typed spec: {unchecked:?}");
    }
    assert!(bare.is_empty(), "schemas without properties: {bare:#?}");
}
