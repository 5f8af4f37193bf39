//! The SQLSTATE of each of the engine's stable error codes.
//!
//! Drivers branch on SQLSTATE (a unique violation, a missing table, a
//! cancelled statement), so each code maps to the class PostgreSQL uses for
//! the same failure. The message keeps the engine's own code in front
//! (`TABLE_NOT_FOUND: table 'app.t' not found`), so nothing is lost.

use pgwire::error::{ErrorInfo, PgWireError};
use tenantfusion_core::TenantError;

/// The SQLSTATE for an engine error code (see `TenantError::code`).
///
/// ```text
/// TABLE_NOT_FOUND        42P01   PERMISSION_DENIED      42501
/// PRIMARY_KEY_VIOLATION  23505   NOT_NULL_VIOLATION     23502
/// SYNTAX_ERROR           42601   NOT_SUPPORTED          0A000
/// RESOURCES_EXHAUSTED    53200   CANCELLED, TIMEOUT     57014
/// ```
pub fn sqlstate(code: &str) -> &'static str {
    match code {
        "NAMESPACE_NOT_FOUND" => "3F000",
        "NAMESPACE_EXISTS" => "42P06",
        "NAMESPACE_NOT_EMPTY" => "2BP01",
        "TABLE_NOT_FOUND" => "42P01",
        "TABLE_EXISTS" => "42P07",
        "PROVIDER_NOT_FOUND" | "USER_NOT_FOUND" => "42704",
        "USER_EXISTS" => "42710",
        "NO_HEALTHY_PROVIDER" | "UPSTREAM_UNAVAILABLE" => "58000",
        "CAPABILITY_MISMATCH" | "NOT_SUPPORTED" => "0A000",
        "INVALID_CONFIG" | "INVALID_ARGUMENT" => "22023",
        "SLOW_CONSUMER" => "53000",
        "PERMISSION_DENIED" => "42501",
        "NO_USER_CONTEXT" => "28000",
        "SCHEMA_MISMATCH" => "42804",
        "NOT_NULL_VIOLATION" => "23502",
        "PRIMARY_KEY_VIOLATION" => "23505",
        "STORAGE_ERROR" => "58030",
        "DATA_CORRUPTED" => "XX001",
        "SYNTAX_ERROR" => "42601",
        // What the planner refuses is the statement's fault (an unknown
        // column, a type that does not fit).
        "PLAN_ERROR" => "42000",
        // What fails while running is the data's (a cast, a division by zero).
        "EXECUTION_ERROR" => "22000",
        "RESOURCES_EXHAUSTED" => "53200",
        "CANCELLED" | "TIMEOUT" => "57014",
        _ => "XX000",
    }
}

/// `err` as the `ErrorResponse` a client receives.
pub(crate) fn error_info(err: &TenantError) -> ErrorInfo {
    ErrorInfo::new(
        "ERROR".to_string(),
        sqlstate(err.code()).to_string(),
        err.to_string(),
    )
}

/// `err` as a pgwire error (sent as an `ErrorResponse`; the connection stays).
pub(crate) fn user_error(err: &TenantError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(err)))
}

/// A protocol-level error of our own: `severity` `FATAL` ends the connection.
pub(crate) fn wire_error(severity: &str, code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.to_string(),
        code.to_string(),
        message.into(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_postgresql_classes() {
        let cases = [
            (TenantError::TableNotFound("t".into()), "42P01"),
            (TenantError::PermissionDenied("no".into()), "42501"),
            (TenantError::Syntax("x".into()), "42601"),
            (TenantError::NotSupported("x".into()), "0A000"),
            (TenantError::ResourcesExhausted("x".into()), "53200"),
            (TenantError::Cancelled("x".into()), "57014"),
            (TenantError::Internal("x".into()), "XX000"),
        ];
        for (err, state) in cases {
            let info = error_info(&err);
            assert_eq!(info.code, state, "{err}");
            assert!(info.message.starts_with(err.code()), "{}", info.message);
        }
    }
}
