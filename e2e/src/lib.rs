//! Helpers for the end-to-end tests: real `kuma-cp`, `kuma-dp` and Envoy
//! processes on free loopback ports, and small HTTP apps behind them.

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e sits in the workspace")
        .to_path_buf()
}

/// The directory of the binaries under test (see [`kuma_testkit::bin_dir`]).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| kuma_testkit::bin_dir(false))
}

/// Makes sure `envoy` is on PATH, installing it with `e2e/install-deps.sh` if not.
pub fn ensure_envoy() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let status = Command::new("bash")
            .arg(workspace_root().join("e2e/install-deps.sh"))
            .status()
            .expect("running e2e/install-deps.sh");
        assert!(status.success(), "installing Envoy failed");
    });
}

pub use kuma_testkit::free_port;

/// `GET url` with a 5 s timeout: `(status, body)`, or `None` when no response came.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let r = client.get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.unwrap_or_default()))
}

/// Polls `check` until it returns `Some`, failing with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("gave up waiting for {what} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        cmd.stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null());
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.into(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        self.wait().await
    }

    /// Waits for the process to exit on its own.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} already reaped", self.name))?;
        tokio::task::spawn_blocking(move || child.wait())
            .await?
            .map_err(Into::into)
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Envoy is kuma-dp's child: let kuma-dp take it down first.
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A running `kuma-cp` (zone, universal, memory store).
pub struct ControlPlane {
    pub api: String,
    pub dp_port: u16,
    /// The KDS port (served in global mode).
    pub kds_port: u16,
    pub work_dir: tempfile::TempDir,
    pub proc: Proc,
}

impl ControlPlane {
    pub async fn start(dp_auth: &str) -> Result<ControlPlane> {
        Self::start_with(dp_auth, &[]).await
    }

    /// Starts one with extra `KUMA_*` settings (a global, or a zone of one).
    pub async fn start_with(dp_auth: &str, envs: &[(&str, String)]) -> Result<ControlPlane> {
        let work_dir = tempfile::tempdir()?;
        let api_port = free_port();
        let dp_port = free_port();
        let kds_port = free_port();
        let mut cmd = Command::new(bin_dir().join("kuma-cp"));
        cmd.arg("run")
            .env("KUMA_STORE_TYPE", "memory")
            .env("KUMA_GENERAL_WORK_DIR", work_dir.path())
            .env("KUMA_API_SERVER_HTTP_PORT", api_port.to_string())
            .env("KUMA_DP_SERVER_PORT", dp_port.to_string())
            .env("KUMA_DIAGNOSTICS_SERVER_PORT", free_port().to_string())
            .env("KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE", dp_auth)
            .env("KUMA_API_SERVER_HTTPS_ENABLED", "false")
            .env("KUMA_API_SERVER_HTTPS_PORT", free_port().to_string())
            .env("KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT", kds_port.to_string());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let proc = Proc::spawn("kuma-cp", cmd, work_dir.path())?;
        let api = format!("http://127.0.0.1:{api_port}");
        let cp = ControlPlane {
            api,
            dp_port,
            kds_port,
            work_dir,
            proc,
        };
        let url = format!("{}/meshes/default", cp.api);
        wait_for(
            "kuma-cp to serve the default mesh",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    reqwest::get(&url)
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                        .map(|_| ())
                }
            },
        )
        .await
        .with_context(|| cp.proc.output())?;
        Ok(cp)
    }

    pub fn cert(&self) -> PathBuf {
        self.work_dir.path().join("dp-server.crt")
    }

    /// Issues a dataplane token through the API (localhost is admin).
    pub async fn dataplane_token(&self, body: serde_json::Value) -> Result<String> {
        let r = reqwest::Client::new()
            .post(format!("{}/tokens/dataplane", self.api))
            .json(&body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("token request failed: {} {}", r.status(), r.text().await?);
        }
        Ok(r.text().await?)
    }
}

