//! Accepting connections, bounding them, and stopping.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use metrics_exporter_prometheus::PrometheusHandle;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, DEFAULT_NAME, DefaultClient, ErrorHandler, NoopHandler,
    PgWireConnectionState,
};
use pgwire::error::ErrorInfo;
use pgwire::messages::extendedquery::Execute;
use pgwire::messages::response::{GssEncResponse, SslResponse};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage, SslNegotiationMetaMessage};
use pgwire::tokio::server::{PgWireMessageServerCodec, process_error, process_message};
use tenantfusion::Engine;
use tenantfusion_core::TenantError;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::connection::{Connection, Parsed, Shared};
use crate::figures::{Connected, Protocol};
use crate::framing::Bounded;
use crate::http::Http;
use crate::sqlstate::wire_error;
use crate::tls::{TlsError, TlsFiles};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The server's own setup failed.
    #[error("cannot set up the server: {0}")]
    Setup(#[from] TenantError),
}

/// A PostgreSQL-protocol server over one [`Engine`].
///
/// ```no_run
/// # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
/// use tenantfusion::{Engine, EngineConfig};
/// use tenantfusion_server::{Server, ServerConfig};
///
/// let engine = Engine::new(EngineConfig::default())?;
/// let server = Server::bind(engine, ServerConfig::default()).await?;
/// println!("listening on {}", server.local_addr());
/// server.run(async { tokio::signal::ctrl_c().await.ok(); }).await?;
/// # Ok(()) }
/// ```
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    /// The HTTP listener and what its connections share, if configured.
    http: Option<(TcpListener, Arc<Http>)>,
    /// The handshake of connections that ask for TLS, if the server has a
    /// certificate.
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.local_addr())
            .field("tls", &self.tls.is_some())
            .field("http", &self.http_addr())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Listens on `config.listen` (and on `config.http`'s address, if
    /// set); nothing is accepted until [`run`](Self::run). The TLS files,
    /// if any, are read here: a bad one is an error now.
    pub async fn bind(engine: Engine, config: ServerConfig) -> Result<Self, ServerError> {
        let tls = config.tls.as_ref().map(TlsFiles::acceptor).transpose()?;
        let listener = listen(config.listen).await?;
        let http_config = config.http.clone();
        let shared = Arc::new(Shared::new(engine, config)?);
        let http = match http_config {
            Some(http) => Some((
                listen(http.listen).await?,
                Arc::new(Http::new(Arc::clone(&shared), http)?),
            )),
            None => None,
        };
        Ok(Self {
            listener,
            shared,
            http,
            tls,
        })
    }

    /// Serves `GET /metrics` (on the HTTP listener) from `metrics`: the
    /// handle of the Prometheus recorder the host installed, before it
    /// opened the engine (see [`tenantfusion::figures`]). Without it,
    /// `/metrics` answers `404`.
    pub fn with_metrics(self, metrics: PrometheusHandle) -> Self {
        if let Some((_, http)) = &self.http {
            let _ = http.metrics.set(metrics);
        }
        self
    }

    /// The address the HTTP listener listens on, if there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// The address the server listens on (with the port the system chose
    /// for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.shared.config.listen)
    }

    /// Serves connections until `shutdown` completes, then stops accepting,
    /// lets running statements finish for `config.shutdown_grace`, cancels
    /// what still runs and closes every connection. Every write
    /// acknowledged before is durable already (the engine logs it before
    /// answering), so nothing is flushed here.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let slots = Arc::new(Semaphore::new(self.shared.config.max_connections));
        let http_slots = Arc::new(Semaphore::new(
            self.http
                .as_ref()
                .map_or(0, |(_, http)| http.config.max_connections),
        ));
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        info!(addr = %self.local_addr(), "accepting connections");
        if let Some(addr) = self.http_addr() {
            info!(%addr, "accepting HTTP connections");
        }
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                Some((accepted, http)) = accept_http(self.http.as_ref()) => {
                    let (socket, addr) = match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            warn!("HTTP accept failed: {err}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(slot) = Arc::clone(&http_slots).try_acquire_owned() else {
                        warn!(%addr, max = http.config.max_connections, "HTTP connection refused: too many connections");
                        connections.spawn(crate::http::refuse(socket));
                        continue;
                    };
                    let _ = socket.set_nodelay(true);
                    connections.spawn(async move {
                        crate::http::serve(socket, addr, http).await;
                        drop(slot);
                    });
                }
                accepted = self.listener.accept() => {
                    let (socket, addr) = match accepted {
                        Ok(accepted) => accepted,
                        // Out of file descriptors and the like: the
                        // listener is still good; try again shortly.
                        Err(err) => {
                            warn!("accept failed: {err}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        warn!(%addr, max = self.shared.config.max_connections, "connection refused: too many connections");
                        connections.spawn(refuse(socket));
                        continue;
                    };
                    let _ = socket.set_nodelay(true);
                    let connection = Arc::new(Connection::new(Arc::clone(&self.shared)));
                    let idle = self.shared.config.idle_session_timeout;
                    let max_message = self.shared.config.max_message_bytes;
                    let tls = self.tls.clone();
                    let startup = self.shared.config.startup_timeout;
                    connections.spawn(async move {
                        let _connected = Connected::new(Protocol::Pgwire);
                        debug!(%addr, "connected");
                        let serve = serve(
                            socket,
                            addr,
                            Arc::clone(&connection),
                            max_message,
                            tls,
                            startup,
                        );
                        let ended = match idle {
                            None => serve.await,
                            Some(limit) => tokio::select! {
                                ended = serve => ended,
                                () = connection.idle_for(limit) => {
                                    info!(%addr, "closed: idle for {limit:?}");
                                    Ok(())
                                }
                            },
                        };
                        if let Err(err) = ended {
                            debug!(%addr, "connection ended: {err}");
                        }
                        drop(slot);
                    });
                }
            }
        }
        info!(
            connections = connections.len(),
            "shutting down: no new connections"
        );
        drop(self.listener);
        drop(self.http);
        // Idle connections are closed at once; running statements get the
        // grace period.
        let deadline = tokio::time::Instant::now() + self.shared.config.shutdown_grace;
        while self.shared.is_busy() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.shared.is_busy() {
            warn!("cancelling the statements still running");
        }
        self.shared.cancel_all();
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        info!("stopped");
        Ok(())
    }
}

