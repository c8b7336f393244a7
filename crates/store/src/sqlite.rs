//! The embedded default store: one SQLite file (WAL mode, so readers never
//! wait for the writer), migrated on open, surviving restarts.
//!
//! One kuma-cp process owns the file: writes are serialized in process, and
//! the change feed is in-process. For several control planes use PostgreSQL.

use crate::batch::{self, Stored};
use crate::row::{
    cascading_mesh, corrupt_json, decode_key, decode_labels, mesh_col, version_from_sql,
    version_to_sql,
};
use crate::{
    BatchOp, BatchResults, ChangeEvent, ChangeOp, FEED_CAPACITY, ListFilter, ListPage, OpenError,
    ResourceStore, StoreError, Write,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kuma_model::{Resource, ResourceKey, ResourceKind, ResourceMeta};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{Mutex, broadcast};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Rows per upsert statement of a batch (9 parameters each, well under
/// SQLite's 32766).
const UPSERT_ROWS: usize = 500;

const COLUMNS: &str =
    "kind, mesh, name, version, labels, spec, status, creation_time, modification_time";

pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    /// Serializes writers so that events leave in commit order and no writer
    /// ever waits on SQLite's own lock.
    write_lock: Mutex<()>,
    feed: broadcast::Sender<ChangeEvent>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies any
    /// pending migrations.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(OpenError::Connect)?;
        MIGRATOR.run(&pool).await.map_err(OpenError::Migrate)?;
        Ok(SqliteStore {
            pool,
            path,
            write_lock: Mutex::new(()),
            feed: broadcast::channel(FEED_CAPACITY).0,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection (also done on drop, less gracefully).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn emit(&self, op: ChangeOp, key: ResourceKey, version: u64) {
        let _ = self.feed.send(ChangeEvent { op, key, version });
    }
}

fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(key: &ResourceKey, us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| {
        corrupt_json(
            key,
            serde::de::Error::custom(format!("timestamp {us} out of range")),
        )
    })
}

fn to_json(v: &impl serde::Serialize) -> String {
    // Serializing a Value or a map of strings cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn decode(row: &SqliteRow) -> Result<Resource, StoreError> {
    let be = StoreError::backend;
    let key = decode_key(
        row.try_get::<&str, _>("kind").map_err(be)?,
        row.try_get::<&str, _>("mesh").map_err(be)?,
        row.try_get::<&str, _>("name").map_err(be)?,
    )?;
    let json = |col: &str| -> Result<Option<serde_json::Value>, StoreError> {
        match row.try_get::<Option<&str>, _>(col).map_err(be)? {
            None => Ok(None),
            Some(s) => serde_json::from_str(s)
                .map(Some)
                .map_err(|e| corrupt_json(&key, e)),
        }
    };
    let labels = decode_labels(&key, json("labels")?.unwrap_or_default())?;
    let spec = json("spec")?.unwrap_or_default();
    let status = json("status")?;
    let meta = ResourceMeta {
        labels,
        version: version_from_sql(row.try_get("version").map_err(be)?),
        creation_time: from_micros(&key, row.try_get("creation_time").map_err(be)?)?,
        modification_time: from_micros(&key, row.try_get("modification_time").map_err(be)?)?,
    };
    Ok(Resource {
        key,
        meta,
        spec,
        status,
    })
}

/// `(version, creation_time)` of `key`, inside a transaction.
async fn current(
    conn: &mut sqlx::SqliteConnection,
    key: &ResourceKey,
) -> Result<Option<(u64, i64)>, StoreError> {
    let row = sqlx::query(
        "SELECT version, creation_time FROM resources WHERE kind = ? AND mesh = ? AND name = ?",
    )
    .bind(key.kind().name())
    .bind(mesh_col(key))
    .bind(key.name().as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::backend)?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some((
            version_from_sql(r.try_get(0).map_err(StoreError::backend)?),
            r.try_get(1).map_err(StoreError::backend)?,
        ))),
    }
}

