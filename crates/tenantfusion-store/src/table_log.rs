//! A table's rows made durable: every write is logged before it is applied
//! to the in-memory hot set, and the log rebuilds the hot set on open.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DFResult;
use tenantfusion_core::{Result, TenantError, UserId};
use tenantfusion_tables::{MemoryPartitionStore, PartitionKey, PartitionStore};

use crate::codec::{Decoder, Encoder};
use crate::ipc::{decode_batches, encode_batches};
use crate::wal::{Lsn, Wal, WalOptions, WalStats};

const APPEND: u8 = 1;
const DROP_PARTITION: u8 = 2;

const SHARED: u8 = 0;
const USER: u8 = 1;
const TOPIC: u8 = 2;

/// A [`PartitionStore`] whose writes survive a crash: each is a record of
/// the table's write-ahead log, acknowledged once durable, then applied to
/// an in-memory partition per user. Reads never touch the log.
///
/// Writes to one partition are logged and applied one at a time, so the
/// hot set holds them in log order (what replay rebuilds); writes to
/// different partitions share commit groups.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use datafusion::arrow::array::Int64Array;
/// use datafusion::arrow::datatypes::{DataType, Field, Schema};
/// use datafusion::arrow::record_batch::RecordBatch;
/// use tenantfusion_core::UserId;
/// use tenantfusion_store::{DurablePartitionStore, WalOptions};
/// use tenantfusion_tables::{PartitionKey, PartitionStore};
///
/// let dir = tempfile::tempdir().unwrap();
/// let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
/// let rows = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1]))]).unwrap();
/// let alice = PartitionKey::User(UserId::new("alice"));
/// {
///     let store = DurablePartitionStore::open(dir.path(), WalOptions::default()).unwrap();
///     store.append(&alice, vec![rows.clone()]).await.unwrap();
/// }
/// let reopened = DurablePartitionStore::open(dir.path(), WalOptions::default()).unwrap();
/// assert_eq!(reopened.read(&alice).await.unwrap(), vec![rows]);
/// # });
/// ```
#[derive(Debug)]
pub struct DurablePartitionStore {
    dir: PathBuf,
    wal: Wal,
    hot: MemoryPartitionStore,
    /// Held from logging a partition's write until it is applied.
    writing: DashMap<PartitionKey, Arc<tokio::sync::Mutex<()>>>,
}

impl DurablePartitionStore {
    /// Opens (or creates) the store whose log is in `dir`, replaying it.
    /// `DATA_CORRUPTED` names the log and record when a record does not
    /// decode.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let hot = MemoryPartitionStore::new();
        let wal = Wal::open(&dir, options, |lsn, payload| {
            apply(&hot, payload).map_err(|detail| TenantError::Corrupted {
                file: dir.display().to_string(),
                detail: format!("record {}: {detail}", lsn.0),
            })
        })?;
        Ok(Self {
            dir,
            wal,
            hot,
            writing: DashMap::new(),
        })
    }

    /// The directory of the table's log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters of the table's log since it opened.
    pub fn wal_stats(&self) -> WalStats {
        self.wal.stats()
    }

    async fn logged<T>(
        &self,
        partition: &PartitionKey,
        record: Vec<u8>,
        then: impl FnOnce(&MemoryPartitionStore) -> Result<T>,
    ) -> Result<T> {
        let lock = Arc::clone(self.writing.entry(partition.clone()).or_default().value());
        let _one_writer = lock.lock().await;
        let _: Lsn = self.wal.append(record).await?;
        then(&self.hot)
    }
}

#[async_trait]
impl PartitionStore for DurablePartitionStore {
    async fn append(&self, partition: &PartitionKey, batches: Vec<RecordBatch>) -> DFResult<u64> {
        let Some(first) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(0);
        };
        let rows = encode_batches(&first.schema(), &batches)?;
        let mut record = Encoder::default();
        record.u8(APPEND);
        key(&mut record, partition);
        let record = record.bytes(&rows).finish();
        Ok(self
            .logged(partition, record, |hot| {
                hot.append_now(partition, batches)
                    .map_err(|e| TenantError::Internal(e.to_string()))
            })
            .await?)
    }

    async fn read(&self, partition: &PartitionKey) -> DFResult<Vec<RecordBatch>> {
        Ok(self.hot.read_now(partition))
    }

    async fn drop_partition(&self, partition: &PartitionKey) -> DFResult<u64> {
        // Nothing to log for a user who never wrote here (DROP USER asks
        // every table).
        if !self.hot.has_rows(partition) {
            return Ok(0);
        }
        let mut record = Encoder::default();
        record.u8(DROP_PARTITION);
        key(&mut record, partition);
        let record = record.finish();
        let dropped = self
            .logged(partition, record, |hot| Ok(hot.drop_now(partition)))
            .await?;
        self.writing.remove(partition);
        Ok(dropped)
    }

    fn partition_count(&self) -> usize {
        self.hot.partition_count()
    }

    fn keys(&self) -> Vec<PartitionKey> {
        self.hot.keys()
    }
}

