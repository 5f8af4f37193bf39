//! The tenantfusion server: the engine behind the PostgreSQL wire protocol.
//!
//! # The model
//! One process holds one [`Engine`](tenantfusion::Engine). Each TCP
//! connection is one logged-in user for its whole life:
//!
//! 1. The client names database [`DATABASE`] (any other name is refused
//!    with SQLSTATE `3D000`) and a user.
//! 2. It proves the user's password with SCRAM-SHA-256 against the
//!    verifier the engine keeps (`CREATE USER 'alice' PASSWORD '...'`);
//!    the password never crosses the wire and is never stored. An unknown
//!    user fails exactly like a wrong password (`28P01`).
//! 3. The connection gets a [`TenantSession`](tenantfusion::TenantSession)
//!    for that user and role. Nothing sent afterwards changes it: startup
//!    parameters are not consulted, `SET ROLE` and `SET SESSION
//!    AUTHORIZATION` are refused by the engine, and only `EXECUTE AS USER`
//!    (for roles dba and system, checked by the engine) runs a statement as
//!    someone else.
//!
//! Statements arrive by the simple protocol (several per message, each run
//! to its end before the next, the first error stopping the rest) or the
//! extended one (`Parse` of a query or change makes an engine
//! [`PreparedStatement`](tenantfusion::PreparedStatement), planned once and
//! run with each `Bind`'s values). Errors carry the SQLSTATE of the
//! engine's stable code ([`sqlstate`]) and the code itself in the message.
//!
//! `BEGIN`, `COMMIT` and `ROLLBACK` are answered so that drivers work, but
//! group nothing: each statement is atomic and committed when it completes;
//! a `ROLLBACK` after changes warns that they stay.
//!
//! ```no_run
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! use tenantfusion::{Engine, EngineConfig};
//! use tenantfusion_server::{Server, ServerConfig, bootstrap_admin};
//!
//! let engine = Engine::new(EngineConfig::default())?;
//! bootstrap_admin(&engine, Some("secret")).await?;
//! let server = Server::bind(engine, ServerConfig::default()).await?;
//! server.run(std::future::pending()).await?; // psql -h 127.0.0.1 -p 5433 -U admin tenantfusion
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod bootstrap;
mod config;
mod connection;
mod demo;
mod figures;
mod framing;
mod http;
mod live;
mod results;
mod scram;
mod server;
mod settings;
pub mod shell;
mod sqlstate;
mod statements;
mod tls;

pub use bootstrap::{ADMIN, bootstrap_admin};
pub use config::{FileConfig, HttpConfig, ServerConfig};
pub use connection::DATABASE;
pub use demo::{DEMO_USER, create_demo};
pub use figures::describe as describe_metrics;
pub use live::HEARTBEAT;
pub use server::{Server, ServerError};
pub use sqlstate::sqlstate;
pub use tls::{TlsError, TlsFiles};
