//! The server's settings, and the file they can be read from.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:5433"
//! max_connections = 100
//! shutdown_grace_secs = 5
//! idle_session_timeout_secs = 0     # 0: idle connections stay
//! live_heartbeat_secs = 10
//! max_message_mib = 64              # the longest query text or Bind
//! startup_timeout_secs = 60         # from connecting to logged in
//! slow_statement_ms = 1000          # log statements this slow; 0: none
//! tls_cert = "server.crt"           # TLS for clients that ask (both or neither)
//! tls_key = "server.key"
//!
//! [http]                            # HTTP and WebSocket; only with this section
//! listen = "127.0.0.1:8080"
//! max_connections = 256
//! max_body_kib = 1024               # the largest request body
//! max_result_mib = 64               # the largest answer of POST /v1/sql
//! idle_timeout_secs = 60            # a connection that sends no request
//! token_ttl_secs = 3600             # how long a bearer token lasts
//! token_key = "64 hex digits"       # signs tokens; default: new at each start
//! max_ws_message_kib = 256          # the largest WebSocket message a client sends
//! write_timeout_secs = 30           # a client that reads nothing this long is disconnected
//! subscriptions_per_socket = 1000
//!
//! [limits]
//! memory_mib = 2048                 # the one memory pool of every query
//! statement_memory_mib = 512        # one statement's share of it
//! statements_per_user = 16          # running at once, per user
//! statement_timeout_secs = 600      # 0: none
//! ```
//!
//! Every key is optional; an unknown key or a value of the wrong kind is
//! `INVALID_CONFIG` naming the key.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tenantfusion::{EngineConfig, StatementLimits};
use tenantfusion_core::TenantError;
use toml::{Table, Value};

use crate::tls::TlsFiles;

/// How a [`Server`](crate::Server) listens and what it allows.
///
/// ```
/// use tenantfusion_server::ServerConfig;
///
/// let config = ServerConfig::default();
/// assert_eq!(config.listen.to_string(), "127.0.0.1:5433");
/// assert_eq!(config.max_connections, 100);
/// ```
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen; loopback by default (`127.0.0.1:5433`, next to a
    /// PostgreSQL on 5432).
    pub listen: SocketAddr,
    /// Connections served at once; one more is refused with SQLSTATE
    /// `53300` (PostgreSQL's `max_connections` default).
    pub max_connections: usize,
    /// At shutdown, how long running statements may go on before they are
    /// cancelled and every connection is closed.
    pub shutdown_grace: Duration,
    /// A connection that sends nothing for this long, with no statement
    /// running, is closed (`None`: never).
    pub idle_session_timeout: Option<Duration>,
    /// How long a live query with no events waits before it checks that its
    /// client is still there (see [`HEARTBEAT`](crate::HEARTBEAT)).
    pub live_heartbeat: Duration,
    /// The largest message a client may send (a query's text, a `Bind`'s
    /// values); a longer one ends the connection (`08P01`) before it is
    /// read. pgwire alone would buffer up to 1 GiB per connection.
    pub max_message_bytes: usize,
    /// Statements that take at least this long are logged (at `info`: user,
    /// kind and time, never the text); `None`: none are.
    pub slow_statement: Option<Duration>,
    /// How long a client may take from connecting to being logged in (TLS
    /// handshake and SCRAM included); then it is closed. PostgreSQL's
    /// `authentication_timeout` is 60 s.
    pub startup_timeout: Duration,
    /// The certificate and key to offer TLS with; `None`: clients asking
    /// for TLS are told no, and connect in the clear or not at all, as
    /// their `sslmode` says.
    pub tls: Option<TlsFiles>,
    /// Where and how to serve HTTP, WebSocket and metrics (see
    /// [`HttpConfig`]); `None`: no HTTP listener.
    pub http: Option<HttpConfig>,
}