/// `[[kind, mesh, name], ...]`: a key list as one JSON parameter (read back
/// with `json_each`), so a batch costs one statement, not one per key.
fn keys_json<'a>(keys: impl Iterator<Item = &'a ResourceKey>) -> String {
    let arr: Vec<[&str; 3]> = keys
        .map(|k| [k.kind().name(), mesh_col(k), k.name().as_str()])
        .collect();
    to_json(&arr)
}

/// The batch in the open transaction `tx` (the write lock held): reads the
/// rows the ops name, plans, writes with a few set-based statements.
async fn write_batch(
    tx: &mut sqlx::SqliteConnection,
    ops: Vec<BatchOp>,
) -> Result<batch::Plan, StoreError> {
    let be = StoreError::backend;
    let keys = batch::keys(&ops);
    let mut stored = HashMap::with_capacity(keys.0.len());
    // CROSS JOIN: json_each drives, each key is a primary-key lookup.
    let rows = sqlx::query(
        "SELECT r.kind, r.mesh, r.name, r.version, r.creation_time \
         FROM json_each(?) AS j CROSS JOIN resources AS r \
         ON r.kind = j.value ->> 0 AND r.name = j.value ->> 2 AND r.mesh = j.value ->> 1",
    )
    .bind(keys_json(keys.0.iter().chain(&keys.1)))
    .fetch_all(&mut *tx)
    .await
    .map_err(be)?;
    for r in rows {
        let key = decode_key(
            r.try_get::<&str, _>(0).map_err(be)?,
            r.try_get::<&str, _>(1).map_err(be)?,
            r.try_get::<&str, _>(2).map_err(be)?,
        )?;
        let created = from_micros(&key, r.try_get(4).map_err(be)?)?;
        let version = version_from_sql(r.try_get(3).map_err(be)?);
        stored.insert(key, Stored { version, created });
    }
    let plan = batch::plan(ops, stored, keys, crate::now());
    Ok(plan)
}

/// Runs the plan's writes; returns what each cascade removed.
async fn write_plan(
    tx: &mut sqlx::SqliteConnection,
    plan: &batch::Plan,
) -> Result<Vec<(String, Vec<batch::Event>)>, StoreError> {
    let be = StoreError::backend;
    let mut cascaded = Vec::new();
    for mesh in &plan.cascades {
        let rows = sqlx::query(
            "DELETE FROM resources WHERE mesh = ? RETURNING kind, mesh, name, version, creation_time",
        )
        .bind(mesh)
        .fetch_all(&mut *tx)
        .await
        .map_err(be)?;
        let mut gone = Vec::with_capacity(rows.len());
        for r in rows {
            let key = decode_key(
                r.try_get::<&str, _>(0).map_err(be)?,
                r.try_get::<&str, _>(1).map_err(be)?,
                r.try_get::<&str, _>(2).map_err(be)?,
            )?;
            let born = from_micros(&key, r.try_get(4).map_err(be)?)?;
            gone.push(batch::Event {
                op: ChangeOp::Deleted,
                version: version_from_sql(r.try_get(3).map_err(be)?),
                key,
                born,
            });
        }
        cascaded.push((mesh.clone(), gone));
    }
    if !plan.deletes.is_empty() {
        sqlx::query(
            "DELETE FROM resources WHERE (kind, name, mesh) IN \
             (SELECT value ->> 0, value ->> 2, value ->> 1 FROM json_each(?))",
        )
        .bind(keys_json(plan.deletes.iter()))
        .execute(&mut *tx)
        .await
        .map_err(be)?;
    }
    // Writes are serialized in process: no row appears between the read and
    // here, so inserts and updates can share one upsert, of many rows each.
    let rows: Vec<usize> = plan.updates.iter().chain(&plan.inserts).copied().collect();
    for chunk in rows.chunks(UPSERT_ROWS) {
        let mut sql = format!("INSERT INTO resources ({COLUMNS}) VALUES ");
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 {
                "(?,?,?,?,?,?,?,?,?)"
            } else {
                ",(?,?,?,?,?,?,?,?,?)"
            });
        }
        sql.push_str(
            " ON CONFLICT (kind, name, mesh) DO UPDATE SET version = excluded.version, \
             labels = excluded.labels, spec = excluded.spec, status = excluded.status, \
             creation_time = excluded.creation_time, modification_time = excluded.modification_time",
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for i in chunk {
            let r = plan.row(*i);
            q = q
                .bind(r.key.kind().name())
                .bind(mesh_col(&r.key))
                .bind(r.key.name().as_str())
                .bind(version_to_sql(r.meta.version))
                .bind(to_json(&r.meta.labels))
                .bind(to_json(&r.spec))
                .bind(r.status.as_ref().map(to_json))
                .bind(micros(&r.meta.creation_time))
                .bind(micros(&r.meta.modification_time));
        }
        q.execute(&mut *tx).await.map_err(be)?;
    }
    Ok(cascaded)
}

