//! `information_schema` (and so `SHOW TABLES`, `SHOW COLUMNS`, `SHOW ALL`),
//! as each caller may see it.
//!
//! DataFusion's own information schema lists every table of every catalog,
//! every tenant's included, so the engine never turns it on
//! (`datafusion.catalog.information_schema` stays false). This schema
//! takes its place under the same name, with the same tables and columns,
//! and builds its rows with DataFusion's own code when a plan executes:
//! over a catalog that shows only what the caller found in the task may
//! read (every table for trusted roles, as `system.tables` does), and with
//! the settings the statement runs with. So plans over it are as
//! user-independent as any other, and the rows are DataFusion's, column
//! for column.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::information_schema::{
    INFORMATION_SCHEMA, INFORMATION_SCHEMA_TABLES, InformationSchemaProvider,
};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProviderList, SchemaProvider, TableProvider,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use tenantfusion_core::{BaseTableProvider, SchemaCache, UserContext};

use crate::system_tables::{ReservedSchema, SYSTEM_NAMESPACE, visible_by_namespace};

/// The reserved namespace of the information schema.
pub const INFORMATION_SCHEMA_NAMESPACE: &str = INFORMATION_SCHEMA;

/// The `information_schema` schema.
#[derive(Debug)]
pub struct InformationSchema {
    /// In the order of DataFusion's `INFORMATION_SCHEMA_TABLES`.
    tables: Vec<Arc<StreamingTable>>,
}

impl InformationSchema {
    /// The schema of the catalog named `catalog`.
    pub(crate) fn new(
        catalog: Arc<str>,
        cache: Arc<SchemaCache>,
        system: Arc<ReservedSchema>,
    ) -> Result<Self> {
        // DataFusion's tables over no catalog at all: only their schemas.
        let shapes = InformationSchemaProvider::new(Arc::new(MemoryCatalogProviderList::new()));
        let tables = INFORMATION_SCHEMA_TABLES
            .iter()
            .map(|&name| {
                let schema = shapes
                    .table(name)
                    .now_or_never()
                    .ok_or_else(|| DataFusionError::Internal(format!("{name} waited")))??
                    .ok_or_else(|| DataFusionError::Internal(format!("no {name}")))?
                    .schema();
                let rows = Arc::new(CallerRows {
                    catalog: Arc::clone(&catalog),
                    table: name,
                    schema: Arc::clone(&schema),
                    cache: Arc::clone(&cache),
                    system: Arc::clone(&system),
                });
                Ok(Arc::new(StreamingTable::try_new(schema, vec![rows])?))
            })
            .collect::<Result<_>>()?;
        Ok(Self { tables })
    }

    pub(crate) fn has_table(name: &str) -> bool {
        INFORMATION_SCHEMA_TABLES.contains(&name)
    }
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        INFORMATION_SCHEMA_TABLES
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(INFORMATION_SCHEMA_TABLES
            .iter()
            .position(|t| *t == name)
            .map(|i| Arc::clone(&self.tables[i]) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        Self::has_table(name)
    }
}

/// One information schema table's rows, made at execution for the caller.
struct CallerRows {
    catalog: Arc<str>,
    table: &'static str,
    schema: SchemaRef,
    cache: Arc<SchemaCache>,
    system: Arc<ReservedSchema>,
}

impl fmt::Debug for CallerRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerRows")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl PartitionStream for CallerRows {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, context: Arc<TaskContext>) -> SendableRecordBatchStream {
        let catalog = UserContext::from_task(&context).map(|user| {
            CallerCatalog::new(Arc::clone(&self.catalog), &user, &self.cache, &self.system)
        });
        let table = self.table;
        let rows = async move {
            let list = Arc::new(CallerCatalogList(Arc::new(catalog?)));
            let provider = InformationSchemaProvider::new(list);
            let table = provider.table(table).await?.ok_or_else(|| {
                DataFusionError::Internal(format!("information_schema.{table} is missing"))
            })?;
            // DataFusion's table scans without reading its session; the
            // task (settings, memory) is the statement's own.
            let session = SessionStateBuilder::new().build();
            let plan = table.scan(&session, None, &[], None).await?;
            plan.execute(0, context)
        };
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::once(rows).try_flatten().boxed(),
        ))
    }
}

/// The engine's one catalog, as one caller sees it.
#[derive(Debug)]
struct CallerCatalogList(Arc<CallerCatalog>);

impl CatalogProviderList for CallerCatalogList {
    fn register_catalog(
        &self,
        name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        let _ = name;
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        vec![self.0.name.to_string()]
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        (name == &*self.0.name).then(|| Arc::clone(&self.0) as Arc<dyn CatalogProvider>)
    }
}

/// The catalog as one caller sees it, decided once per execution: the
/// namespaces holding a table the caller may see (every namespace for
/// trusted roles), each with those tables, and `system`.
#[derive(Debug)]
struct CallerCatalog {
    name: Arc<str>,
    schemas: BTreeMap<String, Arc<CallerSchema>>,
    system: Arc<ReservedSchema>,
}

impl CallerCatalog {
    fn new(
        name: Arc<str>,
        user: &UserContext,
        cache: &SchemaCache,
        system: &Arc<ReservedSchema>,
    ) -> Self {
        let schemas = visible_by_namespace(user, cache)
            .into_iter()
            .map(|(namespace, tables)| (namespace, Arc::new(CallerSchema { tables })))
            .collect();
        Self {
            name,
            schemas,
            system: Arc::clone(system),
        }
    }
}

impl CatalogProvider for CallerCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.schemas.keys().cloned().collect();
        names.push(SYSTEM_NAMESPACE.to_string());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == SYSTEM_NAMESPACE {
            return Some(Arc::clone(&self.system) as Arc<dyn SchemaProvider>);
        }
        let schema = self
            .schemas
            .get(name)
            .cloned()
            .unwrap_or_else(|| Arc::new(CallerSchema { tables: Vec::new() }));
        Some(schema as Arc<dyn SchemaProvider>)
    }
}

/// One namespace's tables the caller may see.
#[derive(Debug)]
struct CallerSchema {
    tables: Vec<Arc<dyn BaseTableProvider>>,
}

#[async_trait]
impl SchemaProvider for CallerSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tables
            .iter()
            .map(|t| t.core().table_name().to_string())
            .collect();
        names.sort();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .tables
            .iter()
            .find(|t| t.core().table_name().as_str() == name)
            .map(|t| Arc::clone(t) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables
            .iter()
            .any(|t| t.core().table_name().as_str() == name)
    }
}
