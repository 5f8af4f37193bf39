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
//!
//! The module's parts, one concern each:
//!
//! - [`records`]: the log's records, written and read back;
//! - [`partition_state`]: one partition in memory, and what each record
//!   does to it (the same live and on replay);
//! - [`replay`]: opening the table (the log over the manifests);
//! - [`write`]: logging a write, then applying it;
//! - [`scan`]: reading a partition (segments less the rows taken out, then
//!   the rows in memory);
//! - [`flush`]: segments, manifests and cutting the log;
//! - [`verify`] and [`salvage`]: reading a damaged table without changing it.

mod flush;
mod partition_state;
mod records;
mod replay;
mod salvage;
mod scan;
mod verify;
mod write;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use dashmap::DashMap;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, Statistics};
use datafusion::error::Result as DFResult;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use tenantfusion_core::{Result, TenantError};
use tenantfusion_tables::{PartitionKey, PartitionStore, ReadRequest};

use crate::committers::Committers;
use crate::files::Files;
use crate::flush_policy::FlushPolicy;
use crate::ipc::RowsEncoder;
use crate::manifest::{MANIFEST, Manifest, SegmentEntry};
use crate::partition::dir_name;
use crate::wal::{Durability, Lsn, Wal, WalOptions, WalStats};

pub use flush::FlushStats;
use partition_state::Partition;
pub use salvage::Salvaged;
pub use verify::Verified;

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
    committers: Committers,
    files: Arc<Files>,
    /// Object path of the directory holding one directory per partition.
    data: ObjectPath,
    policy: FlushPolicy,
    loaded: tokio::sync::OnceCell<Loaded>,
    segments_written: AtomicU64,
    row_groups_read: AtomicU64,
    row_groups_skipped: AtomicU64,
    background_flush_failures: AtomicU64,
    /// Encodes the rows of the table's log records.
    rows: RowsEncoder,
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
            Committers::new(1)?,
            policy,
        ))
    }

    /// The store with its log in `wal_dir`, written by `committers`, and
    /// its segments under `data` in `files`.
    pub(crate) fn new(
        wal_dir: PathBuf,
        files: Arc<Files>,
        data: ObjectPath,
        options: WalOptions,
        committers: Committers,
        policy: FlushPolicy,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                wal_dir,
                options,
                committers,
                files,
                data,
                policy,
                loaded: tokio::sync::OnceCell::new(),
                segments_written: AtomicU64::new(0),
                row_groups_read: AtomicU64::new(0),
                row_groups_skipped: AtomicU64::new(0),
                background_flush_failures: AtomicU64::new(0),
                rows: RowsEncoder::default(),
            }),
        }
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
}

#[async_trait]
impl PartitionStore for DurablePartitionStore {
    async fn append(&self, key: &PartitionKey, batches: Vec<RecordBatch>) -> DFResult<u64> {
        self.inner.append(key, batches).await
    }

    async fn read(&self, key: &PartitionKey) -> DFResult<Vec<RecordBatch>> {
        self.inner.read(key).await
    }

    async fn scan(&self, key: &PartitionKey, request: &ReadRequest) -> DFResult<Vec<RecordBatch>> {
        self.inner.scan(key, request).await
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
        self.inner.replace(key, old, new).await
    }

    async fn drop_partition(&self, key: &PartitionKey) -> DFResult<u64> {
        self.inner.drop_partition(key).await
    }

    /// The row count, exactly (`PartitionState::rows`). Nothing of the columns (their sizes on disk are not their sizes in
    /// memory). Unknown for a partition not opened since the engine
    /// started (its manifest is read when it is first scanned).
    fn statistics(
        &self,
        key: &PartitionKey,
        schema: &Schema,
        columns: Option<&[usize]>,
    ) -> Option<Statistics> {
        let partition = self.inner.loaded.get()?.partitions.get(key)?;
        if partition.damaged.is_some() {
            return None;
        }
        let rows = partition.state.read().rows();
        let width = columns.map_or(schema.fields().len(), <[usize]>::len);
        Some(Statistics {
            num_rows: Precision::Exact(usize::try_from(rows).ok()?),
            total_byte_size: Precision::Absent,
            column_statistics: vec![ColumnStatistics::new_unknown(); width],
        })
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
