//! Universal dataplane lifecycle and insights.
//!
//! A proxy's first ADS request carries its Dataplane (node metadata
//! `dataplane.resource`, put there by `/bootstrap`); the control plane creates
//! or updates it, records a DataplaneInsight subscription, and after the
//! stream ends (and a deregistration delay without reconnect) deletes what it
//! created. Sent/ACK/NACK counts are kept in memory and written in batches.

use crate::bootstrap::{META_DATAPLANE_RESOURCE, META_DNS_PORT, META_VERSION, parse_node_id};
use crate::sync::{Signal, SyncHandle};
use crate::views;
use chrono::{DateTime, Utc};
use envoy_types::pb::envoy::config::core::v3::{Node, node};
use envoy_types::pb::google::protobuf::value::Kind;
use kuma_model::resource::ResourceInput;
use kuma_model::resource::format_time;
use kuma_model::specs::{self, Context};
use kuma_model::{MeshName, ResourceKey, ResourceKind, ResourceName};
use kuma_store::{BatchOp, Expect, ResourceStore, StoreError, Write};
use kuma_xds::ResourceType;
use kuma_xds::input::DataplaneView;
use kuma_xds::server::{StreamCounters, StreamEvents, TypeCounts};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Status;
use tracing::{info, warn};

/// Parses and validates a Dataplane sent by a proxy (JSON or YAML text).
pub fn parse_dataplane_resource(
    text: &str,
    mesh: &str,
    name: &str,
) -> Result<(BTreeMap<String, String>, Value), String> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_yaml::from_str(text)
            .map_err(|e| format!("dataplane resource is neither JSON nor YAML: {e}"))?,
    };
    let input = ResourceInput::from_kuma_json(value, Some(ResourceKind::Dataplane))
        .map_err(|v| format!("invalid dataplane resource: {v}"))?;
    if input.mesh.as_deref().is_some_and(|m| m != mesh) {
        return Err(format!(
            "dataplane resource is for mesh {:?}, the proxy is in {mesh:?}",
            input.mesh.unwrap_or_default()
        ));
    }
    if input.name.as_deref().is_some_and(|n| n != name) {
        return Err(format!(
            "dataplane resource is named {:?}, the proxy is {name:?}",
            input.name.unwrap_or_default()
        ));
    }
    let ctx = Context {
        kind: ResourceKind::Dataplane,
        mesh: Some(mesh),
        name,
        labels: &input.labels,
    };
    let spec = specs::validate(&ctx, &input.spec)
        .map_err(|v| format!("invalid dataplane resource: {v}"))?;
    Ok((input.labels, spec))
}

fn metadata_string(node: &Node, key: &str) -> Option<String> {
    match node.metadata.as_ref()?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn metadata_json(node: &Node, key: &str) -> Value {
    fn conv(v: &envoy_types::pb::google::protobuf::Value) -> Value {
        match v.kind.as_ref() {
            Some(Kind::StringValue(s)) => Value::String(s.clone()),
            Some(Kind::NumberValue(n)) => json!(n),
            Some(Kind::BoolValue(b)) => Value::Bool(*b),
            Some(Kind::StructValue(s)) => {
                Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), conv(v))).collect())
            }
            Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(conv).collect()),
            Some(Kind::NullValue(_)) | None => Value::Null,
        }
    }
    node.metadata
        .as_ref()
        .and_then(|m| m.fields.get(key))
        .map(conv)
        .unwrap_or(Value::Null)
}

/// The Dataplane a proxy sent in its node metadata, if any.
pub fn dataplane_from_node(node: &Node) -> Option<Result<DataplaneView, String>> {
    let text = metadata_string(node, META_DATAPLANE_RESOURCE)?;
    let Some((mesh, name)) = parse_node_id(&node.id) else {
        return Some(Err("node id must be <mesh>.<name>".into()));
    };
    Some(
        parse_dataplane_resource(&text, mesh, name).and_then(|(labels, spec)| {
            Ok(DataplaneView {
                name: name.to_string(),
                labels,
                spec: serde_json::from_value(spec).map_err(|e| e.to_string())?,
            })
        }),
    )
}

pub async fn stored_dataplane(
    store: &dyn ResourceStore,
    mesh: &str,
    name: &str,
) -> Option<DataplaneView> {
    let key = dataplane_key(mesh, name).ok()?;
    let r = store.get(&key).await.ok()?;
    views::dataplane_view(&r).ok()
}

