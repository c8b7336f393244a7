//! The conformance suite against every backend.

use kuma_store::testing::conformance;
use kuma_store::{MemoryStore, ResourceStore};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    let store: Arc<dyn ResourceStore> = Arc::new(MemoryStore::new());
    conformance::run_all(store).await;
}
