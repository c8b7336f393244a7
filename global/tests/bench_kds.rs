//! KDS benchmarks (run in release, results in docs/benchmarks/kds-*.md):
//! `cargo test --release -p kuma-global --test global bench_kds -- --ignored --nocapture`
//!
//! In process: the global KDS server over TLS on loopback, zones as real
//! `kuma_kds::zone::run` clients on embedded SQLite (cached) stores.

use kuma_global::{GlobalKds, GlobalKdsConfig, KdsAuth};
use kuma_kds::zone::{self, ZoneClientConfig};
use kuma_model::labels::{self, Mode};
use kuma_model::{MeshName, ResourceKey, ResourceKind, ResourceName};
use kuma_store::testing::TestPostgres;
use kuma_store::{
    BatchOp, CachedStore, ChangeOp, Expect, ListFilter, MemoryStore, PostgresStore, ResourceStore,
    SqliteStore, Write,
};
use kuma_tokens::TokenService;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn timeout_write(name: &str) -> Write {
    Write {
        labels: labels::compute(
            ResourceKind::MeshTimeout,
            Some("default"),
            name,
            &BTreeMap::new(),
            Mode::Global,
            "",
        ),
        spec: serde_json::json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "20s"}}]}),
        status: None,
    }
}

fn key(kind: ResourceKind, mesh: Option<&str>, name: &str) -> ResourceKey {
    ResourceKey::new(
        kind,
        mesh.map(|m| MeshName::new(m).expect("mesh")),
        ResourceName::new(name).expect("name"),
    )
    .expect("key")
}

async fn seed_mesh(store: &Arc<dyn ResourceStore>) {
    let w = Write {
        labels: labels::compute(
            ResourceKind::Mesh,
            None,
            "default",
            &BTreeMap::new(),
            Mode::Global,
            "",
        ),
        spec: serde_json::json!({}),
        status: None,
    };
    let _ = store
        .create(&key(ResourceKind::Mesh, None, "default"), w)
        .await;
}

async fn start_global(store: Arc<dyn ResourceStore>, dir: &std::path::Path) -> GlobalKds {
    let mut cfg = GlobalKdsConfig::new(dir.to_path_buf());
    cfg.interface = "127.0.0.1".into();
    cfg.port = 0;
    cfg.auth = KdsAuth::None;
    let tokens = Arc::new(TokenService::new(store.clone()));
    GlobalKds::start(cfg, store, tokens, std::future::pending())
        .await
        .expect("KDS server")
}

async fn zone_store(dir: &std::path::Path) -> Arc<dyn ResourceStore> {
    let s = SqliteStore::open(&dir.join("kuma.db"))
        .await
        .expect("sqlite");
    Arc::new(CachedStore::new(s).await.expect("cache"))
}

