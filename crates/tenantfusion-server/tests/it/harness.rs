//! A server on 127.0.0.1 (a port the system picks) over an in-memory
//! engine, with users alice and bob (role user) and the table
//! `app.notes`, a user table: each user's rows are their own.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tenantfusion::{Engine, EngineConfig, Role, UserContext};
use tenantfusion_server::{HttpConfig, Server, ServerConfig, bootstrap_admin};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

pub const ADMIN_PASSWORD: &str = "admin-pw";

/// The default settings on a port the system picks.
pub fn local() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    }
}

/// [`local`] with HTTP on a port the system picks too.
pub fn with_http() -> ServerConfig {
    ServerConfig {
        http: Some(HttpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..HttpConfig::default()
        }),
        ..local()
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// The HTTP listener's address, when the config asked for one.
    pub http: Option<SocketAddr>,
    pub engine: Engine,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(local()).await
    }

    pub async fn start_with(config: ServerConfig) -> Self {
        Self::start_with_engine(EngineConfig::default(), config).await
    }

    pub async fn start_with_engine(engine: EngineConfig, config: ServerConfig) -> Self {
        let engine = Engine::new(engine).unwrap();
        bootstrap_admin(&engine, Some(ADMIN_PASSWORD))
            .await
            .unwrap();
        let admin = engine.session(UserContext::new("admin", Role::Dba));
        for sql in [
            "CREATE USER 'alice' WITH PASSWORD 'alice-pw'",
            "CREATE USER 'bob' WITH PASSWORD 'bob-pw'",
            "CREATE NAMESPACE app",
            "CREATE USER TABLE app.notes (id BIGINT NOT NULL, body TEXT, PRIMARY KEY (id))",
        ] {
            admin.sql(sql).await.unwrap().collect().await.unwrap();
        }
        let server = Server::bind(engine.clone(), config).await.unwrap();
        let addr = server.local_addr();
        let http = server.http_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            http,
            engine,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn config(&self, user: &str, password: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.addr.ip().to_string())
            .port(self.addr.port())
            .user(user)
            .password(password)
            .dbname("tenantfusion");
        config
    }

    pub async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config(user, password).connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    pub async fn alice(&self) -> Client {
        self.connect("alice", "alice-pw").await.unwrap()
    }

    pub async fn bob(&self) -> Client {
        self.connect("bob", "bob-pw").await.unwrap()
    }

    /// The administrator, over the wire.
    pub async fn admin(&self) -> Client {
        self.connect("admin", ADMIN_PASSWORD).await.unwrap()
    }

    /// The administrator's session in the engine itself (no wire).
    pub fn admin_session(&self) -> tenantfusion::TenantSession {
        self.engine.session(UserContext::new("admin", Role::Dba))
    }

    /// Stops the server and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// The SQLSTATE of a failed call.
pub fn sqlstate(err: &tokio_postgres::Error) -> String {
    err.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {err}"))
}

/// The `tenantfusion` binary serving a data directory on 127.0.0.1, its
/// administrator's password `admin-pw`. Killed when dropped.
pub struct Process {
    child: Option<Child>,
    pub port: u16,
}

impl Process {
    /// On a free port.
    pub fn start(data: &Path) -> Self {
        Self::start_on_with(data, free_port(), &[])
    }

    /// On a free port, with more arguments to `serve`.
    pub fn start_with_args(data: &Path, args: &[&std::ffi::OsStr]) -> Self {
        Self::start_on_with(data, free_port(), args)
    }

    pub fn start_on(data: &Path, port: u16) -> Self {
        Self::start_on_with(data, port, &[])
    }

    fn start_on_with(data: &Path, port: u16, args: &[&std::ffi::OsStr]) -> Self {
        let child = Self::command(data, port)
            .args(args)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// With the settings file `config` and its `info` log written to `log`.
    pub fn start_logged(data: &Path, config: &Path, log: &Path) -> Self {
        Self::start_logged_with(data, config, log, &[])
    }

    /// [`start_logged`](Self::start_logged), with more arguments.
    pub fn start_logged_with(
        data: &Path,
        config: &Path,
        log: &Path,
        args: &[&std::ffi::OsStr],
    ) -> Self {
        let port = free_port();
        let child = Self::command(data, port)
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            port,
        }
    }

    fn command(data: &Path, port: u16) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tenantfusion"));
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("TENANTFUSION_ADMIN_PASSWORD", "admin-pw")
            .stdout(Stdio::null());
        command
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn config(&self, user: &str, password: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname("tenantfusion")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Connects, retrying while the server starts (for up to a minute).
    pub async fn connect(&self, user: &str, password: &str) -> Client {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.config(user, password).connect(NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    return client;
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("cannot connect as {user}: {err}"),
            }
        }
    }

    /// The server's resident memory, in bytes (Linux).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }

    /// Waits for the process to exit (for up to a minute).
    pub async fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("the server did not stop");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap()
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The server's message of a failed call.
pub fn message(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .map(|db| db.message().to_string())
        .unwrap_or_else(|| err.to_string())
}
