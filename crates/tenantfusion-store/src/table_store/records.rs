//! The table log's records: what each write logs, and how replay reads it
//! back. Every record starts with its kind and its partition:
//!
//! ```text
//! APPEND          kind 1, partition, rows (Arrow IPC)
//! DROP_PARTITION  kind 2, partition
//! REPLACE         kind 3, partition, rows taken out (IPC, one batch),
//!                 0 | 1 then rows put in (IPC, one batch)
//! ```
//!
//! The layout is on disk in every table written so far: a change here is a
//! new kind, never a new meaning for an old one.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DFResult;
use tenantfusion_tables::PartitionKey;

use crate::codec::{Decoder, Encoder};
use crate::ipc::{RowsEncoder, decode_batches};
use crate::partition::{decode_key, encode_key};

pub(super) const APPEND: u8 = 1;
const DROP_PARTITION: u8 = 2;
const REPLACE: u8 = 3;

/// A decoded record, less its partition.
#[derive(Debug)]
pub(super) enum Record {
    /// Rows an INSERT (or a load) added.
    Append(Vec<RecordBatch>),
    /// Every row of the partition removed (DROP USER).
    DropPartition,
    /// What an UPDATE or DELETE did: `removed` taken out by value, `added`
    /// put in (none for a DELETE).
    Replace {
        removed: RecordBatch,
        added: Option<RecordBatch>,
    },
}

/// The kind and partition that start every record; `record` is left at
/// the rest of it, for [`Record::decode`].
pub(super) fn decode_head(record: &mut Decoder<'_>) -> Result<(u8, PartitionKey), String> {
    let kind = record.u8("kind")?;
    Ok((kind, decode_key(record)?))
}

impl Record {
    /// The rest of a record of `kind`, after [`decode_head`].
    pub(super) fn decode(kind: u8, record: &mut Decoder<'_>) -> Result<Self, String> {
        let decoded = match kind {
            APPEND => {
                Self::Append(decode_batches(record.bytes("rows")?).map_err(|e| e.to_string())?)
            }
            DROP_PARTITION => Self::DropPartition,
            REPLACE => {
                let removed = one_batch(record.bytes("removed")?)?;
                let added = match record.u8("added")? {
                    0 => None,
                    _ => Some(one_batch(record.bytes("added")?)?),
                };
                Self::Replace { removed, added }
            }
            other => return Err(format!("unknown record kind {other}")),
        };
        record.end()?;
        Ok(decoded)
    }
}

/// The record of `batches` (rows of `schema`) appended to `key`.
pub(super) fn encode_append(
    rows: &RowsEncoder,
    key: &PartitionKey,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> DFResult<Vec<u8>> {
    let rows = rows.encode(schema, batches)?;
    Ok(head(APPEND, key).bytes(&rows).finish())
}

/// The record of an UPDATE (`added` given) or DELETE of `key`.
pub(super) fn encode_replace(
    rows: &RowsEncoder,
    key: &PartitionKey,
    removed: &RecordBatch,
    added: Option<&RecordBatch>,
) -> DFResult<Vec<u8>> {
    let one = |batch: &RecordBatch| rows.encode(&batch.schema(), std::slice::from_ref(batch));
    let mut record = head(REPLACE, key);
    record.bytes(&one(removed)?);
    match added {
        Some(added) => record.u8(1).bytes(&one(added)?),
        None => record.u8(0),
    };
    Ok(record.finish())
}

/// The record of every row of `key` dropped.
pub(super) fn encode_drop(key: &PartitionKey) -> Vec<u8> {
    head(DROP_PARTITION, key).finish()
}

fn head(kind: u8, key: &PartitionKey) -> Encoder {
    let mut record = Encoder::default();
    record.u8(kind);
    encode_key(&mut record, key);
    record
}

/// The one batch a REPLACE record holds in each of its parts.
fn one_batch(bytes: &[u8]) -> Result<RecordBatch, String> {
    let batches = decode_batches(bytes).map_err(|e| e.to_string())?;
    match <[RecordBatch; 1]>::try_from(batches) {
        Ok([batch]) => Ok(batch),
        Err(batches) => Err(format!("{} batches where one was written", batches.len())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use tenantfusion_core::UserId;

    use super::*;

    fn rows(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    fn decode(bytes: &[u8]) -> Result<(PartitionKey, Record), String> {
        let mut record = Decoder::new(bytes);
        let (kind, key) = decode_head(&mut record)?;
        Ok((key, Record::decode(kind, &mut record)?))
    }

    #[test]
    fn every_record_reads_back_as_written_and_a_cut_one_is_an_error() {
        let alice = PartitionKey::User(UserId::new("alice"));
        let encoder = RowsEncoder::default();
        let append =
            encode_append(&encoder, &alice, &rows(&[1]).schema(), &[rows(&[1, 2])]).unwrap();
        let update = encode_replace(&encoder, &alice, &rows(&[1]), Some(&rows(&[10]))).unwrap();
        let delete = encode_replace(&encoder, &alice, &rows(&[2]), None).unwrap();
        let dropped = encode_drop(&alice);

        let (key, Record::Append(batches)) = decode(&append).unwrap() else {
            panic!("not an append");
        };
        assert_eq!((key, batches), (alice.clone(), vec![rows(&[1, 2])]));
        let (_, Record::Replace { removed, added }) = decode(&update).unwrap() else {
            panic!("not a replace");
        };
        assert_eq!((removed, added), (rows(&[1]), Some(rows(&[10]))));
        let (_, Record::Replace { added: None, .. }) = decode(&delete).unwrap() else {
            panic!("not a delete");
        };
        assert!(matches!(decode(&dropped), Ok((_, Record::DropPartition))));

        for record in [&append, &update, &delete] {
            assert!(decode(&record[..record.len() - 1]).is_err());
        }
        let mut extra = dropped.clone();
        extra.push(0);
        assert!(decode(&extra).is_err(), "trailing bytes are damage");
        let mut unknown = dropped;
        unknown[0] = 9;
        assert_eq!(decode(&unknown).unwrap_err(), "unknown record kind 9");
    }
}
