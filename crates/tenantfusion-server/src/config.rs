//! The server's settings.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

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
    /// How long a live query with no events waits before it checks that its
    /// client is still there (see [`HEARTBEAT`](crate::HEARTBEAT)).
    pub live_heartbeat: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 5433)),
            max_connections: 100,
            shutdown_grace: Duration::from_secs(5),
            live_heartbeat: crate::live::HEARTBEAT,
        }
    }
}
