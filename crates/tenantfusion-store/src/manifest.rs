//! A partition's manifest: the Parquet segments holding its flushed rows,
//! and how far into the table's log they reach.
//!
//! A manifest is one object, replaced whole (written new, then swapped in
//! by the object store's atomic put), so a reader sees the old list or the
//! new one. It is framed like a log record: a checksum covers it, so a
//! damaged manifest is reported, naming the file, never half read.
//!
//! Each segment's entry carries the CRC-32 of the segment file's bytes
//! (version 2 on; version 1 manifests, written before, have none): Parquet
//! checks little of its own, and a flipped bit in a data page can decode
//! to a wrong value, so a segment is read only once its bytes are proven
//! to be the ones written.
//!
//! ```text
//! record(lsn = flushed_through, payload):
//!   version: u8 | partition | flushed_through: u64 | next_segment: u64 |
//!   segments: u32, each: file | rows: u64 | bytes: u64 | seq_min: u64 |
//!   seq_max: u64 | row groups: u32, each rows: u64 | stats: Arrow IPC (mins, maxes) |
//!   has crc32: u8 | crc32: u32 (version 2)
//! ```

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, ScalarValue};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderMetadata;
use tenantfusion_tables::PartitionKey;

use crate::codec::{Decoder, Encoder};
use crate::ipc::{decode_batches, encode_batches};
use crate::partition::{decode_key, encode_key};
use crate::record::{Decoded, decode, encode};

/// What this build writes; it reads 1 (segments without checksums) too.
const VERSION: u8 = 2;

/// The object name of a partition's manifest, inside its directory.
pub(crate) const MANIFEST: &str = "manifest";

/// Which segments hold a partition's flushed rows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Manifest {
    /// Every logged write of the partition up to this LSN is reflected
    /// here (its rows are in `segments`, or a later drop removed them);
    /// replay skips those records.
    pub(crate) flushed_through: u64,
    /// The number the next segment file gets; never reused, even after the
    /// partition is dropped, so a new file never overwrites an old one.
    pub(crate) next_segment: u64,
    /// Oldest first.
    pub(crate) segments: Vec<Arc<SegmentEntry>>,
}

/// One Parquet segment of a partition.
#[derive(Debug)]
pub(crate) struct SegmentEntry {
    /// File name inside the partition's directory.
    pub(crate) file: String,
    pub(crate) rows: u64,
    /// Size of the file, so reading it needs no extra request to find out.
    pub(crate) bytes: u64,
    /// The log records whose rows the segment holds: first and last LSN.
    pub(crate) seq: (u64, u64),
    /// Rows in each row group.
    pub(crate) row_group_rows: Vec<u64>,
    /// Per row group (one row each), per column: the smallest and largest
    /// value, null where unknown. Over the table's schema.
    pub(crate) mins: RecordBatch,
    pub(crate) maxes: RecordBatch,
    /// CRC-32 of the file's bytes, `None` in a version 1 manifest.
    pub(crate) checksum: Option<u32>,
    /// Set once the file's bytes were read and matched `checksum`: a file
    /// is checked on its first read in the process, not on every one.
    pub(crate) verified: tokio::sync::OnceCell<()>,
    /// The file's footer once read, so repeated scans do not fetch it.
    pub(crate) footer: tokio::sync::OnceCell<ArrowReaderMetadata>,
}

impl Manifest {
    /// An empty manifest after a drop logged at `lsn`.
    pub(crate) fn dropped(&self, lsn: u64) -> Self {
        Self {
            flushed_through: lsn,
            next_segment: self.next_segment,
            segments: Vec::new(),
        }
    }

    /// Rows in all segments.
    pub(crate) fn rows(&self) -> u64 {
        self.segments.iter().map(|s| s.rows).sum()
    }

    pub(crate) fn encode(&self, partition: &PartitionKey) -> tenantfusion_core::Result<Vec<u8>> {
        let mut out = Encoder::default();
        out.u8(VERSION);
        encode_key(&mut out, partition);
        out.u64(self.flushed_through)
            .u64(self.next_segment)
            .u32(self.segments.len() as u32);
        for segment in &self.segments {
            out.str(&segment.file)
                .u64(segment.rows)
                .u64(segment.bytes)
                .u64(segment.seq.0)
                .u64(segment.seq.1)
                .u32(segment.row_group_rows.len() as u32);
            for rows in &segment.row_group_rows {
                out.u64(*rows);
            }
            let stats = encode_batches(
                &segment.mins.schema(),
                &[segment.mins.clone(), segment.maxes.clone()],
            )?;
            out.bytes(&stats);
            // Every segment this build writes has one; an entry carried
            // over from a version 1 manifest keeps having none.
            out.u8(u8::from(segment.checksum.is_some()))
                .u32(segment.checksum.unwrap_or(0));
        }
        let mut framed = Vec::new();
        encode(self.flushed_through, &out.finish(), &mut framed);
        Ok(framed)
    }

    /// Reads what [`Manifest::encode`] wrote for `partition`; the error
    /// says what is wrong (the caller names the file).
    pub(crate) fn decode(bytes: &[u8], partition: &PartitionKey) -> Result<Self, String> {
        let (owner, manifest) = Self::decode_any(bytes)?;
        if &owner != partition {
            return Err(format!("the manifest is of partition {owner:?}"));
        }
        Ok(manifest)
    }

