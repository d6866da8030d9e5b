//! `spin-test-host`: run a Spin application's components like `spin up`, for tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use spin_test_host::app::{self, Options};
use spin_test_host::key_value::CasMode;

/// Runs a Spin application (manifest v2) on wasmtime, for testing its components.
/// Not a Spin runtime: see the crate documentation for what it leaves out.
#[derive(Parser)]
#[command(name = "spin-test-host", version)]
struct Cli {
    /// The application manifest.
    #[arg(long, short = 'f', default_value = "spin.toml")]
    manifest: PathBuf,

    /// The address to serve HTTP on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,

    /// Where the key-value store's SQLite file lives [default: .spin next to the manifest].
    #[arg(long)]
    state_dir: Option<PathBuf>,

    /// Run only these components' triggers (repeatable), like `spin up -c`.
    #[arg(long = "component", short = 'c', value_name = "ID")]
    components: Vec<String>,

    /// Run each component's build command first, like `spin up --build`.
    #[arg(long)]
    build: bool,

    /// Set an application variable, overriding the environment and the default (repeatable).
    #[arg(long = "variable", value_name = "NAME=VALUE", value_parser = parse_variable)]
    variables: Vec<(String, String)>,

    /// Compare-and-swap behaviour: Spin's SQLite store, or Spin 4.0.2's Redis-backed
    /// store, which writes and then reports `cas-failed`.
    #[arg(long, value_enum, default_value_t = CasMode::Sqlite)]
    kv_cas: CasMode,
}

fn parse_variable(s: &str) -> Result<(String, String)> {
    let (name, value) = s.split_once('=').context("expected NAME=VALUE")?;
    Ok((name.to_owned(), value.to_owned()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = app::run(Options {
        manifest: cli.manifest,
        listen: cli.listen,
        state_dir: cli.state_dir,
        components: cli.components,
        build: cli.build,
        variables: cli.variables,
        kv_cas: cli.kv_cas,
    })
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The cause chain without a backtrace, in the shape `spin up` prints.
            eprintln!("Error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("Caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