/// A small HTTP app answering every request with its name, counting hits.
pub struct App {
    pub port: u16,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    pub async fn start(name: &'static str) -> Result<App> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::Relaxed);
                name
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(App { port, hits, task })
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One proxy: kuma-dp (and its Envoy) in front of an app.
pub struct Proxy {
    pub name: String,
    pub admin_port: u16,
    pub inbound_port: u16,
    pub proc: Proc,
}

#[derive(Clone, Debug, Default)]
pub struct ProxySpec {
    pub name: String,
    pub service: String,
    pub app_port: u16,
    /// `(local port, kuma.io/service)` outbounds.
    pub outbounds: Vec<(u16, String)>,
    pub token: Option<String>,
    /// The proxy's address (instances of one service share the port, so each
    /// gets its own loopback address); 127.0.0.1 when `None`.
    pub address: Option<String>,
    pub inbound_port: Option<u16>,
    /// kuma-dp's DNS port; DNS is off when `None`.
    pub dns_port: Option<u16>,
}

impl Proxy {
    pub fn start(cp: &ControlPlane, spec: &ProxySpec) -> Result<Proxy> {
        ensure_envoy();
        let admin_port = free_port();
        let inbound_port = spec.inbound_port.unwrap_or_else(free_port);
        let address = spec.address.clone().unwrap_or_else(|| "127.0.0.1".into());
        let dir = cp.work_dir.path().join(&spec.name);
        std::fs::create_dir_all(&dir)?;
        let mut outbound = String::new();
        for (port, service) in &spec.outbounds {
            outbound.push_str(&format!(
                "  - port: {port}\n    tags:\n      kuma.io/service: {service}\n"
            ));
        }
        let template = format!(
            "type: Dataplane\nmesh: default\nname: {{{{ name }}}}\nnetworking:\n  address: {address}\n  admin:\n    port: {{{{ admin }}}}\n  inbound:\n  - port: {{{{ port }}}}\n    servicePort: {app}\n    tags:\n      kuma.io/service: {svc}\n      kuma.io/protocol: http\n{out}",
            address = address,
            app = spec.app_port,
            svc = spec.service,
            out = if outbound.is_empty() {
                String::new()
            } else {
                format!("  outbound:\n{outbound}")
            },
        );
        let template_path = dir.join("dataplane.yaml");
        std::fs::write(&template_path, template)?;
        let mut cmd = Command::new(bin_dir().join("kuma-dp"));
        cmd.arg("run")
            .arg("--cp-address")
            .arg(format!("https://127.0.0.1:{}", cp.dp_port))
            .arg("--ca-cert-file")
            .arg(cp.cert())
            .arg("-d")
            .arg(&template_path)
            .args(["-v", &format!("name={}", spec.name)])
            .args(["-v", &format!("admin={admin_port}")])
            .args(["-v", &format!("port={inbound_port}")])
            .arg("--work-dir")
            .arg(&dir)
            .arg("--drain-time=1s")
            .arg(format!("--dns-enabled={}", spec.dns_port.is_some()))
            .env(
                "KUMA_DNS_PROXY_PORT",
                spec.dns_port.unwrap_or(0).to_string(),
            )
            .arg("--retry-max-duration=20s")
            .arg("--concurrency=1")
            .env("KUMA_READINESS_PORT", free_port().to_string());
        if let Some(t) = &spec.token {
            let path = dir.join("token");
            std::fs::write(&path, t)?;
            cmd.arg("--dataplane-token-file").arg(path);
        }
        let proc = Proc::spawn(&format!("kuma-dp-{}", spec.name), cmd, cp.work_dir.path())?;
        Ok(Proxy {
            name: spec.name.clone(),
            admin_port,
            inbound_port,
            proc,
        })
    }

    pub async fn admin(&self, path: &str) -> Result<String> {
        Ok(
            reqwest::get(format!("http://127.0.0.1:{}{path}", self.admin_port))
                .await?
                .text()
                .await?,
        )
    }

    /// Sum of every `*.update_rejected` counter Envoy reports.
    pub async fn update_rejected(&self) -> Result<u64> {
        let stats = self.admin("/stats?filter=update_rejected").await?;
        Ok(stats
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.ends_with("update_rejected"))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum())
    }

    /// Whether Envoy has an ADS stream and the listeners it was given.
    pub async fn is_configured(&self) -> bool {
        let Ok(stats) = self
            .admin("/stats?filter=control_plane.connected_state|lds.update_success")
            .await
        else {
            return false;
        };
        stats.contains("control_plane.connected_state: 1")
            && !stats.contains("lds.update_success: 0")
    }
}

/// Asks a DNS server on 127.0.0.1:`port` (UDP) for the A record of `name`.
pub async fn resolve_a(port: u16, name: &str) -> Option<std::net::Ipv4Addr> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
    sock.send_to(&q, ("127.0.0.1", port)).await.ok()?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    let r = &buf[..n];
    let answers = u16::from_be_bytes([r[6], r[7]]);
    if answers == 0 {
        return None;
    }
    // Skip the header and the echoed question.
    let mut i = 12;
    while r.get(i).copied()? != 0 {
        i += 1 + usize::from(r[i]);
    }
    i += 5;
    for _ in 0..answers {
        // The answer's name: a pointer or labels.
        if r.get(i)? & 0xc0 == 0xc0 {
            i += 2;
        } else {
            while r.get(i).copied()? != 0 {
                i += 1 + usize::from(r[i]);
            }
            i += 1;
        }
        let rtype = u16::from_be_bytes([*r.get(i)?, *r.get(i + 1)?]);
        let len = usize::from(u16::from_be_bytes([*r.get(i + 8)?, *r.get(i + 9)?]));
        i += 10;
        if rtype == 1 && len == 4 {
            return Some(std::net::Ipv4Addr::new(r[i], r[i + 1], r[i + 2], r[i + 3]));
        }
        i += len;
    }
    None
}
