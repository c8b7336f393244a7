//! The store conformance suite: what a user of any backend may rely on.
//!
//! Every case creates its own uniquely named meshes and resources and removes
//! them at the end, so all cases can run one after the other on one store
//! (even one shared with other tests, or reopened from a previous run).
//!
//! ```ignore
//! let store: Arc<dyn ResourceStore> = Arc::new(MemoryStore::new());
//! kuma_store::testing::conformance::run_all(store).await;
//! ```

use crate::{
    Applied, BatchOp, ChangeEvent, ChangeOp, Expect, ListFilter, ResourceStore, StoreError, Write,
};
use kuma_model::{MeshName, Resource, ResourceKey, ResourceKind, ResourceName};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};

/// How long a change-feed event may take to arrive.
pub const FEED_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs every case in order, printing each name to stderr; panics on the first failure.
pub async fn run_all(store: Arc<dyn ResourceStore>) {
    macro_rules! cases {
        ($($case:ident),* $(,)?) => {$(
            eprintln!("conformance: {}", stringify!($case));
            $case(store.clone()).await;
        )*};
    }
    cases!(
        crud_global,
        crud_mesh_scoped,
        not_found_and_already_exists,
        conflict_on_stale_version,
        mesh_not_found,
        mesh_cascade_delete,
        list_paging_and_total,
        list_filters,
        list_cross_mesh_order,
        timestamps,
        labels_and_status_round_trip,
        change_feed,
        change_feed_cascade,
        concurrent_updates_one_wins,
        concurrent_creates_one_wins,
        concurrent_updates_keep_their_own_outcome,
        batch_ops,
        batch_mesh_cascade,
        batch_all_or_nothing_visible,
    );
}

// ---------------------------------------------------------------- builders

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A name no other case, run or process has used (within reason): `prefix-<run>-<n>`.
pub fn unique(prefix: &str) -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!("{:x}{:x}", nanos & 0xffff_ffff, std::process::id() & 0xffff)
    });
    format!("{prefix}-{run}-{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

pub fn mk_name(s: &str) -> ResourceName {
    ResourceName::new(s).expect("valid test name")
}

pub fn mk_mesh_key(mesh: &str) -> ResourceKey {
    ResourceKey::global(ResourceKind::Mesh, mk_name(mesh)).expect("Mesh is global")
}

pub fn mk_key(kind: ResourceKind, mesh: &str, name: &str) -> ResourceKey {
    ResourceKey::in_mesh(
        kind,
        MeshName::new(mesh).expect("valid mesh"),
        mk_name(name),
    )
    .expect("mesh-scoped kind")
}

pub fn mk_global_key(kind: ResourceKind, name: &str) -> ResourceKey {
    ResourceKey::global(kind, mk_name(name)).expect("global kind")
}

pub fn mk_write(spec: Value) -> Write {
    Write {
        labels: BTreeMap::new(),
        spec,
        status: None,
    }
}

pub fn mk_labelled(spec: Value, labels: &[(&str, &str)]) -> Write {
    Write {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        spec,
        status: None,
    }
}

pub fn mk_dataplane(service: &str, version: &str) -> Write {
    mk_write(json!({
        "networking": {
            "address": "10.0.0.1",
            "inbound": [
                {"port": 8080, "tags": {"kuma.io/service": "admin", "version": "v0"}},
                {"port": 80, "tags": {"kuma.io/service": service, "version": version}}
            ]
        }
    }))
}

/// Creates a mesh with a unique name built from `prefix`; returns its name.
pub async fn mk_mesh(store: &dyn ResourceStore, prefix: &str) -> String {
    let mesh = unique(prefix);
    store
        .create(&mk_mesh_key(&mesh), mk_write(json!({})))
        .await
        .expect("create mesh");
    mesh
}

async fn drop_mesh(store: &dyn ResourceStore, mesh: &str) {
    store
        .delete(&mk_mesh_key(mesh), None)
        .await
        .expect("delete mesh");
}

fn names(items: &[Resource]) -> Vec<String> {
    items.iter().map(|r| r.key.name().to_string()).collect()
}

fn timeout_spec() -> Value {
    json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "20s"}}]})
}

// ---------------------------------------------------------------- cases

/// Create, read, update, delete a global-scoped resource.
pub async fn crud_global(store: Arc<dyn ResourceStore>) {
    let key = mk_global_key(ResourceKind::Zone, &unique("zone"));
    let created = store
        .create(&key, mk_write(json!({"enabled": true})))
        .await
        .expect("create");
    assert_eq!(created.key, key);
    assert_eq!(created.meta.version, 1);
    assert_eq!(created.spec, json!({"enabled": true}));
    assert_eq!(store.get(&key).await.expect("get"), created);

    let updated = store
        .update(&key, mk_write(json!({"enabled": false})), None)
        .await
        .expect("update");
    assert_eq!(updated.meta.version, 2);
    assert_eq!(store.get(&key).await.expect("get after update"), updated);

    store.delete(&key, None).await.expect("delete");
    assert!(matches!(store.get(&key).await, Err(StoreError::NotFound(k)) if k == key));
}

