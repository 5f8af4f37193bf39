//! The server through real clients: tokio-postgres (simple and extended
//! protocols), psql, psycopg, hyper's HTTP client and a WebSocket client.

mod browser;
mod harness;
mod hostile;
mod http;
mod limits;
mod live;
mod logins;
mod logs;
mod metrics;
mod psql;
mod python;
mod shell;
mod shutdown;
mod statements;
mod tls;
mod types;
mod web;
mod websocket;
