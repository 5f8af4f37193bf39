//! One client connection: its login, then its statements, as one user.
//!
//! A [`Connection`] is made for each accepted socket and is every pgwire
//! handler of it (startup, simple and extended queries, cancel, errors). Its
//! [`TenantSession`] is set once, when the SCRAM exchange succeeds, and
//! never again: no later message can name another user. Statements before
//! that cannot arrive (pgwire sends them to the startup handler until the
//! login is done).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_execution_response, send_query_response,
    send_ready_for_query,
};
use pgwire::api::results::{FieldInfo, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, DEFAULT_NAME, ErrorHandler, METADATA_DATABASE, METADATA_USER,
    PgWireConnectionState, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::extendedquery::Execute;
use pgwire::messages::response::{EmptyQueryResponse, NoticeResponse, TransactionStatus};
use pgwire::messages::simplequery::Query as QueryMessage;
use pgwire::messages::startup::{Authentication, SecretKey};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage, ProtocolVersion};
use tenantfusion::{CancelHandle, Engine, PreparedStatement, TenantSession};
use tenantfusion_core::{Role, ScramVerifier, TenantError, UserContext};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::figures::{self, Protocol};
use crate::live;
use crate::results::{check_format, fields, respond};
use crate::scram::{self, Credential, ScramError, ServerFirst};
use crate::settings::client_setting;
use crate::sqlstate::{user_error, wire_error};
use crate::statements::{Kind, Piece, split};

/// The only database name a client may connect to.
pub const DATABASE: &str = "tenantfusion";

/// What every connection of one server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) config: ServerConfig,
    /// Derives the made-up salts of unknown users (see `scram`): fresh per
    /// server, so they cannot be told from real salts across restarts.
    server_key: [u8; 32],
    /// What an unknown user's proof is checked against (see `scram`).
    decoy: ScramVerifier,
    next_pid: AtomicI32,
    /// Connections by process id, for `CancelRequest`.
    running: Mutex<HashMap<i32, Arc<Running>>>,
    /// Statements running now (a shutdown waits for them, not for idle
    /// connections).
    busy: AtomicUsize,
}

/// When a connection last did something, and whether it is doing it now:
/// what the idle-session timeout looks at.
#[derive(Debug)]
struct Activity {
    last: Mutex<Instant>,
    running: AtomicUsize,
}

/// Counts a statement as running, on the server and on its connection (if
/// it has one of these: an HTTP request has not), for as long as it lives.
pub(crate) struct Busy<'a> {
    server: &'a AtomicUsize,
    connection: Option<&'a Activity>,
}

impl<'a> Busy<'a> {
    fn new(server: &'a AtomicUsize, connection: Option<&'a Activity>) -> Self {
        server.fetch_add(1, Ordering::SeqCst);
        if let Some(connection) = connection {
            connection.running.fetch_add(1, Ordering::SeqCst);
        }
        Self { server, connection }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection {
            *connection.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            connection.running.fetch_sub(1, Ordering::SeqCst);
        }
        self.server.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    pub(crate) fn new(engine: Engine, config: ServerConfig) -> Result<Self, TenantError> {
        Ok(Self {
            engine,
            config,
            server_key: rand::random(),
            decoy: decoy_verifier()?,
            next_pid: AtomicI32::new(1),
            running: Mutex::new(HashMap::new()),
            busy: AtomicUsize::new(0),
        })
    }

    /// Counts a statement that runs outside a pgwire connection (an HTTP
    /// request's) as running, for a shutdown to wait for.
    pub(crate) fn busy(&self) -> Busy<'_> {
        Busy::new(&self.busy, None)
    }

    /// What an unknown user's password is checked against (see `scram`).
    pub(crate) fn decoy(&self) -> &ScramVerifier {
        &self.decoy
    }