/// The HTTP listener's settings: `POST /v1/sql`, `POST /v1/login`,
/// `GET /v1/live` (WebSocket), `GET /metrics` and the console at `/`.
///
/// ```
/// use tenantfusion_server::HttpConfig;
///
/// let config = HttpConfig::default();
/// assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
/// assert_eq!(config.max_body_bytes, 1 << 20);
/// ```
#[derive(Clone)]
pub struct HttpConfig {
    /// Where to listen; loopback by default (`127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// HTTP connections (WebSockets included) served at once; one more is
    /// answered `503` and closed.
    pub max_connections: usize,
    /// The largest request body; a larger one is refused with `413`
    /// before it is read.
    pub max_body_bytes: usize,
    /// The largest answer of `POST /v1/sql` (JSON or Arrow); a query whose
    /// rows would need more fails with `RESOURCES_EXHAUSTED` instead of
    /// filling the server's memory (`LIMIT`, or pgwire, which streams).
    pub max_result_bytes: usize,
    /// A connection that starts no request for this long is closed (also
    /// the time a client has to send a request's headers).
    pub idle_timeout: Duration,
    /// How long a token from `POST /v1/login` is good for.
    pub token_ttl: Duration,
    /// The key that signs tokens; `None`: a random one made at each start
    /// (tokens then die with the process).
    pub token_key: Option<Vec<u8>>,
    /// The largest WebSocket message (and frame) a client may send; a
    /// larger one closes the socket (`1009`).
    pub max_ws_message_bytes: usize,
    /// Live queries one WebSocket may run at once.
    pub subscriptions_per_socket: usize,
    /// How long a write to a client (an answer, a WebSocket event) may wait
    /// for it to read; then the connection is closed (a client that never
    /// reads holds nothing for ever).
    pub write_timeout: Duration,
}

/// Never the token key.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("max_connections", &self.max_connections)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_result_bytes", &self.max_result_bytes)
            .field("idle_timeout", &self.idle_timeout)
            .field("token_ttl", &self.token_ttl)
            .field("token_key", &self.token_key.as_ref().map(|_| ".."))
            .field("max_ws_message_bytes", &self.max_ws_message_bytes)
            .field("subscriptions_per_socket", &self.subscriptions_per_socket)
            .field("write_timeout", &self.write_timeout)
            .finish()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            max_connections: 256,
            max_body_bytes: 1 << 20,
            max_result_bytes: 64 << 20,
            idle_timeout: Duration::from_secs(60),
            token_ttl: Duration::from_secs(3600),
            token_key: None,
            max_ws_message_bytes: 256 << 10,
            subscriptions_per_socket: 1000,
            write_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 5433)),
            max_connections: 100,
            shutdown_grace: Duration::from_secs(5),
            idle_session_timeout: None,
            live_heartbeat: crate::live::HEARTBEAT,
            max_message_bytes: 64 << 20,
            slow_statement: Some(Duration::from_secs(1)),
            startup_timeout: Duration::from_secs(60),
            tls: None,
            http: None,
        }
    }
}

/// What `tenantfusion.toml` holds (see the [module docs](self)): the
/// server's settings and the engine's limits.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// The server's settings.
    pub server: ServerConfig,
    /// Bytes of the one memory pool all queries draw on.
    pub memory_limit: Option<usize>,
    /// One statement's bounds.
    pub statement_limits: StatementLimits,
}

impl Default for FileConfig {
    /// Limits for a server facing tenants it does not trust: a 2 GiB pool,
    /// 512 MiB per statement, 16 statements per user, 10 minutes each.
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            memory_limit: Some(2048 << 20),
            statement_limits: StatementLimits {
                memory: Some(512 << 20),
                per_user: Some(16),
                timeout: Some(Duration::from_secs(600)),
            },
        }
    }
}

