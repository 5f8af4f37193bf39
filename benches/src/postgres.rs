//! `postgres_rls`: the same per-user queries against PostgreSQL with
//! row-level security (indexed on `(user_id, id)`, prepared statements over
//! loopback, one client), started by `scripts/postgres-rls.sh`.

use std::path::PathBuf;
use std::process::Command;

use tenantfusion::{EngineConfig, Role, UserContext};
use tokio_postgres::NoTls;

use crate::scan_scaling::{CACHED, QUERIES, latency, loaded_engine};
use crate::{Measurement, Size, run_ours};

const PORT: u16 = 54329;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres-rls.sh")
}

/// Whether a PostgreSQL server is installed (the full run then includes this scenario).
pub fn postgres_installed() -> bool {
    std::fs::read_dir("/usr/lib/postgresql")
        .map(|mut entries| entries.any(|e| e.is_ok_and(|e| e.path().join("bin/initdb").exists())))
        .unwrap_or(false)
}

/// The server started by the script; stopped when dropped, even on panic.
pub(crate) struct Server {
    dir: String,
}

impl Server {
    /// Starts a server whose table `t` holds `users` x 100 rows.
    pub(crate) fn start(users: usize) -> Result<Self, String> {
        let out = Command::new("bash")
            .arg(script())
            .args(["start", &users.to_string(), &PORT.to_string()])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
        if !out.status.success() {
            return Err(format!(
                "postgres-rls.sh start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(Self { dir })
    }
}

/// A client of the server, as user `uid` (what row-level security reads),
/// its connection driven by a task of its own.
pub(crate) async fn client(uid: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={PORT} user=tenant dbname=postgres"),
        NoTls,
    )
    .await
    .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
    tokio::spawn(connection);
    client
        .query_one("SELECT set_config('app.uid', $1, false)", &[&uid])
        .await
        .map_err(|e| e.to_string())?;
    Ok(client)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", &self.dir])
            .status();
    }
}

/// Runs the scenario at the largest user count of `size`.
pub async fn postgres_rls(size: Size) -> Result<Vec<Measurement>, String> {
    let users = *size.user_counts.last().ok_or("no user counts")?;
    let server = Server::start(users)?;
    let target = format!("u{}", users / 2);
    let client = client(&target).await?;

    let (engine, _) = loaded_engine(users, EngineConfig::default()).await;
    let session = engine.session(UserContext::new(target.as_str(), Role::User));
    let mut out = Vec::new();
    for (name, sql, _) in QUERIES {
        let statement = client.prepare(sql).await.map_err(|e| e.to_string())?;
        let rows = client
            .query(&statement, &[])
            .await
            .map_err(|e| e.to_string())?;
        if rows.is_empty() {
            return Err(format!("PostgreSQL returned no rows for {sql}"));
        }
        let pg = latency(size, || async {
            client.query(&statement, &[]).await.expect("postgres query");
        })
        .await;
        let ours = latency(size, || async {
            run_ours(&session, sql).await;
        })
        .await;
        let row = Measurement::latency(
            "postgres_rls",
            format!("{name}, {users} users, vs PostgreSQL RLS (prepared)"),
            ours,
            pg,
        );
        out.push(row.on_curve(
            &format!("{name}: one user's query vs number of users"),
            "users",
            users,
            CACHED,
            "PostgreSQL RLS (prepared)",
        ));
    }
    drop(client);
    drop(server);
    Ok(out)
}
