//! `pgwire`: the `tenantfusion` server over the PostgreSQL wire protocol
//! beside PostgreSQL, in the same run, with the same client (`tokio-postgres`,
//! prepared statements, loopback), the same data (`USERS` x 100 rows in `t`,
//! each user reading only their own: by the login's identity here, by
//! row-level security there) and the same statements.
//!
//! Ours is the server library on a runtime of its own (two workers, as a
//! server process would have on this machine), over a durable engine whose
//! writes are fsynced before they are acknowledged, as PostgreSQL's are with
//! its defaults. `t`'s rows stay in memory and in the log
//! (`FLUSH_POLICY = 'none'`), so no flush runs while figures are taken;
//! PostgreSQL holds its copy in shared buffers and the page cache.
//!
//! Figures: one client's latency per statement; statements/s of 16 and 64
//! connections of different users running a mix of the three reads; the
//! wire's cost (the same prepared statement over the wire vs in-process);
//! and memory per idle connection.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use datafusion::common::ScalarValue;
use tenantfusion::{Durability, Engine, Role, UserContext};
use tenantfusion_server::{DATABASE, HttpConfig, Server, ServerConfig};
use tokio::sync::oneshot;
use tokio_postgres::{Client, NoTls, Statement};

use crate::postgres;
use crate::scan_scaling::{latency, load_users};
use crate::storage::{bench_dir, on_disk};
use crate::{Measurement, Size, run_prepared};

/// The password of every login the scenario makes on our server.
pub(crate) const PASSWORD: &str = "bench-password";

/// The single-client statements, in the order they are reported.
const STATEMENTS: [(&str, &str); 5] = [
    (
        "point lookup by key",
        "SELECT id, payload FROM t WHERE id = $1",
    ),
    ("count(*), sum(id)", "SELECT count(*), sum(id) FROM t"),
    (
        "top-10 ORDER BY id DESC LIMIT 10",
        "SELECT id, payload FROM t ORDER BY id DESC LIMIT 10",
    ),
    (
        "single-row INSERT",
        "INSERT INTO notes (id, body) VALUES ($1, $2)",
    ),
    // What a round trip costs with next to nothing to run: the floor
    // under every figure above, for each server.
    ("SELECT 1 (a round trip's floor)", "SELECT 1"),
];

/// The position of the point lookup in [`STATEMENTS`].
const POINT: usize = 0;
/// The position of the INSERT in [`STATEMENTS`].
const INSERT: usize = 3;

/// The reads the concurrent runs mix, one after another on each connection.
const READS: usize = 3;

/// Connection counts of the concurrent runs.
pub(crate) const CONNECTIONS: [usize; 2] = [16, 64];

/// Our server on a runtime of its own thread, pgwire and HTTP; stopped
/// when dropped.
pub(crate) struct Ours {
    pub(crate) addr: SocketAddr,
    /// The HTTP listener's address.
    pub(crate) http: SocketAddr,
    pub(crate) engine: Engine,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Ours {
    /// Loads `users` x 100 rows into `t`, makes the `logins` users (`u0`,
    /// ...) with [`PASSWORD`] and serves them on 127.0.0.1.
    pub(crate) async fn start(users: usize, logins: usize) -> Result<Self, String> {
        let dir = bench_dir();
        let engine_config = on_disk(&dir, Durability::Fsync);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("tenantfusion-server")
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = ready_tx.send(Err(err.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                let server = match serve(engine_config, users, logins).await {
                    Ok(server) => server,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                let Some(http) = server.0.http_addr() else {
                    let _ = ready_tx.send(Err("no HTTP listener".to_string()));
                    return;
                };
                let _ = ready_tx.send(Ok((server.0.local_addr(), http, server.1)));
                let shutdown = async {
                    let _ = stopped.await;
                };
                if let Err(err) = server.0.run(shutdown).await {
                    eprintln!("pgwire: our server stopped: {err}");
                }
            });
        });
        let (addr, http, engine) = ready_rx
            .await
            .map_err(|_| "our server's thread ended before it listened".to_string())??;
        Ok(Self {
            addr,
            http,
            engine,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        })
    }

