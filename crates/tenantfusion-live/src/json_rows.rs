//! JSON messages to Arrow rows in a source's schema, shared by the sources
//! whose upstreams speak JSON (WebSocket, STOMP).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::reader::{Decoder, ReaderBuilder};
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::Value;
use tenantfusion_core::{Result, TenantError};

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
        .map_err(|e| {
            TenantError::SchemaMismatch(format!("cannot decode JSON into the schema: {e}"))
        })
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
    use super::*;
    use crate::generator::tick_schema;

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
