//! Read-only views computed from the store: mesh and service insights,
//! dataplane and zone overviews, the global insight.
//!
//! Kuma keeps these up to date with background resyncers; we compute them on
//! request from the (cached) store, so they are never stale.

use crate::SharedState;
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::query::ListParams;
use crate::resources::{list_all, require_mesh};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use axum::{Extension, Json, Router};
use kuma_model::resource::format_time;
use kuma_model::{MeshName, Resource, ResourceKey, ResourceKind, ResourceName};
use kuma_store::{ListFilter, ListPage};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/mesh-insights", get(list_mesh_insights))
        .route("/mesh-insights/{name}", get(get_mesh_insight))
        .route(
            "/meshes/{mesh}/service-insights",
            get(list_service_insights),
        )
        .route(
            "/meshes/{mesh}/service-insights/{name}",
            get(get_service_insight),
        )
        .route(
            "/meshes/{mesh}/dataplanes/_overview",
            get(list_dataplane_overviews),
        )
        .route(
            "/meshes/{mesh}/dataplanes+insights",
            get(list_dataplane_overviews),
        )
        .route(
            "/meshes/{mesh}/dataplanes/{name}/_overview",
            get(get_dataplane_overview),
        )
        .route(
            "/meshes/{mesh}/dataplanes+insights/{name}",
            get(get_dataplane_overview),
        )
        .route("/zones/_overview", get(list_zone_overviews))
        .route("/zones+insights", get(list_zone_overviews))
        .route("/zones/{name}/_overview", get(get_zone_overview))
        .route("/zones+insights/{name}", get(get_zone_overview))
        .route("/global-insight", get(global_insight))
}

/// Online / offline counters, Kuma's shape.
#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub total: u32,
    pub online: u32,
    pub offline: u32,
    pub partially_degraded: u32,
}

impl Counts {
    fn add(&mut self, online: bool) {
        self.total += 1;
        if online {
            self.online += 1;
        } else {
            self.offline += 1;
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct Total {
    pub total: u32,
}

#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataplanesByType {
    pub standard: Counts,
    pub gateway: Counts,
}

#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCounts {
    pub total: u32,
    pub internal: u32,
    pub external: u32,
}

#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionCounts {
    pub total: u32,
    pub online: u32,
}

#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DpVersions {
    pub kuma_dp: BTreeMap<String, VersionCounts>,
    pub envoy: BTreeMap<String, VersionCounts>,
}

/// Statistics of one mesh (`/mesh-insights/{name}`).
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshInsight {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub creation_time: String,
    pub modification_time: String,
    pub last_sync: String,
    pub dataplanes: Counts,
    pub dataplanes_by_type: DataplanesByType,
    /// Policies in the mesh by type.
    pub policies: BTreeMap<String, Total>,
    /// Every resource in the mesh by type.
    pub resources: BTreeMap<String, Total>,
    pub services: ServiceCounts,
    pub dp_versions: DpVersions,
}

/// One service of a mesh (`/meshes/{mesh}/service-insights/{name}`).
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInsight {
    #[serde(rename = "type")]
    pub kind: String,
    pub mesh: String,
    pub name: String,
    pub creation_time: String,
    pub modification_time: String,
    /// `internal`, `external` or `gateway_builtin`.
    pub service_type: String,
    /// `online`, `offline` or `partially_degraded`.
    pub status: String,
    pub dataplanes: Counts,
}

/// Whether a proxy is connected now: its newest subscription has no disconnect time.
pub fn is_online(insight: Option<&Resource>) -> bool {
    insight
        .and_then(|i| i.spec["subscriptions"].as_array())
        .and_then(|subs| subs.last())
        .is_some_and(|s| s["connectTime"].is_string() && s["disconnectTime"].is_null())
}

fn is_gateway(dp: &Resource) -> bool {
    !dp.spec["networking"]["gateway"].is_null()
}