/// Create, read, update, delete a mesh-scoped resource.
pub async fn crud_mesh_scoped(store: Arc<dyn ResourceStore>) {
    let mesh = mk_mesh(&*store, "crud").await;
    let key = mk_key(ResourceKind::MeshTimeout, &mesh, "t1");
    let created = store
        .create(&key, mk_write(timeout_spec()))
        .await
        .expect("create");
    assert_eq!(created.meta.version, 1);
    assert_eq!(store.get(&key).await.expect("get"), created);

    let spec2 = json!({"targetRef": {"kind": "Mesh"}, "to": []});
    let updated = store
        .update(&key, mk_write(spec2.clone()), Some(1))
        .await
        .expect("update");
    assert_eq!(updated.spec, spec2);
    assert_eq!(updated.meta.version, 2);
    assert_eq!(store.get(&key).await.expect("get"), updated);

    // The same name in another mesh is another resource.
    let other_mesh = mk_mesh(&*store, "crud-other").await;
    let other = mk_key(ResourceKind::MeshTimeout, &other_mesh, "t1");
    store
        .create(&other, mk_write(json!({})))
        .await
        .expect("create in other mesh");
    assert_eq!(store.get(&key).await.expect("get").spec, spec2);

    store.delete(&key, Some(2)).await.expect("delete");
    assert!(matches!(
        store.get(&key).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store.get(&other).await.is_ok());
    drop_mesh(&*store, &mesh).await;
    drop_mesh(&*store, &other_mesh).await;
}

pub async fn not_found_and_already_exists(store: Arc<dyn ResourceStore>) {
    let mesh = mk_mesh(&*store, "nf").await;
    let key = mk_key(ResourceKind::MeshRetry, &mesh, "r");
    assert!(matches!(store.get(&key).await, Err(StoreError::NotFound(k)) if k == key));
    assert!(
        matches!(store.update(&key, mk_write(json!({})), None).await, Err(StoreError::NotFound(k)) if k == key)
    );
    assert!(matches!(
        store.update(&key, mk_write(json!({})), Some(1)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(store.delete(&key, None).await, Err(StoreError::NotFound(k)) if k == key));

    store
        .create(&key, mk_write(json!({"a": 1})))
        .await
        .expect("create");
    let err = store
        .create(&key, mk_write(json!({"a": 2})))
        .await
        .expect_err("second create");
    assert!(
        matches!(&err, StoreError::AlreadyExists(k) if *k == key),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    // The failed create changed nothing.
    let r = store.get(&key).await.expect("get");
    assert_eq!((r.meta.version, r.spec), (1, json!({"a": 1})));

    let gkey = mk_global_key(ResourceKind::GlobalSecret, &unique("gs"));
    store
        .create(&gkey, mk_write(json!({"data": "c2VjcmV0"})))
        .await
        .expect("create global");
    assert!(matches!(
        store.create(&gkey, mk_write(json!({}))).await,
        Err(StoreError::AlreadyExists(_))
    ));
    store.delete(&gkey, None).await.expect("delete global");
    assert!(matches!(
        store.delete(&gkey, None).await,
        Err(StoreError::NotFound(_))
    ));
    drop_mesh(&*store, &mesh).await;
}

/// A write carrying a stale version fails with Conflict and loses nothing.
pub async fn conflict_on_stale_version(store: Arc<dyn ResourceStore>) {
    let mesh = mk_mesh(&*store, "conflict").await;
    let key = mk_key(ResourceKind::MeshTimeout, &mesh, "t");
    store
        .create(&key, mk_write(json!({"n": 1})))
        .await
        .expect("create");
    let winner = store
        .update(&key, mk_write(json!({"n": 2})), Some(1))
        .await
        .expect("first update");

    let err = store
        .update(&key, mk_write(json!({"n": 3})), Some(1))
        .await
        .expect_err("stale update");
    match &err {
        StoreError::Conflict {
            key: k,
            expected,
            actual,
        } => assert_eq!((k, *expected, *actual), (&key, 1, 2)),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(
        store.get(&key).await.expect("get"),
        winner,
        "the winner's write is kept"
    );

    let err = store.delete(&key, Some(1)).await.expect_err("stale delete");
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.get(&key).await.expect("still there"), winner);

    // A stale delete of a mesh deletes nothing in it.
    let mesh_key = mk_mesh_key(&mesh);
    let err = store
        .delete(&mesh_key, Some(7))
        .await
        .expect_err("stale mesh delete");
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 7,
                actual: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(store.get(&key).await.is_ok());

    store
        .delete(&key, Some(2))
        .await
        .expect("delete with the current version");
    drop_mesh(&*store, &mesh).await;
}

pub async fn mesh_not_found(store: Arc<dyn ResourceStore>) {
    let missing = unique("missing");
    let key = mk_key(ResourceKind::MeshTimeout, &missing, "t");
    let err = store
        .create(&key, mk_write(json!({})))
        .await
        .expect_err("create in missing mesh");
    assert!(
        matches!(&err, StoreError::MeshNotFound(m) if m.as_str() == missing),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(matches!(
        store.get(&key).await,
        Err(StoreError::NotFound(_))
    ));

    // A deleted mesh is missing too.
    let mesh = mk_mesh(&*store, "gone").await;
    drop_mesh(&*store, &mesh).await;
    let key = mk_key(ResourceKind::Dataplane, &mesh, "dp");
    assert!(matches!(
        store.create(&key, mk_dataplane("web", "v1")).await,
        Err(StoreError::MeshNotFound(_))
    ));
}

/// Deleting a Mesh deletes everything in it, and nothing elsewhere.
pub async fn mesh_cascade_delete(store: Arc<dyn ResourceStore>) {
    let mesh = mk_mesh(&*store, "cascade").await;
    let other = mk_mesh(&*store, "cascade-keep").await;
    let inside = [
        mk_key(ResourceKind::MeshTimeout, &mesh, "t"),
        mk_key(ResourceKind::Dataplane, &mesh, "dp"),
        mk_key(ResourceKind::Secret, &mesh, "s"),
        mk_key(ResourceKind::MeshService, &mesh, "svc"),
    ];
    for k in &inside {
        store
            .create(k, mk_write(json!({})))
            .await
            .expect("create inside");
    }
    let kept = mk_key(ResourceKind::MeshTimeout, &other, "t");
    store
        .create(&kept, mk_write(json!({})))
        .await
        .expect("create in other mesh");
    let zone = mk_global_key(ResourceKind::Zone, &unique("z"));
    store
        .create(&zone, mk_write(json!({})))
        .await
        .expect("create global");

    drop_mesh(&*store, &mesh).await;
    for k in &inside {
        assert!(
            matches!(store.get(k).await, Err(StoreError::NotFound(_))),
            "{k} survived its mesh"
        );
    }
    let page = store
        .list(&ListFilter::in_mesh(
            ResourceKind::MeshTimeout,
            MeshName::new(&*mesh).unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(page.total, 0);
    assert!(store.get(&kept).await.is_ok(), "other mesh untouched");
    assert!(store.get(&zone).await.is_ok(), "global resources untouched");

    // Recreating the mesh does not bring anything back.
    store
        .create(&mk_mesh_key(&mesh), mk_write(json!({})))
        .await
        .expect("recreate mesh");
    for k in &inside {
        assert!(matches!(store.get(k).await, Err(StoreError::NotFound(_))));
    }
    drop_mesh(&*store, &mesh).await;
    drop_mesh(&*store, &other).await;
    store.delete(&zone, None).await.expect("delete zone");
}

pub async fn list_paging_and_total(store: Arc<dyn ResourceStore>) {
    let mesh = mk_mesh(&*store, "paging").await;
    let m = MeshName::new(&*mesh).unwrap();
    for n in ["echo", "alpha", "delta", "charlie", "bravo"] {
        store
            .create(
                &mk_key(ResourceKind::MeshRetry, &mesh, n),
                mk_write(json!({"n": n})),
            )
            .await
            .expect("create");
    }
    let all = store
        .list(&ListFilter::in_mesh(ResourceKind::MeshRetry, m.clone()))
        .await
        .unwrap();
    assert_eq!(
        names(&all.items),
        ["alpha", "bravo", "charlie", "delta", "echo"]
    );
    assert_eq!(all.total, 5);
    assert_eq!(all.items[0].spec, json!({"n": "alpha"}));

    let page = |offset, limit| ListFilter {
        offset,
        limit,
        ..ListFilter::in_mesh(ResourceKind::MeshRetry, m.clone())
    };
    let p = store.list(&page(1, Some(2))).await.unwrap();
    assert_eq!(
        (names(&p.items), p.total),
        (vec!["bravo".to_string(), "charlie".to_string()], 5)
    );
    let p = store.list(&page(4, Some(10))).await.unwrap();
    assert_eq!((names(&p.items), p.total), (vec!["echo".to_string()], 5));
    let p = store.list(&page(5, Some(2))).await.unwrap();
    assert_eq!((p.items.len(), p.total), (0, 5));
    let p = store.list(&page(50, None)).await.unwrap();
    assert_eq!((p.items.len(), p.total), (0, 5));
    let p = store.list(&page(0, Some(0))).await.unwrap();
    assert_eq!((p.items.len(), p.total), (0, 5));

    // Other kinds in the mesh are not counted.
    store
        .create(
            &mk_key(ResourceKind::MeshTimeout, &mesh, "alpha"),
            mk_write(json!({})),
        )
        .await
        .unwrap();
    assert_eq!(store.list(&page(0, None)).await.unwrap().total, 5);
    // An empty mesh gives nothing.
    let empty = mk_mesh(&*store, "paging-empty").await;
    let p = store
        .list(&ListFilter::in_mesh(
            ResourceKind::MeshRetry,
            MeshName::new(&*empty).unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!((p.items.len(), p.total), (0, 0));
    drop_mesh(&*store, &mesh).await;
    drop_mesh(&*store, &empty).await;
}

pub async fn list_filters(store: Arc<dyn ResourceStore>) {
    let mesh = mk_mesh(&*store, "filters").await;
    let m = MeshName::new(&*mesh).unwrap();
    let dps = [
        ("web-1", "web", "v1"),
        ("web-2", "web", "v2"),
        ("api-1", "api", "v1"),
        ("db-1", "db", "v1"),
    ];
    for (name, svc, version) in dps {
        let mut w = mk_dataplane(svc, version);
        w.labels.insert(
            "team".into(),
            if svc == "db" {
                "data".into()
            } else {
                "apps".into()
            },
        );
        w.labels.insert("kuma.io/zone".into(), "east".into());
        store
            .create(&mk_key(ResourceKind::Dataplane, &mesh, name), w)
            .await
            .expect("create dp");
    }
    let base = ListFilter::in_mesh(ResourceKind::Dataplane, m.clone());

    let f = ListFilter {
        name_contains: Some("web".into()),
        ..base.clone()
    };
    let p = store.list(&f).await.unwrap();
    assert_eq!(
        (names(&p.items), p.total),
        (vec!["web-1".into(), "web-2".into()], 2)
    );
    let f = ListFilter {
        name_contains: Some("-1".into()),
        ..base.clone()
    };
    assert_eq!(
        names(&store.list(&f).await.unwrap().items),
        ["api-1", "db-1", "web-1"]
    );

    let f = ListFilter {
        labels: [("team".to_string(), "apps".to_string())].into(),
        ..base.clone()
    };
    let p = store.list(&f).await.unwrap();
    assert_eq!(
        (names(&p.items), p.total),
        (vec!["api-1".into(), "web-1".into(), "web-2".into()], 3)
    );
    let f = ListFilter {
        labels: [
            ("team".to_string(), "apps".to_string()),
            ("kuma.io/zone".to_string(), "west".to_string()),
        ]
        .into(),
        ..base.clone()
    };
    assert_eq!(store.list(&f).await.unwrap().total, 0);

    let f = ListFilter {
        tags: [("kuma.io/service".to_string(), "web".to_string())].into(),
        ..base.clone()
    };
    assert_eq!(
        names(&store.list(&f).await.unwrap().items),
        ["web-1", "web-2"]
    );
    // All tags must be on the same inbound.
    let f = ListFilter {
        tags: [
            ("kuma.io/service".to_string(), "web".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]
        .into(),
        ..base.clone()
    };
    assert_eq!(names(&store.list(&f).await.unwrap().items), ["web-1"]);
    let f = ListFilter {
        tags: [
            ("kuma.io/service".to_string(), "admin".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]
        .into(),
        ..base.clone()
    };
    assert_eq!(store.list(&f).await.unwrap().total, 0);

    // Paging applies after filtering; total counts every match.
    let f = ListFilter {
        labels: [("team".to_string(), "apps".to_string())].into(),
        tags: [("version".to_string(), "v1".to_string())].into(),
        offset: 1,
        limit: Some(5),
        ..base.clone()
    };
    let p = store.list(&f).await.unwrap();
    assert_eq!((names(&p.items), p.total), (vec!["web-1".into()], 2));
    let f = ListFilter {
        name_contains: Some("1".into()),
        offset: 1,
        limit: Some(1),
        ..base.clone()
    };
    let p = store.list(&f).await.unwrap();
    assert_eq!((names(&p.items), p.total), (vec!["db-1".into()], 3));
    drop_mesh(&*store, &mesh).await;
}

/// Lists across meshes are ordered by name, then mesh.
pub async fn list_cross_mesh_order(store: Arc<dyn ResourceStore>) {
    let token = unique("xm");
    let (ma, mb) = (format!("{token}-a"), format!("{token}-b"));
    for m in [&mb, &ma] {
        store
            .create(&mk_mesh_key(m), mk_write(json!({})))
            .await
            .expect("mesh");
    }
    for (m, n) in [
        (&mb, "shared"),
        (&ma, "shared"),
        (&mb, "alone"),
        (&ma, "zeta"),
    ] {
        store
            .create(
                &mk_key(ResourceKind::MeshHealthCheck, m, &format!("{n}-{token}")),
                mk_write(json!({})),
            )
            .await
            .unwrap();
    }
    let f = ListFilter {
        name_contains: Some(token.clone()),
        ..ListFilter::all(ResourceKind::MeshHealthCheck)
    };
    let p = store.list(&f).await.unwrap();
    let got: Vec<(String, String)> = p
        .items
        .iter()
        .map(|r| (r.key.name().to_string(), r.key.mesh().unwrap().to_string()))
        .collect();
    let want = vec![
        (format!("alone-{token}"), mb.clone()),
        (format!("shared-{token}"), ma.clone()),
        (format!("shared-{token}"), mb.clone()),
        (format!("zeta-{token}"), ma.clone()),
    ];
    assert_eq!(got, want);
    assert_eq!(p.total, 4);
    let p = store
        .list(&ListFilter {
            offset: 2,
            limit: Some(1),
            ..f.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        (p.items[0].key.mesh().unwrap().as_str(), p.total),
        (mb.as_str(), 4)
    );

    // Global kinds list the same way.
    let zones: Vec<String> = ["b", "a", "c"]
        .iter()
        .map(|s| format!("{token}-{s}"))
        .collect();
    for z in &zones {
        store
            .create(&mk_global_key(ResourceKind::Zone, z), mk_write(json!({})))
            .await
            .unwrap();
    }
    let f = ListFilter {
        name_contains: Some(token.clone()),
        ..ListFilter::all(ResourceKind::Zone)
    };
    let p = store.list(&f).await.unwrap();
    assert_eq!(
        names(&p.items),
        [
            format!("{token}-a"),
            format!("{token}-b"),
            format!("{token}-c")
        ]
    );
    for z in &zones {
        store
            .delete(&mk_global_key(ResourceKind::Zone, z), None)
            .await
            .unwrap();
    }
    drop_mesh(&*store, &ma).await;
    drop_mesh(&*store, &mb).await;
}

/// Creation time is kept across updates; modification time moves forward.
pub async fn timestamps(store: Arc<dyn ResourceStore>) {
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let key = mk_global_key(ResourceKind::HostnameGenerator, &unique("hg"));
    let created = store
        .create(
            &key,
            mk_write(json!({"template": "{{ .DisplayName }}.mesh"})),
        )
        .await
        .unwrap();
    assert_eq!(created.meta.creation_time, created.meta.modification_time);
    assert!(created.meta.creation_time > before);
    assert!(created.meta.creation_time < chrono::Utc::now() + chrono::Duration::seconds(5));

    tokio::time::sleep(Duration::from_millis(5)).await;
    let updated = store
        .update(&key, mk_write(json!({"template": "x"})), Some(1))
        .await
        .unwrap();
    assert_eq!(updated.meta.creation_time, created.meta.creation_time);
    assert!(updated.meta.modification_time > created.meta.modification_time);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = store
        .update(&key, mk_write(json!({"template": "y"})), None)
        .await
        .unwrap();
    assert_eq!(again.meta.version, 3);
    assert!(again.meta.modification_time > updated.meta.modification_time);
    // What the write returned is exactly what is stored.
    assert_eq!(store.get(&key).await.unwrap(), again);
    let filter = ListFilter {
        name_contains: Some(key.name().to_string()),
        ..ListFilter::all(key.kind())
    };
    assert_eq!(store.list(&filter).await.unwrap().items, vec![again]);
    store.delete(&key, None).await.unwrap();
}

pub async fn labels_and_status_round_trip(store: Arc<dyn ResourceStore>) {
    let mesh = mk_mesh(&*store, "rt").await;
    let key = mk_key(ResourceKind::MeshService, &mesh, "backend");
    let spec = json!({
        "selector": {"dataplaneTags": {"app": "backend", "k8s.kuma.io/namespace": "kuma-demo"}},
        "ports": [{"port": 80, "targetPort": 8080, "appProtocol": "http", "weight": 0.25}],
        "zeta": null, "alpha": "ünïcødé ✓ \"quoted\" \\ back", "big": 9007199254740993u64, "neg": -12
    });
    let status = json!({"addresses": [{"hostname": "backend.mesh", "origin": "HostnameGenerator"}], "vips": [{"ip": "241.0.0.1"}]});
    let labels = [
        ("kuma.io/origin", "zone"),
        ("kuma.io/zone", "east-1"),
        ("team", "a.b_c-d"),
    ];
    let write = Write {
        status: Some(status.clone()),
        ..mk_labelled(spec.clone(), &labels)
    };
    let created = store.create(&key, write).await.unwrap();
    let got = store.get(&key).await.unwrap();
    assert_eq!(got, created);
    assert_eq!(got.spec, spec);
    assert_eq!(got.status, Some(status));
    assert_eq!(
        got.meta.labels.get("team").map(String::as_str),
        Some("a.b_c-d")
    );
    assert_eq!(got.meta.labels.len(), 3);
    // Key order of the spec is preserved, as clients wrote it.
    let keys: Vec<&String> = got.spec.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["selector", "ports", "zeta", "alpha", "big", "neg"]);

    // An update replaces labels and status (removing both here).
    let updated = store
        .update(&key, mk_write(json!({"ports": []})), Some(1))
        .await
        .unwrap();
    assert!(updated.meta.labels.is_empty());
    assert_eq!(updated.status, None);
    assert_eq!(store.get(&key).await.unwrap(), updated);
    drop_mesh(&*store, &mesh).await;
}

/// Waits for events about `keys` and returns them in arrival order, ignoring
/// events about other keys, until `count` have arrived.
pub async fn collect_events(
    rx: &mut broadcast::Receiver<ChangeEvent>,
    keys: &HashSet<ResourceKey>,
    count: usize,
) -> Vec<ChangeEvent> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + FEED_TIMEOUT;
    while got.len() < count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) if keys.contains(&ev.key) => got.push(ev),
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(n))) => panic!("change feed lagged by {n} events"),
            Ok(Err(RecvError::Closed)) => panic!("change feed closed"),
            Err(_) => panic!("waited {FEED_TIMEOUT:?} for {count} events, got {got:?}"),
        }
    }
    got
}

pub async fn change_feed(store: Arc<dyn ResourceStore>) {
    let mut rx = store.watch();
    let mesh = mk_mesh(&*store, "feed").await;
    let key = mk_key(ResourceKind::MeshTimeout, &mesh, "t");
    let gkey = mk_global_key(ResourceKind::Zone, &unique("feed-zone"));
    store.create(&key, mk_write(json!({}))).await.unwrap();
    store
        .update(&key, mk_write(json!({"a": 1})), Some(1))
        .await
        .unwrap();
    store
        .update(&key, mk_write(json!({"a": 2})), None)
        .await
        .unwrap();
    store.create(&gkey, mk_write(json!({}))).await.unwrap();
    store.delete(&key, None).await.unwrap();
    store.delete(&gkey, Some(1)).await.unwrap();
    // Failed writes are not on the feed.
    let _ = store
        .update(&key, mk_write(json!({})), None)
        .await
        .unwrap_err();
    let mkey = mk_mesh_key(&mesh);
    let keys: HashSet<_> = [key.clone(), gkey.clone(), mkey.clone()].into();
    let got = collect_events(&mut rx, &keys, 7).await;
    let ev = |op, key: &ResourceKey, version| ChangeEvent {
        op,
        key: key.clone(),
        version,
    };
    assert_eq!(
        got,
        vec![
            ev(ChangeOp::Created, &mkey, 1),
            ev(ChangeOp::Created, &key, 1),
            ev(ChangeOp::Updated, &key, 2),
            ev(ChangeOp::Updated, &key, 3),
            ev(ChangeOp::Created, &gkey, 1),
            ev(ChangeOp::Deleted, &key, 3),
            ev(ChangeOp::Deleted, &gkey, 1),
        ]
    );
    drop_mesh(&*store, &mesh).await;
    let got = collect_events(&mut rx, &keys, 1).await;
    assert_eq!(got, vec![ev(ChangeOp::Deleted, &mkey, 1)]);
}

/// Deleting a mesh puts a Deleted event on the feed for everything in it,
/// before the mesh's own.
pub async fn change_feed_cascade(store: Arc<dyn ResourceStore>) {
    // Subscribe first: on backends with an asynchronous feed, events of the
    // setup writes may still be on their way after the writes return.
    let mut rx = store.watch();
    let mesh = mk_mesh(&*store, "feed-cascade").await;
    let children = [
        mk_key(ResourceKind::MeshTimeout, &mesh, "t"),
        mk_key(ResourceKind::Dataplane, &mesh, "dp-1"),
        mk_key(ResourceKind::Dataplane, &mesh, "dp-2"),
    ];
    for k in &children {
        store.create(k, mk_write(json!({}))).await.unwrap();
    }
    store
        .update(&children[1], mk_write(json!({"x": 1})), None)
        .await
        .unwrap();
    drop_mesh(&*store, &mesh).await;
    let mkey = mk_mesh_key(&mesh);
    let mut keys: HashSet<_> = children.iter().cloned().collect();
    keys.insert(mkey.clone());
    // 1 mesh + 3 children created, 1 update, then 4 deletions.
    let got = collect_events(&mut rx, &keys, 9).await;
    let (setup, deletions) = got.split_at(5);
    assert!(setup.iter().all(|e| e.op != ChangeOp::Deleted), "{got:?}");
    assert!(
        deletions.iter().all(|e| e.op == ChangeOp::Deleted),
        "{got:?}"
    );
    assert_eq!(
        deletions.last().map(|e| &e.key),
        Some(&mkey),
        "the mesh goes last: {got:?}"
    );
    let versions: BTreeMap<_, _> = deletions
        .iter()
        .map(|e| (e.key.clone(), e.version))
        .collect();
    assert_eq!(versions.len(), 4, "one event per resource: {got:?}");
    assert_eq!(versions[&children[1]], 2);
    assert_eq!(versions[&children[0]], 1);
}

/// Writers racing with the same expected version: exactly one wins.
pub async fn concurrent_updates_one_wins(store: Arc<dyn ResourceStore>) {
    let mesh = mk_mesh(&*store, "race").await;
    let key = mk_key(ResourceKind::MeshTimeout, &mesh, "t");
    store
        .create(&key, mk_write(json!({"writer": -1})))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, key) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            store
                .update(&key, mk_write(json!({"writer": i})), Some(1))
                .await
        }));
    }
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(r) => winners.push(r),
            Err(StoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            }) => conflicts += 1,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!((winners.len(), conflicts), (1, 7));
    assert_eq!(store.get(&key).await.unwrap(), winners[0]);

    // Without expected versions every write lands, each bumping the version once.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, key) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            store
                .update(&key, mk_write(json!({"writer": i})), None)
                .await
        }));
    }
    let mut versions: Vec<u64> = Vec::new();
    for t in tasks {
        versions.push(
            t.await
                .expect("task")
                .expect("unconditional update")
                .meta
                .version,
        );
    }
    versions.sort();
    assert_eq!(versions, (3..=10).collect::<Vec<_>>());
    drop_mesh(&*store, &mesh).await;
}

