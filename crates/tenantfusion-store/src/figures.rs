//! What the store reports through the `metrics` facade, as it happens.
//!
//! Counters and histograms summed over every table (a label per table
//! would be one series per table: thousands). Without a recorder
//! installed, each call is a no-op; a host that wants them installs one
//! (the server installs Prometheus's) before opening the engine, then
//! calls [`describe`] for the help texts.

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

const WAL_RECORDS: &str = "tenantfusion_wal_records_total";
const WAL_BYTES: &str = "tenantfusion_wal_bytes_total";
const WAL_COMMITS: &str = "tenantfusion_wal_commits_total";
const WAL_COMMIT_SECONDS: &str = "tenantfusion_wal_commit_seconds";
const WAL_FAILURES: &str = "tenantfusion_wal_failures_total";
const FLUSHES: &str = "tenantfusion_flushes_total";
const COMPACTIONS: &str = "tenantfusion_compactions_total";
const SEGMENTS_WRITTEN: &str = "tenantfusion_segments_written_total";
const SEGMENT_BYTES: &str = "tenantfusion_segment_bytes_written_total";
const FLUSH_FAILURES: &str = "tenantfusion_flush_failures_total";

/// Gives the installed recorder the help text and unit of each figure.
pub fn describe() {
    describe_counter!(WAL_RECORDS, "Write-ahead log records appended");
    describe_counter!(WAL_BYTES, Unit::Bytes, "Write-ahead log bytes written");
    describe_counter!(
        WAL_COMMITS,
        "Write-ahead log commit groups written (each one write and, when durable, one fsync)"
    );
    describe_histogram!(
        WAL_COMMIT_SECONDS,
        Unit::Seconds,
        "Time to write and fsync one commit group"
    );
    describe_counter!(
        WAL_FAILURES,
        "Write-ahead log writes or fsyncs that failed (the table stops taking writes)"
    );
    describe_counter!(
        FLUSHES,
        "Partitions flushed from memory to a Parquet segment"
    );
    describe_counter!(
        COMPACTIONS,
        "Partitions whose segments were merged into one"
    );
    describe_counter!(SEGMENTS_WRITTEN, "Parquet segments written");
    describe_counter!(
        SEGMENT_BYTES,
        Unit::Bytes,
        "Bytes of Parquet segments written"
    );
    describe_counter!(
        FLUSH_FAILURES,
        "Background flushes that failed (their rows stay in the log and in memory)"
    );
}

/// A commit group of `records` records, `bytes` long, written (and synced)
/// in `took`.
pub(crate) fn wal_committed(records: usize, bytes: usize, took: Duration) {
    counter!(WAL_RECORDS).increment(records as u64);
    counter!(WAL_BYTES).increment(bytes as u64);
    counter!(WAL_COMMITS).increment(1);
    histogram!(WAL_COMMIT_SECONDS).record(took.as_secs_f64());
}

/// A write or fsync of the log failed.
pub(crate) fn wal_failed() {
    counter!(WAL_FAILURES).increment(1);
}

/// A segment of `bytes` bytes was written.
pub(crate) fn segment_written(bytes: u64) {
    counter!(SEGMENTS_WRITTEN).increment(1);
    counter!(SEGMENT_BYTES).increment(bytes);
}

/// A partition was flushed (`merge`: compacted).
pub(crate) fn flushed(merge: bool) {
    counter!(if merge { COMPACTIONS } else { FLUSHES }).increment(1);
}

/// A background flush failed.
pub(crate) fn flush_failed() {
    counter!(FLUSH_FAILURES).increment(1);
}
