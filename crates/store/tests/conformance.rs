//! The conformance suite against every backend.

use kuma_store::testing::TestPostgres;
use kuma_store::testing::conformance;
use kuma_store::{
    CachedStore, MemoryStore, PostgresConfig, PostgresStore, ResourceStore, SqliteStore,
};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    let store: Arc<dyn ResourceStore> = Arc::new(MemoryStore::new());
    conformance::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ResourceStore> =
        Arc::new(SqliteStore::open(dir.path().join("kuma.db")).await.unwrap());
    conformance::run_all(store).await;
}

/// What was written survives closing and reopening the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_restart() {
    use conformance::{mk_key, mk_labelled, mk_mesh_key, mk_write};
    use kuma_model::ResourceKind;
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("kuma.db");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let key = mk_key(ResourceKind::MeshTimeout, "default", "t");
    let written = {
        let store = SqliteStore::open(&path).await.unwrap();
        store
            .create(&mk_mesh_key("default"), mk_write(json!({})))
            .await
            .unwrap();
        store
            .create(&key, mk_labelled(json!({"a": 1}), &[("x", "y")]))
            .await
            .unwrap();
        let w = store
            .update(&key, mk_write(json!({"a": 2})), Some(1))
            .await
            .unwrap();
        store.close().await;
        w
    };
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), written);
    // Migrations are not re-applied, and writes continue from the stored version.
    let next = store
        .update(&key, mk_write(json!({"a": 3})), Some(2))
        .await
        .unwrap();
    assert_eq!(next.meta.version, 3);
    assert_eq!(next.meta.creation_time, written.meta.creation_time);
}

async fn fresh_postgres(pg: &TestPostgres, db: &str) -> PostgresConfig {
    let config = pg.create_database(db);
    kuma_store::migrate_up(&config).await.unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let pg = TestPostgres::start_async().await;
    let config = fresh_postgres(&pg, "conformance").await;
    let store: Arc<dyn ResourceStore> = Arc::new(PostgresStore::open(&config).await.unwrap());
    conformance::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(dir.path().join("kuma.db")).await.unwrap();
    let store: Arc<dyn ResourceStore> = Arc::new(CachedStore::new(inner).await.unwrap());
    conformance::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_memory() {
    let store: Arc<dyn ResourceStore> =
        Arc::new(CachedStore::new(MemoryStore::new()).await.unwrap());
    conformance::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_postgres() {
    let pg = TestPostgres::start_async().await;
    let config = fresh_postgres(&pg, "cached").await;
    let inner = PostgresStore::open(&config).await.unwrap();
    let store: Arc<dyn ResourceStore> = Arc::new(CachedStore::new(inner).await.unwrap());
    conformance::run_all(store).await;
}

/// A store with only the single-write methods: `apply_batch` is the trait's
/// fallback, which must still give the per-op results and events of a batch.
struct SingleWrites(MemoryStore);

#[async_trait::async_trait]
impl ResourceStore for SingleWrites {
    async fn get(
        &self,
        key: &kuma_model::ResourceKey,
    ) -> Result<kuma_model::Resource, kuma_store::StoreError> {
        self.0.get(key).await
    }
    async fn list(
        &self,
        filter: &kuma_store::ListFilter,
    ) -> Result<kuma_store::ListPage, kuma_store::StoreError> {
        self.0.list(filter).await
    }
    async fn create(
        &self,
        key: &kuma_model::ResourceKey,
        write: kuma_store::Write,
    ) -> Result<kuma_model::Resource, kuma_store::StoreError> {
        self.0.create(key, write).await
    }
    async fn update(
        &self,
        key: &kuma_model::ResourceKey,
        write: kuma_store::Write,
        expected_version: Option<u64>,
    ) -> Result<kuma_model::Resource, kuma_store::StoreError> {
        self.0.update(key, write, expected_version).await
    }
    async fn delete(
        &self,
        key: &kuma_model::ResourceKey,
        expected_version: Option<u64>,
    ) -> Result<(), kuma_store::StoreError> {
        self.0.delete(key, expected_version).await
    }
    fn watch(&self) -> tokio::sync::broadcast::Receiver<kuma_store::ChangeEvent> {
        self.0.watch()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_fallback() {
    let store: Arc<dyn ResourceStore> = Arc::new(SingleWrites(MemoryStore::new()));
    conformance::batch_ops(store.clone()).await;
    conformance::batch_mesh_cascade(store).await;
}
