//! `pg_catalog`: the PostgreSQL catalog tables clients read to list what
//! exists (psql's `\d`, `\dt` and `\dn`, the trees of GUI tools), as each
//! caller may see it.
//!
//! Only what listing needs is here: `pg_namespace`, `pg_class` and an
//! empty `pg_am` (psql joins it), with the functions those queries call,
//! `pg_get_userbyid` and `pg_table_is_visible` (also under their
//! `pg_catalog.` names, which DataFusion looks up as written). Describing
//! one table (`\d name`) needs PostgreSQL's type system (`regtype` casts,
//! `pg_attribute`, `pg_attrdef`, ...) and is not offered; the shell's
//! `\d name` and `information_schema.columns` describe tables.
//!
//! Rows are made as `system.tables`' are: when the plan executes, for the
//! caller in the task, so a cached plan over these tables shows each user
//! their own listing. A user sees the namespaces holding a table they may
//! read, and those tables; trusted roles see everything. OIDs are derived
//! from names (`pg_catalog` keeps PostgreSQL's 11), so the tables agree
//! with each other within a statement and across statements, and no
//! number reveals how many tables other tenants have.
//!
//! Why not the `datafusion-pg-catalog` crate, which has many more tables:
//! it builds them from a catalog it is handed once, never from the caller
//! a plan runs for, and numbers OIDs with a counter all callers share.
//! Per-caller listings would then need a catalog per connection, and a
//! plan cached for one user would list for another.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int32Builder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use tenantfusion_core::{SchemaCache, TableType, UserContext};

use crate::information_schema::INFORMATION_SCHEMA_NAMESPACE;
use crate::system_tables::{
    ReservedSchema, RowSource, SYSTEM_NAMESPACE, SYSTEM_TABLES, system_table, visible_by_namespace,
};

/// The reserved namespace of the PostgreSQL catalog tables.
pub const PG_CATALOG_NAMESPACE: &str = "pg_catalog";

/// The names of its tables.
pub(crate) const PG_CATALOG_TABLES: [&str; 3] = ["pg_namespace", "pg_class", "pg_am"];

/// PostgreSQL's own OID of `pg_catalog`, which clients know.
const PG_CATALOG_OID: i32 = 11;

/// The owner every object is listed with (PostgreSQL's bootstrap
/// superuser's OID): definitions belong to the engine, rows to users.
const OWNER_OID: i32 = 10;

/// The owner's name, as `pg_get_userbyid` gives it.
const OWNER_NAME: &str = "tenantfusion";

/// The `pg_catalog` schema over `cache`.
pub(crate) fn schema(cache: Arc<SchemaCache>) -> Result<ReservedSchema> {
    let tables = vec![
        namespaces_table(Arc::clone(&cache))?,
        classes_table(cache)?,
        access_methods_table()?,
    ];
    Ok(ReservedSchema::new(&PG_CATALOG_TABLES, tables))
}

/// The functions the listing queries call, to register with the session
/// state.
pub(crate) fn functions() -> Vec<ScalarUDF> {
    let owner = create_udf(
        "pg_get_userbyid",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::from(OWNER_NAME)))),
    );
    // Every table listed is one the caller may name.
    let visible = create_udf(
        "pg_table_is_visible",
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
    );
    // `pg_catalog.f(...)` is looked up by that whole name.
    vec![
        owner.with_aliases(["pg_catalog.pg_get_userbyid"]),
        visible.with_aliases(["pg_catalog.pg_table_is_visible"]),
    ]
}

