//! Flushes: a partition's rows in memory become a Parquet segment (and the
//! segments UPDATE or DELETE took rows out of are rewritten), its new
//! manifest is swapped in, then the log is cut up to the oldest write some
//! partition still holds only in memory. A flush runs on `FLUSH TABLE`, on
//! the flush policy (a partition full, or its oldest row old) and, merging
//! every segment into one, on `COMPACT TABLE`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use tenantfusion_core::{Result, TenantError};
use tenantfusion_tables::PartitionKey;

use super::partition_state::{Partition, TakenOut};
use super::scan::Selection;
use super::{Inner, Loaded};
use crate::figures;
use crate::manifest::Manifest;
use crate::parquet_segment;
use crate::wal::Lsn;

/// A partition flushed on the policy's interval while it has this many
/// segments is compacted into one.
const COMPACT_AT_SEGMENTS: usize = 8;

/// What one [`DurablePartitionStore::flush`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Partitions that had rows to flush (one segment each).
    pub partitions: u64,
    /// Rows written to segments.
    pub rows: u64,
    /// Log segment files removed afterwards.
    pub log_segments_removed: u64,
}

impl Inner {
    pub(super) async fn flush_all(self: &Arc<Self>, merge: bool) -> Result<FlushStats> {
        let loaded = self.load().await?;
        let partitions: Vec<_> = loaded
            .partitions
            .iter()
            .filter(|p| p.damaged.is_none())
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        let mut stats = FlushStats::default();
        for (key, partition) in partitions {
            let rows = self.flush_partition(&key, &partition, merge).await?;
            if rows > 0 {
                stats.partitions += 1;
                stats.rows += rows;
            }
        }
        stats.log_segments_removed = self.cut_log(loaded).await? as u64;
        Ok(stats)
    }

    /// Writes the partition's rows in memory as a new segment, rewrites the
    /// segments UPDATE or DELETE took rows out of, and swaps in the new
    /// manifest. With `merge`, all of the partition's rows go to one new
    /// segment instead (compaction). Returns the rows written.
    pub(super) async fn flush_partition(
        &self,
        key: &PartitionKey,
        partition: &Partition,
        merge: bool,
    ) -> Result<u64> {
        let _writer = partition.writer.lock().await;
        let ((manifest, hot, pending), lsns) = {
            let state = partition.state.read();
            (state.snapshot(), state.hot_lsns)
        };
        let worth_merging = manifest.segments.len() + usize::from(!hot.is_empty()) > 1;
        if lsns.is_none() && !(merge && worth_merging) {
            return Ok(0);
        }
        let dir = self.partition_dir(key);
        let mut next_segment = manifest.next_segment;
        let mut write = |rows: Vec<RecordBatch>, seq: (u64, u64)| {
            let file = format!("seg-{next_segment}.parquet");
            next_segment += 1;
            let dir = &dir;
            async move {
                let segment = parquet_segment::write(&self.files, dir, file, &rows, seq).await?;
                self.segments_written.fetch_add(1, Ordering::Relaxed);
                figures::segment_written(segment.bytes);
                Ok::<_, TenantError>(Arc::new(segment))
            }
        };
        let mut taken = TakenOut::new(&pending)?;
        let mut segments = Vec::new();
        let mut retired = Vec::new();
        let mut merged = Vec::new();
        let mut written = 0;
        for segment in &manifest.segments {
            if !merge && !taken.touches(&segment.file) {
                segments.push(Arc::clone(segment));
                continue;
            }
            let (rows, changed) = self
                .live_rows(key, segment, &mut taken, None, &Selection::default())
                .await?;
            if merge {
                merged.extend(rows);
                retired.push(Arc::clone(segment));
            } else if changed {
                retired.push(Arc::clone(segment));
                if !rows.is_empty() {
                    written += row_count(&rows);
                    segments.push(write(rows, segment.seq).await?);
                }
            } else {
                segments.push(Arc::clone(segment));
            }
        }
        let seq = lsns.unwrap_or((manifest.flushed_through, manifest.flushed_through));
        let first_seq = manifest.segments.first().map_or(seq.0, |s| s.seq.0);
        let (rows, seq) = match merge {
            true => (
                merged.into_iter().chain(hot).collect::<Vec<_>>(),
                (first_seq, seq.1),
            ),
            false => (hot, seq),
        };
        if row_count(&rows) > 0 {
            written += row_count(&rows);
            segments.push(write(rows, seq).await?);
        }
        let next = Manifest {
            flushed_through: seq.1.max(manifest.flushed_through),
            next_segment,
            segments,
        };
        self.write_manifest(key, &next).await?;
        drop(manifest);
        let free = {
            let mut state = partition.state.write();
            state.flushed(next);
            state.retired.extend(retired);
            state.unreferenced()
        };
        self.delete_segments(key, &free).await?;
        figures::flushed(merge);
        tracing::debug!(partition = %dir, rows = written, merge, "partition flushed");
        Ok(written)
    }

