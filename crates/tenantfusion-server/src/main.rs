//! `tenantfusion`: the server binary.
//!
//! ```text
//! tenantfusion serve [--data-dir DIR | --memory] [--config tenantfusion.toml]
//!                    [--listen 127.0.0.1:5433] [--max-connections 100]
//! ```

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tenantfusion::{Engine, EngineConfig, Storage};
use tenantfusion_server::{ADMIN, FileConfig, Server, bootstrap_admin};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "tenantfusion",
    version,
    about = "A multi-tenant SQL server on Apache DataFusion"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the PostgreSQL wire protocol.
    Serve(Serve),
}

#[derive(Debug, clap::Args)]
struct Serve {
    /// Keep tables, users and rows in this directory (created if missing).
    #[arg(long, conflicts_with = "memory", required_unless_present = "memory")]
    data_dir: Option<PathBuf>,
    /// Keep everything in memory: gone when the server stops.
    #[arg(long)]
    memory: bool,
    /// Settings and limits (see the tenantfusion-server docs); without it,
    /// the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5433, or the config's].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Connections served at once [default: 100, or the config's].
    #[arg(long)]
    max_connections: Option<usize>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            error!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let Command::Serve(serve) = cli.command;
    match runtime.block_on(run(serve)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(serve: Serve) -> Result<(), Box<dyn std::error::Error>> {
    let mut settings = match &serve.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    if let Some(listen) = serve.listen {
        settings.server.listen = listen;
    }
    if let Some(max) = serve.max_connections {
        settings.server.max_connections = max.max(1);
    }
    let mut config = settings.apply(EngineConfig::default());
    if let Some(dir) = &serve.data_dir {
        config = config.with_storage(Storage::from_url(&dir.to_string_lossy())?);
    }
    let engine = Engine::new(config)?;
    let password = std::env::var("TENANTFUSION_ADMIN_PASSWORD").ok();
    if let Some(created) = bootstrap_admin(&engine, password.as_deref()).await? {
        if password.is_none() {
            // Shown once: only its verifier is kept.
            println!("created user '{ADMIN}' (role dba) with password: {created}");
        } else {
            info!(
                "created user '{ADMIN}' (role dba) with the password from TENANTFUSION_ADMIN_PASSWORD"
            );
        }
    }
    let server = Server::bind(engine, settings.server).await?;
    server.run(shutdown_signal()).await?;
    Ok(())
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    info!("shutdown requested");
}
