//! DataFusion's view of the schema cache: a catalog whose schemas are namespaces.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::TableReference;
use datafusion::error::Result;
use tenantfusion_core::{NamespaceId, SchemaCache, TenantError};

use crate::information_schema::{INFORMATION_SCHEMA_NAMESPACE, InformationSchema};
use crate::pg_catalog::{PG_CATALOG_NAMESPACE, PG_CATALOG_TABLES};
use crate::system_tables::{ReservedSchema, SYSTEM_NAMESPACE, SYSTEM_TABLES};

/// Whether `name` is a namespace of the engine's own (`system`,
/// `information_schema`, `pg_catalog`): read-only, never created or
/// dropped by SQL.
pub(crate) fn is_reserved_namespace(name: &str) -> bool {
    name == SYSTEM_NAMESPACE || name == INFORMATION_SCHEMA_NAMESPACE || name == PG_CATALOG_NAMESPACE
}

/// Whether the reserved namespace `namespace` has the table `table`.
pub(crate) fn reserved_table_exists(namespace: &str, table: &str) -> bool {
    match namespace {
        SYSTEM_NAMESPACE => SYSTEM_TABLES.contains(&table),
        INFORMATION_SCHEMA_NAMESPACE => InformationSchema::has_table(table),
        PG_CATALOG_NAMESPACE => PG_CATALOG_TABLES.contains(&table),
        _ => false,
    }
}

/// Refuses to make anything in a reserved namespace (see
/// [`is_reserved_namespace`]).
pub(crate) fn refuse_reserved_namespace(name: &str) -> tenantfusion_core::Result<()> {
    if is_reserved_namespace(name) {
        return Err(TenantError::PermissionDenied(format!(
            "namespace '{name}' is reserved for the engine's own tables"
        )));
    }
    Ok(())
}

/// A namespace name a caller or the configuration may use: not reserved,
/// non-empty, no `.` (names are split on it).
pub(crate) fn validate_namespace(name: &str) -> tenantfusion_core::Result<()> {
    refuse_reserved_namespace(name)?;
    validate_name("namespace", name)
}

/// A catalog name from the configuration: non-empty, no `.`.
pub(crate) fn validate_catalog_name(name: &str) -> tenantfusion_core::Result<()> {
    validate_name("catalog", name)
}

fn validate_name(what: &str, name: &str) -> tenantfusion_core::Result<()> {
    if name.is_empty() || name.contains('.') {
        return Err(TenantError::InvalidArgument(format!(
            "{what} name '{name}' must be non-empty and contain no '.'"
        )));
    }
    Ok(())
}

/// The name the tenantfusion catalog is registered under unless
/// [`EngineConfig::catalog_name`](crate::EngineConfig::catalog_name) says
/// another.
pub const CATALOG_NAME: &str = "tenantfusion";

/// `(namespace, table)` of a reference, bare names in `default_namespace`;
/// catalogs other than `catalog_name` do not exist here.
pub(crate) fn resolve_table_name<'a>(
    reference: &'a TableReference,
    catalog_name: &str,
    default_namespace: &'a str,
) -> tenantfusion_core::Result<(&'a str, &'a str)> {
    match reference {
        TableReference::Bare { table } => Ok((default_namespace, table)),
        TableReference::Partial { schema, table } => Ok((schema, table)),
        TableReference::Full {
            catalog,
            schema,
            table,
        } if catalog.as_ref() == catalog_name => Ok((schema, table)),
        TableReference::Full { .. } => Err(TenantError::TableNotFound(reference.to_string())),
    }
}

/// Resolves `namespace.table` through the [`SchemaCache`]. Tables are created
/// and dropped through the engine's SQL, never through DataFusion's catalog API.
#[derive(Debug)]
pub struct TenantCatalog {
    cache: Arc<SchemaCache>,
    system: Arc<ReservedSchema>,
    information: Arc<InformationSchema>,
    pg_catalog: Arc<ReservedSchema>,
}

impl TenantCatalog {
    pub(crate) fn new(
        cache: Arc<SchemaCache>,
        system: Arc<ReservedSchema>,
        information: Arc<InformationSchema>,
        pg_catalog: Arc<ReservedSchema>,
    ) -> Self {
        Self {
            cache,
            system,
            information,
            pg_catalog,
        }
    }
}

impl CatalogProvider for TenantCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .cache
            .namespaces()
            .iter()
            .map(|n| n.to_string())
            .collect();
        names.push(SYSTEM_NAMESPACE.to_string());
        names.push(INFORMATION_SCHEMA_NAMESPACE.to_string());
        names.push(PG_CATALOG_NAMESPACE.to_string());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == SYSTEM_NAMESPACE {
            return Some(Arc::clone(&self.system) as Arc<dyn SchemaProvider>);
        }
        if name == INFORMATION_SCHEMA_NAMESPACE {
            return Some(Arc::clone(&self.information) as Arc<dyn SchemaProvider>);
        }
        if name == PG_CATALOG_NAMESPACE {
            return Some(Arc::clone(&self.pg_catalog) as Arc<dyn SchemaProvider>);
        }
        self.cache.namespace_exists(name).then(|| {
            Arc::new(NamespaceSchema {
                cache: Arc::clone(&self.cache),
                namespace: NamespaceId::new(name),
            }) as Arc<dyn SchemaProvider>
        })
    }

    fn register_schema(
        &self,
        name: &str,
        _schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        Err(TenantError::NotSupported(format!(
            "namespace '{name}' must be created with CREATE NAMESPACE through the engine"
        ))
        .into())
    }
}

/// One namespace's tables, as a DataFusion schema.
#[derive(Debug)]
struct NamespaceSchema {
    cache: Arc<SchemaCache>,
    namespace: NamespaceId,
}

#[async_trait]
impl SchemaProvider for NamespaceSchema {
    fn table_names(&self) -> Vec<String> {
        self.cache
            .table_names(self.namespace.as_str())
            .unwrap_or_default()
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .cache
            .get_provider(self.namespace.as_str(), name)
            .map(|p| p as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.cache
            .with_provider(self.namespace.as_str(), name, |_| ())
            .is_some()
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        Err(TenantError::NotSupported(format!(
            "table '{}.{name}' must be created with CREATE TABLE through the engine",
            self.namespace
        ))
        .into())
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Err(TenantError::NotSupported(format!(
            "table '{}.{name}' must be dropped with DROP TABLE through the engine",
            self.namespace
        ))
        .into())
    }
}
