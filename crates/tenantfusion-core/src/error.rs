//! The one error type of tenantfusion, with stable codes.
//!
//! Errors cross DataFusion as `DataFusionError::External`; [`TenantError::from_datafusion`]
//! finds them again however deeply DataFusion wrapped them, so a caller always sees
//! the code the engine raised, never a stringly wrapped copy.

use std::error::Error as StdError;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// Result with [`TenantError`].
pub type Result<T, E = TenantError> = std::result::Result<T, E>;

/// Everything that can go wrong in tenantfusion. Each variant has a stable
/// [`code`](TenantError::code) that clients may match on; messages may change.
///
/// ```
/// use tenantfusion_core::TenantError;
/// let err = TenantError::TableNotFound("app.orders".into());
/// assert_eq!(err.code(), "TABLE_NOT_FOUND");
/// assert_eq!(err.to_string(), "TABLE_NOT_FOUND: table 'app.orders' not found");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// The namespace does not exist.
    #[error("NAMESPACE_NOT_FOUND: namespace '{0}' does not exist")]
    NamespaceNotFound(String),
    /// A namespace of that name exists already.
    #[error("NAMESPACE_EXISTS: namespace '{0}' already exists")]
    NamespaceExists(String),
    /// The namespace still holds tables.
    #[error("NAMESPACE_NOT_EMPTY: namespace '{0}' still has tables; drop them first")]
    NamespaceNotEmpty(String),
    /// The table does not exist. Worded as DataFusion's planner words it
    /// (where a statement names the table, the name is given in full,
    /// `catalog.namespace.table`, as DataFusion does).
    #[error("TABLE_NOT_FOUND: table '{0}' not found")]
    TableNotFound(String),
    /// A table of that name exists already.
    #[error("TABLE_EXISTS: table '{0}' already exists")]
    TableExists(String),
    /// The table is registered but has no provider in the schema cache.
    #[error("PROVIDER_NOT_FOUND: no provider is registered for table '{0}'")]
    ProviderNotFound(String),
    /// No live source (upstream provider) of that name or type exists; the
    /// message says what was asked and what exists.
    #[error("PROVIDER_NOT_FOUND: {0}")]
    SourceNotFound(String),
    /// Live sources of the requested kind exist, but none is healthy (all
    /// circuit breakers open).
    #[error("NO_HEALTHY_PROVIDER: {0}")]
    NoHealthyProvider(String),
    /// No live source offers the capabilities a request needs.
    #[error("CAPABILITY_MISMATCH: {0}")]
    CapabilityMismatch(String),
    /// A configuration file or value is wrong; `key` names the setting
    /// (for example `sources.feed.url`).
    #[error("INVALID_CONFIG: {key}: {message}")]
    InvalidConfig {
        /// The setting, as a dotted path.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// An upstream connection could not be opened or was lost.
    #[error("UPSTREAM_UNAVAILABLE: {0}")]
    UpstreamUnavailable(String),
    /// A live subscriber read too slowly for its queue and its policy is to
    /// be disconnected rather than skip messages.
    #[error(
        "SLOW_CONSUMER: the subscription's queue of {capacity} deliveries was full; \
         it was disconnected ({missed} deliveries not taken)"
    )]
    SlowConsumer {
        /// Deliveries the queue holds.
        capacity: usize,
        /// Deliveries that did not fit.
        missed: u64,
    },
    /// The user does not exist.
    #[error("USER_NOT_FOUND: user '{0}' does not exist")]
    UserNotFound(String),
    /// A user of that name exists already.
    #[error("USER_EXISTS: user '{0}' already exists")]
    UserExists(String),
    /// The caller's role or grants do not allow the operation.
    #[error("PERMISSION_DENIED: {0}")]
    PermissionDenied(String),
    /// A table was reached without a user context attached to the session.
    #[error(
        "NO_USER_CONTEXT: no user context is attached to this session; use Engine::session or tenantfusion::attach_user"
    )]
    NoUserContext,
    /// An argument or option has a bad value.
    #[error("INVALID_ARGUMENT: {0}")]
    InvalidArgument(String),
    /// Data does not fit the table's schema (column count or types).
    #[error("SCHEMA_MISMATCH: {0}")]
    SchemaMismatch(String),
    /// NULL written into a column declared NOT NULL.
    #[error("NOT_NULL_VIOLATION: column '{column}' of table '{table}' is NOT NULL")]
    NotNullViolation {
        /// The table written to.
        table: String,
        /// The NOT NULL column.
        column: String,
    },
    /// NULL met a NOT NULL column before our checks saw it, in DataFusion's
    /// words (Arrow's check as a batch is made: the column it names is the
    /// batch's, e.g. `column1` of a `VALUES` list).
    #[error("NOT_NULL_VIOLATION: {0}")]
    NullInNotNullColumn(String),
    /// A write would leave two rows of a partition with the same PRIMARY
    /// KEY values; nothing of the statement was written.
    #[error("PRIMARY_KEY_VIOLATION: key {key} of table '{table}' {detail}")]
    PrimaryKeyViolation {
        /// The table written to.
        table: String,
        /// The key, as `(columns)=(values)`.
        key: String,
        /// Why it clashes: already present, or twice in the statement.
        detail: String,
    },
    /// Durable storage failed (a write, an fsync, a read): the statement
    /// that met it was not acknowledged.
    #[error("STORAGE_ERROR: {0}")]
    Storage(String),
    /// Stored data failed its checks; the message names the file.
    #[error("DATA_CORRUPTED: {file}: {detail}")]
    Corrupted {
        /// The file (or object) that failed.
        file: String,
        /// What was wrong, and where.
        detail: String,
    },
    /// The statement or option is not supported (yet).
    #[error("NOT_SUPPORTED: {0}")]
    NotSupported(String),
    /// The SQL text could not be parsed.
    #[error("SYNTAX_ERROR: {0}")]
    Syntax(String),
    /// The statement parsed but could not be planned.
    #[error("PLAN_ERROR: {0}")]
    Plan(String),
    /// The statement failed while it ran.
    #[error("EXECUTION_ERROR: {0}")]
    Execution(String),
    /// A memory or other resource limit was reached.
    #[error("RESOURCES_EXHAUSTED: {0}")]
    ResourcesExhausted(String),
    /// The statement was cancelled while it ran.
    #[error("CANCELLED: {0}")]
    Cancelled(String),
    /// The statement ran longer than its time limit.
    #[error("TIMEOUT: {0}")]
    Timeout(String),
    /// A bug: an invariant did not hold.
    #[error("INTERNAL: {0}")]
    Internal(String),
}

