//! Errors of the live pool, with the same stable codes as the engine's.
//!
//! The pool is usable without SQL, so it does not share the engine's error
//! type (which carries DataFusion's); the engine converts a [`LiveError`]
//! into its own error variant by variant, keeping code and message.

/// Result with [`LiveError`].
pub type Result<T, E = LiveError> = std::result::Result<T, E>;

/// What can go wrong in the live pool. [`code`](LiveError::code) is stable;
/// messages may change.
///
/// ```
/// use tenantfusion_live::LiveError;
/// let err = LiveError::UpstreamUnavailable("feed: connection refused".into());
/// assert_eq!(err.code(), "UPSTREAM_UNAVAILABLE");
/// assert_eq!(err.to_string(), "UPSTREAM_UNAVAILABLE: feed: connection refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiveError {
    /// No source of that name or kind exists; the message says what was
    /// asked and what exists.
    #[error("PROVIDER_NOT_FOUND: {0}")]
    SourceNotFound(String),
    /// Sources of the requested kind exist, but none is healthy (all
    /// circuit breakers open).
    #[error("NO_HEALTHY_PROVIDER: {0}")]
    NoHealthyProvider(String),
    /// No source offers the capabilities a request needs.
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
    /// A subscriber read too slowly for its queue and its policy is to be
    /// disconnected rather than skip messages.
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
    /// An argument or option has a bad value.
    #[error("INVALID_ARGUMENT: {0}")]
    InvalidArgument(String),
    /// Upstream data does not fit the topic's schema.
    #[error("SCHEMA_MISMATCH: {0}")]
    SchemaMismatch(String),
    /// A bound (topics, connections, frame size) was reached.
    #[error("RESOURCES_EXHAUSTED: {0}")]
    ResourcesExhausted(String),
    /// A bug: an invariant did not hold.
    #[error("INTERNAL: {0}")]
    Internal(String),
}

impl LiveError {
    /// The stable code of this error, e.g. `"UPSTREAM_UNAVAILABLE"`.
    pub fn code(&self) -> &'static str {
        match self {
            LiveError::SourceNotFound(_) => "PROVIDER_NOT_FOUND",
            LiveError::NoHealthyProvider(_) => "NO_HEALTHY_PROVIDER",
            LiveError::CapabilityMismatch(_) => "CAPABILITY_MISMATCH",
            LiveError::InvalidConfig { .. } => "INVALID_CONFIG",
            LiveError::UpstreamUnavailable(_) => "UPSTREAM_UNAVAILABLE",
            LiveError::SlowConsumer { .. } => "SLOW_CONSUMER",
            LiveError::InvalidArgument(_) => "INVALID_ARGUMENT",
            LiveError::SchemaMismatch(_) => "SCHEMA_MISMATCH",
            LiveError::ResourcesExhausted(_) => "RESOURCES_EXHAUSTED",
            LiveError::Internal(_) => "INTERNAL",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_starts_with_its_code() {
        let errors = [
            LiveError::SourceNotFound("x".into()),
            LiveError::NoHealthyProvider("x".into()),
            LiveError::CapabilityMismatch("x".into()),
            LiveError::InvalidConfig {
                key: "k".into(),
                message: "m".into(),
            },
            LiveError::UpstreamUnavailable("x".into()),
            LiveError::SlowConsumer {
                capacity: 1,
                missed: 2,
            },
            LiveError::InvalidArgument("x".into()),
            LiveError::SchemaMismatch("x".into()),
            LiveError::ResourcesExhausted("x".into()),
            LiveError::Internal("x".into()),
        ];
        for err in errors {
            assert!(err.to_string().starts_with(err.code()), "{err}");
        }
    }
}
