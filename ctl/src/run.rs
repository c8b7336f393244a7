//! Runs one parsed command. Offline commands (config, generate keys and
//! certificates, offline tokens, apply --dry-run, completion) never open a socket.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use anyhow::{Context as _, bail};
use chrono::Utc;
use clap::CommandFactory;
use kuma_auth::{DataplaneIdentity, ProxyType, UserIdentity, ZoneIdentity};
use kuma_model::ResourceKind;
use serde_json::{Value, json};

use crate::cli::*;
use crate::client::{ApiClient, Upsert};
use crate::config::{self, ApiServer, ControlPlane, Coordinates, Header};
use crate::printers::{self, table};
use crate::{generate, manifest};

/// Everything a command may need from the global flags.
pub struct Ctx<'a> {
    pub cli: &'a Cli,
    pub out: &'a mut dyn Write,
}

impl Ctx<'_> {
    fn config(&self) -> anyhow::Result<config::Configuration> {
        config::load(self.cli.config_file.as_deref())
    }

    fn save(&self, cfg: &config::Configuration) -> anyhow::Result<()> {
        if self.cli.no_config {
            return Ok(());
        }
        config::save(self.cli.config_file.as_deref(), cfg)
    }

    fn mesh(&self) -> String {
        if let Some(m) = &self.cli.mesh {
            return m.clone();
        }
        self.config()
            .ok()
            .and_then(|c| {
                let ctx = match &self.cli.context {
                    Some(name) => c.context(name).cloned(),
                    None => c.current().cloned(),
                };
                ctx.and_then(|ctx| ctx.defaults).map(|d| d.mesh)
            })
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "default".to_owned())
    }

    fn client(&self) -> anyhow::Result<ApiClient> {
        let cfg = self.config()?;
        let cp = cfg.active_control_plane(self.cli.context.as_deref())?;
        ApiClient::for_control_plane(cp, self.cli.api_timeout)
    }
}

pub async fn run(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match &ctx.cli.command {
        Command::Config(c) => run_config(ctx, c).await,
        Command::Apply(a) => run_apply(ctx, a).await,
        Command::Get(g) => run_get(ctx, g).await,
        Command::Delete(d) => run_delete(ctx, d).await,
        Command::Inspect(i) => run_inspect(ctx, i).await,
        Command::Generate(g) => run_generate(ctx, g).await,
        Command::Version(v) => run_version(ctx, v).await,
        Command::Completion(c) => {
            let shell = match c.shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut Cli::command(), "kumactl", ctx.out);
            Ok(())
        }
    }
}

async fn run_config(ctx: &mut Ctx<'_>, cmd: &ConfigCommand) -> anyhow::Result<()> {
    let mut cfg = ctx.config()?;
    match cmd {
        ConfigCommand::View => write!(ctx.out, "{}", cfg.to_yaml())?,
        ConfigCommand::ControlPlanes(ControlPlanesCommand::List) => {
            let active = cfg.current().map(|c| c.control_plane.clone());
            let rows = cfg
                .control_planes
                .iter()
                .map(|cp| {
                    vec![
                        if active.as_deref() == Some(cp.name.as_str()) {
                            "*"
                        } else {
                            ""
                        }
                        .to_owned(),
                        cp.name.clone(),
                        cp.coordinates.api_server.url.clone(),
                    ]
                })
                .collect::<Vec<_>>();
            write!(ctx.out, "{}", table(&["ACTIVE", "NAME", "ADDRESS"], &rows))?;
        }
        ConfigCommand::ControlPlanes(ControlPlanesCommand::Switch(a)) => {
            cfg.switch(&a.name)?;
            ctx.save(&cfg)?;
            writeln!(ctx.out, "switched active Control Plane to {:?}", a.name)?;
        }
        ConfigCommand::ControlPlanes(ControlPlanesCommand::Remove(a)) => {
            cfg.remove_control_plane(&a.name)?;
            ctx.save(&cfg)?;
            writeln!(ctx.out, "removed Control Plane {:?}", a.name)?;
            match cfg.current() {
                Some(c) => writeln!(
                    ctx.out,
                    "switched active Control Plane to {:?}",
                    c.control_plane
                )?,
                None => writeln!(
                    ctx.out,
                    "there is no active Control Plane left. Use `kumactl config control-planes add` to add a Control Plane and make it active"
                )?,
            }
        }
        ConfigCommand::ControlPlanes(ControlPlanesCommand::Add(a)) => {
            let cp = control_plane_from_args(a)?;
            if !a.skip_check {
                let client = ApiClient::for_control_plane(&cp, ctx.cli.api_timeout)?;
                let index = client
                    .index()
                    .await
                    .context("could not connect to the Control Plane API Server")?;
                check_product(&index)?;
            }
            cfg.add_control_plane(cp, a.overwrite)?;
            ctx.save(&cfg)?;
            writeln!(ctx.out, "added Control Plane {:?}", a.name)?;
            writeln!(ctx.out, "switched active Control Plane to {:?}", a.name)?;
        }
    }
    Ok(())
}

