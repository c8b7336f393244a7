//! `kuma-cp`: loads configuration, opens the store, and runs the control
//! plane's components until SIGINT/SIGTERM.

use kuma_cp::{config, run};

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// glibc's allocator spent a quarter of the CPU of a PUT under load
/// (docs/benchmarks/rest); mimalloc's thread-local free lists do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "kuma-cp",
    about = "Universal Control Plane for Envoy-based Service Mesh",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Launch the control plane.
    Run {
        /// Configuration file (Kuma's YAML keys); KUMA_* variables override it.
        #[arg(short = 'c', long = "config-file")]
        config_file: Option<PathBuf>,
        /// Log level: debug, info, warn, error (or a tracing filter).
        #[arg(long = "log-level", default_value = "info", env = "KUMA_LOG_LEVEL")]
        log_level: String,
        /// Log as JSON lines.
        #[arg(long = "log-output-json", default_value_t = false)]
        log_json: bool,
    },
    /// Database migrations.
    Migrate {
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// Print the version.
    Version {
        /// Print details.
        #[arg(short = 'a', long)]
        detailed: bool,
    },
}

#[derive(Subcommand)]
enum MigrateCommand {
    /// Apply every pending migration to the configured PostgreSQL database.
    Up {
        #[arg(short = 'c', long = "config-file")]
        config_file: Option<PathBuf>,
        #[arg(long = "log-level", default_value = "info", env = "KUMA_LOG_LEVEL")]
        log_level: String,
    },
}

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
        Command::Run {
            config_file,
            log_level,
            log_json,
        } => {
            kuma_telemetry::init_logging(&log_level, log_json);
            let loaded = config::load(config_file.as_deref(), |k| std::env::var(k).ok())?;
            tokio::runtime::Runtime::new()?.block_on(run::run(loaded))
        }
        Command::Migrate {
            command:
                MigrateCommand::Up {
                    config_file,
                    log_level,
                },
        } => {
            kuma_telemetry::init_logging(&log_level, false);
            let loaded = config::load(config_file.as_deref(), |k| std::env::var(k).ok())?;
            tokio::runtime::Runtime::new()?.block_on(run::migrate_up(&loaded.config))
        }
    }
}
