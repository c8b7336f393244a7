//! The OpenAPI 3.0 document, built from the same descriptors the router uses
//! and the model's schemas (schemars), so it cannot drift from the server.
//! `api/openapi.yaml` is this document; `tests/openapi.rs` fails when they differ
//! (`UPDATE_OPENAPI=1 cargo test -p kuma-api-server --test api openapi` rewrites it).

use crate::error::ErrorBody;
use crate::insights::{GlobalInsight, MeshInsight, ServiceInsight};
use crate::meta::{IndexResponse, ResourceTypeDescriptionList};
use crate::resources::{collection_path, is_computed};
use crate::tokens::{DataplaneTokenRequest, UserTokenRequest, ZoneTokenRequest};
use kuma_model::{ResourceKind, Scope, SpecLayout};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn error_responses(codes: &[u16]) -> Map<String, Value> {
    let mut m = Map::new();
    for c in codes {
        let desc = match c {
            400 => "Bad request: every invalid field is listed in invalid_parameters",
            401 => "Unauthenticated",
            403 => "Access denied",
            404 => "Not found",
            405 => "Method not allowed (read-only resource)",
            409 => "Conflict: the resource exists, or If-Match names a stale version",
            413 => "Request body too large",
            _ => "Error",
        };
        m.insert(
            c.to_string(),
            json!({ "description": desc, "content": { "application/json": { "schema": schema_ref("Error") } } }),
        );
    }
    m
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn responses(ok: Value, ok_code: &str, errors: &[u16]) -> Value {
    let mut m = error_responses(errors);
    m.insert(ok_code.to_string(), ok);
    Value::Object(m)
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn list_params(kind: Option<ResourceKind>) -> Vec<Value> {
    let mut p = vec![
        json!({ "name": "size", "in": "query", "description": "page size (1 to 1000, default 100)",
                "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }),
        json!({ "name": "offset", "in": "query", "description": "offset of the first item of the page",
                "schema": { "type": "integer", "minimum": 0 } }),
        json!({ "name": "name", "in": "query", "description": "keep items whose name contains this",
                "schema": { "type": "string" } }),
        json!({ "name": "filter", "in": "query", "style": "deepObject", "explode": true,
                "description": "filter[labels.KEY]=VALUE keeps items carrying that label",
                "schema": { "type": "object", "additionalProperties": { "type": "string" } } }),
    ];
    if kind == Some(ResourceKind::Dataplane) {
        p.push(json!({ "name": "tag", "in": "query", "description": "KEY:VALUE; keep dataplanes with an inbound carrying that tag (repeatable)",
                       "schema": { "type": "array", "items": { "type": "string", "pattern": "^[^:]*:" } }, "style": "form", "explode": true }));
    }
    p
}

fn mesh_param() -> Value {
    path_param("mesh", "name of the mesh")
}

/// Builds the item schema for a kind: Kuma's envelope plus its content.
fn item_schema(kind: ResourceKind, generator: &mut SchemaGenerator) -> Value {
    let d = kind.descriptor();
    let spec_ref = kuma_model::specs::schema(kind, generator).to_value();
    let mut props = Map::new();
    props.insert(
        "type".into(),
        json!({ "type": "string", "enum": [d.name], "description": "the resource type" }),
    );
    if d.scope == Scope::Mesh {
        props.insert(
            "mesh".into(),
            json!({ "type": "string", "description": "the mesh this resource belongs to" }),
        );
    }
    props.insert(
        "name".into(),
        json!({ "type": "string", "description": "the resource name" }),
    );
    props.insert(
        "creationTime".into(),
        json!({ "type": "string", "format": "date-time", "readOnly": true }),
    );
    props.insert(
        "modificationTime".into(),
        json!({ "type": "string", "format": "date-time", "readOnly": true }),
    );
    props.insert(
        "labels".into(),
        json!({ "type": "object", "additionalProperties": { "type": "string" }, "description": "labels; the control plane adds kuma.io/ ones" }),
    );
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    match d.layout {
        SpecLayout::Nested => {
            props.insert("spec".into(), spec_ref);
            if d.has_status {
                props.insert("status".into(), json!({ "type": "object", "additionalProperties": true, "readOnly": true,
                                                      "description": "computed by the control plane" }));
            }
        }
        SpecLayout::Inline => {
            // The content's fields sit beside the envelope: merge its properties in.
            let spec_name = spec_ref["$ref"]
                .as_str()
                .and_then(|r| r.rsplit('/').next())
                .map(str::to_string);
            let definition = spec_name.and_then(|n| generator.definitions().get(&n).cloned());
            if let Some(Value::Object(def)) = definition {
                if let Some(Value::Object(p)) = def.get("properties") {
                    for (k, v) in p {
                        props.insert(k.clone(), v.clone());
                    }
                }
                if let Some(ap) = def.get("additionalProperties") {
                    schema.insert("additionalProperties".into(), ap.clone());
                }
                if let Some(desc) = def.get("description") {
                    schema.insert("description".into(), desc.clone());
                }
            }
        }
    }
    schema.insert("required".into(), json!(["type", "name"]));
    schema.insert("properties".into(), Value::Object(props));
    Value::Object(schema)
}

fn list_schema(item: &str) -> Value {
    json!({
        "type": "object",
        "required": ["total", "items", "next"],
        "properties": {
            "total": { "type": "integer", "minimum": 0, "description": "how many items match, over all pages" },
            "items": { "type": "array", "items": schema_ref(item) },
            "next": { "type": "string", "nullable": true, "description": "URL of the next page, null on the last" }
        }
    })
}

fn sub<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

/// The whole document as JSON.
pub fn document() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut schemas = Map::new();
    let mut paths = Map::new();

    let put_ok = json!({ "type": "object", "properties": { "warnings": { "type": "array", "items": { "type": "string" } } } });
    schemas.insert("CreateOrUpdateSuccessResponse".into(), put_ok);
    schemas.insert("DeleteSuccessResponse".into(), json!({ "type": "object" }));

    for &kind in ResourceKind::ALL {
        if is_computed(kind) {
            continue;
        }
        let d = kind.descriptor();
        let item_name = format!("{}Item", d.name);
        let list_name = format!("{}List", d.name);
        schemas.insert(item_name.clone(), item_schema(kind, &mut generator));
        schemas.insert(list_name.clone(), list_schema(&item_name));
        let tag = d.name;
        let collection = collection_path(kind);
        let mut scope_params = Vec::new();
        if d.scope == Scope::Mesh {
            scope_params.push(mesh_param());
        }
        let mut list_parameters = scope_params.clone();
        list_parameters.extend(list_params(Some(kind)));
        let list_op = |summary: String, params: Vec<Value>, op_id: String| {
            json!({ "get": {
                "operationId": op_id, "summary": summary, "tags": [tag], "parameters": params,
                "responses": responses(ok_json("a page of items", schema_ref(&list_name)), "200", &[400, 401, 403, 404]),
            }})
        };
        paths.insert(
            collection.clone(),
            list_op(
                format!("List {}", d.plural_display),
                list_parameters,
                format!("get{}List", d.name),
            ),
        );
        if d.scope == Scope::Mesh {
            paths.insert(
                format!("/{}", d.plural),
                list_op(
                    format!("List {} of every mesh", d.plural_display),
                    list_params(Some(kind)),
                    format!("get{}ListAllMeshes", d.name),
                ),
            );
        }
        let mut item_params = scope_params;
        item_params.push(path_param(
            "name",
            &format!("name of the {}", d.singular_display),
        ));
        let if_match = json!({ "name": "If-Match", "in": "header", "required": false,
            "description": "the resource version (from ETag); the write fails with 409 if the stored version differs",
            "schema": { "type": "string", "pattern": "^((W/)?\"?[0-9]{1,19}\"?|\\*)$" } });
        let mut item = Map::new();
        item.insert(
            "get".into(),
            json!({
                "operationId": format!("get{}", d.name), "summary": format!("Get a {}", d.singular_display), "tags": [tag],
                "parameters": item_params,
                "responses": responses(json!({ "description": "the resource; ETag carries its version",
                    "headers": { "ETag": { "schema": { "type": "string" } } },
                    "content": { "application/json": { "schema": schema_ref(&item_name) } } }), "200", &[400, 401, 403, 404]),
            }),
        );
        // Read-only kinds answer writes with 405; the document lists only
        // what a client can do.
        if !crate::resources::writable(kind) {
            paths.insert(format!("{collection}/{{name}}"), Value::Object(item));
            continue;
        }
        let mut write_params = item_params.clone();
        write_params.push(if_match);
        let mut put_responses = error_responses(&[400, 401, 403, 404, 405, 409, 413]);
        put_responses.insert(
            "200".into(),
            ok_json("updated", schema_ref("CreateOrUpdateSuccessResponse")),
        );
        put_responses.insert(
            "201".into(),
            ok_json("created", schema_ref("CreateOrUpdateSuccessResponse")),
        );
        item.insert(
            "put".into(),
            json!({
                "operationId": format!("put{}", d.name), "summary": format!("Create or update a {}", d.singular_display), "tags": [tag],
                "parameters": write_params,
                "requestBody": { "required": true, "content": {
                    "application/json": { "schema": schema_ref(&item_name) },
                    "application/yaml": { "schema": schema_ref(&item_name) } } },
                "responses": Value::Object(put_responses),
            }),
        );
        item.insert(
            "delete".into(),
            json!({
                "operationId": format!("delete{}", d.name), "summary": format!("Delete a {}", d.singular_display), "tags": [tag],
                "parameters": write_params,
                "responses": responses(ok_json("deleted", schema_ref("DeleteSuccessResponse")), "200", &[400, 401, 403, 404, 405, 409]),
            }),
        );
        paths.insert(format!("{collection}/{{name}}"), Value::Object(item));
    }

    // Computed views.
    let mesh_insight = sub::<MeshInsight>(&mut generator);
    let service_insight = sub::<ServiceInsight>(&mut generator);
    schemas.insert("MeshInsightList".into(), list_schema("MeshInsight"));
    schemas.insert("ServiceInsightList".into(), list_schema("ServiceInsight"));
    let _ = (mesh_insight, service_insight);
    let get_op = |op: &str, summary: &str, tag: &str, params: Vec<Value>, schema: Value| {
        json!({ "get": { "operationId": op, "summary": summary, "tags": [tag], "parameters": params,
                         "responses": responses(ok_json("OK", schema), "200", &[400, 401, 403, 404]) } })
    };
    paths.insert(
        "/mesh-insights".into(),
        get_op(
            "getMeshInsightList",
            "List mesh insights",
            "Insights",
            list_params(None),
            schema_ref("MeshInsightList"),
        ),
    );
    paths.insert(
        "/mesh-insights/{name}".into(),
        get_op(
            "getMeshInsight",
            "Get a mesh insight",
            "Insights",
            vec![path_param("name", "mesh name")],
            schema_ref("MeshInsight"),
        ),
    );
    let mut svc_params = vec![mesh_param()];
    svc_params.extend(list_params(None));
    paths.insert(
        "/meshes/{mesh}/service-insights".into(),
        get_op(
            "getServiceInsightList",
            "List service insights of a mesh",
            "Insights",
            svc_params,
            schema_ref("ServiceInsightList"),
        ),
    );
    paths.insert(
        "/meshes/{mesh}/service-insights/{name}".into(),
        get_op(
            "getServiceInsight",
            "Get a service insight",
            "Insights",
            vec![mesh_param(), path_param("name", "service name")],
            schema_ref("ServiceInsight"),
        ),
    );
    let overview_item = json!({ "type": "object", "required": ["type", "name"], "properties": {
        "type": { "type": "string" }, "mesh": { "type": "string" }, "name": { "type": "string" },
        "creationTime": { "type": "string", "format": "date-time" }, "modificationTime": { "type": "string", "format": "date-time" },
        "labels": { "type": "object", "additionalProperties": { "type": "string" } },
        "dataplane": { "type": "object", "additionalProperties": true },
        "dataplaneInsight": { "type": "object", "additionalProperties": true } } });
    schemas.insert("DataplaneOverview".into(), overview_item);
    schemas.insert(
        "DataplaneOverviewList".into(),
        list_schema("DataplaneOverview"),
    );
    let mut dpo_params = vec![mesh_param()];
    dpo_params.extend(list_params(Some(ResourceKind::Dataplane)));
    for (p, op) in [
        (
            "/meshes/{mesh}/dataplanes/_overview",
            "getDataplaneOverviewList",
        ),
        (
            "/meshes/{mesh}/dataplanes+insights",
            "getDataplaneOverviewListLegacy",
        ),
    ] {
        paths.insert(
            p.into(),
            get_op(
                op,
                "List dataplanes with their insights",
                "Dataplane",
                dpo_params.clone(),
                schema_ref("DataplaneOverviewList"),
            ),
        );
    }
    for (p, op) in [
        (
            "/meshes/{mesh}/dataplanes/{name}/_overview",
            "getDataplaneOverview",
        ),
        (
            "/meshes/{mesh}/dataplanes+insights/{name}",
            "getDataplaneOverviewLegacy",
        ),
    ] {
        paths.insert(
            p.into(),
            get_op(
                op,
                "Get a dataplane with its insight",
                "Dataplane",
                vec![mesh_param(), path_param("name", "dataplane name")],
                schema_ref("DataplaneOverview"),
            ),
        );
    }
    let zone_overview = json!({ "type": "object", "required": ["type", "name"], "properties": {
        "type": { "type": "string" }, "name": { "type": "string" },
        "creationTime": { "type": "string", "format": "date-time" }, "modificationTime": { "type": "string", "format": "date-time" },
        "labels": { "type": "object", "additionalProperties": { "type": "string" } },
        "zone": { "type": "object", "properties": { "enabled": { "type": "boolean" } } },
        "zoneInsight": { "type": "object", "additionalProperties": true } } });
    schemas.insert("ZoneOverview".into(), zone_overview);
    schemas.insert("ZoneOverviewList".into(), list_schema("ZoneOverview"));
    for (p, op) in [
        ("/zones/_overview", "getZoneOverviewList"),
        ("/zones+insights", "getZoneOverviewListLegacy"),
    ] {
        paths.insert(
            p.into(),
            get_op(
                op,
                "List zones with their insights",
                "Zone",
                list_params(None),
                schema_ref("ZoneOverviewList"),
            ),
        );
    }
    for (p, op) in [
        ("/zones/{name}/_overview", "getZoneOverview"),
        ("/zones+insights/{name}", "getZoneOverviewLegacy"),
    ] {
        paths.insert(
            p.into(),
            get_op(
                op,
                "Get a zone with its insight",
                "Zone",
                vec![path_param("name", "zone name")],
                schema_ref("ZoneOverview"),
            ),
        );
    }
    for (suffix, op, summary) in [
        (
            "_config",
            "getDataplaneXdsConfig",
            "The xDS resources served to a dataplane, by type",
        ),
        (
            "_rules",
            "getDataplaneRules",
            "The merged policy rules that apply to a dataplane",
        ),
    ] {
        paths.insert(
            format!("/meshes/{{mesh}}/dataplanes/{{name}}/{suffix}"),
            get_op(
                op,
                summary,
                "Dataplane",
                vec![mesh_param(), path_param("name", "dataplane name")],
                json!({ "type": "object", "additionalProperties": true }),
            ),
        );
    }
    let gi = sub::<GlobalInsight>(&mut generator);
    paths.insert(
        "/global-insight".into(),
        get_op(
            "getGlobalInsight",
            "Totals across the control plane",
            "Insights",
            vec![],
            gi,
        ),
    );
    let idx = sub::<IndexResponse>(&mut generator);
    paths.insert(
        "/".into(),
        get_op(
            "getIndex",
            "What answers on this port",
            "System",
            vec![],
            idx,
        ),
    );
    let rt = sub::<ResourceTypeDescriptionList>(&mut generator);
    paths.insert(
        "/_resources".into(),
        get_op(
            "getResourceTypeDescription",
            "The resource types this API serves",
            "System",
            vec![],
            rt,
        ),
    );
    paths.insert(
        "/config".into(),
        get_op(
            "getConfig",
            "The effective control-plane configuration, secrets redacted",
            "System",
            vec![],
            json!({ "type": "object", "additionalProperties": true }),
        ),
    );

    // Tokens.
    let token_ok = json!({ "description": "the token", "content": { "text/plain": { "schema": { "type": "string" } } } });
    for (path, op, summary, body) in [
        (
            "/tokens/dataplane",
            "generateDataplaneToken",
            "Generate a dataplane token",
            sub::<DataplaneTokenRequest>(&mut generator),
        ),
        (
            "/tokens/zone",
            "generateZoneToken",
            "Generate a zone token",
            sub::<ZoneTokenRequest>(&mut generator),
        ),
        (
            "/tokens/user",
            "generateUserToken",
            "Generate a user token",
            sub::<UserTokenRequest>(&mut generator),
        ),
    ] {
        paths.insert(
            path.into(),
            json!({ "post": { "operationId": op, "summary": summary, "tags": ["Tokens"],
                "requestBody": { "required": true, "content": { "application/json": { "schema": body } } },
                "responses": responses(token_ok.clone(), "200", &[400, 401, 403, 413]) } }),
        );
    }

    let error = sub::<ErrorBody>(&mut generator);
    let _ = error;
    for (name, schema) in generator.take_definitions(true) {
        schemas.insert(name, schema);
    }
    // The item schemas merge raw definitions in: bring everything to
    // OpenAPI 3.0 (`nullable` instead of type arrays, no `const`, ...).
    let mut transforms = SchemaSettings::openapi3().transforms;
    for schema in schemas.values_mut() {
        if let Ok(mut s) = Schema::try_from(schema.clone()) {
            for t in transforms.iter_mut() {
                t.transform(&mut s);
            }
            *schema = s.to_value();
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Kuma API",
            "description": "Kuma-compatible control plane REST API. Generated from the server code; do not edit.",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "paths": Value::Object(paths),
        "components": { "schemas": Value::Object(schemas) },
    })
}

/// The document as YAML, exactly as committed in `api/openapi.yaml`.
pub fn document_yaml() -> String {
    serde_yaml::to_string(&document()).unwrap_or_default()
}
