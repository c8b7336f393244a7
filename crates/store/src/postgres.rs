//! The PostgreSQL store: several control planes share one database.
//!
//! ```text
//!  kuma-cp A ──write──▶ resources   A's watch() ◀── change ──┐ after commit
//!                         table      A's notifier task ◀─────┘
//!                                       │ NOTIFY kuma_resource_changes, batched
//!                                       ▼
//!                          kuma-cp B's listener task ──▶ B's watch() receivers
//!  each instance also catches up with the table every few seconds ([`feed`])
//! ```
//!
//! The schema is created by `kuma-cp migrate up` ([`migrate_up`]); opening a
//! store only checks that the schema is the one this binary was built for.

use crate::batch::{self, Stored};
use crate::row::{
    cascading_mesh, decode_key, decode_labels, mesh_col, version_from_sql, version_to_sql,
};
use crate::{
    BatchOp, BatchResults, ChangeEvent, ChangeOp, FEED_CAPACITY, ListFilter, ListPage, OpenError,
    ResourceStore, StoreError, Write,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use feed::{Change, Feed, Truth};
use kuma_model::{Resource, ResourceKey, ResourceKind, ResourceMeta};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{AssertSqlSafe, Row};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

mod feed;
mod group;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The NOTIFY channel every instance announces its changes on (see [`feed`]).
const CHANNEL: &str = "kuma_resource_changes";

const COLUMNS: &str = "kind, mesh, name, version, labels::text AS labels, spec::text AS spec, \
                       status::text AS status, creation_time, modification_time";

// ---------------------------------------------------------------- config

/// Kuma's `store.postgres` settings (`KUMA_STORE_POSTGRES_*`), with Kuma's
/// defaults and YAML keys. Pool settings that only Go's pgx driver has
/// (`driverName`, `maxIdleConnections`, `healthCheckInterval`,
/// `maxConnectionLifetimeJitter`, `readReplica`, `maxListQueryElements`) are
/// accepted in YAML and ignored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PostgresConfig {
    /// `KUMA_STORE_POSTGRES_HOST`
    pub host: String,
    /// `KUMA_STORE_POSTGRES_PORT`
    pub port: u16,
    /// `KUMA_STORE_POSTGRES_USER`
    pub user: String,
    /// `KUMA_STORE_POSTGRES_PASSWORD`; never printed by `Debug`.
    pub password: String,
    /// `KUMA_STORE_POSTGRES_DB_NAME`
    pub db_name: String,
    /// `KUMA_STORE_POSTGRES_CONNECTION_TIMEOUT`, in seconds.
    pub connection_timeout: u64,
    /// `KUMA_STORE_POSTGRES_MAX_OPEN_CONNECTIONS`; 0 means unlimited.
    pub max_open_connections: u32,
    /// `KUMA_STORE_POSTGRES_MIN_OPEN_CONNECTIONS`
    pub min_open_connections: u32,
    /// `KUMA_STORE_POSTGRES_MAX_CONNECTION_LIFETIME`, e.g. `1h`.
    #[serde(with = "go_duration")]
    pub max_connection_lifetime: Duration,
    /// `KUMA_STORE_POSTGRES_MAX_CONNECTION_IDLE_TIME`, e.g. `30m`.
    #[serde(with = "go_duration")]
    pub max_connection_idle_time: Duration,
    pub tls: PostgresTlsConfig,
    /// `KUMA_STORE_POSTGRES_TOLERATE_NEWER_DB_VERSIONS`: accept a schema newer
    /// than this binary (blue/green upgrades; the newer migrations must be
    /// backwards compatible).
    #[serde(rename = "tolerateNewerDBVersions")]
    pub tolerate_newer_db_versions: bool,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            host: "127.0.0.1".into(),
            port: 15432,
            user: "kuma".into(),
            password: "kuma".into(),
            db_name: "kuma".into(),
            connection_timeout: 5,
            max_open_connections: 50,
            min_open_connections: 0,
            max_connection_lifetime: Duration::from_secs(3600),
            max_connection_idle_time: Duration::from_secs(30 * 60),
            tls: PostgresTlsConfig::default(),
            tolerate_newer_db_versions: false,
        }
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"***")
            .field("db_name", &self.db_name)
            .field("connection_timeout", &self.connection_timeout)
            .field("max_open_connections", &self.max_open_connections)
            .field("min_open_connections", &self.min_open_connections)
            .field("max_connection_lifetime", &self.max_connection_lifetime)
            .field("max_connection_idle_time", &self.max_connection_idle_time)
            .field("tls", &self.tls)
            .field(
                "tolerate_newer_db_versions",
                &self.tolerate_newer_db_versions,
            )
            .finish()
    }
}