    /// Removes the log segments holding only records every partition has
    /// flushed; returns how many.
    pub(super) async fn cut_log(&self, loaded: &Loaded) -> Result<usize> {
        if loaded.keep_log {
            return Ok(0);
        }
        let _no_writes_in_flight = loaded.applying.write().await;
        let oldest_needed = loaded
            .partitions
            .iter()
            .filter_map(|p| p.state.read().hot_lsns.map(|(first, _)| first))
            .min();
        let through = match oldest_needed {
            Some(first) => first - 1,
            None => loaded.last_lsn.load(Ordering::Relaxed),
        };
        loaded.wal.truncate_through(Lsn(through))
    }

    /// Flushes `key` once it holds the policy's rows. Run by the write that
    /// fills it, after that write is durable: a failure here is counted,
    /// not reported to the writer, whose rows are safe in the log.
    pub(super) async fn flush_if_full(
        &self,
        loaded: &Loaded,
        key: &PartitionKey,
        partition: &Partition,
    ) {
        let Some(limit) = self.policy.rows else {
            return;
        };
        if partition.state.read().hot_rows < limit
            || partition.flush_queued.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let flushed = self.flush_partition(key, partition, false).await;
        partition.flush_queued.store(false, Ordering::Release);
        let done = match flushed {
            Ok(_) => self.cut_log(loaded).await.map(|_| ()),
            Err(err) => Err(err),
        };
        if let Err(err) = done {
            tracing::warn!("background flush failed (the rows stay in the log): {err}");
            figures::flush_failed();
            self.background_flush_failures
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts the task flushing partitions whose oldest row in memory is
    /// older than the policy's interval. It ends when the store is dropped.
    pub(super) fn start_interval_flushes(self: &Arc<Self>) {
        let Some(interval) = self.policy.interval else {
            return;
        };
        let period = (interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                if let Err(err) = inner.flush_old(interval).await {
                    tracing::warn!("background flush failed (the rows stay in the log): {err}");
                    figures::flush_failed();
                    inner
                        .background_flush_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    pub(super) async fn flush_old(&self, interval: Duration) -> Result<()> {
        let Some(loaded) = self.loaded.get() else {
            return Ok(());
        };
        let due: Vec<_> = loaded
            .partitions
            .iter()
            .filter(|p| {
                p.state
                    .read()
                    .hot_since
                    .is_some_and(|since| since.elapsed() >= interval)
            })
            .map(|p| (p.key().clone(), Arc::clone(p.value())))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        for (key, partition) in due {
            // A partition flushed many times is compacted on the way.
            let merge = partition.state.read().manifest.segments.len() >= COMPACT_AT_SEGMENTS;
            self.flush_partition(&key, &partition, merge).await?;
        }
        self.cut_log(loaded).await.map(drop)
    }
}

fn row_count(rows: &[RecordBatch]) -> u64 {
    rows.iter().map(|b| b.num_rows() as u64).sum()
}
