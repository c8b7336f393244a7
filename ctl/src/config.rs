//! `~/.kumactl/config`: control planes, contexts and the current context, in
//! Kuma's YAML (camelCase keys, empty fields omitted, keys in alphabetical order
//! as Kuma's protobuf-to-YAML writer emits them). Unknown keys are dropped, as Kuma
//! drops them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// Name of the control plane and context kumactl starts with.
pub const LOCAL: &str = "local";
/// Address of the local control plane's API server.
pub const LOCAL_URL: &str = "http://localhost:5681";

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Configuration {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contexts: Vec<Context>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub control_planes: Vec<ControlPlane>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_context: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    pub control_plane: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<ContextDefaults>,
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextDefaults {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mesh: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlane {
    pub coordinates: Coordinates,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Coordinates {
    pub api_server: ApiServer,
}

/// How to reach and authenticate to one API server. `Debug` hides `authConf`,
/// which holds tokens.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiServer {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auth_conf: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_cert_file: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_cert_file: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_key_file: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_verify: bool,
    pub url: String,
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer")
            .field("url", &self.url)
            .field("auth_type", &self.auth_type)
            .field("auth_conf_keys", &self.auth_conf.keys().collect::<Vec<_>>())
            .field("ca_cert_file", &self.ca_cert_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .field(
                "headers",
                &self.headers.iter().map(|h| &h.key).collect::<Vec<_>>(),
            )
            .field("skip_verify", &self.skip_verify)
            .finish()
    }
}

impl ApiServer {
    /// The bearer token for `authType: tokens` (`authConf.token`).
    pub fn bearer_token(&self) -> Option<&str> {
        (self.auth_type == "tokens")
            .then(|| self.auth_conf.get("token").map(String::as_str))
            .flatten()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub key: String,
    pub value: String,
}

impl Configuration {
    /// What kumactl uses when no file exists: the `local` control plane.
    pub fn default_local() -> Self {
        Configuration {
            contexts: vec![Context {
                control_plane: LOCAL.into(),
                defaults: None,
                name: LOCAL.into(),
            }],
            control_planes: vec![ControlPlane {
                coordinates: Coordinates {
                    api_server: ApiServer {
                        url: LOCAL_URL.into(),
                        ..ApiServer::default()
                    },
                },
                name: LOCAL.into(),
            }],
            current_context: LOCAL.into(),
        }
    }

    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        if text.trim().is_empty() {
            return Ok(Configuration::default());
        }
        Ok(serde_yaml::from_str(text)?)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }

    pub fn context(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name)
    }

    pub fn current(&self) -> Option<&Context> {
        self.context(&self.current_context)
    }

    pub fn control_plane(&self, name: &str) -> Option<&ControlPlane> {
        self.control_planes.iter().find(|c| c.name == name)
    }

    /// The control plane of the given context, or of the current one.
    pub fn active_control_plane(&self, context: Option<&str>) -> anyhow::Result<&ControlPlane> {
        let ctx = match context {
            Some(name) => self
                .context(name)
                .with_context(|| format!("there is no context with name {name:?}"))?,
            None => self.current().context(
                "there is no active Control Plane. Use `kumactl config control-planes add` to add a Control Plane and make it active",
            )?,
        };
        self.control_plane(&ctx.control_plane).with_context(|| {
            format!(
                "context {:?} refers to an unknown Control Plane {:?}",
                ctx.name, ctx.control_plane
            )
        })
    }

    /// Adds a control plane and its context and makes it current.
    pub fn add_control_plane(&mut self, cp: ControlPlane, overwrite: bool) -> anyhow::Result<()> {
        let name = cp.name.clone();
        match self.control_planes.iter_mut().find(|c| c.name == name) {
            Some(_) if !overwrite => bail!(
                "Control Plane with name {name:?} already exists. Use --overwrite to replace an existing one."
            ),
            Some(existing) => *existing = cp,
            None => self.control_planes.push(cp),
        }
        let ctx = Context {
            control_plane: name.clone(),
            defaults: None,
            name: name.clone(),
        };
        match self.contexts.iter_mut().find(|c| c.name == name) {
            Some(_) if !overwrite => bail!("Context with name {name:?} already exists"),
            Some(existing) => *existing = ctx,
            None => self.contexts.push(ctx),
        }
        self.current_context = name;
        Ok(())
    }

    fn remove_context(&mut self, name: &str) {
        self.contexts.retain(|c| c.name != name);
        if self.current_context == name {
            self.current_context = self
                .contexts
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_default();
        }
    }

    /// Removes a control plane and every context pointing at it.
    pub fn remove_control_plane(&mut self, name: &str) -> anyhow::Result<()> {
        if self.control_plane(name).is_none() {
            bail!("there is no Control Plane with name {name:?}");
        }
        let contexts: Vec<String> = self
            .contexts
            .iter()
            .filter(|c| c.control_plane == name)
            .map(|c| c.name.clone())
            .collect();
        for ctx in contexts {
            self.remove_context(&ctx);
        }
        self.control_planes.retain(|c| c.name != name);
        Ok(())
    }

    pub fn switch(&mut self, name: &str) -> anyhow::Result<()> {
        if self.context(name).is_none() {
            bail!("there is no Control Plane with name {name:?}");
        }
        self.current_context = name.to_owned();
        Ok(())
    }
}

/// Where the config lives: `--config-file`, else `$HOME/.kumactl/config`.
pub fn config_path(explicit: Option<&Path>) -> PathBuf {
    match explicit {
        Some(p) => p.to_owned(),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".kumactl")
            .join("config"),
    }
}

