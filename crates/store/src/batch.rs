//! Planning a batch write for the SQL backends.
//!
//! ```text
//!  ops ──▶ keys() ──▶ backend reads (and locks) those rows ──▶ plan()
//!          plan: every op decided in order on that snapshot, in memory
//!            ├─ results (per op), rows to insert / update / delete,
//!            │  meshes whose contents go (cascade)
//!            └─ events, with a placeholder per cascade
//!  backend: cascade DELETEs, DELETE, UPDATE, INSERT (a few set-based
//!  statements, one transaction) ──▶ commit ──▶ Plan::finish ──▶ feed
//! ```
//!
//! The snapshot holds every key an op names plus the Mesh of every
//! mesh-scoped one, so each decision (exists? version? mesh there?) is made
//! on what the transaction itself read. Rows in a deleted mesh that no op
//! names are only known from the cascade DELETE's RETURNING; their events
//! are filled in by [`Plan::finish`].

use crate::{Applied, BatchOp, BatchResults, ChangeOp, Expect, StoreError};
use chrono::{DateTime, Utc};
use kuma_model::{Resource, ResourceKey, ResourceKind, ResourceMeta, ResourceName};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What the planner needs of a stored row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stored {
    pub version: u64,
    pub created: DateTime<Utc>,
}

/// One change to announce after commit (`born` tells incarnations apart).
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub op: ChangeOp,
    pub key: ResourceKey,
    pub version: u64,
    pub born: DateTime<Utc>,
}

/// The Mesh key `key` depends on: `None` for global kinds, `Some(None)` for a
/// mesh name no Mesh can have (so the mesh never exists).
fn mesh_of(key: &ResourceKey) -> Option<Option<ResourceKey>> {
    key.mesh().map(|m| {
        ResourceName::new(m.as_str())
            .ok()
            .and_then(|n| ResourceKey::global(ResourceKind::Mesh, n).ok())
    })
}

/// The keys to read before planning: `(named by an op, only needed as a Mesh)`,
/// each once. Backends lock the first for update, the second for share.
pub(crate) fn keys(ops: &[BatchOp]) -> (Vec<ResourceKey>, Vec<ResourceKey>) {
    let mut seen = HashSet::with_capacity(ops.len());
    let mut items = Vec::with_capacity(ops.len());
    for op in ops {
        if seen.insert(op.key()) {
            items.push(op.key().clone());
        }
    }
    let mut meshes = Vec::new();
    let mut seen_mesh = HashSet::new();
    for op in ops {
        if let Some(Some(m)) = mesh_of(op.key())
            && !seen.contains(&m)
            && seen_mesh.insert(m.clone())
        {
            meshes.push(m);
        }
    }
    (items, meshes)
}

struct Live {
    version: u64,
    created: DateTime<Utc>,
    /// The op whose result holds the content to store, if written in this batch.
    written: Option<usize>,
}

struct Slot {
    live: Option<Live>,
    /// Whether the row is in the table when the writes of the plan start
    /// (stored before, not removed by a cascade of this batch).
    in_db: bool,
}

enum Pending {
    One(Event),
    /// The contents of a deleted mesh: those the plan tracks, sorted; the
    /// backend adds the untracked ones the database removed.
    Cascade {
        mesh: String,
        tracked: Vec<Event>,
    },
}

/// The decided batch.
pub(crate) struct Plan {
    results: BatchResults,
    /// Meshes whose stored contents are deleted (run first).
    pub cascades: Vec<String>,
    /// Stored rows that are gone after the batch (and not removed by a cascade).
    pub deletes: Vec<ResourceKey>,
    /// Ops whose resulting resource replaces a row in the table.
    pub updates: Vec<usize>,
    /// Ops whose resulting resource is a new row.
    pub inserts: Vec<usize>,
    events: Vec<Pending>,
    tracked: HashSet<ResourceKey>,
}

impl Plan {
    /// The resource op `i` stored (only for indices in `updates` / `inserts`).
    pub(crate) fn row(&self, i: usize) -> &Resource {
        match &self.results[i] {
            Ok(Applied::Created(r)) | Ok(Applied::Updated(r)) => r,
            _ => unreachable!("rows are planned only for successful puts"),
        }
    }

    /// Whether nothing is to be written.
    pub(crate) fn is_noop(&self) -> bool {
        self.cascades.is_empty()
            && self.deletes.is_empty()
            && self.updates.is_empty()
            && self.inserts.is_empty()
    }

    /// The per-op results and the events to announce, given what each cascade
    /// DELETE removed (`(mesh, removed rows)`).
    pub(crate) fn finish(self, cascaded: Vec<(String, Vec<Event>)>) -> (BatchResults, Vec<Event>) {
        let mut cascaded: HashMap<String, Vec<Event>> = cascaded.into_iter().collect();
        let mut out = Vec::with_capacity(self.events.len());
        for p in self.events {
            match p {
                Pending::One(e) => out.push(e),
                Pending::Cascade { mesh, mut tracked } => {
                    if let Some(rows) = cascaded.remove(&mesh) {
                        tracked.extend(rows.into_iter().filter(|e| !self.tracked.contains(&e.key)));
                        tracked.sort_by(|a, b| a.key.cmp(&b.key));
                    }
                    out.extend(tracked);
                }
            }
        }
        (self.results, out)
    }
}

