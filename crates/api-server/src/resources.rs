//! CRUD for every kind, at Kuma's paths, generated from the kind descriptors.

use crate::SharedState;
use crate::auth::Identity;
use crate::body::{parse_document, read_limited};
use crate::error::{ApiError, ApiResult};
use crate::query::ListParams;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json};
use kuma_model::labels;
use kuma_model::resource::{ResourceInput, validate_labels};
use kuma_model::specs::{self, Context};
use kuma_model::{MeshName, ResourceKey, ResourceKind, ResourceName, Scope, Violations};
use kuma_store::{ListFilter, StoreError, Write};
use serde_json::json;

/// Kinds whose REST view is computed (see `insights`), not stored.
pub fn is_computed(kind: ResourceKind) -> bool {
    matches!(
        kind,
        ResourceKind::MeshInsight | ResourceKind::ServiceInsight
    )
}

/// Path of the collection a kind lives in, with `{mesh}` for mesh-scoped kinds.
pub fn collection_path(kind: ResourceKind) -> String {
    match kind.scope() {
        Scope::Global => format!("/{}", kind.plural()),
        Scope::Mesh => format!("/meshes/{{mesh}}/{}", kind.plural()),
    }
}

pub fn routes() -> Router<SharedState> {
    let mut r = Router::new();
    for &kind in ResourceKind::ALL {
        if is_computed(kind) {
            continue;
        }
        let collection = collection_path(kind);
        let item = format!("{collection}/{{name}}");
        match kind.scope() {
            Scope::Global => {
                r = r
                    .route(
                        &collection,
                        get(move |s, h, u, i| list(s, kind, None, h, u, i)),
                    )
                    .route(
                        &item,
                        get(move |s, Path(name): Path<String>, i| find(s, kind, None, name, i))
                            .put(move |s, Path(name): Path<String>, h, i, b| {
                                put(s, kind, None, name, h, i, b)
                            })
                            .delete(move |s, Path(name): Path<String>, h, i| {
                                delete(s, kind, None, name, h, i)
                            }),
                    );
            }
            Scope::Mesh => {
                r = r
                    .route(
                        &collection,
                        get(move |s, Path(mesh): Path<String>, h, u, i| {
                            list(s, kind, Some(mesh), h, u, i)
                        }),
                    )
                    .route(
                        &format!("/{}", kind.plural()),
                        get(move |s, h, u, i| list(s, kind, None, h, u, i)),
                    )
                    .route(
                        &item,
                        get(move |s, Path((mesh, name)): Path<(String, String)>, i| {
                            find(s, kind, Some(mesh), name, i)
                        })
                        .put(
                            move |s, Path((mesh, name)): Path<(String, String)>, h, i, b| {
                                put(s, kind, Some(mesh), name, h, i, b)
                            },
                        )
                        .delete(
                            move |s, Path((mesh, name)): Path<(String, String)>, h, i| {
                                delete(s, kind, Some(mesh), name, h, i)
                            },
                        ),
                    );
            }
        }
    }
    r
}

fn require_access(kind: ResourceKind, identity: &Identity) -> ApiResult<()> {
    if kind.descriptor().admin_only && !identity.is_admin() {
        if !identity.is_authenticated() {
            return Err(ApiError::unauthenticated(format!(
                "{} are only readable by admins: present an admin user token",
                kind.descriptor().plural_display
            )));
        }
        return Err(ApiError::access_denied(format!(
            "user {:?} cannot access {}: only admins can",
            identity.name,
            kind.descriptor().plural_display
        )));
    }
    Ok(())
}

/// Resolves a key from URL parts; anything invalid in a URL is simply not there.
fn key_from_url(kind: ResourceKind, mesh: Option<&str>, name: &str) -> ApiResult<ResourceKey> {
    let name = ResourceName::new(name).map_err(|_| ApiError::not_found())?;
    let mesh = mesh
        .map(MeshName::new)
        .transpose()
        .map_err(|_| ApiError::not_found())?;
    ResourceKey::new(kind, mesh, name).map_err(|_| ApiError::not_found())
}

