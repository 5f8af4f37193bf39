//! `system.tables` and `system.users`: what exists, as the caller may see
//! it; `system.live_sources`, `system.live_connections` (Dba/System) and
//! `system.live_subscriptions` (each user their own): the live pool and the
//! live queries.
//!
//! Rows are computed when the plan executes, for the caller found in the task,
//! so a plan over a system table is as user-independent as any other.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use tenantfusion_core::{Access, BaseTableProvider, SchemaCache, TenantError, UserContext};
use tenantfusion_live::BreakerState;

use crate::live_query::LiveQueries;
use crate::live_sources::LiveSources;
use crate::table_options::shared_access;

use crate::users::UserRegistry;

/// Whether `user` may see `table` at all: trusted roles see every table,
/// others those they may read (their own rows of user tables included).
pub(crate) fn visible(user: &UserContext, table: &Arc<dyn BaseTableProvider>) -> bool {
    user.role().is_trusted() || table.authorize(user, Access::Select).is_ok()
}

/// The engine's tables `user` may see, by namespace: the namespaces
/// holding one (every namespace for trusted roles, empty ones included),
/// each with those tables. What `information_schema` and `pg_catalog`
/// list.
pub(crate) fn visible_by_namespace(
    user: &UserContext,
    cache: &SchemaCache,
) -> BTreeMap<String, Vec<Arc<dyn BaseTableProvider>>> {
    let mut tables: BTreeMap<String, Vec<Arc<dyn BaseTableProvider>>> = BTreeMap::new();
    if user.role().is_trusted() {
        for namespace in cache.namespaces() {
            tables.entry(namespace.to_string()).or_default();
        }
    }
    for table in cache.all_providers() {
        if visible(user, &table) {
            let namespace = table.core().namespace().to_string();
            tables.entry(namespace).or_default().push(table);
        }
    }
    tables
}

/// The reserved namespace of the system tables.
pub const SYSTEM_NAMESPACE: &str = "system";

/// Builds a system table's rows for one caller.
pub(crate) type RowSource = Arc<dyn Fn(&UserContext) -> Result<RecordBatch> + Send + Sync>;

/// The names of the system tables.
pub(crate) const SYSTEM_TABLES: [&str; 5] = [
    "tables",
    "users",
    "live_sources",
    "live_connections",
    "live_subscriptions",
];

/// The fixed tables of one of the engine's reserved namespaces (`system`,
/// `pg_catalog`), whose rows are made for each caller at execution.
#[derive(Debug)]
pub struct ReservedSchema {
    names: &'static [&'static str],
    /// In the order of `names`.
    tables: Vec<Arc<StreamingTable>>,
}

impl ReservedSchema {
    /// The tables `tables`, named `names` in that order.
    pub(crate) fn new(names: &'static [&'static str], tables: Vec<StreamingTable>) -> Self {
        debug_assert_eq!(names.len(), tables.len());
        Self {
            names,
            tables: tables.into_iter().map(Arc::new).collect(),
        }
    }

    /// The `system` schema.
    pub(crate) fn system(
        cache: Arc<SchemaCache>,
        users: Arc<UserRegistry>,
        live_sources: Arc<LiveSources>,
        live_queries: Arc<LiveQueries>,
    ) -> Result<Self> {
        let tables = vec![
            tables_table(cache)?,
            users_table(users)?,
            live_sources_table(Arc::clone(&live_sources))?,
            live_connections_table(live_sources)?,
            live_subscriptions_table(live_queries)?,
        ];
        Ok(Self::new(&SYSTEM_TABLES, tables))
    }
}

#[async_trait]
impl SchemaProvider for ReservedSchema {
    fn table_names(&self) -> Vec<String> {
        self.names.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .names
            .iter()
            .position(|t| *t == name)
            .map(|i| Arc::clone(&self.tables[i]) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.names.contains(&name)
    }
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `system.tables`: admins and services see every table; others see the user
/// tables (their own rows) and the shared tables they may read.
fn tables_table(cache: Arc<SchemaCache>) -> Result<StreamingTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("namespace", DataType::Utf8, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("table_type", DataType::Utf8, false),
        Field::new("access_level", DataType::Utf8, true),
        Field::new("created_at", timestamp_type(), false),
    ]));
    let out = Arc::clone(&schema);
    let rows: RowSource = Arc::new(move |user| {
        let mut ns = StringBuilder::new();
        let mut name = StringBuilder::new();
        let mut kind = StringBuilder::new();
        let mut level = StringBuilder::new();
        let mut created = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        for provider in cache.all_providers() {
            if !visible(user, &provider) {
                continue;
            }
            let core = provider.core();
            ns.append_value(core.namespace().as_str());
            name.append_value(core.table_name().as_str());
            kind.append_value(core.table_type.as_str());
            level.append_option(shared_access(&provider).map(|s| s.level().as_str()));
            created.append_value(core.created_at.timestamp_micros());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ns.finish()),
            Arc::new(name.finish()),
            Arc::new(kind.finish()),
            Arc::new(level.finish()),
            Arc::new(created.finish()),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&out), columns)?)
    });
    system_table(schema, rows)
}

