//! Zones and their ZoneInsight: the Zone is created on first connect; each
//! GlobalToZoneSync stream is one subscription with its connect and
//! disconnect times, the zone's version and config, and per-kind
//! sent/ACK/NACK counts.

use chrono::Utc;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;
use kuma_kds::sync::SyncObserver;
use kuma_model::labels::{self, Mode};
use kuma_model::specs::insights::{
    DiscoveryServiceStats, KdsSubscription, KdsVersion, KumaCpVersion, ProtoU64,
};
use kuma_model::specs::{Zone, ZoneInsight};
use kuma_model::{ResourceKey, ResourceKind, ResourceName};
use kuma_store::{ResourceStore, StoreError, Write};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tracing::warn;

/// How many past subscriptions a ZoneInsight keeps.
const KEEP_SUBSCRIPTIONS: usize = 5;

fn now() -> String {
    kuma_model::resource::format_time(&Utc::now())
}

/// Creates the Zone unless it exists; returns whether it is enabled.
pub async fn ensure_zone(
    store: &dyn ResourceStore,
    zone: &ResourceName,
) -> Result<bool, StoreError> {
    let key = ResourceKey::global(ResourceKind::Zone, zone.clone()).expect("Zone is global");
    match store.get(&key).await {
        Ok(r) => Ok(serde_json::from_value::<Zone>(r.spec)
            .map(|z| z.is_enabled())
            .unwrap_or(true)),
        Err(StoreError::NotFound(_)) => {
            let write = Write {
                labels: labels::compute(
                    ResourceKind::Zone,
                    None,
                    zone.as_str(),
                    &BTreeMap::new(),
                    Mode::Global,
                    "",
                ),
                spec: serde_json::json!({"enabled": true}),
                status: None,
            };
            match store.create(&key, write).await {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(true),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// One GlobalToZoneSync stream's record, flushed to the zone's ZoneInsight.
pub struct Subscription {
    store: Arc<dyn ResourceStore>,
    zone: ResourceName,
    state: Mutex<KdsSubscription>,
    changed: Notify,
}

impl Subscription {
    pub fn new(
        store: Arc<dyn ResourceStore>,
        zone: ResourceName,
        global_instance_id: &str,
        auth_token_provided: bool,
    ) -> Arc<Self> {
        let sub = KdsSubscription {
            id: uuid::Uuid::new_v4().to_string(),
            global_instance_id: global_instance_id.to_string(),
            connect_time: Some(now()),
            auth_token_provided,
            ..Default::default()
        };
        Arc::new(Subscription {
            store,
            zone,
            state: Mutex::new(sub),
            changed: Notify::new(),
        })
    }

    fn update(&self, f: impl FnOnce(&mut KdsSubscription)) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        s.status.last_update_time = Some(now());
        drop(s);
        self.changed.notify_one();
    }

    fn count(&self, kind: ResourceKind, f: impl Fn(&mut DiscoveryServiceStats)) {
        self.update(|s| {
            f(&mut s.status.total);
            f(s.status.stat.entry(kind.name().to_string()).or_default());
        });
    }

    /// Writes the subscription into the ZoneInsight now.
    pub async fn flush(&self) {
        let sub = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let key = ResourceKey::global(ResourceKind::ZoneInsight, self.zone.clone())
            .expect("ZoneInsight is global");
        for _ in 0..3 {
            let (mut insight, version) = match self.store.get(&key).await {
                Ok(r) => (
                    serde_json::from_value::<ZoneInsight>(r.spec).unwrap_or_default(),
                    Some(r.meta.version),
                ),
                Err(StoreError::NotFound(_)) => (ZoneInsight::default(), None),
                Err(error) => {
                    warn!(zone = %self.zone, %error, "cannot read the ZoneInsight");
                    return;
                }
            };
            match insight.subscriptions.iter_mut().find(|s| s.id == sub.id) {
                Some(s) => *s = sub.clone(),
                None => insight.subscriptions.push(sub.clone()),
            }
            let excess = insight
                .subscriptions
                .len()
                .saturating_sub(KEEP_SUBSCRIPTIONS);
            insight.subscriptions.drain(..excess);
            let write = Write {
                labels: labels::compute(
                    ResourceKind::ZoneInsight,
                    None,
                    self.zone.as_str(),
                    &BTreeMap::new(),
                    Mode::Global,
                    "",
                ),
                spec: serde_json::to_value(&insight).unwrap_or_default(),
                status: None,
            };
            let res = match version {
                Some(v) => self.store.update(&key, write, Some(v)).await.map(|_| ()),
                None => self.store.create(&key, write).await.map(|_| ()),
            };
            match res {
                Ok(()) => return,
                // Another stream of this zone wrote in between: re-read.
                Err(StoreError::Conflict { .. }) | Err(StoreError::AlreadyExists(_)) => continue,
                Err(error) => {
                    warn!(zone = %self.zone, %error, "cannot write the ZoneInsight");
                    return;
                }
            }
        }
    }

    /// Flushes after every burst of changes until `done` resolves, then
    /// records the disconnect.
    pub async fn run_flusher(self: Arc<Self>, done: impl std::future::Future<Output = ()>) {
        self.flush().await;
        tokio::pin!(done);
        loop {
            tokio::select! {
                _ = &mut done => break,
                _ = self.changed.notified() => {
                    // Coalesce a burst of counters into one write.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    self.flush().await;
                }
            }
        }
        self.update(|s| s.disconnect_time = Some(now()));
        self.flush().await;
    }
}

impl SyncObserver for Subscription {
    fn node(&self, node: &Node) {
        let Some(md) = &node.metadata else { return };
        let config = match md.fields.get("config").and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(s)) => s.clone(),
            _ => String::new(),
        };
        let version = md
            .fields
            .get("version")
            .and_then(|v| match &v.kind {
                Some(Kind::StructValue(s)) => s.fields.get("kumaCp"),
                _ => None,
            })
            .and_then(|v| match &v.kind {
                Some(Kind::StructValue(s)) => s.fields.get("version"),
                _ => None,
            })
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            });
        let instance = match md
            .fields
            .get("control-plane-id")
            .and_then(|v| v.kind.as_ref())
        {
            Some(Kind::StringValue(s)) => s.clone(),
            _ => String::new(),
        };
        self.update(|s| {
            if !config.is_empty() {
                s.config = config;
            }
            if !instance.is_empty() {
                s.zone_instance_id = instance;
            }
            if let Some(v) = version {
                s.version = Some(KdsVersion {
                    kuma_cp: Some(KumaCpVersion {
                        version: v,
                        kuma_cp_global_compatible: true,
                        ..Default::default()
                    }),
                });
            }
        });
    }
    fn sent(&self, kind: ResourceKind) {
        self.count(kind, |s| {
            s.responses_sent = ProtoU64(s.responses_sent.0 + 1)
        });
    }
    fn acked(&self, kind: ResourceKind) {
        self.count(kind, |s| {
            s.responses_acknowledged = ProtoU64(s.responses_acknowledged.0 + 1)
        });
    }
    fn nacked(&self, kind: ResourceKind, _reason: &str) {
        self.count(kind, |s| {
            s.responses_rejected = ProtoU64(s.responses_rejected.0 + 1)
        });
    }
    fn oversized(&self, kind: ResourceKind, bytes: usize) {
        warn!(zone = %self.zone, kind = %kind, bytes, "KDS response over the size limit");
    }
}
