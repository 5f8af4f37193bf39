//! The server through real clients: tokio-postgres (simple and extended
//! protocols) and psql.

mod harness;
mod hostile;
mod limits;
mod live;
mod logins;
mod logs;
mod psql;
mod python;
mod shell;
mod shutdown;
mod statements;
mod tls;
mod types;