/// 404 unless the mesh exists.
pub async fn require_mesh(state: &SharedState, mesh: &str) -> ApiResult<MeshName> {
    let m = MeshName::new(mesh).map_err(|_| mesh_not_found())?;
    let key = ResourceKey::global(
        ResourceKind::Mesh,
        ResourceName::new(mesh).map_err(|_| mesh_not_found())?,
    )
    .map_err(|_| mesh_not_found())?;
    match state.store.get(&key).await {
        Ok(_) => Ok(m),
        Err(StoreError::NotFound(_)) => Err(mesh_not_found()),
        Err(e) => Err(ApiError::from_store("Could not retrieve a mesh", e)),
    }
}

fn mesh_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "Could not retrieve a mesh",
        "Mesh is not found",
    )
}

async fn list(
    State(state): State<SharedState>,
    kind: ResourceKind,
    mesh: Option<String>,
    headers: HeaderMap,
    uri: Uri,
    Extension(identity): Extension<Identity>,
) -> ApiResult<Json<serde_json::Value>> {
    require_access(kind, &identity)?;
    let params = ListParams::parse(&uri, kind == ResourceKind::Dataplane)?;
    let mesh = match mesh {
        Some(m) => Some(require_mesh(&state, &m).await?),
        None => None,
    };
    let page = state
        .store
        .list_shared(&params.filter(kind, mesh))
        .await
        .map_err(|e| ApiError::from_store("Could not list resources", e))?;
    Ok(Json(
        params.list_body(&headers, &uri, page, |r| r.to_kuma_json()),
    ))
}

async fn find(
    State(state): State<SharedState>,
    kind: ResourceKind,
    mesh: Option<String>,
    name: String,
    Extension(identity): Extension<Identity>,
) -> ApiResult<Response> {
    require_access(kind, &identity)?;
    if let Some(m) = &mesh {
        require_mesh(&state, m).await?;
    }
    let key = key_from_url(kind, mesh.as_deref(), &name)?;
    let r = state
        .store
        .get_shared(&key)
        .await
        .map_err(|e| ApiError::from_store("Could not retrieve a resource", e))?;
    let mut resp = Json(r.to_kuma_json()).into_response();
    resp.headers_mut()
        .insert(header::ETAG, etag(r.meta.version));
    Ok(resp)
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header value")
}

/// `If-Match: "7"` (or `7`) means: only write if the stored version is 7.
fn expected_version(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    let s = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
    if s == "*" {
        return Ok(None);
    }
    s.parse::<u64>().map(Some).map_err(|_| {
        ApiError::invalid_field(
            "Invalid If-Match",
            "If-Match",
            "must be a resource version as returned in ETag",
        )
    })
}

/// 405 for a write to a computed kind, with the `Allow` header RFC 9110 asks for.
fn read_only(kind: ResourceKind) -> Response {
    let mut resp = ApiError::method_not_allowed(format!(
        "{} are computed by the control plane and cannot be modified",
        kind.descriptor().plural_display
    ))
    .into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    resp
}