/// `store.postgres.tls` (`KUMA_STORE_POSTGRES_TLS_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PostgresTlsConfig {
    /// `KUMA_STORE_POSTGRES_TLS_MODE`
    pub mode: TlsMode,
    /// `KUMA_STORE_POSTGRES_TLS_CERT_PATH`: client certificate.
    pub cert_path: Option<PathBuf>,
    /// `KUMA_STORE_POSTGRES_TLS_KEY_PATH`: client key.
    pub key_path: Option<PathBuf>,
    /// `KUMA_STORE_POSTGRES_TLS_ROOT_CERT_PATH` (YAML `caPath`).
    pub ca_path: Option<PathBuf>,
}

/// Kuma's TLS modes and the libpq `sslmode` each means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TlsMode {
    /// `disable`
    #[default]
    Disable,
    /// TLS without verification (`require`).
    VerifyNone,
    /// Verify the server certificate's CA (`verify-ca`).
    VerifyCa,
    /// Verify the CA and the host name (`verify-full`).
    VerifyFull,
}

impl PostgresConfig {
    /// Checks what Kuma checks before connecting.
    pub fn validate(&self) -> Result<(), OpenError> {
        let bad = |m: &str| Err(OpenError::Config(m.to_string()));
        if self.host.is_empty() {
            return bad("KUMA_STORE_POSTGRES_HOST must not be empty");
        }
        if self.user.is_empty() {
            return bad("KUMA_STORE_POSTGRES_USER must not be empty");
        }
        if self.db_name.is_empty() {
            return bad("KUMA_STORE_POSTGRES_DB_NAME must not be empty");
        }
        if self.max_open_connections != 0 && self.min_open_connections > self.max_open_connections {
            return bad(
                "KUMA_STORE_POSTGRES_MIN_OPEN_CONNECTIONS must not exceed KUMA_STORE_POSTGRES_MAX_OPEN_CONNECTIONS",
            );
        }
        let tls = &self.tls;
        if matches!(tls.mode, TlsMode::VerifyCa | TlsMode::VerifyFull) && tls.ca_path.is_none() {
            return bad(
                "KUMA_STORE_POSTGRES_TLS_ROOT_CERT_PATH is required with TLS mode verifyCa or verifyFull",
            );
        }
        if tls.cert_path.is_some() != tls.key_path.is_some() {
            return bad(
                "KUMA_STORE_POSTGRES_TLS_CERT_PATH and KUMA_STORE_POSTGRES_TLS_KEY_PATH go together",
            );
        }
        Ok(())
    }

    fn connect_options(&self) -> PgConnectOptions {
        let mut o = PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .password(&self.password)
            .database(&self.db_name)
            .application_name("kuma-cp")
            .ssl_mode(match self.tls.mode {
                TlsMode::Disable => PgSslMode::Disable,
                TlsMode::VerifyNone => PgSslMode::Require,
                TlsMode::VerifyCa => PgSslMode::VerifyCa,
                TlsMode::VerifyFull => PgSslMode::VerifyFull,
            });
        if let Some(ca) = &self.tls.ca_path {
            o = o.ssl_root_cert(ca);
        }
        if let (Some(cert), Some(key)) = (&self.tls.cert_path, &self.tls.key_path) {
            o = o.ssl_client_cert(cert).ssl_client_key(key);
        }
        o
    }

    async fn pool(&self, max: Option<u32>) -> Result<PgPool, OpenError> {
        self.validate()?;
        let max_open = match self.max_open_connections {
            0 => 10_000,
            n => n,
        };
        PgPoolOptions::new()
            .max_connections(max.unwrap_or(max_open))
            .min_connections(self.min_open_connections.min(max.unwrap_or(max_open)))
            .acquire_timeout(Duration::from_secs(self.connection_timeout.max(1)))
            .max_lifetime(Some(self.max_connection_lifetime).filter(|d| !d.is_zero()))
            .idle_timeout(Some(self.max_connection_idle_time).filter(|d| !d.is_zero()))
            .connect_with(self.connect_options())
            .await
            .map_err(OpenError::Connect)
    }
}

