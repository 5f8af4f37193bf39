//! Rows as a table keeps them: holding only their own bytes.
//!
//! An array of views (`Utf8View`, `BinaryView`) cut out of a larger one by
//! `take`, `filter` or `slice` still holds every data buffer of that one:
//! one row selected from a decoded row group holds the strings of all its
//! rows. A store that logged such a row would write them all, and one
//! that kept it would pin them, each change of the row chaining on to the
//! buffers of the last. DataFusion's `FilterExec` happens to copy the rows
//! it keeps (its batch coalescer does), but rows reach a table through
//! other plans too: a scan that filters its own rows, a projection
//! straight over a scan. So the sinks copy such arrays before a store sees
//! them. Views inside nested types (a list of strings) are left as they
//! are.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

/// Bytes an array may hold beyond twice what its views use before it is
/// copied: below this, copying costs more than it frees.
const SLACK: usize = 4096;

/// `batch` with each array of views that holds far more bytes than its
/// rows use copied to hold only theirs; `batch` itself when none does.
pub fn compacted(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    if !batch.columns().iter().any(|c| wasteful(c.as_ref())) {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            DataType::Utf8View if wasteful(column.as_ref()) => {
                Arc::new(column.as_string_view().gc()) as ArrayRef
            }
            DataType::BinaryView if wasteful(column.as_ref()) => {
                Arc::new(column.as_binary_view().gc()) as ArrayRef
            }
            _ => Arc::clone(column),
        })
        .collect();
    let rows = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(batch.schema(), columns, &rows)
}

/// Whether `array` is one of views holding over twice the bytes (plus
/// [`SLACK`]) its views point at.
fn wasteful(array: &dyn Array) -> bool {
    let (buffers, views) = match array.data_type() {
        DataType::Utf8View => {
            let array = array.as_string_view();
            (array.data_buffers(), array.views())
        }
        DataType::BinaryView => {
            let array = array.as_binary_view();
            (array.data_buffers(), array.views())
        }
        _ => return false,
    };
    let held: usize = buffers.iter().map(Buffer::len).sum();
    // A view's low 32 bits are its length; up to 12 bytes live in the
    // view itself, longer values in a data buffer.
    let used: usize = views
        .iter()
        .map(|view| *view as u32 as usize)
        .filter(|&len| len > 12)
        .sum();
    held > 2 * used + SLACK
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{BinaryViewArray, Int64Array, StringViewArray, UInt32Array};
    use datafusion::arrow::compute::take_record_batch;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn held(batch: &RecordBatch) -> usize {
        batch
            .columns()
            .iter()
            .map(|c| c.get_array_memory_size())
            .sum()
    }

    #[test]
    fn a_row_taken_from_many_holds_only_its_own_bytes_and_the_same_values() {
        let rows = 5_000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("body", DataType::Utf8View, true),
            Field::new("blob", DataType::BinaryView, true),
        ]));
        let bodies: Vec<Option<String>> = (0..rows)
            .map(|i| (i % 7 != 0).then(|| format!("a body long enough to live in a buffer {i}")))
            .collect();
        let blobs: Vec<Option<Vec<u8>>> = (0..rows).map(|i| Some(vec![i as u8; 40])).collect();
        let all = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from((0..rows as i64).collect::<Vec<_>>())),
                Arc::new(StringViewArray::from(bodies)),
                Arc::new(BinaryViewArray::from_iter(blobs)),
            ],
        )
        .unwrap();
        for picked in [vec![3u32], vec![0, 14, 4_999], vec![1, 2]] {
            let taken = take_record_batch(&all, &UInt32Array::from(picked.clone())).unwrap();
            assert!(held(&taken) > 100_000, "take keeps every buffer");
            let compact = compacted(taken.clone()).unwrap();
            assert_eq!(compact, taken, "{picked:?}");
            assert!(held(&compact) < 2_000, "{picked:?}: {}", held(&compact));
        }
        // Rows that use what they hold are left as they are (no copy).
        let whole = compacted(all.clone()).unwrap();
        assert!(
            Arc::ptr_eq(whole.column(1), all.column(1)),
            "a batch using its buffers is not copied"
        );
        let sliced = all.slice(100, 4_000);
        let kept = compacted(sliced.clone()).unwrap();
        assert!(Arc::ptr_eq(kept.column(1), sliced.column(1)));
    }
}
