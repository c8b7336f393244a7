//! Group commit of single updates.
//!
//! ```text
//!  update() ──▶ queue ──▶ writer task: takes what is queued (each key once,
//!  update() ──▶   │        at most MAX_BATCH), one `UPDATE … FROM unnest(…)`
//!  update() ──▶   │        per batch, up to IN_FLIGHT batches at a time,
//!                 ▼        announces what it wrote, then answers
//!  each caller gets its own row back (new version, creation time), or
//!  nothing when its row is gone or its expected version is stale
//! ```
//!
//! Under concurrent writes (the REST API under load, many proxies' insights)
//! this is one round trip, one statement and one commit for many updates
//! instead of one each; a lone update is still written at once (no timer).
//! Each update keeps its own outcome: a stale version fails that update only,
//! because the version check is part of the row's match, not an error.
//!
//! Locks: a group's rows are listed in `(kind, name, mesh)` order, the order
//! [`super::lock_rows`] uses for batches, and PostgreSQL's plan locks them
//! in that order, so two groups in flight, or a group and a batch, do not
//! deadlock over the same keys. (Forcing the order with a `SELECT … FOR
//! UPDATE` step first cost 45 % more time per statement and PUT fell below
//! half of pgbench's rate.) Should PostgreSQL still report a deadlock, the
//! group is refused as a whole and its updates are written one by one.
//!
//! Failures: when the statement is refused (PostgreSQL reports an error for
//! it, say a value it cannot store), nothing of it was written and each
//! update is written alone, so one caller's bad row is never another's
//! error. When the connection or the pool fails, every caller of the group
//! gets that error at once. An update whose caller has gone away before its
//! group is formed is dropped unwritten.

use super::{Announcer, Change};
use crate::row::{mesh_col, version_from_sql, version_to_sql};
use crate::{ChangeOp, StoreError};
use chrono::{DateTime, Utc};
use kuma_model::ResourceKey;
use sqlx::Row;
use sqlx::postgres::PgPool;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Most updates one statement carries.
const MAX_BATCH: usize = 256;
/// Statements written at the same time (each on its own pooled connection).
const IN_FLIGHT: usize = 4;

/// `u` comes sorted by (kind, name, mesh): the nested loop PostgreSQL plans
/// for it (a few hundred keys against the primary key) locks the rows in
/// that order.
const UPDATE: &str = "UPDATE resources r SET version = r.version + 1, labels = u.labels::jsonb, \
     spec = u.spec::json, status = u.status::json, modification_time = u.mt \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
     $7::timestamptz[], $8::bigint[], $9::int4[]) \
     AS u(kind, mesh, name, labels, spec, status, mt, expected, i) \
     WHERE r.kind = u.kind AND r.mesh = u.mesh AND r.name = u.name \
     AND (u.expected IS NULL OR r.version = u.expected) \
     RETURNING u.i, r.version, r.creation_time";

/// One queued update: the row's new columns, serialized by the caller.
pub(super) struct Update {
    pub key: ResourceKey,
    pub labels: String,
    pub spec: String,
    pub status: Option<String>,
    pub at: DateTime<Utc>,
    pub expected: Option<u64>,
    pub reply: oneshot::Sender<Result<Option<Written>, StoreError>>,
}

/// What a successful update wrote.
#[derive(Clone, Copy, Debug)]
pub(super) struct Written {
    pub version: u64,
    pub created: DateTime<Utc>,
}

