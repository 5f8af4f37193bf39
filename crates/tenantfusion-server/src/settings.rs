//! The `SET`s drivers send on connect, answered by the server.
//!
//! psql, libpq, JDBC, psycopg and tokio-postgres set a few PostgreSQL
//! session settings before the first statement (`SET extra_float_digits =
//! 3`, `SET application_name = 'x'`, ...). DataFusion knows none of them,
//! and none changes what the engine does, so they are accepted here where
//! the value is one this server already gives (`client_encoding` must be
//! UTF8, the only encoding it speaks). Any other `SET` goes to the engine,
//! which decides (its own `datafusion.*` settings, per session).
//!
//! None of these touch identity: `SET ROLE` and `SET SESSION
//! AUTHORIZATION` are not here, and the engine refuses them.

use crate::statements::strip_keyword;

/// Settings whose value does not change anything the server sends.
const ACCEPTED: &[&str] = &[
    "application_name",
    "extra_float_digits",
    "client_min_messages",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "geqo",
    "jit",
];

/// Settings whose only value here is fixed: `(name, the accepted values)`.
const FIXED: &[(&str, &[&str])] = &[
    ("client_encoding", &["utf8", "utf-8", "unicode"]),
    ("standard_conforming_strings", &["on", "true"]),
    ("datestyle", &["iso", "iso, mdy", "iso, ymd", "iso, dmy"]),
    ("intervalstyle", &["postgres"]),
    ("bytea_output", &["hex"]),
];

/// `Some(Ok)` when `sql` is a `SET` of a client setting the server
/// answers; `Some(Err(message))` when it sets one to a value it cannot
/// honour; `None` when the engine should run it.
///
/// ```text
/// SET extra_float_digits = 3        Some(Ok)
/// SET SESSION client_encoding TO 'LATIN1'   Some(Err(..))
/// SET datafusion.execution.batch_size = 100  None
/// ```
pub(crate) fn client_setting(sql: &str) -> Option<Result<(), String>> {
    let rest = strip_keyword(sql.trim_start(), "SET")?;
    let rest = strip_keyword(rest, "SESSION")
        .or_else(|| strip_keyword(rest, "LOCAL"))
        .unwrap_or(rest);
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(rest.len());
    let name = rest[..end].to_ascii_lowercase();
    let value = rest[end..].trim_start();
    let value = value
        .strip_prefix('=')
        .or_else(|| strip_keyword(value, "TO"))?
        .trim()
        .trim_end_matches(';')
        .trim();
    let value = value
        .trim_matches('\'')
        .trim_matches('"')
        .to_ascii_lowercase();
    if ACCEPTED.contains(&name.as_str()) {
        return Some(Ok(()));
    }
    let (_, allowed) = FIXED.iter().find(|(fixed, _)| *fixed == name)?;
    if allowed.contains(&value.as_str()) || value == "default" {
        Some(Ok(()))
    } else {
        Some(Err(format!(
            "INVALID_ARGUMENT: {name} can only be {} on this server",
            allowed[0].to_ascii_uppercase()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_settings_are_answered() {
        for sql in [
            "SET extra_float_digits = 3",
            "set application_name to 'psql'",
            "SET SESSION client_encoding TO 'UTF8'",
            "SET DateStyle = 'ISO, MDY'",
            "SET client_encoding = default",
        ] {
            assert_eq!(client_setting(sql), Some(Ok(())), "{sql}");
        }
    }

    #[test]
    fn impossible_values_are_refused() {
        let err = client_setting("SET client_encoding TO 'LATIN1'")
            .unwrap()
            .unwrap_err();
        assert!(err.contains("UTF8"), "{err}");
    }

    #[test]
    fn everything_else_goes_to_the_engine() {
        for sql in [
            "SET datafusion.execution.batch_size = 100",
            "SET ROLE admin",
            "SET SESSION AUTHORIZATION admin",
            "SELECT 1",
            "SETTINGS",
            "SET",
            "SET application_name",
        ] {
            assert_eq!(client_setting(sql), None, "{sql}");
        }
    }
}
