//! The server's HTTP side: SQL as JSON or Arrow, live queries over
//! WebSocket, Prometheus metrics and the console.
//!
//! # The model
//! The HTTP listener (`--http 127.0.0.1:8080`, or `[http]` in the config)
//! serves the same [`Engine`](tenantfusion::Engine), users and limits as the
//! PostgreSQL one. Each request proves who it is for, on its own: HTTP
//! Basic (checked against the user's SCRAM verifier, a PBKDF2 per request,
//! as a pgwire login costs) or a bearer token from `POST /v1/login` (an
//! HMAC, see [`tokens`]). The identity becomes the request's
//! [`TenantSession`](tenantfusion::TenantSession); nothing in the body can
//! name another user (`EXECUTE AS USER` is the engine's, for dba and
//! system roles, as over pgwire).
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/login` | a token for the Basic-authenticated user |
//! | `POST /v1/sql` | one statement, `{"sql": "...", "params": [...]}` |
//! | `GET /v1/live` | a WebSocket of live queries (see [`live`]) |
//! | `GET /metrics` | Prometheus text (see [`crate::figures`]) |
//! | `GET /` | the console (see [`console`]) |
//!
//! Every answer that fails is JSON, `{"code": "...", "message": "..."}`,
//! with the engine's stable code and an HTTP status that fits it
//! ([`status_of`]); errors inside the server say only that they happened
//! (the detail goes to the log).
//!
//! Every buffer is bounded: request bodies by `max_body_bytes` (refused
//! with `413` before they are read when their length is announced), answers
//! by `max_result_bytes`, connections by `max_connections`; every wait has
//! a deadline: a connection that starts no request, or does not finish
//! sending one, by `idle_timeout`, and every write to a client (answers and
//! WebSocket events) by `write_timeout` (see [`deadline`]).

pub(crate) mod auth;
mod console;
mod deadline;
mod live;
mod prepared;
mod sql;
pub(crate) mod tokens;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tenantfusion_core::TenantError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::config::HttpConfig;
use crate::connection::Shared;
use crate::figures::{Connected, Protocol};
use deadline::WriteDeadline;
use tokens::Tokens;

/// What every HTTP connection of one server shares.
pub(crate) struct Http {
    pub(crate) shared: Arc<Shared>,
    pub(crate) config: HttpConfig,
    pub(crate) tokens: Tokens,
    /// Renders `GET /metrics`, when the host installed a Prometheus recorder.
    pub(crate) metrics: OnceLock<PrometheusHandle>,
    /// Statements with `params`, prepared once per user and text.
    pub(crate) prepared: prepared::Prepared,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Http {
    pub(crate) fn new(shared: Arc<Shared>, config: HttpConfig) -> Result<Self, TenantError> {
        let tokens = Tokens::new(
            config.token_key.as_deref(),
            config.token_ttl,
            Arc::clone(&shared.engine.config().clock),
        )?;
        Ok(Self {
            shared,
            config,
            tokens,
            metrics: OnceLock::new(),
            prepared: prepared::Prepared::default(),
        })
    }
}

/// An answer of ours: a body and its type.
pub(crate) type Answer = Response<Full<Bytes>>;

/// A request refused or failed: an HTTP status and the JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
}

/// The body of every error answer.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// A request the client must fix (`400`).
    pub(crate) fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn into_answer(self) -> Answer {
        let body = serde_json::to_vec(&ErrorBody {
            code: &self.code,
            message: &self.message,
        })
        .unwrap_or_default();
        let mut answer = json(self.status, body);
        if self.status == StatusCode::UNAUTHORIZED {
            // Basic is taken when sent, but not asked for: a Basic
            // challenge makes browsers open their own login dialog over
            // the console (and headless ones drop the request).
            answer.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tenantfusion\""),
            );
        }
        answer
    }
}

impl From<TenantError> for ApiError {
    /// The engine's code and message, under the status that fits the code;
    /// what fails inside the server is logged and said only by its code.
    fn from(err: TenantError) -> Self {
        let status = status_of(err.code());
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            warn!("statement failed inside the server: {err}");
            return Self::new(
                status,
                err.code(),
                "the server failed to run the statement (see its log)",
            );
        }
        Self::new(status, err.code(), err.to_string())
    }
}

/// The HTTP status for an engine error code (see `TenantError::code`).
///
/// ```text
/// the statement's fault       400   SYNTAX_ERROR, PLAN_ERROR, EXECUTION_ERROR, ...
/// not logged in               401   NO_USER_CONTEXT
/// not allowed                 403   PERMISSION_DENIED
/// no such thing               404   TABLE_NOT_FOUND, NAMESPACE_NOT_FOUND, USER_NOT_FOUND, ...
/// conflicts with what exists  409   TABLE_EXISTS, PRIMARY_KEY_VIOLATION, ...
/// over a limit                429   RESOURCES_EXHAUSTED, SLOW_CONSUMER
/// cannot be served now        503   NO_HEALTHY_PROVIDER, UPSTREAM_UNAVAILABLE, CANCELLED, TIMEOUT
/// the server's fault          500   STORAGE_ERROR, DATA_CORRUPTED, INTERNAL
/// ```
pub(crate) fn status_of(code: &str) -> StatusCode {
    match code {
        "SYNTAX_ERROR"
        | "PLAN_ERROR"
        | "EXECUTION_ERROR"
        | "INVALID_ARGUMENT"
        | "INVALID_CONFIG"
        | "SCHEMA_MISMATCH"
        | "NOT_NULL_VIOLATION"
        | "NOT_SUPPORTED"
        | "CAPABILITY_MISMATCH" => StatusCode::BAD_REQUEST,
        "NO_USER_CONTEXT" => StatusCode::UNAUTHORIZED,
        "PERMISSION_DENIED" => StatusCode::FORBIDDEN,
        "TABLE_NOT_FOUND" | "NAMESPACE_NOT_FOUND" | "USER_NOT_FOUND" | "PROVIDER_NOT_FOUND" => {
            StatusCode::NOT_FOUND
        }
        "TABLE_EXISTS"
        | "NAMESPACE_EXISTS"
        | "USER_EXISTS"
        | "NAMESPACE_NOT_EMPTY"
        | "PRIMARY_KEY_VIOLATION" => StatusCode::CONFLICT,
        "RESOURCES_EXHAUSTED" | "SLOW_CONSUMER" => StatusCode::TOO_MANY_REQUESTS,
        "NO_HEALTHY_PROVIDER" | "UPSTREAM_UNAVAILABLE" | "CANCELLED" | "TIMEOUT" => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

/// The body of `request`, at most `limit` bytes: `413` for more, before
/// reading when `Content-Length` says so, else as soon as it is over;
/// `408` when it has not all come within `deadline` (a client trickling a
/// body would otherwise hold its connection for ever).
pub(crate) async fn body(
    request: Request<Incoming>,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BODY_TOO_LARGE",
            format!("the request body is over {limit} bytes (max_body_kib)"),
        )
    };
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(deadline, Limited::new(request.into_body(), limit).collect());
    let Ok(read) = read.await else {
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            format!("the request body did not come within {deadline:?} (idle_timeout_secs)"),
        ));
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(err) => Err(ApiError::bad_request(
            "INVALID_REQUEST",
            format!("cannot read the request body: {err}"),
        )),
    }
}

