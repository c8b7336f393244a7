//! Kuma's kuma-dp flags and `KUMA_*` variables.

use clap::{ArgAction, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "kuma-dp",
    about = "Dataplane manager for Envoy-based Service Mesh",
    version
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Launch Dataplane (Envoy).
    Run(Box<RunArgs>),
    /// Print version.
    Version {
        #[arg(short = 'a', long)]
        detailed: bool,
    },
}

/// Parses Kuma-style booleans: `--flag`, `--flag=true`, `--flag=false`.
fn bool_flag() -> ArgAction {
    ArgAction::Set
}

#[derive(Parser, Debug, Clone)]
pub struct RunArgs {
    /// URL of the control plane's dp-server.
    #[arg(
        long = "cp-address",
        env = "KUMA_CONTROL_PLANE_URL",
        default_value = "https://localhost:5678"
    )]
    pub cp_address: String,
    /// CA certificate that signed the control plane's certificate.
    #[arg(long = "ca-cert-file", env = "KUMA_CONTROL_PLANE_CA_CERT_FILE")]
    pub ca_cert_file: Option<PathBuf>,
    /// The CA certificate itself (PEM).
    #[arg(long = "ca-cert", env = "KUMA_CONTROL_PLANE_CA_CERT", hide = true)]
    pub ca_cert: Option<String>,
    /// Do not verify the control plane's certificate (development only).
    #[arg(long = "skip-verify", env = "KUMA_CONTROL_PLANE_TLS_SKIP_VERIFY", action = bool_flag(),
          num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub skip_verify: bool,
    /// Dataplane template file.
    #[arg(
        short = 'd',
        long = "dataplane-file",
        env = "KUMA_DATAPLANE_RUNTIME_RESOURCE_PATH"
    )]
    pub dataplane_file: Option<PathBuf>,
    /// Dataplane template inline.
    #[arg(long = "dataplane", env = "KUMA_DATAPLANE_RUNTIME_RESOURCE")]
    pub dataplane: Option<String>,
    /// Template variables, `key=value`.
    #[arg(short = 'v', long = "dataplane-var")]
    pub dataplane_var: Vec<String>,
    /// Path to the dataplane token.
    #[arg(
        long = "dataplane-token-file",
        env = "KUMA_DATAPLANE_RUNTIME_TOKEN_PATH"
    )]
    pub dataplane_token_file: Option<PathBuf>,
    /// The dataplane token itself.
    #[arg(
        long = "dataplane-token",
        env = "KUMA_DATAPLANE_RUNTIME_TOKEN",
        hide = true
    )]
    pub dataplane_token: Option<String>,
    /// Name of the Dataplane (taken from the template when omitted).
    #[arg(long = "name", env = "KUMA_DATAPLANE_NAME")]
    pub name: Option<String>,
    /// Mesh of the Dataplane.
    #[arg(long = "mesh", env = "KUMA_DATAPLANE_MESH")]
    pub mesh: Option<String>,
    /// Proxy type: dataplane (ingress and egress are not supported yet).
    #[arg(
        long = "proxy-type",
        env = "KUMA_DATAPLANE_PROXY_TYPE",
        default_value = "dataplane"
    )]
    pub proxy_type: String,
    /// Envoy binary.
    #[arg(
        long = "binary-path",
        env = "KUMA_DATAPLANE_RUNTIME_BINARY_PATH",
        default_value = "envoy"
    )]
    pub binary_path: String,
    /// Where the bootstrap and other files go (default: a fresh temporary directory).
    #[arg(long = "work-dir", env = "KUMA_DATAPLANE_RUNTIME_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Resolve the mesh's hostnames to their VIPs.
    #[arg(long = "dns-enabled", env = "KUMA_DNS_ENABLED", action = bool_flag(),
          num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub dns_enabled: bool,
    #[arg(
        long = "dns-proxy-port",
        env = "KUMA_DNS_PROXY_PORT",
        default_value_t = 15053
    )]
    pub dns_proxy_port: u16,
    #[arg(
        long = "readiness-port",
        env = "KUMA_READINESS_PORT",
        default_value_t = 9902
    )]
    pub readiness_port: u16,
    #[arg(
        long = "application-probe-proxy-port",
        env = "KUMA_APPLICATION_PROBE_PROXY_PORT",
        default_value_t = 9001
    )]
    pub application_probe_proxy_port: u16,
    /// How long Envoy drains connections on shutdown (Go duration, e.g. 30s).
    #[arg(
        long = "drain-time",
        env = "KUMA_DATAPLANE_DRAIN_TIME",
        default_value = "30s"
    )]
    pub drain_time: String,
    /// Envoy concurrency (0 = Envoy's default).
    #[arg(
        long = "concurrency",
        env = "KUMA_DATAPLANE_RUNTIME_CONCURRENCY",
        default_value_t = 0
    )]
    pub concurrency: u32,
    #[arg(
        long = "envoy-log-level",
        env = "KUMA_DATAPLANE_RUNTIME_ENVOY_LOG_LEVEL",
        default_value = "info"
    )]
    pub envoy_log_level: String,
    /// Backoff between bootstrap attempts.
    #[arg(
        long = "retry-backoff",
        env = "KUMA_CONTROL_PLANE_RETRY_BACKOFF",
        default_value = "1s"
    )]
    pub retry_backoff: String,
    /// Give up bootstrapping after this long.
    #[arg(
        long = "retry-max-duration",
        env = "KUMA_CONTROL_PLANE_RETRY_MAX_DURATION",
        default_value = "5m"
    )]
    pub retry_max_duration: String,
    #[arg(long = "log-level", env = "KUMA_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Parses a Go duration into a std Duration.
pub fn go_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?}: missing unit"))?;
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("{s:?}: invalid number"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("{s:?}: unknown unit {u:?}")),
        };
        total += n * secs;
        rest = &rest[unit_end..];
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_take_kuma_forms() {
        let cli = Cli::try_parse_from(["kuma-dp", "run", "--dns-enabled=false", "--skip-verify"])
            .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        assert!(!args.dns_enabled);
        assert!(args.skip_verify);
        let cli =
            Cli::try_parse_from(["kuma-dp", "run", "-v", "a=b", "-v", "c=d", "-d", "dp.yaml"])
                .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        assert_eq!(args.dataplane_var, vec!["a=b", "c=d"]);
        assert!(args.dns_enabled);
        assert!(!args.skip_verify);
    }

    #[test]
    fn durations() {
        assert_eq!(go_duration("1m30s").unwrap().as_secs(), 90);
        assert_eq!(go_duration("250ms").unwrap().as_millis(), 250);
        assert!(go_duration("5").is_err());
    }
}