    /// Reads a manifest and the partition it says it is of.
    pub(crate) fn decode_any(bytes: &[u8]) -> Result<(PartitionKey, Self), String> {
        let payload = match decode(bytes) {
            Decoded::Record { payload, len, .. } if len == bytes.len() => payload,
            Decoded::Record { len, .. } => {
                return Err(format!("{} bytes after the manifest", bytes.len() - len));
            }
            Decoded::End | Decoded::Short => return Err("the manifest is cut short".into()),
            Decoded::BadChecksum { .. } => return Err("the manifest fails its checksum".into()),
        };
        let mut input = Decoder::new(payload);
        let version = input.u8("version")?;
        if !(1..=VERSION).contains(&version) {
            return Err(format!("manifest version {version} is not known"));
        }
        let owner = decode_key(&mut input)?;
        let flushed_through = input.u64("flushed_through")?;
        let next_segment = input.u64("next_segment")?;
        let count = input.u32("segments")?;
        let mut segments = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let file = input.str("file")?;
            let rows = input.u64("rows")?;
            let bytes = input.u64("bytes")?;
            let seq = (input.u64("seq_min")?, input.u64("seq_max")?);
            let groups = input.u32("row groups")?;
            let row_group_rows = (0..groups)
                .map(|_| input.u64("row group rows"))
                .collect::<Result<Vec<_>, _>>()?;
            let stats = decode_batches(input.bytes("stats")?).map_err(|e| e.to_string())?;
            let [mins, maxes] = <[RecordBatch; 2]>::try_from(stats)
                .map_err(|stats| format!("{} statistics batches, not 2", stats.len()))?;
            if mins.num_rows() != row_group_rows.len() || maxes.num_rows() != mins.num_rows() {
                return Err(format!("statistics of {file} do not match its row groups"));
            }
            let checksum = match version {
                1 => None,
                _ => {
                    let known = input.u8("has checksum")? != 0;
                    let crc = input.u32("checksum")?;
                    known.then_some(crc)
                }
            };
            segments.push(Arc::new(SegmentEntry {
                file,
                rows,
                bytes,
                seq,
                row_group_rows,
                mins,
                maxes,
                checksum,
                verified: Default::default(),
                footer: Default::default(),
            }));
        }
        input.end()?;
        let manifest = Self {
            flushed_through,
            next_segment,
            segments,
        };
        Ok((owner, manifest))
    }
}

impl SegmentEntry {
    /// The schema the statistics are over.
    pub(crate) fn stats_schema(&self) -> SchemaRef {
        self.mins.schema()
    }
}

/// Statistics of one segment's row groups, for pruning.
impl PruningStatistics for SegmentEntry {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.mins.column_by_name(&column.name).cloned()
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.maxes.column_by_name(&column.name).cloned()
    }

    fn num_containers(&self) -> usize {
        self.row_group_rows.len()
    }

    fn null_counts(&self, _column: &Column) -> Option<ArrayRef> {
        None
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(UInt64Array::from(self.row_group_rows.clone())))
    }

    #[allow(clippy::mutable_key_type)] // the trait's signature
    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use tenantfusion_core::UserId;

    fn stats(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    fn entry(n: u64) -> SegmentEntry {
        SegmentEntry {
            file: format!("seg-{n}.parquet"),
            rows: 30,
            bytes: 1000 + n,
            seq: (n * 10, n * 10 + 9),
            row_group_rows: vec![20, 10],
            mins: stats(&[1, 50]),
            maxes: stats(&[40, 90]),
            checksum: n.is_multiple_of(2).then_some(0xdead_0000 + n as u32),
            verified: Default::default(),
            footer: Default::default(),
        }
    }

    #[test]
    fn manifests_round_trip_and_damage_or_a_wrong_owner_is_an_error() {
        let alice = PartitionKey::User(UserId::new("alice"));
        let manifest = Manifest {
            flushed_through: 19,
            next_segment: 2,
            segments: vec![Arc::new(entry(0)), Arc::new(entry(1))],
        };
        let bytes = manifest.encode(&alice).unwrap();
        let back = Manifest::decode(&bytes, &alice).unwrap();
        assert_eq!((back.flushed_through, back.next_segment), (19, 2));
        assert_eq!(back.rows(), 60);
        let files: Vec<_> = back.segments.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(files, ["seg-0.parquet", "seg-1.parquet"]);
        assert_eq!(back.segments[1].seq, (10, 19));
        assert_eq!(back.segments[1].maxes, stats(&[40, 90]));
        assert_eq!(back.segments[1].num_containers(), 2);
        // A checksum, and the lack of one (a segment from a version 1
        // manifest), both come back as they were.
        assert_eq!(back.segments[0].checksum, Some(0xdead_0000));
        assert_eq!(back.segments[1].checksum, None);

        let dropped = back.dropped(25);
        assert_eq!(
            (
                dropped.flushed_through,
                dropped.next_segment,
                dropped.rows()
            ),
            (25, 2, 0)
        );

        let bob = PartitionKey::User(UserId::new("bob"));
        let err = Manifest::decode(&bytes, &bob).unwrap_err();
        assert!(err.contains("alice"), "{err}");
        let mut damaged = bytes.clone();
        damaged[40] ^= 1;
        assert!(
            Manifest::decode(&damaged, &alice)
                .unwrap_err()
                .contains("checksum")
        );
        let err = Manifest::decode(&bytes[..bytes.len() - 1], &alice).unwrap_err();
        assert!(err.contains("cut short"), "{err}");
    }
}
