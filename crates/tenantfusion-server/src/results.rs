//! A statement's outcome as the wire protocol sends it.
//!
//! Rows are encoded by `arrow-pg` (the Arrow-to-PostgreSQL type mapping
//! and the text and binary encodings of each type) one batch at a time, as
//! the client reads them: a client that stops reading stops the query,
//! holding at most one batch and the connection's write buffer.
//! `INSERT`, `UPDATE` and `DELETE` answer with the count the engine
//! returns, in the command tag, as PostgreSQL does.

use std::sync::Arc;

use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::arrow::datatypes::Schema;
use futures::{StreamExt, TryStreamExt, stream};
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::error::PgWireResult;
use tenantfusion::Query;
use tenantfusion_core::TenantError;

use crate::sqlstate::{user_error, wire_error};
use crate::statements::Kind;

/// Runs `query` (a statement of kind `kind`) and answers as PostgreSQL
/// would: rows as a `QueryResponse` whose stream runs the query, a change
/// as its count, anything else as its tag.
pub(crate) async fn respond(query: Query, kind: &Kind, format: &Format) -> PgWireResult<Response> {
    if let Kind::Change(command) = kind {
        let changed = count(query).await.map_err(|err| user_error(&err))?;
        let tag = Tag::new(command).with_rows(changed);
        // INSERT's tag carries the oid of a single inserted row: always 0 now.
        let tag = if *command == "INSERT" {
            tag.with_oid(0)
        } else {
            tag
        };
        return Ok(Response::Execution(tag));
    }
    if query.schema().fields().is_empty() {
        query.collect().await.map_err(|err| user_error(&err))?;
        return Ok(Response::Execution(Tag::new(&tag_of(kind))));
    }
    let fields = Arc::new(fields(query.schema(), format)?);
    let batches = query.execute_stream().map_err(|err| user_error(&err))?;
    let encode = Arc::clone(&fields);
    let rows = batches
        .map(move |batch| match batch {
            Ok(batch) => stream::iter(encode_recordbatch(Arc::clone(&encode), batch)).left_stream(),
            Err(err) => {
                stream::once(async move { Err(user_error(&TenantError::from(err))) }).right_stream()
            }
        })
        .flatten();
    let mut response = QueryResponse::new(fields, rows);
    response.set_command_tag(&tag_of(kind));
    Ok(Response::Query(response))
}

/// The columns of `schema` as `RowDescription` fields in `format`; a
/// per-column format list that does not match the columns is the client's
/// protocol error.
pub(crate) fn fields(schema: &Schema, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    check_format(format, schema.fields().len(), "result columns")?;
    arrow_schema_to_pg_fields(schema, format, None)
}

/// A `Bind` may give one format for all values or one per value; any other
/// count is a protocol error (pgwire would index past the list).
pub(crate) fn check_format(format: &Format, expected: usize, of: &str) -> PgWireResult<()> {
    match format {
        Format::Individual(codes) if codes.len() != expected => Err(wire_error(
            "ERROR",
            "08P01",
            format!(
                "bind message has {} format codes for {expected} {of}",
                codes.len()
            ),
        )),
        _ => Ok(()),
    }
}

/// The tag of a statement that returns rows or nothing.
fn tag_of(kind: &Kind) -> String {
    match kind {
        Kind::Rows(tag) | Kind::Change(tag) => tag.to_string(),
        Kind::Begin => "BEGIN".to_string(),
        Kind::Commit => "COMMIT".to_string(),
        Kind::Rollback => "ROLLBACK".to_string(),
        Kind::Other(tag) if tag.is_empty() => "OK".to_string(),
        Kind::Other(tag) => tag.clone(),
    }
}

/// The rows a change reports in its `count` column.
async fn count(query: Query) -> Result<usize, TenantError> {
    let batches = query.execute_stream()?;
    let counts: Vec<_> = batches.map_err(TenantError::from).try_collect().await?;
    let mut total = 0u64;
    for batch in &counts {
        let Some(column) = batch
            .columns()
            .first()
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        else {
            continue;
        };
        total += column.iter().flatten().sum::<u64>();
    }
    Ok(usize::try_from(total).unwrap_or(usize::MAX))
}