fn dataplane_key(mesh: &str, name: &str) -> Result<ResourceKey, String> {
    let m = MeshName::new(mesh).map_err(|e| format!("mesh: {e}"))?;
    let n = ResourceName::new(name).map_err(|e| format!("name: {e}"))?;
    ResourceKey::in_mesh(ResourceKind::Dataplane, m, n).map_err(|e| e.to_string())
}

#[derive(Clone, Debug)]
struct Subscription {
    stream_id: u64,
    mesh: String,
    name: String,
    id: String,
    connect_time: DateTime<Utc>,
    disconnect_time: Option<DateTime<Utc>>,
    version: Value,
    /// Kept by the stream; read when the insight is written.
    counters: Arc<StreamCounters>,
    /// `counters.events()` when the insight was last written.
    written: u64,
}

impl Subscription {
    /// The subscription as Kuma writes it in a DataplaneInsight. Built as
    /// maps directly: `json!` would re-serialize the version object, and
    /// after a mesh-wide change this runs for every proxy.
    fn to_json(&self, instance: &str) -> Value {
        let counts = |c: TypeCounts| {
            let mut m = Map::with_capacity(3);
            m.insert("responsesSent".into(), Value::String(c.sent.to_string()));
            m.insert(
                "responsesAcknowledged".into(),
                Value::String(c.acked.to_string()),
            );
            m.insert(
                "responsesRejected".into(),
                Value::String(c.rejected.to_string()),
            );
            Value::Object(m)
        };
        let by_type = [
            (ResourceType::Cluster, "cds"),
            (ResourceType::Endpoints, "eds"),
            (ResourceType::Listener, "lds"),
            (ResourceType::Route, "rds"),
        ]
        .map(|(t, key)| (key, self.counters.get(t)));
        let total = by_type
            .iter()
            .fold(TypeCounts::default(), |a, (_, c)| TypeCounts {
                sent: a.sent + c.sent,
                acked: a.acked + c.acked,
                rejected: a.rejected + c.rejected,
            });
        let mut status = Map::with_capacity(8);
        status.insert("total".into(), counts(total));
        for (key, c) in by_type {
            status.insert(key.into(), counts(c));
        }
        if let Some(t) = self.counters.last_sent() {
            status.insert(
                "lastUpdateTime".into(),
                Value::String(format_time(&DateTime::<Utc>::from(t))),
            );
        }
        if let Some(e) = self.counters.last_rejection() {
            status.insert("lastRejection".into(), Value::String(e));
        }
        let mut sub = Map::with_capacity(6);
        sub.insert("id".into(), Value::String(self.id.clone()));
        sub.insert(
            "controlPlaneInstanceId".into(),
            Value::String(instance.to_string()),
        );
        sub.insert(
            "connectTime".into(),
            Value::String(format_time(&self.connect_time)),
        );
        if let Some(t) = &self.disconnect_time {
            sub.insert("disconnectTime".into(), Value::String(format_time(t)));
        }
        sub.insert("status".into(), Value::Object(status));
        sub.insert("version".into(), self.version.clone());
        Value::Object(sub)
    }
}

/// Keeps Dataplanes and DataplaneInsights in step with ADS streams.
pub struct Lifecycle {
    store: Arc<dyn ResourceStore>,
    sync: SyncHandle,
    instance_id: String,
    deregistration_delay: Duration,
    state: Arc<Mutex<LifecycleState>>,
}

#[derive(Default)]
struct LifecycleState {
    /// Current stream per proxy (mesh, name).
    active: HashMap<(String, String), u64>,
    /// By stream id; touched on every response and ACK, so a fast hasher.
    subscriptions: foldhash::HashMap<u64, Subscription>,
    /// Proxies whose Dataplane this control plane created from node metadata.
    registered: HashSet<(String, String)>,
}

/// How many past subscriptions an insight keeps.
const KEEP_SUBSCRIPTIONS: usize = 5;

