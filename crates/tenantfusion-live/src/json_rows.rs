//! JSON messages to Arrow rows in a source's schema, shared by the sources
//! whose upstreams speak JSON (WebSocket, STOMP, REST).
//!
//! A message goes straight through arrow-json's [`Decoder`], which reads
//! the bytes onto its tape and builds the columns from it: no
//! `serde_json::Value` tree per message. A message is objects (one, or
//! several separated by whitespace: NDJSON) or arrays of objects; the
//! decoder reads a stream of objects as rows, and arrays through a second
//! decoder that takes each as one list of rows. Either way a message is
//! all or nothing: a row that does not fit the schema makes the whole
//! message malformed, and nothing of it is delivered. Read from their text,
//! numbers fill columns as they did when messages were parsed into values
//! first, with one difference: a timestamp written with a fraction
//! (`1.7e15`) is taken where the parsed value (an `f64`) was refused.

use std::sync::Arc;

use crate::error::{LiveError, Result};
use arrow::array::{Array, AsArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::error::ArrowError;
use arrow::json::reader::{Decoder, ReaderBuilder};
use arrow::record_batch::RecordBatch;
use serde_json::Value;

use crate::source::Upstream;

/// Rows the decoder takes before it wants a flush. It allocates its tape
/// for this many up front, per connection; longer messages are decoded in
/// several flushes and put together.
const BATCH_ROWS: usize = 128;

type Decoded = std::result::Result<Vec<RecordBatch>, ArrowError>;

/// Decodes JSON objects (or arrays of them) whose keys are column names.
pub(crate) struct JsonRows {
    schema: SchemaRef,
    /// Reads objects, each a row.
    objects: Decoder,
    /// Reads arrays, each a list of rows (made at the first array).
    arrays: Option<Decoder>,
}

impl std::fmt::Debug for JsonRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonRows")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

fn objects(schema: &SchemaRef) -> Result<Decoder> {
    ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(BATCH_ROWS)
        .build_decoder()
        .map_err(|e| LiveError::SchemaMismatch(format!("cannot decode JSON into the schema: {e}")))
}

fn arrays(schema: &SchemaRef) -> Result<Decoder> {
    let row = Field::new("row", DataType::Struct(schema.fields().clone()), true);
    let rows = Field::new("rows", DataType::List(Arc::new(row)), false);
    ReaderBuilder::new_with_field(rows)
        .with_batch_size(BATCH_ROWS)
        .build_decoder()
        .map_err(|e| LiveError::SchemaMismatch(format!("cannot decode JSON into the schema: {e}")))
}

impl JsonRows {
    /// A decoder for `schema`; `SCHEMA_MISMATCH` for types JSON cannot fill.
    pub(crate) fn new(schema: &SchemaRef) -> Result<Self> {
        Ok(Self {
            schema: Arc::clone(schema),
            objects: objects(schema)?,
            arrays: None,
        })
    }

    /// The rows of one message: objects (NDJSON: one or more, separated by
    /// whitespace) or arrays of objects. Anything that is not JSON or does
    /// not fit the schema is `Malformed`; nothing of it is delivered.
    pub(crate) fn decode(&mut self, bytes: &[u8]) -> Upstream {
        if !nesting_within(bytes, MAX_DEPTH) {
            return Upstream::Malformed(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let decoded = match first_byte(bytes) {
            None => return Upstream::Malformed("an empty message".into()),
            Some(b'[') => self.decode_arrays(bytes),
            Some(_) => read_all(&mut self.objects, bytes),
        };
        self.rows(decoded)
    }

    /// The rows of several messages that were waiting together: one batch
    /// for all of them when each is objects and every row fits (one flush
    /// instead of one per message), else each message's own result, in
    /// order, exactly as [`decode`](Self::decode) gives it.
    pub(crate) fn decode_each(&mut self, messages: &[&[u8]]) -> Vec<Upstream> {
        if let Some(batch) = self.decode_together(messages) {
            return vec![Upstream::Rows(batch)];
        }
        messages
            .iter()
            .map(|message| self.decode(message))
            .collect()
    }

    /// [`decode_each`](Self::decode_each)'s one batch, or `None` (the
    /// decoder clean) when any message is not objects or does not decode.
    fn decode_together(&mut self, messages: &[&[u8]]) -> Option<RecordBatch> {
        let objects_only = messages
            .iter()
            .all(|m| first_byte(m) == Some(b'{') && nesting_within(m, MAX_DEPTH));
        if !objects_only {
            return None;
        }
        let mut batches = Vec::new();
        let fed = messages.iter().try_for_each(|message| {
            feed(&mut self.objects, message, &mut batches)?;
            // Each message is whole on its own: one cut short must not be
            // completed by the next.
            match self.objects.has_partial_record() {
                true => Err(ArrowError::JsonError("a message cut short".into())),
                false => Ok(()),
            }
        });
        let batch = fed
            .and_then(|()| self.objects.flush())
            .and_then(|last| self.one_batch(batches.into_iter().chain(last).collect()));
        match batch {
            Ok(batch) => Some(batch),
            Err(_) => {
                // The messages are decoded one by one, by a fresh decoder.
                self.reset().ok()?;
                None
            }
        }
    }

    /// One object is one row; an array holds rows. Anything that does not
    /// fit the schema is `Malformed`; nothing of it is delivered.
    pub(crate) fn decode_value(&mut self, value: Value) -> Upstream {
        let rows = match value {
            Value::Object(_) => vec![value],
            Value::Array(rows) => rows,
            other => {
                return Upstream::Malformed(format!("expected an object or an array, got {other}"));
            }
        };
        let decoded = self
            .objects
            .serialize(&rows)
            .and_then(|()| self.objects.flush())
            .map(|batch| batch.into_iter().collect());
        self.rows(decoded)
    }

    /// Arrays of objects: each array is read as one list, whose items are
    /// the rows.
    fn decode_arrays(&mut self, bytes: &[u8]) -> Decoded {
        let decoder = match &mut self.arrays {
            Some(decoder) => decoder,
            None => self
                .arrays
                .insert(arrays(&self.schema).map_err(|e| ArrowError::JsonError(e.to_string()))?),
        };
        let lists = read_all(decoder, bytes)?;
        lists
            .iter()
            .map(|batch| {
                let list = batch.column(0).as_list::<i32>();
                let offsets = list.value_offsets();
                let (first, last) = (offsets[0] as usize, offsets[list.len()] as usize);
                let items = list.values().slice(first, last - first);
                let items = items.as_struct();
                if items.null_count() > 0 {
                    return Err(ArrowError::JsonError("a row that is not an object".into()));
                }
                RecordBatch::try_new(Arc::clone(&self.schema), items.columns().to_vec())
            })
            .collect()
    }

    /// The one batch of a decoded message, or why it is malformed.
    fn rows(&mut self, decoded: Decoded) -> Upstream {
        match decoded.and_then(|batches| self.one_batch(batches)) {
            Ok(batch) => Upstream::Rows(batch),
            Err(e) => {
                // A failed decode may leave rows half-buffered.
                if let Err(e) = self.reset() {
                    return Upstream::Malformed(e.to_string());
                }
                Upstream::Malformed(bounded(format!("not JSON rows of the schema: {e}")))
            }
        }
    }

    /// `batches` as one batch of the schema.
    fn one_batch(&self, batches: Vec<RecordBatch>) -> std::result::Result<RecordBatch, ArrowError> {
        match batches.as_slice() {
            [] => Ok(RecordBatch::new_empty(Arc::clone(&self.schema))),
            [one] => Ok(one.clone()),
            many => concat_batches(&self.schema, many),
        }
    }

    /// Fresh decoders: what a failed decode left half-buffered is gone.
    fn reset(&mut self) -> Result<()> {
        self.arrays = None;
        self.objects = objects(&self.schema)?;
        Ok(())
    }
}

/// The first byte of `bytes` that is not whitespace.
fn first_byte(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// Arrays and objects nested deeper than this are refused before decoding:
/// the decoder reads any depth, but describes a value it refuses by
/// printing it recursively, and a value nested a million deep overflows
/// the stack (the process aborts). 128, as serde_json's parser allows.
const MAX_DEPTH: usize = 128;

/// The longest reason kept for a malformed message: the decoder's error
/// quotes the value it refused, which may be the whole message.
const MAX_REASON: usize = 256;

/// Whether arrays and objects in `bytes` nest no deeper than `limit`
/// (brackets inside strings do not count). One pass; strings are skipped
/// to their closing quote.
fn nesting_within(bytes: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => loop {
                // The next quote or backslash in the string; an escape
                // takes the byte after it.
                let Some(found) = bytes
                    .get(at + 1..)
                    .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                else {
                    // Unterminated: the decoder reports it.
                    return true;
                };
                at += 1 + found;
                if bytes[at] == b'"' {
                    break;
                }
                at += 1;
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    true
}

/// `reason` cut to [`MAX_REASON`] bytes (at a character boundary).
fn bounded(mut reason: String) -> String {
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    reason
}

/// Every value in `bytes` through `decoder`, a batch per [`BATCH_ROWS`]
/// values (the decoder stops there and wants a flush).
fn read_all(decoder: &mut Decoder, bytes: &[u8]) -> Decoded {
    let mut batches = Vec::new();
    feed(decoder, bytes, &mut batches)?;
    batches.extend(decoder.flush()?);
    Ok(batches)
}

/// Every value in `bytes` into `decoder`, each full batch flushed into
/// `batches`; the rows after the last full batch stay in the decoder.
fn feed(
    decoder: &mut Decoder,
    mut bytes: &[u8],
    batches: &mut Vec<RecordBatch>,
) -> std::result::Result<(), ArrowError> {
    loop {
        let read = decoder.decode(bytes)?;
        bytes = &bytes[read..];
        if bytes.is_empty() {
            return Ok(());
        }
        // The decoder stopped at a full batch, at a row's end.
        let flushed = decoder.flush()?;
        if read == 0 && flushed.is_none() {
            // Not reached: the decoder reads on after a flush. A loop that
            // could spin forever is cut off instead.
            return Err(ArrowError::JsonError("the decoder stopped reading".into()));
        }
        batches.extend(flushed);
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use proptest::prelude::*;

    use super::*;
    use crate::generator::tick_schema;

    /// JSON an upstream might send: objects keyed mostly by the tick
    /// schema's columns, with values of every JSON type, nested.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,10}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let key = prop_oneof![
                Just("topic".to_string()),
                Just("seq".to_string()),
                Just("price".to_string()),
                Just("volume".to_string()),
                Just("ts".to_string()),
                "[a-z]{1,4}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(key, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(tenantfusion_test_support::fuzz_cases(256)))]

        /// Whatever arrives is rows or counted as malformed, never a panic,
        /// and a good message decodes right after it.
        #[test]
        fn any_message_is_rows_or_malformed_and_leaves_the_decoder_clean(
            value in json(),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut rows = JsonRows::new(&tick_schema()).unwrap();
            if let Upstream::Rows(batch) = rows.decode(value.to_string().as_bytes()) {
                prop_assert_eq!(batch.schema(), tick_schema());
            }
            let _ = rows.decode(&noise);
            let good = br#"{"topic":"A","seq":1,"price":1.5,"volume":2,"ts":10}"#;
            prop_assert!(matches!(rows.decode(good), Upstream::Rows(b) if b.num_rows() == 1));
        }
    }

    /// Objects shaped like ticks, mostly fitting the schema: each column's
    /// value in the forms an upstream might use (and some it should not),
    /// in any key order, with an unknown key now and then.
    fn tick() -> impl Strategy<Value = Value> {
        let number = || {
            prop_oneof![
                4 => any::<u32>().prop_map(Value::from),
                1 => any::<i64>().prop_map(Value::from),
                1 => (-1e6f64..1e6).prop_map(Value::from),
                1 => Just(Value::from("12")),
            ]
        };
        (
            "[A-Z]{1,3}",
            number(),
            prop_oneof![(-1e9f64..1e9).prop_map(Value::from), number()],
            number(),
            prop_oneof![
                number(),
                Just(Value::from("2026-12-08T10:00:00Z")),
                Just(Value::from("yesterday")),
            ],
            proptest::option::of(("[a-z]{1,4}", number())),
        )
            .prop_map(|(topic, seq, price, volume, ts, extra)| {
                let mut object = serde_json::Map::new();
                if let Some((key, value)) = extra {
                    object.insert(key, value);
                }
                object.insert("ts".into(), ts);
                object.insert("topic".into(), topic.into());
                object.insert("volume".into(), volume);
                object.insert("seq".into(), seq);
                object.insert("price".into(), price);
                Value::Object(object)
            })
    }

    fn fractional_ts(value: &Value) -> bool {
        match value {
            Value::Array(rows) => rows.iter().any(fractional_ts),
            row => row["ts"].is_f64(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(tenantfusion_test_support::fuzz_cases(256)))]

        /// The decoder's own reading of objects gives what the parsed
        /// values gave: the same rows, or malformed both ways.
        #[test]
        fn objects_read_from_bytes_decode_as_their_parsed_values(
            values in proptest::collection::vec(prop_oneof![
                3 => tick(),
                1 => proptest::collection::vec(tick(), 0..4).prop_map(Value::Array),
                1 => json(),
            ], 1..4),
        ) {
            let text: Vec<String> = values.iter().map(Value::to_string).collect();
            let mut direct = JsonRows::new(&tick_schema()).unwrap();
            let mut parsed = JsonRows::new(&tick_schema()).unwrap();
            // One message per value.
            for (value, text) in values.iter().zip(&text) {
                let a = direct.decode(text.as_bytes());
                let b = parsed.decode_value(value.clone());
                match (a, b) {
                    (Upstream::Rows(a), Upstream::Rows(b)) => prop_assert_eq!(a, b),
                    (Upstream::Malformed(_), Upstream::Malformed(_)) => {}
                    // The one difference: a timestamp written with a
                    // fraction is read from its text; as a parsed value
                    // (an f64) the decoder refuses it.
                    (Upstream::Rows(_), Upstream::Malformed(_)) if fractional_ts(value) => {}
                    (a, b) => prop_assert!(false, "{text}: {a:?} vs {b:?}"),
                }
            }
        }
    }

    fn ticks(n: usize) -> String {
        (0..n)
            .map(|i| {
                format!(
                    r#"{{"topic":"T{}","seq":{i},"price":1.5,"volume":2,"ts":10}}"#,
                    i % 7
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn ndjson_decodes_every_object_past_the_decoders_batch_size() {
        let mut rows = JsonRows::new(&tick_schema()).unwrap();
        let Upstream::Rows(batch) = rows.decode(ticks(3_000).as_bytes()) else {
            panic!("3,000 objects are rows");
        };
        assert_eq!(batch.num_rows(), 3_000);
        let seq = batch
            .column(1)
            .as_primitive::<arrow::datatypes::UInt64Type>()
            .values()
            .to_vec();
        assert_eq!(seq, (0..3_000).collect::<Vec<u64>>());
        // Objects side by side with no separator are a stream too.
        let packed = ticks(2).replace('\n', "");
        assert!(matches!(rows.decode(packed.as_bytes()), Upstream::Rows(b) if b.num_rows() == 2));
    }

    #[test]
    fn a_bad_row_anywhere_in_a_stream_refuses_it_whole() {
        let mut rows = JsonRows::new(&tick_schema()).unwrap();
        let good = ticks(2_000);
        for bad in [
            // A row past the first flush that does not fit.
            format!("{good}\n{{\"topic\":\"A\",\"seq\":\"x\"}}"),
            // Garbage after good rows.
            format!("{good}\n}}"),
            // Cut off in the middle of an object.
            format!("{good}\n{{\"topic\":\"A\",\"se"),
            // Not an object.
            format!("{good}\n42"),
            "   \n\t ".to_string(),
            String::new(),
        ] {
            assert!(
                matches!(rows.decode(bad.as_bytes()), Upstream::Malformed(_)),
                "{}",
                &bad[bad.len().saturating_sub(40)..]
            );
            // Nothing of it is left in the decoder.
            assert!(
                matches!(rows.decode(ticks(1).as_bytes()), Upstream::Rows(b) if b.num_rows() == 1)
            );
        }
    }

    #[test]
    fn messages_waiting_together_decode_as_one_batch_or_each_on_its_own() {
        let mut rows = JsonRows::new(&tick_schema()).unwrap();
        let tick =
            |seq: u64| format!(r#"{{"topic":"A","seq":{seq},"price":1.5,"volume":2,"ts":10}}"#);
        let seqs = |event: &Upstream| match event {
            Upstream::Rows(batch) => Some(
                batch
                    .column(1)
                    .as_primitive::<arrow::datatypes::UInt64Type>()
                    .values()
                    .to_vec(),
            ),
            _ => None,
        };
        // 300 one-row messages, past a flush of 128 rows: one batch.
        let many: Vec<String> = (0..300).map(tick).collect();
        let refs: Vec<&[u8]> = many.iter().map(|m| m.as_bytes()).collect();
        let events = rows.decode_each(&refs);
        assert_eq!(events.len(), 1);
        assert_eq!(seqs(&events[0]), Some((0..300).collect()));
        // A row that does not fit: each message on its own, the others'
        // rows delivered.
        let bad = r#"{"topic":"A","seq":"x"}"#.to_string();
        let events = rows.decode_each(&[tick(1).as_bytes(), bad.as_bytes(), tick(2).as_bytes()]);
        let got: Vec<Option<Vec<u64>>> = events.iter().map(seqs).collect();
        assert_eq!(got, [Some(vec![1]), None, Some(vec![2])]);
        // One message cut short is not completed by the next.
        let whole = tick(3);
        let (head, tail) = whole.split_at(20);
        let events = rows.decode_each(&[head.as_bytes(), tail.as_bytes()]);
        assert!(
            events.iter().all(|e| matches!(e, Upstream::Malformed(_))),
            "{events:?}"
        );
        // Arrays, NDJSON and objects mixed: each on its own, as decode does.
        let array = format!("[{},{}]", tick(4), tick(5));
        let ndjson = format!("{}\n{}", tick(6), tick(7));
        let events = rows.decode_each(&[array.as_bytes(), tick(8).as_bytes()]);
        let got: Vec<Option<Vec<u64>>> = events.iter().map(seqs).collect();
        assert_eq!(got, [Some(vec![4, 5]), Some(vec![8])]);
        let events = rows.decode_each(&[ndjson.as_bytes(), tick(9).as_bytes()]);
        assert_eq!(seqs(&events[0]), Some(vec![6, 7, 9]));
        // And the decoder is clean after all of it.
        assert_eq!(seqs(&rows.decode(tick(10).as_bytes())), Some(vec![10]));
    }

    #[test]
    fn nesting_is_counted_outside_strings() {
        assert!(nesting_within(b"[[{}]]", 3));
        assert!(!nesting_within(b"[[{}]]", 2));
        assert!(nesting_within(br#"{"a":"[[[[{{{{"}"#, 1));
        // An escaped quote does not end the string; an escaped backslash
        // before the closing quote does not hide it.
        assert!(nesting_within(br#"{"a":"\"[[[["}"#, 1));
        assert!(!nesting_within(br#"{"a":"\\",[["#, 2));
        // Cut off inside a string or an escape: left to the decoder.
        assert!(nesting_within(br#"{"a":"[[["#, 1));
        assert!(nesting_within(br#"{"a":"\"#, 1));
        assert!(nesting_within(b"", 0));
    }

    #[test]
    fn arrays_of_objects_decode_as_rows_and_anything_else_in_them_is_refused() {
        let mut rows = JsonRows::new(&tick_schema()).unwrap();
        let array = |n: usize| format!("[{}]", ticks(n).replace('\n', ","));
        let count = |rows: &mut JsonRows, text: &str| match rows.decode(text.as_bytes()) {
            Upstream::Rows(batch) => Some(batch.num_rows()),
            Upstream::Malformed(_) => None,
            other => panic!("{other:?}"),
        };
        assert_eq!(count(&mut rows, &array(3_000)), Some(3_000));
        assert_eq!(count(&mut rows, "[]"), Some(0));
        // Arrays one after another, past the decoder's batch of values.
        let many = (0..300).map(|_| array(2)).collect::<Vec<_>>().join("\n");
        assert_eq!(count(&mut rows, &many), Some(600));
        let good = array(2);
        for bad in [
            "[null]".to_string(),
            "[1, 2]".to_string(),
            format!("[{}, null]", ticks(1)),
            format!("{good}{{\"topic\":\"A\"}}"),
            format!("{good} 7"),
            "[[]]".to_string(),
            good[..good.len() - 1].to_string(),
        ] {
            assert_eq!(count(&mut rows, &bad), None, "{bad}");
            assert_eq!(count(&mut rows, &good), Some(2));
        }
        // Nesting a million deep, where a row or a value belongs, or under
        // a key not in the schema: refused, not a stack overflow (the
        // decoder quotes a value it refuses by printing it recursively).
        let deep = |open: &str, close: &str, n| format!("{}1{}", open.repeat(n), close.repeat(n));
        assert_eq!(count(&mut rows, &deep("[", "]", 1_000_000)), None);
        let nested = format!(r#"{{"topic":{}}}"#, deep("[", "]", 1_000_000));
        assert_eq!(count(&mut rows, &nested), None);
        let under_x = |n| ticks(1).replace('{', &format!(r#"{{"x":{},"#, deep(r#"{"a":"#, "}", n)));
        assert_eq!(count(&mut rows, &under_x(1_000_000)), None);
        assert_eq!(count(&mut rows, &under_x(MAX_DEPTH - 1)), Some(1));
        assert_eq!(count(&mut rows, &under_x(MAX_DEPTH)), None);
        // The reason quotes the value it refused, cut short.
        let Upstream::Malformed(why) =
            rows.decode(format!(r#"{{"topic":{}}}"#, deep("[", "]", 100)).as_bytes())
        else {
            panic!("a list is not a topic");
        };
        assert!(why.len() <= MAX_REASON + 3, "{why}");
        // An object stream that meets an array is refused too.
        assert_eq!(count(&mut rows, &format!("{}\n{good}", ticks(1))), None);
    }

    #[test]
    fn objects_and_arrays_decode_and_bad_rows_are_refused_whole() {
        let mut rows = JsonRows::new(&tick_schema()).unwrap();
        let one = br#"{"topic":"A","seq":1,"price":1.5,"volume":2,"ts":10}"#;
        assert!(matches!(rows.decode(one), Upstream::Rows(b) if b.num_rows() == 1));
        let two = br#"[{"topic":"A","seq":2,"price":1.5,"volume":2,"ts":10},{"topic":"B","seq":1,"price":2.5,"volume":3,"ts":11}]"#;
        assert!(matches!(rows.decode(two), Upstream::Rows(b) if b.num_rows() == 2));
        // A good row beside a bad one: nothing is delivered.
        let mixed =
            br#"[{"topic":"A","seq":3,"price":1.5,"volume":2,"ts":10},{"topic":"B","seq":"x"}]"#;
        assert!(matches!(rows.decode(mixed), Upstream::Malformed(_)));
        assert!(matches!(rows.decode(b"nope"), Upstream::Malformed(_)));
        assert!(matches!(rows.decode(b"42"), Upstream::Malformed(_)));
        // And the decoder is clean afterwards.
        assert!(matches!(rows.decode(one), Upstream::Rows(b) if b.num_rows() == 1));
    }
}