pub async fn concurrent_creates_one_wins(store: Arc<dyn ResourceStore>) {
    let key = mk_global_key(ResourceKind::Zone, &unique("race-zone"));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, key) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            store.create(&key, mk_write(json!({"writer": i}))).await
        }));
    }
    let mut ok = 0;
    let mut exists = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(StoreError::AlreadyExists(_)) => exists += 1,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!((ok, exists), (1, 7));
    store.delete(&key, None).await.unwrap();
}

/// Many updates of different keys at once (a store may write them as one
/// group): each gets its own outcome, and only the good ones are written.
pub async fn concurrent_updates_keep_their_own_outcome(store: Arc<dyn ResourceStore>) {
    let mesh = mk_mesh(&*store, "group").await;
    let keys: Vec<ResourceKey> = (0..64)
        .map(|i| mk_key(ResourceKind::MeshTimeout, &mesh, &format!("t-{i}")))
        .collect();
    let mut feed = store.watch();
    for k in &keys {
        store.create(k, mk_write(json!({"v": 0}))).await.unwrap();
    }
    let mut tasks = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let (store, key) = (store.clone(), k.clone());
        // Every third expects a version that is not there; the rest hold the right one or none.
        let expected = match i % 3 {
            0 => Some(7),
            1 => Some(1),
            _ => None,
        };
        tasks.push(tokio::spawn(async move {
            store
                .update(&key, mk_write(json!({"v": i})), expected)
                .await
        }));
    }
    let ghost = mk_key(ResourceKind::MeshTimeout, &mesh, "ghost");
    let missing = {
        let (store, key) = (store.clone(), ghost.clone());
        tokio::spawn(async move { store.update(&key, mk_write(json!({})), None).await })
    };
    let mut written = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match (i % 3, t.await.expect("task")) {
            (
                0,
                Err(StoreError::Conflict {
                    expected: 7,
                    actual: 1,
                    ..
                }),
            ) => {}
            (1 | 2, Ok(r)) => {
                assert_eq!((r.meta.version, &r.spec), (2, &json!({"v": i})));
                written += 1;
            }
            (_, other) => panic!("update {i}: unexpected {other:?}"),
        }
    }
    assert!(matches!(
        missing.await.expect("task"),
        Err(StoreError::NotFound(k)) if k == ghost
    ));
    for (i, k) in keys.iter().enumerate() {
        let r = store.get(k).await.unwrap();
        let want = if i % 3 == 0 {
            (1, json!({"v": 0}))
        } else {
            (2, json!({"v": i}))
        };
        assert_eq!((r.meta.version, r.spec), want, "{k}");
    }
    let watched: HashSet<ResourceKey> = keys.iter().cloned().collect();
    let events = collect_events(&mut feed, &watched, keys.len() + written).await;
    let updated: Vec<_> = events
        .iter()
        .filter(|e| e.op == ChangeOp::Updated)
        .collect();
    assert_eq!(updated.len(), written, "{events:?}");
    assert!(updated.iter().all(|e| e.version == 2), "{updated:?}");
    drop_mesh(&*store, &mesh).await;
}

