//! A registered source: the source itself, its breaker, its counters and
//! health, and where its rows carry their sequence number and event time.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;

use crate::breaker::CircuitBreaker;
use crate::error::{LiveError, Result};
use crate::metrics::{Counter, Latency};
use crate::source::{Source, SourceSpec};

#[derive(Debug)]
pub(super) struct SourceEntry {
    pub(super) source: Arc<dyn Source>,
    pub(super) breaker: Mutex<CircuitBreaker>,
    pub(super) connects: Counter,
    pub(super) connect_failures: Counter,
    pub(super) lost: Counter,
    pub(super) malformed: Counter,
    /// Rows its connections sent for topics they do not carry.
    pub(super) foreign_rows: Counter,
    /// Batches its connections read, and their rows.
    pub(super) messages: Counter,
    pub(super) rows: Counter,
    /// Sequence numbers its topics never saw.
    pub(super) gaps: Counter,
    /// Connections lost in a row before they were up for the pool's
    /// `min_stable`: they count as failed connects (backoff, failover).
    pub(super) unstable: AtomicU32,
    pub(super) last_error: Mutex<Option<String>>,
    pub(super) health: Mutex<Health>,
    pub(super) latency: Mutex<Latency>,
    pub(super) sequence_column: Option<usize>,
    pub(super) timestamp_column: Option<(usize, TimeUnit)>,
}

impl SourceEntry {
    pub(super) fn name(&self) -> &str {
        &self.source.spec().name
    }

    /// The event time of `batch`'s first row, in microseconds.
    pub(super) fn event_time_us(&self, batch: &RecordBatch) -> Option<i64> {
        let (column, unit) = self.timestamp_column?;
        let array = batch.column(column);
        if array.is_empty() || array.is_null(0) {
            return None;
        }
        Some(match unit {
            TimeUnit::Second => {
                array.as_primitive_opt::<TimestampSecondType>()?.value(0) * 1_000_000
            }
            TimeUnit::Millisecond => {
                array
                    .as_primitive_opt::<TimestampMillisecondType>()?
                    .value(0)
                    * 1_000
            }
            TimeUnit::Microsecond => array
                .as_primitive_opt::<TimestampMicrosecondType>()?
                .value(0),
            TimeUnit::Nanosecond => {
                array
                    .as_primitive_opt::<TimestampNanosecondType>()?
                    .value(0)
                    / 1_000
            }
        })
    }
}

/// Health checks of one source: the last results, for an error rate.
#[derive(Debug, Default)]
pub(super) struct Health {
    pub(super) checks: u64,
    /// Since when every health check passed and no connect failed (`None`
    /// after a failure, until the next passing check): when topics that
    /// failed over may come back.
    pub(super) healthy_since: Option<Instant>,
    pub(super) recent: VecDeque<bool>,
    pub(super) last_latency: Option<Duration>,
}

pub(super) const HEALTH_WINDOW: usize = 20;

/// `INVALID_ARGUMENT` when `sources` has one named `name` already.
pub(super) fn refuse_taken(name: &str, sources: &BTreeMap<String, Arc<SourceEntry>>) -> Result<()> {
    if sources.contains_key(name) {
        return Err(LiveError::InvalidArgument(format!(
            "a source named '{name}' is already registered"
        )));
    }
    Ok(())
}

/// Where a source's rows carry their sequence number and event time.
pub(super) type SourceColumns = (Option<usize>, Option<(usize, TimeUnit)>);

/// A source's sequence and timestamp columns, checked against its schema
/// (and its name checked present).
pub(super) fn source_columns(spec: &SourceSpec) -> Result<SourceColumns> {
    let schema = &spec.capabilities.schema;
    let name = spec.name.clone();
    if name.is_empty() {
        return Err(LiveError::InvalidArgument("a source needs a name".into()));
    }
    if schema.fields().first().map(|f| f.data_type()) != Some(&DataType::Utf8) {
        return Err(LiveError::SchemaMismatch(format!(
            "source '{name}': the first column must be the topic, as Utf8"
        )));
    }
    let column = |what: &str, wanted: &Option<String>| -> Result<Option<(usize, DataType)>> {
        let Some(column) = wanted else {
            return Ok(None);
        };
        let (index, field) = schema.column_with_name(column).ok_or_else(|| {
            LiveError::SchemaMismatch(format!(
                "source '{name}': {what} column '{column}' is not in its schema"
            ))
        })?;
        Ok(Some((index, field.data_type().clone())))
    };
    let sequence_column = match column("sequence", &spec.capabilities.sequence_column)? {
        Some((i, DataType::UInt64 | DataType::Int64)) => Some(i),
        Some((_, other)) => {
            return Err(LiveError::SchemaMismatch(format!(
                "source '{name}': the sequence column must be UInt64 or Int64, not {other}"
            )));
        }
        None => None,
    };
    let timestamp_column = match column("timestamp", &spec.capabilities.timestamp_column)? {
        Some((i, DataType::Timestamp(unit, _))) => Some((i, unit)),
        Some((_, other)) => {
            return Err(LiveError::SchemaMismatch(format!(
                "source '{name}': the timestamp column must be a Timestamp, not {other}"
            )));
        }
        None => None,
    };
    Ok((sequence_column, timestamp_column))
}
