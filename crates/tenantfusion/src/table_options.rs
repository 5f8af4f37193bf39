//! What a table's `WITH (...)` options say, read once for `CREATE TABLE`
//! and again when the catalog log is replayed, and the access a table's
//! options give it.

use std::sync::Arc;
use std::time::Duration;

use datafusion::catalog::TableProvider;
use tenantfusion_core::{AccessLevel, BaseTableProvider, Result, TableType, TenantError};
use tenantfusion_store::FlushPolicy;
use tenantfusion_tables::{
    Retention, SharedAccess, SharedTableProvider, StreamOrigin, StreamTableProvider,
};

use crate::config::EngineConfig;
use crate::external_table::ExternalTable;

/// The access level and grants of a table read like a shared table.
pub(crate) fn shared_access(provider: &Arc<dyn BaseTableProvider>) -> Option<&SharedAccess> {
    let any = provider.as_ref() as &dyn TableProvider;
    if let Some(shared) = any.downcast_ref::<SharedTableProvider>() {
        return shared.shared_access();
    }
    if let Some(external) = any.downcast_ref::<ExternalTable>() {
        return Some(external.shared_access());
    }
    any.downcast_ref::<StreamTableProvider>()?.shared_access()
}

/// What `WITH (...)` says about a new table.
pub(crate) enum TableOptions {
    User(FlushPolicy),
    Shared(AccessLevel, FlushPolicy),
    Stream(StreamOptions),
}

pub(crate) struct StreamOptions {
    pub(crate) origin: StreamOrigin,
    pub(crate) retention: Retention,
    /// Topics held upstream from the start (`TOPICS = 'A,B'`).
    pub(crate) topics: Vec<String>,
}

impl TableOptions {
    /// Reads the options of a `kind` table; rejects those that do not apply.
    pub(crate) fn parse(
        kind: TableType,
        options: &[(String, String)],
        config: &EngineConfig,
    ) -> Result<Self> {
        let applies_to = |key: &str| match key {
            "ACCESS_LEVEL" => Some("shared and source-bound stream tables"),
            "FLUSH_POLICY" => Some("user and shared tables"),
            "SOURCE" | "TOPIC_COLUMN" | "TOPICS" | "MAX_ROWS_PER_TOPIC" => {
                Some("stream tables with a SOURCE")
            }
            "TTL_SECONDS" => Some("stream tables"),
            "MAX_ROWS_PER_USER" => Some("stream tables without a SOURCE"),
            _ => None,
        };
        let get = |name: &str| options.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let source = get("SOURCE");
        for (key, _) in options {
            let fits = match key.as_str() {
                "ACCESS_LEVEL" => {
                    kind == TableType::Shared || (kind == TableType::Stream && source.is_some())
                }
                "FLUSH_POLICY" => kind != TableType::Stream,
                "SOURCE" | "TTL_SECONDS" => kind == TableType::Stream,
                "TOPIC_COLUMN" | "TOPICS" | "MAX_ROWS_PER_TOPIC" => source.is_some(),
                "MAX_ROWS_PER_USER" => kind == TableType::Stream && source.is_none(),
                other => {
                    return Err(TenantError::InvalidArgument(format!(
                        "unknown table option '{other}' (supported: ACCESS_LEVEL, FLUSH_POLICY; \
                         for stream tables SOURCE, TOPIC_COLUMN, TOPICS, TTL_SECONDS, MAX_ROWS_PER_TOPIC, \
                         MAX_ROWS_PER_USER)"
                    )));
                }
            };
            if !fits {
                return Err(TenantError::InvalidArgument(format!(
                    "table option {key} applies to {}, not to this {kind} table",
                    applies_to(key).unwrap_or("other tables")
                )));
            }
        }
        let level = get("ACCESS_LEVEL")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or_default();
        let flush = get("FLUSH_POLICY")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or_default();
        Ok(match kind {
            TableType::View => {
                return Err(TenantError::Internal(
                    "views have no WITH options; they are built from their definition".into(),
                ));
            }
            TableType::User => Self::User(flush),
            TableType::Shared => Self::Shared(level, flush),
            TableType::Stream => {
                let positive = |key: &str| -> Result<Option<u64>> {
                    get(key)
                        .map(|v| match v.parse::<u64>() {
                            Ok(n) if n > 0 => Ok(n),
                            _ => Err(TenantError::InvalidArgument(format!(
                                "{key} must be a positive whole number, not '{v}'"
                            ))),
                        })
                        .transpose()
                };
                let ttl = positive("TTL_SECONDS")?.map(Duration::from_secs);
                let max_rows = positive("MAX_ROWS_PER_TOPIC")?
                    .or(positive("MAX_ROWS_PER_USER")?)
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
                let retention = Retention {
                    ttl,
                    max_rows: max_rows
                        .or((ttl.is_none()).then_some(config.stream_default_max_rows)),
                };
                let origin = match source {
                    None => StreamOrigin::Users,
                    Some(source) => StreamOrigin::Source {
                        source: source.to_ascii_lowercase(),
                        topic_column: get("TOPIC_COLUMN")
                            .ok_or_else(|| {
                                TenantError::InvalidArgument(
                                    "a stream table with a SOURCE needs TOPIC_COLUMN = 'column'"
                                        .into(),
                                )
                            })?
                            .to_ascii_lowercase(),
                        access: level,
                    },
                };
                let topics = get("TOPICS")
                    .map(|t| {
                        t.split(',')
                            .map(|t| t.trim().to_string())
                            .filter(|t| !t.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                Self::Stream(StreamOptions {
                    origin,
                    retention,
                    topics,
                })
            }
        })
    }
}
