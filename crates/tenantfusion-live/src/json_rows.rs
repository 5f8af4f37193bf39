//! JSON messages to Arrow rows in a source's schema, shared by the sources
//! whose upstreams speak JSON (WebSocket, STOMP).

use std::sync::Arc;

use crate::error::{LiveError, Result};
use arrow::datatypes::SchemaRef;
use arrow::json::reader::{Decoder, ReaderBuilder};
use arrow::record_batch::RecordBatch;
use serde_json::Value;

use crate::source::Upstream;

/// Decodes JSON objects (or arrays of them) whose keys are column names.
pub(crate) struct JsonRows {
    schema: SchemaRef,
    decoder: Decoder,
}

impl std::fmt::Debug for JsonRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonRows")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

fn decoder(schema: &SchemaRef) -> Result<Decoder> {
    ReaderBuilder::new(Arc::clone(schema))
        .build_decoder()
        .map_err(|e| LiveError::SchemaMismatch(format!("cannot decode JSON into the schema: {e}")))
}

impl JsonRows {
    /// A decoder for `schema`; `SCHEMA_MISMATCH` for types JSON cannot fill.
    pub(crate) fn new(schema: &SchemaRef) -> Result<Self> {
        Ok(Self {
            schema: Arc::clone(schema),
            decoder: decoder(schema)?,
        })
    }

    /// Parses `bytes` as JSON, then as rows.
    pub(crate) fn decode(&mut self, bytes: &[u8]) -> Upstream {
        match serde_json::from_slice(bytes) {
            Ok(value) => self.decode_value(value),
            Err(e) => Upstream::Malformed(format!("not JSON: {e}")),
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
            .decoder
            .serialize(&rows)
            .and_then(|()| self.decoder.flush());
        match decoded {
            Ok(Some(batch)) => Upstream::Rows(batch),
            Ok(None) => Upstream::Rows(RecordBatch::new_empty(Arc::clone(&self.schema))),
            Err(e) => {
                // A failed decode may leave rows half-buffered: start afresh.
                match decoder(&self.schema) {
                    Ok(fresh) => self.decoder = fresh,
                    Err(e) => return Upstream::Malformed(e.to_string()),
                }
                Upstream::Malformed(format!("rows do not fit the schema: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
