//! A store decorator that records operation latency.

use async_trait::async_trait;
use kuma_model::{Resource, ResourceKey};
use kuma_store::{
    BatchOp, BatchResults, ChangeEvent, ListFilter, ListPage, ResourceStore, SharedPage,
    StoreError, Write,
};
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

    async fn get_shared(&self, key: &ResourceKey) -> Result<Arc<Resource>, StoreError> {
        let t = Instant::now();
        let r = self.inner.get_shared(key).await;
        self.metrics
            .observe_store("get", key.kind().name(), t.elapsed());
        r
    }

    async fn list_shared(&self, filter: &ListFilter) -> Result<SharedPage, StoreError> {
        let t = Instant::now();
        let r = self.inner.list_shared(filter).await;
        self.metrics
            .observe_store("list", filter.kind.name(), t.elapsed());
        r
    }

    async fn apply_batch(&self, ops: Vec<BatchOp>) -> Result<BatchResults, StoreError> {
        let t = Instant::now();
        // Batches mix kinds; they are observed under the kind of their first op.
        let kind = ops.first().map(|op| op.key().kind().name()).unwrap_or("");
        let r = self.inner.apply_batch(ops).await;
        self.metrics.observe_store("batch", kind, t.elapsed());
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

#[cfg(test)]
mod tests {
    use super::*;
    use kuma_model::{ResourceKind, ResourceName};
    use kuma_store::{Expect, MemoryStore};
    use serde_json::json;
    use std::collections::BTreeMap;

    /// The decorator must pass batches through: the trait's default would
    /// split them into single writes (no transaction, one commit each).
    #[tokio::test]
    async fn batches_and_shared_reads_reach_the_inner_store_whole() {
        let metrics = Metrics::new();
        let store = MeteredStore::new(Arc::new(MemoryStore::new()), metrics.clone());
        let mesh = |n: &str| {
            ResourceKey::global(ResourceKind::Mesh, ResourceName::new(n).unwrap()).unwrap()
        };
        let put = |n: &str| BatchOp::Put {
            key: mesh(n),
            write: Write {
                labels: BTreeMap::new(),
                spec: json!({}),
                status: None,
            },
            expect: Expect::Any,
        };
        let results = store.apply_batch(vec![put("a"), put("b")]).await.unwrap();
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(store.get_shared(&mesh("b")).await.unwrap().meta.version, 1);
        let page = store
            .list_shared(&ListFilter::all(ResourceKind::Mesh))
            .await
            .unwrap();
        assert_eq!(page.total, 2);
        let text = metrics.encode();
        assert!(text.contains("operation=\"batch\""), "{text}");
        assert!(!text.contains("operation=\"create\""), "{text}");
    }
}