/// kumactl talks to Kuma; a preview build of another product is let through,
/// as Kuma does.
fn check_product(index: &crate::client::IndexResponse) -> anyhow::Result<()> {
    if index.product != PRODUCT && !index.version.contains("preview") {
        bail!(
            "this CLI is for {PRODUCT} but the control plane you're connected to is {}. Please use the CLI for your control plane",
            if index.product.is_empty() {
                "an unknown product"
            } else {
                &index.product
            }
        );
    }
    Ok(())
}

/// The product kumactl is the CLI of.
const PRODUCT: &str = "Kuma";

fn control_plane_from_args(a: &AddControlPlaneArgs) -> anyhow::Result<ControlPlane> {
    let url = reqwest::Url::parse(&a.address).context("API Server URL is invalid")?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("API Server URL is invalid: scheme must be http or https");
    }
    if a.client_cert_file.is_some() != a.client_key_file.is_some() {
        bail!("Both --client-cert-file and --client-key-file needs to be specified");
    }
    let auth_conf: BTreeMap<String, String> = a.auth_conf.iter().cloned().collect();
    match a.auth_type.as_deref() {
        None | Some("") => {}
        Some("tokens") => {
            if !auth_conf.contains_key("token") {
                bail!("--auth-conf is not valid: provide token=YOUR_TOKEN");
            }
        }
        Some(other) => bail!("authentication plugin of type {other:?} is not found"),
    }
    let mut headers: Vec<Header> = a
        .headers
        .iter()
        .map(|(key, value)| Header {
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    headers.sort_by(|x, y| x.key.cmp(&y.key));
    Ok(ControlPlane {
        coordinates: Coordinates {
            api_server: ApiServer {
                auth_conf,
                auth_type: a.auth_type.clone().unwrap_or_default(),
                ca_cert_file: a.ca_cert_file.clone().unwrap_or_default(),
                client_cert_file: a.client_cert_file.clone().unwrap_or_default(),
                client_key_file: a.client_key_file.clone().unwrap_or_default(),
                headers,
                skip_verify: a.skip_verify,
                url: a.address.clone(),
            },
        },
        name: a.name.clone(),
    })
}

async fn read_inputs(ctx: &Ctx<'_>, file: &str) -> anyhow::Result<Vec<manifest::Input>> {
    match manifest::Source::parse(file) {
        manifest::Source::Stdin => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("error while reading provided file")?;
            Ok(vec![manifest::Input {
                origin: "<stdin>".into(),
                text,
            }])
        }
        manifest::Source::Path(p) => manifest::read_path(&p),
        manifest::Source::Url(url) => {
            let http = reqwest::Client::builder()
                .timeout(ctx.cli.api_timeout)
                .build()
                .context("error creating new http request")?;
            let response = http
                .get(&url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .context("error with GET http request")?;
            let text = response
                .text()
                .await
                .context("error while reading provided file")?;
            Ok(vec![manifest::Input { origin: url, text }])
        }
    }
}

async fn run_apply(ctx: &mut Ctx<'_>, a: &ApplyArgs) -> anyhow::Result<()> {
    let inputs = read_inputs(ctx, &a.file).await?;
    let vars: BTreeMap<String, String> = a.vars.iter().cloned().collect();
    let manifests = manifest::parse_manifests(&inputs, &vars)?;
    if a.dry_run {
        for (i, m) in manifests.iter().enumerate() {
            if i > 0 {
                writeln!(ctx.out, "---")?;
            }
            write!(ctx.out, "{}", serde_yaml::to_string(&m.body)?)?;
        }
        return Ok(());
    }
    let client = ctx.client()?;
    for m in &manifests {
        let kind = m.input.kind;
        let mesh = m.mesh.as_deref().unwrap_or("");
        let (outcome, warnings) = client
            .put_resource(kind, m.mesh.as_deref(), &m.name, &m.body)
            .await
            .map_err(|e| {
                let resource = match &m.mesh {
                    Some(mesh) => format!("{}/{mesh}/{}", kind.name(), m.name),
                    None => format!("{}/{}", kind.name(), m.name),
                };
                anyhow::anyhow!("{resource} ({}): {e}", m.at)
            })?;
        let action = match outcome {
            Upsert::Created => "Created",
            Upsert::Updated => "Updated",
        };
        writeln!(
            ctx.out,
            "resource type={:?} mesh={mesh:?} name={:?} {action}",
            kind.name(),
            m.name
        )?;
        for w in warnings {
            eprintln!("Warning: {w}");
        }
    }
    Ok(())
}

fn mesh_for(ctx: &Ctx<'_>, kind: ResourceKind) -> Option<String> {
    (kind.scope() == kuma_model::Scope::Mesh).then(|| ctx.mesh())
}

async fn run_get(ctx: &mut Ctx<'_>, g: &GetArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let mesh = mesh_for(ctx, g.kind);
    match &g.name {
        Some(name) => {
            let item = client
                .get_resource(g.kind, mesh.as_deref(), name)
                .await
                .map_err(|e| {
                    if e.is_not_found() {
                        match &mesh {
                            Some(mesh) => anyhow::anyhow!("No resources found in {mesh} mesh"),
                            None => anyhow::anyhow!("No resources found"),
                        }
                    } else {
                        e.into()
                    }
                })?;
            print_items(
                ctx,
                g.kind,
                g.output,
                std::slice::from_ref(&item),
                None,
                Some(&item),
            )
        }
        None => {
            let page = client
                .list(g.kind, mesh.as_deref(), g.size, g.offset.as_deref())
                .await?;
            let listing = json!({"total": page.total, "items": page.items, "next": page.next});
            print_items(
                ctx,
                g.kind,
                g.output,
                &page.items,
                page.next.as_deref(),
                Some(&listing),
            )
        }
    }
}

fn print_items(
    ctx: &mut Ctx<'_>,
    kind: ResourceKind,
    format: OutputFormat,
    items: &[Value],
    next: Option<&str>,
    raw: Option<&Value>,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => writeln!(ctx.out, "{}", serde_json::to_string_pretty(&raw)?)?,
        OutputFormat::Yaml => write!(ctx.out, "{}", serde_yaml::to_string(&raw)?)?,
        OutputFormat::Table => {
            write!(
                ctx.out,
                "{}",
                printers::resource_table(kind, items, Utc::now())
            )?;
            if let Some(footer) = printers::pagination_footer(next) {
                write!(ctx.out, "{footer}")?;
            }
        }
    }
    Ok(())
}