impl FileConfig {
    /// Reads `text` over the defaults.
    ///
    /// ```
    /// use tenantfusion_server::FileConfig;
    ///
    /// let config = FileConfig::from_toml("[limits]\nstatements_per_user = 4").unwrap();
    /// assert_eq!(config.statement_limits.per_user, Some(4));
    /// let err = FileConfig::from_toml("[limits]\nstatement_per_user = 4").unwrap_err();
    /// assert_eq!(err.code(), "INVALID_CONFIG");
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, TenantError> {
        let root: Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid("(file)", e.to_string().trim()))?;
        let mut config = Self::default();
        let (mut tls_cert, mut tls_key) = (None, None);
        for (section, value) in &root {
            let table = value
                .as_table()
                .ok_or_else(|| invalid(section, "must be a table"))?;
            if section == "http" {
                config.server.http = Some(http_section(table)?);
                continue;
            }
            for (key, value) in table {
                let name = format!("{section}.{key}");
                match (section.as_str(), key.as_str()) {
                    ("server", "listen") => {
                        config.server.listen = string(&name, value)?
                            .parse()
                            .map_err(|e| invalid(&name, &format!("not an address: {e}")))?;
                    }
                    ("server", "max_connections") => {
                        config.server.max_connections = count(&name, value)?.max(1);
                    }
                    ("server", "shutdown_grace_secs") => {
                        config.server.shutdown_grace =
                            Duration::from_secs(count(&name, value)? as u64);
                    }
                    ("server", "idle_session_timeout_secs") => {
                        config.server.idle_session_timeout = seconds(&name, value)?;
                    }
                    ("server", "max_message_mib") => {
                        config.server.max_message_bytes = mebibytes(&name, value)?
                            .ok_or_else(|| invalid(&name, "must be at least 1"))?;
                    }
                    ("server", "slow_statement_ms") => {
                        let ms = count(&name, value)? as u64;
                        config.server.slow_statement = (ms > 0).then(|| Duration::from_millis(ms));
                    }
                    ("server", "live_heartbeat_secs") => {
                        config.server.live_heartbeat = seconds(&name, value)?
                            .ok_or_else(|| invalid(&name, "must be at least 1"))?;
                    }
                    ("server", "startup_timeout_secs") => {
                        config.server.startup_timeout = seconds(&name, value)?
                            .ok_or_else(|| invalid(&name, "must be at least 1"))?;
                    }
                    ("server", "tls_cert") => tls_cert = Some(string(&name, value)?),
                    ("server", "tls_key") => tls_key = Some(string(&name, value)?),
                    ("limits", "memory_mib") => config.memory_limit = mebibytes(&name, value)?,
                    ("limits", "statement_memory_mib") => {
                        config.statement_limits.memory = mebibytes(&name, value)?;
                    }
                    ("limits", "statements_per_user") => {
                        let n = count(&name, value)?;
                        config.statement_limits.per_user = (n > 0).then_some(n);
                    }
                    ("limits", "statement_timeout_secs") => {
                        config.statement_limits.timeout = seconds(&name, value)?;
                    }
                    _ => return Err(invalid(&name, "unknown setting")),
                }
            }
        }
        config.server.tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles::new(cert, key)),
            (None, None) => None,
            (Some(_), None) => return Err(invalid("server.tls_key", "tls_cert needs it")),
            (None, Some(_)) => return Err(invalid("server.tls_cert", "tls_key needs it")),
        };
        Ok(config)
    }

    /// Reads the file at `path` over the defaults; relative TLS file names
    /// are relative to the file's directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TenantError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(&path.display().to_string(), &e.to_string()))?;
        let mut config = Self::from_toml(&text)?;
        // Relative to the file, as a file's own references are read.
        if let (Some(tls), Some(dir)) = (&mut config.server.tls, path.parent()) {
            tls.cert = dir.join(&tls.cert);
            tls.key = dir.join(&tls.key);
        }
        Ok(config)
    }

    /// `engine` with these limits.
    pub fn apply(&self, engine: EngineConfig) -> EngineConfig {
        let engine = engine.with_statement_limits(self.statement_limits);
        match self.memory_limit {
            Some(bytes) => engine.with_memory_limit(bytes),
            None => engine,
        }
    }
}