fn key(record: &mut Encoder, partition: &PartitionKey) {
    match partition {
        PartitionKey::Shared => record.u8(SHARED).str(""),
        PartitionKey::User(user) => record.u8(USER).str(user.as_str()),
        PartitionKey::Topic(topic) => record.u8(TOPIC).str(topic),
    };
}

/// Applies one logged write to the hot set.
fn apply(hot: &MemoryPartitionStore, payload: &[u8]) -> Result<(), String> {
    let mut record = Decoder::new(payload);
    let kind = record.u8("kind")?;
    let tag = record.u8("partition")?;
    let name = record.str("partition")?;
    let partition = match tag {
        SHARED => PartitionKey::Shared,
        USER => PartitionKey::User(UserId::new(name)),
        TOPIC => PartitionKey::Topic(name.into()),
        other => return Err(format!("unknown partition kind {other}")),
    };
    match kind {
        APPEND => {
            let rows = decode_batches(record.bytes("rows")?).map_err(|e| e.to_string())?;
            record.end()?;
            hot.append_now(&partition, rows)
                .map_err(|e| format!("rows do not fit the table: {e}"))?;
        }
        DROP_PARTITION => {
            record.end()?;
            hot.drop_now(&partition);
        }
        other => return Err(format!("unknown record kind {other}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::Durability;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn schema() -> datafusion::arrow::datatypes::SchemaRef {
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
                b.column(0)
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

    #[tokio::test]
    async fn partitions_and_drops_come_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let alice = PartitionKey::User(UserId::new("alice"));
        let bob = PartitionKey::User(UserId::new("bob"));
        let topic = PartitionKey::Topic("AAPL".into());
        {
            let store = DurablePartitionStore::open(dir.path(), options()).unwrap();
            store.append(&alice, vec![rows(&[1, 2])]).await.unwrap();
            store.append(&bob, vec![rows(&[10])]).await.unwrap();
            store.append(&alice, vec![rows(&[3])]).await.unwrap();
            store
                .append(&PartitionKey::Shared, vec![rows(&[100])])
                .await
                .unwrap();
            store.append(&topic, vec![rows(&[7])]).await.unwrap();
            assert_eq!(store.drop_partition(&bob).await.unwrap(), 1);
            assert_eq!(store.drop_partition(&bob).await.unwrap(), 0);
            // Re-created after the drop: only the new row comes back.
            store.append(&bob, vec![rows(&[11])]).await.unwrap();
            assert_eq!(store.append(&alice, vec![]).await.unwrap(), 0);
            assert_eq!(store.wal_stats().appends, 7);
        }
        let store = DurablePartitionStore::open(dir.path(), options()).unwrap();
        assert_eq!(store.wal_stats().replayed, 7);
        assert_eq!(ids(&store.read(&alice).await.unwrap()), [1, 2, 3]);
        assert_eq!(ids(&store.read(&bob).await.unwrap()), [11]);
        assert_eq!(
            ids(&store.read(&PartitionKey::Shared).await.unwrap()),
            [100]
        );
        assert_eq!(ids(&store.read(&topic).await.unwrap()), [7]);
        assert_eq!(store.partition_count(), 4);
    }

    #[tokio::test]
    async fn a_failed_log_write_stores_nothing_and_reports_storage_error() {
        let dir = tempfile::tempdir().unwrap();
        let alice = PartitionKey::User(UserId::new("alice"));
        let store = DurablePartitionStore::open(dir.path(), options()).unwrap();
        store.append(&alice, vec![rows(&[1])]).await.unwrap();
        store.wal.fail_next_write();
        let err = store.append(&alice, vec![rows(&[2])]).await.unwrap_err();
        assert!(err.to_string().contains("STORAGE_ERROR"), "{err}");
        assert_eq!(ids(&store.read(&alice).await.unwrap()), [1]);
        drop(store);
        let store = DurablePartitionStore::open(dir.path(), options()).unwrap();
        assert_eq!(ids(&store.read(&alice).await.unwrap()), [1]);
    }

    #[test]
    fn a_record_that_does_not_decode_names_the_log_and_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let wal = Wal::open(dir.path(), options(), |_, _| Ok(())).unwrap();
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(wal.append(vec![APPEND, 9])).unwrap();
        }
        let err = DurablePartitionStore::open(dir.path(), options()).unwrap_err();
        assert_eq!(err.code(), "DATA_CORRUPTED");
        let message = err.to_string();
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("record 1"), "{message}");
    }
}
