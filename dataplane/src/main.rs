//! `kuma-dp`: fetches the bootstrap from the control plane, runs Envoy with it,
//! serves readiness and the application probe proxy, and forwards SIGTERM/SIGINT
//! to Envoy after a drain.

mod cli;
mod template;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use clap::Parser;
use cli::{Cli, Command, RunArgs, go_duration};
use kuma_dp_bin::probes;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tracing::{info, warn};

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version { detailed } => {
            if detailed {
                println!("Product:    Kuma");
                println!("Version:    {}", env!("CARGO_PKG_VERSION"));
                println!("Implementation: Rust");
            } else {
                println!("Kuma: {}", env!("CARGO_PKG_VERSION"));
            }
            Ok(())
        }
        Command::Run(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
                .with_writer(std::io::stderr)
                .init();
            let _ = rustls::crypto::ring::default_provider().install_default();
            let code = tokio::runtime::Runtime::new()?.block_on(run(*args))?;
            std::process::exit(code);
        }
    }
}

/// The Dataplane to send, rendered and converted to JSON, with its mesh and name.
fn dataplane(args: &RunArgs) -> Result<(Option<String>, String, String)> {
    let template = match (&args.dataplane_file, &args.dataplane) {
        (Some(f), _) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
        }
        (None, Some(inline)) => Some(inline.clone()),
        (None, None) => None,
    };
    let Some(template) = template else {
        let name = args
            .name
            .clone()
            .ok_or_else(|| anyhow!("--name is required without --dataplane-file or --dataplane"))?;
        return Ok((
            None,
            args.mesh.clone().unwrap_or_else(|| "default".into()),
            name,
        ));
    };
    let vars = template::parse_vars(&args.dataplane_var).map_err(|e| anyhow!(e))?;
    let text = template::render(&template, &vars).map_err(|e| anyhow!(e))?;
    let value: Value =
        serde_yaml::from_str(&text).context("the dataplane template is not valid YAML")?;
    let mesh = args
        .mesh
        .clone()
        .or_else(|| value["mesh"].as_str().map(str::to_string))
        .unwrap_or_else(|| "default".into());
    let name = args
        .name
        .clone()
        .or_else(|| value["name"].as_str().map(str::to_string))
        .ok_or_else(|| anyhow!("the dataplane needs a name (in the template or --name)"))?;
    if value["type"].as_str().is_some_and(|t| t != "Dataplane") {
        bail!(
            "the dataplane template has type {:?}, expected Dataplane",
            value["type"]
        );
    }
    Ok((Some(serde_json::to_string(&value)?), mesh, name))
}

fn http_client(args: &RunArgs, ca_pem: Option<&str>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if args.cp_address.starts_with("https://") {
        match (ca_pem, args.skip_verify) {
            (Some(pem), _) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                    .context("the CA certificate is not valid PEM")?;
                b = b.tls_certs_only(certs);
            }
            (None, true) => {
                warn!("not verifying the control plane's certificate (--skip-verify)");
                b = b.tls_danger_accept_invalid_certs(true);
            }
            (None, false) => bail!(
                "cannot verify the control plane {}: pass --ca-cert-file (or --skip-verify for development)",
                args.cp_address
            ),
        }
    }
    b.build().context("building the HTTP client")
}

async fn fetch_bootstrap(args: &RunArgs, client: &reqwest::Client, body: &Value) -> Result<Value> {
    let url = format!("{}/bootstrap", args.cp_address.trim_end_matches('/'));
    let backoff = go_duration(&args.retry_backoff).map_err(|e| anyhow!(e))?;
    let give_up = Instant::now() + go_duration(&args.retry_max_duration).map_err(|e| anyhow!(e))?;
    let mut delay = backoff;
    loop {
        let attempt = client.post(&url).json(body).send().await;
        let retry_reason = match attempt {
            Ok(resp) if resp.status().is_success() => {
                return resp
                    .json()
                    .await
                    .context("the bootstrap response is not JSON");
            }
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                // Bad input or credentials will not get better by retrying.
                if matches!(status.as_u16(), 400 | 401 | 403 | 422) {
                    bail!("the control plane refused the bootstrap ({status}): {text}");
                }
                format!("{status}: {text}")
            }
            Err(e) => format!("{e}"),
        };
        if Instant::now() + delay > give_up {
            bail!("could not bootstrap from {url}: {retry_reason}");
        }
        warn!(reason = %retry_reason, retry_in = ?delay, "bootstrap failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(backoff * 16);
    }
}