/// Go-style durations (`90s`, `1h30m`, `500ms`) as Kuma's YAML writes them.
mod go_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?}, expected e.g. 30s, 5m, 1h30m"
            ))
        })
    }

    pub fn parse(s: &str) -> Option<Duration> {
        if s == "0" {
            return Some(Duration::ZERO);
        }
        let mut rest = s.trim();
        let mut total = 0f64;
        if rest.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let num_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let n: f64 = rest[..num_end].parse().ok()?;
            rest = &rest[num_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_end] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return None,
            };
            rest = &rest[unit_end..];
            total += n * scale;
        }
        Some(Duration::from_secs_f64(total))
    }
}

// ---------------------------------------------------------------- schema

/// Where the schema stands after [`migrate_up`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchemaVersions {
    /// Before: 0 for an empty database.
    pub before: i64,
    pub after: i64,
}

/// The newest migration this binary carries.
pub fn required_schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The applied schema version (0 when none), or an error when a migration was
/// left half-applied.
async fn schema_version(pool: &PgPool) -> Result<i64, OpenError> {
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await
        .map_err(OpenError::Connect)?;
    if table.is_none() {
        return Ok(0);
    }
    let dirty: Option<i64> =
        sqlx::query_scalar("SELECT min(version) FROM _sqlx_migrations WHERE NOT success")
            .fetch_one(pool)
            .await
            .map_err(OpenError::Connect)?;
    if let Some(v) = dirty {
        return Err(OpenError::Migrate(sqlx::migrate::MigrateError::Dirty(v)));
    }
    let v: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .map_err(OpenError::Connect)?;
    Ok(v.unwrap_or(0))
}

/// Brings the database schema up to this binary's version (`kuma-cp migrate up`).
/// Safe to run from several instances at once (the migrator takes an advisory lock).
pub async fn migrate_up(config: &PostgresConfig) -> Result<SchemaVersions, OpenError> {
    let pool = config.pool(Some(2)).await?;
    let before = schema_version(&pool).await?;
    let required = required_schema_version();
    if before > required {
        pool.close().await;
        return if config.tolerate_newer_db_versions {
            Ok(SchemaVersions {
                before,
                after: before,
            })
        } else {
            Err(OpenError::SchemaTooNew {
                current: before,
                required,
            })
        };
    }
    let result = MIGRATOR.run(&pool).await.map_err(OpenError::Migrate);
    pool.close().await;
    result?;
    Ok(SchemaVersions {
        before,
        after: required,
    })
}

// ---------------------------------------------------------------- store

pub struct PostgresStore {
    pool: PgPool,
    announcer: Announcer,
    listener: JoinHandle<()>,
    catch_up: JoinHandle<()>,
    /// Single updates go through the group-commit writer ([`group`]).
    updates: mpsc::UnboundedSender<group::Update>,
    updater: JoinHandle<()>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.catch_up.abort();
        self.updater.abort();
    }
}

impl PostgresStore {
    /// Connects, checks the schema version and starts listening for changes.
    /// Does not migrate: run [`migrate_up`] (`kuma-cp migrate up`) first.
    pub async fn open(config: &PostgresConfig) -> Result<Self, OpenError> {
        let pool = config.pool(None).await?;
        let current = schema_version(&pool).await?;
        let required = required_schema_version();
        if current < required {
            return Err(OpenError::SchemaOutdated { current, required });
        }
        if current > required && !config.tolerate_newer_db_versions {
            return Err(OpenError::SchemaTooNew { current, required });
        }
        let mut listener = PgListener::connect_with(&pool)
            .await
            .map_err(OpenError::Connect)?;
        listener.listen(CHANNEL).await.map_err(OpenError::Connect)?;
        // Listening before the snapshot: a change in between shows up in both, never in neither.
        let rows = snapshot(&pool).await.map_err(|e| match e {
            StoreError::Backend(src) => {
                OpenError::Config(format!("cannot read the resources table: {src}"))
            }
            other => OpenError::Config(other.to_string()),
        })?;
        let feed = Arc::new(Feed::new(broadcast::channel(FEED_CAPACITY).0, rows));
        // Tells this instance's notifications from the others'.
        let src = std::hash::BuildHasher::hash_one(
            &std::hash::RandomState::new(),
            (std::process::id(), std::time::SystemTime::now()),
        );
        let (notify, rx) = mpsc::unbounded_channel();
        tokio::spawn(feed::run_notifier(config.connect_options(), src, rx));
        let asked = Arc::new(Notify::new());
        let listener = tokio::spawn(feed::run_listener(
            listener,
            feed.clone(),
            src,
            asked.clone(),
        ));
        let catch_up = tokio::spawn(feed::run_catch_up(pool.clone(), feed.clone(), asked));
        let (updates, queued) = mpsc::unbounded_channel();
        let announcer = Announcer { feed, notify };
        let updater = tokio::spawn(group::run(pool.clone(), queued, announcer.clone()));
        Ok(PostgresStore {
            pool,
            announcer,
            listener,
            catch_up,
            updates,
            updater,
        })
    }

