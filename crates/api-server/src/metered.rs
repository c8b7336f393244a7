//! A store decorator that records operation latency.

use async_trait::async_trait;
use kuma_model::{Resource, ResourceKey};
use kuma_store::{ChangeEvent, ListFilter, ListPage, ResourceStore, StoreError, Write};
use kuma_telemetry::Metrics;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::broadcast;

/// Wraps a store and observes every operation in `store_operation_duration_seconds`.
pub struct MeteredStore {
    inner: Arc<dyn ResourceStore>,
    metrics: Metrics,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn ResourceStore>, metrics: Metrics) -> Self {
        MeteredStore { inner, metrics }
    }
}

#[async_trait]
impl ResourceStore for MeteredStore {
    async fn get(&self, key: &ResourceKey) -> Result<Resource, StoreError> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.metrics
            .observe_store("get", key.kind().name(), t.elapsed());
        r
    }

    async fn list(&self, filter: &ListFilter) -> Result<ListPage, StoreError> {
        let t = Instant::now();
        let r = self.inner.list(filter).await;
        self.metrics
            .observe_store("list", filter.kind.name(), t.elapsed());
        r
    }

    async fn create(&self, key: &ResourceKey, write: Write) -> Result<Resource, StoreError> {
        let t = Instant::now();
        let r = self.inner.create(key, write).await;
        self.metrics
            .observe_store("create", key.kind().name(), t.elapsed());
        r
    }

    async fn update(
        &self,
        key: &ResourceKey,
        write: Write,
        expected_version: Option<u64>,
    ) -> Result<Resource, StoreError> {
        let t = Instant::now();
        let r = self.inner.update(key, write, expected_version).await;
        self.metrics
            .observe_store("update", key.kind().name(), t.elapsed());
        r
    }

    async fn delete(
        &self,
        key: &ResourceKey,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.inner.delete(key, expected_version).await;
        self.metrics
            .observe_store("delete", key.kind().name(), t.elapsed());
        r
    }

    fn watch(&self) -> broadcast::Receiver<ChangeEvent> {
        self.inner.watch()
    }
}
