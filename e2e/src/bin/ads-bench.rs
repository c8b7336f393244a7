//! Delta-ADS benchmark (DESIGN.md §7, P1 and P2).
//!
//! The control plane (dp-server, sync, snapshot cache, memory store) runs in
//! this process; a child process (this binary, `client` mode) opens N delta
//! ADS streams over TLS as simulated dataplanes that ACK like Envoy (CDS, then
//! EDS for the EDS clusters, LDS). Measured: time until all are ACKed, control
//! plane RSS per dataplane, and for one mesh-wide MeshTimeout change the
//! control plane's CPU time, the bytes sent, and the time until every proxy
//! got its new listeners.
//!
//! `cargo run --release -p kuma-e2e --bin ads-bench -- 10000`

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use kuma_model::{MeshName, ResourceKey, ResourceKind, ResourceName};
use kuma_store::{ListFilter, MemoryStore, ResourceStore, Write};
use kuma_xds::ResourceType;
use prost::Message;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{BufRead, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// The control plane runs in this process: the same allocator as kuma-cp.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERVICES: usize = 100;
/// Streams per HTTP/2 connection of the load generator
/// (`ADS_BENCH_STREAMS_PER_CONNECTION`). Envoy opens one connection per
/// proxy, so 1 is the default; more makes the control plane's writes
/// cheaper than real proxies would.
fn streams_per_connection() -> usize {
    std::env::var("ADS_BENCH_STREAMS_PER_CONNECTION")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn cpu_time() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Runtime::new()?;
    if args.get(1).map(String::as_str) == Some("client") {
        let addr: std::net::SocketAddr = args[2].parse()?;
        let n: usize = args[3].parse()?;
        return rt.block_on(client_main(addr, n, std::path::PathBuf::from(&args[4])));
    }
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    // A subscriber as in kuma-cp (which logs at info), so disabled events
    // and spans cost what they cost there; `warn` keeps the 10k
    // "proxy connected" lines off the terminal.
    kuma_telemetry::init_logging(
        &std::env::var("ADS_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        false,
    );
    rt.block_on(server_main(n))
}

fn key(kind: ResourceKind, name: &str) -> ResourceKey {
    ResourceKey::in_mesh(
        kind,
        MeshName::default_mesh(),
        ResourceName::new(name).expect("name"),
    )
    .expect("key")
}

async fn server_main(n: usize) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let store: Arc<dyn ResourceStore> = Arc::new(MemoryStore::new());
    let mesh = ResourceKey::global(ResourceKind::Mesh, ResourceName::new("default")?)?;
    store
        .create(
            &mesh,
            Write {
                labels: BTreeMap::new(),
                spec: json!({}),
                status: None,
            },
        )
        .await?;
    let rss_empty = rss_kb();

    let mut config = kuma_zone::DpServerConfig::new(work.path().to_path_buf());
    config.interface = "127.0.0.1".parse()?;
    config.port = 0;
    config.auth = kuma_zone::DpAuth::None;
    // Insights are flushed by the bench itself, at known points (below),
    // so the periodic flush never lands in a measured window by chance.
    config.status_flush_interval = Duration::from_secs(3600);
    let server = kuma_zone::DpServer::start(config, store.clone()).await?;

    // N dataplanes in 100 services, each calling the next service.
    for i in 0..n {
        let svc = i % SERVICES;
        let spec = json!({"networking": {
            "address": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
            "inbound": [{"port": 8080, "tags": {"kuma.io/service": format!("svc-{svc}"), "kuma.io/protocol": "http"}}],
            "outbound": [{"port": 10001, "tags": {"kuma.io/service": format!("svc-{}", (svc + 1) % SERVICES)}}],
        }});
        store
            .create(
                &key(ResourceKind::Dataplane, &format!("dp-{i}")),
                Write {
                    labels: BTreeMap::new(),
                    spec,
                    status: None,
                },
            )
            .await?;
    }
    // Let the MeshServices be generated before the proxies come.
    loop {
        server.sync.flush().await;
        let ms = store
            .list(&ListFilter::in_mesh(
                ResourceKind::MeshService,
                MeshName::default_mesh(),
            ))
            .await?;
        if ms.total >= SERVICES.min(n) && ms.items.iter().all(|m| m.status.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.sync.flush().await;
    let rss_store = rss_kb();
    let connect_cpu_before = cpu_time();

    let mut child = Command::new(std::env::current_exe()?)
        .args(["client", &server.local_addr.to_string(), &n.to_string()])
        .arg(&server.cert_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut to_child = child.stdin.take().expect("stdin");
    let mut from_child = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut read_line = move || from_child.next().expect("client output").expect("line");

    let ready = tokio::task::spawn_blocking(move || {
        let l = read_line();
        (l, read_line)
    })
    .await?;
    let (line, mut read_line) = ready;
    let connect_ms: f64 = line.strip_prefix("READY ").expect("READY").parse()?;
    let rss_connected = rss_kb();
    let connect_cpu = cpu_time() - connect_cpu_before;
    // The insights of the connections and first pushes.
    server.lifecycle.flush().await;

    // `ADS_BENCH_PAUSE=SECS` waits before the change, to attach a profiler
    // (`perf record -p PID`) to just that part.
    if let Some(secs) = std::env::var("ADS_BENCH_PAUSE")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        eprintln!(
            "pid {}: pausing {secs} s before the change",
            std::process::id()
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }

    // One mesh-wide MeshTimeout change that touches every proxy's outbound
    // cluster and listener (idleTimeout is on both), then one that touches
    // only the listener (the route's requestTimeout).
    let mesh_timeout = |idle: &str, request: &str| Write {
        labels: BTreeMap::new(),
        spec: json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
            "default": {"idleTimeout": idle, "http": {"requestTimeout": request}}}]}),
        status: None,
    };
    let mt_key = key(ResourceKind::MeshTimeout, "mesh-wide");
    // Each change is made `rounds` times (`ADS_BENCH_ROUNDS`, 5 by default):
    // one change varies by a few percent on this shared machine, so the
    // figures are the median and the range.
    let rounds: usize = std::env::var("ADS_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(5);
    let mut changes: [(&str, Vec<Change>); 2] = [
        ("cluster + listener", Vec::new()),
        ("listener only", Vec::new()),
    ];
    for round in 0..rounds {
        let writes = [
            mesh_timeout(&format!("{}s", 20 + round), &format!("{}s", 3 + 2 * round)),
            mesh_timeout(&format!("{}s", 20 + round), &format!("{}s", 4 + 2 * round)),
        ];
        for (i, write) in writes.into_iter().enumerate() {
            let before_cpu = cpu_time();
            let before_bytes = server.ads_stats.bytes.load(Ordering::Relaxed);
            let before_resps = server.ads_stats.responses.load(Ordering::Relaxed);
            let before_acks = server.ads_stats.acks.load(Ordering::Relaxed);
            let sample = server
                .cache
                .get("default.dp-0")
                .ok_or_else(|| anyhow::anyhow!("dp-0 has no snapshot before the change"))?;
            writeln!(to_child, "MARK")?;
            to_child.flush()?;
            let started = Instant::now();
            if round == 0 && i == 0 {
                store.create(&mt_key, write).await?;
            } else {
                store.update(&mt_key, write, None).await?;
            }
            let (line, back) = tokio::task::spawn_blocking(move || {
                let mut f = read_line;
                (f(), f)
            })
            .await?;
            read_line = back;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            assert!(line.starts_with("UPDATED"), "{line}");
            // The change is done when the server has taken in the ACK of
            // every response it sent for it (the proxies have their
            // listeners a little before): its CPU time counts them all,
            // and none of them spills into the next change's.
            let responses = server.ads_stats.responses.load(Ordering::Relaxed) - before_resps;
            let acked = || server.ads_stats.acks.load(Ordering::Relaxed) - before_acks;
            let waited = Instant::now();
            while acked() < responses {
                assert!(
                    waited.elapsed() < Duration::from_secs(30),
                    "only {} of {responses} responses ACKed after 30 s",
                    acked()
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let cpu_ms = (cpu_time() - before_cpu).as_secs_f64() * 1000.0;
            let bytes = server.ads_stats.bytes.load(Ordering::Relaxed) - before_bytes;
            let after = server
                .cache
                .get("default.dp-0")
                .ok_or_else(|| anyhow::anyhow!("dp-0 has no snapshot after the change"))?;
            let mut changed_size = 0usize;
            let mut kinds = std::collections::BTreeSet::new();
            for r in after.iter() {
                let old = sample.get(r.plan.resource_type(), &r.name);
                if old.is_none_or(|o| o.version != r.version) {
                    changed_size += r.any.encoded_len();
                    kinds.insert(r.plan.resource_type());
                }
            }
            // Each change is what its label says, every round.
            let expected: &[ResourceType] = if i == 0 {
                &[ResourceType::Cluster, ResourceType::Listener]
            } else {
                &[ResourceType::Listener]
            };
            assert!(kinds.iter().eq(expected.iter()), "{kinds:?}");
            changes[i].1.push(Change {
                ms,
                cpu_ms,
                responses,
                bytes,
                changed_size,
            });
        }
    }
    let rss_changed = rss_kb();
    // The counts both changes added to every proxy's DataplaneInsight,
    // written the way the periodic flush does it (kuma-cp: every
    // KUMA_XDS_SERVER_DATAPLANE_STATUS_FLUSH_INTERVAL, 10 s by default,
    // however many changes happened in between).
    let before_cpu = cpu_time();
    let flush_started = Instant::now();
    server.lifecycle.flush().await;
    let flush_ms = flush_started.elapsed().as_secs_f64() * 1000.0;
    let flush_cpu = cpu_time() - before_cpu;
    if let Some(secs) = std::env::var("ADS_BENCH_PAUSE")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        // Idle again, so a profile of the change does not include teardown.
        eprintln!("pausing {secs} s after the changes");
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    let _ = child.kill();

    let per_dp = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / n as f64;
    println!(
        "dataplanes: {n} ({} streams per connection)",
        streams_per_connection()
    );
    println!(
        "all ACKed (CDS, EDS, LDS) after: {connect_ms:.0} ms (control plane CPU {:.0} ms)",
        connect_cpu.as_secs_f64() * 1000.0
    );
    println!(
        "control plane RSS: {:.1} MB with an empty mesh, {:.1} MB with the dataplanes stored, {:.1} MB all connected",
        rss_empty as f64 / 1024.0,
        rss_store as f64 / 1024.0,
        rss_connected as f64 / 1024.0
    );
    println!(
        "memory per dataplane: {:.1} KB total ({:.1} KB store + MeshServices, {:.1} KB streams + snapshots)",
        per_dp(rss_connected, rss_empty),
        per_dp(rss_store, rss_empty),
        per_dp(rss_connected, rss_store)
    );
    println!(
        "memory per dataplane after the changes: {:.1} KB",
        per_dp(rss_changed, rss_empty)
    );
    for (label, runs) in &changes {
        let spread = |f: fn(&Change) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            let mid = v.len() / 2;
            let median = if v.len().is_multiple_of(2) {
                (v[mid - 1] + v[mid]) / 2.0
            } else {
                v[mid]
            };
            format!(
                "{median:.0} ms median ({:.0}–{:.0} over {})",
                v[0],
                v[v.len() - 1],
                v.len()
            )
        };
        println!(
            "mesh-wide MeshTimeout change ({label}): every proxy updated after {}",
            spread(|c| c.ms)
        );
        println!("  control plane CPU: {}", spread(|c| c.cpu_ms));
        // Every round sends as many responses for as many changed bytes
        // (checked); the bytes sent differ by the nonces' digits at most.
        let first = &runs[0];
        assert!(
            runs.iter()
                .all(|r| (r.responses, r.changed_size) == (first.responses, first.changed_size)),
            "rounds of {label} changed different amounts"
        );
        let most = runs.iter().map(|r| r.bytes).max().unwrap_or(first.bytes);
        println!(
            "  sent: {} responses, {} bytes (at most {most} in a round); changed resources per proxy: {} bytes; ratio {:.2}",
            first.responses,
            first.bytes,
            first.changed_size,
            most as f64 / (n as f64 * first.changed_size as f64)
        );
    }
    println!(
        "insight flush after the changes ({n} DataplaneInsights): {flush_ms:.0} ms, control plane CPU {:.0} ms",
        flush_cpu.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// One measured change.
struct Change {
    ms: f64,
    cpu_ms: f64,
    responses: u64,
    bytes: u64,
    changed_size: usize,
}

struct Shared {
    initial_done: AtomicUsize,
    epoch: AtomicU64,
    updated: AtomicUsize,
}

async fn channel(
    addr: std::net::SocketAddr,
    cert: &std::path::Path,
) -> anyhow::Result<tonic::transport::Channel> {
    let pem = std::fs::read(cert)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c?)?;
    }
    // TLS as Envoy speaks it to its ADS server: TLS 1.2 (Envoy's default
    // maximum for upstream connections) with BoringSSL's suite order,
    // AES-128-GCM first.
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let ch = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(ch)
}

use rustls::pki_types::pem::PemObject;

async fn client_main(
    addr: std::net::SocketAddr,
    n: usize,
    cert: std::path::PathBuf,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        initial_done: AtomicUsize::new(0),
        epoch: AtomicU64::new(0),
        updated: AtomicUsize::new(0),
    });
    let started = Instant::now();
    let mut channels = Vec::new();
    let per_connection = streams_per_connection();
    for _ in 0..n.div_ceil(per_connection) {
        channels.push(channel(addr, &cert).await?);
    }
    for i in 0..n {
        let ch = channels[i / per_connection].clone();
        tokio::spawn(simulated_dataplane(ch, i, shared.clone()));
    }
    while shared.initial_done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("READY {}", started.elapsed().as_millis());
    // Each MARK starts an epoch: UPDATED once every proxy got listeners in it.
    loop {
        let read = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|n| n > 0)
        })
        .await??;
        if !read {
            break;
        }
        shared.updated.store(0, Ordering::SeqCst);
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        while shared.updated.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        println!("UPDATED");
    }
    // Stay connected until killed: disconnecting now would put 10k
    // disconnections into the control plane's CPU time for the change.
    std::future::pending::<()>().await;
    Ok(())
}