#[async_trait]
impl ResourceStore for SqliteStore {
    /// One transaction, a handful of statements whatever the size.
    async fn apply_batch(&self, ops: Vec<BatchOp>) -> Result<BatchResults, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        let plan = write_batch(&mut tx, ops).await?;
        let cascaded = if plan.is_noop() {
            Vec::new()
        } else {
            let c = write_plan(&mut tx, &plan).await?;
            tx.commit().await.map_err(StoreError::backend)?;
            c
        };
        let (results, events) = plan.finish(cascaded);
        for e in events {
            self.emit(e.op, e.key, e.version);
        }
        Ok(results)
    }

    async fn get(&self, key: &ResourceKey) -> Result<Resource, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM resources WHERE kind = ? AND mesh = ? AND name = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(key.kind().name())
            .bind(mesh_col(key))
            .bind(key.name().as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        match row {
            Some(row) => decode(&row),
            None => Err(StoreError::NotFound(key.clone())),
        }
    }

    async fn list(&self, filter: &ListFilter) -> Result<ListPage, StoreError> {
        let mut cond = String::from("kind = ?");
        if filter.mesh.is_some() {
            cond.push_str(" AND mesh = ?");
        }
        if filter.name_contains.is_some() {
            cond.push_str(" AND instr(name, ?) > 0");
        }
        macro_rules! bind_cond {
            ($q:expr) => {{
                let mut q = $q.bind(filter.kind.name());
                if let Some(m) = &filter.mesh {
                    q = q.bind(m.as_str());
                }
                if let Some(n) = &filter.name_contains {
                    q = q.bind(n.as_str());
                }
                q
            }};
        }
        let in_sql = filter.labels.is_empty() && filter.tags.is_empty();
        if in_sql {
            let count_sql = format!("SELECT count(*) FROM resources WHERE {cond}");
            let total: i64 = bind_cond!(sqlx::query_scalar(AssertSqlSafe(count_sql)))
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::backend)?;
            let total = usize::try_from(total).unwrap_or(0);
            if filter.offset >= total || filter.limit == Some(0) {
                return Ok(ListPage {
                    items: Vec::new(),
                    total,
                });
            }
            let sql = format!(
                "SELECT {COLUMNS} FROM resources WHERE {cond} ORDER BY name, mesh LIMIT ? OFFSET ?"
            );
            let limit = filter
                .limit
                .map(|l| i64::try_from(l).unwrap_or(i64::MAX))
                .unwrap_or(-1);
            let rows = bind_cond!(sqlx::query(AssertSqlSafe(sql)))
                .bind(limit)
                .bind(i64::try_from(filter.offset).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::backend)?;
            let items = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
            return Ok(ListPage { items, total });
        }
        // Labels and Dataplane tags are filtered here, on decoded rows.
        let sql = format!("SELECT {COLUMNS} FROM resources WHERE {cond} ORDER BY name, mesh");
        let rows = bind_cond!(sqlx::query(AssertSqlSafe(sql)))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        let mut total = 0;
        let mut items = Vec::new();
        let limit = filter.limit.unwrap_or(usize::MAX);
        for row in &rows {
            let r = decode(row)?;
            if filter.matches(&r) {
                if total >= filter.offset && items.len() < limit {
                    items.push(r);
                }
                total += 1;
            }
        }
        Ok(ListPage { items, total })
    }

    async fn create(&self, key: &ResourceKey, write: Write) -> Result<Resource, StoreError> {
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        if current(&mut tx, key).await?.is_some() {
            return Err(StoreError::AlreadyExists(key.clone()));
        }
        if let Some(mesh) = key.mesh() {
            let exists =
                sqlx::query("SELECT 1 FROM resources WHERE kind = ? AND mesh = '' AND name = ?")
                    .bind(ResourceKind::Mesh.name())
                    .bind(mesh.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::backend)?;
            if exists.is_none() {
                return Err(StoreError::MeshNotFound(mesh.clone()));
            }
        }
        let t = crate::now();
        let sql = format!("INSERT INTO resources ({COLUMNS}) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?)");
        sqlx::query(AssertSqlSafe(sql))
            .bind(key.kind().name())
            .bind(mesh_col(key))
            .bind(key.name().as_str())
            .bind(to_json(&write.labels))
            .bind(to_json(&write.spec))
            .bind(write.status.as_ref().map(to_json))
            .bind(micros(&t))
            .bind(micros(&t))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)?;
        self.emit(ChangeOp::Created, key.clone(), 1);
        Ok(Resource {
            key: key.clone(),
            meta: ResourceMeta {
                labels: write.labels,
                version: 1,
                creation_time: t,
                modification_time: t,
            },
            spec: write.spec,
            status: write.status,
        })
    }

    async fn update(
        &self,
        key: &ResourceKey,
        write: Write,
        expected_version: Option<u64>,
    ) -> Result<Resource, StoreError> {
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        let (actual, created) = current(&mut tx, key)
            .await?
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        if let Some(expected) = expected_version
            && expected != actual
        {
            return Err(StoreError::Conflict {
                key: key.clone(),
                expected,
                actual,
            });
        }
        let version = actual + 1;
        let t = crate::now();
        sqlx::query(
            "UPDATE resources SET version = ?, labels = ?, spec = ?, status = ?, modification_time = ? \
             WHERE kind = ? AND mesh = ? AND name = ?",
        )
        .bind(version_to_sql(version))
        .bind(to_json(&write.labels))
        .bind(to_json(&write.spec))
        .bind(write.status.as_ref().map(to_json))
        .bind(micros(&t))
        .bind(key.kind().name())
        .bind(mesh_col(key))
        .bind(key.name().as_str())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)?;
        self.emit(ChangeOp::Updated, key.clone(), version);
        Ok(Resource {
            key: key.clone(),
            meta: ResourceMeta {
                labels: write.labels,
                version,
                creation_time: from_micros(key, created)?,
                modification_time: t,
            },
            spec: write.spec,
            status: write.status,
        })
    }

    async fn delete(
        &self,
        key: &ResourceKey,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        let (actual, _) = current(&mut tx, key)
            .await?
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        if let Some(expected) = expected_version
            && expected != actual
        {
            return Err(StoreError::Conflict {
                key: key.clone(),
                expected,
                actual,
            });
        }
        let mut events = Vec::new();
        if let Some(mesh) = cascading_mesh(key) {
            let rows = sqlx::query(
                "DELETE FROM resources WHERE mesh = ? RETURNING kind, mesh, name, version",
            )
            .bind(mesh)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
            for r in rows {
                let be = StoreError::backend;
                let child = decode_key(
                    r.try_get::<&str, _>(0).map_err(be)?,
                    r.try_get::<&str, _>(1).map_err(be)?,
                    r.try_get::<&str, _>(2).map_err(be)?,
                )?;
                events.push((child, version_from_sql(r.try_get(3).map_err(be)?)));
            }
            events.sort();
        }
        sqlx::query("DELETE FROM resources WHERE kind = ? AND mesh = ? AND name = ?")
            .bind(key.kind().name())
            .bind(mesh_col(key))
            .bind(key.name().as_str())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)?;
        for (child, version) in events {
            self.emit(ChangeOp::Deleted, child, version);
        }
        self.emit(ChangeOp::Deleted, key.clone(), actual);
        Ok(())
    }

    fn watch(&self) -> broadcast::Receiver<ChangeEvent> {
        self.feed.subscribe()
    }
}
