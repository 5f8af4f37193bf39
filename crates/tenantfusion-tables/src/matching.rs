//! Finding stored rows by value: how UPDATE and DELETE say which rows they
//! change without a row id.
//!
//! A statement's rows to change are found by a query over the table (so a
//! `WHERE` with subqueries or joins is answered by DataFusion, exactly).
//! Those rows are then taken out of the partition by value, each wanted row
//! taking one stored copy: rows with equal values cannot be told apart, so
//! which copy goes makes no difference to any query.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{Row, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::common::hash_utils::{RandomState as ValueHashState, create_hashes};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, col, lit};
use foldhash::fast::RandomState;

/// Rows wanted by value, each to be found once.
///
/// Encoding a stored row to look it up costs more than the lookup; most
/// stored rows are not wanted (an UPDATE by key wants one row of a
/// segment's thousands). So the wanted rows' values are also hashed column
/// by column, as DataFusion's hash joins hash them, and only the stored
/// rows whose hash is among theirs are encoded and looked up; before that,
/// one column of fixed-width values alone is hashed to pass over the rows
/// whose value there no wanted row has.
#[derive(Debug)]
pub struct RowMatcher {
    converter: RowConverter,
    /// Encoded row -> indices (into the wanted rows) not found yet.
    wanted: HashMap<Box<[u8]>, Vec<u32>, RandomState>,
    /// The hashes of the wanted rows' values; `None` when a column's type
    /// cannot be hashed so (every row is encoded).
    hashes: Option<Hashes>,
    found: Vec<u32>,
    left: usize,
}

/// The hashes of the wanted rows' values ([`value_hashes`]), whole and in
/// one column.
#[derive(Debug)]
struct Hashes {
    rows: HashSet<u64, RandomState>,
    /// A column of fixed-width values (hashed far faster than strings)
    /// and the hashes of the wanted rows' values in it: a stored row whose
    /// value there is not among them is passed over before its whole row
    /// is hashed. An UPDATE by key meets each row of memory this way.
    column: Option<(usize, HashSet<u64, RandomState>)>,
}

impl Hashes {
    fn of(wanted: &[RecordBatch]) -> Option<Self> {
        let schema = wanted.first()?.schema();
        let column = (schema.fields().len() > 1)
            .then(|| {
                schema
                    .fields()
                    .iter()
                    .position(|f| f.data_type().is_primitive())
            })
            .flatten();
        let mut rows = HashSet::default();
        let mut in_column = column.map(|index| (index, HashSet::default()));
        for batch in wanted {
            rows.extend(value_hashes(batch.columns())?);
            if let Some((index, hashes)) = in_column.as_mut() {
                hashes.extend(value_hashes(&batch.columns()[*index..=*index])?);
            }
        }
        Some(Self {
            rows,
            column: in_column,
        })
    }

    /// The rows of `batch` whose values hash as a wanted row's do;
    /// `None` when they cannot be hashed.
    fn candidates(&self, batch: &RecordBatch) -> Option<Vec<u32>> {
        let among = |hashes: Vec<u64>, wanted: &HashSet<u64, RandomState>| {
            (0u32..)
                .zip(hashes)
                .filter(|(_, h)| wanted.contains(h))
                .map(|(i, _)| i)
                .collect::<Vec<u32>>()
        };
        let Some((index, in_column)) = &self.column else {
            return Some(among(value_hashes(batch.columns())?, &self.rows));
        };
        let rows = among(
            value_hashes(batch.columns().get(*index..=*index)?)?,
            in_column,
        );
        if rows.is_empty() {
            return Some(rows);
        }
        // A column that passes over few rows (a status, a tenant) is not
        // worth copying the rest for.
        if rows.len() * 2 > batch.num_rows() {
            return Some(among(value_hashes(batch.columns())?, &self.rows));
        }
        let picked = rows_at(batch, &rows).ok()?;
        let whole = among(value_hashes(picked.columns())?, &self.rows);
        Some(whole.into_iter().map(|i| rows[i as usize]).collect())
    }
}

/// Equal values hash alike in every batch: one fixed state.
const VALUE_HASHES: ValueHashState = ValueHashState::with_seed(0);