impl TenantError {
    /// The stable code of this error, e.g. `"TABLE_NOT_FOUND"`.
    pub fn code(&self) -> &'static str {
        match self {
            TenantError::NamespaceNotFound(_) => "NAMESPACE_NOT_FOUND",
            TenantError::NamespaceExists(_) => "NAMESPACE_EXISTS",
            TenantError::NamespaceNotEmpty(_) => "NAMESPACE_NOT_EMPTY",
            TenantError::TableNotFound(_) => "TABLE_NOT_FOUND",
            TenantError::TableExists(_) => "TABLE_EXISTS",
            TenantError::ProviderNotFound(_) | TenantError::SourceNotFound(_) => {
                "PROVIDER_NOT_FOUND"
            }
            TenantError::NoHealthyProvider(_) => "NO_HEALTHY_PROVIDER",
            TenantError::CapabilityMismatch(_) => "CAPABILITY_MISMATCH",
            TenantError::InvalidConfig { .. } => "INVALID_CONFIG",
            TenantError::UpstreamUnavailable(_) => "UPSTREAM_UNAVAILABLE",
            TenantError::SlowConsumer { .. } => "SLOW_CONSUMER",
            TenantError::UserNotFound(_) => "USER_NOT_FOUND",
            TenantError::UserExists(_) => "USER_EXISTS",
            TenantError::PermissionDenied(_) => "PERMISSION_DENIED",
            TenantError::NoUserContext => "NO_USER_CONTEXT",
            TenantError::InvalidArgument(_) => "INVALID_ARGUMENT",
            TenantError::SchemaMismatch(_) => "SCHEMA_MISMATCH",
            TenantError::NotNullViolation { .. } | TenantError::NullInNotNullColumn(_) => {
                "NOT_NULL_VIOLATION"
            }
            TenantError::Storage(_) => "STORAGE_ERROR",
            TenantError::Corrupted { .. } => "DATA_CORRUPTED",
            TenantError::PrimaryKeyViolation { .. } => "PRIMARY_KEY_VIOLATION",
            TenantError::NotSupported(_) => "NOT_SUPPORTED",
            TenantError::Syntax(_) => "SYNTAX_ERROR",
            TenantError::Plan(_) => "PLAN_ERROR",
            TenantError::Execution(_) => "EXECUTION_ERROR",
            TenantError::ResourcesExhausted(_) => "RESOURCES_EXHAUSTED",
            TenantError::Cancelled(_) => "CANCELLED",
            TenantError::Timeout(_) => "TIMEOUT",
            TenantError::Internal(_) => "INTERNAL",
        }
    }

    /// Recovers the error a DataFusion error carries.
    ///
    /// A [`TenantError`] raised inside DataFusion (by a provider, a sink or an
    /// execution plan) is returned as it was raised. Anything else is classified
    /// by DataFusion's own error kind.
    pub fn from_datafusion(err: DataFusionError) -> Self {
        if let Some(found) = find_in_chain(&err) {
            return found;
        }
        // DataFusion's own text, unchanged: its prefix ("Error during
        // planning: ...") and any context it wrapped around the cause
        // ("Optimizer rule '...' failed"), without a backtrace. What
        // expectations written against DataFusion match, and what a reader
        // can search DataFusion's issues for. The kind is the cause's.
        let message = err.strip_backtrace();
        let root = err.find_root();
        match root {
            DataFusionError::ArrowError(arrow, _) if is_null_in_not_null_column(arrow) => {
                TenantError::NullInNotNullColumn(message)
            }
            DataFusionError::SQL(..) => TenantError::Syntax(message),
            DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
                TenantError::Plan(message)
            }
            DataFusionError::NotImplemented(_) => TenantError::NotSupported(message),
            DataFusionError::Configuration(_) => TenantError::InvalidArgument(message),
            DataFusionError::ResourcesExhausted(_) => TenantError::ResourcesExhausted(message),
            DataFusionError::Internal(_) => TenantError::Internal(message),
            _ => TenantError::Execution(message),
        }
    }
}

