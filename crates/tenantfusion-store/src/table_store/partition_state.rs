//! One partition in memory: its manifest, its rows not flushed yet, and
//! what each logged write does to them. A write applies its record here
//! once it is durable, and replay applies the same record the same way:
//! there is one path from a record to the partition's rows.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DFResult;
use parking_lot::RwLock;
use tenantfusion_core::TenantError;
use tenantfusion_tables::{RowMatcher, append_coalesced, rows_at};

use super::records::Record;
use crate::codec::Decoder;
use crate::manifest::{Manifest, SegmentEntry};

/// What applying a log record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Applied {
    /// The manifest reflected it already.
    Flushed,
    Changed,
    /// It dropped the partition's rows.
    Dropped,
}

#[derive(Debug, Default)]
pub(super) struct Partition {
    /// Held from logging a write until it is applied, and over a flush: a
    /// partition's writes are applied in log order and none lands while
    /// its rows are being flushed.
    pub(super) writer: tokio::sync::Mutex<()>,
    pub(super) state: RwLock<PartitionState>,
    /// A write that filled the partition is flushing it.
    pub(super) flush_queued: AtomicBool,
    /// Why the partition cannot be used (its manifest is damaged).
    pub(super) damaged: Option<TenantError>,
}

#[derive(Debug, Default)]
pub(super) struct PartitionState {
    pub(super) manifest: Arc<Manifest>,
    /// Rows logged but not flushed, oldest first.
    pub(super) hot: Vec<RecordBatch>,
    pub(super) hot_rows: u64,
    /// Rows of the segments that UPDATE or DELETE took out since the last
    /// flush (by value, as [`RowMatcher`] finds them); scans leave them
    /// out, the next flush rewrites the segments without them.
    pub(super) pending: Vec<RecordBatch>,
    /// First and last LSN of the writes not in the manifest yet (rows in
    /// `hot`, rows in `pending`).
    pub(super) hot_lsns: Option<(u64, u64)>,
    /// When the oldest of those writes was applied (in this process).
    pub(super) hot_since: Option<Instant>,
    /// Segments no manifest lists any more, deleted once no scan reads them.
    pub(super) retired: Vec<Arc<SegmentEntry>>,
}

impl PartitionState {
    pub(super) fn with_manifest(manifest: Manifest) -> Self {
        Self {
            manifest: Arc::new(manifest),
            ..Self::default()
        }
    }

    pub(super) fn logged(&mut self, lsn: u64) {
        let first = self.hot_lsns.map_or(lsn, |(first, _)| first);
        self.hot_lsns = Some((first, lsn));
        self.hot_since.get_or_insert_with(Instant::now);
    }

    pub(super) fn append(&mut self, lsn: u64, batches: Vec<RecordBatch>) -> DFResult<u64> {
        let added = append_coalesced(&mut self.hot, batches)?;
        if added > 0 {
            self.hot_rows += added;
            self.logged(lsn);
        }
        Ok(added)
    }

    /// Takes `removed` out (from the rows in memory first, the rest from
    /// the segments) and adds `added`: the effect of a logged UPDATE or
    /// DELETE, the same when it is replayed.
    pub(super) fn replace(
        &mut self,
        lsn: u64,
        removed: &RecordBatch,
        added: Option<RecordBatch>,
    ) -> DFResult<()> {
        let mut matcher = RowMatcher::new(std::slice::from_ref(removed))?;
        (self.hot, _) = matcher.take_all(std::mem::take(&mut self.hot))?;
        self.hot_rows -= matcher.found().len() as u64;
        if !matcher.is_done() {
            self.pending.push(rows_at(removed, &matcher.missing())?);
        }
        if let Some(added) = added {
            self.hot_rows += append_coalesced(&mut self.hot, vec![added])?;
        }
        self.logged(lsn);
        Ok(())
    }

    /// Forgets what the manifest now holds.
    pub(super) fn flushed(&mut self, manifest: Manifest) {
        self.manifest = Arc::new(manifest);
        self.hot.clear();
        self.hot_rows = 0;
        self.pending.clear();
        self.hot_lsns = None;
        self.hot_since = None;
    }