impl Lifecycle {
    pub fn new(
        store: Arc<dyn ResourceStore>,
        sync: SyncHandle,
        instance_id: String,
        deregistration_delay: Duration,
        flush_interval: Duration,
    ) -> Arc<Self> {
        let me = Arc::new(Lifecycle {
            store,
            sync,
            instance_id,
            deregistration_delay,
            state: Arc::default(),
        });
        // Counts are written in batches, not per response.
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            // KUMA_XDS_SERVER_DATAPLANE_STATUS_FLUSH_INTERVAL, 10 s by default.
            let mut tick = tokio::time::interval(flush_interval.max(Duration::from_millis(10)));
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                me.flush().await;
            }
        });
        me
    }

    /// Writes the insights of streams with unwritten counts.
    pub async fn flush(&self) {
        let dirty: Vec<Subscription> = {
            let mut st = self.state.lock().expect("lifecycle lock");
            st.subscriptions
                .values_mut()
                .filter_map(|sub| {
                    let events = sub.counters.events();
                    (events != sub.written).then(|| {
                        sub.written = events;
                        sub.clone()
                    })
                })
                .collect()
        };
        // One store batch per chunk (one transaction each) instead of a
        // write per proxy: after a mesh-wide change every stream is dirty.
        for chunk in dirty.chunks(FLUSH_BATCH) {
            let mut ops = Vec::with_capacity(chunk.len());
            let mut pending = Vec::with_capacity(chunk.len());
            for sub in chunk {
                let Some(key) = insight_key(sub) else {
                    continue;
                };
                let (expect, existing) = match self.store.get_shared(&key).await {
                    Ok(r) => (Expect::Version(r.meta.version), Some(r)),
                    Err(StoreError::NotFound(_)) => (Expect::Absent, None),
                    Err(error) => {
                        warn!(%error, "reading insight failed");
                        continue;
                    }
                };
                let mine = sub.to_json(&self.instance_id);
                ops.push(BatchOp::Put {
                    key,
                    write: insight_write(existing.as_ref().map(|r| &r.spec), mine),
                    expect,
                });
                pending.push(sub);
            }
            let results = match self.store.apply_batch(ops).await {
                Ok(r) => r,
                Err(error) => {
                    warn!(%error, "writing insights failed");
                    continue;
                }
            };
            for (sub, result) in pending.into_iter().zip(results) {
                match result {
                    Ok(_) => {}
                    // Someone else (another instance, a deregistration, the
                    // stream's own final write) wrote in between: redo this
                    // one with a fresh read, unless the stream has ended
                    // since (its final write, with the disconnect time, is
                    // the one to keep).
                    Err(StoreError::Conflict { .. }) | Err(StoreError::AlreadyExists(_)) => {
                        let connected = self
                            .state
                            .lock()
                            .expect("lifecycle lock")
                            .subscriptions
                            .contains_key(&sub.stream_id);
                        if connected {
                            self.write_insight(sub).await
                        }
                    }
                    Err(error) => warn!(%error, "writing insight failed"),
                }
            }
        }
    }

    async fn write_insight(&self, sub: &Subscription) {
        let Some(key) = insight_key(sub) else {
            return;
        };
        let mine = sub.to_json(&self.instance_id);
        for _ in 0..3 {
            let existing = self.store.get_shared(&key).await;
            let (spec, version) = match &existing {
                Ok(r) => (Some(&r.spec), Some(r.meta.version)),
                Err(StoreError::NotFound(_)) => (None, None),
                Err(error) => {
                    warn!(%error, "reading insight failed");
                    return;
                }
            };
            let write = insight_write(spec, mine.clone());
            let result = match version {
                Some(v) => self.store.update(&key, write, Some(v)).await.map(|_| ()),
                None => self.store.create(&key, write).await.map(|_| ()),
            };
            match result {
                Ok(()) => return,
                Err(StoreError::Conflict { .. }) | Err(StoreError::AlreadyExists(_)) => continue,
                Err(error) => {
                    warn!(%error, "writing insight failed");
                    return;
                }
            }
        }
    }

    async fn register(
        &self,
        mesh: &str,
        name: &str,
        labels: BTreeMap<String, String>,
        spec: Value,
    ) -> Result<(), Status> {
        let key = dataplane_key(mesh, name).map_err(Status::invalid_argument)?;
        let write = Write {
            labels,
            spec,
            status: None,
        };
        match self.store.get(&key).await {
            Ok(existing) => {
                if existing.spec != write.spec || existing.meta.labels != write.labels {
                    self.store
                        .update(&key, write, Some(existing.meta.version))
                        .await
                        .map_err(store_status)?;
                }
            }
            Err(StoreError::NotFound(_)) => {
                self.store.create(&key, write).await.map_err(store_status)?;
            }
            Err(e) => return Err(store_status(e)),
        }
        Ok(())
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::MeshNotFound(m) => {
            Status::failed_precondition(format!("mesh {m} does not exist"))
        }
        StoreError::Backend(_) => Status::unavailable("storage unavailable"),
        other => Status::aborted(other.to_string()),
    }
}

