//! Opening a table, on its first use: the manifests of the partitions its
//! log names are read, then every record they do not reflect is applied.
//! A record that cannot be read is `DATA_CORRUPTED`, naming the log and the
//! record; nothing is cut or rewritten to get past it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use dashmap::DashMap;
use tenantfusion_core::{Result, TenantError};
use tenantfusion_tables::PartitionKey;

use super::partition_state::{Applied, Partition};
use super::records::decode_head;
use super::{Inner, Loaded};
use crate::codec::Decoder;
use crate::manifest::Manifest;
use crate::wal::{Lsn, Wal};

impl Inner {
    /// `DATA_CORRUPTED` when `manifest` reflects records the log, which
    /// went on at `opened_at`, never reached: the log lost its end (cut,
    /// or a segment deleted) and with it what came after the flush.
    pub(super) fn check_log_reaches(
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

    pub(super) fn corrupted(&self, lsn: u64, detail: String) -> TenantError {
        TenantError::Corrupted {
            file: self.wal_dir.display().to_string(),
            detail: format!("record {lsn}: {detail}"),
        }
    }

    /// Reads the manifests of the partitions the log mentions, then applies
    /// the records they do not reflect.
    pub(super) async fn replay(self: &Arc<Self>) -> Result<Loaded> {
        std::fs::create_dir_all(&self.wal_dir)
            .map_err(|e| crate::segment::io_error(&self.wal_dir, "cannot create", e))?;
        let mut keys = HashSet::new();
        crate::segment::scan(&self.wal_dir, |lsn, payload| {
            let mut record = Decoder::new(payload);
            let (_, key) =
                decode_head(&mut record).map_err(|detail| self.corrupted(lsn, detail))?;
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
        let wal = Wal::open_with(
            &self.wal_dir,
            self.options,
            &self.committers,
            |Lsn(lsn), payload| {
                last_lsn = lsn;
                let mut record = Decoder::new(payload);
                let (kind, key) =
                    decode_head(&mut record).map_err(|detail| self.corrupted(lsn, detail))?;
                let partition = partitions.get(&key).ok_or_else(|| {
                    self.corrupted(lsn, "the log changed while it was read".into())
                })?;
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
            },
        )?;
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
}
