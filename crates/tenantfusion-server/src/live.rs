//! Live queries over the wire: `SUBSCRIBE TO ...` as rows that never end,
//! or `COPY (SUBSCRIBE TO ...) TO STDOUT` as lines of COPY text.
//!
//! Each row is one row of one change event: the column `event`
//! (`snapshot`, `insert`, `delete` or `lagged`) and then the table's
//! columns. A `lagged` row says that the client read too slowly and events
//! were dropped (its columns are NULL); the engine's `SLOW_CONSUMER`
//! option decides between dropping and ending the query.
//!
//! Rows are flushed to the socket as each event arrives, so a client sees
//! them at once (`psql -c "COPY (SUBSCRIBE TO t) TO STDOUT"` prints them as
//! they come; drivers read COPY data or a streamed result). The statement
//! ends only with an error: a `CancelRequest` (`57014`), the end of the
//! caller's read access, or a lagging client under `SLOW_CONSUMER =
//! 'disconnect'`. While no event comes, a heartbeat (an empty `CopyData`,
//! or a repeated `ParameterStatus` in the rows form) goes out every
//! [`HEARTBEAT`] so that a client that went away is noticed and its live
//! query and connection freed.
//!
//! `SUBSCRIBE` also runs by the extended protocol (psycopg's
//! `cursor.stream`): `Parse` checks it and `Describe` gives its columns
//! without starting it; `Execute` streams as above. COPY runs by the simple
//! protocol only.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use arrow_pg::datatypes::encode_recordbatch;
use bytes::{BufMut, Bytes, BytesMut};
use datafusion::arrow::array::{ArrayRef, StringArray, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Sink, SinkExt};
use pgwire::api::portal::Format;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyOutResponse};
use pgwire::messages::data::{DataRow, RowDescription};
use pgwire::messages::startup::ParameterStatus;
use tenantfusion::{ChangeEvent, LiveQuery};
use tenantfusion_core::TenantError;
use tokio::sync::Notify;

use crate::results::fields;
use crate::sqlstate::{user_error, wire_error};
use crate::statements::{starts_with_keyword, strip_keyword};

/// How long a quiet live query waits before it checks the client is there.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// A live query asked for by a simple-protocol statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request<'a> {
    /// The `SUBSCRIBE TO ...` statement.
    pub(crate) subscribe: &'a str,
    /// Sent as COPY text rather than rows.
    pub(crate) copy: bool,
}

/// The live query `sql` asks for, if it is `SUBSCRIBE ...` or
/// `COPY (SUBSCRIBE ...) TO STDOUT`.
pub(crate) fn request(sql: &str) -> Option<Request<'_>> {
    let sql = sql.trim();
    if starts_with_keyword(sql, "SUBSCRIBE") {
        return Some(Request {
            subscribe: sql,
            copy: false,
        });
    }
    let rest = strip_keyword(sql, "COPY")?;
    let inner = rest.strip_prefix('(')?;
    let close = inner.rfind(')')?;
    let (inner, tail) = (inner[..close].trim(), &inner[close + 1..]);
    let tail = strip_keyword(tail.trim_start(), "TO")?;
    if !tail.trim().eq_ignore_ascii_case("STDOUT") || !starts_with_keyword(inner, "SUBSCRIBE") {
        return None;
    }
    Some(Request {
        subscribe: inner,
        copy: true,
    })
}

/// The columns of a live query's rows: `event`, then the table's (all
/// nullable: a `lagged` row has no values).
pub(crate) fn event_schema(table: &SchemaRef) -> SchemaRef {
    let mut fields = vec![Field::new("event", DataType::Utf8, false)];
    fields.extend(
        table
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true)),
    );
    Arc::new(Schema::new(fields))
}

/// `rows` of one event as rows of `schema`.
fn event_batch(
    schema: &SchemaRef,
    event: &str,
    rows: &RecordBatch,
) -> Result<RecordBatch, ArrowError> {
    let mut columns: Vec<ArrayRef> =
        vec![Arc::new(StringArray::from(vec![event; rows.num_rows()]))];
    columns.extend(rows.columns().iter().cloned());
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// One `lagged` row.
fn lagged_batch(schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec!["lagged"]))];
    columns.extend(
        schema
            .fields()
            .iter()
            .skip(1)
            .map(|f| new_null_array(f.data_type(), 1)),
    );
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// How a live query's rows go out.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    /// As COPY text (else as rows).
    pub(crate) copy: bool,
    /// Rows start with their `RowDescription` (the extended protocol's
    /// `Describe` sent it already).
    pub(crate) describe: bool,
    /// The rows' format (COPY is always text).
    pub(crate) format: Format,
    /// See [`HEARTBEAT`].
    pub(crate) heartbeat: Duration,
}

