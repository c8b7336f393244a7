//! Where resources live.
//!
//! ```text
//!  api-server / xDS / KDS
//!        |  ResourceStore (get, list, create, update, delete, watch;
//!        |  apply_batch: many writes in one transaction, as KDS applies a response)
//!        v
//!  memory | sqlite (embedded default) | postgres (multi-instance)
//!        |  every committed write
//!        v
//!  change feed (broadcast of ChangeEvent; PostgreSQL fans out with LISTEN/NOTIFY)
//! ```
//!
//! Every backend passes the same conformance suite (`tests/conformance.rs`,
//! reusable by other crates through the `test-util` feature: [`testing`]).
//!
//! Backends: [`memory::MemoryStore`] (tests, `KUMA_STORE_TYPE=memory`),
//! [`sqlite::SqliteStore`] (embedded default, one process per file),
//! [`postgres::PostgresStore`] (several control planes on one database) and
//! [`cache::CachedStore`], a read replica in memory in front of any of them.

mod batch;
pub mod cache;
mod index;
pub mod memory;
pub mod postgres;
mod row;
pub mod sqlite;
#[cfg(feature = "test-util")]
pub mod testing;

pub use cache::CachedStore;
pub use memory::MemoryStore;
pub use postgres::{PostgresConfig, PostgresStore, migrate_up};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use kuma_model::{MeshName, Resource, ResourceKey, ResourceKind};
use serde_json::Value;
use std::collections::BTreeMap;
use tokio::sync::broadcast;

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed. Only [`StoreError::Backend`] may succeed when
/// retried unchanged; the others describe the request itself.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No resource with this key. Not retryable.
    #[error("{0} not found")]
    NotFound(ResourceKey),
    /// Create of a key that exists. Not retryable.
    #[error("{0} already exists")]
    AlreadyExists(ResourceKey),
    /// The caller's version is stale: someone else wrote in between. Re-read and retry.
    #[error("{key} has version {actual}, the write expected {expected}")]
    Conflict {
        key: ResourceKey,
        expected: u64,
        actual: u64,
    },
    /// A mesh-scoped resource names a mesh that does not exist. Not retryable.
    #[error("mesh {0} not found")]
    MeshNotFound(MeshName),
    /// The backend failed (connection lost, disk full...). May succeed on retry.
    /// The source is for logs only; never show it to a client.
    #[error("storage backend failure")]
    Backend(#[source] BoxError),
}

impl StoreError {
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }

    /// Whether retrying the same operation unchanged can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Backend(_))
    }
}

/// Why a store could not be opened (connection, migrations, schema version).
/// Unlike [`StoreError`], the message is meant for the operator reading the log.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database schema is older than this binary expects.
    #[error(
        "database schema is at version {current}, this kuma-cp needs {required}: run `kuma-cp migrate up`"
    )]
    SchemaOutdated { current: i64, required: i64 },
    /// The database schema is newer than this binary knows.
    #[error(
        "database schema is at version {current}, newer than the {required} this kuma-cp knows: upgrade kuma-cp, or set KUMA_STORE_POSTGRES_TOLERATE_NEWER_DB_VERSIONS=true if the newer migrations are backwards compatible"
    )]
    SchemaTooNew { current: i64, required: i64 },
    /// A migration failed or was left half-applied.
    #[error("database migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The database could not be reached or opened.
    #[error("cannot open the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// The configuration cannot work (for example a TLS mode without its CA).
    #[error("invalid store configuration: {0}")]
    Config(String),
}

/// The time a store stamps on a write, truncated to microseconds so that every
/// backend returns exactly what it stored.
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

/// Capacity of every change-feed channel; a receiver further behind gets `Lagged`.
pub(crate) const FEED_CAPACITY: usize = 65_536;

/// What to list. Results are ordered by name, then mesh.
#[derive(Clone, Debug)]
pub struct ListFilter {
    pub kind: ResourceKind,
    /// `None` lists across all meshes (or a global kind).
    pub mesh: Option<MeshName>,
    /// Keep names containing this substring.
    pub name_contains: Option<String>,
    /// Keep resources carrying every one of these labels.
    pub labels: BTreeMap<String, String>,
    /// Dataplanes only: keep those with an inbound (or gateway) carrying every
    /// one of these tags.
    pub tags: BTreeMap<String, String>,
    pub offset: usize,
    /// `None` means no limit.
    pub limit: Option<usize>,
}

impl ListFilter {
    pub fn all(kind: ResourceKind) -> Self {
        ListFilter {
            kind,
            mesh: None,
            name_contains: None,
            labels: BTreeMap::new(),
            tags: BTreeMap::new(),
            offset: 0,
            limit: None,
        }
    }

    pub fn in_mesh(kind: ResourceKind, mesh: MeshName) -> Self {
        ListFilter {
            mesh: Some(mesh),
            ..Self::all(kind)
        }
    }