/// The `[http]` section over [`HttpConfig`]'s defaults.
fn http_section(table: &Table) -> Result<HttpConfig, TenantError> {
    let mut http = HttpConfig::default();
    for (key, value) in table {
        let name = format!("http.{key}");
        let at_least_one = |n: usize| {
            (n > 0)
                .then_some(n)
                .ok_or_else(|| invalid(&name, "must be at least 1"))
        };
        match key.as_str() {
            "listen" => {
                http.listen = string(&name, value)?
                    .parse()
                    .map_err(|e| invalid(&name, &format!("not an address: {e}")))?;
            }
            "max_connections" => http.max_connections = at_least_one(count(&name, value)?)?,
            "max_body_kib" => {
                http.max_body_bytes = kibibytes(&name, at_least_one(count(&name, value)?)?)?
            }
            "max_result_mib" => {
                http.max_result_bytes =
                    mebibytes(&name, value)?.ok_or_else(|| invalid(&name, "must be at least 1"))?;
            }
            "idle_timeout_secs" => {
                http.idle_timeout =
                    seconds(&name, value)?.ok_or_else(|| invalid(&name, "must be at least 1"))?;
            }
            "token_ttl_secs" => {
                http.token_ttl =
                    seconds(&name, value)?.ok_or_else(|| invalid(&name, "must be at least 1"))?;
            }
            "token_key" => http.token_key = Some(hex_key(&name, string(&name, value)?)?),
            "max_ws_message_kib" => {
                http.max_ws_message_bytes = kibibytes(&name, at_least_one(count(&name, value)?)?)?;
            }
            "subscriptions_per_socket" => {
                http.subscriptions_per_socket = at_least_one(count(&name, value)?)?;
            }
            "write_timeout_secs" => {
                http.write_timeout =
                    seconds(&name, value)?.ok_or_else(|| invalid(&name, "must be at least 1"))?;
            }
            _ => return Err(invalid(&name, "unknown setting")),
        }
    }
    Ok(http)
}

/// A signing key written as hex: at least 32 bytes, as HMAC-SHA-256 wants.
fn hex_key(key: &str, text: &str) -> Result<Vec<u8>, TenantError> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(key, "must be hex digits"));
    }
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect();
    if bytes.len() < 32 {
        return Err(invalid(key, "must be at least 32 bytes (64 hex digits)"));
    }
    Ok(bytes)
}

fn kibibytes(key: &str, n: usize) -> Result<usize, TenantError> {
    n.checked_mul(1 << 10)
        .ok_or_else(|| invalid(key, "too large"))
}

fn invalid(key: &str, message: &str) -> TenantError {
    TenantError::InvalidConfig {
        key: key.to_string(),
        message: message.to_string(),
    }
}

fn string<'a>(key: &str, value: &'a Value) -> Result<&'a str, TenantError> {
    value
        .as_str()
        .ok_or_else(|| invalid(key, "must be a string"))
}

fn count(key: &str, value: &Value) -> Result<usize, TenantError> {
    value
        .as_integer()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| invalid(key, "must be a whole number, 0 or more"))
}

/// Whole seconds; 0 is `None`.
fn seconds(key: &str, value: &Value) -> Result<Option<Duration>, TenantError> {
    let n = count(key, value)?;
    Ok((n > 0).then(|| Duration::from_secs(n as u64)))
}

