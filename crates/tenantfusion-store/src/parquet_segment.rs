//! Parquet segment files: one flush of one partition's rows, with the
//! per-row-group statistics its manifest entry carries.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Field, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use datafusion::parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use datafusion::parquet::arrow::{ArrowWriter, ProjectionMask};
use datafusion::parquet::basic::Compression;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use datafusion::parquet::file::properties::WriterProperties;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tenantfusion_core::{Result, TenantError};

use crate::files::Files;
use crate::manifest::SegmentEntry;

/// Rows per row group: small enough that a lookup by a sorted or clustered
/// column reads a fraction of a segment, big enough to compress well.
const ROW_GROUP_ROWS: usize = 8192;

/// Writes `batches` (at least one row, all of one schema) as the Parquet
/// file `dir/file`; returns its manifest entry, covering log records `seq`.
pub(crate) async fn write(
    files: &Files,
    dir: &Path,
    file: String,
    batches: &[RecordBatch],
    seq: (u64, u64),
) -> Result<SegmentEntry> {
    let path = dir.clone().join(file.as_str());
    let failed =
        |e: ParquetError| TenantError::Storage(format!("cannot write {}: {e}", files.name(&path)));
    let schema = batches
        .first()
        .map(RecordBatch::schema)
        .ok_or_else(|| TenantError::Internal("a segment of no batches".into()))?;
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_compression(Compression::SNAPPY)
        .build();
    let mut bytes = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut bytes, Arc::clone(&schema), Some(properties)).map_err(failed)?;
    for batch in batches {
        writer.write(batch).map_err(failed)?;
    }
    let metadata = writer.close().map_err(failed)?;
    let size = bytes.len() as u64;
    let checksum = crc32fast::hash(&bytes);
    files.put(&path, bytes).await?;
    let (mins, maxes) = statistics(&schema, &metadata)?;
    let row_group_rows: Vec<u64> = metadata
        .row_groups()
        .iter()
        .map(|g| g.num_rows().max(0) as u64)
        .collect();
    Ok(SegmentEntry {
        file,
        rows: row_group_rows.iter().sum(),
        bytes: size,
        seq,
        row_group_rows,
        mins,
        maxes,
        checksum: Some(checksum),
        // What this process wrote is what it would check against.
        verified: tokio::sync::OnceCell::new_with(Some(())),
        footer: Default::default(),
    })
}

/// The smallest and largest value of each column in each row group, one
/// row per row group; null where Parquet keeps none (or for types whose
/// statistics Arrow cannot express).
fn statistics(
    schema: &SchemaRef,
    metadata: &ParquetMetaData,
) -> Result<(RecordBatch, RecordBatch)> {
    let groups = metadata.row_groups();
    let descriptor = metadata.file_metadata().schema_descr();
    let fit = |field: &Field, found: Option<ArrayRef>| -> ArrayRef {
        found
            .and_then(|array| {
                if array.data_type() == field.data_type() {
                    Some(array)
                } else {
                    cast(&array, field.data_type()).ok()
                }
            })
            .filter(|array| array.len() == groups.len())
            .unwrap_or_else(|| new_null_array(field.data_type(), groups.len()))
    };
    let mut mins = Vec::with_capacity(schema.fields().len());
    let mut maxes = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let converter = StatisticsConverter::try_new(field.name(), schema, descriptor).ok();
        let min = converter
            .as_ref()
            .and_then(|c| c.row_group_mins(groups.iter()).ok());
        let max = converter
            .as_ref()
            .and_then(|c| c.row_group_maxes(groups.iter()).ok());
        mins.push(fit(field, min));
        maxes.push(fit(field, max));
    }
    let options = RecordBatchOptions::new().with_row_count(Some(groups.len()));
    let batch = |columns| {
        RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
            .map_err(|e| TenantError::Internal(format!("segment statistics: {e}")))
    };
    Ok((batch(mins)?, batch(maxes)?))
}

/// Reads row groups `row_groups` of the segment `dir/entry.file`, only the
/// table columns `columns` (all when `None`).
pub(crate) async fn read(
    files: &Files,
    dir: &Path,
    entry: &SegmentEntry,
    columns: Option<&[usize]>,
    row_groups: Vec<usize>,
) -> Result<Vec<RecordBatch>> {
    let path = dir.clone().join(entry.file.as_str());
    let corrupted = |e: ParquetError| {
        let missing = matches!(&e, ParquetError::External(inner)
            if matches!(inner.downcast_ref(), Some(object_store::Error::NotFound { .. })));
        TenantError::Corrupted {
            file: files.name(&path),
            detail: if missing {
                "listed in the partition's manifest but missing".into()
            } else {
                format!("not a readable Parquet segment: {e}")
            },
        }
    };
    if let Some(expected) = entry.checksum {
        entry
            .verified
            .get_or_try_init(|| verify(files, &path, entry.bytes, expected))
            .await?;
    }
    let reader = || SegmentReader {
        store: Arc::clone(files.store()),
        path: path.clone(),
        size: entry.bytes,
    };
    let footer = entry
        .footer
        .get_or_try_init(|| async {
            ArrowReaderMetadata::load_async(&mut reader(), ArrowReaderOptions::new())
                .await
                .map_err(corrupted)
        })
        .await?
        .clone();
    let mask = match columns {
        Some(columns) => ProjectionMask::roots(footer.parquet_schema(), columns.iter().copied()),
        None => ProjectionMask::all(),
    };
    ParquetRecordBatchStreamBuilder::new_with_metadata(reader(), footer)
        .with_projection(mask)
        .with_row_groups(row_groups)
        .with_batch_size(ROW_GROUP_ROWS)
        .build()
        .map_err(corrupted)?
        .try_collect()
        .await
        .map_err(corrupted)
}

/// Reads the whole segment `path` and checks it is the `size` bytes with
/// CRC-32 `expected` that were written: a flipped bit in a data page can
/// decode to a wrong value without Parquet noticing.
pub(crate) async fn verify(files: &Files, path: &Path, size: u64, expected: u32) -> Result<()> {
    let corrupted = |detail: String| TenantError::Corrupted {
        file: files.name(path),
        detail,
    };
    let bytes = match files.store().get(path).await {
        Ok(found) => found.bytes().await,
        Err(e) => Err(e),
    }
    .map_err(|e| match e {
        object_store::Error::NotFound { .. } => {
            corrupted("listed in the partition's manifest but missing".into())
        }
        e => TenantError::Storage(format!("cannot read {}: {e}", files.name(path))),
    })?;
    if bytes.len() as u64 != size {
        return Err(corrupted(format!(
            "{} bytes where {size} were written",
            bytes.len()
        )));
    }
    let found = crc32fast::hash(&bytes);
    if found != expected {
        return Err(corrupted(format!(
            "its bytes are not those written (CRC-32 {found:08x}, written {expected:08x})"
        )));
    }
    Ok(())
}

/// Reads ranges of one segment object, whose size the manifest gives.
struct SegmentReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for SegmentReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, Result<bytes::Bytes, ParquetError>> {
        self.store
            .get_range(&self.path, range)
            .map_err(external)
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, Result<Vec<bytes::Bytes>, ParquetError>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>, ParquetError>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
