//! Group commit of single updates.
//!
//! ```text
//!  update() ──▶ queue ──▶ writer task: takes what is queued (each key once,
//!  update() ──▶   │        at most MAX_BATCH), one `UPDATE … FROM unnest(…)`
//!  update() ──▶   │        per batch, up to IN_FLIGHT batches at a time
//!                 ▼
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
//! A batch whose statement fails (a lost connection, a deadlock with a
//! concurrent batch over the same keys) is written again update by update, so
//! one caller's failure is never another's.

use crate::StoreError;
use crate::row::{mesh_col, version_from_sql, version_to_sql};
use chrono::{DateTime, Utc};
use kuma_model::ResourceKey;
use sqlx::Row;
use sqlx::postgres::PgPool;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Most updates one statement carries.
const MAX_BATCH: usize = 256;
/// Batches written at the same time (each on its own pooled connection).
const IN_FLIGHT: usize = 4;

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
pub(super) async fn run(pool: PgPool, mut rx: mpsc::UnboundedReceiver<Update>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    // Updates held back because their key was already in the batch being
    // formed; they go first next time, in the order they came.
    let mut held: VecDeque<Update> = VecDeque::new();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let first = match held.pop_front() {
            Some(u) => u,
            None => match rx.recv().await {
                Some(u) => u,
                None => return,
            },
        };
        let mut keys = HashSet::from([first.key.clone()]);
        let mut batch = vec![first];
        let mut earlier = std::mem::take(&mut held);
        while batch.len() < MAX_BATCH {
            let next = match earlier.pop_front() {
                Some(u) => u,
                None => match rx.try_recv() {
                    Ok(u) => u,
                    Err(_) => break,
                },
            };
            if keys.insert(next.key.clone()) {
                batch.push(next);
            } else {
                held.push_back(next);
            }
        }
        // What was held back was seen before what is still in `earlier`.
        held.extend(earlier);
        let pool = pool.clone();
        tokio::spawn(async move {
            let _permit = permit;
            write(&pool, batch).await;
        });
    }
}

/// Writes a batch (keys distinct) and answers every caller.
async fn write(pool: &PgPool, batch: Vec<Update>) {
    let together = match batch.len() {
        1 => None,
        // On an error nothing of the batch was written: each update alone.
        _ => statement(pool, &batch).await.ok(),
    };
    match together {
        Some(written) => {
            for (u, w) in batch.into_iter().zip(written) {
                // A caller that went away no longer needs its answer.
                let _ = u.reply.send(Ok(w));
            }
        }
        None => {
            for u in batch {
                let r = statement(pool, std::slice::from_ref(&u)).await;
                let _ = u.reply.send(r.map(|w| w.into_iter().next().flatten()));
            }
        }
    }
}

/// One statement for `batch`: what each update wrote, in batch order.
async fn statement(pool: &PgPool, batch: &[Update]) -> Result<Vec<Option<Written>>, StoreError> {
    let be = StoreError::backend;
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
        .await
        .map_err(be)?;
    let mut out = vec![None; n];
    for row in rows {
        let i: i32 = row.try_get(0).map_err(be)?;
        let slot = usize::try_from(i)
            .ok()
            .and_then(|i| out.get_mut(i))
            .ok_or_else(|| StoreError::Backend(format!("update returned row {i}").into()))?;
        *slot = Some(Written {
            version: version_from_sql(row.try_get(1).map_err(be)?),
            created: row.try_get(2).map_err(be)?,
        });
    }
    Ok(out)
}