fn envoy_version(node: &Node) -> Value {
    match &node.user_agent_version_type {
        Some(node::UserAgentVersionType::UserAgentBuildVersion(b)) => {
            let v = b
                .version
                .as_ref()
                .map(|v| format!("{}.{}.{}", v.major_number, v.minor_number, v.patch))
                .unwrap_or_default();
            json!({ "version": v, "build": node.user_agent_name })
        }
        Some(node::UserAgentVersionType::UserAgentVersion(v)) => {
            json!({ "version": v, "build": node.user_agent_name })
        }
        None => json!({}),
    }
}

#[tonic::async_trait]
impl StreamEvents for Lifecycle {
    async fn connected(
        &self,
        stream_id: u64,
        node: &Node,
        counters: Arc<StreamCounters>,
    ) -> Result<(), Status> {
        let (mesh, name) = parse_node_id(&node.id)
            .ok_or_else(|| Status::invalid_argument("node id must be <mesh>.<name>"))?;
        let registered = match dataplane_from_node(node) {
            Some(Ok(_)) => {
                let text = metadata_string(node, META_DATAPLANE_RESOURCE).unwrap_or_default();
                let (labels, spec) = parse_dataplane_resource(&text, mesh, name)
                    .map_err(Status::invalid_argument)?;
                self.register(mesh, name, labels, spec).await?;
                true
            }
            Some(Err(reason)) => return Err(Status::invalid_argument(reason)),
            None => {
                if stored_dataplane(self.store.as_ref(), mesh, name)
                    .await
                    .is_none()
                {
                    return Err(Status::not_found(format!(
                        "dataplane {name} in mesh {mesh} not found: create it or let kuma-dp send it"
                    )));
                }
                false
            }
        };
        let mut version = metadata_json(node, META_VERSION);
        if !version.is_object() {
            version = json!({});
        }
        version["envoy"] = envoy_version(node);
        let sub = Subscription {
            stream_id,
            mesh: mesh.to_string(),
            name: name.to_string(),
            id: format!("{}-{stream_id}", self.instance_id),
            connect_time: Utc::now(),
            disconnect_time: None,
            version,
            written: counters.events(),
            counters,
        };
        {
            let mut st = self.state.lock().expect("lifecycle lock");
            st.active
                .insert((mesh.to_string(), name.to_string()), stream_id);
            if registered {
                st.registered.insert((mesh.to_string(), name.to_string()));
            }
            st.subscriptions.insert(stream_id, sub.clone());
        }
        self.write_insight(&sub).await;
        let meta = kuma_xds::ProxyMeta {
            dns_port: metadata_string(node, META_DNS_PORT).and_then(|p| p.parse().ok()),
        };
        self.sync.signal(Signal::Connected {
            mesh: mesh.to_string(),
            name: name.to_string(),
            meta,
        });
        Ok(())
    }

    async fn disconnected(&self, stream_id: u64, node_id: &str) {
        let Some((mesh, name)) = parse_node_id(node_id) else {
            return;
        };
        let proxy = (mesh.to_string(), name.to_string());
        let (sub, was_current, registered) = {
            let mut st = self.state.lock().expect("lifecycle lock");
            let sub = st.subscriptions.remove(&stream_id);
            let was_current = st.active.get(&proxy) == Some(&stream_id);
            if was_current {
                st.active.remove(&proxy);
            }
            (sub, was_current, st.registered.contains(&proxy))
        };
        if let Some(mut sub) = sub {
            sub.disconnect_time = Some(Utc::now());
            self.write_insight(&sub).await;
        }
        if !was_current {
            return;
        }
        self.sync.signal(Signal::Disconnected {
            mesh: mesh.to_string(),
            name: name.to_string(),
        });
        if registered {
            let store = self.store.clone();
            let delay = self.deregistration_delay;
            let state = self.state.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let reconnected = state
                    .lock()
                    .expect("lifecycle lock")
                    .active
                    .contains_key(&proxy);
                if !reconnected && let Ok(key) = dataplane_key(&proxy.0, &proxy.1) {
                    match store.delete(&key, None).await {
                        Ok(()) | Err(StoreError::NotFound(_)) => {
                            info!(mesh = %proxy.0, name = %proxy.1, "dataplane deregistered");
                            let insight = ResourceKey::in_mesh(
                                ResourceKind::DataplaneInsight,
                                key.mesh().expect("mesh-scoped").clone(),
                                key.name().clone(),
                            )
                            .expect("mesh-scoped");
                            let _ = store.delete(&insight, None).await;
                        }
                        Err(error) => warn!(%error, "deregistering dataplane failed"),
                    }
                }
            });
        }
    }
}