    /// Whether any statement is running.
    pub(crate) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst) > 0
    }

    /// Cancels every connection's statement (at shutdown).
    pub(crate) fn cancel_all(&self) {
        for running in self.running().values() {
            running.cancel();
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<Running>>> {
        // A panic elsewhere while holding it leaves a usable map.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A verifier of a random password nobody knows.
fn decoy_verifier() -> Result<ScramVerifier, TenantError> {
    let password: [u8; 16] = rand::random();
    let password: String = password.iter().map(|b| format!("{b:02x}")).collect();
    ScramVerifier::new(&password)
}

/// The statement a connection is running, for a `CancelRequest` with the
/// connection's secret.
#[derive(Debug)]
struct Running {
    secret: SecretKey,
    statement: Mutex<Option<Stop>>,
}

/// How to stop a running statement.
#[derive(Debug, Clone)]
enum Stop {
    Query(CancelHandle),
    /// A live query: notified (with a permit kept, should the stream be
    /// busy sending when the request comes).
    Live(Arc<Notify>),
}

impl Running {
    fn set(&self, stop: Stop) {
        *self.statement.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop);
    }

    fn cancel(&self) {
        let stop = self
            .statement
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match stop {
            Some(Stop::Query(handle)) => handle.cancel(),
            Some(Stop::Live(notify)) => notify.notify_one(),
            None => {}
        }
    }
}

/// Where a connection's login is.
#[derive(Debug)]
enum Login {
    AwaitingStartup,
    AwaitingInitial {
        user: String,
    },
    AwaitingFinal {
        user: String,
        exchange: Box<ServerFirst>,
    },
    Done,
}

/// Every handler of one connection.
#[derive(Debug)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
    login: Mutex<Login>,
    parser: Arc<Parser>,
    /// Set at login: `(pid, running)`.
    running: OnceLock<(i32, Arc<Running>)>,
    /// Inside `BEGIN ... COMMIT`: how many changes ran since `BEGIN`.
    block: Mutex<Option<usize>>,
    activity: Activity,
}

/// Makes a connection's statements: shares the session with the connection.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    session: OnceLock<TenantSession>,
}

/// A statement of the extended protocol, as `Parse` left it.
#[derive(Debug, Clone)]
pub(crate) enum Parsed {
    /// A query or change: planned once, run with each `Bind`'s values.
    Prepared {
        statement: PreparedStatement,
        kind: Kind,
    },
    /// Anything else (DDL, `SET`, `SHOW`, `EXPLAIN`, ...): run as text,
    /// without values; `schema` is the rows' for `Describe`, for the
    /// statements that return rows.
    Text {
        sql: String,
        kind: Kind,
        schema: Option<SchemaRef>,
    },
    /// `SUBSCRIBE TO ...`: its rows stream from `Execute` until cancelled;
    /// `schema` is the table's, for `Describe`.
    Live { sql: String, schema: SchemaRef },
}

