//! Every kind has a structured schema the OpenAPI document can be built from.

use kuma_model::ResourceKind;
use kuma_model::specs;
use schemars::generate::SchemaSettings;
use serde_json::Value;

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_kind_has_an_object_schema_and_refs_resolve() {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut roots = Vec::new();
    for kind in ResourceKind::ALL {
        roots.push((*kind, specs::schema(*kind, &mut generator).to_value()));
    }
    let defs = generator.take_definitions(true);
    let prefix = "#/components/schemas/";
    for (kind, root) in &roots {
        let r = root
            .get("$ref")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{kind}: schema is not a $ref: {root}"));
        let name = r
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{kind}: unexpected ref {r}"));
        let def = defs
            .get(name)
            .unwrap_or_else(|| panic!("{kind}: missing definition {name}"));
        assert_eq!(
            def.get("type").and_then(Value::as_str),
            Some("object"),
            "{kind}: {def}"
        );
        if *kind != ResourceKind::Workload {
            let props = def.get("properties").and_then(Value::as_object);
            assert!(
                props.is_some_and(|p| !p.is_empty()),
                "{kind}: no properties in {def}"
            );
        }
    }
    let mut refs = Vec::new();
    for def in defs.values() {
        collect_refs(def, &mut refs);
    }
    for r in refs {
        let name = r
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("unexpected ref {r}"));
        assert!(defs.contains_key(name), "dangling ref {r}");
    }
}

#[test]
fn policy_schemas_describe_target_ref_kinds() {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let _ = specs::schema(ResourceKind::MeshTimeout, &mut generator);
    let defs = generator.take_definitions(true);
    let kind = &defs["TargetRefKind"];
    let text = kind.to_string();
    for k in [
        "Mesh",
        "Dataplane",
        "MeshService",
        "MeshExternalService",
        "MeshMultiZoneService",
        "MeshHTTPRoute",
    ] {
        assert!(
            text.contains(&format!("\"{k}\"")),
            "{k} missing from {text}"
        );
    }
    assert_eq!(defs["Duration"]["type"], "string");
}