async fn run_delete(ctx: &mut Ctx<'_>, d: &DeleteArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let mesh = mesh_for(ctx, d.kind);
    let display = d.kind.name();
    client
        .delete_resource(d.kind, mesh.as_deref(), &d.name)
        .await
        .map_err(|e| {
            if e.is_not_found() {
                match &mesh {
                    Some(m) => anyhow::anyhow!(
                        "there is no {display} with name {:?} in mesh {m:?}",
                        d.name
                    ),
                    None => anyhow::anyhow!("there is no {display} with name {:?}", d.name),
                }
            } else {
                e.into()
            }
        })?;
    writeln!(ctx.out, "deleted {display} {:?}", d.name)?;
    Ok(())
}

async fn run_inspect_dataplane(
    ctx: &mut Ctx<'_>,
    args: &crate::cli::InspectDataplaneArgs,
) -> anyhow::Result<()> {
    use crate::cli::InspectDataplaneType as T;
    let suffix = match args.kind {
        T::Config => "_config",
        T::Rules => "_rules",
        T::ConfigDump | T::Policies => anyhow::bail!(
            "--type={} is not served by this control plane yet; use --type=config or --type=rules",
            clap::ValueEnum::to_possible_value(&args.kind)
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default()
        ),
    };
    let client = ctx.client()?;
    let mesh = ctx.mesh();
    let path = format!("/meshes/{mesh}/dataplanes/{}/{suffix}", args.name);
    let value: serde_json::Value = client.get_json(&path).await.map_err(|e| {
        if e.is_not_found() {
            anyhow::anyhow!(
                "there is no Dataplane with name {:?} in mesh {mesh:?}",
                args.name
            )
        } else {
            e.into()
        }
    })?;
    match args.output {
        OutputFormat::Yaml => write!(ctx.out, "{}", serde_yaml::to_string(&value)?)?,
        OutputFormat::Json | OutputFormat::Table => {
            writeln!(ctx.out, "{}", serde_json::to_string_pretty(&value)?)?
        }
    }
    Ok(())
}

