//! `tenantfusion`: the server binary.
//!
//! ```text
//! tenantfusion serve [--data-dir DIR | --memory] [--config tenantfusion.toml]
//!                    [--listen 127.0.0.1:5433] [--max-connections 100]
//!                    [--tls-cert server.crt --tls-key server.key]
//!                    [--http 127.0.0.1:8080] [--demo] [--log-format json]
//! tenantfusion shell --data-dir DIR --user NAME
//! tenantfusion shell --connect postgres://user@127.0.0.1:5433/tenantfusion
//! ```

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tenantfusion::{Engine, EngineConfig, Storage, UserContext};
use tenantfusion_server::shell::{Shell, Step, Target};
use tenantfusion_server::{
    ADMIN, DEMO_USER, FileConfig, HttpConfig, Server, TlsFiles, bootstrap_admin, create_demo,
};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "tenantfusion",
    version,
    about = "A multi-tenant SQL server on Apache DataFusion"
)]
struct Cli {
    /// How log lines are written (to stderr; RUST_LOG picks what is logged).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log stores.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the PostgreSQL wire protocol (and HTTP, with --http).
    Serve(Serve),
    /// An interactive SQL shell, on a data directory or on a server.
    Shell(ShellArgs),
}

#[derive(Debug, clap::Args)]
struct ShellArgs {
    /// Open this data directory in this process (no server may have it open).
    #[arg(long, conflicts_with = "connect", requires = "user")]
    data_dir: Option<PathBuf>,
    /// The user to run as on the data directory.
    #[arg(long)]
    user: Option<String>,
    /// A server's URL, postgres://user[:password]@host:port/tenantfusion
    /// (the password may come from PGPASSWORD instead).
    #[arg(long, required_unless_present = "data_dir")]
    connect: Option<String>,
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
    /// Offer TLS with this certificate chain (PEM) [default: the config's].
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Also serve HTTP (SQL, WebSocket live queries, metrics, the console)
    /// on this address [default: the config's [http] listen, if any].
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Create the demo (namespace demo: a ticking stream table, a user
    /// table, user demo with password demo) unless it is there, and serve
    /// HTTP on 127.0.0.1:8080 unless --http says otherwise.
    #[arg(long)]
    demo: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
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
    let result = match cli.command {
        Command::Serve(serve) => runtime.block_on(run(serve)),
        Command::Shell(args) => shell(&runtime, args),
    };
    match result {
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
    if let (Some(cert), Some(key)) = (serve.tls_cert, serve.tls_key) {
        settings.server.tls = Some(TlsFiles::new(cert, key));
    }
    if let Some(listen) = serve.http {
        settings
            .server
            .http
            .get_or_insert_with(HttpConfig::default)
            .listen = listen;
    }
    // Before the engine opens: its figures register with the recorder
    // installed when they are first recorded.
    let metrics = install_metrics()?;
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
    if serve.demo && create_demo(&engine).await? {
        info!(
            "created the demo: namespace demo; log in as user '{DEMO_USER}', password '{DEMO_USER}'"
        );
    }
    let server = Server::bind(engine, settings.server)
        .await?
        .with_metrics(metrics);
    if let Some(addr) = server.http_addr() {
        info!("console at http://{addr}/");
    }
    server.run(shutdown_signal()).await?;
    Ok(())
}

/// Installs the Prometheus recorder for the whole process (the `metrics`
/// facade's one recorder) and describes every figure.
fn install_metrics() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0, 10.0,
        ])?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    tenantfusion_server::describe_metrics();
    Ok(handle)
}

/// The shell's loop: lines from a terminal (edited, with history) or a pipe.
fn shell(
    runtime: &tokio::runtime::Runtime,
    args: ShellArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let target = runtime.block_on(shell_target(&args))?;
    let mut shell = Shell::new(target);
    if std::io::stdin().is_terminal() {
        let mut editor = rustyline::DefaultEditor::new()?;
        loop {
            match editor.readline(shell.prompt()) {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    match runtime.block_on(shell.line(&line)) {
                        Step::Quit => return Ok(()),
                        Step::Print { text, .. } => print!("{text}"),
                    }
                }
                Err(rustyline::error::ReadlineError::Interrupted) => continue,
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(err) => return Err(err.into()),
            }
        }
    } else {
        for line in std::io::stdin().lock().lines() {
            match runtime.block_on(shell.line(&line?)) {
                Step::Quit => return Ok(()),
                Step::Print { text, .. } => print!("{text}"),
            }
        }
    }
    print!("{}", runtime.block_on(shell.finish()));
    Ok(())
}

async fn shell_target(args: &ShellArgs) -> Result<Target, Box<dyn std::error::Error>> {
    if let Some(url) = &args.connect {
        let mut config: tokio_postgres::Config = url.parse()?;
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                error!("connection lost: {err}");
            }
        });
        return Ok(Target::Remote(client));
    }
    let (Some(dir), Some(user)) = (&args.data_dir, &args.user) else {
        return Err("give --connect URL, or --data-dir DIR with --user NAME".into());
    };
    let engine = Engine::new(
        EngineConfig::default().with_storage(Storage::from_url(&dir.to_string_lossy())?),
    )?;
    let password = std::env::var("TENANTFUSION_ADMIN_PASSWORD").ok();
    if let Some(created) = bootstrap_admin(&engine, password.as_deref()).await?
        && password.is_none()
    {
        println!("created user '{ADMIN}' (role dba) with password: {created}");
    }
    let Some(record) = engine.users().get(user) else {
        return Err(format!("no user '{user}' in {}", dir.display()).into());
    };
    Ok(Target::Embedded(
        engine.session(UserContext::new(user.as_str(), record.role)),
    ))
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
