//! Finding stored rows by value: how UPDATE and DELETE say which rows they
//! change without a row id.
//!
//! A statement's rows to change are found by a query over the table (so a
//! `WHERE` with subqueries or joins is answered by DataFusion, exactly).
//! Those rows are then taken out of the partition by value, each wanted row
//! taking one stored copy: rows with equal values cannot be told apart, so
//! which copy goes makes no difference to any query.

use std::collections::HashMap;

use datafusion::arrow::array::{BooleanArray, UInt32Array};
use datafusion::arrow::compute::{filter_record_batch, take_record_batch};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::error::{DataFusionError, Result};

/// Rows wanted by value, each to be found once.
#[derive(Debug)]
pub struct RowMatcher {
    converter: RowConverter,
    /// Encoded row -> indices (into the wanted rows) not found yet.
    wanted: HashMap<Box<[u8]>, Vec<u32>>,
    found: Vec<u32>,
    left: usize,
}

impl RowMatcher {
    /// Matches the rows of `wanted` (in order: earlier rows are found first
    /// among equal ones).
    pub fn new(wanted: &[RecordBatch]) -> Result<Self> {
        let Some(first) = wanted.first() else {
            return Err(DataFusionError::Internal(
                "a row matcher needs the rows' schema".into(),
            ));
        };
        let fields: Vec<SortField> = first
            .schema()
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).map_err(|e| {
            DataFusionError::NotImplemented(format!(
                "UPDATE and DELETE are not supported on tables with these column types: {e}"
            ))
        })?;
        let mut matcher = Self {
            converter,
            wanted: HashMap::new(),
            found: Vec::new(),
            left: 0,
        };
        let mut index = 0u32;
        for batch in wanted {
            let rows = matcher.converter.convert_columns(batch.columns())?;
            for row in rows.iter() {
                matcher
                    .wanted
                    .entry(row.as_ref().into())
                    .or_default()
                    .push(index);
                index += 1;
            }
        }
        for indices in matcher.wanted.values_mut() {
            // Popped from the end: earliest first.
            indices.reverse();
        }
        matcher.left = index as usize;
        Ok(matcher)
    }

    /// Takes the wanted rows found in `batch`: the mask keeps the rows of
    /// `batch` that were not taken.
    pub fn take_from(&mut self, batch: &RecordBatch) -> Result<BooleanArray> {
        if self.left == 0 || batch.num_rows() == 0 {
            return Ok(BooleanArray::from(vec![true; batch.num_rows()]));
        }
        let rows = self.converter.convert_columns(batch.columns())?;
        let keep: Vec<bool> = rows
            .iter()
            .map(|row| match self.wanted.get_mut(row.as_ref()) {
                Some(indices) => match indices.pop() {
                    Some(index) => {
                        self.found.push(index);
                        self.left -= 1;
                        false
                    }
                    None => true,
                },
                None => true,
            })
            .collect();
        Ok(BooleanArray::from(keep))
    }

    /// `batches` without the wanted rows found in them; whether any were.
    pub fn take_all(&mut self, batches: Vec<RecordBatch>) -> Result<(Vec<RecordBatch>, bool)> {
        let mut kept = Vec::with_capacity(batches.len());
        let mut taken = false;
        for batch in batches {
            let keep = self.take_from(&batch)?;
            if keep.false_count() == 0 {
                kept.push(batch);
                continue;
            }
            taken = true;
            let batch = filter_record_batch(&batch, &keep)?;
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
        }
        Ok((kept, taken))
    }

    /// Whether every wanted row has been found.
    pub fn is_done(&self) -> bool {
        self.left == 0
    }

    /// Indices of the wanted rows found so far, ascending.
    pub fn found(&self) -> Vec<u32> {
        let mut found = self.found.clone();
        found.sort_unstable();
        found
    }

    /// Indices of the wanted rows not found, ascending.
    pub fn missing(&self) -> Vec<u32> {
        let mut missing: Vec<u32> = self.wanted.values().flatten().copied().collect();
        missing.sort_unstable();
        missing
    }
}

/// The rows of `batch` at `indices`.
pub fn rows_at(batch: &RecordBatch, indices: &[u32]) -> Result<RecordBatch> {
    Ok(take_record_batch(
        batch,
        &UInt32Array::from(indices.to_vec()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(rows: &[(i64, Option<&str>)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("body", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    #[test]
    fn each_wanted_row_takes_one_equal_stored_row() {
        let wanted = batch(&[(1, Some("a")), (1, Some("a")), (2, None), (9, Some("z"))]);
        let mut matcher = RowMatcher::new(std::slice::from_ref(&wanted)).unwrap();
        let stored = batch(&[
            (1, Some("a")),
            (2, None),
            (1, Some("a")),
            (1, Some("a")),
            (2, Some("b")),
        ]);
        let (left, taken) = matcher.take_all(vec![stored]).unwrap();
        // Two of the three equal rows go, the NULL row goes, (2, 'b') stays.
        assert!(taken);
        assert_eq!(left, [batch(&[(1, Some("a")), (2, Some("b"))])]);
        assert_eq!(matcher.found(), [0, 1, 2]);
        assert_eq!(matcher.missing(), [3]);
        assert!(!matcher.is_done());
        let keep = matcher.take_from(&batch(&[(9, Some("z"))])).unwrap();
        assert_eq!(keep, BooleanArray::from(vec![false]));
        assert!(matcher.is_done());
        assert_eq!(rows_at(&wanted, &[3]).unwrap(), batch(&[(9, Some("z"))]));
    }
}
