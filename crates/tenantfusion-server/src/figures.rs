//! What the server records through the `metrics` facade: statements by
//! protocol, kind and outcome, their latency, and connections by protocol.
//! The engine's own figures are in [`tenantfusion::figures`].
//!
//! Labels come from fixed sets only (a statement's kind is one of a dozen
//! words, its outcome `ok` or one of the engine's error codes), never from
//! what a client sends, so no client can make the series grow.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::statements::Kind;

const STATEMENTS: &str = "tenantfusion_statements_total";
const STATEMENT_SECONDS: &str = "tenantfusion_statement_duration_seconds";
const CONNECTIONS: &str = "tenantfusion_connections";

/// How a client reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Pgwire,
    Http,
    WebSocket,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Pgwire => "pgwire",
            Protocol::Http => "http",
            Protocol::WebSocket => "websocket",
        }
    }
}

/// Gives the installed recorder the help text of the server's figures and
/// of the engine's.
pub fn describe() {
    tenantfusion::describe_metrics();
    describe_counter!(
        STATEMENTS,
        "Statements run, by protocol, kind and outcome (ok, or the error code)"
    );
    describe_histogram!(
        STATEMENT_SECONDS,
        Unit::Seconds,
        "Time from a statement's arrival to its last row sent, by protocol and kind"
    );
    describe_gauge!(CONNECTIONS, "Open client connections, by protocol");
}

/// A statement of `kind` ended after `took`: `outcome` is `ok` or its
/// error code.
pub(crate) fn statement(protocol: Protocol, kind: &Kind, outcome: &str, took: Duration) {
    // Labels outlive the call (the recorder keeps them).
    let outcome = known_outcome(outcome).to_string();
    counter!(
        STATEMENTS,
        "protocol" => protocol.label(),
        "kind" => kind.label(),
        "outcome" => outcome
    )
    .increment(1);
    histogram!(STATEMENT_SECONDS, "protocol" => protocol.label(), "kind" => kind.label())
        .record(took.as_secs_f64());
}

/// `outcome` if it is `ok` or an error code of ours (upper-case words and
/// underscores, at most 32 characters); `other` for anything else, so that
/// a label never holds free text.
fn known_outcome(outcome: &str) -> &str {
    let code = outcome.len() <= 32
        && !outcome.is_empty()
        && outcome.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
    if outcome == "ok" || code {
        outcome
    } else {
        "other"
    }
}

/// Counts an open connection of `protocol` for as long as it lives.
pub(crate) struct Connected(Protocol);

impl Connected {
    pub(crate) fn new(protocol: Protocol) -> Self {
        gauge!(CONNECTIONS, "protocol" => protocol.label()).increment(1.0);
        Self(protocol)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        gauge!(CONNECTIONS, "protocol" => self.0.label()).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_codes_or_other() {
        assert_eq!(known_outcome("ok"), "ok");
        assert_eq!(known_outcome("PERMISSION_DENIED"), "PERMISSION_DENIED");
        for free in ["", "drop table x", "57014", &"A".repeat(40), "Ok"] {
            assert_eq!(known_outcome(free), "other", "{free}");
        }
    }
}
