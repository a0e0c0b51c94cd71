//! `niyet serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use niyet_model::SystemClock;
use niyet_server::{Config, Server};

/// Where configuration comes from: file, then `NIYET_*` environment, then flags.
#[derive(Debug, Args, Clone)]
pub struct ConfigArgs {
    /// Configuration file; `./niyet.toml` is used when present.
    #[arg(long, short, env = "NIYET_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data directory [default: ./niyet-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Arguments of `niyet serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Builds the configuration in force.
pub fn load_config(a: &ConfigArgs) -> anyhow::Result<Config> {
    let mut cfg = match &a.config {
        Some(p) => Config::from_file(p)?,
        None => {
            let p = PathBuf::from("niyet.toml");
            if p.exists() {
                Config::from_file(&p)?
            } else {
                Config::default()
            }
        }
    };
    cfg.apply_env(|k| std::env::var(k).ok())?;
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if let Some(d) = &a.data_dir {
        cfg.data_dir = d.clone();
    }
    Ok(cfg)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

pub async fn run(a: ServeArgs) -> anyhow::Result<()> {
    let cfg = load_config(&a.config)?;
    let data_dir = cfg.data_dir.clone();
    let server = Server::bind(cfg, Arc::new(SystemClock))
        .await
        .context("starting the server")?;
    let addr = server.local_addr()?;
    tracing::info!(%addr, data_dir = %data_dir.display(), "niyet is listening");
    eprintln!(
        "niyet listening on http://{addr}/  (data in {})",
        data_dir.display()
    );
    for (name, key) in &server.write_keys {
        eprintln!("  write key for source '{name}': {key}");
    }
    eprintln!("  admin token: {}", server.admin_token);
    server.run(shutdown_signal()).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