/// `system.users`: admins see everyone; others see only themselves.
fn users_table(users: Arc<UserRegistry>) -> Result<StreamingTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("role", DataType::Utf8, false),
        Field::new("created_at", timestamp_type(), false),
    ]));
    let out = Arc::clone(&schema);
    let rows: RowSource = Arc::new(move |caller| {
        let mut id = StringBuilder::new();
        let mut role = StringBuilder::new();
        let mut created = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        for user in users.list() {
            if !caller.role().is_admin() && &user.user_id != caller.user_id() {
                continue;
            }
            id.append_value(user.user_id.as_str());
            role.append_value(user.role.as_str());
            created.append_value(user.created_at.timestamp_micros());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(id.finish()),
            Arc::new(role.finish()),
            Arc::new(created.finish()),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&out), columns)?)
    });
    system_table(schema, rows)
}

/// Refuses callers below Dba: the pool's state names every source and topic.
fn require_admin(user: &UserContext, table: &str) -> Result<()> {
    if user.role().is_admin() {
        Ok(())
    } else {
        Err(TenantError::PermissionDenied(format!(
            "system.{table} is visible to roles dba and system; user '{}' has role {}",
            user.user_id(),
            user.role()
        ))
        .into())
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `system.live_sources`: each source's health, circuit, load and latency.
fn live_sources_table(live_sources: Arc<LiveSources>) -> Result<StreamingTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("circuit", DataType::Utf8, false),
        Field::new("connections", DataType::UInt64, false),
        Field::new("topics", DataType::UInt64, false),
        Field::new("connects", DataType::UInt64, false),
        Field::new("connect_failures", DataType::UInt64, false),
        Field::new("lost", DataType::UInt64, false),
        Field::new("malformed", DataType::UInt64, false),
        Field::new("foreign_rows", DataType::UInt64, false),
        Field::new("rows_rejected", DataType::UInt64, false),
        Field::new("deliveries_dropped", DataType::UInt64, false),
        Field::new("health_checks", DataType::UInt64, false),
        Field::new("error_rate", DataType::Float64, false),
        Field::new("p50_ms", DataType::Float64, true),
        Field::new("p99_ms", DataType::Float64, true),
        Field::new("last_error", DataType::Utf8, true),
    ]));
    let out = Arc::clone(&schema);
    let rows: RowSource = Arc::new(move |user| {
        require_admin(user, "live_sources")?;
        let sources = live_sources
            .started_pool()
            .map(|pool| pool.snapshot().sources)
            .unwrap_or_default();
        let (mut name, mut kind, mut circuit) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        let mut counts: [UInt64Builder; 10] = Default::default();
        let (mut error_rate, mut p50, mut p99) = (
            Float64Builder::new(),
            Float64Builder::new(),
            Float64Builder::new(),
        );
        let mut last_error = StringBuilder::new();
        for source in &sources {
            let (rejected, dropped) = live_sources.counts_of(&source.name);
            name.append_value(&source.name);
            kind.append_value(source.kind.to_string());
            circuit.append_value(match source.breaker {
                BreakerState::Closed => "closed",
                BreakerState::Open => "open",
                BreakerState::HalfOpen => "half_open",
            });
            let values = [
                source.connections as u64,
                source.topics as u64,
                source.connects,
                source.connect_failures,
                source.lost,
                source.malformed,
                source.foreign_rows,
                rejected,
                dropped,
                source.health_checks,
            ];
            for (builder, value) in counts.iter_mut().zip(values) {
                builder.append_value(value);
            }
            error_rate.append_value(source.error_rate);
            let measured = source.latency.count > 0;
            p50.append_option(measured.then(|| millis(source.latency.p50)));
            p99.append_option(measured.then(|| millis(source.latency.p99)));
            last_error.append_option(source.last_error.as_deref());
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(name.finish()),
            Arc::new(kind.finish()),
            Arc::new(circuit.finish()),
        ];
        columns.extend(counts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(error_rate.finish()));
        columns.push(Arc::new(p50.finish()));
        columns.push(Arc::new(p99.finish()));
        columns.push(Arc::new(last_error.finish()));
        Ok(RecordBatch::try_new(Arc::clone(&out), columns)?)
    });
    system_table(schema, rows)
}

