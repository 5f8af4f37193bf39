//! Rows in log records: Arrow IPC streams.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
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
    let failed = |e: datafusion::arrow::error::ArrowError| {
        TenantError::Internal(format!("cannot encode rows for the log: {e}"))
    };
    let mut writer = StreamWriter::try_new(Vec::new(), schema).map_err(failed)?;
    for batch in batches {
        writer.write(batch).map_err(failed)?;
    }
    writer.into_inner().map_err(failed)
}

/// The batches of an Arrow IPC stream made by [`encode_batches`].
/// `DATA_CORRUPTED` when the bytes are not one (the caller names the file).
pub fn decode_batches(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let failed = |e: datafusion::arrow::error::ArrowError| TenantError::Corrupted {
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
