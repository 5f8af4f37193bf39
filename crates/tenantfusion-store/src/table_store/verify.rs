//! `VERIFY TABLE`: every record of the log, every manifest and every
//! segment read whole against its checksum, nothing changed.

use tenantfusion_core::{Result, TenantError};

use super::DurablePartitionStore;
use crate::parquet_segment;
use crate::segment;

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

impl DurablePartitionStore {
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
}
