//! A table's rows made durable: every write is logged, then held in memory
//! per partition (the hot set) until it is flushed to a Parquet segment of
//! that partition; the log is then cut.
//!
//! ```text
//! {table}/wal/*.wal                          the table's log
//! {table}/data/{partition}/manifest          the partition's segments
//! {table}/data/{partition}/seg-{n}.parquet   its flushed rows
//! ```
//!
//! Consistency rests on one number per partition, the manifest's
//! `flushed_through`: every logged write of the partition up to that LSN is
//! reflected in the manifest, so replay applies only later records, and the
//! log may drop a record once every partition's manifest reaches past it
//! (or the partition has nothing in memory from before it).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::error::Result as DFResult;
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use parking_lot::RwLock;
use tenantfusion_core::{Result, TenantError};
use tenantfusion_tables::{
    PartitionKey, PartitionStore, ReadRequest, RowMatcher, append_coalesced, rows_at,
};

use crate::codec::{Decoder, Encoder};
use crate::files::Files;
use crate::flush_policy::FlushPolicy;
use crate::ipc::{decode_batches, encode_batches};
use crate::manifest::{MANIFEST, Manifest, SegmentEntry};
use crate::parquet_segment;
use crate::partition::{decode_key, dir_name, encode_key};
use crate::segment;
use crate::wal::{Durability, Lsn, Wal, WalOptions, WalStats};

const APPEND: u8 = 1;
const DROP_PARTITION: u8 = 2;
const REPLACE: u8 = 3;

/// A partition flushed on the policy's interval while it has this many
/// segments is compacted into one.
const COMPACT_AT_SEGMENTS: usize = 8;

/// A [`PartitionStore`] whose writes survive a crash and whose rows move to
/// Parquet segments per partition.
///
/// A write is a record of the table's write-ahead log, acknowledged once
/// durable, then applied to the partition's rows in memory. A flush (on the
/// table's [`FlushPolicy`], or [`flush`](Self::flush)) writes a partition's
/// rows in memory as one Parquet segment, swaps in its new manifest, and
/// drops the log records every partition has flushed. A scan reads the
/// partition's segments (skipping row groups the filters rule out, reading
/// only the columns asked for) and then its rows in memory.
///
/// Nothing is read until the table is first used: a damaged table makes
/// only its own statements fail (`DATA_CORRUPTED`, naming the file).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use datafusion::arrow::array::Int64Array;
/// use datafusion::arrow::datatypes::{DataType, Field, Schema};
/// use datafusion::arrow::record_batch::RecordBatch;
/// use tenantfusion_core::UserId;
/// use tenantfusion_store::{DurablePartitionStore, FlushPolicy, WalOptions};
/// use tenantfusion_tables::{PartitionKey, PartitionStore};
///
/// let dir = tempfile::tempdir().unwrap();
/// let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
/// let rows = |v: i64| RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![v]))]).unwrap();
/// let alice = PartitionKey::User(UserId::new("alice"));
/// {
///     let store = DurablePartitionStore::open(dir.path(), WalOptions::default(), FlushPolicy::MANUAL).unwrap();
///     store.append(&alice, vec![rows(1)]).await.unwrap();
///     assert_eq!(store.flush().await.unwrap().rows, 1); // now in a Parquet segment
///     store.append(&alice, vec![rows(2)]).await.unwrap(); // in the log and in memory
/// }
/// let reopened = DurablePartitionStore::open(dir.path(), WalOptions::default(), FlushPolicy::MANUAL).unwrap();
/// assert_eq!(reopened.read(&alice).await.unwrap(), vec![rows(1), rows(2)]);
/// # });
/// ```
#[derive(Debug)]
pub struct DurablePartitionStore {
    inner: Arc<Inner>,
}

/// What applying a log record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// The manifest reflected it already.
    Flushed,
    Changed,
    /// It dropped the partition's rows.
    Dropped,
}

/// What [`DurablePartitionStore::salvage`] got out of a table.
#[derive(Debug, Default)]
pub struct Salvaged {
    /// Each partition's rows that could be read, as a scan would give them.
    pub partitions: Vec<(PartitionKey, Vec<RecordBatch>)>,
    /// What was passed over, each naming its file: damaged stretches of
    /// the log, manifests, segments, records that did not apply.
    pub skipped: Vec<String>,
}

/// What [`DurablePartitionStore::verify`] read, and the damage it found.
#[derive(Debug, Default)]
pub struct Verified {
    /// Segments of the table's log, and the records in them.
    pub log_segments: usize,
    /// Records read from the log.
    pub log_records: u64,
    /// Partitions with a manifest.
    pub partitions: usize,
    /// Parquet segments the manifests list.
    pub segments: usize,
    /// Of those, segments written before checksums (nothing to check).
    pub unchecked_segments: usize,
    /// What is damaged: `DATA_CORRUPTED`, each naming its file.
    pub damage: Vec<TenantError>,
}

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

/// Counters of a [`DurablePartitionStore`] since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// The table's log.
    pub wal: WalStats,
    /// Segments written by flushes.
    pub segments_written: u64,
    /// Row groups of segments read by scans.
    pub row_groups_read: u64,
    /// Row groups of segments skipped by scans, their statistics ruling
    /// out every row the filters allow.
    pub row_groups_skipped: u64,
    /// Flushes the flush policy started that failed (the rows stay in the
    /// log and in memory; the next flush tries again).
    pub background_flush_failures: u64,
}

#[derive(Debug)]
struct Inner {
    wal_dir: PathBuf,
    options: WalOptions,
    files: Arc<Files>,
    /// Object path of the directory holding one directory per partition.
    data: ObjectPath,
    policy: FlushPolicy,
    loaded: tokio::sync::OnceCell<Loaded>,
    segments_written: AtomicU64,
    row_groups_read: AtomicU64,
    row_groups_skipped: AtomicU64,
    background_flush_failures: AtomicU64,
}

impl Loaded {
    /// Appends `record` to the log; its LSN once durable. Call with
    /// `applying` held, and apply the record before releasing it.
    async fn log(&self, record: Vec<u8>) -> Result<u64> {
        let Lsn(lsn) = self.wal.append(record).await?;
        self.last_lsn.fetch_max(lsn, Ordering::Relaxed);
        Ok(lsn)
    }
}

