//! Reading a damaged table's rows past the damage, for an administrator to
//! copy out: the same records applied the same way as on replay, and the
//! same rows taken out of segments as a scan leaves out.

use datafusion::arrow::record_batch::RecordBatch;
use tenantfusion_core::Result;
use tenantfusion_tables::PartitionKey;

use super::DurablePartitionStore;
use super::partition_state::{PartitionState, TakenOut};
use super::records::decode_head;
use super::scan::placed;
use crate::codec::Decoder;
use crate::manifest::Manifest;
use crate::parquet_segment;
use crate::segment;

/// What [`DurablePartitionStore::salvage`] got out of a table.
#[derive(Debug, Default)]
pub struct Salvaged {
    /// Each partition's rows that could be read, as a scan would give them.
    pub partitions: Vec<(PartitionKey, Vec<RecordBatch>)>,
    /// What was passed over, each naming its file: damaged stretches of
    /// the log, manifests, segments, records that did not apply.
    pub skipped: Vec<String>,
}

impl DurablePartitionStore {
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
            let (kind, key) = match decode_head(&mut record) {
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
            // Read straight from the files: salvage is not a scan, and
            // its reads are not counted as one.
            let mut taken = TakenOut::new(&pending)?;
            for segment in &manifest.segments {
                let dir = inner.partition_dir(&key);
                let groups: Vec<usize> = (0..segment.row_group_rows.len()).collect();
                match parquet_segment::read(&inner.files, &dir, segment, None, groups.clone()).await
                {
                    Ok(batches) => {
                        let batches = placed(segment, &groups, batches);
                        let (live, _) = taken.apply(&segment.file, batches)?;
                        rows.extend(live.into_iter().map(|(batch, _)| batch));
                    }
                    Err(damage) => salvaged.skipped.push(damage.to_string()),
                }
            }
            rows.extend(hot);
            salvaged.partitions.push((key, rows));
        }
        Ok(salvaged)
    }
}