/// Tells a client there is no room and closes: `503`, written by hand
/// after the start of its request (at most 8 KiB, for at most a second:
/// clients take an answer that comes before their request as broken).
pub(crate) async fn refuse(mut socket: TcpStream) {
    let mut start = [0u8; 8 << 10];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), socket.read(&mut start)).await;
    let body = r#"{"code":"TOO_MANY_CONNECTIONS","message":"the server serves as many HTTP connections as it may (max_connections)"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = socket.write_all(answer.as_bytes());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
    let _ = socket.shutdown().await;
}

/// A WebSocket the connection was upgraded to, waiting for the HTTP
/// exchange to finish (see [`serve`]).
type Upgrade = Arc<Mutex<Option<live::Pending>>>;

/// Serves one HTTP connection until the client leaves, it idles past
/// `idle_timeout` or it becomes a WebSocket, which is then served on the
/// same task (so the server's shutdown reaches it, and it keeps the
/// connection's slot).
pub(crate) async fn serve(socket: TcpStream, addr: SocketAddr, http: Arc<Http>) {
    let connected = Connected::new(Protocol::Http);
    let upgrade: Upgrade = Arc::new(Mutex::new(None));
    let service = {
        let http = Arc::clone(&http);
        let upgrade = Arc::clone(&upgrade);
        service_fn(move |request| {
            let http = Arc::clone(&http);
            let upgrade = Arc::clone(&upgrade);
            async move { Ok::<_, Infallible>(route(&http, request, &upgrade).await) }
        })
    };
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(http.config.idle_timeout)
        .serve_connection(
            TokioIo::new(WriteDeadline::new(socket, http.config.write_timeout)),
            service,
        )
        .with_upgrades()
        .await;
    if let Err(err) = served {
        debug!(%addr, "HTTP connection ended: {err}");
    }
    drop(connected);
    let pending = upgrade.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(pending) = pending {
        live::run(&http, pending, addr).await;
    }
}