/// A stable OID for the object named by `parts`: FNV-1a over the parts,
/// in PostgreSQL's range for user objects (from 16384) and within `i32`.
/// Two names may share one (about one pair in 2^31): the listing then
/// joins them both ways, which shows, and nothing else relies on it.
fn oid(parts: &[&str]) -> i32 {
    const FIRST_USER_OID: u32 = 16_384;
    let mut hash: u32 = 0x811c_9dc5;
    for part in parts {
        for byte in part.bytes().chain([0]) {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    let span = i32::MAX as u32 - FIRST_USER_OID;
    (FIRST_USER_OID + hash % span) as i32
}

fn namespace_oid(namespace: &str) -> i32 {
    if namespace == PG_CATALOG_NAMESPACE {
        PG_CATALOG_OID
    } else {
        oid(&[namespace])
    }
}

/// The engine's tables `user` may see, with their kinds, by namespace.
fn caller_tables(user: &UserContext, cache: &SchemaCache) -> Vec<(String, String, &'static str)> {
    let mut tables = Vec::new();
    for (namespace, providers) in visible_by_namespace(user, cache) {
        for table in providers {
            let core = table.core();
            let kind = match core.table_type {
                TableType::View => "v",
                TableType::User | TableType::Shared | TableType::Stream => "r",
            };
            tables.push((namespace.clone(), core.table_name().to_string(), kind));
        }
    }
    tables.sort();
    tables
}

/// The namespaces `user` may see (see [`visible_by_namespace`]), then the
/// engine's reserved ones.
fn caller_namespaces(user: &UserContext, cache: &SchemaCache) -> Vec<String> {
    let mut names: Vec<String> = visible_by_namespace(user, cache).into_keys().collect();
    names.extend(
        [
            SYSTEM_NAMESPACE,
            INFORMATION_SCHEMA_NAMESPACE,
            PG_CATALOG_NAMESPACE,
        ]
        .map(String::from),
    );
    names
}

/// `pg_namespace`: `oid`, `nspname`, `nspowner`, `nspacl`.
fn namespaces_table(cache: Arc<SchemaCache>) -> Result<StreamingTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("oid", DataType::Int32, false),
        Field::new("nspname", DataType::Utf8, false),
        Field::new("nspowner", DataType::Int32, false),
        Field::new("nspacl", DataType::Utf8, true),
    ]));
    let out = Arc::clone(&schema);
    let rows: RowSource = Arc::new(move |user| {
        let names = caller_namespaces(user, &cache);
        let mut oids = Int32Builder::new();
        let mut owners = Int32Builder::new();
        let mut acls = StringBuilder::new();
        for name in &names {
            oids.append_value(namespace_oid(name));
            owners.append_value(OWNER_OID);
            acls.append_null();
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(oids.finish()),
            Arc::new(StringArray::from(names)),
            Arc::new(owners.finish()),
            Arc::new(acls.finish()),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&out), columns)?)
    });
    system_table(schema, rows)
}

/// `pg_class`: one row per table the caller may see (`relkind` `r`, or
/// `v` for views), the system tables and these tables.
fn classes_table(cache: Arc<SchemaCache>) -> Result<StreamingTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("oid", DataType::Int32, false),
        Field::new("relname", DataType::Utf8, false),
        Field::new("relnamespace", DataType::Int32, false),
        Field::new("relkind", DataType::Utf8, false),
        Field::new("relowner", DataType::Int32, false),
        Field::new("relam", DataType::Int32, false),
        Field::new("relpersistence", DataType::Utf8, false),
        Field::new("relhasindex", DataType::Boolean, false),
        Field::new("relispartition", DataType::Boolean, false),
    ]));
    let out = Arc::clone(&schema);
    let rows: RowSource = Arc::new(move |user| {
        let mut all = caller_tables(user, &cache);
        for (namespace, names) in [
            (SYSTEM_NAMESPACE, SYSTEM_TABLES.as_slice()),
            (PG_CATALOG_NAMESPACE, PG_CATALOG_TABLES.as_slice()),
        ] {
            all.extend(
                names
                    .iter()
                    .map(|name| (namespace.to_string(), name.to_string(), "r")),
            );
        }
        let (mut oids, mut spaces) = (Int32Builder::new(), Int32Builder::new());
        let (mut names, mut kinds) = (StringBuilder::new(), StringBuilder::new());
        let (mut owners, mut methods) = (Int32Builder::new(), Int32Builder::new());
        let mut persistence = StringBuilder::new();
        for (namespace, name, kind) in &all {
            oids.append_value(oid(&[namespace, name]));
            names.append_value(name);
            spaces.append_value(namespace_oid(namespace));
            kinds.append_value(kind);
            owners.append_value(OWNER_OID);
            methods.append_value(0);
            persistence.append_value("p");
        }
        let no = Arc::new(BooleanArray::from(vec![false; all.len()]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(oids.finish()),
            Arc::new(names.finish()),
            Arc::new(spaces.finish()),
            Arc::new(kinds.finish()),
            Arc::new(owners.finish()),
            Arc::new(methods.finish()),
            Arc::new(persistence.finish()),
            Arc::clone(&no) as ArrayRef,
            no,
        ];
        Ok(RecordBatch::try_new(Arc::clone(&out), columns)?)
    });
    system_table(schema, rows)
}

/// `pg_am`: no access methods (psql joins it to name a table's).
fn access_methods_table() -> Result<StreamingTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("oid", DataType::Int32, false),
        Field::new("amname", DataType::Utf8, false),
        Field::new("amtype", DataType::Utf8, false),
    ]));
    let out = Arc::clone(&schema);
    let rows: RowSource = Arc::new(move |_| Ok(RecordBatch::new_empty(Arc::clone(&out))));
    system_table(schema, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_are_stable_distinct_and_in_the_user_range() {
        let a = oid(&["app", "notes"]);
        assert_eq!(a, oid(&["app", "notes"]));
        // The separator keeps the parts apart.
        assert_ne!(a, oid(&["appn", "otes"]));
        assert_ne!(oid(&["app"]), a);
        let long = "x".repeat(1000);
        for parts in [["a", "b"], ["", ""], [long.as_str(), "y"]] {
            let o = oid(&parts);
            assert!(o >= 16_384, "{o}");
        }
        assert_eq!(namespace_oid("pg_catalog"), 11);
    }
}