async fn run_inspect(ctx: &mut Ctx<'_>, cmd: &InspectCommand) -> anyhow::Result<()> {
    let mesh = ctx.mesh();
    type Printer = fn(&serde_json::Value, chrono::DateTime<Utc>) -> String;
    let (path, args, printer): (String, _, Printer) = match cmd {
        InspectCommand::Dataplane(args) => return run_inspect_dataplane(ctx, args).await,
        InspectCommand::Meshes(a) => ("/mesh-insights".to_owned(), a, |p, _| {
            printers::mesh_insights_table(p)
        }),
        InspectCommand::Dataplanes(a) => (
            format!("/meshes/{mesh}/dataplanes+insights"),
            a,
            printers::dataplane_overviews_table,
        ),
        InspectCommand::Zones(a) => (
            "/zones+insights".to_owned(),
            a,
            printers::zone_overviews_table,
        ),
        InspectCommand::Services(a) => (format!("/meshes/{mesh}/service-insights"), a, |p, _| {
            printers::service_insights_table(p)
        }),
    };
    let client = ctx.client()?;
    let page = client.list_all_json(&path).await?;
    match args.output {
        OutputFormat::Json => writeln!(ctx.out, "{}", serde_json::to_string_pretty(&page)?)?,
        OutputFormat::Yaml => write!(ctx.out, "{}", serde_yaml::to_string(&page)?)?,
        OutputFormat::Table => {
            let text = printer(&page, Utc::now());
            write!(ctx.out, "{text}")?;
        }
    }
    Ok(())
}

fn offline_keys(o: &OfflineSigning) -> anyhow::Result<Option<kuma_auth::KeySet>> {
    match (&o.signing_key_path, &o.kid) {
        (Some(path), Some(kid)) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("could not read signing key {}", path.display()))?;
            generate::offline_key_set(&pem, kid).map(Some)
        }
        (Some(_), None) => bail!("--kid is required when --signing-key-path is used"),
        (None, Some(_)) => bail!("--kid cannot be used when --signing-key-path is not used"),
        (None, None) => Ok(None),
    }
}