    /// The rows a scan reads now: the segments', less those UPDATE/DELETE
    /// took out of them since, plus the rows not flushed.
    pub(super) fn rows(&self) -> u64 {
        let taken_out: u64 = self.pending.iter().map(|b| b.num_rows() as u64).sum();
        (self.hot_rows + self.manifest.rows()).saturating_sub(taken_out)
    }

    /// Empties the partition for a drop logged at `lsn`; returns the rows
    /// it held.
    pub(super) fn drop_rows(&mut self, lsn: u64) -> u64 {
        let rows = self.rows();
        let old = Arc::clone(&self.manifest);
        self.retired.extend(old.segments.iter().cloned());
        self.flushed(old.dropped(lsn));
        rows
    }

    /// Applies the log record `lsn` of `kind` (the rest of it in
    /// `record`), unless the manifest reflects it already (then the record
    /// is not even decoded).
    pub(super) fn apply_record(
        &mut self,
        lsn: u64,
        kind: u8,
        record: &mut Decoder<'_>,
    ) -> Result<Applied, String> {
        if lsn <= self.manifest.flushed_through {
            return Ok(Applied::Flushed);
        }
        let unfit =
            |e: datafusion::error::DataFusionError| format!("rows do not fit the table: {e}");
        match Record::decode(kind, record)? {
            Record::Append(rows) => {
                self.append(lsn, rows).map_err(unfit)?;
                Ok(Applied::Changed)
            }
            Record::DropPartition => {
                self.drop_rows(lsn);
                Ok(Applied::Dropped)
            }
            Record::Replace { removed, added } => {
                self.replace(lsn, &removed, added).map_err(unfit)?;
                Ok(Applied::Changed)
            }
        }
    }

    pub(super) fn has_rows(&self) -> bool {
        self.hot_rows > 0 || !self.manifest.segments.is_empty()
    }

    /// What a reader needs, without holding the lock: the manifest, the
    /// rows in memory and the segment rows taken out.
    pub(super) fn snapshot(&self) -> (Arc<Manifest>, Vec<RecordBatch>, Vec<RecordBatch>) {
        (
            Arc::clone(&self.manifest),
            self.hot.clone(),
            self.pending.clone(),
        )
    }

    /// Retired segments no scan holds any more, taken out of the list.
    pub(super) fn unreferenced(&mut self) -> Vec<Arc<SegmentEntry>> {
        let (free, busy) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|segment| Arc::strong_count(segment) == 1);
        self.retired = busy;
        free
    }
}

impl Partition {
    pub(super) fn with_manifest(manifest: Manifest) -> Self {
        Self {
            state: RwLock::new(PartitionState::with_manifest(manifest)),
            ..Self::default()
        }
    }
}

/// The segment rows UPDATE or DELETE took out since the last flush
/// ([`PartitionState::pending`]), found by value as a reader goes through
/// the segments: every read of segment rows goes through [`apply`](Self::apply),
/// so scans, UPDATE, DELETE, flushes and salvage agree on which rows are
/// still there.
#[derive(Debug)]
pub(super) struct TakenOut(Option<RowMatcher>);

impl TakenOut {
    /// The rows `pending` lists as taken out.
    pub(super) fn new(pending: &[RecordBatch]) -> DFResult<Self> {
        match pending.is_empty() {
            true => Ok(Self(None)),
            false => RowMatcher::new(pending).map(|taken| Self(Some(taken))),
        }
    }

    /// Whether some taken-out row has not been met yet: a segment read
    /// after the last one is met has all its rows.
    pub(super) fn remaining(&self) -> bool {
        self.0.as_ref().is_some_and(|taken| !taken.is_done())
    }

    /// `rows` (every column of a segment's rows) less those taken out, each
    /// taken-out row left out once; and whether any was.
    pub(super) fn apply(&mut self, rows: Vec<RecordBatch>) -> DFResult<(Vec<RecordBatch>, bool)> {
        match self.0.as_mut() {
            Some(taken) if !taken.is_done() => taken.take_all(rows),
            _ => Ok((rows, false)),
        }
    }
}
