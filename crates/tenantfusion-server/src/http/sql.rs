//! `POST /v1/sql`: one statement, its answer as JSON or an Arrow IPC stream.
//!
//! ```text
//! POST /v1/sql
//! {"sql": "SELECT id, body FROM app.notes WHERE id > $1", "params": [10]}
//!
//! 200 {"columns": [{"name": "id", "type": "int8"}, {"name": "body", "type": "text"}],
//!      "rows": [[11, "hi"], [12, null]], "row_count": 2, "took_ms": 0.41}
//! ```
//!
//! One statement per request (`;`-separated text is refused: a request is
//! its own transaction, as each statement is). With `params`, the
//! statement is prepared (once per user and text, see `prepared`) and
//! `$1, $2, ...` take the values, each cast to
//! the type the statement gives its parameter (JSON strings are parsed as
//! that type, so `"2026-01-01"` fits a timestamp). `INSERT`, `UPDATE` and
//! `DELETE` answer with no columns and the changed rows' count in
//! `row_count`; DDL with 0.
//!
//! Values are JSON's where JSON has them (numbers, booleans, strings,
//! null; 64-bit integers beyond 2^53 lose precision in JavaScript, as with
//! every JSON API) and text otherwise (timestamps, decimals, intervals, as
//! arrow-json writes them). The `type` of a column is its PostgreSQL type
//! name, as psql would show it. With `Accept:
//! application/vnd.apache.arrow.stream` the answer is the statement's
//! record batches as an Arrow IPC stream, types exact.
//!
//! The whole answer is held until the statement completes (its status
//! depends on that), so it is bounded by `max_result_bytes`: a query
//! whose rows would need more fails with `RESOURCES_EXHAUSTED` (429);
//! stream large results over pgwire.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use datafusion::arrow::array::{Array, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::writer::{EncoderOptions, NullableEncoder, make_encoder};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use futures::StreamExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tenantfusion::Query;
use tenantfusion_core::{TenantError, UserContext};

use super::{Answer, ApiError, Http, auth, body, json};
use crate::figures::{self, Protocol};
use crate::statements::{Kind, split};

/// The media type of an Arrow IPC stream.
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// What a client posts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Statement {
    sql: String,
    #[serde(default)]
    params: Vec<serde_json::Value>,
}

/// A column of a JSON answer.
#[derive(Debug, Serialize)]
pub(super) struct Column<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    data_type: String,
}

/// `POST /v1/sql`.
pub(super) async fn post(http: &Http, request: Request<Incoming>) -> Result<Answer, ApiError> {
    let started = Instant::now();
    let caller = auth::required(http, request.headers()).await?;
    let arrow = request
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(ARROW_STREAM));
    let body = body(
        request,
        http.config.max_body_bytes,
        http.config.idle_timeout,
    )
    .await?;
    let statement: Statement = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad_request(
            "INVALID_REQUEST",
            format!("the body is not {{\"sql\": \"...\", \"params\": [...]}}: {err}"),
        )
    })?;
    let kind = kind_of(&statement.sql)?;
    let _busy = http.shared.busy();
    let answered = run(http, caller, statement, &kind, arrow, started).await;
    let outcome = match &answered {
        Ok(_) => "ok",
        Err(err) => err.code.as_str(),
    };
    figures::statement(Protocol::Http, &kind, outcome, started.elapsed());
    answered
}

/// Runs `statement` as `caller` and makes its answer.
async fn run(
    http: &Http,
    caller: UserContext,
    statement: Statement,
    kind: &Kind,
    arrow: bool,
    started: Instant,
) -> Result<Answer, ApiError> {
    let session = http.shared.engine.session(caller);
    let query = if statement.params.is_empty() {
        session.sql(&statement.sql).await?
    } else {
        if !kind.is_preparable() {
            return Err(ApiError::bad_request(
                "INVALID_REQUEST",
                "params are for queries, INSERT, UPDATE and DELETE",
            ));
        }
        let prepared = http.prepared.get(&session, &statement.sql).await?;
        let values = parameters(statement.params, prepared.parameter_types())?;
        prepared.execute(values).await?
    };
    let limit = http.config.max_result_bytes;
    if arrow {
        let body = arrow_stream(query, limit).await?;
        let mut answer = Response::new(Full::new(Bytes::from(body)));
        answer
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM));
        return Ok(answer);
    }
    let body = json_answer(query, kind, limit, started).await?;
    Ok(json(StatusCode::OK, body))
}

/// The kind of the one statement of `sql`; more than one, none, a live
/// query or a transaction statement is refused.
fn kind_of(sql: &str) -> Result<Kind, ApiError> {
    let mut pieces = split(sql);
    if pieces.len() > 1 {
        return Err(ApiError::bad_request(
            "INVALID_REQUEST",
            "one statement per request",
        ));
    }
    let Some(piece) = pieces.pop() else {
        return Err(ApiError::bad_request("INVALID_REQUEST", "no statement"));
    };
    if crate::live::request(piece.sql).is_some() {
        return Err(ApiError::bad_request(
            "NOT_SUPPORTED",
            "a live query runs over the WebSocket at GET /v1/live",
        ));
    }
    if matches!(piece.kind, Kind::Begin | Kind::Commit | Kind::Rollback) {
        return Err(ApiError::bad_request(
            "NOT_SUPPORTED",
            "each request is committed on its own: there are no transactions to begin or end",
        ));
    }
    Ok(piece.kind)
}

