//! Rows in log records: Arrow IPC streams.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::{
    DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions, StreamWriter,
    write_message,
};
use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use tenantfusion_core::{Result, TenantError};

/// `batches` (all of `schema`) as one Arrow IPC stream.
///
/// ```
/// use std::sync::Arc;
/// use datafusion::arrow::array::Int64Array;
/// use datafusion::arrow::datatypes::{DataType, Field, Schema};
/// use datafusion::arrow::record_batch::RecordBatch;
/// use tenantfusion_store::{decode_batches, encode_batches};
///
/// let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
/// let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))]).unwrap();
/// let bytes = encode_batches(&schema, &[batch.clone()]).unwrap();
/// assert_eq!(decode_batches(&bytes).unwrap(), vec![batch]);
/// ```
pub fn encode_batches(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema).map_err(not_encoded)?;
    for batch in batches {
        writer.write(batch).map_err(not_encoded)?;
    }
    writer.into_inner().map_err(not_encoded)
}

fn not_encoded(e: ArrowError) -> TenantError {
    TenantError::Internal(format!("cannot encode rows for the log: {e}"))
}

/// Encodes rows as [`encode_batches`] does, byte for byte, encoding each
/// schema's message once: a table's records all start with the same
/// schema, and its message (a flatbuffer of every field) cost as much to
/// encode as a one-row batch.
#[derive(Debug, Default)]
pub(crate) struct RowsEncoder {
    /// The schemas met last, with their messages (`None`: the schema's
    /// streams are written whole); the newest last.
    schemas: Mutex<Vec<(SchemaRef, Option<SchemaMessage>)>>,
}

/// A schema's encoded message, the start of each of its streams.
type SchemaMessage = Arc<[u8]>;

impl RowsEncoder {
    /// Schemas remembered: a table's rows, and the rows an UPDATE takes
    /// out, if their schema differs.
    const SCHEMAS: usize = 4;

    /// What [`encode_batches`] makes of `batches` (all of `schema`).
    pub(crate) fn encode(&self, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
        let Some(message) = self.schema_message(schema)? else {
            return encode_batches(schema, batches);
        };
        let mut out = message.to_vec();
        let options = IpcWriteOptions::default();
        let generator = IpcDataGenerator::default();
        let mut dictionaries = DictionaryTracker::new(false);
        let mut context = IpcWriteContext::default();
        for batch in batches {
            let (_, encoded) = generator
                .encode(batch, &mut dictionaries, &options, &mut context)
                .map_err(not_encoded)?;
            write_message(&mut out, encoded, &options).map_err(not_encoded)?;
        }
        // The end of the stream: a continuation marker and a length of 0.
        out.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        Ok(out)
    }

    /// The start of every stream of `schema`: its message; `None` when its
    /// streams are written whole.
    fn schema_message(&self, schema: &SchemaRef) -> Result<Option<SchemaMessage>> {
        let mut schemas = self.schemas.lock();
        if let Some((_, message)) = schemas
            .iter()
            .rev()
            .find(|(known, _)| Arc::ptr_eq(known, schema) || known == schema)
        {
            return Ok(message.clone());
        }
        // A dictionary is written once per stream and its id given out by
        // the schema's encoding: such a stream is written whole.
        let dictionaries = schema
            .flattened_fields()
            .iter()
            .any(|field| matches!(field.data_type(), DataType::Dictionary(..)));
        let message: Option<SchemaMessage> = match dictionaries {
            true => None,
            false => {
                let writer = StreamWriter::try_new(Vec::new(), schema).map_err(not_encoded)?;
                Some(writer.get_ref().as_slice().into())
            }
        };
        if schemas.len() == Self::SCHEMAS {
            schemas.remove(0);
        }
        schemas.push((Arc::clone(schema), message.clone()));
        Ok(message)
    }
}

/// The batches of an Arrow IPC stream made by [`encode_batches`].
/// `DATA_CORRUPTED` when the bytes are not one (the caller names the file).
pub fn decode_batches(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let failed = |e: ArrowError| TenantError::Corrupted {
        file: "<log record>".into(),
        detail: format!("rows cannot be decoded: {e}"),
    };
    StreamReader::try_new(bytes, None)
        .map_err(failed)?
        .map(|batch| batch.map_err(failed))
        .collect()
}

/// `schema` alone, as an Arrow IPC stream with no batches (field names,
/// types, nullability and metadata all kept).
pub(crate) fn encode_schema(schema: &SchemaRef) -> Result<Vec<u8>> {
    encode_batches(schema, &[])
}

/// The schema of an IPC stream made by [`encode_schema`].
pub(crate) fn decode_schema(bytes: &[u8]) -> std::result::Result<SchemaRef, String> {
    StreamReader::try_new(bytes, None)
        .map(|reader| reader.schema())
        .map_err(|e| format!("schema cannot be decoded: {e}"))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        ArrayRef, DictionaryArray, Int64Array, ListArray, StringArray, StringViewArray, StructArray,
    };
    use datafusion::arrow::datatypes::{Field, Int32Type, Int64Type, Schema};

    use super::*;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter_with_nullable(
            columns
                .into_iter()
                .map(|(name, column)| (name, column, true)),
        )
        .unwrap()
    }

    /// Every stream the encoder writes is the one `encode_batches` writes,
    /// byte for byte (so records written before it read back the same):
    /// views, lists, structs, NULLs, field metadata, a slice, no batch, a
    /// dictionary (written whole), and each schema again from memory.
    #[test]
    fn streams_equal_those_written_whole() {
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]));
        let views: ArrayRef = Arc::new(StringViewArray::from(vec![
            Some("a string longer than twelve bytes"),
            None,
            Some("b"),
        ]));
        let lists: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
        ]));
        let structs: ArrayRef = Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("s", DataType::Utf8, true)),
            Arc::new(StringArray::from(vec![Some("x"), None, Some("z")])) as ArrayRef,
        )]));
        let dictionary: ArrayRef = Arc::new(
            vec![Some("p"), None, Some("p")]
                .into_iter()
                .collect::<DictionaryArray<Int32Type>>(),
        );
        let plain = batch(vec![("id", ids.clone()), ("v", views.clone())]);
        let nested = batch(vec![("l", lists), ("st", structs), ("v", views)]);
        let with_metadata = {
            let schema = Schema::new(vec![
                Field::new("id", DataType::Int64, true)
                    .with_metadata([("k".to_string(), "v".to_string())].into()),
            ])
            .with_metadata([("table".to_string(), "t".to_string())].into());
            RecordBatch::try_new(Arc::new(schema), vec![ids]).unwrap()
        };
        let dictionaries = batch(vec![("d", dictionary)]);

        let encoder = RowsEncoder::default();
        for _ in 0..2 {
            for rows in [&plain, &nested, &with_metadata, &dictionaries] {
                let schema = rows.schema();
                for batches in [
                    vec![],
                    vec![rows.clone()],
                    vec![rows.slice(1, 2), rows.clone()],
                ] {
                    let expected = encode_batches(&schema, &batches).unwrap();
                    assert_eq!(encoder.encode(&schema, &batches).unwrap(), expected);
                    assert_eq!(decode_batches(&expected).unwrap(), batches);
                }
            }
        }
        // Equal schemas met through other `Arc`s share one message.
        let copy = Arc::new(plain.schema().as_ref().clone());
        assert_eq!(
            encoder.encode(&copy, std::slice::from_ref(&plain)).unwrap(),
            encode_batches(&copy, &[plain]).unwrap()
        );
        assert_eq!(encoder.schemas.lock().len(), RowsEncoder::SCHEMAS);
    }
}