/// Loads the config. An explicit file must exist; a missing default file gives
/// the `local` control plane, as Kuma does.
pub fn load(explicit: Option<&Path>) -> anyhow::Result<Configuration> {
    let path = config_path(explicit);
    if !path.exists() {
        if explicit.is_some() {
            bail!(
                "Failed to access configuration file {:?}",
                path.display().to_string()
            );
        }
        return Ok(Configuration::default_local());
    }
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "Failed to read configuration from file {:?}",
            path.display().to_string()
        )
    })?;
    Configuration::from_yaml(&text).with_context(|| {
        format!(
            "Failed to parse configuration from file {:?}",
            path.display().to_string()
        )
    })
}

/// Writes the config with mode 0600 (it may hold tokens), creating its directory.
pub fn save(explicit: Option<&Path>, cfg: &Configuration) -> anyhow::Result<()> {
    let path = config_path(explicit);
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "Failed to create a directory {:?}",
                dir.display().to_string()
            )
        })?;
    }
    write_private(&path, cfg.to_yaml().as_bytes()).with_context(|| {
        format!(
            "Failed to write configuration into file {:?}",
            path.display().to_string()
        )
    })
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUMA_VIEW_GOLDEN: &str = "\
contexts:
- controlPlane: test1
  defaults:
    mesh: demo
  name: test1
- controlPlane: test2
  defaults:
    mesh: default
  name: test2
controlPlanes:
- coordinates:
    apiServer:
      url: https://test1.internal:5681
  name: test1
- coordinates:
    apiServer:
      url: https://test2.internal:5681
  name: test2
currentContext: test1
";

    fn cp(name: &str, url: &str) -> ControlPlane {
        ControlPlane {
            coordinates: Coordinates {
                api_server: ApiServer {
                    url: url.into(),
                    ..ApiServer::default()
                },
            },
            name: name.into(),
        }
    }

    #[test]
    fn reads_and_writes_kumas_format_byte_for_byte() {
        let cfg = Configuration::from_yaml(KUMA_VIEW_GOLDEN).unwrap();
        assert_eq!(
            cfg.current().unwrap().defaults.as_ref().unwrap().mesh,
            "demo"
        );
        assert_eq!(cfg.to_yaml(), KUMA_VIEW_GOLDEN);
    }

    #[test]
    fn reads_full_api_server_coordinates() {
        let cfg = Configuration::from_yaml(
            "
controlPlanes:
  - name: example
    coordinates:
      apiServer:
        url: https://cp.internal:5682
        caCertFile: /tmp/ca.pem
        clientCertFile: /tmp/c.pem
        clientKeyFile: /tmp/k.pem
        skipVerify: true
        authType: tokens
        authConf:
          token: secret-token
        headers:
          - key: abc
            value: xyz
contexts:
  - name: example
    controlPlane: example
currentContext: example
",
        )
        .unwrap();
        let api = &cfg
            .active_control_plane(None)
            .unwrap()
            .coordinates
            .api_server;
        assert_eq!(api.bearer_token(), Some("secret-token"));
        assert!(api.skip_verify);
        assert_eq!(api.headers[0].key, "abc");
        assert!(!format!("{api:?}").contains("secret-token"));
        let back = Configuration::from_yaml(&cfg.to_yaml()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn missing_default_file_means_local_control_plane() {
        let cfg = Configuration::default_local();
        let api = &cfg
            .active_control_plane(None)
            .unwrap()
            .coordinates
            .api_server;
        assert_eq!(api.url, "http://localhost:5681");
        assert_eq!(cfg.current_context, "local");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(load(Some(&missing)).is_err(), "an explicit file must exist");
    }

    #[test]
    fn add_switch_remove_follow_kuma() {
        let mut cfg = Configuration::default_local();
        cfg.add_control_plane(cp("prod", "https://prod:5682"), false)
            .unwrap();
        assert_eq!(cfg.current_context, "prod");
        let err = cfg
            .add_control_plane(cp("prod", "https://x"), false)
            .unwrap_err();
        assert!(err.to_string().contains("--overwrite"));
        cfg.add_control_plane(cp("prod", "https://x"), true)
            .unwrap();
        assert_eq!(
            cfg.control_plane("prod")
                .unwrap()
                .coordinates
                .api_server
                .url,
            "https://x"
        );
        assert_eq!(cfg.control_planes.len(), 2);

        cfg.switch("local").unwrap();
        assert!(cfg.switch("nope").is_err());
        cfg.switch("prod").unwrap();
        cfg.remove_control_plane("prod").unwrap();
        assert_eq!(
            cfg.current_context, "local",
            "falls back to the first context"
        );
        cfg.remove_control_plane("local").unwrap();
        assert_eq!(cfg.current_context, "");
        assert!(cfg.active_control_plane(None).is_err());
        assert!(cfg.remove_control_plane("local").is_err());
    }

    #[test]
    fn save_then_load_round_trips_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config");
        let mut cfg = Configuration::default_local();
        cfg.add_control_plane(cp("a", "http://a:5681"), false)
            .unwrap();
        save(Some(&path), &cfg).unwrap();
        assert_eq!(load(Some(&path)).unwrap(), cfg);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn unknown_keys_are_dropped_as_kuma_does() {
        // Kuma reads old files with `addHeaders` and writes them back without it.
        let cfg = Configuration::from_yaml("currentContext: x\naddHeaders: 1\n").unwrap();
        assert_eq!(cfg.to_yaml(), "currentContext: x\n");
    }
}