/// Streams whose insights are written in one store batch.
const FLUSH_BATCH: usize = 500;

fn insight_key(sub: &Subscription) -> Option<ResourceKey> {
    let m = MeshName::new(sub.mesh.as_str()).ok()?;
    let n = ResourceName::new(sub.name.as_str()).ok()?;
    ResourceKey::in_mesh(ResourceKind::DataplaneInsight, m, n).ok()
}

/// An insight's content: the subscriptions of `earlier` (an insight's
/// spec) with `mine` replacing its earlier self (same `id`), keeping the
/// latest [`KEEP_SUBSCRIPTIONS`]. Only the other subscriptions are copied.
fn insight_write(earlier: Option<&Value>, mine: Value) -> Write {
    let earlier = earlier
        .and_then(|s| s.get("subscriptions"))
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let id = |s: &Value| s.get("id").and_then(Value::as_str).map(str::to_owned);
    let mine_id = id(&mine);
    let mut mine = Some(mine);
    let mut subs: Vec<Value> = Vec::with_capacity(earlier.len() + 1);
    for s in earlier {
        if mine.is_some() && mine_id.is_some() && id(s) == mine_id {
            subs.extend(mine.take());
        } else {
            subs.push(s.clone());
        }
    }
    subs.extend(mine);
    if subs.len() > KEEP_SUBSCRIPTIONS {
        subs.drain(..subs.len() - KEEP_SUBSCRIPTIONS);
    }
    let mut spec = Map::with_capacity(1);
    spec.insert("subscriptions".into(), Value::Array(subs));
    Write {
        labels: BTreeMap::new(),
        spec: Value::Object(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(w: &Write) -> Vec<&str> {
        w.spec["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_subscription_replaces_its_earlier_self_and_only_the_latest_are_kept() {
        let sub =
            |id: &str, sent: &str| json!({"id": id, "status": {"total": {"responsesSent": sent}}});
        let first = insight_write(None, sub("cp-1", "1"));
        assert_eq!(ids(&first), ["cp-1"]);

        let again = insight_write(Some(&first.spec), sub("cp-1", "7"));
        assert_eq!(ids(&again), ["cp-1"]);
        assert_eq!(
            again.spec["subscriptions"][0]["status"]["total"]["responsesSent"],
            "7"
        );

        let mut spec = again.spec;
        for i in 2..=7 {
            spec = insight_write(Some(&spec), sub(&format!("cp-{i}"), "1")).spec;
        }
        let w = insight_write(Some(&spec), sub("cp-5", "9"));
        assert_eq!(ids(&w), ["cp-3", "cp-4", "cp-5", "cp-6", "cp-7"]);
        assert_eq!(
            w.spec["subscriptions"][2]["status"]["total"]["responsesSent"],
            "9"
        );
    }

    #[test]
    fn a_subscription_is_written_as_kuma_writes_it() {
        let counters = Arc::new(StreamCounters::default());
        let sub = Subscription {
            stream_id: 3,
            mesh: "default".into(),
            name: "dp-1".into(),
            id: "cp-1-3".into(),
            connect_time: DateTime::parse_from_rfc3339("2026-11-26T04:00:00Z")
                .unwrap()
                .into(),
            disconnect_time: None,
            version: json!({"kumaDp": {"version": "2.9.0"}}),
            counters,
            written: 0,
        };
        assert_eq!(
            sub.to_json("cp-1"),
            json!({
                "id": "cp-1-3",
                "controlPlaneInstanceId": "cp-1",
                "connectTime": "2026-11-26T04:00:00Z",
                "status": {
                    "total": {"responsesSent": "0", "responsesAcknowledged": "0", "responsesRejected": "0"},
                    "cds": {"responsesSent": "0", "responsesAcknowledged": "0", "responsesRejected": "0"},
                    "eds": {"responsesSent": "0", "responsesAcknowledged": "0", "responsesRejected": "0"},
                    "lds": {"responsesSent": "0", "responsesAcknowledged": "0", "responsesRejected": "0"},
                    "rds": {"responsesSent": "0", "responsesAcknowledged": "0", "responsesRejected": "0"},
                },
                "version": {"kumaDp": {"version": "2.9.0"}},
            })
        );
    }
}