    /// Closes the connections and stops the change feed.
    pub async fn close(&self) {
        self.listener.abort();
        self.catch_up.abort();
        self.updater.abort();
        self.pool.close().await;
    }

    fn announce(&self, changes: Vec<Change>) {
        self.announcer.announce(changes);
    }
}

/// Announces committed changes: here at once, to other instances through
/// the notifier task (which ends once every announcer is dropped, after
/// sending what is queued).
#[derive(Clone)]
struct Announcer {
    feed: Arc<Feed>,
    notify: mpsc::UnboundedSender<Change>,
}

impl Announcer {
    fn announce(&self, changes: Vec<Change>) {
        self.feed.publish(&changes);
        for c in changes {
            // Gone only if the notifier panicked; the others' catch-up covers it.
            let _ = self.notify.send(c);
        }
    }
}

/// Every row's key, incarnation (creation time) and version.
async fn snapshot(pool: &PgPool) -> Result<Truth, StoreError> {
    let rows = sqlx::query("SELECT kind, mesh, name, version, creation_time FROM resources")
        .fetch_all(pool)
        .await
        .map_err(StoreError::backend)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let be = StoreError::backend;
        let key = decode_key(
            r.try_get::<&str, _>(0).map_err(be)?,
            r.try_get::<&str, _>(1).map_err(be)?,
            r.try_get::<&str, _>(2).map_err(be)?,
        )?;
        let born = r.try_get::<DateTime<Utc>, _>(4).map_err(be)?;
        out.push((
            key,
            born.timestamp_micros(),
            version_from_sql(r.try_get(3).map_err(be)?),
        ));
    }
    Ok(out)
}

fn json_col(
    row: &PgRow,
    key: &ResourceKey,
    col: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    match row
        .try_get::<Option<&str>, _>(col)
        .map_err(StoreError::backend)?
    {
        None => Ok(None),
        Some(s) => serde_json::from_str(s)
            .map(Some)
            .map_err(|e| crate::row::corrupt_json(key, e)),
    }
}

fn decode(row: &PgRow) -> Result<Resource, StoreError> {
    let be = StoreError::backend;
    let key = decode_key(
        row.try_get::<&str, _>("kind").map_err(be)?,
        row.try_get::<&str, _>("mesh").map_err(be)?,
        row.try_get::<&str, _>("name").map_err(be)?,
    )?;
    let labels = decode_labels(&key, json_col(row, &key, "labels")?.unwrap_or_default())?;
    let meta = ResourceMeta {
        labels,
        version: version_from_sql(row.try_get("version").map_err(be)?),
        creation_time: row
            .try_get::<DateTime<Utc>, _>("creation_time")
            .map_err(be)?,
        modification_time: row
            .try_get::<DateTime<Utc>, _>("modification_time")
            .map_err(be)?,
    };
    let spec = json_col(row, &key, "spec")?.unwrap_or_default();
    let status = json_col(row, &key, "status")?;
    Ok(Resource {
        key,
        meta,
        spec,
        status,
    })
}

fn to_json(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

impl PostgresStore {
    /// The stored version of `key`, if any (to explain a failed conditional write).
    async fn version_of(&self, key: &ResourceKey) -> Result<Option<u64>, StoreError> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM resources WHERE kind = $1 AND mesh = $2 AND name = $3",
        )
        .bind(key.kind().name())
        .bind(mesh_col(key))
        .bind(key.name().as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        Ok(v.map(version_from_sql))
    }

    async fn missed_write(&self, key: &ResourceKey, expected: Option<u64>) -> StoreError {
        match (self.version_of(key).await, expected) {
            (Err(e), _) => e,
            (Ok(None), _) => StoreError::NotFound(key.clone()),
            (Ok(Some(actual)), Some(expected)) => StoreError::Conflict {
                key: key.clone(),
                expected,
                actual,
            },
            // Unconditional write that found no row, yet a row exists now: it
            // was created concurrently. Report what the caller saw.
            (Ok(Some(_)), None) => StoreError::NotFound(key.clone()),
        }
    }
}

