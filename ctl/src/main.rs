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
mod printers;
mod run;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    // One rustls provider for the whole process: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Exit codes are 0 and 1 only (clap's usage errors would be 2).
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            };
        }
    };
    let mut stdout = std::io::stdout();
    let mut ctx = run::Ctx {
        cli: &cli,
        out: &mut stdout,
    };
    match run::run(&mut ctx).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e:#}", error_label());
            std::process::ExitCode::FAILURE
        }
    }
}

/// `Error` in red on a terminal (unless `NO_COLOR` is set), plain otherwise,
/// so scripts and logs never see escape codes.
fn error_label() -> &'static str {
    use std::io::IsTerminal as _;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    if colour {
        "\x1b[31mError\x1b[0m"
    } else {
        "Error"
    }
}