    /// Whether `r` passes every filter except paging (for backends that filter in memory).
    pub fn matches(&self, r: &Resource) -> bool {
        r.kind() == self.kind
            && self.mesh.as_ref().is_none_or(|m| r.key.mesh() == Some(m))
            && self
                .name_contains
                .as_ref()
                .is_none_or(|s| r.key.name().as_str().contains(s.as_str()))
            && self
                .labels
                .iter()
                .all(|(k, v)| r.meta.labels.get(k) == Some(v))
            && (self.tags.is_empty() || dataplane_has_tags(&r.spec, &self.tags))
    }
}

/// Whether a Dataplane spec has an inbound or gateway whose tags include all of `tags`.
pub fn dataplane_has_tags(spec: &Value, tags: &BTreeMap<String, String>) -> bool {
    let networking = &spec["networking"];
    let mut candidates: Vec<&Value> = networking["inbound"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if !networking["gateway"].is_null() {
        candidates.push(&networking["gateway"]);
    }
    candidates.iter().any(|c| {
        tags.iter()
            .all(|(k, v)| c["tags"][k.as_str()].as_str() == Some(v.as_str()))
    })
}

/// One page of a list, with the count of everything that matched.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    pub items: Vec<Resource>,
    pub total: usize,
}

/// [`ListPage`] with the resources shared: stores that keep them in memory
/// hand out their own copy instead of cloning each.
#[derive(Clone, Debug, Default)]
pub struct SharedPage {
    pub items: Vec<std::sync::Arc<Resource>>,
    pub total: usize,
}

/// The content of a write.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    pub labels: BTreeMap<String, String>,
    pub spec: Value,
    pub status: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    Created,
    Updated,
    Deleted,
}

/// One committed write, as seen on the change feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeEvent {
    pub op: ChangeOp,
    pub key: ResourceKey,
    /// The version after the write (the last version for a delete).
    pub version: u64,
}

/// What a [`BatchOp::Put`] expects to find at its key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expect {
    /// Anything: creates when absent, replaces when present.
    #[default]
    Any,
    /// Nothing (a create); fails with [`StoreError::AlreadyExists`] otherwise.
    Absent,
    /// Exactly this version (a conditional update); fails with
    /// [`StoreError::NotFound`] or [`StoreError::Conflict`] otherwise.
    Version(u64),
}

/// One write of a [`ResourceStore::apply_batch`].
#[derive(Clone, Debug, PartialEq)]
pub enum BatchOp {
    /// Creates `key` at version 1 or replaces its content, bumping the
    /// version and keeping the creation time, as [`ResourceStore::create`] /
    /// [`ResourceStore::update`] do.
    Put {
        key: ResourceKey,
        write: Write,
        expect: Expect,
    },
    /// As [`ResourceStore::delete`] (a Mesh takes its contents with it).
    Delete {
        key: ResourceKey,
        expected_version: Option<u64>,
    },
}

impl BatchOp {
    pub fn key(&self) -> &ResourceKey {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key, .. } => key,
        }
    }
}

/// What one [`BatchOp`] did. The resource as stored is shared (a cache in
/// front keeps the same allocation).
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    Created(std::sync::Arc<Resource>),
    Updated(std::sync::Arc<Resource>),
    /// `version` is the last version the resource had.
    Deleted {
        key: ResourceKey,
        version: u64,
    },
}

/// Per-op outcome of [`ResourceStore::apply_batch`], in the order of the ops.
pub type BatchResults = Vec<Result<Applied, StoreError>>;

