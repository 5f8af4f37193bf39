//! The server through real clients: tokio-postgres (simple and extended
//! protocols) and psql.

mod harness;
mod hostile;
mod logins;
mod psql;
mod shutdown;
mod statements;
