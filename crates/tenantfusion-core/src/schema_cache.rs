//! The unified schema cache: every table's definition and its one provider.
//!
//! Every statement looks its tables up here, so a lookup must stay cheap at
//! 100,000 tables, when it misses the CPU caches. One flat map holds every
//! table under one key made of its namespace and name: one hash (foldhash,
//! seeded per process), one probe, and a key compared where it lies in the
//! map's bucket (names up to [`INLINE_KEY_BYTES`] together are stored
//! inline), instead of a map of namespaces leading to a map per namespace,
//! each hashed with SipHash and each comparing keys behind a pointer.
//! Namespaces, and the names of their tables for listing, are kept beside
//! it; DDL on a namespace's tables holds that namespace's entry, so a table
//! is never added to a namespace being dropped.

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::error::{Result, TenantError};
use crate::ids::{NamespaceId, TableId, TableName};
use crate::table::BaseTableProvider;

/// Bytes of a table's key (4, then namespace and name) kept in the map's
/// bucket itself; longer keys are kept on the heap, and looking one up
/// builds its key on the heap too.
pub const INLINE_KEY_BYTES: usize = 38;

/// `namespace.table` as one map key: the namespace's length (4 bytes, so
/// no two pairs of names share a key), the namespace, the table name. A
/// lookup builds one too: on the stack when it fits inline.
#[derive(Clone)]
enum TableKey {
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_BYTES],
    },
    Heap(Box<[u8]>),
}

