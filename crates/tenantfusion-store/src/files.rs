//! The object store holding Parquet segments and manifests, with the
//! errors a reader can act on.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tenantfusion_core::{Result, TenantError};

use crate::row_group_cache::RowGroupCache;
use crate::segment::{io_error, sync_dir};

/// Where a root's flushed rows live: an [`ObjectStore`] and how to name
/// its objects in errors.
#[derive(Debug)]
pub(crate) struct Files {
    store: Arc<dyn ObjectStore>,
    /// Shown before an object's path in errors (a directory or a URL).
    shown_as: String,
    /// For a local directory with [`Durability::Fsync`](crate::Durability):
    /// objects are synced to disk once written (the local object store
    /// renames a finished file into place but does not sync it).
    sync_under: Option<PathBuf>,
    /// Whether the objects are files of this machine.
    local: bool,
    /// Row groups of the segments decoded, kept for reads to come.
    row_groups: RowGroupCache,
    /// The storage root's lock: held until the last user of these files
    /// (a table's background flush included) is gone, so an engine opened
    /// after this one never sees its late writes.
    _lock: Option<std::fs::File>,
}

impl Files {
    /// Objects in the local directory `dir` (created if missing).
    pub(crate) fn local(dir: PathBuf, sync: bool) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, "cannot create", e))?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| TenantError::Storage(format!("cannot use {}: {e}", dir.display())))?;
        Ok(Self {
            store: Arc::new(store),
            shown_as: dir.display().to_string(),
            sync_under: sync.then_some(dir),
            local: true,
            row_groups: RowGroupCache::default(),
            _lock: None,
        })
    }

    /// These files, keeping `lock` held for as long as they are in use.
    pub(crate) fn holding(mut self, lock: std::fs::File) -> Self {
        self._lock = Some(lock);
        self
    }

    /// Objects in the S3 bucket (and prefix) of `url` (`s3://bucket/prefix`),
    /// set up from the `AWS_*` environment and then `options` (names of
    /// object_store's S3 settings: `endpoint`, `access_key_id`, ...).
    pub(crate) fn s3(url: &str, options: &[(String, String)]) -> Result<Self> {
        let invalid =
            |why: String| TenantError::InvalidArgument(format!("storage URL '{url}': {why}"));
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("not an s3:// URL".into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket".into()));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in options {
            let key: AmazonS3ConfigKey = key
                .to_ascii_lowercase()
                .parse()
                .map_err(|e| invalid(format!("unknown S3 option '{key}': {e}")))?;
            builder = builder.with_config(key, value);
        }
        let bucket_store = builder
            .build()
            .map_err(|e| invalid(format!("cannot set up S3: {e}")))?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(bucket_store)
        } else {
            Arc::new(PrefixStore::new(bucket_store, prefix))
        };
        Ok(Self {
            store,
            shown_as: url.trim_end_matches('/').to_string(),
            sync_under: None,
            local: false,
            row_groups: RowGroupCache::default(),
            _lock: None,
        })
    }

    /// The decoded row groups of these files kept in memory.
    pub(crate) fn row_groups(&self) -> &RowGroupCache {
        &self.row_groups
    }

    /// Whether the objects are files of this machine.
    pub(crate) fn is_local(&self) -> bool {
        self.local
    }

    /// Deletes every object under `prefix`.
    pub(crate) async fn delete_all(&self, prefix: &Path) -> Result<()> {
        let mut listed = self.store.list(Some(prefix));
        while let Some(object) = listed.next().await {
            let object = object.map_err(|e| self.failed("cannot list", prefix, e))?;
            self.delete(&object.location).await?;
        }
        Ok(())
    }

    /// The store itself, for readers that fetch ranges of an object.
    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// `path` as errors show it.
    pub(crate) fn name(&self, path: &Path) -> String {
        format!("{}/{path}", self.shown_as)
    }

    /// Writes `bytes` to `path` whole: a reader sees the old object or the
    /// new one. Returns once it is durable.
    pub(crate) async fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.failed("cannot write", path, e))?;
        if let Some(dir) = &self.sync_under {
            let file = dir.join(path.as_ref());
            std::fs::File::open(&file)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_error(&file, "cannot sync", e))?;
            if let Some(parent) = file.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }

    /// The object at `path`, or `None` if there is none.
    pub(crate) async fn get(&self, path: &Path) -> Result<Option<Bytes>> {
        let found = match self.store.get(path).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed("cannot read", path, e)),
        };
        let bytes = found
            .bytes()
            .await
            .map_err(|e| self.failed("cannot read", path, e))?;
        Ok(Some(bytes))
    }

    /// Deletes `path`; one already gone is fine.
    pub(crate) async fn delete(&self, path: &Path) -> Result<()> {
        self.row_groups.forget(path.as_ref());
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("cannot delete", path, e)),
        }
    }

    /// An object store error as `STORAGE_ERROR`, or `DATA_CORRUPTED` when
    /// an object the manifest lists is missing.
    pub(crate) fn failed(&self, what: &str, path: &Path, err: object_store::Error) -> TenantError {
        match err {
            object_store::Error::NotFound { .. } => TenantError::Corrupted {
                file: self.name(path),
                detail: "listed in the partition's manifest but missing".into(),
            },
            other => TenantError::Storage(format!("{what} {}: {other}", self.name(path))),
        }
    }
}
