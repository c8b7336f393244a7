//! kumactl: the CLI of the control plane's REST API.
//!
//! ```text
//! argv -> cli (clap) -> run::run -> config (~/.kumactl/config)
//!                                -> manifest (apply: files, variables, checks)
//!                                -> generate (keys, certificates, offline tokens)
//!                                -> client (REST: /meshes/{mesh}/{plural}/{name}, /tokens/*)
//! ```

mod cli;
mod client;
mod config;
mod generate;
mod manifest;
mod run;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    // One rustls provider for the whole process: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = cli::Cli::parse();
    let mut stdout = std::io::stdout();
    let mut ctx = run::Ctx {
        cli: &cli,
        out: &mut stdout,
    };
    match run::run(&mut ctx).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