fn zone_cfg(global: &GlobalKds, name: &str) -> ZoneClientConfig {
    let mut c = ZoneClientConfig::new(
        format!("grpcs://localhost:{}", global.local_addr.port()),
        name,
    );
    c.root_ca_file = Some(global.cert_path.clone());
    c
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// How many MeshTimeouts `store` holds: a count only (limit 0), so the
/// measuring side does not clone 10k resources per check.
async fn count(store: &Arc<dyn ResourceStore>) -> usize {
    let filter = ListFilter {
        limit: Some(0),
        ..ListFilter::all(ResourceKind::MeshTimeout)
    };
    store.list(&filter).await.map(|p| p.total).unwrap_or(0)
}

/// Waits (on the change feed, no polling) until `store` holds `n` MeshTimeouts.
async fn until_count(store: &Arc<dyn ResourceStore>, n: usize) {
    let mut feed = store.watch();
    while count(store).await < n {
        let _ = tokio::time::timeout(Duration::from_millis(50), feed.recv()).await;
        // Count once per burst of events, not once per event.
        while feed.try_recv().is_ok() {}
    }
}

async fn propagation(global_store: Arc<dyn ResourceStore>, label: &str) {
    let gdir = tempfile::tempdir().expect("tmp");
    seed_mesh(&global_store).await;
    let global = start_global(global_store.clone(), gdir.path()).await;
    let mut zones = Vec::new();
    let mut stops = Vec::new();
    for name in ["zone-1", "zone-2"] {
        let dir = tempfile::tempdir().expect("tmp");
        let store = zone_store(dir.path()).await;
        let cfg = zone_cfg(&global, name);
        let s = store.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let h = tokio::spawn(async move {
            zone::run(
                cfg,
                s,
                async move {
                    let _ = stop_rx.await;
                },
                None,
            )
            .await
        });
        stops.push((stop_tx, h));
        zones.push((dir, store));
    }
    for (_, z) in &zones {
        until_count(z, 0).await;
    }
    let mut lat = Vec::new();
    for i in 0..100 {
        let name = format!("p-{i}");
        let feeds: Vec<_> = zones.iter().map(|(_, z)| z.watch()).collect();
        let start = Instant::now();
        global_store
            .create(
                &key(ResourceKind::MeshTimeout, Some("default"), &name),
                timeout_write(&name),
            )
            .await
            .expect("write");
        for mut f in feeds {
            loop {
                let ev = f.recv().await.expect("feed");
                if ev.key.kind() == ResourceKind::MeshTimeout && ev.op == ChangeOp::Created {
                    break;
                }
            }
        }
        lat.push(start.elapsed());
    }
    // These zones must not compete for the CPU with the next measurement.
    for (stop, h) in stops {
        let _ = stop.send(());
        let _ = h.await;
    }
    lat.sort();
    println!(
        "propagation [{label}] global write -> both zone stores, 100 writes: p50 {:?} p99 {:?} max {:?}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat[lat.len() - 1]
    );
}

async fn resync(global_store: Arc<dyn ResourceStore>, label: &str) {
    let gdir = tempfile::tempdir().expect("tmp");
    seed_mesh(&global_store).await;
    // Seeded in batches: not measured.
    let ops: Vec<BatchOp> = (0..10_000)
        .map(|i| {
            let name = format!("r-{i}");
            BatchOp::Put {
                key: key(ResourceKind::MeshTimeout, Some("default"), &name),
                write: timeout_write(&name),
                expect: Expect::Absent,
            }
        })
        .collect();
    let start = Instant::now();
    for chunk in ops.chunks(1000) {
        let results = global_store
            .apply_batch(chunk.to_vec())
            .await
            .expect("seed");
        assert!(results.iter().all(Result::is_ok), "seed");
    }
    println!(
        "seed [{label}] 10k MeshTimeouts into the global store, apply_batch of 1000: {:?}",
        start.elapsed()
    );
    let global = start_global(global_store.clone(), gdir.path()).await;
    let zdir = tempfile::tempdir().expect("tmp");
    let store = zone_store(zdir.path()).await;

    // A fresh zone: all 10k sent, applied to SQLite.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let s = store.clone();
    let cfg = zone_cfg(&global, "zone-1");
    let h = tokio::spawn(async move {
        zone::run(
            cfg,
            s,
            async move {
                let _ = stop_rx.await;
            },
            None,
        )
        .await
    });
    until_count(&store, 10_000).await;
    println!(
        "resync [{label}] fresh zone, 10k resources: {:?}",
        start.elapsed()
    );
    let _ = stop_tx.send(());
    let _ = h.await;

    // Reconnect with the store intact; 100 changed meanwhile.
    for i in 0..100 {
        let name = format!("r-{i}");
        let mut w = timeout_write(&name);
        w.spec["to"][0]["default"]["idleTimeout"] = "21s".into();
        global_store
            .update(
                &key(ResourceKind::MeshTimeout, Some("default"), &name),
                w,
                None,
            )
            .await
            .expect("update");
    }
    let (applied_tx, mut applied_rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let s = store.clone();
    let cfg = zone_cfg(&global, "zone-1");
    tokio::spawn(async move { zone::run(cfg, s, std::future::pending(), Some(applied_tx)).await });
    let probe = key(
        ResourceKind::MeshTimeout,
        Some("default"),
        &kuma_kds::mapping::hashed_name("default", "r-99", &[]),
    );
    loop {
        let r = store.get(&probe).await.expect("probe");
        if r.spec["to"][0]["default"]["idleTimeout"] == "21s" {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), applied_rx.recv()).await;
    }
    println!(
        "resync [{label}] reconnect with 10k held, 100 changed (initial_resource_versions): {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
async fn kds_benchmarks() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mem: Arc<dyn ResourceStore> = Arc::new(MemoryStore::new());
    propagation(mem, "global embedded (memory)").await;
    let gdir = tempfile::tempdir().expect("tmp");
    let sq: Arc<dyn ResourceStore> = zone_store(gdir.path()).await;
    resync(sq, "global embedded (SQLite)").await;

    let pg = TestPostgres::start_async().await;
    let cfg = pg.config();
    kuma_store::migrate_up(&cfg).await.expect("migrate");
    let pgs: Arc<dyn ResourceStore> = Arc::new(
        CachedStore::new(PostgresStore::open(&cfg).await.expect("pg"))
            .await
            .expect("cache"),
    );
    propagation(pgs.clone(), "global PostgreSQL").await;
    resync(pgs, "global PostgreSQL").await;
}