/// `system.live_connections`: each upstream connection and its traffic.
fn live_connections_table(live_sources: Arc<LiveSources>) -> Result<StreamingTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("connection_id", DataType::UInt64, false),
        Field::new("connected", DataType::Boolean, false),
        Field::new("topics", DataType::UInt64, false),
        Field::new("messages", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("malformed", DataType::UInt64, false),
    ]));
    let out = Arc::clone(&schema);
    let rows: RowSource = Arc::new(move |user| {
        require_admin(user, "live_connections")?;
        let connections = live_sources
            .started_pool()
            .map(|pool| pool.snapshot().connections)
            .unwrap_or_default();
        let mut source = StringBuilder::new();
        let mut connected = BooleanBuilder::new();
        let mut counts: [UInt64Builder; 5] = Default::default();
        for c in &connections {
            source.append_value(&c.source);
            connected.append_value(c.connected);
            let values = [c.id.0, c.topics as u64, c.messages, c.rows, c.malformed];
            for (builder, value) in counts.iter_mut().zip(values) {
                builder.append_value(value);
            }
        }
        let [mut id, mut topics, mut messages, mut rows, mut malformed] = counts;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(source.finish()),
            Arc::new(id.finish()),
            Arc::new(connected.finish()),
            Arc::new(topics.finish()),
            Arc::new(messages.finish()),
            Arc::new(rows.finish()),
            Arc::new(malformed.finish()),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&out), columns)?)
    });
    system_table(schema, rows)
}

/// `system.live_subscriptions`: running live queries; admins see all,
/// everyone else their own.
fn live_subscriptions_table(live_queries: Arc<LiveQueries>) -> Result<StreamingTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("topics", DataType::Utf8, true),
        Field::new("queued", DataType::UInt64, false),
        Field::new("delivered", DataType::UInt64, false),
        Field::new("dropped", DataType::UInt64, false),
        Field::new("created_at", timestamp_type(), false),
    ]));
    let out = Arc::clone(&schema);
    let rows: RowSource = Arc::new(move |caller| {
        let mut user = StringBuilder::new();
        let mut table = StringBuilder::new();
        let mut topics = StringBuilder::new();
        let mut counts: [UInt64Builder; 4] = Default::default();
        let mut created = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        for (id, query) in live_queries.list() {
            if !caller.role().is_admin() && &query.user != caller.user_id() {
                continue;
            }
            user.append_value(query.user.as_str());
            table.append_value(query.table.to_string());
            topics.append_option(query.topics.as_ref().map(|t| t.join(",")));
            let stats = query.stats();
            let values = [id, stats.queued as u64, stats.delivered, stats.dropped];
            for (builder, value) in counts.iter_mut().zip(values) {
                builder.append_value(value);
            }
            created.append_value(query.created_at.timestamp_micros());
        }
        let [mut id, mut queued, mut delivered, mut dropped] = counts;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(id.finish()),
            Arc::new(user.finish()),
            Arc::new(table.finish()),
            Arc::new(topics.finish()),
            Arc::new(queued.finish()),
            Arc::new(delivered.finish()),
            Arc::new(dropped.finish()),
            Arc::new(created.finish()),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&out), columns)?)
    });
    system_table(schema, rows)
}

/// A system table's one partition: its rows, computed at execution for
/// the caller the task carries. The table around it is DataFusion's
/// [`StreamingTable`], which does the projection and limit.
struct SystemRows {
    schema: SchemaRef,
    rows: RowSource,
}

impl fmt::Debug for SystemRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemRows")
            .field("schema", &self.schema)
            .finish()
    }
}

impl PartitionStream for SystemRows {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, context: Arc<TaskContext>) -> SendableRecordBatchStream {
        // No caller, no rows: the error is the stream's one item.
        let batch = UserContext::from_task(&context)
            .map_err(DataFusionError::from)
            .and_then(|user| (self.rows)(&user));
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter([batch]),
        ))
    }
}

/// A system table over `rows`.
pub(crate) fn system_table(schema: SchemaRef, rows: RowSource) -> Result<StreamingTable> {
    let partition = Arc::new(SystemRows {
        schema: Arc::clone(&schema),
        rows,
    });
    StreamingTable::try_new(schema, vec![partition])
}