impl Connection {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            login: Mutex::new(Login::AwaitingStartup),
            parser: Arc::new(Parser::default()),
            running: OnceLock::new(),
            block: Mutex::new(None),
            activity: Activity {
                last: Mutex::new(Instant::now()),
                running: AtomicUsize::new(0),
            },
        }
    }

    fn busy(&self) -> Busy<'_> {
        Busy::new(&self.shared.busy, Some(&self.activity))
    }

    /// Completes once the connection has run nothing for `limit` (the
    /// idle-session timeout); never while a statement runs.
    pub(crate) async fn idle_for(&self, limit: Duration) {
        loop {
            let since = self
                .activity
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed();
            let running = self.activity.running.load(Ordering::SeqCst) > 0;
            if !running && since >= limit {
                return;
            }
            let wait = if running { limit } else { limit - since };
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        }
    }

    /// The connection's session, while its user exists: a user dropped
    /// while connected is disconnected at their next statement (`28000`),
    /// so no row is written for a user whose rows are gone.
    fn session(&self) -> PgWireResult<&TenantSession> {
        let session = self.parser.session()?;
        let user = session.user().user_id();
        if !self.shared.engine.users().exists(user.as_str()) {
            return Err(wire_error(
                "FATAL",
                "28000",
                format!("user \"{user}\" no longer exists"),
            ));
        }
        Ok(session)
    }

    fn login(&self) -> std::sync::MutexGuard<'_, Login> {
        self.login.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn block(&self) -> std::sync::MutexGuard<'_, Option<usize>> {
        self.block.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The transaction status `ReadyForQuery` reports.
    fn status(&self) -> TransactionStatus {
        if self.block().is_some() {
            TransactionStatus::Transaction
        } else {
            TransactionStatus::Idle
        }
    }

    /// Runs one statement and answers as PostgreSQL would; `format` is the
    /// result columns' (text for the simple protocol).
    async fn run<C>(
        &self,
        client: &mut C,
        sql: &str,
        kind: &Kind,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match kind {
            Kind::Begin => {
                *self.block() = Some(0);
                return Ok(Response::TransactionStart(Tag::new("BEGIN")));
            }
            Kind::Commit => {
                *self.block() = None;
                return Ok(Response::TransactionEnd(Tag::new("COMMIT")));
            }
            Kind::Rollback => {
                let changes = self.block().take().unwrap_or(0);
                if changes > 0 {
                    let warning = ErrorInfo::new(
                        "WARNING".to_string(),
                        "01000".to_string(),
                        format!(
                            "ROLLBACK undoes nothing: each statement is committed when it \
                             completes, and the {changes} change(s) since BEGIN stay"
                        ),
                    );
                    client
                        .feed(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                            warning,
                        )))
                        .await?;
                }
                return Ok(Response::TransactionEnd(Tag::new("ROLLBACK")));
            }
            _ => {}
        }
        if let Some(setting) = client_setting(sql) {
            setting.map_err(|message| wire_error("ERROR", "22023", message))?;
            return Ok(Response::Execution(Tag::new("SET")));
        }
        let session = self.session()?;
        let query = session.sql(sql).await.map_err(|err| user_error(&err))?;
        self.answer(query, kind, format).await
    }

    /// Runs a planned statement, cancellable by a `CancelRequest` until the
    /// next statement starts (a query's rows are streamed after this
    /// returns, so the handle stays set while they are).
    async fn answer(
        &self,
        query: tenantfusion::Query,
        kind: &Kind,
        format: &Format,
    ) -> PgWireResult<Response> {
        let running = self.running.get().map(|(_, running)| Arc::clone(running));
        if let Some(running) = &running {
            running.set(Stop::Query(query.cancel_handle()));
        }
        let response = respond(query, kind, format).await;
        if matches!(kind, Kind::Change(_))
            && response.is_ok()
            && let Some(changes) = self.block().as_mut()
        {
            *changes += 1;
        }
        response
    }

    /// Records a statement that ended (see `figures`), and logs it when it
    /// took longer than the configured threshold: its kind, user and time,
    /// never its text (which can hold a password).
    fn finished(&self, kind: &Kind, started: Instant, ended: &PgWireResult<()>) {
        let took = started.elapsed();
        let outcome = match ended {
            Ok(()) => "ok",
            // The engine's messages start with its code (see `sqlstate`).
            Err(PgWireError::UserError(info)) => info.message.split(':').next().unwrap_or(""),
            Err(_) => "other",
        };
        figures::statement(Protocol::Pgwire, kind, outcome, took);
        if let (Some(limit), Ok(session)) =
            (self.shared.config.slow_statement, self.parser.session())
            && took >= limit
        {
            info!(
                user = %session.user().user_id(),
                statement = ?kind,
                ms = took.as_millis() as u64,
                "slow statement"
            );
        }
    }

    /// Runs a live query until it is cancelled or ends (see `live`).
    /// `described`: the extended protocol's `Describe` sent the columns,
    /// to be sent in this format.
    async fn subscribe<C>(
        &self,
        client: &mut C,
        request: live::Request<'_>,
        described: Option<Format>,
    ) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session()?;
        let query = session
            .subscribe(request.subscribe)
            .await
            .map_err(|err| user_error(&err))?;
        let stop = Arc::new(Notify::new());
        if let Some((_, running)) = self.running.get() {
            running.set(Stop::Live(Arc::clone(&stop)));
        }
        let user = session.user().user_id().to_string();
        let shape = live::Shape {
            copy: request.copy,
            describe: described.is_none(),
            format: described.unwrap_or(Format::UnifiedText),
            heartbeat: self.shared.config.live_heartbeat,
        };
        live::stream(client, query, shape, stop, &user).await
    }

    /// Checks the SCRAM proof and, when it holds, makes the session.
    async fn finish_login<C>(
        &self,
        client: &mut C,
        user: String,
        exchange: ServerFirst,
        data: &[u8],
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let addr = client.socket_addr();
        let server_final = exchange.client_final(data).map_err(|err| {
            warn!(%addr, user = %user, "login failed: {err}");
            login_error(&user, &err)
        })?;
        // The user may have been dropped during the exchange.
        let Some(record) = self.shared.engine.users().get(&user) else {
            warn!(%addr, user = %user, "login failed: user dropped during login");
            return Err(login_error(&user, &ScramError::Rejected));
        };
        client
            .send(PgWireBackendMessage::Authentication(
                Authentication::SASLFinal(server_final.into_bytes().into()),
            ))
            .await?;
        let session = self
            .shared
            .engine
            .session(UserContext::new(user.as_str(), record.role));
        self.parser
            .session
            .set(session)
            .map_err(|_| wire_error("FATAL", "08P01", "already logged in"))?;
        let pid = self.shared.next_pid.fetch_add(1, Ordering::Relaxed);
        // Protocol 3.2 allows a longer secret: 256 bits, not 32, against
        // cancels guessed at random.
        let secret = if client.protocol_version() == ProtocolVersion::PROTOCOL3_0 {
            SecretKey::I32(rand::random())
        } else {
            SecretKey::Bytes(Bytes::copy_from_slice(&rand::random::<[u8; 32]>()))
        };
        client.set_pid_and_secret_key(pid, secret.clone());
        let running = Arc::new(Running {
            secret,
            statement: Mutex::new(None),
        });
        self.shared.running().insert(pid, Arc::clone(&running));
        let _ = self.running.set((pid, running));
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = format!("16.6 (tenantfusion {})", env!("CARGO_PKG_VERSION"));
        parameters.is_superuser = matches!(record.role, Role::Dba | Role::System);
        parameters.session_authorization = Some(user.clone());
        *self.login() = Login::Done;
        info!(%addr, user = %user, role = ?record.role, pid, "logged in");
        finish_authentication(client, &parameters).await
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some((pid, _)) = self.running.get() {
            self.shared.running().remove(pid);
        }
    }
}