async fn run_generate(ctx: &mut Ctx<'_>, cmd: &GenerateCommand) -> anyhow::Result<()> {
    let valid_for_text = |d: std::time::Duration| kuma_auth::format_go_duration(d);
    match cmd {
        GenerateCommand::SigningKey(a) => write!(ctx.out, "{}", generate::signing_key(a.format)?)?,
        GenerateCommand::PublicKey(a) => {
            let pem = std::fs::read_to_string(&a.signing_key_path)
                .context("could not read a signing key file")?;
            write!(ctx.out, "{}", generate::public_key(&pem)?)?;
        }
        GenerateCommand::TlsCertificate(a) => {
            let pair = generate::self_signed_cert(a.cert_type, a.key_type, &a.hostnames)?;
            if a.key_file == "-" {
                write!(ctx.out, "{}", pair.key_pem)?;
            } else {
                config::write_private(a.key_file.as_ref(), pair.key_pem.as_bytes())
                    .context("could not write the key file")?;
            }
            if a.cert_file == "-" {
                write!(ctx.out, "{}", pair.cert_pem)?;
            } else {
                config::write_private(a.cert_file.as_ref(), pair.cert_pem.as_bytes())
                    .context("could not write the cert file")?;
            }
            if a.cert_file != "-" && a.key_file != "-" {
                writeln!(ctx.out, "Private key saved in {}", a.key_file)?;
                writeln!(ctx.out, "Certificate saved in {}", a.cert_file)?;
            }
        }
        GenerateCommand::UserToken(a) => {
            let token = match offline_keys(&a.offline)? {
                Some(keys) => kuma_auth::issue_user_token(
                    &keys,
                    &UserIdentity::new(&a.name, &a.groups),
                    a.valid_for,
                    Utc::now(),
                )?
                .into_string(),
                None => ctx
                    .client()?
                    .generate_token(
                        "user",
                        &json!({"name": a.name, "groups": a.groups, "validFor": valid_for_text(a.valid_for)}),
                    )
                    .await
                    .context("failed to generate a user token")?,
            };
            write!(ctx.out, "{token}")?;
        }
        GenerateCommand::ZoneToken(a) => {
            let token = match offline_keys(&a.offline)? {
                Some(keys) => kuma_auth::issue_zone_token(
                    &keys,
                    &ZoneIdentity::new(&a.zone, &a.scope),
                    a.valid_for,
                    Utc::now(),
                )?
                .into_string(),
                None => ctx
                    .client()?
                    .generate_token(
                        "zone",
                        &json!({"zone": a.zone, "scope": a.scope, "validFor": valid_for_text(a.valid_for)}),
                    )
                    .await
                    .context("failed to generate a zone token")?,
            };
            write!(ctx.out, "{token}")?;
        }
        GenerateCommand::DataplaneToken(a) => {
            let proxy_type = match a.proxy_type.as_deref() {
                None | Some("") => None,
                Some("dataplane") => Some(ProxyType::Dataplane),
                Some(other) => bail!("{other} is not a valid proxy type"),
            };
            let tags: BTreeMap<String, Vec<String>> = a
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.split(',').map(str::to_owned).collect()))
                .collect();
            let mesh = ctx.mesh();
            let token = match offline_keys(&a.offline)? {
                Some(keys) => {
                    let mut id = DataplaneIdentity::for_mesh(&mesh);
                    id.name = a.name.clone().filter(|n| !n.is_empty());
                    id.tags = tags;
                    id.proxy_type = proxy_type;
                    id.workload = a.workload.clone().filter(|w| !w.is_empty());
                    kuma_auth::issue_dataplane_token(&keys, &id, a.valid_for, Utc::now())?
                        .into_string()
                }
                None => ctx
                    .client()?
                    .generate_token("dataplane", &{
                        let mut request = json!({
                            "name": a.name.clone().unwrap_or_default(),
                            "mesh": mesh,
                            "tags": tags,
                            "type": a.proxy_type.clone().unwrap_or_default(),
                            "validFor": valid_for_text(a.valid_for),
                        });
                        // Sent only when asked for: servers that predate
                        // workload-bound tokens refuse the field.
                        if let Some(w) = a.workload.as_ref().filter(|w| !w.is_empty()) {
                            request["workload"] = json!(w);
                        }
                        request
                    })
                    .await
                    .context("failed to generate a dataplane token")?,
            };
            write!(ctx.out, "{token}")?;
        }
    }
    Ok(())
}