/// Each row's hash of its values, as DataFusion's hash joins make it;
/// `None` for a column type it does not hash.
fn value_hashes(columns: &[ArrayRef]) -> Option<Vec<u64>> {
    let mut hashes = vec![0; columns.first().map_or(0, |c| c.len())];
    create_hashes(columns, &VALUE_HASHES, &mut hashes).ok()?;
    Some(hashes)
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
            wanted: HashMap::default(),
            hashes: Hashes::of(wanted),
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
        let mut keep = vec![true; batch.num_rows()];
        let candidates = self
            .hashes
            .as_ref()
            .and_then(|wanted| wanted.candidates(batch));
        match candidates {
            Some(candidates) if candidates.is_empty() => {}
            Some(candidates) => {
                let rows = self
                    .converter
                    .convert_columns(rows_at(batch, &candidates)?.columns())?;
                for (row, at) in rows.iter().zip(candidates) {
                    if self.take(row) {
                        keep[at as usize] = false;
                    }
                }
            }
            None => {
                let rows = self.converter.convert_columns(batch.columns())?;
                for (row, keep) in rows.iter().zip(&mut keep) {
                    *keep = !self.take(row);
                }
            }
        }
        Ok(BooleanArray::from(keep))
    }

    /// Takes one wanted copy of `row`, if one is left.
    fn take(&mut self, row: Row<'_>) -> bool {
        let Some(index) = self.wanted.get_mut(row.as_ref()).and_then(Vec::pop) else {
            return false;
        };
        self.found.push(index);
        self.left -= 1;
        true
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

    /// Indices of the wanted rows found so far, in the order they were
    /// found: those one [`take_from`](Self::take_from) found are the rows
    /// its mask leaves out, in order.
    pub fn found_in_order(&self) -> &[u32] {
        &self.found
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

/// Above this many rows, [`bounds_of`] gives up: it compares value by
/// value, and a change of that many rows reads most row groups anyway.
const BOUNDED_ROWS: usize = 4096;

/// A predicate that every row of `rows` satisfies, for a store to rule out
/// with its statistics the row groups that cannot hold any of them (where
/// [`RowMatcher`] would look for them): `c >= smallest AND c <= largest`
/// for each column with no NULL among `rows` and of a type whose Parquet
/// statistics bound every value (integers, strings, dates, timestamps,
/// decimals; not floating point, whose statistics leave NaN out). `None`
/// when no column qualifies, or there are more than 4,096 rows.
pub fn bounds_of(rows: &RecordBatch) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    if rows.num_rows() == 0 || rows.num_rows() > BOUNDED_ROWS {
        return Ok(None);
    }
    let schema = rows.schema();
    let mut bounds: Option<Arc<dyn PhysicalExpr>> = None;
    for (field, column) in schema.fields().iter().zip(rows.columns()) {
        let bounded = matches!(
            field.data_type(),
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(_, _)
                | DataType::Decimal128(_, _)
                | DataType::Decimal256(_, _)
        );
        if !bounded || column.null_count() > 0 {
            continue;
        }
        let Some((low, high)) = value_range(std::slice::from_ref(column))? else {
            continue;
        };
        let column = col(field.name(), &schema)?;
        let within = between(column, low, high);
        bounds = Some(match bounds {
            Some(before) => Arc::new(BinaryExpr::new(before, Operator::And, within)),
            None => within,
        });
    }
    Ok(bounds)
}

/// The smallest and largest value among `arrays` (NULL counting as the
/// smallest); `None` when they hold no value.
pub fn value_range(arrays: &[ArrayRef]) -> Result<Option<(ScalarValue, ScalarValue)>> {
    let mut range: Option<(ScalarValue, ScalarValue)> = None;
    for array in arrays {
        for row in 0..array.len() {
            let value = ScalarValue::try_from_array(array, row)?;
            range = Some(match range {
                None => (value.clone(), value),
                Some((low, high)) if value < low => (value, high),
                Some((low, high)) if value > high => (low, value),
                Some(range) => range,
            });
        }
    }
    Ok(range)
}

/// `column >= low AND column <= high`, or `column = low` when they are
/// the same value: the one comparison a store selecting rows by it meets
/// first, and the one that keeps least (`>=` alone keeps half a row group).
pub fn between(
    column: Arc<dyn PhysicalExpr>,
    low: ScalarValue,
    high: ScalarValue,
) -> Arc<dyn PhysicalExpr> {
    if low == high {
        return Arc::new(BinaryExpr::new(column, Operator::Eq, lit(low)));
    }
    let at_least = BinaryExpr::new(Arc::clone(&column), Operator::GtEq, lit(low));
    let at_most = BinaryExpr::new(column, Operator::LtEq, lit(high));
    Arc::new(BinaryExpr::new(
        Arc::new(at_least),
        Operator::And,
        Arc::new(at_most),
    ))
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

    /// `wanted` taken from `stored` by a matcher hashing values first and
    /// by one encoding every row, which must keep and find the same rows:
    /// the mask, and the matcher hashing values.
    fn both_ways(wanted: &RecordBatch, stored: &RecordBatch) -> (BooleanArray, RowMatcher) {
        let mut hashed = RowMatcher::new(std::slice::from_ref(wanted)).unwrap();
        assert!(hashed.hashes.is_some());
        let mut encoded = RowMatcher::new(std::slice::from_ref(wanted)).unwrap();
        encoded.hashes = None;
        let keep = hashed.take_from(stored).unwrap();
        assert_eq!(keep, encoded.take_from(stored).unwrap());
        assert_eq!(hashed.found(), encoded.found());
        (keep, hashed)
    }

    #[test]
    fn hashing_values_first_finds_what_encoding_every_row_finds() {
        use datafusion::arrow::array::{Array, Float64Array};
        let floats = |values: &[Option<f64>]| {
            let schema = Arc::new(Schema::new(vec![Field::new("f", DataType::Float64, true)]));
            let column: Arc<dyn Array> = Arc::new(Float64Array::from(values.to_vec()));
            RecordBatch::try_new(schema, vec![column]).unwrap()
        };
        // -0.0 and 0.0, NaN, NULL: equal to themselves only, both ways.
        let stored = floats(&[Some(0.0), Some(-0.0), Some(f64::NAN), None, Some(1.5), None]);
        let wanted = floats(&[Some(-0.0), Some(f64::NAN), None, Some(2.5)]);
        let (keep, hashed) = both_ways(&wanted, &stored);
        assert!(hashed.hashes.as_ref().unwrap().column.is_none());
        assert_eq!(
            keep,
            BooleanArray::from(vec![true, false, false, false, true, true])
        );
        assert_eq!(hashed.missing(), [3]);
        // Rows of two columns, a NULL among them, many stored rows.
        let many: Vec<(i64, Option<&str>)> = (0..1000)
            .map(|i| (i % 10, if i % 3 == 0 { None } else { Some("a") }))
            .collect();
        let stored = batch(&many);
        let wanted = batch(&[(3, None), (3, None), (4, Some("a")), (11, Some("a"))]);
        let (keep, hashed) = both_ways(&wanted, &stored);
        assert!(hashed.hashes.as_ref().unwrap().column.is_some());
        assert_eq!(keep.false_count(), 3);
        assert_eq!(hashed.missing(), [3]);
        // The column looked at first holds floats: equal to themselves
        // only there too.
        let pairs = |values: &[(Option<f64>, &str)]| {
            let schema = Arc::new(Schema::new(vec![
                Field::new("f", DataType::Float64, true),
                Field::new("s", DataType::Utf8, true),
            ]));
            let floats: Vec<Option<f64>> = values.iter().map(|(f, _)| *f).collect();
            let texts: Vec<&str> = values.iter().map(|(_, s)| *s).collect();
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Float64Array::from(floats)),
                    Arc::new(StringArray::from(texts)),
                ],
            )
            .unwrap()
        };
        let stored = pairs(&[
            (Some(0.0), "a"),
            (Some(-0.0), "a"),
            (Some(f64::NAN), "b"),
            (None, "c"),
            (Some(-0.0), "b"),
        ]);
        let wanted = pairs(&[
            (Some(-0.0), "a"),
            (Some(f64::NAN), "b"),
            (None, "c"),
            (None, "d"),
        ]);
        let (keep, hashed) = both_ways(&wanted, &stored);
        assert!(hashed.hashes.as_ref().unwrap().column.is_some());
        assert_eq!(
            keep,
            BooleanArray::from(vec![true, false, false, false, true])
        );
        assert_eq!(hashed.missing(), [3]);
    }

    #[test]
    fn bounds_cover_every_row_and_leave_out_nulls_and_floats() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
            Field::new("note", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![7, -2, 5])),
                Arc::new(StringArray::from(vec!["b", "a", "c"])),
                Arc::new(datafusion::arrow::array::Float64Array::from(vec![
                    f64::NAN,
                    1.0,
                    -0.0,
                ])),
                Arc::new(StringArray::from(vec![Some("n"), None, Some("m")])),
            ],
        )
        .unwrap();
        let bounds = bounds_of(&batch).unwrap().expect("bounds").to_string();
        assert!(
            bounds.contains("id@0 >= -2") && bounds.contains("id@0 <= 7"),
            "{bounds}"
        );
        assert!(
            bounds.contains("name@1 >= a") && bounds.contains("name@1 <= c"),
            "{bounds}"
        );
        assert!(
            !bounds.contains("x@2") && !bounds.contains("note@3"),
            "{bounds}"
        );
        // Every row satisfies them.
        let within = bounds_of(&batch)
            .unwrap()
            .unwrap()
            .evaluate(&batch)
            .unwrap()
            .into_array(3)
            .unwrap();
        assert_eq!(
            within
                .as_any()
                .downcast_ref::<BooleanArray>()
                .unwrap()
                .true_count(),
            3
        );
        // One row: each column equals its value.
        let one = bounds_of(&batch.slice(1, 1))
            .unwrap()
            .expect("bounds")
            .to_string();
        assert!(
            one.contains("id@0 = ") && one.contains("name@1 = a") && !one.contains(">="),
            "{one}"
        );
        // No rows, or too many to compare one by one: no bounds.
        assert!(bounds_of(&batch.slice(0, 0)).unwrap().is_none());
        let many = Int64Array::from((0..BOUNDED_ROWS as i64 + 1).collect::<Vec<_>>());
        let wide = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
            vec![Arc::new(many)],
        )
        .unwrap();
        assert!(bounds_of(&wide).unwrap().is_none());
    }
}