/// The table once its log has been replayed.
#[derive(Debug)]
struct Loaded {
    wal: Wal,
    partitions: DashMap<PartitionKey, Arc<Partition>>,
    /// Held shared from logging a write until it is applied; cutting the
    /// log holds it exclusively, so no logged write is missed when working
    /// out which records are still needed.
    applying: tokio::sync::RwLock<()>,
    /// The newest LSN applied (or replayed).
    last_lsn: AtomicU64,
    /// A partition's manifest was damaged when the log was replayed: its
    /// records could not be placed, so the log is kept whole.
    keep_log: bool,
}

#[derive(Debug, Default)]
struct Partition {
    /// Held from logging a write until it is applied, and over a flush: a
    /// partition's writes are applied in log order and none lands while
    /// its rows are being flushed.
    writer: tokio::sync::Mutex<()>,
    state: RwLock<PartitionState>,
    /// A write that filled the partition is flushing it.
    flush_queued: AtomicBool,
    /// Why the partition cannot be used (its manifest is damaged).
    damaged: Option<TenantError>,
}

#[derive(Debug, Default)]
struct PartitionState {
    manifest: Arc<Manifest>,
    /// Rows logged but not flushed, oldest first.
    hot: Vec<RecordBatch>,
    hot_rows: u64,
    /// Rows of the segments that UPDATE or DELETE took out since the last
    /// flush (by value, as [`RowMatcher`] finds them); scans leave them
    /// out, the next flush rewrites the segments without them.
    pending: Vec<RecordBatch>,
    /// First and last LSN of the writes not in the manifest yet (rows in
    /// `hot`, rows in `pending`).
    hot_lsns: Option<(u64, u64)>,
    /// When the oldest of those writes was applied (in this process).
    hot_since: Option<Instant>,
    /// Segments no manifest lists any more, deleted once no scan reads them.
    retired: Vec<Arc<SegmentEntry>>,
}

impl PartitionState {
    fn with_manifest(manifest: Manifest) -> Self {
        Self {
            manifest: Arc::new(manifest),
            ..Self::default()
        }
    }

    fn logged(&mut self, lsn: u64) {
        let first = self.hot_lsns.map_or(lsn, |(first, _)| first);
        self.hot_lsns = Some((first, lsn));
        self.hot_since.get_or_insert_with(Instant::now);
    }

    fn append(&mut self, lsn: u64, batches: Vec<RecordBatch>) -> DFResult<u64> {
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
    fn replace(
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
    fn flushed(&mut self, manifest: Manifest) {
        self.manifest = Arc::new(manifest);
        self.hot.clear();
        self.hot_rows = 0;
        self.pending.clear();
        self.hot_lsns = None;
        self.hot_since = None;
    }

    /// Empties the partition for a drop logged at `lsn`; returns the rows
    /// it held.
    fn drop_rows(&mut self, lsn: u64) -> u64 {
        let pending: u64 = self.pending.iter().map(|b| b.num_rows() as u64).sum();
        let rows = self.hot_rows + self.manifest.rows() - pending;
        let old = Arc::clone(&self.manifest);
        self.retired.extend(old.segments.iter().cloned());
        self.flushed(old.dropped(lsn));
        rows
    }

    /// Applies the log record `lsn` of `kind` (the rest of it in
    /// `record`), unless the manifest reflects it already.
    fn apply_record(
        &mut self,
        lsn: u64,
        kind: u8,
        record: &mut Decoder<'_>,
    ) -> std::result::Result<Applied, String> {
        if lsn <= self.manifest.flushed_through {
            return Ok(Applied::Flushed);
        }
        let unfit =
            |e: datafusion::error::DataFusionError| format!("rows do not fit the table: {e}");
        match kind {
            APPEND => {
                let rows = record
                    .bytes("rows")
                    .and_then(|rows| decode_batches(rows).map_err(|e| e.to_string()))
                    .and_then(|rows| record.end().map(|()| rows))?;
                self.append(lsn, rows).map_err(unfit)?;
                Ok(Applied::Changed)
            }
            DROP_PARTITION => {
                record.end()?;
                self.drop_rows(lsn);
                Ok(Applied::Dropped)
            }
            REPLACE => {
                let (removed, added) = decode_replace(record)?;
                self.replace(lsn, &removed, added).map_err(unfit)?;
                Ok(Applied::Changed)
            }
            other => Err(format!("unknown record kind {other}")),
        }
    }

    fn has_rows(&self) -> bool {
        self.hot_rows > 0 || !self.manifest.segments.is_empty()
    }

    /// What a reader needs, without holding the lock: the manifest, the
    /// rows in memory and the segment rows taken out.
    fn snapshot(&self) -> (Arc<Manifest>, Vec<RecordBatch>, Vec<RecordBatch>) {
        (
            Arc::clone(&self.manifest),
            self.hot.clone(),
            self.pending.clone(),
        )
    }

    /// Retired segments no scan holds any more, taken out of the list.
    fn unreferenced(&mut self) -> Vec<Arc<SegmentEntry>> {
        let (free, busy) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|segment| Arc::strong_count(segment) == 1);
        self.retired = busy;
        free
    }
}

impl DurablePartitionStore {
    /// The store of the table kept in directory `dir` (its log in
    /// `dir/wal`, its segments in `dir/data`). Nothing is read until it is
    /// first used.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions, policy: FlushPolicy) -> Result<Self> {
        let dir = dir.as_ref();
        let files = Files::local(dir.to_path_buf(), options.durability == Durability::Fsync)?;
        Ok(Self::new(
            dir.join("wal"),
            Arc::new(files),
            ObjectPath::from("data"),
            options,
            policy,
        ))
    }