    /// A client logged in as `user`, its connection driven by a task.
    pub(crate) async fn client(&self, user: &str) -> Result<Client, String> {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user={user} password={PASSWORD} dbname={DATABASE}",
                self.addr.port()
            ),
            NoTls,
        )
        .await
        .map_err(|e| format!("cannot connect to our server as {user}: {e}"))?;
        tokio::spawn(connection);
        Ok(client)
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The engine with its tables, rows and logins, and the server bound to it.
async fn serve(
    config: tenantfusion::EngineConfig,
    users: usize,
    logins: usize,
) -> Result<(Server, Engine), String> {
    let engine = Engine::new(config).map_err(|e| e.to_string())?;
    let admin = engine.session(UserContext::new("admin", Role::Dba));
    let mut statements = vec![
        "CREATE TABLE t (id BIGINT NOT NULL, payload TEXT) WITH (FLUSH_POLICY = 'none')"
            .to_string(),
        "CREATE TABLE notes (id BIGINT, body TEXT)".to_string(),
    ];
    // Distinct: with fewer users than connections, logins repeat.
    let names: BTreeSet<String> = (0..logins).map(|i| login(i, users)).collect();
    statements.extend(
        names
            .iter()
            .map(|name| format!("CREATE USER '{name}' WITH PASSWORD '{PASSWORD}'")),
    );
    for sql in statements {
        admin
            .sql(&sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))?
            .collect()
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
    }
    load_users(&engine, "t", users).await;
    let config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        max_connections: 4 * logins.max(CONNECTIONS[1]),
        http: Some(HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_connections: 4 * logins.max(CONNECTIONS[1]),
            ..HttpConfig::default()
        }),
        ..ServerConfig::default()
    };
    let server = Server::bind(engine.clone(), config)
        .await
        .map_err(|e| e.to_string())?;
    Ok((server, engine))
}

/// The `i`th login of the scenario: users spread over all of `users`.
pub(crate) fn login(i: usize, users: usize) -> String {
    format!("u{}", i * users.max(1) / CONNECTIONS[1] % users.max(1))
}

/// The statements of [`STATEMENTS`] prepared on `client`.
async fn prepare(client: &Client) -> Result<Vec<Statement>, String> {
    let mut prepared = Vec::new();
    for (_, sql) in STATEMENTS {
        prepared.push(
            client
                .prepare(sql)
                .await
                .map_err(|e| format!("{sql}: {e}"))?,
        );
    }
    Ok(prepared)
}

/// Runs statement `which` of [`STATEMENTS`] on `client` with the `n`th
/// call's values; the number of rows it returned or wrote.
async fn run_wire(client: &Client, statements: &[Statement], which: usize, n: i64) -> usize {
    let statement = &statements[which];
    match which {
        POINT => client
            .query(statement, &[&(n % 100)])
            .await
            .expect("query")
            .len(),
        INSERT => {
            let body = format!("note {n}");
            client
                .execute(statement, &[&n, &body])
                .await
                .expect("insert") as usize
        }
        _ => client.query(statement, &[]).await.expect("query").len(),
    }
}

/// The same values as [`run_wire`]'s, for the in-process statement.
fn scalars(which: usize, n: i64) -> Vec<ScalarValue> {
    match which {
        POINT => vec![ScalarValue::Int64(Some(n % 100))],
        INSERT => vec![
            ScalarValue::Int64(Some(n)),
            ScalarValue::Utf8(Some(format!("note {n}"))),
        ],
        _ => vec![],
    }
}