async fn run_version(ctx: &mut Ctx<'_>, v: &VersionArgs) -> anyhow::Result<()> {
    if !v.detailed {
        writeln!(ctx.out, "Client: Kuma {}", env!("CARGO_PKG_VERSION"))?;
    } else {
        writeln!(ctx.out, "Product: Kuma")?;
        writeln!(ctx.out, "Version: {}", env!("CARGO_PKG_VERSION"))?;
    }
    let server = match ctx.client() {
        Ok(client) => client.index().await.ok(),
        Err(_) => None,
    };
    match server {
        Some(index) => writeln!(
            ctx.out,
            "Control Plane: {} {}",
            index.product, index.version
        )?,
        None => writeln!(ctx.out, "Control Plane: unable to retrieve server version")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    async fn run_args(args: &[&str]) -> anyhow::Result<String> {
        let cli = Cli::try_parse_from(args)?;
        let mut out = Vec::new();
        let mut ctx = Ctx {
            cli: &cli,
            out: &mut out,
        };
        run(&mut ctx).await?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn config_commands_edit_the_file_as_kuma() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config");
        let cfg = cfg.to_str().unwrap();
        std::fs::write(cfg, config::Configuration::default_local().to_yaml()).unwrap();
        let out = run_args(&[
            "kumactl",
            "--config-file",
            cfg,
            "config",
            "control-planes",
            "add",
            "--name",
            "prod",
            "--address",
            "https://prod:5682",
            "--skip-check",
            "--auth-type",
            "tokens",
            "--auth-conf",
            "token=abc",
            "--headers",
            "b=2",
            "--headers",
            "a=1",
        ])
        .await
        .unwrap();
        assert_eq!(
            out,
            "added Control Plane \"prod\"\nswitched active Control Plane to \"prod\"\n"
        );
        let list = run_args(&[
            "kumactl",
            "--config-file",
            cfg,
            "config",
            "control-planes",
            "list",
        ])
        .await
        .unwrap();
        assert_eq!(
            list,
            "ACTIVE   NAME    ADDRESS\n         local   http://localhost:5681\n*        prod    https://prod:5682\n"
        );
        let view = run_args(&["kumactl", "--config-file", cfg, "config", "view"])
            .await
            .unwrap();
        assert!(view.contains("authType: tokens"), "{view}");
        assert!(view.contains("- key: a\n"), "headers sorted: {view}");

        run_args(&[
            "kumactl",
            "--config-file",
            cfg,
            "config",
            "control-planes",
            "switch",
            "--name",
            "local",
        ])
        .await
        .unwrap();
        let out = run_args(&[
            "kumactl",
            "--config-file",
            cfg,
            "config",
            "control-planes",
            "remove",
            "--name",
            "local",
        ])
        .await
        .unwrap();
        assert!(
            out.ends_with("switched active Control Plane to \"prod\"\n"),
            "{out}"
        );
        let err = run_args(&[
            "kumactl",
            "--config-file",
            cfg,
            "config",
            "control-planes",
            "add",
            "--name",
            "x",
            "--address",
            "not a url",
            "--skip-check",
        ])
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("API Server URL is invalid"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn apply_dry_run_renders_variables_offline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mesh.yaml");
        std::fs::write(&file, "type: Mesh\nname: {{ name }}\n").unwrap();
        let out = run_args(&[
            "kumactl",
            "apply",
            "-f",
            file.to_str().unwrap(),
            "-v",
            "name=demo",
            "--dry-run",
        ])
        .await
        .unwrap();
        assert_eq!(out, "type: Mesh\nname: demo\n");
    }

    #[tokio::test]
    async fn generate_tls_certificate_writes_files() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        let out = run_args(&[
            "kumactl",
            "generate",
            "tls-certificate",
            "--type",
            "server",
            "--key-type",
            "ecdsa",
            "--hostname",
            "localhost",
            "--cert-file",
            cert.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
        ])
        .await
        .unwrap();
        assert!(out.contains("Certificate saved in"), "{out}");
        assert!(
            std::fs::read_to_string(&cert)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(
            std::fs::read_to_string(&key)
                .unwrap()
                .contains("PRIVATE KEY")
        );
    }

    #[tokio::test]
    async fn generate_offline_tokens_with_a_signing_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("key.pem");
        let pem = run_args(&["kumactl", "generate", "signing-key", "--format", "pem"])
            .await
            .unwrap();
        std::fs::write(&key_path, &pem).unwrap();
        let key_arg = key_path.to_str().unwrap();
        let public = run_args(&[
            "kumactl",
            "generate",
            "public-key",
            "--signing-key-path",
            key_arg,
        ])
        .await
        .unwrap();
        let mut keys = kuma_auth::KeySet::new();
        keys.insert_public_key(
            kuma_auth::KeySerial(1),
            kuma_auth::PublicKey::from_pem(&public).unwrap(),
        );

        let token = run_args(&[
            "kumactl",
            "generate",
            "dataplane-token",
            "-m",
            "demo",
            "--name",
            "dp-1",
            "--tag",
            "kuma.io/service=web,web-api",
            "--valid-for",
            "24h",
            "--signing-key-path",
            key_arg,
            "--kid",
            "1",
        ])
        .await
        .unwrap();
        let claims = kuma_auth::verify_dataplane_token(
            &keys,
            &kuma_auth::Revocations::none(),
            &token,
            "demo",
            Utc::now(),
        )
        .unwrap();
        assert_eq!(claims.identity.name.as_deref(), Some("dp-1"));
        assert_eq!(claims.identity.tags["kuma.io/service"], ["web", "web-api"]);

        let token = run_args(&[
            "kumactl",
            "generate",
            "zone-token",
            "--zone",
            "zone-1",
            "--valid-for",
            "1h",
            "--signing-key-path",
            key_arg,
            "--kid",
            "1",
        ])
        .await
        .unwrap();
        let zone = kuma_auth::verify_zone_token(
            &keys,
            &kuma_auth::Revocations::none(),
            &token,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(zone.identity.zone, "zone-1");

        let err = run_args(&[
            "kumactl",
            "generate",
            "user-token",
            "--name",
            "a",
            "--valid-for",
            "1h",
            "--signing-key-path",
            key_arg,
        ])
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--kid is required when --signing-key-path is used"
        );
    }

    #[tokio::test]
    async fn completion_scripts_are_generated() {
        for shell in ["bash", "zsh", "fish"] {
            let out = run_args(&["kumactl", "completion", shell]).await.unwrap();
            assert!(out.contains("kumactl"), "{shell}");
            assert!(out.contains("control-planes"), "{shell}");
        }
    }
}
