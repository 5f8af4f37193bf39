//! The directory an engine keeps its durable state in.
//!
//! ```text
//! {root}/LOCK                      held while an engine has the root open
//! {root}/catalog/*.wal             the catalog's log
//! {root}/tables/{storage}/wal/     each table's log
//! {root}/tables/{storage}/data/    its Parquet segments, per partition
//! ```

use std::collections::HashSet;
use std::fs::{OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use object_store::path::Path as ObjectPath;
use tenantfusion_core::{Result, TableId, TenantError};

use crate::catalog_log::{CatalogEvent, CatalogLog};
use crate::committers::Committers;
use crate::files::Files;
use crate::flush_policy::FlushPolicy;
use crate::segment::io_error;
use crate::table_store::DurablePartitionStore;
use crate::wal::{Durability, WalOptions};

/// An open storage root: one engine at a time (a second open of the same
/// directory, in this process or another, is refused).
///
/// ```
/// use tenantfusion_core::TableId;
/// use tenantfusion_store::{StorageRoot, WalOptions};
///
/// let dir = tempfile::tempdir().unwrap();
/// let root = StorageRoot::open(dir.path(), WalOptions::default()).unwrap();
/// let name = root.new_storage_name(&TableId::new("app", "notes"));
/// assert!(name.starts_with("app.notes."));
/// let err = StorageRoot::open(dir.path(), WalOptions::default()).unwrap_err();
/// assert_eq!(err.code(), "STORAGE_ERROR");
/// ```
#[derive(Debug)]
pub struct StorageRoot {
    path: PathBuf,
    options: WalOptions,
    /// Write every log of the root: the catalog's and the tables'.
    committers: Committers,
    /// Segments and manifests, under the root.
    files: Arc<Files>,
    /// The stores of the tables opened, by storage name.
    tables: DashMap<String, Arc<DurablePartitionStore>>,
    next_table: AtomicU64,
}

/// How long [`StorageRoot::open`] waits for the root's lock: an engine just
/// dropped in this process may still be finishing a background flush.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl StorageRoot {
    /// Opens (or creates) the root at `path`; `options` apply to every log
    /// in it. `STORAGE_ERROR` if another engine has it open (after waiting
    /// up to two seconds for it to let go).
    pub fn open(path: impl AsRef<Path>, options: WalOptions) -> Result<Self> {
        Self::open_with(path.as_ref(), options, None)
    }

    /// [`StorageRoot::open`], with the tables' Parquet segments and
    /// manifests in the S3 bucket of `url` (`s3://bucket/prefix`, set up by
    /// `s3_options`) instead of under `path`; the logs stay in `path`.
    pub fn open_s3(
        path: impl AsRef<Path>,
        options: WalOptions,
        url: &str,
        s3_options: &[(String, String)],
    ) -> Result<Self> {
        Self::open_with(path.as_ref(), options, Some(Files::s3(url, s3_options)?))
    }

    fn open_with(path: &Path, options: WalOptions, remote: Option<Files>) -> Result<Self> {
        let path = path.to_path_buf();
        let tables = path.join("tables");
        std::fs::create_dir_all(&tables).map_err(|e| io_error(&tables, "cannot create", e))?;
        let lock_path = path.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, "cannot open", e))?;
        let waited_from = std::time::Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if waited_from.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(TenantError::Storage(format!(
                        "the data directory {} is in use by another engine",
                        path.display()
                    )));
                }
                Err(TryLockError::Error(e)) => return Err(io_error(&lock_path, "cannot lock", e)),
            }
        }
        let next_table = table_dirs(&path)?
            .iter()
            .filter_map(|name| name.rsplit('.').next()?.parse::<u64>().ok())
            .max()
            .map_or(1, |n| n + 1);
        let files = match remote {
            Some(remote) => remote,
            None => Files::local(path.clone(), options.durability == Durability::Fsync)?,
        }
        .holding(lock);
        Ok(Self {
            path,
            options,
            committers: Committers::new(options.committers)?,
            files: Arc::new(files),
            tables: DashMap::new(),
            next_table: AtomicU64::new(next_table),
        })
    }

    /// Bytes of decoded row groups kept for the tables of this root (see
    /// [`RowGroupCache`](crate::RowGroupCache)); 0 keeps none.
    pub fn set_row_group_cache_bytes(&self, bytes: usize) {
        self.files.row_groups().set_budget(bytes);
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every intact event of the catalog's log and what was passed over
    /// (see [`CatalogLog::salvage`]). Writes nothing.
    pub fn salvage_catalog(&self) -> Result<(Vec<CatalogEvent>, Vec<String>)> {
        CatalogLog::salvage(self.path.join("catalog"))
    }

    /// The rows that can still be read of the table under `storage` (see
    /// [`DurablePartitionStore::salvage`]), without opening it for writes.
    pub async fn salvage_table(&self, storage: &str) -> Result<crate::Salvaged> {
        let store = DurablePartitionStore::new(
            self.table_dir(storage)?.join("wal"),
            Arc::clone(&self.files),
            ObjectPath::from_iter(["tables", storage, "data"]),
            self.options,
            self.committers.clone(),
            crate::FlushPolicy::MANUAL,
        );
        store.salvage().await
    }

    /// Reads every record of the catalog's log, changing nothing: its
    /// segments and records, or `DATA_CORRUPTED` naming the damage.
    pub fn verify_catalog(&self) -> Result<(usize, u64)> {
        crate::segment::check(&self.path.join("catalog"))
    }

    /// Opens the catalog's log, handing each event to `replay` in order.
    pub fn catalog(&self, replay: impl FnMut(CatalogEvent) -> Result<()>) -> Result<CatalogLog> {
        CatalogLog::open_with(
            self.path.join("catalog"),
            self.options,
            &self.committers,
            replay,
        )
    }

    /// A storage name no table of this root has had: the table's name
    /// (made safe for a file name) and a number.
    pub fn new_storage_name(&self, table: &TableId) -> String {
        let safe = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let n = self.next_table.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}.{}.{n}",
            safe(table.namespace_id().as_str()),
            safe(table.table_name().as_str())
        )
    }

    /// Opens (or creates) the rows of the table stored under `storage`,
    /// flushed by `policy`. Its log is read when the table is first used.
    pub fn table_store(
        &self,
        storage: &str,
        policy: FlushPolicy,
    ) -> Result<Arc<DurablePartitionStore>> {
        let wal = self.table_dir(storage)?.join("wal");
        // The directory is made now: names are numbered past those on disk.
        std::fs::create_dir_all(&wal).map_err(|e| io_error(&wal, "cannot create", e))?;
        let data = ObjectPath::from_iter(["tables", storage, "data"]);
        let store = Arc::new(DurablePartitionStore::new(
            wal,
            Arc::clone(&self.files),
            data,
            self.options,
            self.committers.clone(),
            policy,
        ));
        self.tables.insert(storage.to_string(), Arc::clone(&store));
        Ok(store)
    }

    /// The store of the table under `storage`, if it is open.
    pub fn table(&self, storage: &str) -> Option<Arc<DurablePartitionStore>> {
        self.tables.get(storage).map(|t| Arc::clone(&t))
    }

    /// Deletes the rows of a dropped table. Objects in a remote store are
    /// deleted by a background task (when called inside a tokio runtime):
    /// no table refers to them any more.
    pub fn remove_table(&self, storage: &str) -> Result<()> {
        self.tables.remove(storage);
        let dir = self.table_dir(storage)?;
        if !self.files.is_local()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let files = Arc::clone(&self.files);
            let prefix = ObjectPath::from_iter(["tables", storage]);
            runtime.spawn(async move { files.delete_all(&prefix).await });
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&dir, "cannot remove", e)),
        }
    }

    /// Deletes table directories not in `used`: left by a table whose
    /// CREATE was never logged, or whose DROP was logged but not finished
    /// when the process stopped. Returns how many were deleted.
    pub fn remove_unused(&self, used: &HashSet<String>) -> Result<usize> {
        let mut removed = 0;
        for name in table_dirs(&self.path)? {
            if !used.contains(&name) {
                self.remove_table(&name)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn table_dir(&self, storage: &str) -> Result<PathBuf> {
        // Names come from new_storage_name or the catalog log; refuse
        // anything that would leave the tables directory.
        if storage.is_empty() || storage.contains(['/', '\\']) || storage.starts_with('.') {
            return Err(TenantError::Corrupted {
                file: self.path.join("catalog").display().to_string(),
                detail: format!("'{storage}' is not a table storage name"),
            });
        }
        Ok(self.path.join("tables").join(storage))
    }
}

fn table_dirs(root: &Path) -> Result<Vec<String>> {
    let tables = root.join("tables");
    let entries = std::fs::read_dir(&tables).map_err(|e| io_error(&tables, "cannot list", e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(&tables, "cannot list", e))?;
        if entry.path().is_dir()
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_new_after_reopen_and_unused_tables_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let id = TableId::new("app", "a/b");
        let (kept, orphan) = {
            let root = StorageRoot::open(dir.path(), WalOptions::default()).unwrap();
            let kept = root.new_storage_name(&id);
            let orphan = root.new_storage_name(&id);
            assert_eq!(kept, "app.a_b.1");
            root.table_store(&kept, FlushPolicy::MANUAL).unwrap();
            root.table_store(&orphan, FlushPolicy::MANUAL).unwrap();
            assert!(root.table(&kept).is_some());
            (kept, orphan)
        };
        let root = StorageRoot::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(root.new_storage_name(&id), "app.a_b.3");
        let used = HashSet::from([kept.clone()]);
        assert_eq!(root.remove_unused(&used).unwrap(), 1);
        assert!(dir.path().join("tables").join(&kept).is_dir());
        assert!(!dir.path().join("tables").join(&orphan).exists());
        assert!(root.table(&orphan).is_none());
        let err = root
            .table_store("../escape", FlushPolicy::MANUAL)
            .unwrap_err();
        assert_eq!(err.code(), "DATA_CORRUPTED");
    }
}