/// What a failed login tells the client: PostgreSQL's words, nothing about
/// whether the user exists.
fn login_error(user: &str, err: &ScramError) -> PgWireError {
    match err {
        ScramError::Rejected => wire_error(
            "FATAL",
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        ),
        ScramError::ChannelBinding => wire_error("FATAL", "0A000", err.to_string()),
        ScramError::Malformed(_) => wire_error("FATAL", "08P01", err.to_string()),
    }
}

#[async_trait]
impl StartupHandler for Connection {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let state = std::mem::replace(&mut *self.login(), Login::Done);
        match (state, message) {
            (Login::AwaitingStartup, PgWireFrontendMessage::Startup(startup)) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                let Some(user) = client.metadata().get(METADATA_USER).cloned() else {
                    return Err(PgWireError::UserNameRequired);
                };
                // libpq sends the user name when no database is given, as
                // PostgreSQL's default is the database of the user's name.
                let database = client.metadata().get(METADATA_DATABASE).unwrap_or(&user);
                if database != DATABASE {
                    debug!(addr = %client.socket_addr(), %database, "unknown database");
                    return Err(wire_error(
                        "FATAL",
                        "3D000",
                        format!(
                            "database \"{database}\" does not exist (the database is \"{DATABASE}\")"
                        ),
                    ));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                *self.login() = Login::AwaitingInitial { user };
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                        vec!["SCRAM-SHA-256".to_string()],
                    )))
                    .await?;
                Ok(())
            }
            (
                Login::AwaitingInitial { user },
                PgWireFrontendMessage::PasswordMessageFamily(message),
            ) => {
                let initial = message.into_sasl_initial_response()?;
                if initial.auth_method != "SCRAM-SHA-256" {
                    return Err(PgWireError::UnsupportedSASLAuthMethod(initial.auth_method));
                }
                let data = initial.data.unwrap_or_default();
                let verifier = self
                    .shared
                    .engine
                    .users()
                    .get(&user)
                    .and_then(|r| r.verifier);
                let credential =
                    Credential::new(verifier, &user, &self.shared.server_key, &self.shared.decoy);
                let exchange = scram::client_first(&data, credential, &scram::new_nonce())
                    .map_err(|err| login_error(&user, &err))?;
                let reply = exchange.message.clone().into_bytes();
                *self.login() = Login::AwaitingFinal {
                    user,
                    exchange: Box::new(exchange),
                };
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::SASLContinue(reply.into()),
                    ))
                    .await?;
                Ok(())
            }
            (
                Login::AwaitingFinal { user, exchange },
                PgWireFrontendMessage::PasswordMessageFamily(message),
            ) => {
                let response = message.into_sasl_response()?;
                self.finish_login(client, user, *exchange, &response.data)
                    .await
            }
            _ => Err(wire_error(
                "FATAL",
                "08P01",
                "unexpected message during login",
            )),
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    /// Runs the statements of `query` one after another, each to its end
    /// (rows sent, changes done) before the next starts; the first error
    /// stops the rest.
    async fn on_query<C>(&self, client: &mut C, query: QueryMessage) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let _busy = self.busy();
        let pieces = split(&query.query);
        if pieces.is_empty() {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        for Piece { sql, kind } in pieces {
            let started = Instant::now();
            let sent = if let Some(request) = live::request(sql) {
                self.subscribe(client, request, None).await
            } else {
                match self.run(client, sql, &kind, &Format::UnifiedText).await {
                    Ok(Response::Query(rows)) => send_query_response(client, rows, true).await,
                    Ok(
                        Response::Execution(tag)
                        | Response::TransactionStart(tag)
                        | Response::TransactionEnd(tag),
                    ) => send_execution_response(client, tag).await,
                    Ok(_) => Ok(()),
                    Err(err) => Err(err),
                }
            };
            self.finished(&kind, started, &sent);
            if let Err(err) = sent {
                let info = ErrorInfo::from(err);
                if info.is_fatal() {
                    return Err(PgWireError::UserError(Box::new(info)));
                }
                client
                    .feed(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await?;
                break;
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        let status = self.status();
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `on_query` is ours and does not call this; answer the same way
        // should pgwire ever do so: one statement at a time.
        let mut responses = Vec::new();
        for Piece { sql, kind } in split(query) {
            responses.push(self.run(client, sql, &kind, &Format::UnifiedText).await?);
        }
        Ok(responses)
    }
}

impl Parser {
    fn session(&self) -> PgWireResult<&TenantSession> {
        self.session
            .get()
            .ok_or_else(|| wire_error("FATAL", "08P01", "not logged in"))
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Parsed;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Parsed>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if let Some(request) = live::request(sql) {
            if request.copy {
                return Err(wire_error(
                    "ERROR",
                    "0A000",
                    "COPY (SUBSCRIBE ...) TO STDOUT runs by the simple query protocol only",
                ));
            }
            let schema = self
                .session()?
                .subscription_schema(request.subscribe)
                .await
                .map_err(|err| user_error(&err))?;
            return Ok(Some(Parsed::Live {
                sql: request.subscribe.to_string(),
                schema,
            }));
        }
        let mut pieces = split(sql);
        if pieces.len() > 1 {
            return Err(wire_error(
                "ERROR",
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        // pgwire sends no empty query here; the default is for safety only.
        let kind = pieces
            .pop()
            .map_or(Kind::Other(String::new()), |piece| piece.kind);
        if !kind.is_preparable() {
            // `SHOW` and `EXPLAIN` return rows, which a driver must have
            // described before `Execute` sends them: planned here for
            // their columns (planning them changes nothing), then
            // planned again when run.
            let schema = match kind {
                Kind::Rows(_) => {
                    let query = self
                        .session()?
                        .sql(sql)
                        .await
                        .map_err(|err| user_error(&err))?;
                    Some(Arc::clone(query.schema()))
                }
                _ => None,
            };
            return Ok(Some(Parsed::Text {
                sql: sql.to_string(),
                kind,
                schema,
            }));
        }
        let statement = self
            .session()?
            .prepare(sql)
            .await
            .map_err(|err| user_error(&err))?;
        Ok(Some(Parsed::Prepared { statement, kind }))
    }

    fn get_parameter_types(&self, statement: &Parsed) -> PgWireResult<Vec<Type>> {
        Ok(match statement {
            Parsed::Prepared { statement, .. } => statement
                .parameter_types()
                .iter()
                .map(|t| arrow_pg::datatypes::into_pg_type(t).unwrap_or(Type::UNKNOWN))
                .collect(),
            Parsed::Text { .. } | Parsed::Live { .. } => Vec::new(),
        })
    }

    fn get_result_schema(
        &self,
        statement: &Parsed,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match statement {
            Parsed::Prepared {
                statement,
                kind: Kind::Rows(_),
            } => fields(&statement.schema(), format.unwrap_or(&Format::UnifiedText)),
            Parsed::Live { schema, .. } => {
                let format = format.unwrap_or(&Format::UnifiedText);
                fields(&live::event_schema(schema), format)
            }
            Parsed::Text {
                schema: Some(schema),
                ..
            } => fields(schema, format.unwrap_or(&Format::UnifiedText)),
            // A change without RETURNING, and text statements: no rows
            // described (`NoData`).
            _ => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Parsed;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::clone(&self.parser)
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Parsed>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = self.busy();
        let started = Instant::now();
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) => Some(portal),
            _ => None,
        };
        if let Some(portal) = &portal
            && let Parsed::Live { sql, .. } = &portal.statement.statement
        {
            // Rows go out as events come, each flushed; pgwire's execute
            // would hold them until the buffer fills. Described already.
            if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
                return Err(PgWireError::NotReadyForQuery);
            }
            let request = live::Request {
                subscribe: sql,
                copy: false,
            };
            let format = portal.result_column_format.clone();
            return self.subscribe(client, request, Some(format)).await;
        }
        let kind = portal.and_then(|portal| match &portal.statement.statement {
            Parsed::Prepared { kind, .. } | Parsed::Text { kind, .. } => Some(kind.clone()),
            Parsed::Live { .. } => None,
        });
        let executed = self._on_execute(client, message).await;
        if let Some(kind) = kind {
            self.finished(&kind, started, &executed);
        }
        executed
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Parsed>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Parsed>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &portal.statement.statement {
            Parsed::Prepared { statement, kind } => {
                self.session()?;
                let types = statement.parameter_types();
                if portal.parameters.len() != types.len() {
                    return Err(wire_error(
                        "ERROR",
                        "08P01",
                        format!(
                            "bind message supplies {} parameters, but the statement requires {}",
                            portal.parameters.len(),
                            types.len()
                        ),
                    ));
                }
                check_format(&portal.parameter_format, types.len(), "parameters")?;
                let inferred: Vec<_> = types.iter().map(Some).collect();
                let values =
                    match arrow_pg::datatypes::df::deserialize_parameters(portal, &inferred)? {
                        datafusion::common::ParamValues::List(values) => {
                            values.into_iter().map(|v| v.value).collect()
                        }
                        datafusion::common::ParamValues::Map(_) => Vec::new(),
                    };
                let query = statement
                    .execute(values)
                    .await
                    .map_err(|err| user_error(&err))?;
                self.answer(query, kind, &portal.result_column_format).await
            }
            Parsed::Live { .. } => {
                Err(wire_error("ERROR", "0A000", "a live query runs by Execute"))
            }
            Parsed::Text { sql, kind, .. } => {
                if !portal.parameters.is_empty() {
                    return Err(wire_error(
                        "ERROR",
                        "08P01",
                        format!(
                            "bind message supplies {} parameters, but the statement requires 0",
                            portal.parameters.len()
                        ),
                    ));
                }
                self.run(client, sql, kind, &portal.result_column_format)
                    .await
            }
        }
    }
}

#[async_trait]
impl CancelHandler for Connection {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let running = self.shared.running().get(&request.pid).cloned();
        match running {
            Some(running) if running.secret.eq_value(&request.secret_key) => {
                info!(pid = request.pid, "statement cancelled by request");
                running.cancel();
            }
            _ => debug!(pid = request.pid, "cancel request for no such connection"),
        }
    }
}

impl ErrorHandler for Connection {}
