//! What only the PostgreSQL store does: several instances on one database,
//! the schema gate, and keeping SQL out of error messages.

use kuma_model::ResourceKind;
use kuma_store::testing::TestPostgres;
use kuma_store::testing::conformance::{mk_key, mk_labelled, mk_mesh_key, mk_write};
use kuma_store::{ChangeOp, OpenError, PostgresStore, ResourceStore, StoreError, migrate_up};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_see_each_others_writes_within_100ms() {
    let pg = TestPostgres::start_async().await;
    let config = pg.config();
    migrate_up(&config).await.unwrap();
    let a = PostgresStore::open(&config).await.unwrap();
    let b = PostgresStore::open(&config).await.unwrap();
    let mut feed_b = b.watch();
    let mut feed_a = a.watch();

    a.create(&mk_mesh_key("default"), mk_write(json!({})))
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(1), feed_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((ev.op, ev.key), (ChangeOp::Created, mk_mesh_key("default")));

    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let key = mk_key(ResourceKind::MeshTimeout, "default", &format!("t-{i}"));
        let (writer, feed) = if i % 2 == 0 {
            (&a, &mut feed_b)
        } else {
            (&b, &mut feed_a)
        };
        let start = Instant::now();
        writer
            .create(&key, mk_write(json!({"i": i})))
            .await
            .unwrap();
        let ev = loop {
            let ev = tokio::time::timeout(Duration::from_secs(1), feed.recv())
                .await
                .unwrap()
                .unwrap();
            if ev.key == key {
                break ev;
            }
        };
        worst = worst.max(start.elapsed());
        assert_eq!((ev.op, ev.version), (ChangeOp::Created, 1));
        let reader = if i % 2 == 0 { &b } else { &a };
        assert_eq!(reader.get(&key).await.unwrap().spec, json!({"i": i}));
    }
    assert!(
        worst < Duration::from_millis(100),
        "slowest write-to-other-instance event took {worst:?}"
    );

    // A conditional write from one instance loses against the other's.
    let key = mk_key(ResourceKind::MeshTimeout, "default", "t-0");
    a.update(&key, mk_write(json!({"by": "a"})), Some(1))
        .await
        .unwrap();
    let err = b
        .update(&key, mk_write(json!({"by": "b"})), Some(1))
        .await
        .unwrap_err();
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

    // A cascade from one instance reaches the other as deletions.
    a.delete(&mk_mesh_key("default"), None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut deleted = 0;
    while deleted < 21 {
        let ev = tokio::time::timeout_at(deadline.into(), feed_b.recv())
            .await
            .expect("cascade events")
            .unwrap();
        if ev.op == ChangeOp::Deleted {
            deleted += 1;
        }
    }
    assert!(matches!(b.get(&key).await, Err(StoreError::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_gate_and_error_hygiene() {
    let pg = TestPostgres::start_async().await;
    let config = pg.config();

    let err = PostgresStore::open(&config).await.unwrap_err();
    let required = kuma_store::postgres::required_schema_version();
    assert!(
        matches!(err, OpenError::SchemaOutdated { current: 0, required: r } if r == required),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "database schema is at version 0, this kuma-cp needs {required}: run `kuma-cp migrate up`"
        )
    );

    let v = migrate_up(&config).await.unwrap();
    assert_eq!((v.before, v.after), (0, required));
    let v = migrate_up(&config).await.unwrap();
    assert_eq!(
        (v.before, v.after),
        (required, required),
        "migrate up twice is a no-op"
    );

    let bad_password = kuma_store::PostgresConfig {
        password: "wrong".into(),
        ..config.clone()
    };
    let err = PostgresStore::open(&bad_password).await.unwrap_err();
    assert!(matches!(err, OpenError::Connect(_)), "{err:?}");

    let store = PostgresStore::open(&config).await.unwrap();
    store
        .create(&mk_mesh_key("default"), mk_write(json!({})))
        .await
        .unwrap();
    store.close().await;
    // A backend failure says nothing about SQL to whoever shows the error.
    let err = store.get(&mk_mesh_key("default")).await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.to_string(), "storage backend failure");
}

/// Two control planes, each reading from its own cache over one database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_on_two_instances_converge_within_100ms() {
    use kuma_store::CachedStore;
    let pg = TestPostgres::start_async().await;
    let config = pg.config();
    migrate_up(&config).await.unwrap();
    let a = CachedStore::new(PostgresStore::open(&config).await.unwrap())
        .await
        .unwrap();
    let b = CachedStore::new(PostgresStore::open(&config).await.unwrap())
        .await
        .unwrap();
    a.create(&mk_mesh_key("default"), mk_write(json!({})))
        .await
        .unwrap();
    let key = mk_key(ResourceKind::MeshTimeout, "default", "t");
    let mut worst = Duration::ZERO;
    for i in 0..10u64 {
        let start = Instant::now();
        if i == 0 {
            a.create(&key, mk_write(json!({"i": 0}))).await.unwrap();
        } else {
            let writer = if i % 2 == 0 { &a } else { &b };
            writer
                .update(&key, mk_write(json!({"i": i})), Some(i))
                .await
                .unwrap();
        }
        let reader = if i % 2 == 0 { &b } else { &a };
        loop {
            if let Ok(r) = reader.get(&key).await
                && r.meta.version == i + 1
            {
                assert_eq!(r.spec, json!({"i": i}));
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "write {i} never reached the other cache"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        worst = worst.max(start.elapsed());
    }
    assert!(
        worst < Duration::from_millis(100),
        "slowest propagation {worst:?}"
    );
    b.delete(&mk_mesh_key("default"), None).await.unwrap();
    let start = Instant::now();
    while a.get(&key).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "cascade never reached the other cache"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A write whose notification never went out (its writer crashed between
/// commit and NOTIFY) still reaches every instance, through the periodic
/// catch-up; a delete too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_whose_notification_was_lost_are_caught_up() {
    use sqlx::postgres::{PgConnectOptions, PgPool};
    let pg = TestPostgres::start_async().await;
    let config = pg.config();
    migrate_up(&config).await.unwrap();
    let a = PostgresStore::open(&config).await.unwrap();
    let mut feed = a.watch();
    let crashed_writer = PgPool::connect_with(
        PgConnectOptions::new()
            .host(&config.host)
            .port(config.port)
            .username(&config.user)
            .password(&config.password)
            .database(&config.db_name),
    )
    .await
    .unwrap();
    let key = mk_mesh_key("silent");
    let catch_up = Duration::from_secs(6);

    sqlx::query(
        "INSERT INTO resources (kind, mesh, name, version, spec, creation_time, modification_time) \
         VALUES ('Mesh', '', 'silent', 1, '{}', now(), now())",
    )
    .execute(&crashed_writer)
    .await
    .unwrap();
    let ev = tokio::time::timeout(catch_up, feed.recv())
        .await
        .expect("caught up")
        .unwrap();
    assert_eq!(
        (ev.op, ev.key.clone(), ev.version),
        (ChangeOp::Created, key.clone(), 1)
    );
    assert_eq!(a.get(&key).await.unwrap().meta.version, 1);

    sqlx::query("DELETE FROM resources WHERE name = 'silent'")
        .execute(&crashed_writer)
        .await
        .unwrap();
    let ev = tokio::time::timeout(catch_up, feed.recv())
        .await
        .expect("caught up")
        .unwrap();
    assert_eq!((ev.op, ev.key), (ChangeOp::Deleted, key));
}

/// Concurrent updates are written as groups: one that PostgreSQL refuses
/// (a NUL character, which `jsonb` cannot hold) fails alone, the others of
/// its group are written and announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_update_fails_alone_in_its_group() {
    let pg = TestPostgres::start_async().await;
    let config = pg.config();
    migrate_up(&config).await.unwrap();
    let store = std::sync::Arc::new(PostgresStore::open(&config).await.unwrap());
    store
        .create(&mk_mesh_key("default"), mk_write(json!({})))
        .await
        .unwrap();
    let keys: Vec<_> = (0..40)
        .map(|i| mk_key(ResourceKind::MeshTimeout, "default", &format!("t-{i}")))
        .collect();
    for k in &keys {
        store.create(k, mk_write(json!({"v": 0}))).await.unwrap();
    }
    let mut feed = store.watch();
    let tasks: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let (store, key) = (store.clone(), k.clone());
            tokio::spawn(async move {
                let label = if i == 17 { "bad\0value" } else { "fine" };
                store
                    .update(
                        &key,
                        mk_labelled(json!({"v": i}), &[("team", label)]),
                        Some(1),
                    )
                    .await
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        match (i, t.await.unwrap()) {
            (17, Err(StoreError::Backend(_))) => {}
            (17, other) => panic!("the refused update: {other:?}"),
            (_, Ok(r)) => assert_eq!(r.meta.version, 2),
            (_, Err(e)) => panic!("update {i} failed with its group: {e}"),
        }
    }
    for (i, k) in keys.iter().enumerate() {
        let want = if i == 17 { 1 } else { 2 };
        assert_eq!(store.get(k).await.unwrap().meta.version, want, "{k}");
    }
    let mut updated = 0;
    while updated < 39 {
        let ev = tokio::time::timeout(Duration::from_secs(2), feed.recv())
            .await
            .expect("39 update events")
            .unwrap();
        if ev.op == ChangeOp::Updated {
            assert_ne!(ev.key, keys[17]);
            updated += 1;
        }
    }
}