/// Mebibytes; 0 is `None` (no limit).
fn mebibytes(key: &str, value: &Value) -> Result<Option<usize>, TenantError> {
    let n = count(key, value)?;
    let bytes = n
        .checked_mul(1 << 20)
        .ok_or_else(|| invalid(key, "too large"))?;
    Ok((n > 0).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_read() {
        let config = FileConfig::from_toml(
            r#"
            [server]
            listen = "127.0.0.1:6543"
            max_connections = 7
            shutdown_grace_secs = 2
            idle_session_timeout_secs = 30
            live_heartbeat_secs = 3
            max_message_mib = 2
            slow_statement_ms = 0
            startup_timeout_secs = 9
            tls_cert = "c.pem"
            tls_key = "k.pem"
            [limits]
            memory_mib = 100
            statement_memory_mib = 0
            statements_per_user = 2
            statement_timeout_secs = 0
            [http]
            listen = "127.0.0.1:8181"
            max_connections = 3
            max_body_kib = 4
            max_result_mib = 5
            idle_timeout_secs = 6
            token_ttl_secs = 7
            token_key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
            max_ws_message_kib = 8
            subscriptions_per_socket = 9
            write_timeout_secs = 10
            "#,
        )
        .unwrap();
        let http = config.server.http.clone().unwrap();
        assert_eq!(http.listen.port(), 8181);
        assert_eq!(http.max_connections, 3);
        assert_eq!(http.max_body_bytes, 4 << 10);
        assert_eq!(http.max_result_bytes, 5 << 20);
        assert_eq!(http.idle_timeout, Duration::from_secs(6));
        assert_eq!(http.token_ttl, Duration::from_secs(7));
        assert_eq!(http.token_key, Some((0..32).collect::<Vec<u8>>()));
        assert_eq!(http.max_ws_message_bytes, 8 << 10);
        assert_eq!(http.subscriptions_per_socket, 9);
        assert_eq!(http.write_timeout, Duration::from_secs(10));
        assert!(
            !format!("{http:?}").contains("0a0b"),
            "the key is not shown"
        );
        assert!(FileConfig::from_toml("").unwrap().server.http.is_none());
        assert_eq!(config.server.listen.port(), 6543);
        assert_eq!(config.server.max_connections, 7);
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(2));
        assert_eq!(
            config.server.idle_session_timeout,
            Some(Duration::from_secs(30))
        );
        assert_eq!(config.server.live_heartbeat, Duration::from_secs(3));
        assert_eq!(config.server.max_message_bytes, 2 << 20);
        assert_eq!(config.server.slow_statement, None);
        assert_eq!(config.server.startup_timeout, Duration::from_secs(9));
        assert_eq!(config.server.tls, Some(TlsFiles::new("c.pem", "k.pem")));
        assert_eq!(config.memory_limit, Some(100 << 20));
        assert_eq!(config.statement_limits.memory, None);
        assert_eq!(config.statement_limits.per_user, Some(2));
        assert_eq!(config.statement_limits.timeout, None);
    }

    #[test]
    fn mistakes_name_their_key() {
        for (text, key) in [
            ("[server]\nlisten = 5", "server.listen"),
            ("[server]\nlisten = \"nowhere\"", "server.listen"),
            ("[server]\nmax_connections = -1", "server.max_connections"),
            ("[limits]\nmemory_mib = \"lots\"", "limits.memory_mib"),
            ("[limits]\nmemory = 1", "limits.memory"),
            (
                "[server]\nlive_heartbeat_secs = 0",
                "server.live_heartbeat_secs",
            ),
            (
                "[server]\nstartup_timeout_secs = 0",
                "server.startup_timeout_secs",
            ),
            (
                "[server]\nstartup_timeout_secs = \"soon\"",
                "server.startup_timeout_secs",
            ),
            ("[server]\ntls_cert = 1", "server.tls_cert"),
            ("[server]\ntls_key = \"k.pem\"", "server.tls_cert"),
            ("server = 1", "server"),
            ("[http]\nlisten = \"x\"", "http.listen"),
            ("[http]\nmax_body_kib = 0", "http.max_body_kib"),
            ("[http]\nmax_connections = -3", "http.max_connections"),
            ("[http]\ntoken_key = \"abc\"", "http.token_key"),
            ("[http]\ntoken_key = \"00ff\"", "http.token_key"),
            ("[http]\ntoken_key = \"zz\"", "http.token_key"),
            (
                "[http]\nsubscriptions_per_socket = 0",
                "http.subscriptions_per_socket",
            ),
            ("[http]\nport = 1", "http.port"),
            ("[http]\nwrite_timeout_secs = 0", "http.write_timeout_secs"),
            ("http = 1", "http"),
            ("[server", "(file)"),
        ] {
            match FileConfig::from_toml(text) {
                Err(TenantError::InvalidConfig { key: got, .. }) => assert_eq!(got, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