/// Column arrays of a key list, for `unnest($1::text[], $2::text[], $3::text[])`.
fn key_arrays<'a>(
    keys: impl Iterator<Item = &'a ResourceKey>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    for k in keys {
        out.0.push(k.kind().name().to_string());
        out.1.push(mesh_col(k).to_string());
        out.2.push(k.name().as_str().to_string());
    }
    out
}

/// Reads (and locks) `keys` in key order: `FOR UPDATE` or `FOR SHARE`.
async fn lock_rows(
    tx: &mut sqlx::PgConnection,
    keys: &[ResourceKey],
    mode: &str,
    into: &mut HashMap<ResourceKey, Stored>,
) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    let be = StoreError::backend;
    let (kinds, meshes, names) = key_arrays(keys.iter());
    let sql = format!(
        "SELECT r.kind, r.mesh, r.name, r.version, r.creation_time FROM resources r \
         JOIN unnest($1::text[], $2::text[], $3::text[]) AS u(kind, mesh, name) \
         ON r.kind = u.kind AND r.mesh = u.mesh AND r.name = u.name \
         ORDER BY r.kind, r.name, r.mesh FOR {mode} OF r"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(kinds)
        .bind(meshes)
        .bind(names)
        .fetch_all(&mut *tx)
        .await
        .map_err(be)?;
    for r in rows {
        let key = decode_key(
            r.try_get::<&str, _>(0).map_err(be)?,
            r.try_get::<&str, _>(1).map_err(be)?,
            r.try_get::<&str, _>(2).map_err(be)?,
        )?;
        let stored = Stored {
            version: version_from_sql(r.try_get(3).map_err(be)?),
            created: r.try_get(4).map_err(be)?,
        };
        into.insert(key, stored);
    }
    Ok(())
}

/// Why a batch transaction is rolled back and run again.
enum BatchTry {
    /// A row the snapshot did not have was created meanwhile.
    Raced,
    Failed(StoreError),
}

impl From<StoreError> for BatchTry {
    fn from(e: StoreError) -> Self {
        BatchTry::Failed(e)
    }
}

impl PostgresStore {
    /// One attempt at a batch: read and lock what the ops name, plan, write
    /// with a few set-based statements, commit.
    async fn try_batch(
        &self,
        ops: Vec<BatchOp>,
    ) -> Result<(BatchResults, Vec<batch::Event>), BatchTry> {
        let be = StoreError::backend;
        let mut tx = self.pool.begin().await.map_err(be)?;
        let keys = batch::keys(&ops);
        let mut stored = HashMap::with_capacity(keys.0.len());
        // Rows named by an op are locked for update; meshes only written into
        // are locked for share, as a single create does (a delete of the mesh waits).
        lock_rows(&mut tx, &keys.0, "UPDATE", &mut stored).await?;
        lock_rows(&mut tx, &keys.1, "SHARE", &mut stored).await?;
        let plan = batch::plan(ops, stored, keys, crate::now());
        if plan.is_noop() {
            return Ok(plan.finish(Vec::new()));
        }
        let mut cascaded = Vec::new();
        for mesh in &plan.cascades {
            let rows = sqlx::query(
                "DELETE FROM resources WHERE mesh = $1 RETURNING kind, name, version, creation_time",
            )
            .bind(mesh)
            .fetch_all(&mut *tx)
            .await
            .map_err(be)?;
            let mut gone = Vec::with_capacity(rows.len());
            for r in rows {
                let key = decode_key(
                    r.try_get::<&str, _>(0).map_err(be)?,
                    mesh,
                    r.try_get::<&str, _>(1).map_err(be)?,
                )?;
                gone.push(batch::Event {
                    op: ChangeOp::Deleted,
                    key,
                    version: version_from_sql(r.try_get(2).map_err(be)?),
                    born: r.try_get(3).map_err(be)?,
                });
            }
            cascaded.push((mesh.clone(), gone));
        }
        if !plan.deletes.is_empty() {
            let (kinds, meshes, names) = key_arrays(plan.deletes.iter());
            sqlx::query(
                "DELETE FROM resources r USING unnest($1::text[], $2::text[], $3::text[]) AS u(kind, mesh, name) \
                 WHERE r.kind = u.kind AND r.mesh = u.mesh AND r.name = u.name",
            )
            .bind(kinds)
            .bind(meshes)
            .bind(names)
            .execute(&mut *tx)
            .await
            .map_err(be)?;
        }
        let columns = |idx: &[usize]| {
            let mut c = RowColumns::default();
            for i in idx {
                c.push(plan.row(*i));
            }
            c
        };
        const UNNEST: &str = "unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
             $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[]) \
             AS u(kind, mesh, name, version, labels, spec, status, ct, mt)";
        if !plan.updates.is_empty() {
            let sql = format!(
                "UPDATE resources r SET version = u.version, labels = u.labels::jsonb, \
                 spec = u.spec::json, status = u.status::json, creation_time = u.ct, \
                 modification_time = u.mt FROM {UNNEST} \
                 WHERE r.kind = u.kind AND r.mesh = u.mesh AND r.name = u.name"
            );
            columns(&plan.updates)
                .bind(sqlx::query(AssertSqlSafe(sql)))
                .execute(&mut *tx)
                .await
                .map_err(be)?;
        }
        if !plan.inserts.is_empty() {
            let sql = format!(
                "INSERT INTO resources (kind, mesh, name, version, labels, spec, status, creation_time, modification_time) \
                 SELECT kind, mesh, name, version, labels::jsonb, spec::json, status::json, ct, mt FROM {UNNEST} \
                 ON CONFLICT DO NOTHING"
            );
            let n = columns(&plan.inserts)
                .bind(sqlx::query(AssertSqlSafe(sql)))
                .execute(&mut *tx)
                .await
                .map_err(be)?
                .rows_affected();
            if n != plan.inserts.len() as u64 {
                // Dropping the transaction rolls it back.
                return Err(BatchTry::Raced);
            }
        }
        tx.commit().await.map_err(be)?;
        Ok(plan.finish(cascaded))
    }
}