/// Binds a listener on `addr`.
async fn listen(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// The next HTTP connection, with what it needs; never, without HTTP.
async fn accept_http(
    http: Option<&(TcpListener, Arc<Http>)>,
) -> Option<(std::io::Result<(TcpStream, SocketAddr)>, Arc<Http>)> {
    match http {
        Some((listener, http)) => Some((listener.accept().await, Arc::clone(http))),
        None => std::future::pending().await,
    }
}

/// Serves one connection: pgwire's message loop (as its `process_socket`
/// runs it) over a socket whose messages are [`Bounded`] to
/// `max_message` bytes, inside TLS when the client asks and `tls` is set
/// (see [`crate::tls`]). `GSSENCRequest` is answered `N`. A client not
/// logged in `startup_timeout` after connecting is closed.
async fn serve(
    socket: TcpStream,
    addr: SocketAddr,
    connection: Arc<Connection>,
    max_message: usize,
    tls: Option<TlsAcceptor>,
    startup_timeout: Duration,
) -> Result<(), std::io::Error> {
    let startup = tokio::time::sleep(startup_timeout);
    tokio::pin!(startup);
    let codec = PgWireMessageServerCodec::new(DefaultClient::new(addr, false));
    let mut plain = Framed::new(Bounded::new(socket, max_message), codec);
    let ended = messages(
        &mut plain,
        addr,
        &connection,
        tls.is_some(),
        startup.as_mut(),
    )
    .await?;
    let (Ended::StartTls, Some(acceptor)) = (ended, tls) else {
        return Ok(());
    };
    let parts = plain.into_parts();
    if !parts.read_buf.is_empty() {
        debug!(%addr, "closed: bytes sent in the clear after SSLRequest");
        return Ok(());
    }
    let handshake = tokio::select! {
        () = &mut startup => {
            debug!(%addr, "closed: no TLS handshake within {startup_timeout:?}");
            return Ok(());
        }
        handshake = acceptor.accept(parts.io.into_inner()) => handshake,
    };
    let stream = match handshake {
        Ok(stream) => stream,
        Err(err) => {
            debug!(%addr, "closed: TLS handshake failed: {err}");
            return Ok(());
        }
    };
    let codec = PgWireMessageServerCodec::new(DefaultClient::new(addr, true));
    let mut secure = Framed::new(Bounded::new(stream, max_message), codec);
    secure.set_state(PgWireConnectionState::AwaitingStartup);
    messages(&mut secure, addr, &connection, false, startup).await?;
    Ok(())
}

/// How [`messages`] ended.
enum Ended {
    /// The connection is over.
    Closed,
    /// The client asked for TLS and was told yes: the handshake is next.
    StartTls,
}

/// The message loop of one connection over `socket`: until the client
/// leaves, the connection fails, nobody logs in before `startup` fires,
/// or (with `offer_tls`) the client's `SSLRequest` is accepted.
async fn messages<S>(
    socket: &mut Framed<Bounded<S>, PgWireMessageServerCodec<Parsed>>,
    addr: SocketAddr,
    connection: &Arc<Connection>,
    offer_tls: bool,
    mut startup: Pin<&mut Sleep>,
) -> Result<Ended, std::io::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let copy = Arc::new(NoopHandler);
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingSslRequest
                | PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let message = if starting {
            tokio::select! {
                () = &mut startup => {
                    debug!(%addr, "closed: not logged in by the startup deadline");
                    return Ok(Ended::Closed);
                }
                message = socket.next() => message,
            }
        } else {
            socket.next().await
        };
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(err)) => {
                // Unreadable, or over the size limit: say so and close.
                debug!(%addr, "closed: {err}");
                let refusal = wire_error("FATAL", "08P01", format!("invalid message: {err}"));
                let _ = process_error(socket, refusal, false).await;
                return Ok(Ended::Closed);
            }
            None => return Ok(Ended::Closed),
        };
        match message {
            PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresSsl(_)) => {
                if offer_tls && matches!(socket.state(), PgWireConnectionState::AwaitingSslRequest)
                {
                    socket
                        .send(PgWireBackendMessage::SslResponse(SslResponse::Accept))
                        .await?;
                    return Ok(Ended::StartTls);
                }
                socket
                    .send(PgWireBackendMessage::SslResponse(SslResponse::Refuse))
                    .await?;
            }
            PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresGss(_)) => {
                socket
                    .send(PgWireBackendMessage::GssEncResponse(GssEncResponse::Refuse))
                    .await?;
            }
            // The startup packet or a cancel request follows, unread.
            PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::None) => {
                socket.set_state(PgWireConnectionState::AwaitingStartup);
            }
            // The client is leaving: close at once (some wait for it).
            PgWireFrontendMessage::Terminate(_) => return Ok(Ended::Closed),
            message => {
                // The answers to Parse, Bind, Describe, Execute and Close
                // wait for Sync or Flush (see `framing`), except a live
                // query's rows, which go out as they come.
                let cork = match &message {
                    PgWireFrontendMessage::Parse(_)
                    | PgWireFrontendMessage::Bind(_)
                    | PgWireFrontendMessage::Describe(_)
                    | PgWireFrontendMessage::Close(_) => true,
                    PgWireFrontendMessage::Execute(execute) => !runs_live(socket, execute),
                    _ => false,
                };
                socket.get_mut().cork(cork);
                let extended = match socket.state() {
                    PgWireConnectionState::CopyInProgress(extended) => extended,
                    _ => message.is_extended_query(),
                };
                let handled = process_message(
                    message,
                    socket,
                    Arc::clone(connection),
                    Arc::clone(connection),
                    Arc::clone(connection),
                    Arc::clone(&copy),
                    Arc::clone(connection),
                )
                .await;
                if let Err(mut err) = handled {
                    connection.on_error(socket, &mut err);
                    process_error(socket, err, extended).await?;
                }
            }
        }
    }
}

/// Whether `execute` runs a portal of a live query.
fn runs_live<S>(
    socket: &Framed<Bounded<S>, PgWireMessageServerCodec<Parsed>>,
    execute: &Execute,
) -> bool {
    let name = execute.name.as_deref().unwrap_or(DEFAULT_NAME);
    matches!(
        socket.portal_store().get_portal(name),
        Some(Entry::Value(portal)) if matches!(portal.statement.statement, Parsed::Live { .. })
    )
}

/// Tells a client there is no room and closes: `53300`, as PostgreSQL's
/// `too_many_connections`, sent before the client's startup packet is read
/// (libpq reads it as the answer to its startup).
async fn refuse(mut socket: TcpStream) {
    let info = ErrorInfo::new(
        "FATAL".to_string(),
        "53300".to_string(),
        "sorry, too many clients already".to_string(),
    );
    let mut buf = BytesMut::new();
    if PgWireBackendMessage::ErrorResponse(info.into())
        .encode(&mut buf)
        .is_ok()
    {
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.write_all(&buf)).await;
    }
    let _ = socket.shutdown().await;
}