impl TenantError {
    /// Classifies an error of an INSERT into `table`: a value that cannot be
    /// cast to its column's type (whether DataFusion folds the cast while
    /// planning or runs it while executing) is a `SCHEMA_MISMATCH`.
    pub fn from_insert(table: &str, err: DataFusionError) -> Self {
        match err.find_root() {
            DataFusionError::ArrowError(arrow, _)
                if matches!(**arrow, ArrowError::CastError(_)) =>
            {
                TenantError::SchemaMismatch(format!(
                    "a value does not fit its column in table '{table}': {arrow}"
                ))
            }
            _ => TenantError::from_datafusion(err),
        }
    }
}

/// Arrow's refusal to make a batch with a NULL in a non-nullable column
/// (`RecordBatch::try_new`); Arrow has no kind of its own for it.
fn is_null_in_not_null_column(err: &ArrowError) -> bool {
    matches!(err, ArrowError::InvalidArgumentError(text)
        if text.contains("is declared as non-nullable but contains null values"))
}

fn find_in_chain(err: &DataFusionError) -> Option<TenantError> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<TenantError>() {
            return Some(found.clone());
        }
        current = e.source();
    }
    None
}

impl From<TenantError> for DataFusionError {
    fn from(err: TenantError) -> Self {
        DataFusionError::External(Box::new(err))
    }
}

impl From<DataFusionError> for TenantError {
    fn from(err: DataFusionError) -> Self {
        TenantError::from_datafusion(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn arrows_null_check_is_a_not_null_violation_in_its_own_words() {
        let text = "Column 'column1' is declared as non-nullable but contains null values";
        let err = DataFusionError::ArrowError(
            Box::new(ArrowError::InvalidArgumentError(text.into())),
            None,
        );
        let ours = TenantError::from_datafusion(err);
        assert_eq!(ours.code(), "NOT_NULL_VIOLATION");
        assert!(ours.to_string().ends_with(text), "{ours}");
        let other = DataFusionError::ArrowError(
            Box::new(ArrowError::InvalidArgumentError(
                "must either specify".into(),
            )),
            None,
        );
        assert_eq!(
            TenantError::from_datafusion(other).code(),
            "EXECUTION_ERROR"
        );
    }

    #[test]
    fn survives_datafusion_wrapping() {
        let raised = TenantError::PermissionDenied("no".into());
        let wrapped = DataFusionError::Context(
            "while scanning".into(),
            Box::new(DataFusionError::Shared(Arc::new(
                DataFusionError::ArrowError(
                    Box::new(ArrowError::ExternalError(Box::new(DataFusionError::from(
                        raised.clone(),
                    )))),
                    None,
                ),
            ))),
        );
        assert_eq!(TenantError::from_datafusion(wrapped), raised);
    }

    #[test]
    fn classifies_plain_datafusion_errors() {
        let plan = DataFusionError::Plan("bad".into());
        assert_eq!(TenantError::from_datafusion(plan).code(), "PLAN_ERROR");
        let nyi = DataFusionError::NotImplemented("x".into());
        assert_eq!(TenantError::from_datafusion(nyi).code(), "NOT_SUPPORTED");
    }

    #[test]
    fn insert_cast_failures_are_schema_mismatches() {
        let cast = DataFusionError::ArrowError(Box::new(ArrowError::CastError("x".into())), None);
        assert_eq!(
            TenantError::from_insert("app.t", cast).code(),
            "SCHEMA_MISMATCH"
        );
        let other = DataFusionError::Execution("boom".into());
        assert_eq!(
            TenantError::from_insert("app.t", other).code(),
            "EXECUTION_ERROR"
        );
    }
}