/// Streams `query`'s events to `client` until `stop` is notified or the
/// query ends. `user` is the connection's (repeated in the rows form's
/// heartbeat).
pub(crate) async fn stream<C>(
    client: &mut C,
    mut query: LiveQuery,
    shape: Shape,
    stop: Arc<Notify>,
    user: &str,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let Shape {
        copy,
        describe,
        format,
        heartbeat,
    } = shape;
    let schema = event_schema(query.schema());
    let format = if copy { Format::UnifiedText } else { format };
    let fields = Arc::new(fields(&schema, &format)?);
    if copy {
        let columns = fields.len() as i16;
        client
            .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
                0,
                columns,
                vec![0; fields.len()],
            )))
            .await?;
    } else if describe {
        let description = RowDescription::new(fields.iter().map(Into::into).collect());
        client
            .send(PgWireBackendMessage::RowDescription(description))
            .await?;
    }
    loop {
        let event = tokio::select! {
            () = stop.notified() => return Err(PgWireError::QueryCanceled),
            () = tokio::time::sleep(heartbeat) => {
                let beat = if copy {
                    PgWireBackendMessage::CopyData(CopyData::new(Bytes::new()))
                } else {
                    PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                        "session_authorization".to_string(),
                        user.to_string(),
                    ))
                };
                client.send(beat).await?;
                continue;
            }
            event = query.recv() => event,
        };
        let batches = match event.map_err(|err| user_error(&err))? {
            Some(ChangeEvent::Snapshot(batches)) => batches
                .iter()
                .map(|rows| event_batch(&schema, "snapshot", rows))
                .collect::<Result<Vec<_>, _>>(),
            Some(ChangeEvent::Insert(rows)) => {
                event_batch(&schema, "insert", &rows).map(|b| vec![b])
            }
            Some(ChangeEvent::Delete(rows)) => {
                event_batch(&schema, "delete", &rows).map(|b| vec![b])
            }
            Some(ChangeEvent::Lagged { .. }) => lagged_batch(&schema).map(|b| vec![b]),
            None => {
                return Err(wire_error("ERROR", "57014", "the live query ended"));
            }
        }
        .map_err(|err| user_error(&TenantError::Internal(err.to_string())))?;
        for batch in batches {
            for row in encode_recordbatch(Arc::clone(&fields), batch) {
                let row = row?;
                let message = if copy {
                    PgWireBackendMessage::CopyData(CopyData::new(copy_line(&row)?))
                } else {
                    PgWireBackendMessage::DataRow(row)
                };
                client.feed(message).await?;
            }
        }
        client.flush().await?;
    }
}

/// One row in COPY's text format: tab-separated, `\N` for NULL, with
/// backslash, tab, newline and carriage return escaped. The values are
/// the row's own text encoding (the wire's), so both forms show the same.
fn copy_line(row: &DataRow) -> PgWireResult<Bytes> {
    let mut data = &row.data[..];
    let mut line = BytesMut::with_capacity(data.len() + 1);
    for i in 0..row.field_count {
        if i > 0 {
            line.put_u8(b'\t');
        }
        let (len, rest) = data
            .split_first_chunk::<4>()
            .ok_or_else(|| wire_error("ERROR", "XX000", "short data row"))?;
        let len = i32::from_be_bytes(*len);
        data = rest;
        if len < 0 {
            line.put_slice(b"\\N");
            continue;
        }
        let len = len as usize;
        let value = data
            .get(..len)
            .ok_or_else(|| wire_error("ERROR", "XX000", "short data row"))?;
        data = &data[len..];
        for &byte in value {
            match byte {
                b'\\' => line.put_slice(b"\\\\"),
                b'\t' => line.put_slice(b"\\t"),
                b'\n' => line.put_slice(b"\\n"),
                b'\r' => line.put_slice(b"\\r"),
                other => line.put_u8(other),
            }
        }
    }
    line.put_u8(b'\n');
    Ok(line.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_pg::datatypes::arrow_schema_to_pg_fields;
    use datafusion::arrow::array::Int64Array;

    #[test]
    fn requests_are_recognised() {
        assert_eq!(
            request("SUBSCRIBE TO app.t WHERE a > 1"),
            Some(Request {
                subscribe: "SUBSCRIBE TO app.t WHERE a > 1",
                copy: false
            })
        );
        assert_eq!(
            request(" copy ( subscribe to app.t ) to stdout "),
            Some(Request {
                subscribe: "subscribe to app.t",
                copy: true
            })
        );
        for other in [
            "SELECT 1",
            "SUBSCRIBERS",
            "COPY (SELECT 1) TO STDOUT",
            "COPY (SUBSCRIBE TO t) TO '/etc/passwd'",
            "COPY t TO STDOUT",
            "COPY (SUBSCRIBE TO t)",
        ] {
            assert_eq!(request(other), None, "{other}");
        }
    }

    #[test]
    fn copy_lines_escape_and_mark_nulls() {
        let table = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("body", DataType::Utf8, true),
        ]));
        let schema = event_schema(&table);
        let rows = RecordBatch::try_new(
            table,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a\tb\\c\nd"), None])),
            ],
        )
        .unwrap();
        let batch = event_batch(&schema, "insert", &rows).unwrap();
        let fields =
            Arc::new(arrow_schema_to_pg_fields(&schema, &Format::UnifiedText, None).unwrap());
        let lines: Vec<Bytes> = encode_recordbatch(fields, batch)
            .map(|row| copy_line(&row.unwrap()).unwrap())
            .collect();
        assert_eq!(lines[0], Bytes::from_static(b"insert\t1\ta\\tb\\\\c\\nd\n"));
        assert_eq!(lines[1], Bytes::from_static(b"insert\t2\t\\N\n"));
        let lagged = lagged_batch(&schema).unwrap();
        assert_eq!(lagged.num_rows(), 1);
        assert_eq!(lagged.column(1).null_count(), 1);
    }
}