/// Sends `request` to its handler.
async fn route(http: &Arc<Http>, request: Request<Incoming>, upgrade: &Upgrade) -> Answer {
    let path = request.uri().path().to_string();
    let answered = match (request.method(), path.as_str()) {
        (&Method::POST, "/v1/sql") => sql::post(http, request).await,
        (&Method::POST, "/v1/login") => login(http, request).await,
        (&Method::GET, "/v1/live") => live::upgrade(http, request, upgrade).await,
        (&Method::GET, "/metrics") => prometheus(http),
        (&Method::GET, _) if let Some(file) = console::file(&path) => Ok(file),
        (_, "/v1/sql" | "/v1/login" | "/v1/live" | "/metrics") => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            format!("{} is not served on {path}", request.method()),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("nothing is served at {path}"),
        )),
    };
    answered.unwrap_or_else(ApiError::into_answer)
}

/// `GET /metrics`: every figure in Prometheus's text format. Not behind
/// a login (scrapers rarely have one): the figures are counts and times,
/// no rows, statements or user names.
fn prometheus(http: &Http) -> Result<Answer, ApiError> {
    let Some(handle) = http.metrics.get() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "this server records no metrics (its host installed no recorder)",
        ));
    };
    http.shared.engine.publish_metrics();
    let mut answer = Response::new(Full::new(Bytes::from(handle.render())));
    answer.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(answer)
}

/// `POST /v1/login` with HTTP Basic: `{"token": "...", "expires_at": <unix
/// seconds>, "user": "...", "role": "..."}`.
async fn login(http: &Http, request: Request<Incoming>) -> Result<Answer, ApiError> {
    let caller = auth::basic_only(http, request.headers()).await?;
    let issued = http
        .tokens
        .issue(&http.shared.engine, caller.user_id().as_str())?;
    #[derive(Serialize)]
    struct Login<'a> {
        token: &'a str,
        expires_at: i64,
        user: &'a str,
        role: String,
    }
    let body = serde_json::to_vec(&Login {
        token: &issued.token,
        expires_at: issued.expires_at,
        user: caller.user_id().as_str(),
        role: caller.role().to_string(),
    })
    .map_err(|err| ApiError::from(TenantError::Internal(err.to_string())))?;
    Ok(json(StatusCode::OK, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_code_has_a_status_that_fits() {
        for (code, status) in [
            ("SYNTAX_ERROR", 400),
            ("PLAN_ERROR", 400),
            ("PERMISSION_DENIED", 403),
            ("TABLE_NOT_FOUND", 404),
            ("PRIMARY_KEY_VIOLATION", 409),
            ("TABLE_EXISTS", 409),
            ("RESOURCES_EXHAUSTED", 429),
            ("TIMEOUT", 503),
            ("STORAGE_ERROR", 500),
            ("SOMETHING_NEW", 500),
        ] {
            assert_eq!(status_of(code).as_u16(), status, "{code}");
        }
    }

    #[test]
    fn internal_errors_keep_their_detail_out_of_the_answer() {
        let err = ApiError::from(TenantError::Internal("/var/lib/secret path".into()));
        assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!err.message.contains("/var/lib"), "{}", err.message);
        let err = ApiError::from(TenantError::PermissionDenied("no".into()));
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert!(err.message.contains("no"));
    }
}