fn services_of(dp: &Resource) -> Vec<String> {
    let mut out: Vec<String> = dp.spec["networking"]["inbound"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["tags"]["kuma.io/service"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if let Some(s) = dp.spec["networking"]["gateway"]["tags"]["kuma.io/service"].as_str() {
        out.push(s.to_string());
    }
    out.sort();
    out.dedup();
    out
}

/// Dataplanes of a mesh (or all meshes) with their insights.
async fn dataplanes_with_insights(
    state: &SharedState,
    mesh: Option<MeshName>,
) -> ApiResult<Vec<(Resource, Option<Resource>)>> {
    let dps = list_all(
        state,
        ListFilter {
            mesh: mesh.clone(),
            ..ListFilter::all(ResourceKind::Dataplane)
        },
    )
    .await?;
    let insights = list_all(
        state,
        ListFilter {
            mesh,
            ..ListFilter::all(ResourceKind::DataplaneInsight)
        },
    )
    .await?;
    let mut by_key: BTreeMap<(Option<MeshName>, ResourceName), Resource> = insights
        .into_iter()
        .map(|i| ((i.key.mesh().cloned(), i.key.name().clone()), i))
        .collect();
    Ok(dps
        .into_iter()
        .map(|dp| {
            let ins = by_key.remove(&(dp.key.mesh().cloned(), dp.key.name().clone()));
            (dp, ins)
        })
        .collect())
}

async fn compute_mesh_insight(state: &SharedState, mesh: &Resource) -> ApiResult<MeshInsight> {
    let mesh_name = MeshName::from(mesh.key.name().clone());
    let dps = dataplanes_with_insights(state, Some(mesh_name.clone())).await?;
    let mut insight = MeshInsight {
        kind: "MeshInsight".into(),
        name: mesh.key.name().to_string(),
        creation_time: format_time(&mesh.meta.creation_time),
        modification_time: format_time(&mesh.meta.modification_time),
        last_sync: format_time(&chrono::Utc::now()),
        dataplanes: Counts::default(),
        dataplanes_by_type: DataplanesByType::default(),
        policies: BTreeMap::new(),
        resources: BTreeMap::new(),
        services: ServiceCounts::default(),
        dp_versions: DpVersions::default(),
    };
    let mut services = std::collections::BTreeSet::new();
    for (dp, ins) in &dps {
        let online = is_online(ins.as_ref());
        insight.dataplanes.add(online);
        if is_gateway(dp) {
            insight.dataplanes_by_type.gateway.add(online);
        } else {
            insight.dataplanes_by_type.standard.add(online);
        }
        services.extend(services_of(dp));
        if let Some(sub) = ins
            .as_ref()
            .and_then(|i| i.spec["subscriptions"].as_array())
            .and_then(|s| s.last())
        {
            for (field, map) in [
                ("kumaDp", &mut insight.dp_versions.kuma_dp),
                ("envoy", &mut insight.dp_versions.envoy),
            ] {
                if let Some(v) = sub["version"][field]["version"].as_str() {
                    let c = map.entry(v.to_string()).or_default();
                    c.total += 1;
                    if online {
                        c.online += 1;
                    }
                }
            }
        }
    }
    insight.services.total = services.len() as u32;
    insight.services.internal = services.len() as u32;
    for &kind in ResourceKind::ALL {
        if kind.scope() != kuma_model::Scope::Mesh || crate::resources::is_computed(kind) {
            continue;
        }
        let mut f = ListFilter::in_mesh(kind, mesh_name.clone());
        f.limit = Some(0);
        let total = state
            .store
            .list(&f)
            .await
            .map_err(|e| ApiError::from_store("Could not compute mesh insight", e))?
            .total as u32;
        if total == 0 {
            continue;
        }
        insight
            .resources
            .insert(kind.name().to_string(), Total { total });
        if kind.is_policy() {
            insight
                .policies
                .insert(kind.name().to_string(), Total { total });
        }
        if kind == ResourceKind::MeshExternalService {
            insight.services.external = total;
            insight.services.total += total;
        }
    }
    Ok(insight)
}

async fn list_mesh_insights(
    State(state): State<SharedState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<Value>> {
    let params = ListParams::parse(&uri, false)?;
    let page = state
        .store
        .list(&params.filter(ResourceKind::Mesh, None))
        .await
        .map_err(|e| ApiError::from_store("Could not list mesh insights", e))?;
    let mut items = Vec::with_capacity(page.items.len());
    for m in &page.items {
        items.push(
            serde_json::to_value(compute_mesh_insight(&state, m).await?).unwrap_or(Value::Null),
        );
    }
    Ok(Json(
        json!({"total": page.total, "items": items, "next": params.next_url(&headers, &uri, page.total)}),
    ))
}

async fn get_mesh_insight(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> ApiResult<Json<MeshInsight>> {
    let m = require_mesh(&state, &name).await?;
    let key = ResourceKey::global(
        ResourceKind::Mesh,
        ResourceName::new(m.as_str()).map_err(|_| ApiError::not_found())?,
    )
    .map_err(|_| ApiError::not_found())?;
    let mesh = crate::resources::get_resource(&state, &key).await?;
    Ok(Json(compute_mesh_insight(&state, &mesh).await?))
}

async fn compute_service_insights(
    state: &SharedState,
    mesh: &MeshName,
) -> ApiResult<Vec<ServiceInsight>> {
    let dps = dataplanes_with_insights(state, Some(mesh.clone())).await?;
    let mut by_service: BTreeMap<
        String,
        (
            Counts,
            bool,
            chrono::DateTime<chrono::Utc>,
            chrono::DateTime<chrono::Utc>,
        ),
    > = BTreeMap::new();
    for (dp, ins) in &dps {
        let online = is_online(ins.as_ref());
        for svc in services_of(dp) {
            let e = by_service.entry(svc).or_insert_with(|| {
                (
                    Counts::default(),
                    is_gateway(dp),
                    dp.meta.creation_time,
                    dp.meta.modification_time,
                )
            });
            e.0.add(online);
            e.2 = e.2.min(dp.meta.creation_time);
            e.3 = e.3.max(dp.meta.modification_time);
        }
    }
    Ok(by_service
        .into_iter()
        .map(
            |(name, (counts, gateway, created, modified))| ServiceInsight {
                kind: "ServiceInsight".into(),
                mesh: mesh.to_string(),
                name,
                creation_time: format_time(&created),
                modification_time: format_time(&modified),
                service_type: if gateway {
                    "gateway_builtin"
                } else {
                    "internal"
                }
                .into(),
                status: if counts.online == counts.total {
                    "online"
                } else if counts.online == 0 {
                    "offline"
                } else {
                    "partially_degraded"
                }
                .into(),
                dataplanes: counts,
            },
        )
        .collect())
}

fn page_of<T: Serialize>(
    params: &ListParams,
    headers: &HeaderMap,
    uri: &Uri,
    items: Vec<T>,
) -> Value {
    let total = items.len();
    let items: Vec<Value> = items
        .into_iter()
        .skip(params.offset)
        .take(params.size)
        .filter_map(|i| serde_json::to_value(i).ok())
        .collect();
    json!({"total": total, "items": items, "next": params.next_url(headers, uri, total)})
}

async fn list_service_insights(
    State(state): State<SharedState>,
    Path(mesh): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<Value>> {
    let params = ListParams::parse(&uri, false)?;
    let mesh = require_mesh(&state, &mesh).await?;
    let mut items = compute_service_insights(&state, &mesh).await?;
    if let Some(n) = &params.name {
        items.retain(|i| i.name.contains(n.as_str()));
    }
    Ok(Json(page_of(&params, &headers, &uri, items)))
}

async fn get_service_insight(
    State(state): State<SharedState>,
    Path((mesh, name)): Path<(String, String)>,
) -> ApiResult<Json<ServiceInsight>> {
    let mesh = require_mesh(&state, &mesh).await?;
    compute_service_insights(&state, &mesh)
        .await?
        .into_iter()
        .find(|s| s.name == name)
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

fn dataplane_overview(dp: &Resource, insight: Option<&Resource>) -> Value {
    let mut v = dp.to_kuma_json();
    let obj = v.as_object_mut().expect("resources render as objects");
    let dataplane = json!({ "networking": obj.remove("networking").unwrap_or(Value::Null) });
    obj.insert("type".into(), Value::String("DataplaneOverview".into()));
    obj.insert("dataplane".into(), dataplane);
    obj.insert(
        "dataplaneInsight".into(),
        insight
            .map(|i| i.spec.clone())
            .unwrap_or_else(|| json!({ "subscriptions": [] })),
    );
    v
}

async fn list_dataplane_overviews(
    State(state): State<SharedState>,
    Path(mesh): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<Value>> {
    let params = ListParams::parse(&uri, true)?;
    let mesh = require_mesh(&state, &mesh).await?;
    let ListPage { items, total } = state
        .store
        .list(&params.filter(ResourceKind::Dataplane, Some(mesh.clone())))
        .await
        .map_err(|e| ApiError::from_store("Could not list dataplanes", e))?;
    let mut out = Vec::with_capacity(items.len());
    for dp in &items {
        let key = ResourceKey::in_mesh(
            ResourceKind::DataplaneInsight,
            mesh.clone(),
            dp.key.name().clone(),
        )
        .map_err(|_| ApiError::internal())?;
        let ins = state.store.get(&key).await.ok();
        out.push(dataplane_overview(dp, ins.as_ref()));
    }
    Ok(Json(
        json!({"total": total, "items": out, "next": params.next_url(&headers, &uri, total)}),
    ))
}

async fn get_dataplane_overview(
    State(state): State<SharedState>,
    Path((mesh, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let mesh = require_mesh(&state, &mesh).await?;
    let name = ResourceName::new(name).map_err(|_| ApiError::not_found())?;
    let key = ResourceKey::in_mesh(ResourceKind::Dataplane, mesh.clone(), name.clone())
        .map_err(|_| ApiError::not_found())?;
    let dp = crate::resources::get_resource(&state, &key).await?;
    let ikey = ResourceKey::in_mesh(ResourceKind::DataplaneInsight, mesh, name)
        .map_err(|_| ApiError::not_found())?;
    let ins = state.store.get(&ikey).await.ok();
    Ok(Json(dataplane_overview(&dp, ins.as_ref())))
}

fn zone_overview(zone: &Resource, insight: Option<&Resource>) -> Value {
    let mut v = zone.to_kuma_json();
    let obj = v.as_object_mut().expect("resources render as objects");
    let enabled = obj.remove("enabled").unwrap_or(Value::Bool(true));
    obj.insert("type".into(), Value::String("ZoneOverview".into()));
    obj.insert("zone".into(), json!({ "enabled": enabled }));
    obj.insert(
        "zoneInsight".into(),
        insight
            .map(|i| i.spec.clone())
            .unwrap_or_else(|| json!({ "subscriptions": [] })),
    );
    v
}

async fn list_zone_overviews(
    State(state): State<SharedState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<Value>> {
    let params = ListParams::parse(&uri, false)?;
    let ListPage { items, total } = state
        .store
        .list(&params.filter(ResourceKind::Zone, None))
        .await
        .map_err(|e| ApiError::from_store("Could not list zones", e))?;
    let mut out = Vec::with_capacity(items.len());
    for z in &items {
        let key = ResourceKey::global(ResourceKind::ZoneInsight, z.key.name().clone())
            .map_err(|_| ApiError::internal())?;
        let ins = state.store.get(&key).await.ok();
        out.push(zone_overview(z, ins.as_ref()));
    }
    Ok(Json(
        json!({"total": total, "items": out, "next": params.next_url(&headers, &uri, total)}),
    ))
}

async fn get_zone_overview(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let name = ResourceName::new(name).map_err(|_| ApiError::not_found())?;
    let key =
        ResourceKey::global(ResourceKind::Zone, name.clone()).map_err(|_| ApiError::not_found())?;
    let zone = crate::resources::get_resource(&state, &key).await?;
    let ikey =
        ResourceKey::global(ResourceKind::ZoneInsight, name).map_err(|_| ApiError::not_found())?;
    let ins = state.store.get(&ikey).await.ok();
    Ok(Json(zone_overview(&zone, ins.as_ref())))
}

#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnlineTotal {
    pub online: u32,
    pub total: u32,
}

#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZoneCounts {
    pub control_planes: OnlineTotal,
    pub zone_egresses: OnlineTotal,
    pub zone_ingresses: OnlineTotal,
}

#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlobalServices {
    pub total: u32,
    pub internal: Counts,
    pub external: Total,
    pub gateway_builtin: Counts,
}

#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlobalDataplanes {
    pub standard: Counts,
    pub gateway_builtin: Counts,
}

/// Totals across the whole control plane (`/global-insight`).
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlobalInsight {
    #[serde(rename = "type")]
    pub kind: String,
    pub created_at: String,
    pub services: GlobalServices,
    pub zones: ZoneCounts,
    pub dataplanes: GlobalDataplanes,
    pub policies: Total,
    pub meshes: Total,
    pub resources: BTreeMap<String, Total>,
}

async fn global_insight(
    State(state): State<SharedState>,
    Extension(_identity): Extension<Identity>,
) -> ApiResult<Json<GlobalInsight>> {
    let mut gi = GlobalInsight {
        kind: "GlobalInsight".into(),
        created_at: format_time(&chrono::Utc::now()),
        services: GlobalServices::default(),
        zones: ZoneCounts::default(),
        dataplanes: GlobalDataplanes::default(),
        policies: Total::default(),
        meshes: Total::default(),
        resources: BTreeMap::new(),
    };
    for &kind in ResourceKind::ALL {
        if crate::resources::is_computed(kind) {
            continue;
        }
        let mut f = ListFilter::all(kind);
        f.limit = Some(0);
        let total = state
            .store
            .list(&f)
            .await
            .map_err(|e| ApiError::from_store("Could not compute global insight", e))?
            .total as u32;
        if kind.is_policy() {
            gi.policies.total += total;
        }
        if kind == ResourceKind::Mesh {
            gi.meshes.total = total;
        }
        if kind == ResourceKind::MeshExternalService {
            gi.services.external.total = total;
        }
        if total > 0 {
            gi.resources
                .insert(kind.name().to_string(), Total { total });
        }
    }
    let meshes = list_all(&state, ListFilter::all(ResourceKind::Mesh)).await?;
    for m in &meshes {
        let mesh = MeshName::from(m.key.name().clone());
        for s in compute_service_insights(&state, &mesh).await? {
            let bucket = if s.service_type == "gateway_builtin" {
                &mut gi.services.gateway_builtin
            } else {
                &mut gi.services.internal
            };
            bucket.total += 1;
            match s.status.as_str() {
                "online" => bucket.online += 1,
                "offline" => bucket.offline += 1,
                _ => bucket.partially_degraded += 1,
            }
        }
    }
    gi.services.total =
        gi.services.internal.total + gi.services.external.total + gi.services.gateway_builtin.total;
    for (dp, ins) in dataplanes_with_insights(&state, None).await? {
        let online = is_online(ins.as_ref());
        if is_gateway(&dp) {
            gi.dataplanes.gateway_builtin.add(online);
        } else {
            gi.dataplanes.standard.add(online);
        }
    }
    let zones = list_all(&state, ListFilter::all(ResourceKind::Zone)).await?;
    for z in &zones {
        gi.zones.control_planes.total += 1;
        let key = ResourceKey::global(ResourceKind::ZoneInsight, z.key.name().clone())
            .map_err(|_| ApiError::internal())?;
        if is_online(state.store.get(&key).await.ok().as_ref()) {
            gi.zones.control_planes.online += 1;
        }
    }
    Ok(Json(gi))
}
