//! A server on 127.0.0.1 (a port the system picks) over an in-memory
//! engine, with users alice and bob (role user) and the table
//! `app.notes`, a user table: each user's rows are their own.

use std::net::SocketAddr;

use tenantfusion::{Engine, EngineConfig, Role, UserContext};
use tenantfusion_server::{Server, ServerConfig, bootstrap_admin};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

pub const ADMIN_PASSWORD: &str = "admin-pw";

pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: Engine,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        })
        .await
    }

    pub async fn start_with(config: ServerConfig) -> Self {
        let engine = Engine::new(EngineConfig::default()).unwrap();
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