    /// The store with its log in `wal_dir` and its segments under `data`
    /// in `files`.
    pub(crate) fn new(
        wal_dir: PathBuf,
        files: Arc<Files>,
        data: ObjectPath,
        options: WalOptions,
        policy: FlushPolicy,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                wal_dir,
                options,
                files,
                data,
                policy,
                loaded: tokio::sync::OnceCell::new(),
                segments_written: AtomicU64::new(0),
                row_groups_read: AtomicU64::new(0),
                row_groups_skipped: AtomicU64::new(0),
                background_flush_failures: AtomicU64::new(0),
            }),
        }
    }

    /// Reads every record of the table's log, every manifest and every
    /// segment (whole, against its checksum), changing nothing: what
    /// `VERIFY TABLE` reports. Damage is listed, not returned as the error;
    /// the error is for storage that could not be read at all.
    pub async fn verify(&self) -> Result<Verified> {
        let inner = &self.inner;
        let files = &inner.files;
        let mut verified = Verified::default();
        match segment::check(&inner.wal_dir) {
            Ok((segments, records)) => {
                verified.log_segments = segments;
                verified.log_records = records;
            }
            Err(damage @ TenantError::Corrupted { .. }) => verified.damage.push(damage),
            Err(other) => return Err(other),
        }
        for (path, manifest) in inner.stored_manifests().await? {
            verified.partitions += 1;
            let (owner, manifest) = match manifest {
                Ok(found) => found,
                Err(detail) => {
                    verified.damage.push(TenantError::Corrupted {
                        file: files.name(&path),
                        detail,
                    });
                    continue;
                }
            };
            let partition = inner.partition_dir(&owner);
            for segment in &manifest.segments {
                verified.segments += 1;
                let Some(checksum) = segment.checksum else {
                    verified.unchecked_segments += 1;
                    continue;
                };
                let file = partition.clone().join(segment.file.as_str());
                match parquet_segment::verify(files, &file, segment.bytes, checksum).await {
                    Ok(()) => {}
                    Err(damage @ TenantError::Corrupted { .. }) => verified.damage.push(damage),
                    Err(other) => return Err(other),
                }
            }
        }
        Ok(verified)
    }

    /// Every row of the table that can still be read, partition by
    /// partition, past any damage: intact log records (damaged stretches
    /// skipped up to the next intact record), readable manifests and
    /// segments that match their checksums. Writes nothing, and needs no
    /// engine: what an administrator copies into a new table before
    /// deciding what to do with a damaged one. What could not be read is
    /// in [`Salvaged::skipped`].
    pub async fn salvage(&self) -> Result<Salvaged> {
        let inner = &self.inner;
        let mut salvaged = Salvaged::default();
        let mut records = Vec::new();
        let skipped = segment::salvage(&inner.wal_dir, |lsn, payload| {
            records.push((lsn, payload.to_vec()));
            Ok(())
        })?;
        salvaged.skipped.extend(skipped);
        // The partitions: those with a manifest, and those the log names.
        let mut partitions: Vec<(PartitionKey, PartitionState)> = Vec::new();
        for (path, manifest) in inner.stored_manifests().await? {
            match manifest {
                Ok((key, manifest)) => {
                    partitions.push((key, PartitionState::with_manifest(manifest)));
                }
                Err(detail) => salvaged.skipped.push(format!(
                    "{}: {detail}; its segments are not read",
                    inner.files.name(&path)
                )),
            }
        }
        for (lsn, payload) in records {
            let mut record = Decoder::new(&payload);
            let decoded = record
                .u8("kind")
                .and_then(|kind| Ok((kind, decode_key(&mut record)?)));
            let (kind, key) = match decoded {
                Ok(found) => found,
                Err(detail) => {
                    salvaged.skipped.push(format!(
                        "{}: record {lsn}: {detail}",
                        inner.wal_dir.display()
                    ));
                    continue;
                }
            };
            let at = match partitions.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => {
                    partitions.push((key, PartitionState::with_manifest(Manifest::default())));
                    partitions.len() - 1
                }
            };
            if let Err(detail) = partitions[at].1.apply_record(lsn, kind, &mut record) {
                salvaged.skipped.push(format!(
                    "{}: record {lsn}: {detail}",
                    inner.wal_dir.display()
                ));
            }
        }
        for (key, state) in partitions {
            let (manifest, hot, pending) = state.snapshot();
            let mut rows = Vec::new();
            // Rows UPDATE or DELETE took out of the segments (by value).
            let mut taken = match pending.is_empty() {
                true => None,
                false => Some(RowMatcher::new(&pending)?),
            };
            for segment in &manifest.segments {
                let dir = inner.partition_dir(&key);
                let groups = (0..segment.row_group_rows.len()).collect();
                match parquet_segment::read(&inner.files, &dir, segment, None, groups).await {
                    Ok(batches) => match taken.as_mut() {
                        Some(taken) => rows.extend(taken.take_all(batches)?.0),
                        None => rows.extend(batches),
                    },
                    Err(damage) => salvaged.skipped.push(damage.to_string()),
                }
            }
            rows.extend(hot);
            salvaged.partitions.push((key, rows));
        }
        Ok(salvaged)
    }

    /// The directory of the table's log.
    pub fn wal_dir(&self) -> &Path {
        &self.inner.wal_dir
    }

    /// When partitions flush on their own.
    pub fn flush_policy(&self) -> FlushPolicy {
        self.inner.policy
    }

    /// Counters since the store opened (all zero until it is first used).
    pub fn stats(&self) -> TableStats {
        let inner = &self.inner;
        TableStats {
            wal: inner
                .loaded
                .get()
                .map(|l| l.wal.stats())
                .unwrap_or_default(),
            segments_written: inner.segments_written.load(Ordering::Relaxed),
            row_groups_read: inner.row_groups_read.load(Ordering::Relaxed),
            row_groups_skipped: inner.row_groups_skipped.load(Ordering::Relaxed),
            background_flush_failures: inner.background_flush_failures.load(Ordering::Relaxed),
        }
    }

    /// Log segment files on disk now (after the store is first used).
    pub fn log_segment_count(&self) -> usize {
        self.inner
            .loaded
            .get()
            .map_or(0, |loaded| loaded.wal.segment_count())
    }

    /// Flushes every partition's rows in memory to a new segment of that
    /// partition (rewriting segments UPDATE or DELETE took rows out of),
    /// then drops the log records no longer needed (`FLUSH TABLE`). Writes
    /// wait only while their own partition flushes.
    pub async fn flush(&self) -> Result<FlushStats> {
        self.inner.flush_all(false).await
    }

    /// Rewrites each partition holding more than one segment (or rows in
    /// memory beside a segment) as one segment, leaving out the rows
    /// UPDATE and DELETE replaced (`COMPACT TABLE`).
    pub async fn compact(&self) -> Result<FlushStats> {
        self.inner.flush_all(true).await
    }
}

impl Inner {
    async fn load(self: &Arc<Self>) -> Result<&Loaded> {
        self.loaded.get_or_try_init(|| self.replay()).await
    }

