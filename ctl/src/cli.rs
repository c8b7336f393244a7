//! kumactl's command tree and flags, named as Kuma names them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kuma_model::ResourceKind;

use crate::generate::{CertType, KeyType, SigningKeyFormat};

#[derive(Debug, Parser)]
#[command(
    name = "kumactl",
    about = "Management tool for Kuma",
    long_about = "Management tool for Kuma, a service mesh control plane.",
    version = env!("CARGO_PKG_VERSION")
)]
pub struct Cli {
    /// path to the configuration file to use
    #[arg(long, global = true, env = "KUMACTL_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// context to use
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// mesh to use (default: the context's default mesh, else "default")
    #[arg(short = 'm', long, global = true)]
    pub mesh: Option<String>,
    /// the timeout for api calls (a Go duration; 0 means no timeout)
    #[arg(long, global = true, default_value = "1m", value_parser = parse_duration)]
    pub api_timeout: Duration,
    /// if set no config file and config directory will be created
    #[arg(long, global = true)]
    pub no_config: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage kumactl config
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create or modify Kuma resources
    Apply(ApplyArgs),
    /// Show Kuma resources
    Get(GetArgs),
    /// Delete Kuma resources
    Delete(DeleteArgs),
    /// Inspect Kuma resources
    #[command(subcommand)]
    Inspect(InspectCommand),
    /// Generate resources, tokens, etc
    #[command(subcommand)]
    Generate(GenerateCommand),
    /// Print version
    Version(VersionArgs),
    /// Output shell completion code for bash, fish or zsh
    Completion(CompletionArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show kumactl config
    View,
    /// Manage known Control Planes
    #[command(subcommand, name = "control-planes")]
    ControlPlanes(ControlPlanesCommand),
}

#[derive(Debug, Subcommand)]
pub enum ControlPlanesCommand {
    /// Add a Control Plane
    Add(AddControlPlaneArgs),
    /// List Control Planes
    List,
    /// Switch active Control Plane
    Switch(NameArg),
    /// Remove a Control Plane
    Remove(NameArg),
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// reference name for the Control Plane (required)
    #[arg(long)]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct AddControlPlaneArgs {
    /// reference name for the Control Plane (required)
    #[arg(long)]
    pub name: String,
    /// URL of the Control Plane API Server (required). Example: http://localhost:5681 or https://localhost:5682
    #[arg(long)]
    pub address: String,
    /// overwrite existing Control Plane with the same reference name
    #[arg(long)]
    pub overwrite: bool,
    /// path to the certificate of a client that is authorized to use the Admin operations of the Control Plane
    #[arg(long)]
    pub client_cert_file: Option<String>,
    /// path to the certificate key of a client that is authorized to use the Admin operations of the Control Plane
    #[arg(long)]
    pub client_key_file: Option<String>,
    /// path to the certificate authority which will be used to verify the Control Plane certificate
    #[arg(long)]
    pub ca_cert_file: Option<String>,
    /// skip CA verification
    #[arg(long)]
    pub skip_verify: bool,
    /// add these headers while communicating to control plane, format key=value
    #[arg(long, value_parser = parse_key_value, value_delimiter = ',')]
    pub headers: Vec<(String, String)>,
    /// authentication type (for example: "tokens")
    #[arg(long)]
    pub auth_type: Option<String>,
    /// authentication configuration for defined authentication type format key=value
    #[arg(long, value_parser = parse_key_value, value_delimiter = ',')]
    pub auth_conf: Vec<(String, String)>,
    /// skip checking if we can connect to the CP
    #[arg(long)]
    pub skip_check: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Path to file or directory to apply, an http(s) URL, or `-` for stdin
    #[arg(short = 'f', long)]
    pub file: String,
    /// Variable to replace in configuration (key=value)
    #[arg(short = 'v', long = "var", value_parser = parse_key_value)]
    pub vars: Vec<(String, String)>,
    /// Resolve variable and prints result out without actual applying
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// kind, singular, plural or short name (e.g. meshes, mesh, meshtimeouts, mt)
    #[arg(value_parser = parse_kind)]
    pub kind: ResourceKind,
    /// name of one resource; lists when omitted
    pub name: Option<String>,
    /// output format
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// limit the number of items in a list
    #[arg(long)]
    pub size: Option<u32>,
    /// the offset that indicates starting element of a list
    #[arg(long)]
    pub offset: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// kind, singular, plural or short name
    #[arg(value_parser = parse_kind)]
    pub kind: ResourceKind,
    /// name of the resource
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// Inspect Meshes
    Meshes(InspectArgs),
    /// Inspect Dataplanes
    Dataplanes(InspectArgs),
    /// Inspect Zones
    Zones(InspectArgs),
    /// Inspect Services
    Services(InspectArgs),
    /// Inspect one Dataplane: the xDS config it is served or its merged policy rules
    Dataplane(InspectDataplaneArgs),
}

/// What `kumactl inspect dataplane NAME --type` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, ValueEnum)]
pub enum InspectDataplaneType {
    /// The xDS resources the control plane serves to the proxy (`_config`).
    #[default]
    Config,
    /// The merged policy rules that apply to the proxy (`_rules`).
    Rules,
    /// Envoy's own /config_dump, fetched through the control plane.
    ConfigDump,
    /// The policies matching the proxy.
    Policies,
}

#[derive(Debug, Args)]
pub struct InspectDataplaneArgs {
    /// name of the dataplane
    pub name: String,
    /// what to show
    #[arg(long = "type", value_enum, default_value_t)]
    pub kind: InspectDataplaneType,
    /// output format (json or yaml)
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// output format
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct OfflineSigning {
    /// path to a file that contains private signing key. When specified, control plane won't be used to issue the token.
    #[arg(long)]
    pub signing_key_path: Option<PathBuf>,
    /// ID of the key that is used to issue a token. Required when --signing-key-path is used.
    #[arg(long)]
    pub kid: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Generate Dataplane Token
    #[command(name = "dataplane-token")]
    DataplaneToken(DataplaneTokenArgs),
    /// Generate Zone Token
    #[command(name = "zone-token")]
    ZoneToken(ZoneTokenArgs),
    /// Generate User Token
    #[command(name = "user-token")]
    UserToken(UserTokenArgs),
    /// Generate signing keys
    #[command(name = "signing-key")]
    SigningKey(SigningKeyArgs),
    /// Generate public key out of signing key
    #[command(name = "public-key")]
    PublicKey(PublicKeyArgs),
    /// Generate a TLS certificate
    #[command(name = "tls-certificate")]
    TlsCertificate(TlsCertificateArgs),
}

#[derive(Debug, Args)]
pub struct DataplaneTokenArgs {
    /// name of the Dataplane
    #[arg(long)]
    pub name: Option<String>,
    /// type of the Dataplane ("dataplane")
    #[arg(long)]
    pub proxy_type: Option<String>,
    /// required tag values for dataplane (split values by comma to provide multiple values)
    #[arg(long = "tag", value_parser = parse_key_value)]
    pub tags: Vec<(String, String)>,
    /// required workload label value for dataplane
    #[arg(long)]
    pub workload: Option<String>,
    /// how long the token will be valid (for example "24h")
    #[arg(long, value_parser = parse_duration)]
    pub valid_for: Duration,
    #[command(flatten)]
    pub offline: OfflineSigning,
}

#[derive(Debug, Args)]
pub struct ZoneTokenArgs {
    /// name of the zone where resides
    #[arg(long)]
    pub zone: String,
    /// scope of resources which the token will be able to identify
    #[arg(long, value_delimiter = ',')]
    pub scope: Vec<String>,
    /// how long the token will be valid (for example "24h")
    #[arg(long, value_parser = parse_duration)]
    pub valid_for: Duration,
    #[command(flatten)]
    pub offline: OfflineSigning,
}

#[derive(Debug, Args)]
pub struct UserTokenArgs {
    /// name of the user
    #[arg(long)]
    pub name: String,
    /// group of the user
    #[arg(long = "group", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// how long the token will be valid (for example "24h")
    #[arg(long, value_parser = parse_duration)]
    pub valid_for: Duration,
    #[command(flatten)]
    pub offline: OfflineSigning,
}

#[derive(Debug, Args)]
pub struct SigningKeyArgs {
    /// format of signing key
    #[arg(long, value_enum, default_value = "pem-base64")]
    pub format: SigningKeyFormat,
}

#[derive(Debug, Args)]
pub struct PublicKeyArgs {
    /// path to a file with PEM-encoded private signing key
    #[arg(long)]
    pub signing_key_path: PathBuf,
}

#[derive(Debug, Args)]
pub struct TlsCertificateArgs {
    /// type of the certificate
    #[arg(long = "type", value_enum)]
    pub cert_type: CertType,
    /// type of the private key
    #[arg(long, value_enum, default_value_t)]
    pub key_type: KeyType,
    /// DNS hostname(s) to issue the certificate for
    #[arg(long = "hostname", value_delimiter = ',', required = true)]
    pub hostnames: Vec<String>,
    /// path to a file with a generated private key ('-' for stdout)
    #[arg(long, default_value = "key.pem")]
    pub key_file: String,
    /// path to a file with a generated TLS certificate ('-' for stdout)
    #[arg(long, default_value = "cert.pem")]
    pub cert_file: String,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print detailed version
    #[arg(short = 'a', long)]
    pub detailed: bool,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    pub shell: CompletionShell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    kuma_auth::parse_go_duration(s).map_err(|e| e.to_string())
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s} must be formatted as key=value"))
}

/// Every word `get`/`delete` accept, from the model's descriptors.
pub fn kind_words() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = ResourceKind::ALL
        .iter()
        .flat_map(|k| {
            let d = k.descriptor();
            [d.kumactl_list_arg, d.kumactl_arg]
        })
        .filter(|w| !w.is_empty())
        .collect();
    words.sort_unstable();
    words.dedup();
    words
}