async fn put(
    State(state): State<SharedState>,
    kind: ResourceKind,
    mesh: Option<String>,
    name: String,
    headers: HeaderMap,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> ApiResult<Response> {
    let d = kind.descriptor();
    if d.read_only {
        return Ok(read_only(kind));
    }
    if let Some(reason) = crate::federation::read_only_reason(&state, kind) {
        return Err(ApiError::method_not_allowed(reason));
    }
    require_access(kind, &identity)?;
    let expected = expected_version(&headers)?;
    let bytes = read_limited(body, state.config.max_body_bytes).await?;
    let doc = parse_document(&headers, &bytes)?;
    let input = ResourceInput::from_kuma_json(doc, Some(kind))
        .map_err(|v| ApiError::invalid("Could not process a resource", v))?;

    let mut errs = Violations::new();
    if input.name.as_deref() != Some(name.as_str()) {
        errs.add("name", "name from the URL has to be the same as in body");
    }
    if let Some(m) = &mesh
        && input.mesh.as_deref() != Some(m.as_str())
    {
        errs.add("mesh", "mesh from the URL has to be the same as in body");
    }
    let rname = ResourceName::new(name.as_str())
        .map_err(|e| errs.add("name", e.to_string()))
        .ok();
    let mname = mesh
        .as_deref()
        .map(MeshName::new)
        .transpose()
        .map_err(|e| errs.add("mesh", e.to_string()))
        .ok()
        .flatten();
    errs.extend(validate_labels(&input.labels));
    let ctx = Context {
        kind,
        mesh: mesh.as_deref(),
        name: &name,
        labels: &input.labels,
    };
    let spec = specs::validate(&ctx, &input.spec)
        .map_err(|v| errs.extend(v))
        .ok();
    errs.into_result()
        .map_err(|v| ApiError::invalid("Could not process a resource", v))?;
    let (Some(rname), Some(spec)) = (rname, spec) else {
        return Err(ApiError::bad_request("resource is not valid"));
    };
    let key =
        ResourceKey::new(kind, mname, rname).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let write = Write {
        labels: labels::compute(
            kind,
            mesh.as_deref(),
            &name,
            &input.labels,
            state.config.mode,
            &state.config.zone_name,
        ),
        spec,
        status: input.status,
    };

    let title = "Could not create or update a resource";
    let existing = match state.store.get(&key).await {
        Ok(r) => Some(r),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(ApiError::from_store(title, e)),
    };
    crate::federation::check_origin(&state, kind, existing.as_ref(), Some(&input.labels))?;
    let updated = match existing.ok_or_else(|| StoreError::NotFound(key.clone())) {
        Ok(current) => {
            let write = Write {
                status: write.status.or(current.status),
                ..write
            };
            state.store.update(&key, write, expected).await
        }
        Err(StoreError::NotFound(_)) if expected.is_some() => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "{key} does not exist, but the request expected version {}",
                    expected.unwrap_or_default()
                ),
            ));
        }
        Err(StoreError::NotFound(_)) => match state.store.create(&key, write.clone()).await {
            Ok(r) => {
                let mut resp =
                    (StatusCode::CREATED, Json(json!({ "warnings": [] }))).into_response();
                resp.headers_mut()
                    .insert(header::ETAG, etag(r.meta.version));
                return Ok(resp);
            }
            // Someone created it in between: this PUT becomes an update.
            Err(StoreError::AlreadyExists(_)) => state.store.update(&key, write, None).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
    .map_err(|e| ApiError::from_store(title, e))?;
    let mut resp = (StatusCode::OK, Json(json!({ "warnings": [] }))).into_response();
    resp.headers_mut()
        .insert(header::ETAG, etag(updated.meta.version));
    Ok(resp)
}

async fn delete(
    State(state): State<SharedState>,
    kind: ResourceKind,
    mesh: Option<String>,
    name: String,
    headers: HeaderMap,
    Extension(identity): Extension<Identity>,
) -> ApiResult<Response> {
    if kind.descriptor().read_only {
        return Ok(read_only(kind));
    }
    if let Some(reason) = crate::federation::read_only_reason(&state, kind) {
        return Err(ApiError::method_not_allowed(reason));
    }
    require_access(kind, &identity)?;
    let expected = expected_version(&headers)?;
    if let Some(m) = &mesh {
        require_mesh(&state, m).await?;
    }
    let key = key_from_url(kind, mesh.as_deref(), &name)?;
    let existing = get_resource(&state, &key).await?;
    crate::federation::check_origin(&state, kind, Some(&existing), None)?;
    if kind == ResourceKind::Mesh {
        let mut f =
            ListFilter::in_mesh(ResourceKind::Dataplane, MeshName::from(key.name().clone()));
        f.limit = Some(1);
        let dps = state
            .store
            .list(&f)
            .await
            .map_err(|e| ApiError::from_store("Could not delete a resource", e))?;
        if dps.total > 0 {
            return Err(ApiError::invalid_field(
                "Could not delete a resource",
                "mesh",
                "unable to delete mesh, there are still some dataplanes attached",
            ));
        }
    }
    state
        .store
        .delete(&key, expected)
        .await
        .map_err(|e| ApiError::from_store("Could not delete a resource", e))?;
    Ok(Json(json!({})).into_response())
}

/// Looks a resource up, mapping absence to 404.
pub async fn get_resource(
    state: &SharedState,
    key: &ResourceKey,
) -> ApiResult<kuma_model::Resource> {
    state
        .store
        .get(key)
        .await
        .map_err(|e| ApiError::from_store("Could not retrieve a resource", e))
}

/// Every resource of a kind matching `filter` (no paging).
pub async fn list_all(
    state: &SharedState,
    filter: ListFilter,
) -> ApiResult<Vec<kuma_model::Resource>> {
    Ok(state
        .store
        .list(&filter)
        .await
        .map_err(|e| ApiError::from_store("Could not list resources", e))?
        .items)
}

/// The descriptor-level check the OpenAPI generator shares.
pub fn writable(kind: ResourceKind) -> bool {
    !kind.descriptor().read_only
}