async fn readiness(port: u16, admin_port: u64) {
    let app = axum::Router::new().route(
        "/ready",
        axum::routing::get(move || async move {
            let url = format!("http://127.0.0.1:{admin_port}/ready");
            match reqwest::get(&url).await {
                Ok(r) if r.status().is_success() => {
                    (axum::http::StatusCode::OK, "READY".to_string())
                }
                Ok(r) => (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    r.text().await.unwrap_or_default(),
                ),
                Err(_) => (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "envoy is not running".to_string(),
                ),
            }
        }),
    );
    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => {
            let _ = axum::serve(l, app).await;
        }
        Err(error) => {
            warn!(port, %error, "readiness endpoint not started (set KUMA_READINESS_PORT)")
        }
    }
}

async fn run(args: RunArgs) -> Result<i32> {
    if args.proxy_type != "dataplane" {
        bail!(
            "--proxy-type {:?} is not supported yet (only dataplane)",
            args.proxy_type
        );
    }
    let (resource, mesh, name) = dataplane(&args)?;
    let template_address = resource
        .as_deref()
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        .and_then(|v| v["networking"]["address"].as_str().map(str::to_string));
    let token = match (&args.dataplane_token_file, &args.dataplane_token) {
        (Some(f), _) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .to_string(),
        (None, Some(t)) => t.trim().to_string(),
        (None, None) => String::new(),
    };
    let ca_pem = match (&args.ca_cert_file, &args.ca_cert) {
        (Some(f), _) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
        }
        (None, Some(pem)) => Some(pem.clone()),
        (None, None) => None,
    };
    let client = http_client(&args, ca_pem.as_deref())?;
    let work_dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("kuma-dp-{mesh}-{name}-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;

    let body = json!({
        "mesh": mesh,
        "name": name,
        "proxyType": args.proxy_type,
        "dataplaneToken": token,
        "dataplaneResource": resource.unwrap_or_default(),
        "caCert": ca_pem.unwrap_or_default(),
        "version": {
            "kumaDp": { "version": env!("CARGO_PKG_VERSION"), "gitTag": "unknown", "gitCommit": "unknown", "buildDate": "unknown" },
            "envoy": { "version": "unknown", "build": "unknown", "kumaDpCompatible": true }
        },
        "dnsPort": if args.dns_enabled { u32::from(args.dns_proxy_port) } else { 0 },
        "readinessPort": args.readiness_port,
        "workdir": work_dir,
        "operatingSystem": std::env::consts::OS,
        "features": ["feature-delta-xds"],
    });
    info!(%mesh, %name, cp = %args.cp_address, "fetching the bootstrap");
    let resp = fetch_bootstrap(&args, &client, &body).await?;
    let bootstrap = base64::engine::general_purpose::STANDARD
        .decode(
            resp["bootstrap"]
                .as_str()
                .ok_or_else(|| anyhow!("the bootstrap response has no bootstrap"))?,
        )
        .context("the bootstrap is not base64")?;
    let bootstrap_json: Value =
        serde_json::from_slice(&bootstrap).context("the bootstrap is not JSON")?;
    let admin_port = bootstrap_json["admin"]["address"]["socket_address"]["port_value"]
        .as_u64()
        .unwrap_or(9901);
    // Kuma probes `kumaSidecarConfiguration.networking.address` of the
    // bootstrap response; the template's address stands in when the control
    // plane does not send it.
    let probe_target = resp["kumaSidecarConfiguration"]["networking"]["address"]
        .as_str()
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .or(template_address)
        .unwrap_or_else(|| "127.0.0.1".into());
    let bootstrap_path: PathBuf = work_dir.join("bootstrap.yaml");
    std::fs::write(&bootstrap_path, &bootstrap)
        .with_context(|| format!("writing {}", bootstrap_path.display()))?;

    let drain = go_duration(&args.drain_time).map_err(|e| anyhow!(e))?;
    let mut cmd = tokio::process::Command::new(&args.binary_path);
    cmd.arg("--config-path")
        .arg(&bootstrap_path)
        .arg("--drain-time-s")
        .arg(drain.as_secs().max(1).to_string())
        .arg("--disable-hot-restart")
        .arg("--log-level")
        .arg(&args.envoy_log_level)
        .stdin(Stdio::null());
    if args.concurrency > 0 {
        cmd.arg("--concurrency").arg(args.concurrency.to_string());
    }
    let mut envoy = cmd
        .spawn()
        .with_context(|| format!("starting Envoy ({})", args.binary_path))?;
    let pid = envoy.id().ok_or_else(|| anyhow!("Envoy exited at once"))?;
    info!(pid, admin_port, "Envoy started");
    tokio::spawn(readiness(args.readiness_port, admin_port));
    let (stop_probes, probes_stopped) = tokio::sync::oneshot::channel::<()>();
    let prober = start_probe_proxy(args.application_probe_proxy_port, probe_target, async {
        let _ = probes_stopped.await;
    })
    .await;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let status = tokio::select! {
        s = envoy.wait() => s?,
        _ = term.recv() => shutdown(&mut envoy, pid, admin_port, drain).await?,
        _ = int.recv() => shutdown(&mut envoy, pid, admin_port, drain).await?,
    };
    info!(%status, "Envoy exited");
    let _ = stop_probes.send(());
    if let Some(task) = prober {
        // Graceful: in-flight probes finish, each bounded by its own timeout.
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    Ok(status.code().unwrap_or(1))
}

/// Starts the application probe proxy unless `port` is 0 (disabled, as in
/// Kuma). A port that cannot be bound is reported and skipped, like the
/// readiness endpoint; Kuma stops kuma-dp instead, but several kuma-dp on one
/// host (universal, the e2e suites) would then all need their own port.
async fn start_probe_proxy(
    port: u16,
    target: String,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    if port == 0 {
        info!("application probe proxy disabled (port 0)");
        return None;
    }
    let prober = match probes::Prober::new(target) {
        Ok(p) => p,
        Err(error) => {
            warn!(%error, "application probe proxy not started");
            return None;
        }
    };
    match probes::bind(port).await {
        Ok(listener) => Some(tokio::spawn(async move {
            if let Err(error) = prober.serve(listener, stop).await {
                warn!(%error, "application probe proxy failed");
            }
        })),
        Err(error) => {
            warn!(port, %error, "application probe proxy not started (set KUMA_APPLICATION_PROBE_PROXY_PORT)");
            None
        }
    }
}

/// Stops taking new inbound connections, lets the rest drain, then stops Envoy.
async fn shutdown(
    envoy: &mut tokio::process::Child,
    pid: u32,
    admin_port: u64,
    drain: Duration,
) -> Result<std::process::ExitStatus> {
    info!(?drain, "draining Envoy");
    let url = format!("http://127.0.0.1:{admin_port}/drain_listeners?inboundonly&graceful");
    if let Err(error) = reqwest::Client::new().post(&url).send().await {
        warn!(%error, "could not start draining");
    }
    // Stop early if Envoy exits during the drain.
    if let Ok(s) = tokio::time::timeout(drain, envoy.wait()).await {
        return Ok(s?);
    }
    let pid = i32::try_from(pid).context("pid")?;
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    Ok(envoy.wait().await?)
}