// ---------------------------------------------------------------- batches

fn put(key: &ResourceKey, spec: Value, expect: Expect) -> BatchOp {
    BatchOp::Put {
        key: key.clone(),
        write: mk_write(spec),
        expect,
    }
}

fn del(key: &ResourceKey, expected_version: Option<u64>) -> BatchOp {
    BatchOp::Delete {
        key: key.clone(),
        expected_version,
    }
}

fn ev(op: ChangeOp, key: &ResourceKey, version: u64) -> ChangeEvent {
    ChangeEvent {
        op,
        key: key.clone(),
        version,
    }
}

/// Every kind of op in one batch: each sees the ones before it, a failed op
/// is reported in its slot and changes nothing, the others apply; versions
/// and creation times as single writes keep them; the feed carries exactly
/// the successful writes, in op order.
pub async fn batch_ops(store: Arc<dyn ResourceStore>) {
    let mesh = mk_mesh(&*store, "batch").await;
    let a = mk_key(ResourceKind::MeshTimeout, &mesh, "a");
    let b = mk_key(ResourceKind::MeshTimeout, &mesh, "b");
    let c = mk_key(ResourceKind::MeshRetry, &mesh, "c");
    let d = mk_key(ResourceKind::MeshTimeout, &unique("batch-no-mesh"), "d");
    let e = mk_key(ResourceKind::MeshTimeout, &mesh, "e");
    let g = mk_global_key(ResourceKind::Zone, &unique("batch-zone"));
    let keys: HashSet<_> = [&a, &b, &c, &d, &e, &g].into_iter().cloned().collect();
    // Subscribe first: on backends with an asynchronous feed, events of the
    // setup writes may still be on their way after the writes return.
    let mut rx = store.watch();
    let a0 = store.create(&a, mk_write(json!({"a": 0}))).await.unwrap();
    store.create(&b, mk_write(json!({"b": 0}))).await.unwrap();
    collect_events(&mut rx, &keys, 2).await;
    tokio::time::sleep(Duration::from_millis(2)).await;

    let results = store
        .apply_batch(vec![
            put(&a, json!({"a": 1}), Expect::Any),
            put(&b, json!({"b": 1}), Expect::Version(5)),
            put(&c, json!({"c": 1}), Expect::Absent),
            put(&d, json!({}), Expect::Any),
            del(&b, Some(1)),
            put(&c, json!({"c": 2}), Expect::Any),
            del(&e, None),
            put(&e, json!({}), Expect::Version(1)),
            put(&a, json!({"a": 2}), Expect::Absent),
            put(&g, json!({"enabled": true}), Expect::Any),
        ])
        .await
        .expect("batch");
    assert_eq!(results.len(), 10);
    let a1 = match &results[0] {
        Ok(Applied::Updated(r)) => Resource::clone(r),
        other => panic!("put a: {other:?}"),
    };
    assert_eq!((a1.meta.version, &a1.spec), (2, &json!({"a": 1})));
    assert_eq!(a1.meta.creation_time, a0.meta.creation_time);
    assert!(a1.meta.modification_time > a0.meta.modification_time);
    assert!(
        matches!(&results[1], Err(StoreError::Conflict { key, expected: 5, actual: 1 }) if *key == b),
        "{:?}",
        results[1]
    );
    let c1 = match &results[2] {
        Ok(Applied::Created(r)) => Resource::clone(r),
        other => panic!("create c: {other:?}"),
    };
    assert_eq!(c1.meta.version, 1);
    assert_eq!(c1.meta.creation_time, c1.meta.modification_time);
    assert!(
        matches!(&results[3], Err(StoreError::MeshNotFound(m)) if Some(m) == d.mesh()),
        "{:?}",
        results[3]
    );
    assert_eq!(
        results[4].as_ref().ok(),
        Some(&Applied::Deleted {
            key: b.clone(),
            version: 1
        })
    );
    let c2 = match &results[5] {
        Ok(Applied::Updated(r)) => Resource::clone(r),
        other => panic!("update c: {other:?}"),
    };
    assert_eq!((c2.meta.version, &c2.spec), (2, &json!({"c": 2})));
    assert_eq!(c2.meta.creation_time, c1.meta.creation_time);
    assert!(matches!(&results[6], Err(StoreError::NotFound(k)) if *k == e));
    assert!(matches!(&results[7], Err(StoreError::NotFound(k)) if *k == e));
    assert!(matches!(&results[8], Err(StoreError::AlreadyExists(k)) if *k == a));
    let g1 = match &results[9] {
        Ok(Applied::Created(r)) => Resource::clone(r),
        other => panic!("create g: {other:?}"),
    };

    // The store holds what the results say.
    assert_eq!(store.get(&a).await.unwrap(), a1);
    assert_eq!(store.get(&c).await.unwrap(), c2);
    assert_eq!(store.get(&g).await.unwrap(), g1);
    for k in [&b, &d, &e] {
        assert!(
            matches!(store.get(k).await, Err(StoreError::NotFound(_))),
            "{k}"
        );
    }

    let got = collect_events(&mut rx, &keys, 5).await;
    assert_eq!(
        got,
        vec![
            ev(ChangeOp::Updated, &a, 2),
            ev(ChangeOp::Created, &c, 1),
            ev(ChangeOp::Deleted, &b, 1),
            ev(ChangeOp::Updated, &c, 2),
            ev(ChangeOp::Created, &g, 1),
        ]
    );
    // Nothing else about these keys: the next event is this write's.
    store.delete(&g, Some(1)).await.unwrap();
    let got = collect_events(&mut rx, &keys, 1).await;
    assert_eq!(got, vec![ev(ChangeOp::Deleted, &g, 1)]);

    // Written by a batch, read and written one by one afterwards as usual.
    let a3 = store
        .update(&a, mk_write(json!({"a": 3})), Some(2))
        .await
        .unwrap();
    assert_eq!(a3.meta.version, 3);
    assert_eq!(a3.meta.creation_time, a0.meta.creation_time);
    assert!(store.apply_batch(Vec::new()).await.unwrap().is_empty());
    drop_mesh(&*store, &mesh).await;
}