/// `params` as the statement's parameter values, each cast to its type.
fn parameters(
    params: Vec<serde_json::Value>,
    types: &[DataType],
) -> Result<Vec<ScalarValue>, ApiError> {
    if params.len() != types.len() {
        return Err(ApiError::bad_request(
            "INVALID_ARGUMENT",
            format!(
                "{} params given, but the statement takes {}",
                params.len(),
                types.len()
            ),
        ));
    }
    params
        .into_iter()
        .zip(types)
        .enumerate()
        .map(|(i, (value, to))| {
            parameter(value, to).map_err(|message| {
                ApiError::bad_request("INVALID_ARGUMENT", format!("${}: {message}", i + 1))
            })
        })
        .collect()
}

/// One JSON value as a value of type `to`.
fn parameter(value: serde_json::Value, to: &DataType) -> Result<ScalarValue, String> {
    use serde_json::Value;
    let unknown = matches!(to, DataType::Null);
    let value = match value {
        Value::Null if unknown => return Ok(ScalarValue::Null),
        Value::Null => return ScalarValue::try_from(to).map_err(|e| e.to_string()),
        Value::String(text) if unknown || matches!(to, DataType::Utf8) => {
            return Ok(ScalarValue::Utf8(Some(text)));
        }
        Value::String(text) => {
            return ScalarValue::try_from_string(text, to)
                .map_err(|_| format!("not a value of type {to}"));
        }
        Value::Bool(b) => ScalarValue::Boolean(Some(b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => ScalarValue::Int64(Some(i)),
            (None, Some(u), _) => ScalarValue::UInt64(Some(u)),
            (None, None, Some(f)) => ScalarValue::Float64(Some(f)),
            _ => return Err(format!("{n} is not a number we can read")),
        },
        Value::Array(_) | Value::Object(_) => {
            return Err("arrays and objects are not parameter values".into());
        }
    };
    if unknown {
        return Ok(value);
    }
    value
        .cast_to(to)
        .map_err(|_| format!("{value} is not a value of type {to}"))
}

/// The JSON answer of `query`, at most `limit` bytes.
async fn json_answer(
    query: Query,
    kind: &Kind,
    limit: usize,
    started: Instant,
) -> Result<Vec<u8>, ApiError> {
    let schema = Arc::clone(query.schema());
    let changes = matches!(kind, Kind::Change(_));
    let mut rows = JsonRows::new(limit);
    let mut changed = 0u64;
    let mut batches = query.execute_stream()?;
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(TenantError::from)?;
        if changes {
            changed += change_count(&batch);
        } else {
            rows.push(&batch)?;
        }
    }
    let columns: Vec<Column> = if changes {
        Vec::new()
    } else {
        columns(&schema)
    };
    let row_count = if changes { changed } else { rows.count };
    let mut out = Vec::with_capacity(rows.out.len() + 256);
    out.extend_from_slice(b"{\"columns\":");
    serde_json::to_writer(&mut out, &columns).map_err(internal)?;
    out.extend_from_slice(b",\"rows\":[");
    out.extend_from_slice(&rows.out);
    out.extend_from_slice(b"],\"row_count\":");
    out.extend_from_slice(row_count.to_string().as_bytes());
    out.extend_from_slice(b",\"took_ms\":");
    serde_json::to_writer(&mut out, &(started.elapsed().as_secs_f64() * 1e3)).map_err(internal)?;
    out.push(b'}');
    Ok(out)
}

fn internal(err: impl std::fmt::Display) -> ApiError {
    ApiError::from(TenantError::Internal(err.to_string()))
}

pub(super) fn columns(schema: &SchemaRef) -> Vec<Column<'_>> {
    schema
        .fields()
        .iter()
        .map(|field| Column {
            name: field.name(),
            data_type: arrow_pg::datatypes::into_pg_type(field.data_type())
                .map(|t| t.name().to_string())
                .unwrap_or_else(|_| field.data_type().to_string()),
        })
        .collect()
}

/// The rows a change reports in its `count` column.
fn change_count(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .first()
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        .map_or(0, |counts| counts.iter().flatten().sum())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::from(TenantError::ResourcesExhausted(format!(
        "the answer is over {limit} bytes (max_result_mib): add a LIMIT, or read it over pgwire, \
         which streams"
    )))
}

/// Rows as JSON arrays of values, `[1,"a"],[2,null]`, bounded in bytes.
pub(crate) struct JsonRows {
    pub(crate) out: Vec<u8>,
    pub(crate) count: u64,
    limit: usize,
}