fn parse_kind(s: &str) -> Result<ResourceKind, String> {
    ResourceKind::from_kumactl_word(s).ok_or_else(|| {
        format!(
            "unknown resource type {s:?}; one of: {}",
            kind_words().join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_kumas_spellings() {
        let cli = Cli::try_parse_from([
            "kumactl",
            "get",
            "meshes",
            "-o",
            "yaml",
            "--size",
            "10",
            "--config-file",
            "/tmp/c",
        ])
        .unwrap();
        let Command::Get(get) = cli.command else {
            panic!()
        };
        assert_eq!(get.kind.name(), "Mesh");
        assert_eq!(get.output, OutputFormat::Yaml);
        assert_eq!(get.size, Some(10));
        assert_eq!(
            cli.config_file.as_deref(),
            Some(std::path::Path::new("/tmp/c"))
        );

        let cli = Cli::try_parse_from([
            "kumactl",
            "apply",
            "-f",
            "-",
            "-v",
            "a=b",
            "--var",
            "c=d=e",
            "--dry-run",
        ])
        .unwrap();
        let Command::Apply(apply) = cli.command else {
            panic!()
        };
        assert_eq!(
            apply.vars,
            [("a".into(), "b".into()), ("c".into(), "d=e".into())]
        );

        let cli = Cli::try_parse_from([
            "kumactl",
            "generate",
            "dataplane-token",
            "-m",
            "demo",
            "--tag",
            "kuma.io/service=web,web-api",
            "--valid-for",
            "24h",
        ])
        .unwrap();
        assert_eq!(cli.mesh.as_deref(), Some("demo"));
        let Command::Generate(GenerateCommand::DataplaneToken(dp)) = cli.command else {
            panic!()
        };
        assert_eq!(dp.valid_for, Duration::from_secs(86_400));
        assert_eq!(dp.tags, [("kuma.io/service".into(), "web,web-api".into())]);

        let cli = Cli::try_parse_from([
            "kumactl",
            "config",
            "control-planes",
            "add",
            "--name",
            "x",
            "--address",
            "http://x:5681",
            "--auth-type",
            "tokens",
            "--auth-conf",
            "token=abc",
            "--headers",
            "a=b",
        ])
        .unwrap();
        let Command::Config(ConfigCommand::ControlPlanes(ControlPlanesCommand::Add(add))) =
            cli.command
        else {
            panic!()
        };
        assert_eq!(add.auth_conf, [("token".into(), "abc".into())]);
    }

    #[test]
    fn refuses_unknown_kinds_listing_the_known_words() {
        let err = Cli::try_parse_from(["kumactl", "get", "bogus"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown resource type \"bogus\""), "{err}");
        assert!(err.contains("meshes"), "{err}");
        assert!(
            Cli::try_parse_from([
                "kumactl",
                "generate",
                "user-token",
                "--name",
                "a",
                "--valid-for",
                "1d"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from(["kumactl", "generate", "tls-certificate", "--type", "server"])
                .is_err()
        );
    }

    #[test]
    fn kind_words_come_from_the_model() {
        let words = kind_words();
        for kind in ResourceKind::ALL {
            let d = kind.descriptor();
            if !d.kumactl_list_arg.is_empty() {
                assert!(words.contains(&d.kumactl_list_arg));
                assert_eq!(parse_kind(d.kumactl_list_arg), Ok(*kind));
            }
        }
    }
}