/// Decides `ops` in order against `stored` (the rows read for [`keys`]),
/// stamping writes with `t`.
pub(crate) fn plan(
    ops: Vec<BatchOp>,
    stored: HashMap<ResourceKey, Stored>,
    keys: (Vec<ResourceKey>, Vec<ResourceKey>),
    t: DateTime<Utc>,
) -> Plan {
    let mut slots: HashMap<ResourceKey, Slot> = keys
        .0
        .into_iter()
        .chain(keys.1)
        .map(|k| {
            let live = stored.get(&k).map(|s| Live {
                version: s.version,
                created: s.created,
                written: None,
            });
            let in_db = live.is_some();
            (k, Slot { live, in_db })
        })
        .collect();
    let mut results = Vec::with_capacity(ops.len());
    let mut events = Vec::with_capacity(ops.len());
    let mut cascades = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        let result = match op {
            BatchOp::Put { key, write, expect } => {
                let mesh_live = match mesh_of(&key) {
                    None => true,
                    Some(None) => false,
                    Some(Some(m)) => slots.get(&m).is_some_and(|s| s.live.is_some()),
                };
                let slot = slots.get_mut(&key).expect("every op key is tracked");
                match (&mut slot.live, expect) {
                    (Some(_), Expect::Absent) => Err(StoreError::AlreadyExists(key)),
                    (Some(l), Expect::Version(v)) if v != l.version => Err(StoreError::Conflict {
                        key,
                        expected: v,
                        actual: l.version,
                    }),
                    (Some(l), _) => {
                        l.version += 1;
                        l.written = Some(i);
                        events.push(Pending::One(Event {
                            op: ChangeOp::Updated,
                            key: key.clone(),
                            version: l.version,
                            born: l.created,
                        }));
                        Ok(Applied::Updated(Arc::new(resource(
                            key, write, l.version, l.created, t,
                        ))))
                    }
                    (None, Expect::Version(_)) => Err(StoreError::NotFound(key)),
                    (None, _) if !mesh_live => Err(StoreError::MeshNotFound(
                        key.mesh().cloned().expect("mesh-scoped key"),
                    )),
                    (live @ None, _) => {
                        *live = Some(Live {
                            version: 1,
                            created: t,
                            written: Some(i),
                        });
                        events.push(Pending::One(Event {
                            op: ChangeOp::Created,
                            key: key.clone(),
                            version: 1,
                            born: t,
                        }));
                        Ok(Applied::Created(Arc::new(resource(key, write, 1, t, t))))
                    }
                }
            }
            BatchOp::Delete {
                key,
                expected_version,
            } => {
                let current = slots
                    .get(&key)
                    .expect("every op key is tracked")
                    .live
                    .as_ref()
                    .map(|l| (l.version, l.created));
                match (current, expected_version) {
                    (None, _) => Err(StoreError::NotFound(key)),
                    (Some((actual, _)), Some(expected)) if expected != actual => {
                        Err(StoreError::Conflict {
                            key,
                            expected,
                            actual,
                        })
                    }
                    (Some((version, created)), _) => {
                        if key.kind() == ResourceKind::Mesh {
                            let mesh = key.name().as_str();
                            let mut tracked = Vec::new();
                            for (k, s) in slots.iter_mut() {
                                if k.mesh().map(|m| m.as_str()) != Some(mesh) {
                                    continue;
                                }
                                if let Some(l) = s.live.take() {
                                    tracked.push(Event {
                                        op: ChangeOp::Deleted,
                                        key: k.clone(),
                                        version: l.version,
                                        born: l.created,
                                    });
                                }
                                s.in_db = false;
                            }
                            tracked.sort_by(|a, b| a.key.cmp(&b.key));
                            if !cascades.iter().any(|m| m == mesh) {
                                cascades.push(mesh.to_string());
                            }
                            events.push(Pending::Cascade {
                                mesh: mesh.to_string(),
                                tracked,
                            });
                        }
                        slots.get_mut(&key).expect("tracked").live = None;
                        events.push(Pending::One(Event {
                            op: ChangeOp::Deleted,
                            key: key.clone(),
                            version,
                            born: created,
                        }));
                        Ok(Applied::Deleted { key, version })
                    }
                }
            }
        };
        results.push(result);
    }
    let mut deletes = Vec::new();
    let mut updates = Vec::new();
    let mut inserts = Vec::new();
    let mut tracked = HashSet::with_capacity(slots.len());
    for (key, slot) in slots {
        match (&slot.live, slot.in_db) {
            (
                Some(Live {
                    written: Some(i), ..
                }),
                true,
            ) => updates.push(*i),
            (
                Some(Live {
                    written: Some(i), ..
                }),
                false,
            ) => inserts.push(*i),
            (None, true) => deletes.push(key.clone()),
            _ => {}
        }
        tracked.insert(key);
    }
    updates.sort_unstable();
    inserts.sort_unstable();
    deletes.sort();
    Plan {
        results,
        cascades,
        deletes,
        updates,
        inserts,
        events,
        tracked,
    }
}

fn resource(
    key: ResourceKey,
    write: crate::Write,
    version: u64,
    created: DateTime<Utc>,
    t: DateTime<Utc>,
) -> Resource {
    Resource {
        key,
        meta: ResourceMeta {
            labels: write.labels,
            version,
            creation_time: created,
            modification_time: t,
        },
        spec: write.spec,
        status: write.status,
    }
}