/// A Mesh deleted in a batch takes its contents with it (written by this
/// batch or not), announced before the mesh; later ops see it gone, and may
/// create it again.
pub async fn batch_mesh_cascade(store: Arc<dyn ResourceStore>) {
    let mesh = mk_mesh(&*store, "batch-cascade").await;
    let mkey = mk_mesh_key(&mesh);
    let x = mk_key(ResourceKind::MeshTimeout, &mesh, "x");
    let y = mk_key(ResourceKind::Dataplane, &mesh, "y");
    let z = mk_key(ResourceKind::MeshTimeout, &mesh, "z");
    let n = mk_key(ResourceKind::MeshRetry, &mesh, "n");
    let w = mk_key(ResourceKind::MeshRetry, &mesh, "w");
    let keys: HashSet<_> = [&mkey, &x, &y, &z, &n, &w].into_iter().cloned().collect();
    let mut rx = store.watch();
    for k in [&x, &y, &z] {
        store.create(k, mk_write(json!({}))).await.unwrap();
    }
    let setup: HashSet<_> = [&x, &y, &z].into_iter().cloned().collect();
    collect_events(&mut rx, &setup, 3).await;
    let results = store
        .apply_batch(vec![
            put(&z, json!({"z": 2}), Expect::Version(1)),
            put(&n, json!({}), Expect::Absent),
            del(&mkey, None),
            put(&w, json!({}), Expect::Any),
            put(&mkey, json!({}), Expect::Absent),
            put(&w, json!({"w": 1}), Expect::Any),
        ])
        .await
        .expect("batch");
    assert!(matches!(&results[0], Ok(Applied::Updated(r)) if r.meta.version == 2));
    assert!(matches!(&results[1], Ok(Applied::Created(_))));
    assert_eq!(
        results[2].as_ref().ok(),
        Some(&Applied::Deleted {
            key: mkey.clone(),
            version: 1
        })
    );
    assert!(
        matches!(&results[3], Err(StoreError::MeshNotFound(m)) if m.as_str() == mesh),
        "{:?}",
        results[3]
    );
    assert!(matches!(&results[4], Ok(Applied::Created(r)) if r.meta.version == 1));
    assert!(matches!(&results[5], Ok(Applied::Created(r)) if r.meta.version == 1));

    for k in [&x, &y, &z, &n] {
        assert!(
            matches!(store.get(k).await, Err(StoreError::NotFound(_))),
            "{k}"
        );
    }
    assert_eq!(store.get(&mkey).await.unwrap().meta.version, 1);
    assert_eq!(store.get(&w).await.unwrap().spec, json!({"w": 1}));
    let mut in_mesh = Vec::new();
    for kind in [
        ResourceKind::MeshTimeout,
        ResourceKind::MeshRetry,
        ResourceKind::Dataplane,
    ] {
        let page = store
            .list(&ListFilter::in_mesh(
                kind,
                MeshName::new(mesh.as_str()).unwrap(),
            ))
            .await
            .unwrap();
        in_mesh.extend(page.items.into_iter().map(|r| r.key));
    }
    assert_eq!(in_mesh, vec![w.clone()]);

    let got = collect_events(&mut rx, &keys, 9).await;
    assert_eq!(
        got[..2],
        [ev(ChangeOp::Updated, &z, 2), ev(ChangeOp::Created, &n, 1)]
    );
    assert!(
        got[2..6].iter().all(|e| e.op == ChangeOp::Deleted),
        "{got:?}"
    );
    let cascade: HashSet<_> = got[2..6]
        .iter()
        .map(|e| (e.key.clone(), e.version))
        .collect();
    let want: HashSet<_> = [
        (x.clone(), 1),
        (y.clone(), 1),
        (z.clone(), 2),
        (n.clone(), 1),
    ]
    .into();
    assert_eq!(cascade, want, "{got:?}");
    assert_eq!(
        got[6..],
        [
            ev(ChangeOp::Deleted, &mkey, 1),
            ev(ChangeOp::Created, &mkey, 1),
            ev(ChangeOp::Created, &w, 1),
        ],
        "{got:?}"
    );
    drop_mesh(&*store, &mesh).await;
}

