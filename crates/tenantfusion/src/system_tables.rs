//! `system.tables` and `system.users`: what exists, as the caller may see it.
//!
//! Rows are computed when the plan executes, for the caller found in the task,
//! so a plan over a system table is as user-independent as any other.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType as DFTableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use tenantfusion_core::{Access, SchemaCache, TableType, UserContext};
use tenantfusion_tables::{SharedTableProvider, leaf_properties, leaf_with_new_children};

use crate::users::UserRegistry;

/// The reserved namespace of the system tables.
pub const SYSTEM_NAMESPACE: &str = "system";

/// Builds a system table's rows for one caller.
type RowSource = Arc<dyn Fn(&UserContext) -> Result<RecordBatch> + Send + Sync>;

/// The `system` schema.
#[derive(Debug)]
pub struct SystemSchema {
    tables: Arc<SystemTable>,
    users: Arc<SystemTable>,
}

impl SystemSchema {
    pub(crate) fn new(cache: Arc<SchemaCache>, users: Arc<UserRegistry>) -> Self {
        Self {
            tables: Arc::new(tables_table(cache)),
            users: Arc::new(users_table(users)),
        }
    }

    pub(crate) fn has_table(name: &str) -> bool {
        matches!(name, "tables" | "users")
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        vec!["tables".to_string(), "users".to_string()]
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(match name {
            "tables" => Some(Arc::clone(&self.tables) as Arc<dyn TableProvider>),
            "users" => Some(Arc::clone(&self.users) as Arc<dyn TableProvider>),
            _ => None,
        })
    }

    fn table_exist(&self, name: &str) -> bool {
        Self::has_table(name)
    }
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `system.tables`: admins and services see every table; others see the user
/// tables (their own rows) and the shared tables they may read.
fn tables_table(cache: Arc<SchemaCache>) -> SystemTable {
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
            if !user.role().is_trusted() && provider.authorize(user, Access::Read).is_err() {
                continue;
            }
            let core = provider.core();
            ns.append_value(core.namespace().as_str());
            name.append_value(core.table_name().as_str());
            kind.append_value(core.table_type.as_str());
            let shared = (core.table_type == TableType::Shared)
                .then(|| {
                    (provider.as_ref() as &dyn TableProvider).downcast_ref::<SharedTableProvider>()
                })
                .flatten();
            level.append_option(shared.map(|s| s.access().level().as_str()));
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
    SystemTable { schema, rows }
}

/// `system.users`: admins see everyone; others see only themselves.
fn users_table(users: Arc<UserRegistry>) -> SystemTable {
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
    SystemTable { schema, rows }
}

/// A read-only table whose rows are computed per caller at execution.
struct SystemTable {
    schema: SchemaRef,
    rows: RowSource,
}

impl fmt::Debug for SystemTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemTable")
            .field("schema", &self.schema)
            .finish()
    }
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> DFTableType {
        DFTableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        Ok(Arc::new(SystemScanExec {
            rows: Arc::clone(&self.rows),
            projection: projection.cloned(),
            properties: leaf_properties(schema),
        }))
    }
}

struct SystemScanExec {
    rows: RowSource,
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for SystemScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SystemScanExec")
    }
}

impl DisplayAs for SystemScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("SystemScanExec")
    }
}

impl ExecutionPlan for SystemScanExec {
    fn name(&self) -> &str {
        "SystemScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        leaf_with_new_children(self, children)
    }

    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let user = UserContext::from_task(&context)?;
        let mut batch = (self.rows)(&user)?;
        if let Some(p) = &self.projection {
            batch = batch.project(p)?;
        }
        Ok(Box::pin(MemoryStream::try_new(
            vec![batch],
            self.schema(),
            None,
        )?))
    }
}