/// Statements/s of `clients` each running the reads of [`STATEMENTS`] in
/// turn for `run`.
async fn statements_per_second(clients: Vec<(Client, Vec<Statement>)>, run: Duration) -> f64 {
    let started = Instant::now();
    let deadline = started + run;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(client, statements)| {
            tokio::spawn(async move {
                let mut n = 0i64;
                while Instant::now() < deadline {
                    run_wire(&client, &statements, n as usize % READS, n).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("client task");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Private memory (clean and dirty, bytes) of process `pid`, from
/// `/proc/PID/smaps_rollup`: what a PostgreSQL backend holds of its own.
fn private_bytes(pid: i32) -> Result<f64, String> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let kib: f64 = text
        .lines()
        .filter(|line| line.starts_with("Private_Clean:") || line.starts_with("Private_Dirty:"))
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum();
    Ok(kib * 1024.0)
}

/// Runs the scenario at the largest user count of `size`; `live_bytes`
/// reads the process's allocated bytes.
pub async fn pgwire(size: Size, live_bytes: fn() -> i64) -> Result<Vec<Measurement>, String> {
    let users = *size.user_counts.last().ok_or("no user counts")?;
    let logins = CONNECTIONS[1];
    let pg_server = postgres::Server::start(users)?;
    let ours = Ours::start(users, logins).await?;
    let target = login(logins / 2, users);
    let mut out = Vec::new();

    // One client, prepared statements.
    let our_client = ours.client(&target).await?;
    let pg_client = postgres::client(&target).await?;
    let our_statements = prepare(&our_client).await?;
    let pg_statements = prepare(&pg_client).await?;
    let session = ours
        .engine
        .session(UserContext::new(target.as_str(), Role::User));
    for (which, (name, sql)) in STATEMENTS.iter().enumerate() {
        let (ours_rows, pg_rows) = (
            run_wire(&our_client, &our_statements, which, 0).await,
            run_wire(&pg_client, &pg_statements, which, 0).await,
        );
        if ours_rows != pg_rows || ours_rows == 0 {
            return Err(format!(
                "{sql}: ours gave {ours_rows} rows, PostgreSQL {pg_rows}"
            ));
        }
        let mut n = 1i64;
        let (our_statements, pg_statements) = (&our_statements, &pg_statements);
        let (our_client, pg_client) = (&our_client, &pg_client);
        let wire = latency(size, || {
            n += 1;
            let n = n;
            async move {
                run_wire(our_client, our_statements, which, n).await;
            }
        })
        .await;
        let pg = latency(size, || {
            n += 1;
            let n = n;
            async move {
                run_wire(pg_client, pg_statements, which, n).await;
            }
        })
        .await;
        let in_process = session.prepare(sql).await.map_err(|e| e.to_string())?;
        let in_process = &in_process;
        let local = latency(size, || {
            n += 1;
            let params = scalars(which, n);
            async move {
                run_prepared(in_process, params).await;
            }
        })
        .await;
        out.push(Measurement::latency(
            "pgwire",
            format!("{name}, {users} users, over the wire vs PostgreSQL (prepared, one client)"),
            wire,
            pg,
        ));
        out.push(Measurement::latency(
            "pgwire",
            format!("{name}: over the wire vs the same prepared statement in-process"),
            wire,
            local,
        ));
    }
    drop((our_client, pg_client));

    // Connections of different users, each running the reads in turn.
    for connections in CONNECTIONS {
        let mut our_clients = Vec::new();
        let mut pg_clients = Vec::new();
        for i in 0..connections {
            let user = login(i * logins / connections, users);
            let client = ours.client(&user).await?;
            let statements = prepare(&client).await?;
            our_clients.push((client, statements));
            let client = postgres::client(&user).await?;
            let statements = prepare(&client).await?;
            pg_clients.push((client, statements));
        }
        let ours_rate = statements_per_second(our_clients, size.wire_run).await;
        let pg_rate = statements_per_second(pg_clients, size.wire_run).await;
        out.push(Measurement::figure(
            "pgwire",
            format!(
                "{connections} connections of {connections} users, point/count-sum/top-10 in turn: \
                 statements/s vs PostgreSQL"
            ),
            ours_rate,
            pg_rate,
            "stmt/s",
        ));
    }

    // Memory per idle connection. The client's side is in this process for
    // both servers, so ours is this process's growth with connections to
    // our server less its growth with as many to PostgreSQL (the client's
    // share); PostgreSQL's is its backends' private memory.
    let idle = size.wire_idle.min(logins);
    let before = live_bytes();
    let mut our_idle = Vec::new();
    for i in 0..idle {
        our_idle.push(ours.client(&login(i, users)).await?);
    }
    // A statement on each settles what a connection keeps after its first.
    for client in &our_idle {
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| e.to_string())?;
    }
    let with_ours = live_bytes() - before;
    let before = live_bytes();
    let mut pg_idle = Vec::new();
    let mut pids = Vec::new();
    for i in 0..idle {
        let client = postgres::client(&login(i, users)).await?;
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        pids.push(pid);
        pg_idle.push(client);
    }
    let client_side = live_bytes() - before;
    let mut backends = 0.0;
    for pid in &pids {
        backends += private_bytes(*pid)?;
    }
    out.push(Measurement::figure(
        "pgwire",
        format!(
            "memory per idle connection ({idle} open): our server's heap vs a PostgreSQL \
             backend's private memory"
        ),
        (with_ours - client_side).max(0) as f64 / idle as f64,
        backends / idle as f64,
        "bytes",
    ));
    drop((our_idle, pg_idle));
    drop(ours);
    drop(pg_server);
    Ok(out)
}