impl TableKey {
    fn new(namespace: &str, table: &str) -> Self {
        let total = 4 + namespace.len() + table.len();
        // Names are far shorter than 4 GiB; a longer one saturates, and
        // its key still holds both names in full.
        let prefix = u32::try_from(namespace.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes();
        let parts = [&prefix[..], namespace.as_bytes(), table.as_bytes()];
        if total > INLINE_KEY_BYTES {
            return Self::Heap(parts.concat().into_boxed_slice());
        }
        let mut bytes = [0; INLINE_KEY_BYTES];
        let mut at = 0;
        for part in parts {
            bytes[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        Self::Inline {
            len: total as u8,
            bytes,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(bytes) => bytes,
        }
    }
}

// Hashed and compared as its bytes, as the `[u8]` it borrows as.
impl Hash for TableKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes().hash(state);
    }
}

impl PartialEq for TableKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for TableKey {}

impl Borrow<[u8]> for TableKey {
    fn borrow(&self) -> &[u8] {
        self.bytes()
    }
}

type Providers = DashMap<TableKey, Arc<dyn BaseTableProvider>, foldhash::fast::RandomState>;

/// Namespaces, their tables, and the single provider of each table.
///
/// Lookups borrow `&str` keys and clone one `Arc` (or, with
/// [`is_current`](Self::is_current), only borrow it): no heap allocation
/// for names up to [`INLINE_KEY_BYTES`] together.
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
    tables: Providers,
    /// Each namespace's table names, sorted.
    namespaces: DashMap<NamespaceId, BTreeSet<TableName>>,
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
                e.insert(BTreeSet::new());
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
        let mut names = self
            .namespaces
            .get_mut(id.namespace_id().as_str())
            .ok_or_else(|| TenantError::NamespaceNotFound(id.namespace_id().to_string()))?;
        let key = TableKey::new(id.namespace_id().as_str(), id.table_name().as_str());
        match self.tables.entry(key) {
            dashmap::Entry::Occupied(_) => Err(TenantError::TableExists(id.to_string())),
            dashmap::Entry::Vacant(e) => {
                e.insert(provider);
                names.insert(id.table_name().clone());
                self.providers.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Replaces the provider of an existing table (after ALTER TABLE).
    pub fn replace_provider(&self, provider: Arc<dyn BaseTableProvider>) -> Result<()> {
        let id = Arc::clone(provider.table_id());
        let _names = self
            .namespaces
            .get_mut(id.namespace_id().as_str())
            .ok_or_else(|| TenantError::NamespaceNotFound(id.namespace_id().to_string()))?;
        let key = TableKey::new(id.namespace_id().as_str(), id.table_name().as_str());
        match self.tables.get_mut(key.bytes()) {
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
        let key = TableKey::new(namespace, table);
        self.tables.get(key.bytes()).map(|p| Arc::clone(p.value()))
    }

    /// `f` of the provider of `namespace.table`, borrowed: its reference
    /// count is not touched (on a cold table that is one cache miss
    /// fewer). `f` runs under the read lock of the table's shard, so it
    /// must not change the cache.
    ///
    /// ```
    /// # use tenantfusion_core::SchemaCache;
    /// let cache = SchemaCache::new();
    /// assert_eq!(cache.with_provider("app", "notes", |p| p.table_id().to_string()), None);
    /// ```
    #[inline]
    pub fn with_provider<R>(
        &self,
        namespace: &str,
        table: &str,
        f: impl FnOnce(&Arc<dyn BaseTableProvider>) -> R,
    ) -> Option<R> {
        let key = TableKey::new(namespace, table);
        self.tables.get(key.bytes()).map(|p| f(p.value()))
    }

    /// Whether `provider` is still the one registered under its table's
    /// name (not dropped, nor replaced by another table of that name).
    /// Borrows: the provider's reference count is not touched.
    #[inline]
    pub fn is_current(&self, provider: &Arc<dyn BaseTableProvider>) -> bool {
        let id = provider.table_id();
        let key = TableKey::new(id.namespace_id().as_str(), id.table_name().as_str());
        self.tables
            .get(key.bytes())
            .is_some_and(|current| Arc::ptr_eq(current.value(), provider))
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
        let mut names = self.namespaces.get_mut(namespace)?;
        let key = TableKey::new(namespace, table);
        let (_, provider) = self.tables.remove(key.bytes())?;
        names.remove(table);
        self.providers.fetch_sub(1, Ordering::Relaxed);
        Some(provider)
    }

    /// How many providers exist: one per table, whatever the number of users.
    pub fn provider_count(&self) -> usize {
        self.providers.load(Ordering::Relaxed)
    }

    /// The names of a namespace's tables, sorted; `None` if there is no such namespace.
    pub fn table_names(&self, namespace: &str) -> Option<Vec<TableName>> {
        let names = self.namespaces.get(namespace)?;
        Some(names.iter().cloned().collect())
    }

    /// Every provider, ordered by namespace and table name.
    pub fn all_providers(&self) -> Vec<Arc<dyn BaseTableProvider>> {
        let mut all: Vec<Arc<dyn BaseTableProvider>> = self
            .tables
            .iter()
            .map(|entry| Arc::clone(entry.value()))
            .collect();
        all.sort_by(|a, b| a.table_id().cmp(b.table_id()));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, table: &str) -> Vec<u8> {
        TableKey::new(namespace, table).bytes().to_vec()
    }

    #[test]
    fn no_two_pairs_of_names_share_a_key() {
        assert_ne!(key("ab", "c"), key("a", "bc"));
        assert_ne!(key("a\0", "b"), key("a", "\0b"));
        assert_eq!(key("app", "t1"), key("app", "t1"));
    }

    #[test]
    fn long_keys_live_on_the_heap_and_are_found_alike() {
        let long = "n".repeat(INLINE_KEY_BYTES);
        let inline = TableKey::new("app", "t");
        let heap = TableKey::new(&long, "t");
        assert!(matches!(inline, TableKey::Inline { .. }));
        assert!(matches!(heap, TableKey::Heap(_)));
        // Exactly at the inline limit: still inline.
        let edge = "e".repeat(INLINE_KEY_BYTES - 5);
        assert!(matches!(TableKey::new(&edge, "t"), TableKey::Inline { .. }));
        let map: DashMap<TableKey, u8, foldhash::fast::RandomState> = DashMap::default();
        map.insert(inline, 1);
        map.insert(heap, 2);
        assert_eq!(map.get(key("app", "t").as_slice()).map(|v| *v), Some(1));
        assert_eq!(map.get(key(&long, "t").as_slice()).map(|v| *v), Some(2));
        assert!(map.get(key("app", "u").as_slice()).is_none());
    }
}
