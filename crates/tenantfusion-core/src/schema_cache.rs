//! The unified schema cache: every table's definition and its one provider.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::error::{Result, TenantError};
use crate::ids::{NamespaceId, TableId, TableName};
use crate::table::BaseTableProvider;

type Tables = DashMap<TableName, Arc<dyn BaseTableProvider>>;

/// Namespaces, their tables, and the single provider of each table.
///
/// Lookups borrow `&str` keys and clone one `Arc`: no heap allocation.
///
/// ```
/// use tenantfusion_core::SchemaCache;
/// let cache = SchemaCache::new();
/// cache.create_namespace("app").unwrap();
/// assert!(cache.namespace_exists("app"));
/// assert!(cache.get_provider("app", "orders").is_none());
/// assert_eq!(cache.provider_count(), 0);
/// ```
#[derive(Default)]
pub struct SchemaCache {
    namespaces: DashMap<NamespaceId, Arc<Tables>>,
    providers: AtomicUsize,
}

impl std::fmt::Debug for SchemaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaCache")
            .field("namespaces", &self.namespaces.len())
            .field("providers", &self.provider_count())
            .finish()
    }
}

impl SchemaCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a namespace; `NAMESPACE_EXISTS` if it is there already.
    pub fn create_namespace(&self, namespace: impl Into<NamespaceId>) -> Result<()> {
        let namespace = namespace.into();
        match self.namespaces.entry(namespace) {
            dashmap::Entry::Occupied(e) => Err(TenantError::NamespaceExists(e.key().to_string())),
            dashmap::Entry::Vacant(e) => {
                e.insert(Arc::new(DashMap::new()));
                Ok(())
            }
        }
    }

    /// Removes an empty namespace.
    pub fn drop_namespace(&self, namespace: &str) -> Result<()> {
        let removed = self
            .namespaces
            .remove_if(namespace, |_, tables| tables.is_empty());
        match removed {
            Some(_) => Ok(()),
            None if self.namespace_exists(namespace) => {
                Err(TenantError::NamespaceNotEmpty(namespace.to_string()))
            }
            None => Err(TenantError::NamespaceNotFound(namespace.to_string())),
        }
    }

    /// Whether the namespace exists.
    pub fn namespace_exists(&self, namespace: &str) -> bool {
        self.namespaces.contains_key(namespace)
    }

    /// All namespaces, sorted.
    pub fn namespaces(&self) -> Vec<NamespaceId> {
        let mut all: Vec<_> = self.namespaces.iter().map(|e| e.key().clone()).collect();
        all.sort();
        all
    }

    /// Registers the one provider of a new table, under the id in its core.
    pub fn insert_provider(&self, provider: Arc<dyn BaseTableProvider>) -> Result<()> {
        let id = Arc::clone(provider.table_id());
        // Holding the namespace entry keeps a concurrent DROP NAMESPACE out.
        let tables = self
            .namespaces
            .get(id.namespace_id().as_str())
            .ok_or_else(|| TenantError::NamespaceNotFound(id.namespace_id().to_string()))?;
        match tables.entry(id.table_name().clone()) {
            dashmap::Entry::Occupied(_) => Err(TenantError::TableExists(id.to_string())),
            dashmap::Entry::Vacant(e) => {
                e.insert(provider);
                self.providers.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Replaces the provider of an existing table (after ALTER TABLE).
    pub fn replace_provider(&self, provider: Arc<dyn BaseTableProvider>) -> Result<()> {
        let id = Arc::clone(provider.table_id());
        let tables = self
            .namespaces
            .get(id.namespace_id().as_str())
            .ok_or_else(|| TenantError::NamespaceNotFound(id.namespace_id().to_string()))?;
        match tables.get_mut(id.table_name().as_str()) {
            Some(mut slot) => {
                *slot = provider;
                Ok(())
            }
            None => Err(TenantError::TableNotFound(id.to_string())),
        }
    }

    /// The provider of `namespace.table`, shared by every caller.
    #[inline]
    pub fn get_provider(&self, namespace: &str, table: &str) -> Option<Arc<dyn BaseTableProvider>> {
        let tables = self.namespaces.get(namespace)?;
        tables.get(table).map(|p| Arc::clone(p.value()))
    }

    /// The provider of `namespace.table`, or the precise reason there is
    /// none: `TABLE_NOT_FOUND`, or `NAMESPACE_NOT_FOUND` when the namespace
    /// is missing too.
    pub fn lookup(&self, namespace: &str, table: &str) -> Result<Arc<dyn BaseTableProvider>> {
        self.get_provider(namespace, table).ok_or_else(|| {
            if self.namespace_exists(namespace) {
                TenantError::TableNotFound(format!("{namespace}.{table}"))
            } else {
                TenantError::NamespaceNotFound(namespace.to_string())
            }
        })
    }

    /// The provider of a table by id.
    pub fn get_provider_by_id(&self, id: &TableId) -> Option<Arc<dyn BaseTableProvider>> {
        self.get_provider(id.namespace_id().as_str(), id.table_name().as_str())
    }

    /// Removes a table (DROP TABLE, or before re-registering after ALTER);
    /// returns its provider.
    pub fn invalidate(&self, namespace: &str, table: &str) -> Option<Arc<dyn BaseTableProvider>> {
        let tables = self.namespaces.get(namespace)?;
        let (_, provider) = tables.remove(table)?;
        self.providers.fetch_sub(1, Ordering::Relaxed);
        Some(provider)
    }

    /// How many providers exist: one per table, whatever the number of users.
    pub fn provider_count(&self) -> usize {
        self.providers.load(Ordering::Relaxed)
    }

    /// The names of a namespace's tables, sorted; `None` if there is no such namespace.
    pub fn table_names(&self, namespace: &str) -> Option<Vec<TableName>> {
        let tables = self.namespaces.get(namespace)?;
        let mut names: Vec<_> = tables.iter().map(|e| e.key().clone()).collect();
        names.sort();
        Some(names)
    }

    /// Every provider, ordered by namespace and table name.
    pub fn all_providers(&self) -> Vec<Arc<dyn BaseTableProvider>> {
        let mut all: Vec<Arc<dyn BaseTableProvider>> = self
            .namespaces
            .iter()
            .flat_map(|ns| {
                ns.value()
                    .iter()
                    .map(|t| Arc::clone(t.value()))
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by(|a, b| a.table_id().cmp(b.table_id()));
        all
    }
}
