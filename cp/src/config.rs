//! kuma-cp configuration: `kuma-cp.defaults.yaml` < `-c FILE` < `KUMA_*` variables.
//!
//! The defaults file is the single source of truth: it lists every key we
//! honour, its default, and (in a `# ENV:` comment) the variable that
//! overrides it. The variable table is read from that file, so a key cannot be
//! documented without being wired, or wired without being documented.

use anyhow::{Context, Result, anyhow, bail};
use kuma_model::specs::common::Duration;
use serde::Deserialize;
use serde_yaml::Value;
use std::path::{Path, PathBuf};

pub const DEFAULTS_YAML: &str = include_str!("../kuma-cp.defaults.yaml");

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpConfig {
    pub environment: String,
    pub mode: String,
    pub store: StoreConfig,
    pub api_server: ApiServerConfig,
    pub dp_server: DpServerConfig,
    pub xds_server: XdsServerConfig,
    pub ipam: IpamConfig,
    pub diagnostics: DiagnosticsConfig,
    pub general: GeneralConfig,
    pub multizone: MultizoneConfig,
    pub defaults: DefaultsConfig,
    pub access: AccessConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreConfig {
    #[serde(rename = "type")]
    pub kind: String,
    pub sqlite: SqliteConfig,
    pub postgres: kuma_store::PostgresConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqliteConfig {
    pub path: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerConfig {
    pub http: HttpListener,
    pub authn: ApiAuthn,
    pub cors_allowed_domains: Vec<String>,
    pub max_request_body_bytes: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpListener {
    pub enabled: bool,
    pub interface: String,
    pub port: u16,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiAuthn {
    #[serde(rename = "type")]
    pub kind: String,
    pub localhost_is_admin: bool,
    pub tokens: ApiTokens,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokens {
    pub bootstrap_admin_token: bool,
    pub enable_issuer: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DpServerConfig {
    pub port: u16,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    pub authn: DpServerAuthn,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DpServerAuthn {
    pub dp_proxy: DpProxyAuthn,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DpProxyAuthn {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct XdsServerConfig {
    pub dataplane_status_flush_interval: Duration,
    pub dataplane_deregistration_delay: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConfig {
    pub mesh_service: IpamRange,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamRange {
    pub cidr: String,
}

impl IpamRange {
    /// `a.b.c.d/len` as an IPv4 network and prefix length.
    pub fn parse(&self) -> Option<(std::net::Ipv4Addr, u8)> {
        let (ip, len) = self.cidr.split_once('/')?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
        Some((ip.parse().ok()?, len))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosticsConfig {
    pub server_port: u16,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GeneralConfig {
    pub work_dir: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultizoneConfig {
    pub global: GlobalMultizone,
    pub zone: ZoneMultizone,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GlobalMultizone {
    pub kds: GlobalKds,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GlobalKds {
    pub grpc_port: u16,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    pub auth: KdsAuth,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KdsAuth {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneMultizone {
    pub name: String,
    pub global_address: String,
    pub kds: ZoneKds,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneKds {
    pub root_ca_file: String,
    pub tls_skip_verify: bool,
    pub auth: ZoneKdsAuth,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneKdsAuth {
    pub cp_token_path: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultsConfig {
    pub skip_mesh_creation: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessConfig {
    #[serde(rename = "static")]
    pub static_: StaticAccess,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticAccess {
    pub admin_resources: UsersGroups,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsersGroups {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

/// One `# ENV:` annotation: the variable and the key path it sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvBinding {
    pub var: String,
    pub path: Vec<String>,
}

/// Reads the `# ENV: NAME` annotations of the defaults file, with the key path
/// each line sits at (from its indentation).
pub fn env_bindings(defaults: &str) -> Vec<EnvBinding> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut out = Vec::new();
    for line in defaults.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.trim().to_string()));
        if let Some((_, var)) = trimmed.split_once("# ENV: ") {
            out.push(EnvBinding {
                var: var.trim().to_string(),
                path: stack.iter().map(|(_, k)| k.clone()).collect(),
            });
        }
    }
    out
}

fn get_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for k in path {
        cur = cur.as_mapping_mut()?.get_mut(Value::String(k.clone()))?;
    }
    Some(cur)
}

/// Deep-merges `overlay` into `base`; keys `base` lacks are collected in `unknown`.
fn merge(base: &mut Value, overlay: Value, prefix: &str, unknown: &mut Vec<String>) {
    match (base, overlay) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                let name = k
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{k:?}"));
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v, &path, unknown),
                    None => unknown.push(path),
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Parses a variable's text by the type of the default it replaces.
fn parse_env_value(default: &Value, raw: &str, var: &str, key: &str) -> Result<Value> {
    Ok(match default {
        Value::Bool(_) => Value::Bool(match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => bail!("invalid value {raw:?} for {var} ({key}): expected true or false"),
        }),
        Value::Number(_) => {
            let n: i64 = raw.trim().parse().map_err(|_| {
                anyhow!("invalid value {raw:?} for {var} ({key}): expected a whole number")
            })?;
            Value::Number(n.into())
        }
        Value::Sequence(_) => Value::Sequence(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        _ => Value::String(raw.to_string()),
    })
}

/// What `load` produced, plus keys from the file that were ignored.
pub struct Loaded {
    pub config: CpConfig,
    pub merged: Value,
    pub ignored_keys: Vec<String>,
}

/// Loads defaults, then `file`, then the environment (`env` looks a variable up).
pub fn load(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Loaded> {
    let mut merged: Value =
        serde_yaml::from_str(DEFAULTS_YAML).context("built-in defaults are not valid YAML")?;
    let mut ignored_keys = Vec::new();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let overlay: Value = serde_yaml::from_str(&text)
            .map_err(|e| anyhow!("config file {} is not valid YAML: {e}", path.display()))?;
        if !overlay.is_null() {
            if !overlay.is_mapping() {
                bail!("config file {} must be a YAML mapping", path.display());
            }
            merge(&mut merged, overlay, "", &mut ignored_keys);
        }
    }
    for b in env_bindings(DEFAULTS_YAML) {
        let Some(raw) = env(&b.var) else { continue };
        let key = b.path.join(".");
        let slot = get_mut(&mut merged, &b.path)
            .ok_or_else(|| anyhow!("internal: {key} missing from defaults"))?;
        *slot = parse_env_value(slot, &raw, &b.var, &key)?;
    }
    // A key the file set to null falls back to its default type's zero value.
    let config: CpConfig = serde_path_to_error::deserialize(merged.clone()).map_err(|e| {
        let key = e.path().to_string();
        // Name the variable too, when one sets this key.
        let var = env_bindings(DEFAULTS_YAML)
            .into_iter()
            .find(|b| b.path.join(".") == key)
            .map(|b| format!(" ({})", b.var))
            .unwrap_or_default();
        anyhow!(
            "invalid configuration value at {key}{var}: {}",
            e.into_inner()
        )
    })?;
    validate(&config)?;
    Ok(Loaded {
        config,
        merged,
        ignored_keys,
    })
}

fn validate(c: &CpConfig) -> Result<()> {
    if !matches!(c.mode.as_str(), "zone" | "global") {
        bail!(
            "invalid value {:?} for mode (KUMA_MODE): expected zone or global",
            c.mode
        );
    }
    if !matches!(c.environment.as_str(), "universal" | "kubernetes") {
        bail!(
            "invalid value {:?} for environment (KUMA_ENVIRONMENT): expected universal or kubernetes",
            c.environment
        );
    }
    if !matches!(c.store.kind.as_str(), "sqlite" | "memory" | "postgres") {
        bail!(
            "invalid value {:?} for store.type (KUMA_STORE_TYPE): expected sqlite, memory or postgres",
            c.store.kind
        );
    }
    for (key, var, port) in [
        (
            "apiServer.http.port",
            "KUMA_API_SERVER_HTTP_PORT",
            c.api_server.http.port,
        ),
        ("dpServer.port", "KUMA_DP_SERVER_PORT", c.dp_server.port),
        (
            "diagnostics.serverPort",
            "KUMA_DIAGNOSTICS_SERVER_PORT",
            c.diagnostics.server_port,
        ),
        (
            "multizone.global.kds.grpcPort",
            "KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT",
            c.multizone.global.kds.grpc_port,
        ),
    ] {
        if port == 0 {
            bail!("invalid value 0 for {key} ({var}): expected a port from 1 to 65535");
        }
    }
    c.store.postgres.validate().map_err(|e| {
        anyhow!("invalid store.postgres configuration (KUMA_STORE_POSTGRES_*): {e}")
    })?;
    if c.api_server.max_request_body_bytes == 0 {
        bail!(
            "invalid value 0 for apiServer.maxRequestBodyBytes (KUMA_API_SERVER_MAX_REQUEST_BODY_BYTES)"
        );
    }
    if c.ipam.mesh_service.parse().is_none() {
        bail!(
            "invalid value {:?} for ipam.meshService.cidr (KUMA_IPAM_MESH_SERVICE_CIDR): expected an IPv4 CIDR such as 241.0.0.0/8",
            c.ipam.mesh_service.cidr
        );
    }
    for (key, var, d) in [
        (
            "xdsServer.dataplaneStatusFlushInterval",
            "KUMA_XDS_SERVER_DATAPLANE_STATUS_FLUSH_INTERVAL",
            &c.xds_server.dataplane_status_flush_interval,
        ),
        (
            "xdsServer.dataplaneDeregistrationDelay",
            "KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY",
            &c.xds_server.dataplane_deregistration_delay,
        ),
    ] {
        if d.is_negative() {
            bail!("invalid value {d} for {key} ({var}): must not be negative");
        }
    }
    if c.xds_server.dataplane_status_flush_interval.is_zero() {
        bail!(
            "invalid value 0 for xdsServer.dataplaneStatusFlushInterval (KUMA_XDS_SERVER_DATAPLANE_STATUS_FLUSH_INTERVAL): must be positive"
        );
    }
    if c.api_server.authn.kind != "tokens" {
        bail!(
            "invalid value {:?} for apiServer.authn.type (KUMA_API_SERVER_AUTHN_TYPE): only tokens is supported",
            c.api_server.authn.kind
        );
    }
    Ok(())
}

impl CpConfig {
    pub fn work_dir(&self) -> PathBuf {
        if self.general.work_dir.is_empty() {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join(".kuma")
        } else {
            PathBuf::from(&self.general.work_dir)
        }
    }
}

/// The merged configuration with secrets replaced, for logs and `/config`.
pub fn redacted(merged: &Value) -> serde_json::Value {
    let mut v = merged.clone();
    if let Some(slot) = get_mut(
        &mut v,
        &["store".into(), "postgres".into(), "password".into()],
    ) {
        *slot = Value::String("***".into());
    }
    serde_json::to_value(&v).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_load() {
        let l = load(None, env(&[])).unwrap();
        assert_eq!(l.config.mode, "zone");
        assert_eq!(l.config.api_server.http.port, 5681);
        assert_eq!(l.config.store.kind, "sqlite");
        assert_eq!(l.config.multizone.zone.name, "default");
    }

    #[test]
    fn every_documented_variable_is_bound_and_kuma_named() {
        let b = env_bindings(DEFAULTS_YAML);
        assert!(b.len() > 30, "{}", b.len());
        let port = b
            .iter()
            .find(|b| b.var == "KUMA_API_SERVER_HTTP_PORT")
            .unwrap();
        assert_eq!(port.path, vec!["apiServer", "http", "port"]);
        let db = b
            .iter()
            .find(|b| b.var == "KUMA_STORE_POSTGRES_DB_NAME")
            .unwrap();
        assert_eq!(db.path, vec!["store", "postgres", "dbName"]);
        for binding in &b {
            assert!(binding.var.starts_with("KUMA_"), "{binding:?}");
        }
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cp.yaml");
        std::fs::write(&f, "mode: global\napiServer:\n  http:\n    port: 7000\nmonitoringAssignmentServer:\n  port: 5676\n").unwrap();
        let l = load(
            Some(&f),
            env(&[
                ("KUMA_API_SERVER_HTTP_PORT", "7001"),
                ("KUMA_DEFAULTS_SKIP_MESH_CREATION", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(l.config.mode, "global");
        assert_eq!(l.config.api_server.http.port, 7001);
        assert!(l.config.defaults.skip_mesh_creation);
        assert_eq!(l.ignored_keys, vec!["monitoringAssignmentServer"]);
    }

    #[test]
    fn invalid_values_name_the_key() {
        let e = load(None, env(&[("KUMA_API_SERVER_HTTP_PORT", "http")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("KUMA_API_SERVER_HTTP_PORT") && e.contains("apiServer.http.port"),
            "{e}"
        );
        let e = load(None, env(&[("KUMA_MODE", "standalone")]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("KUMA_MODE"), "{e}");
        let e = load(None, env(&[("KUMA_DP_SERVER_PORT", "70000")]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("dpServer.port"), "{e}");
        let e = load(None, env(&[("KUMA_DEFAULTS_SKIP_MESH_CREATION", "maybe")]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("KUMA_DEFAULTS_SKIP_MESH_CREATION"), "{e}");
    }

    #[test]
    fn xds_and_ipam_settings_use_kumas_variables() {
        let l = load(None, env(&[])).unwrap();
        assert_eq!(
            l.config.ipam.mesh_service.parse(),
            Some(("241.0.0.0".parse().unwrap(), 8))
        );
        assert_eq!(
            l.config.xds_server.dataplane_deregistration_delay.as_std(),
            Some(std::time::Duration::from_secs(10))
        );
        let l = load(
            None,
            env(&[
                ("KUMA_IPAM_MESH_SERVICE_CIDR", "10.20.0.0/16"),
                ("KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY", "0s"),
                ("KUMA_XDS_SERVER_DATAPLANE_STATUS_FLUSH_INTERVAL", "1m30s"),
            ]),
        )
        .unwrap();
        assert_eq!(
            l.config.ipam.mesh_service.parse(),
            Some(("10.20.0.0".parse().unwrap(), 16))
        );
        assert!(l.config.xds_server.dataplane_deregistration_delay.is_zero());
        assert_eq!(
            l.config.xds_server.dataplane_status_flush_interval.as_std(),
            Some(std::time::Duration::from_secs(90))
        );
        for (var, value, key) in [
            (
                "KUMA_IPAM_MESH_SERVICE_CIDR",
                "241.0.0.0",
                "ipam.meshService.cidr",
            ),
            (
                "KUMA_IPAM_MESH_SERVICE_CIDR",
                "241.0.0.0/33",
                "ipam.meshService.cidr",
            ),
            (
                "KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY",
                "-1s",
                "xdsServer.dataplaneDeregistrationDelay",
            ),
            (
                "KUMA_XDS_SERVER_DATAPLANE_STATUS_FLUSH_INTERVAL",
                "0s",
                "xdsServer.dataplaneStatusFlushInterval",
            ),
            (
                "KUMA_XDS_SERVER_DATAPLANE_STATUS_FLUSH_INTERVAL",
                "often",
                "xdsServer.dataplaneStatusFlushInterval",
            ),
        ] {
            let e = load(None, env(&[(var, value)])).err().unwrap().to_string();
            assert!(e.contains(var) && e.contains(key), "{var}={value}: {e}");
        }
    }

    #[test]
    fn lists_from_env_and_redaction() {
        let l = load(
            None,
            env(&[
                (
                    "KUMA_API_SERVER_CORS_ALLOWED_DOMAINS",
                    "https://a.example, https://b.example",
                ),
                ("KUMA_STORE_POSTGRES_PASSWORD", "hunter2"),
            ]),
        )
        .unwrap();
        assert_eq!(
            l.config.api_server.cors_allowed_domains,
            vec!["https://a.example", "https://b.example"]
        );
        let r = redacted(&l.merged);
        assert_eq!(r["store"]["postgres"]["password"], "***");
        assert!(!r.to_string().contains("hunter2"));
    }
}
