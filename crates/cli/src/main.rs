//! `niyet`: the one binary.

mod bench;
mod bench_actions;
mod bench_analytics;
mod bench_erase;
mod bench_profiles;
mod bench_segments;
mod client;
mod demo;
mod import;
mod keys;
mod profile;
mod report;
mod serve;
mod shop;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Ingest allocates and frees many small buffers across threads (request bodies on the
/// runtime, records freed by the log writer); mimalloc measurably beats the system
/// allocator there (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Niyet — a real-time customer data platform in one binary.
///
/// Collects events over the Segment Tracking API, stores them durably and turns them into
/// profiles, segments and actions. Start with `niyet demo`.
#[derive(Debug, Parser)]
#[command(name = "niyet", version, propagate_version = true)]
struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, env = "NIYET_LOG", default_value = "info")]
    log: tracing::Level,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (ingest API, admin API, metrics) on embedded storage.
    Serve(serve::ServeArgs),
    /// Run the server with realistic synthetic shop traffic and a live summary.
    Demo(demo::DemoArgs),
    /// Import events from an NDJSON or CSV file into a running server, or marketing spend
    /// (`niyet import spend FILE.csv`).
    Import(ImportCmd),
    /// Analytics reports of a running server as JSON or CSV: attribution, clv, rfm,
    /// funnel, retention, conversion-rate, intent.
    Report(report::ReportArgs),
    /// Look at customer profiles in a running server.
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
    /// Measure the server: `niyet bench ingest`.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write keys and admin tokens of a running server: list, create, rotate, revoke.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Erasure, export and consent of one person in a running server.
    #[command(subcommand)]
    Privacy(keys::PrivacyCommand),
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ImportCmd {
    #[command(subcommand)]
    what: Option<report::ImportWhat>,
    #[command(flatten)]
    events: Option<import::ImportArgs>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a configuration file and report every problem in it.
    Validate {
        /// The file (default: ./niyet.toml).
        #[arg(default_value = "niyet.toml")]
        file: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // What went wrong and why, for the person at the terminal: no stack trace, even
            // with RUST_BACKTRACE set (that is for panics).
            eprintln!("Error: {e}");
            let causes: Vec<_> = e.chain().skip(1).collect();
            if !causes.is_empty() {
                eprintln!("\nCaused by:");
                for (i, c) in causes.iter().enumerate() {
                    eprintln!("    {i}: {c}");
                }
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(cli.log)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("niyet")
        .build()?;
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => serve::run(a).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Import(ImportCmd { what: Some(w), .. }) => report::import(w).await,
            Command::Import(ImportCmd {
                events: Some(a), ..
            }) => import::run(a).await,
            Command::Import(_) => anyhow::bail!("niyet import FILE, or niyet import spend FILE"),
            Command::Report(a) => report::run(a).await,
            Command::Profile(p) => profile::run(p).await,
            Command::Keys(k) => keys::run(k).await,
            Command::Privacy(p) => keys::run_privacy(p).await,
            Command::Bench(b) => bench::run(b).await,
            Command::Config(ConfigCommand::Validate { file }) => {
                let cfg = niyet_server::Config::from_file(&file)?;
                cfg.validate()?;
                println!("{}: valid", file.display());
                Ok(())
            }
        }
    });
    // A scheduled model fit still running on a blocking thread must not hold up the exit:
    // it only reads state, and the log it would publish to is already closed.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