impl JsonRows {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            out: Vec::new(),
            count: 0,
            limit,
        }
    }

    /// Appends `batch`'s rows; `RESOURCES_EXHAUSTED` past the limit.
    pub(crate) fn push(&mut self, batch: &RecordBatch) -> Result<(), ApiError> {
        let options = EncoderOptions::default();
        let schema = batch.schema();
        let mut encoders = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(array, field)| ValueEncoder::new(field, array.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            if self.count > 0 {
                self.out.push(b',');
            }
            self.out.push(b'[');
            for (i, encoder) in encoders.iter_mut().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                encoder.encode(row, &mut self.out)?;
            }
            self.out.push(b']');
            self.count += 1;
            if self.out.len() > self.limit {
                return Err(too_large(self.limit));
            }
        }
        Ok(())
    }
}

/// One column's values as JSON: arrow-json's encoder, or the value's text
/// for the types it has none for.
enum ValueEncoder<'a> {
    Json(NullableEncoder<'a>),
    Text(&'a dyn Array, ArrayFormatter<'a>),
}

impl<'a> ValueEncoder<'a> {
    fn new(
        field: &'a datafusion::arrow::datatypes::FieldRef,
        array: &'a dyn Array,
        options: &'a EncoderOptions,
    ) -> Result<Self, ApiError> {
        if let Ok(encoder) = make_encoder(field, array, options) {
            return Ok(Self::Json(encoder));
        }
        const TEXT: FormatOptions<'static> = FormatOptions::new();
        let formatter = ArrayFormatter::try_new(array, &TEXT).map_err(internal)?;
        Ok(Self::Text(array, formatter))
    }

    fn encode(&mut self, row: usize, out: &mut Vec<u8>) -> Result<(), ApiError> {
        match self {
            Self::Json(encoder) if encoder.is_null(row) => out.extend_from_slice(b"null"),
            Self::Json(encoder) => encoder.encode(row, out),
            Self::Text(array, _) if array.is_null(row) => out.extend_from_slice(b"null"),
            Self::Text(_, formatter) => {
                serde_json::to_writer(&mut *out, &formatter.value(row).to_string())
                    .map_err(internal)?;
            }
        }
        Ok(())
    }
}

/// `query`'s batches as an Arrow IPC stream, at most `limit` bytes.
async fn arrow_stream(query: Query, limit: usize) -> Result<Vec<u8>, ApiError> {
    let schema = Arc::clone(query.schema());
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).map_err(internal)?;
    let mut batches = query.execute_stream()?;
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(TenantError::from)?;
        writer.write(&batch).map_err(internal)?;
        if writer.get_ref().len() > limit {
            return Err(too_large(limit));
        }
    }
    writer.finish().map_err(internal)?;
    writer.into_inner().map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use serde_json::json;

    #[test]
    fn rows_are_arrays_of_json_values() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("body", DataType::Utf8, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a\"b"), None])),
                Arc::new(TimestampMicrosecondArray::from(vec![Some(0), None])),
            ],
        )
        .unwrap();
        let mut rows = JsonRows::new(1 << 20);
        rows.push(&batch).unwrap();
        let parsed: serde_json::Value =
            serde_json::from_slice(&[b"[", &rows.out[..], b"]"].concat()).unwrap();
        assert_eq!(
            parsed,
            json!([[1, "a\"b", "1970-01-01T00:00:00"], [2, null, null]])
        );
        assert_eq!(rows.count, 2);
        let mut small = JsonRows::new(8);
        let err = small.push(&batch).unwrap_err();
        assert_eq!(err.code, "RESOURCES_EXHAUSTED");
    }

    #[test]
    fn parameters_take_the_statement_types() {
        let values = parameters(
            vec![
                json!(7),
                json!("2026-01-02T03:04:05"),
                json!(null),
                json!("x"),
            ],
            &[
                DataType::Int32,
                DataType::Timestamp(TimeUnit::Microsecond, None),
                DataType::Utf8,
                DataType::Utf8,
            ],
        )
        .unwrap();
        assert_eq!(values[0], ScalarValue::Int32(Some(7)));
        assert!(matches!(
            values[1],
            ScalarValue::TimestampMicrosecond(Some(_), None)
        ));
        assert_eq!(values[2], ScalarValue::Utf8(None));
        assert_eq!(values[3], ScalarValue::Utf8(Some("x".into())));
        for (value, to) in [
            (json!("seven"), DataType::Int64),
            (json!([1]), DataType::Int64),
            (json!({"a": 1}), DataType::Utf8),
            (json!(300), DataType::Int8),
        ] {
            let err = parameters(vec![value.clone()], std::slice::from_ref(&to)).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{value} as {to}");
            assert!(err.message.starts_with("$1:"), "{}", err.message);
        }
        assert!(parameters(vec![], &[DataType::Int64]).is_err());
    }

    #[test]
    fn one_plain_statement_per_request() {
        assert_eq!(kind_of("SELECT 1").unwrap(), Kind::Rows("SELECT"));
        for sql in [
            "",
            " ; ",
            "SELECT 1; SELECT 2",
            "SUBSCRIBE TO app.t",
            "BEGIN",
            "COMMIT",
        ] {
            assert_eq!(
                kind_of(sql).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{sql}"
            );
        }
    }
}