/// Resources as column arrays, for the `UNNEST` of a batch write.
#[derive(Default)]
struct RowColumns {
    kinds: Vec<String>,
    meshes: Vec<String>,
    names: Vec<String>,
    versions: Vec<i64>,
    labels: Vec<String>,
    specs: Vec<String>,
    statuses: Vec<Option<String>>,
    created: Vec<DateTime<Utc>>,
    modified: Vec<DateTime<Utc>>,
}

impl RowColumns {
    fn push(&mut self, r: &Resource) {
        self.kinds.push(r.key.kind().name().to_string());
        self.meshes.push(mesh_col(&r.key).to_string());
        self.names.push(r.key.name().as_str().to_string());
        self.versions.push(version_to_sql(r.meta.version));
        self.labels.push(to_json(&r.meta.labels));
        self.specs.push(to_json(&r.spec));
        self.statuses.push(r.status.as_ref().map(to_json));
        self.created.push(r.meta.creation_time);
        self.modified.push(r.meta.modification_time);
    }

    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(self.kinds)
            .bind(self.meshes)
            .bind(self.names)
            .bind(self.versions)
            .bind(self.labels)
            .bind(self.specs)
            .bind(self.statuses)
            .bind(self.created)
            .bind(self.modified)
    }
}

#[async_trait]
impl ResourceStore for PostgresStore {
    /// One transaction of a few set-based statements; retried from the start
    /// when a row it found absent was created concurrently.
    async fn apply_batch(&self, ops: Vec<BatchOp>) -> Result<BatchResults, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.try_batch(ops.clone()).await {
                Ok((results, events)) => {
                    self.announce(
                        events
                            .into_iter()
                            .map(|e| Change {
                                op: e.op,
                                key: e.key,
                                version: e.version,
                                born: e.born.timestamp_micros(),
                            })
                            .collect(),
                    );
                    return Ok(results);
                }
                Err(BatchTry::Raced) if attempts < 5 => continue,
                Err(BatchTry::Raced) => {
                    return Err(StoreError::Backend(
                        "batch kept racing with concurrent creates".into(),
                    ));
                }
                Err(BatchTry::Failed(e)) => return Err(e),
            }
        }
    }

    async fn get(&self, key: &ResourceKey) -> Result<Resource, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM resources WHERE kind = $1 AND mesh = $2 AND name = $3");
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
        let mut cond = String::from("kind = $1");
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        if filter.mesh.is_some() {
            cond.push_str(&format!(" AND mesh = ${}", next()));
        }
        if filter.name_contains.is_some() {
            cond.push_str(&format!(" AND strpos(name, ${}) > 0", next()));
        }
        if !filter.labels.is_empty() {
            cond.push_str(&format!(" AND labels @> ${}::jsonb", next()));
        }
        macro_rules! bind_cond {
            ($q:expr) => {{
                let mut q = $q.bind(filter.kind.name());
                if let Some(m) = &filter.mesh {
                    q = q.bind(m.as_str());
                }
                if let Some(s) = &filter.name_contains {
                    q = q.bind(s.as_str());
                }
                if !filter.labels.is_empty() {
                    q = q.bind(to_json(&filter.labels));
                }
                q
            }};
        }
        if filter.tags.is_empty() {
            if filter.limit == Some(0) {
                let sql = format!("SELECT count(*) FROM resources WHERE {cond}");
                let total: i64 = bind_cond!(sqlx::query_scalar(AssertSqlSafe(sql)))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(StoreError::backend)?;
                return Ok(ListPage {
                    items: Vec::new(),
                    total: usize::try_from(total).unwrap_or(0),
                });
            }
            let (l, o) = (next(), next());
            let sql = format!(
                "SELECT {COLUMNS}, count(*) OVER () AS total FROM resources WHERE {cond} \
                 ORDER BY name, mesh LIMIT ${l} OFFSET ${o}"
            );
            let rows = bind_cond!(sqlx::query(AssertSqlSafe(sql)))
                .bind(filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX)))
                .bind(i64::try_from(filter.offset).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::backend)?;
            let total = match rows.first() {
                Some(r) => r.try_get::<i64, _>("total").map_err(StoreError::backend)?,
                None if filter.offset == 0 => 0,
                // Paged past the end: the window count has no row to ride on.
                None => {
                    let sql = format!("SELECT count(*) FROM resources WHERE {cond}");
                    bind_cond!(sqlx::query_scalar(AssertSqlSafe(sql)))
                        .fetch_one(&self.pool)
                        .await
                        .map_err(StoreError::backend)?
                }
            };
            let items = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
            return Ok(ListPage {
                items,
                total: usize::try_from(total).unwrap_or(0),
            });
        }
        // Dataplane tags live inside the spec: filter decoded rows here.
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
        let t = crate::now();
        let insert = "INSERT INTO resources (kind, mesh, name, version, labels, spec, status, creation_time, modification_time) \
                      VALUES ($1, $2, $3, 1, $4::jsonb, $5::json, $6::json, $7, $7) ON CONFLICT DO NOTHING";
        let q = sqlx::query(insert)
            .bind(key.kind().name())
            .bind(mesh_col(key))
            .bind(key.name().as_str())
            .bind(to_json(&write.labels))
            .bind(to_json(&write.spec))
            .bind(write.status.as_ref().map(to_json))
            .bind(t);
        let inserted = match key.mesh() {
            None => q
                .execute(&self.pool)
                .await
                .map_err(StoreError::backend)?
                .rows_affected(),
            Some(mesh) => {
                let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
                // Holds off a concurrent delete of the mesh until this commits.
                let exists = sqlx::query(
                    "SELECT 1 FROM resources WHERE kind = $1 AND mesh = '' AND name = $2 FOR SHARE",
                )
                .bind(ResourceKind::Mesh.name())
                .bind(mesh.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
                if exists.is_none() {
                    return Err(StoreError::MeshNotFound(mesh.clone()));
                }
                let n = q
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::backend)?
                    .rows_affected();
                tx.commit().await.map_err(StoreError::backend)?;
                n
            }
        };
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(key.clone()));
        }
        self.announce(vec![Change {
            op: ChangeOp::Created,
            key: key.clone(),
            version: 1,
            born: t.timestamp_micros(),
        }]);
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
        let t = crate::now();
        let (reply, answer) = oneshot::channel();
        let update = group::Update {
            key: key.clone(),
            labels: to_json(&write.labels),
            spec: to_json(&write.spec),
            status: write.status.as_ref().map(to_json),
            at: t,
            expected: expected_version,
            reply,
        };
        let stopped = || StoreError::Backend("the PostgreSQL update writer stopped".into());
        self.updates.send(update).map_err(|_| stopped())?;
        // The writer has announced the change when it answers.
        let Some(written) = answer.await.map_err(|_| stopped())?? else {
            return Err(self.missed_write(key, expected_version).await);
        };
        let (version, creation_time) = (written.version, written.created);
        Ok(Resource {
            key: key.clone(),
            meta: ResourceMeta {
                labels: write.labels,
                version,
                creation_time,
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
        let delete_one = "DELETE FROM resources WHERE kind = $1 AND mesh = $2 AND name = $3 \
                          AND ($4::bigint IS NULL OR version = $4) RETURNING version, creation_time";
        let q = sqlx::query(delete_one)
            .bind(key.kind().name())
            .bind(mesh_col(key))
            .bind(key.name().as_str())
            .bind(expected_version.map(version_to_sql));
        let gone = |row: &PgRow, key: ResourceKey, v: usize, t: usize| {
            let be = StoreError::backend;
            Ok::<_, StoreError>(Change {
                op: ChangeOp::Deleted,
                key,
                version: version_from_sql(row.try_get(v).map_err(be)?),
                born: row
                    .try_get::<DateTime<Utc>, _>(t)
                    .map_err(be)?
                    .timestamp_micros(),
            })
        };
        let changes = match cascading_mesh(key) {
            None => q
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::backend)?
                .map(|row| gone(&row, key.clone(), 0, 1))
                .transpose()?
                .into_iter()
                .collect::<Vec<_>>(),
            Some(mesh) => {
                let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
                // Lock the mesh row first: creates in the mesh wait, then see it gone.
                let version: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM resources WHERE kind = $1 AND mesh = '' AND name = $2 FOR UPDATE")
                        .bind(ResourceKind::Mesh.name())
                        .bind(mesh)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(StoreError::backend)?;
                let actual = version
                    .map(version_from_sql)
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
                // Contents first, so the feed announces the mesh's deletion last.
                let contents = sqlx::query(
                    "DELETE FROM resources WHERE mesh = $1 RETURNING kind, name, version, creation_time",
                )
                .bind(mesh)
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
                let mut changes = Vec::with_capacity(contents.len() + 1);
                for row in &contents {
                    let k = decode_key(
                        row.try_get::<&str, _>(0).map_err(StoreError::backend)?,
                        mesh,
                        row.try_get::<&str, _>(1).map_err(StoreError::backend)?,
                    )?;
                    changes.push(gone(row, k, 2, 3)?);
                }
                if let Some(row) = q
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::backend)?
                {
                    changes.push(gone(&row, key.clone(), 0, 1)?);
                }
                tx.commit().await.map_err(StoreError::backend)?;
                changes
            }
        };
        if changes.is_empty() {
            return Err(self.missed_write(key, expected_version).await);
        }
        self.announce(changes);
        Ok(())
    }

    fn watch(&self) -> broadcast::Receiver<ChangeEvent> {
        self.announcer.feed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let p = go_duration::parse;
        assert_eq!(p("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(p("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(p("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(p("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(p("0"), Some(Duration::ZERO));
        assert_eq!(p("10"), None);
        assert_eq!(p("5d"), None);
        assert_eq!(p(""), None);
    }

    #[test]
    fn config_reads_kuma_yaml_keys_and_hides_the_password() {
        let cfg: PostgresConfig = serde_json::from_value(serde_json::json!({
            "host": "db.internal", "port": 5432, "user": "u", "password": "s3cret", "dbName": "mesh",
            "maxOpenConnections": 10, "maxConnectionLifetime": "2h", "driverName": "pgx",
            "tls": {"mode": "verifyFull", "caPath": "/ca.pem"}, "tolerateNewerDBVersions": true
        }))
        .unwrap();
        assert_eq!(cfg.db_name, "mesh");
        assert_eq!(cfg.max_connection_lifetime, Duration::from_secs(7200));
        assert_eq!(
            cfg.max_connection_idle_time,
            Duration::from_secs(1800),
            "defaults fill the rest"
        );
        assert_eq!(cfg.tls.mode, TlsMode::VerifyFull);
        assert!(cfg.tolerate_newer_db_versions);
        assert!(cfg.validate().is_ok());
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");

        let d = PostgresConfig::default();
        assert_eq!(
            (d.host.as_str(), d.port, d.user.as_str(), d.db_name.as_str()),
            ("127.0.0.1", 15432, "kuma", "kuma")
        );
        assert_eq!(d.max_open_connections, 50);
        let bad = PostgresConfig {
            tls: PostgresTlsConfig {
                mode: TlsMode::VerifyCa,
                ..Default::default()
            },
            ..d
        };
        assert!(matches!(bad.validate(), Err(OpenError::Config(_))));
    }
}