/// The writer task: runs until every sender is gone.
pub(super) async fn run(
    pool: PgPool,
    mut rx: mpsc::UnboundedReceiver<Update>,
    announcer: Announcer,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    // Updates held back because their key was already in the group being
    // formed; they are looked at first next time.
    let mut held: VecDeque<Update> = VecDeque::new();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut batch: Vec<Update> = Vec::new();
        let mut keys = HashSet::new();
        let mut earlier = std::mem::take(&mut held);
        while batch.len() < MAX_BATCH && held.len() < MAX_BATCH {
            let next = match earlier.pop_front() {
                Some(u) => u,
                None if batch.is_empty() => match rx.recv().await {
                    Some(u) => u,
                    None => return,
                },
                None => match rx.try_recv() {
                    Ok(u) => u,
                    Err(_) => break,
                },
            };
            if next.reply.is_closed() {
                continue;
            }
            if keys.insert(next.key.clone()) {
                batch.push(next);
            } else {
                held.push_back(next);
            }
        }
        held.extend(earlier);
        if batch.is_empty() {
            continue;
        }
        batch.sort_by(|a, b| lock_order(&a.key).cmp(&lock_order(&b.key)));
        let (pool, announcer) = (pool.clone(), announcer.clone());
        tokio::spawn(async move {
            let _permit = permit;
            write(&pool, batch, &announcer).await;
        });
    }
}

/// The order rows are locked in: `ORDER BY kind, name, mesh`, as `lock_rows`.
fn lock_order(key: &ResourceKey) -> (&str, &str, &str) {
    (key.kind().name(), key.name().as_str(), mesh_col(key))
}

/// Writes a group (keys distinct), announces what it wrote, answers every caller.
async fn write(pool: &PgPool, batch: Vec<Update>, announcer: &Announcer) {
    if batch.len() > 1 {
        match statement(pool, &batch).await {
            Ok(written) => return finish(batch.into_iter().zip(written).collect(), announcer),
            // Refused by PostgreSQL: nothing of it was written; each alone below.
            Err(sqlx::Error::Database(_)) => {}
            Err(e) => {
                for u in batch {
                    let _ = u.reply.send(Err(StoreError::Backend(e.to_string().into())));
                }
                return;
            }
        }
    }
    for u in batch {
        match statement(pool, std::slice::from_ref(&u)).await {
            Ok(w) => {
                let w = w.into_iter().next().flatten();
                finish(vec![(u, w)], announcer);
            }
            Err(e) => {
                let _ = u.reply.send(Err(StoreError::backend(e)));
            }
        }
    }
}

fn finish(done: Vec<(Update, Option<Written>)>, announcer: &Announcer) {
    let changes: Vec<Change> = done
        .iter()
        .filter_map(|(u, w)| {
            w.map(|w| Change {
                op: ChangeOp::Updated,
                key: u.key.clone(),
                version: w.version,
                born: w.created.timestamp_micros(),
            })
        })
        .collect();
    if !changes.is_empty() {
        announcer.announce(changes);
    }
    for (u, w) in done {
        // A caller that went away no longer needs its answer.
        let _ = u.reply.send(Ok(w));
    }
}

/// One statement for `batch`: what each update wrote, in batch order.
async fn statement(pool: &PgPool, batch: &[Update]) -> Result<Vec<Option<Written>>, sqlx::Error> {
    let n = batch.len();
    let mut kinds = Vec::with_capacity(n);
    let mut meshes = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    let mut specs = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut expected = Vec::with_capacity(n);
    let mut index = Vec::with_capacity(n);
    for (i, u) in batch.iter().enumerate() {
        kinds.push(u.key.kind().name());
        meshes.push(mesh_col(&u.key));
        names.push(u.key.name().as_str());
        labels.push(u.labels.as_str());
        specs.push(u.spec.as_str());
        statuses.push(u.status.as_deref());
        times.push(u.at);
        expected.push(u.expected.map(version_to_sql));
        index.push(i32::try_from(i).unwrap_or(i32::MAX));
    }
    let rows = sqlx::query(UPDATE)
        .bind(kinds)
        .bind(meshes)
        .bind(names)
        .bind(labels)
        .bind(specs)
        .bind(statuses)
        .bind(times)
        .bind(expected)
        .bind(index)
        .fetch_all(pool)
        .await?;
    let mut out = vec![None; n];
    for row in rows {
        let i: i32 = row.try_get(0)?;
        let slot = usize::try_from(i)
            .ok()
            .and_then(|i| out.get_mut(i))
            .ok_or_else(|| sqlx::Error::Protocol(format!("update returned row {i}")))?;
        *slot = Some(Written {
            version: version_from_sql(row.try_get(1)?),
            created: row.try_get(2)?,
        });
    }
    Ok(out)
}