async fn simulated_dataplane(
    ch: tonic::transport::Channel,
    i: usize,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let mut client = AggregatedDiscoveryServiceClient::new(ch).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(16);
    let node = Node {
        id: format!("default.dp-{i}"),
        ..Default::default()
    };
    tx.send(DeltaDiscoveryRequest {
        node: Some(node),
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    })
    .await?;
    tx.send(DeltaDiscoveryRequest {
        type_url: ResourceType::Listener.type_url().into(),
        ..Default::default()
    })
    .await?;
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut seen = [false; 3];
    let mut initial = false;
    let mut subscribed = std::collections::HashSet::new();
    let mut last_epoch = 0;
    while let Some(resp) = stream.next().await {
        let resp = resp?;
        let t = ResourceType::from_type_url(&resp.type_url);
        let mut subscribe = Vec::new();
        if t == Some(ResourceType::Cluster) {
            for r in &resp.resources {
                let Some(any) = &r.resource else { continue };
                let c = Cluster::decode(any.value.as_slice())?;
                let eds = matches!(c.cluster_discovery_type, Some(cluster::ClusterDiscoveryType::Type(t)) if t == cluster::DiscoveryType::Eds as i32);
                if eds && subscribed.insert(c.name.clone()) {
                    subscribe.push(c.name);
                }
            }
        }
        tx.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await?;
        if !subscribe.is_empty() {
            tx.send(DeltaDiscoveryRequest {
                type_url: ResourceType::Endpoints.type_url().into(),
                resource_names_subscribe: subscribe,
                ..Default::default()
            })
            .await?;
        }
        match t {
            Some(ResourceType::Cluster) => seen[0] = true,
            Some(ResourceType::Endpoints) => seen[1] = true,
            Some(ResourceType::Listener) => seen[2] = true,
            _ => {}
        }
        if !initial && seen.iter().all(|s| *s) {
            initial = true;
            shared.initial_done.fetch_add(1, Ordering::Relaxed);
        }
        let epoch = shared.epoch.load(Ordering::SeqCst);
        if t == Some(ResourceType::Listener) && epoch > last_epoch {
            last_epoch = epoch;
            shared.updated.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}