/// A large batch: once its first event is out, every one of its writes can
/// be read (the feed announces committed batches only); conditional updates
/// and deletes of all of it in one call each.
pub async fn batch_all_or_nothing_visible(store: Arc<dyn ResourceStore>) {
    const N: usize = 1200;
    let mesh = mk_mesh(&*store, "batch-big").await;
    let keys: Vec<_> = (0..N)
        .map(|i| mk_key(ResourceKind::MeshTimeout, &mesh, &format!("t-{i:04}")))
        .collect();
    let key_set: HashSet<_> = keys.iter().cloned().collect();
    let mut rx = store.watch();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let ops = keys
        .iter()
        .map(|k| put(k, timeout_spec(), Expect::Absent))
        .collect();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { store.apply_batch(ops).await })
    };
    let first = collect_events(&mut rx, &key_set, 1).await;
    assert_eq!(first[0].op, ChangeOp::Created);
    let filter = ListFilter::in_mesh(
        ResourceKind::MeshTimeout,
        MeshName::new(mesh.as_str()).unwrap(),
    );
    assert_eq!(
        store.list(&filter).await.unwrap().total,
        N,
        "seen at the first event"
    );
    let (listed, shared) = (
        store.list(&filter).await.unwrap(),
        store.list_shared(&filter).await.unwrap(),
    );
    assert_eq!(shared.total, listed.total);
    assert!(listed.items.iter().eq(shared.items.iter().map(|r| &**r)));
    let results = writer.await.unwrap().expect("batch");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(Applied::Created(r)) if r.meta.version == 1))
    );
    let rest = collect_events(&mut rx, &key_set, N - 1).await;
    assert!(
        rest.iter()
            .all(|e| e.op == ChangeOp::Created && e.version == 1)
    );

    let ops = keys
        .iter()
        .map(|k| put(k, json!({"updated": true}), Expect::Version(1)))
        .collect();
    let results = store.apply_batch(ops).await.expect("update batch");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(Applied::Updated(r)) if r.meta.version == 2))
    );
    let page = store.list(&filter).await.unwrap();
    assert!(
        page.items
            .iter()
            .all(|r| r.meta.version == 2 && r.spec == json!({"updated": true}))
    );
    let updates = collect_events(&mut rx, &key_set, N).await;
    assert!(
        updates
            .iter()
            .all(|e| e.op == ChangeOp::Updated && e.version == 2)
    );

    let ops = keys.iter().map(|k| del(k, Some(2))).collect();
    let results = store.apply_batch(ops).await.expect("delete batch");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(Applied::Deleted { version: 2, .. })))
    );
    assert_eq!(store.list(&filter).await.unwrap().total, 0);
    drop_mesh(&*store, &mesh).await;
}