/// The storage contract every backend meets.
#[async_trait]
pub trait ResourceStore: Send + Sync + 'static {
    async fn get(&self, key: &ResourceKey) -> Result<Resource, StoreError>;

    /// [`ResourceStore::get`] for readers that only look: in-memory stores
    /// share their copy. The default wraps `get`.
    async fn get_shared(&self, key: &ResourceKey) -> Result<std::sync::Arc<Resource>, StoreError> {
        self.get(key).await.map(std::sync::Arc::new)
    }

    async fn list(&self, filter: &ListFilter) -> Result<ListPage, StoreError>;

    /// [`ResourceStore::list`] for readers that only look: in-memory stores
    /// share their resources instead of copying them. The default wraps `list`.
    async fn list_shared(&self, filter: &ListFilter) -> Result<SharedPage, StoreError> {
        let page = self.list(filter).await?;
        Ok(SharedPage {
            items: page.items.into_iter().map(std::sync::Arc::new).collect(),
            total: page.total,
        })
    }

    /// Creates `key` at version 1. Mesh-scoped kinds need their Mesh to exist.
    async fn create(&self, key: &ResourceKey, write: Write) -> Result<Resource, StoreError>;

    /// Replaces the content of `key`, bumping its version. With
    /// `expected_version`, fails with [`StoreError::Conflict`] unless it matches.
    async fn update(
        &self,
        key: &ResourceKey,
        write: Write,
        expected_version: Option<u64>,
    ) -> Result<Resource, StoreError>;

    /// Deletes `key`; deleting a Mesh deletes everything in it.
    async fn delete(
        &self,
        key: &ResourceKey,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError>;

    /// Applies `ops` in order, as one transaction: readers and the change
    /// feed see all of the successful ops or none of them, and each op sees
    /// the effect of the ones before it. An op that fails (its
    /// [`StoreError::NotFound`], [`StoreError::AlreadyExists`],
    /// [`StoreError::Conflict`] or [`StoreError::MeshNotFound`]) changes
    /// nothing and is reported in its slot; the others still apply. The
    /// events are those the same writes made one by one would emit, in op
    /// order, sent after commit. `Err` (a backend failure) means nothing was
    /// written.
    ///
    /// The default applies the ops one by one with the single-write methods:
    /// correct per op, but neither atomic nor fast. Every backend of this
    /// crate overrides it.
    async fn apply_batch(&self, ops: Vec<BatchOp>) -> Result<BatchResults, StoreError> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(apply_one(self, op).await);
        }
        Ok(out)
    }

    /// Subscribes to committed writes from now on. A lagging receiver gets
    /// `RecvError::Lagged` and should re-list.
    fn watch(&self) -> broadcast::Receiver<ChangeEvent>;
}

fn created(r: Resource) -> Applied {
    Applied::Created(std::sync::Arc::new(r))
}

fn updated(r: Resource) -> Applied {
    Applied::Updated(std::sync::Arc::new(r))
}

/// One [`BatchOp`] through the single-write methods (the fallback batch).
async fn apply_one<S: ResourceStore + ?Sized>(
    store: &S,
    op: BatchOp,
) -> Result<Applied, StoreError> {
    match op {
        BatchOp::Delete {
            key,
            expected_version,
        } => {
            let mut attempts = 0;
            loop {
                attempts += 1;
                let version = match expected_version {
                    Some(v) => v,
                    None => store.get(&key).await?.meta.version,
                };
                match store.delete(&key, Some(version)).await {
                    Err(StoreError::Conflict { .. })
                        if expected_version.is_none() && attempts < 8 =>
                    {
                        continue;
                    }
                    r => return r.map(|()| Applied::Deleted { key, version }),
                }
            }
        }
        BatchOp::Put {
            key,
            write,
            expect: Expect::Absent,
        } => store.create(&key, write).await.map(created),
        BatchOp::Put {
            key,
            write,
            expect: Expect::Version(v),
        } => store.update(&key, write, Some(v)).await.map(updated),
        BatchOp::Put {
            key,
            write,
            expect: Expect::Any,
        } => {
            // Races with other writers only make this go round again.
            let mut attempts = 0;
            loop {
                attempts += 1;
                let retry = attempts < 8;
                match store.get(&key).await {
                    Ok(_) => match store.update(&key, write.clone(), None).await {
                        Err(StoreError::NotFound(_)) if retry => continue,
                        r => return r.map(updated),
                    },
                    Err(StoreError::NotFound(_)) => match store.create(&key, write.clone()).await {
                        Err(StoreError::AlreadyExists(_)) if retry => continue,
                        r => return r.map(created),
                    },
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// A shared store is a store: lets a [`CachedStore`] (or anything generic over
/// `S: ResourceStore`) sit in front of an `Arc` others also hold.
#[async_trait]
impl<T: ResourceStore + ?Sized> ResourceStore for std::sync::Arc<T> {
    async fn get(&self, key: &ResourceKey) -> Result<Resource, StoreError> {
        (**self).get(key).await
    }
    async fn get_shared(&self, key: &ResourceKey) -> Result<std::sync::Arc<Resource>, StoreError> {
        (**self).get_shared(key).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<ListPage, StoreError> {
        (**self).list(filter).await
    }
    async fn list_shared(&self, filter: &ListFilter) -> Result<SharedPage, StoreError> {
        (**self).list_shared(filter).await
    }
    async fn create(&self, key: &ResourceKey, write: Write) -> Result<Resource, StoreError> {
        (**self).create(key, write).await
    }
    async fn update(
        &self,
        key: &ResourceKey,
        write: Write,
        expected_version: Option<u64>,
    ) -> Result<Resource, StoreError> {
        (**self).update(key, write, expected_version).await
    }
    async fn delete(
        &self,
        key: &ResourceKey,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        (**self).delete(key, expected_version).await
    }
    async fn apply_batch(&self, ops: Vec<BatchOp>) -> Result<BatchResults, StoreError> {
        (**self).apply_batch(ops).await
    }
    fn watch(&self) -> broadcast::Receiver<ChangeEvent> {
        (**self).watch()
    }
}