    async fn flush_all(self: &Arc<Self>, merge: bool) -> Result<FlushStats> {
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

    /// Every manifest in the table's storage, read from there (not from
    /// memory), each with its partition, or what is wrong with it: damaged,
    /// or in the directory of another partition.
    async fn stored_manifests(
        &self,
    ) -> Result<
        Vec<(
            ObjectPath,
            std::result::Result<(PartitionKey, Manifest), String>,
        )>,
    > {
        let files = &self.files;
        let objects: Vec<_> = files
            .store()
            .list(Some(&self.data))
            .try_collect()
            .await
            .map_err(|e| files.failed("cannot list", &self.data, e))?;
        let mut manifests = Vec::new();
        for object in objects {
            let parts: Vec<_> = object.location.parts().collect();
            let [.., dir, name] = parts.as_slice() else {
                continue;
            };
            if name.as_ref() != MANIFEST {
                continue;
            }
            let Some(bytes) = files.get(&object.location).await? else {
                continue;
            };
            let manifest = Manifest::decode_any(&bytes).and_then(|(owner, manifest)| {
                if dir_name(&owner) == dir.as_ref() {
                    Ok((owner, manifest))
                } else {
                    Err(format!(
                        "the manifest of partition {owner:?} is in directory {}",
                        dir.as_ref()
                    ))
                }
            });
            manifests.push((object.location.clone(), manifest));
        }
        Ok(manifests)
    }

    /// `DATA_CORRUPTED` when `manifest` reflects records the log, which
    /// went on at `opened_at`, never reached: the log lost its end (cut,
    /// or a segment deleted) and with it what came after the flush.
    fn check_log_reaches(
        &self,
        key: &PartitionKey,
        manifest: &Manifest,
        opened_at: u64,
    ) -> Result<()> {
        if manifest.flushed_through >= opened_at {
            return Err(TenantError::Corrupted {
                file: self.wal_dir.display().to_string(),
                detail: format!(
                    "the log ends before record {opened_at}, but the manifest of partition \
                     {key:?} reflects records up to {}: the end of the log is missing",
                    manifest.flushed_through
                ),
            });
        }
        Ok(())
    }

    fn corrupted(&self, lsn: u64, detail: String) -> TenantError {
        TenantError::Corrupted {
            file: self.wal_dir.display().to_string(),
            detail: format!("record {lsn}: {detail}"),
        }
    }

    /// Reads the manifests of the partitions the log mentions, then applies
    /// the records they do not reflect.
    async fn replay(self: &Arc<Self>) -> Result<Loaded> {
        std::fs::create_dir_all(&self.wal_dir)
            .map_err(|e| crate::segment::io_error(&self.wal_dir, "cannot create", e))?;
        let mut keys = HashSet::new();
        crate::segment::scan(&self.wal_dir, |lsn, payload| {
            let mut record = Decoder::new(payload);
            let key = record
                .u8("kind")
                .and_then(|_| decode_key(&mut record))
                .map_err(|detail| self.corrupted(lsn, detail))?;
            keys.insert(key);
            Ok(())
        })?;
        let partitions = DashMap::new();
        let mut keep_log = false;
        for key in keys {
            let partition = match self.read_manifest(&key).await {
                Ok(manifest) => Partition::with_manifest(manifest),
                Err(damage @ TenantError::Corrupted { .. }) => {
                    keep_log = true;
                    Partition {
                        damaged: Some(damage),
                        ..Partition::default()
                    }
                }
                Err(other) => return Err(other),
            };
            partitions.insert(key, Arc::new(partition));
        }
        let mut last_lsn = 0;
        let mut dropped = Vec::new();
        let wal = Wal::open(&self.wal_dir, self.options, |Lsn(lsn), payload| {
            last_lsn = lsn;
            let mut record = Decoder::new(payload);
            let (kind, key) = record
                .u8("kind")
                .and_then(|kind| Ok((kind, decode_key(&mut record)?)))
                .map_err(|detail| self.corrupted(lsn, detail))?;
            let partition = partitions
                .get(&key)
                .ok_or_else(|| self.corrupted(lsn, "the log changed while it was read".into()))?;
            if partition.damaged.is_some() {
                return Ok(());
            }
            let mut state = partition.state.write();
            let had_segments = !state.manifest.segments.is_empty();
            let applied = state
                .apply_record(lsn, kind, &mut record)
                .map_err(|detail| self.corrupted(lsn, detail))?;
            if applied == Applied::Dropped && had_segments {
                dropped.push(key.clone());
            }
            Ok(())
        })?;
        for entry in partitions.iter() {
            let state = entry.value().state.read();
            self.check_log_reaches(entry.key(), &state.manifest, wal.opened_at().0)?;
        }
        // Drops logged before the process stopped but whose segments were
        // still listed: finish them now.
        for key in dropped {
            let Some(partition) = partitions.get(&key).map(|p| Arc::clone(&p)) else {
                continue;
            };
            let (now, free) = {
                let mut state = partition.state.write();
                (Arc::clone(&state.manifest), state.unreferenced())
            };
            self.write_manifest(&key, &now).await?;
            self.delete_segments(&key, &free).await?;
        }
        self.start_interval_flushes();
        Ok(Loaded {
            wal,
            partitions,
            applying: tokio::sync::RwLock::new(()),
            last_lsn: AtomicU64::new(last_lsn),
            keep_log,
        })
    }

    fn partition_dir(&self, key: &PartitionKey) -> ObjectPath {
        self.data.clone().join(dir_name(key).as_str())
    }

    async fn read_manifest(&self, key: &PartitionKey) -> Result<Manifest> {
        let path = self.partition_dir(key).join(MANIFEST);
        match self.files.get(&path).await? {
            None => Ok(Manifest::default()),
            Some(bytes) => Manifest::decode(&bytes, key).map_err(|detail| TenantError::Corrupted {
                file: self.files.name(&path),
                detail,
            }),
        }
    }

    async fn write_manifest(&self, key: &PartitionKey, manifest: &Manifest) -> Result<()> {
        let path = self.partition_dir(key).join(MANIFEST);
        self.files.put(&path, manifest.encode(key)?).await
    }

    async fn delete_segments(
        &self,
        key: &PartitionKey,
        segments: &[Arc<SegmentEntry>],
    ) -> Result<()> {
        let dir = self.partition_dir(key);
        for segment in segments {
            self.files
                .delete(&dir.clone().join(segment.file.as_str()))
                .await?;
        }
        Ok(())
    }

    /// The partition `key`, its manifest read on first use.
    async fn partition(&self, loaded: &Loaded, key: &PartitionKey) -> Result<Arc<Partition>> {
        if let Some(found) = loaded.partitions.get(key) {
            return match &found.damaged {
                Some(damage) => Err(damage.clone()),
                None => Ok(Arc::clone(&found)),
            };
        }
        let manifest = self.read_manifest(key).await?;
        self.check_log_reaches(key, &manifest, loaded.wal.opened_at().0)?;
        let entry = loaded
            .partitions
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Partition::with_manifest(manifest)));
        Ok(Arc::clone(&entry))
    }

    /// Writes the partition's rows in memory as a new segment, rewrites the
    /// segments UPDATE or DELETE took rows out of, and swaps in the new
    /// manifest. With `merge`, all of the partition's rows go to one new
    /// segment instead (compaction). Returns the rows written.
    async fn flush_partition(
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
                Ok::<_, TenantError>(Arc::new(segment))
            }
        };
        let mut taken = match pending.is_empty() {
            true => None,
            false => Some(RowMatcher::new(&pending)?),
        };
        let mut segments = Vec::new();
        let mut retired = Vec::new();
        let mut merged = Vec::new();
        let mut written = 0;
        for segment in &manifest.segments {
            let must_read = merge || taken.as_ref().is_some_and(|t| !t.is_done());
            if !must_read {
                segments.push(Arc::clone(segment));
                continue;
            }
            let rows = self.read_segment(key, segment, None, None).await?;
            let (rows, changed) = match taken.as_mut() {
                Some(taken) => taken.take_all(rows)?,
                None => (rows, false),
            };
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
        Ok(written)
    }

    /// Reads a segment's rows: `columns` of them (all when `None`), in
    /// the row groups `pruning` cannot rule out.
    async fn read_segment(
        &self,
        key: &PartitionKey,
        segment: &SegmentEntry,
        columns: Option<&[usize]>,
        pruning: Option<&PruningPredicate>,
    ) -> Result<Vec<RecordBatch>> {
        let groups = segment.row_group_rows.len();
        let keep = match pruning {
            Some(pruning) => pruning
                .prune(segment)
                .unwrap_or_else(|_| vec![true; groups]),
            None => vec![true; groups],
        };
        let kept: Vec<usize> = (0..groups).filter(|&g| keep[g]).collect();
        self.row_groups_skipped
            .fetch_add((groups - kept.len()) as u64, Ordering::Relaxed);
        if kept.is_empty() {
            return Ok(Vec::new());
        }
        self.row_groups_read
            .fetch_add(kept.len() as u64, Ordering::Relaxed);
        parquet_segment::read(
            &self.files,
            &self.partition_dir(key),
            segment,
            columns,
            kept,
        )
        .await
    }

    /// Removes the log segments holding only records every partition has
    /// flushed; returns how many.
    async fn cut_log(&self, loaded: &Loaded) -> Result<usize> {
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
    async fn flush_if_full(&self, loaded: &Loaded, key: &PartitionKey, partition: &Partition) {
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
        if flushed.is_err() || self.cut_log(loaded).await.is_err() {
            self.background_flush_failures
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts the task flushing partitions whose oldest row in memory is
    /// older than the policy's interval. It ends when the store is dropped.
    fn start_interval_flushes(self: &Arc<Self>) {
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
                if let Err(_e) = inner.flush_old(interval).await {
                    inner
                        .background_flush_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    async fn flush_old(&self, interval: Duration) -> Result<()> {
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

#[async_trait]
impl PartitionStore for DurablePartitionStore {
    async fn append(&self, key: &PartitionKey, batches: Vec<RecordBatch>) -> DFResult<u64> {
        let Some(first) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(0);
        };
        let rows = encode_batches(&first.schema(), &batches)?;
        let mut record = Encoder::default();
        record.u8(APPEND);
        encode_key(&mut record, key);
        let record = record.bytes(&rows).finish();
        let inner = &self.inner;
        let loaded = inner.load().await?;
        let partition = inner.partition(loaded, key).await?;
        let added = {
            let _writer = partition.writer.lock().await;
            let _applying = loaded.applying.read().await;
            let lsn = loaded.log(record).await?;
            partition.state.write().append(lsn, batches)?
        };
        inner.flush_if_full(loaded, key, &partition).await;
        Ok(added)
    }

    async fn read(&self, key: &PartitionKey) -> DFResult<Vec<RecordBatch>> {
        let schema = {
            let inner = &self.inner;
            let loaded = inner.load().await?;
            let partition = inner.partition(loaded, key).await?;
            let state = partition.state.read();
            state
                .hot
                .first()
                .map(RecordBatch::schema)
                .or_else(|| state.manifest.segments.first().map(|s| s.stats_schema()))
        };
        let Some(schema) = schema else {
            return Ok(Vec::new());
        };
        let request = ReadRequest {
            columns: None,
            schema,
            predicate: None,
        };
        self.scan(key, &request).await
    }

    async fn scan(&self, key: &PartitionKey, request: &ReadRequest) -> DFResult<Vec<RecordBatch>> {
        let inner = &self.inner;
        let loaded = inner.load().await?;
        let partition = inner.partition(loaded, key).await?;
        let (manifest, hot, pending) = partition.state.read().snapshot();
        let project = |batch: RecordBatch| match &request.columns {
            Some(columns) => batch.project(columns),
            None => Ok(batch),
        };
        let mut out = Vec::new();
        if !manifest.segments.is_empty() {
            // Statistics that cannot serve this predicate prune nothing.
            let pruning = request.predicate.as_ref().and_then(|predicate| {
                PruningPredicateBuilder::new()
                    .with_file_schema(Arc::clone(&request.schema))
                    .try_build(Arc::clone(predicate))
                    .ok()
            });
            if pending.is_empty() {
                for segment in &manifest.segments {
                    let rows = inner
                        .read_segment(key, segment, request.columns.as_deref(), pruning.as_ref())
                        .await?;
                    for batch in rows {
                        out.push(conform(batch, &request.schema)?);
                    }
                }
            } else {
                // Rows taken out are matched on every column. Pruning still
                // holds: a taken-out row in a skipped row group fails the
                // predicate, so if it matches an equal row elsewhere
                // instead, that row fails it too and the scan's own filter
                // drops it either way.
                let mut taken = RowMatcher::new(&pending)?;
                for segment in &manifest.segments {
                    let rows = inner
                        .read_segment(key, segment, None, pruning.as_ref())
                        .await?;
                    let (rows, _) = taken.take_all(rows)?;
                    for batch in rows {
                        out.push(conform(project(batch)?, &request.schema)?);
                    }
                }
            }
        }
        for batch in hot {
            out.push(project(batch)?);
        }
        Ok(out)
    }

    fn supports_replace(&self) -> bool {
        true
    }

    async fn replace(
        &self,
        key: &PartitionKey,
        old: RecordBatch,
        new: Option<RecordBatch>,
    ) -> DFResult<Vec<u32>> {
        let inner = &self.inner;
        let loaded = inner.load().await?;
        let partition = inner.partition(loaded, key).await?;
        let _writer = partition.writer.lock().await;
        // Which rows of `old` are still here, looked for as the logged
        // change will take them: in memory first, then in the segments.
        let (manifest, hot, pending) = partition.state.read().snapshot();
        let mut wanted = RowMatcher::new(std::slice::from_ref(&old))?;
        for batch in &hot {
            wanted.take_from(batch)?;
        }
        if !wanted.is_done() && !manifest.segments.is_empty() {
            let mut taken = (!pending.is_empty())
                .then(|| RowMatcher::new(&pending))
                .transpose()?;
            for segment in &manifest.segments {
                let rows = inner.read_segment(key, segment, None, None).await?;
                let rows = match taken.as_mut() {
                    Some(taken) => taken.take_all(rows)?.0,
                    None => rows,
                };
                for batch in &rows {
                    wanted.take_from(batch)?;
                }
                if wanted.is_done() {
                    break;
                }
            }
        }
        let found = wanted.found();
        if found.is_empty() {
            return Ok(found);
        }
        let removed = rows_at(&old, &found)?;
        let added = new.map(|new| rows_at(&new, &found)).transpose()?;
        let mut record = Encoder::default();
        record.u8(REPLACE);
        encode_key(&mut record, key);
        record.bytes(&encode_batches(
            &removed.schema(),
            std::slice::from_ref(&removed),
        )?);
        match &added {
            Some(added) => record.u8(1).bytes(&encode_batches(
                &added.schema(),
                std::slice::from_ref(added),
            )?),
            None => record.u8(0),
        };
        let record = record.finish();
        {
            let _applying = loaded.applying.read().await;
            let lsn = loaded.log(record).await?;
            partition.state.write().replace(lsn, &removed, added)?;
        }
        Ok(found)
    }

    async fn drop_partition(&self, key: &PartitionKey) -> DFResult<u64> {
        let inner = &self.inner;
        let loaded = inner.load().await?;
        let partition = inner.partition(loaded, key).await?;
        let _writer = partition.writer.lock().await;
        // Nothing to log for a user who never wrote here (DROP USER asks
        // every table).
        if !partition.state.read().has_rows() {
            return Ok(0);
        }
        let mut record = Encoder::default();
        record.u8(DROP_PARTITION);
        encode_key(&mut record, key);
        let record = record.finish();
        let old = Arc::clone(&partition.state.read().manifest);
        let (rows, free) = {
            // The emptied manifest is written before the log may be cut
            // past the drop.
            let _applying = loaded.applying.read().await;
            let lsn = loaded.log(record).await?;
            if !old.segments.is_empty() {
                inner.write_manifest(key, &old.dropped(lsn)).await?;
            }
            drop(old);
            let mut state = partition.state.write();
            (state.drop_rows(lsn), state.unreferenced())
        };
        // The manifest no longer lists them; one a scan still reads goes
        // at the partition's next flush.
        inner.delete_segments(key, &free).await?;
        Ok(rows)
    }

    fn partition_count(&self) -> usize {
        self.keys().len()
    }

    fn keys(&self) -> Vec<PartitionKey> {
        self.inner.loaded.get().map_or_else(Vec::new, |loaded| {
            loaded
                .partitions
                .iter()
                .filter(|p| p.state.read().has_rows())
                .map(|p| p.key().clone())
                .collect()
        })
    }
}

fn row_count(rows: &[RecordBatch]) -> u64 {
    rows.iter().map(|b| b.num_rows() as u64).sum()
}

/// The rows an UPDATE or DELETE record took out, and those it put in.
fn decode_replace(record: &mut Decoder<'_>) -> Result<(RecordBatch, Option<RecordBatch>), String> {
    let one = |bytes: &[u8]| -> Result<RecordBatch, String> {
        let batches = decode_batches(bytes).map_err(|e| e.to_string())?;
        match <[RecordBatch; 1]>::try_from(batches) {
            Ok([batch]) => Ok(batch),
            Err(batches) => Err(format!("{} batches where one was written", batches.len())),
        }
    };
    let removed = one(record.bytes("removed")?)?;
    let added = match record.u8("added")? {
        0 => None,
        _ => Some(one(record.bytes("added")?)?),
    };
    record.end()?;
    Ok((removed, added))
}

/// `batch` under `schema` (a segment's columns come back as Parquet stored
/// them: same types, possibly other field metadata).
fn conform(
    batch: RecordBatch,
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> DFResult<RecordBatch> {
    if batch.schema() == *schema {
        return Ok(batch);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        batch.columns().to_vec(),
        &options,
    )?)
}

impl Partition {
    fn with_manifest(manifest: Manifest) -> Self {
        Self {
            state: RwLock::new(PartitionState::with_manifest(manifest)),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, col, lit};
    use tenantfusion_core::UserId;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("body", DataType::Utf8, true),
        ]))
    }

    fn rows(ids: &[i64]) -> RecordBatch {
        let bodies: Vec<String> = ids.iter().map(|i| format!("row {i}")).collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(bodies)),
            ],
        )
        .unwrap()
    }

    fn ids(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column_by_name("id")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn options() -> WalOptions {
        WalOptions {
            durability: Durability::Buffered,
            ..WalOptions::default()
        }
    }

    fn open(dir: &Path, policy: FlushPolicy) -> DurablePartitionStore {
        DurablePartitionStore::open(dir, options(), policy).unwrap()
    }

    fn user(name: &str) -> PartitionKey {
        PartitionKey::User(UserId::new(name))
    }

    fn segment_files(dir: &Path, partition: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("data").join(partition))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .filter(|n| n.ends_with(".parquet"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn flushed_and_logged_rows_come_back_once_after_reopen_and_drops_remove_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob) = (user("alice"), user("bob"));
        {
            let store = open(dir.path(), FlushPolicy::MANUAL);
            store.append(&alice, vec![rows(&[1, 2])]).await.unwrap();
            store.append(&bob, vec![rows(&[10])]).await.unwrap();
            store
                .append(&PartitionKey::Shared, vec![rows(&[100])])
                .await
                .unwrap();
            let flushed = store.flush().await.unwrap();
            assert_eq!((flushed.partitions, flushed.rows), (3, 4));
            assert_eq!(store.flush().await.unwrap().rows, 0, "nothing new to flush");
            store.append(&alice, vec![rows(&[3])]).await.unwrap();
            store.append(&bob, vec![rows(&[11])]).await.unwrap();
            assert_eq!(ids(&store.read(&alice).await.unwrap()), [1, 2, 3]);
            assert_eq!(segment_files(dir.path(), "u-bob"), ["seg-0.parquet"]);
            // Bob's rows are in a segment and in memory: both go.
            assert_eq!(store.drop_partition(&bob).await.unwrap(), 2);
            assert_eq!(store.drop_partition(&bob).await.unwrap(), 0);
            assert!(segment_files(dir.path(), "u-bob").is_empty());
            store.append(&bob, vec![rows(&[12])]).await.unwrap();
            assert_eq!(store.stats().segments_written, 3);
        }
        // The log still holds the flushed records (its only segment is
        // the one being written); replay must skip them, not add them twice.
        let store = open(dir.path(), FlushPolicy::MANUAL);
        assert_eq!(ids(&store.read(&alice).await.unwrap()), [1, 2, 3]);
        assert_eq!(ids(&store.read(&bob).await.unwrap()), [12]);
        assert_eq!(
            ids(&store.read(&PartitionKey::Shared).await.unwrap()),
            [100]
        );
        assert_eq!(store.partition_count(), 3);
        // A segment number is never reused after a drop.
        store.flush().await.unwrap();
        assert_eq!(segment_files(dir.path(), "u-bob"), ["seg-1.parquet"]);
        assert_eq!(
            segment_files(dir.path(), "u-alice"),
            ["seg-0.parquet", "seg-1.parquet"]
        );
    }

    #[tokio::test]
    async fn changes_to_flushed_rows_survive_reopen_flush_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob) = (user("alice"), user("bob"));
        let sorted = |batches: Vec<RecordBatch>| {
            let mut ids = ids(&batches);
            ids.sort_unstable();
            ids
        };
        {
            let store = open(dir.path(), FlushPolicy::MANUAL);
            store.append(&alice, vec![rows(&[1, 2, 3])]).await.unwrap();
            store.append(&bob, vec![rows(&[2])]).await.unwrap();
            store.flush().await.unwrap();
            store.append(&alice, vec![rows(&[4])]).await.unwrap();
            // A flushed row updated, a row in memory deleted, a row that is
            // not there left alone.
            assert_eq!(
                store
                    .replace(&alice, rows(&[2]), Some(rows(&[20])))
                    .await
                    .unwrap(),
                [0]
            );
            assert_eq!(store.replace(&alice, rows(&[4]), None).await.unwrap(), [0]);
            assert!(
                store
                    .replace(&alice, rows(&[99]), None)
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert!(
                store
                    .replace(&alice, rows(&[2]), None)
                    .await
                    .unwrap()
                    .is_empty(),
                "gone"
            );
            assert_eq!(sorted(store.read(&alice).await.unwrap()), [1, 3, 20]);
            assert_eq!(sorted(store.read(&bob).await.unwrap()), [2]);
        }
        let store = open(dir.path(), FlushPolicy::MANUAL);
        assert_eq!(sorted(store.read(&alice).await.unwrap()), [1, 3, 20]);
        assert_eq!(sorted(store.read(&bob).await.unwrap()), [2]);
        // The flush rewrites the segment the update took a row out of.
        store.flush().await.unwrap();
        assert_eq!(
            segment_files(dir.path(), "u-alice"),
            ["seg-1.parquet", "seg-2.parquet"]
        );
        assert_eq!(sorted(store.read(&alice).await.unwrap()), [1, 3, 20]);
        let compacted = store.compact().await.unwrap();
        assert_eq!((compacted.partitions, compacted.rows), (1, 3));
        assert_eq!(segment_files(dir.path(), "u-alice"), ["seg-3.parquet"]);
        assert_eq!(segment_files(dir.path(), "u-bob"), ["seg-0.parquet"]);
        drop(store);
        let store = open(dir.path(), FlushPolicy::MANUAL);
        assert_eq!(sorted(store.read(&alice).await.unwrap()), [1, 3, 20]);
        assert_eq!(sorted(store.read(&bob).await.unwrap()), [2]);
    }

    #[tokio::test]
    async fn a_flush_cuts_the_log_up_to_the_oldest_unflushed_write() {
        let dir = tempfile::tempdir().unwrap();
        let small = WalOptions {
            segment_bytes: 256,
            ..options()
        };
        let (alice, bob) = (user("alice"), user("bob"));
        {
            let store =
                DurablePartitionStore::open(dir.path(), small, FlushPolicy::MANUAL).unwrap();
            for i in 0..20 {
                store.append(&alice, vec![rows(&[i])]).await.unwrap();
            }
            let before = store.log_segment_count();
            assert!(before > 5, "{before} log segments");
            let flushed = store.flush().await.unwrap();
            assert_eq!(flushed.rows, 20);
            assert_eq!(flushed.log_segments_removed as usize, before - 1);
            assert_eq!(store.log_segment_count(), 1);
            // Bob's unflushed write holds back every segment from his on.
            store.append(&bob, vec![rows(&[50])]).await.unwrap();
            for i in 20..30 {
                store.append(&alice, vec![rows(&[i])]).await.unwrap();
            }
            let segments = store.log_segment_count();
            let loaded = store.inner.load().await.unwrap();
            let partition = store.inner.partition(loaded, &alice).await.unwrap();
            store
                .inner
                .flush_partition(&alice, &partition, false)
                .await
                .unwrap();
            assert_eq!(store.inner.cut_log(loaded).await.unwrap(), 0);
            assert_eq!(store.log_segment_count(), segments);
        }
        let store = DurablePartitionStore::open(dir.path(), small, FlushPolicy::MANUAL).unwrap();
        assert_eq!(
            ids(&store.read(&alice).await.unwrap()),
            (0..30).collect::<Vec<_>>()
        );
        assert_eq!(ids(&store.read(&bob).await.unwrap()), [50]);
    }

    #[tokio::test]
    async fn scans_skip_row_groups_the_filter_rules_out_and_read_only_asked_columns() {
        let dir = tempfile::tempdir().unwrap();
        let alice = user("alice");
        let store = open(dir.path(), FlushPolicy::MANUAL);
        for start in [0, 100, 200] {
            let ids: Vec<i64> = (start..start + 10).collect();
            store.append(&alice, vec![rows(&ids)]).await.unwrap();
            store.flush().await.unwrap();
        }
        store.append(&alice, vec![rows(&[300])]).await.unwrap();
        let request = |columns: Option<Vec<usize>>, schema: SchemaRef| {
            let predicate =
                BinaryExpr::new(col("id", &schema).unwrap(), Operator::GtEq, lit(205i64));
            ReadRequest {
                columns,
                schema,
                predicate: Some(Arc::new(predicate)),
            }
        };
        let got = store.scan(&alice, &request(None, schema())).await.unwrap();
        // The last segment (200..210) and the row in memory; the filter
        // itself is the scan's job.
        assert_eq!(
            ids(&got),
            [200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 300]
        );
        assert_eq!(store.stats().row_groups_skipped, 2);
        assert_eq!(store.stats().row_groups_read, 1);

        let only_id = Arc::new(schema().project(&[0]).unwrap());
        let got = store
            .scan(&alice, &request(Some(vec![0]), Arc::clone(&only_id)))
            .await
            .unwrap();
        assert!(
            got.iter().all(|b| b.schema() == only_id),
            "{:?}",
            got[0].schema()
        );
        assert_eq!(ids(&got).len(), 11);
        // Without a predicate every segment is read, oldest first.
        let all = store.read(&alice).await.unwrap();
        assert_eq!(ids(&all).len(), 31);
        assert_eq!(ids(&all)[..3], [0, 1, 2]);
        // Rows taken out of segments (not yet rewritten) still leave the
        // other segments' row groups to pruning, and stay hidden.
        assert_eq!(
            store.replace(&alice, rows(&[206]), None).await.unwrap(),
            [0]
        );
        assert_eq!(store.replace(&alice, rows(&[3]), None).await.unwrap(), [0]);
        let skipped = store.stats().row_groups_skipped;
        let got = store.scan(&alice, &request(None, schema())).await.unwrap();
        assert_eq!(
            ids(&got),
            [200, 201, 202, 203, 204, 205, 207, 208, 209, 300]
        );
        assert_eq!(store.stats().row_groups_skipped, skipped + 2);
    }

    #[tokio::test]
    async fn a_failed_log_write_stores_nothing_and_reports_storage_error() {
        let dir = tempfile::tempdir().unwrap();
        let alice = user("alice");
        let store = open(dir.path(), FlushPolicy::MANUAL);
        store.append(&alice, vec![rows(&[1])]).await.unwrap();
        store.inner.load().await.unwrap().wal.fail_next_write();
        let err = store.append(&alice, vec![rows(&[2])]).await.unwrap_err();
        assert!(err.to_string().contains("STORAGE_ERROR"), "{err}");
        assert_eq!(ids(&store.read(&alice).await.unwrap()), [1]);
        drop(store);
        let store = open(dir.path(), FlushPolicy::MANUAL);
        assert_eq!(ids(&store.read(&alice).await.unwrap()), [1]);
    }

    #[tokio::test]
    async fn a_record_that_does_not_decode_names_the_log_and_record_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        {
            let wal = Wal::open(dir.path().join("wal"), options(), |_, _| Ok(())).unwrap();
            wal.append(vec![APPEND, 9]).await.unwrap();
        }
        let store = open(dir.path(), FlushPolicy::MANUAL);
        for _ in 0..2 {
            let err = TenantError::from(store.read(&user("alice")).await.unwrap_err());
            assert_eq!(err.code(), "DATA_CORRUPTED");
            let message = err.to_string();
            assert!(
                message.contains(&dir.path().join("wal").display().to_string()),
                "{message}"
            );
            assert!(message.contains("record 1"), "{message}");
        }
    }

    #[tokio::test]
    async fn a_damaged_manifest_or_segment_fails_only_its_partition_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        {
            let store = open(dir.path(), FlushPolicy::MANUAL);
            for key in [&alice, &bob, &carol] {
                store.append(key, vec![rows(&[1, 2, 3])]).await.unwrap();
            }
            store.flush().await.unwrap();
        }
        let manifest = dir.path().join("data/u-alice/manifest");
        let mut bytes = std::fs::read(&manifest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&manifest, bytes).unwrap();
        let segment = dir.path().join("data/u-bob/seg-0.parquet");
        let bytes = std::fs::read(&segment).unwrap();
        std::fs::write(&segment, &bytes[..bytes.len() / 2]).unwrap();
        std::fs::remove_file(dir.path().join("data/u-carol/seg-0.parquet")).unwrap();

        let store = open(dir.path(), FlushPolicy::MANUAL);
        let failure = |key: PartitionKey| {
            let store = &store;
            async move { TenantError::from(store.read(&key).await.unwrap_err()) }
        };
        let err = failure(alice.clone()).await;
        assert_eq!(err.code(), "DATA_CORRUPTED");
        assert!(
            err.to_string().contains(&manifest.display().to_string()),
            "{err}"
        );
        let err = failure(bob.clone()).await;
        assert_eq!(err.code(), "DATA_CORRUPTED");
        assert!(
            err.to_string().contains(&segment.display().to_string()),
            "{err}"
        );
        let err = failure(carol.clone()).await;
        assert_eq!(err.code(), "DATA_CORRUPTED");
        assert!(err.to_string().contains("missing"), "{err}");
        // Other partitions are untouched.
        store.append(&user("dave"), vec![rows(&[4])]).await.unwrap();
        assert_eq!(ids(&store.read(&user("dave")).await.unwrap()), [4]);
    }

    #[tokio::test]
    async fn the_policy_flushes_full_and_old_partitions_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob) = (user("alice"), user("bob"));
        let policy: FlushPolicy = "rows:5,interval:1".parse().unwrap();
        let store = open(dir.path(), policy);
        store
            .append(&alice, vec![rows(&[1, 2, 3, 4, 5])])
            .await
            .unwrap();
        store.append(&bob, vec![rows(&[10])]).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        // Alice at once (row threshold), Bob after a second (interval).
        while segment_files(dir.path(), "u-alice").is_empty()
            || segment_files(dir.path(), "u-bob").is_empty()
        {
            assert!(Instant::now() < deadline, "no flush: {:?}", store.stats());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ids(&store.read(&alice).await.unwrap()), [1, 2, 3, 4, 5]);
        assert_eq!(ids(&store.read(&bob).await.unwrap()), [10]);
        assert_eq!(store.stats().background_flush_failures, 0);
    }
}
