//! The engine: shared planning state, the schema cache, users.

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, TableProvider};
use datafusion::prelude::SessionContext;
use tenantfusion_core::{AccessLevel, Result, SchemaCache, TableId, UserContext};
use tenantfusion_live::LivePool;

use crate::config::EngineConfig;
use crate::engine_state::EngineState;
use crate::plan_cache::PlanCacheStats;
use crate::session::TenantSession;
use crate::users::UserRegistry;

/// A multi-tenant SQL engine: one provider per table, one caller per session.
///
/// Create it once per process and hand out [`TenantSession`]s per request
/// with [`Engine::session`].
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<EngineState>,
}

impl Engine {
    /// An engine with its default namespace created. With
    /// [`Storage::Directory`](crate::Storage::Directory) it opens with the
    /// namespaces, tables, users and rows the directory holds;
    /// `DATA_CORRUPTED` names the file when they cannot be read back, and
    /// `STORAGE_ERROR` says when another engine has the directory open.
    pub fn new(config: EngineConfig) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(EngineState::open(config)?),
        })
    }

    /// Makes the next write of the catalog log fail, as a full disk would:
    /// for tests of a change that cannot be logged. Nothing without durable
    /// storage.
    #[doc(hidden)]
    pub fn fail_next_catalog_write(&self) {
        if let Some(durable) = &self.inner.durable {
            durable.log.fail_next_append();
        }
    }

    /// Bytes the engine's queries hold in its memory pool now (what
    /// [`EngineConfig::memory_limit`] bounds).
    pub fn memory_reserved(&self) -> usize {
        self.inner.state.runtime_env().memory_pool.reserved()
    }

    /// A handle that runs statements as `user`. Nothing is built per user:
    /// this is two reference-count increments and one small allocation.
    pub fn session(&self, user: UserContext) -> TenantSession {
        TenantSession::new(Arc::clone(&self.inner), user)
    }

    /// The unified cache of tables and their providers.
    pub fn schema_cache(&self) -> &Arc<SchemaCache> {
        &self.inner.cache
    }

    /// The registered users.
    pub fn users(&self) -> &UserRegistry {
        &self.inner.users
    }

    /// Hits, misses, evictions and size of the plan cache.
    pub fn plan_cache_stats(&self) -> PlanCacheStats {
        self.inner.plans.stats()
    }

    /// The live provider pool feeding stream tables, once started (by a
    /// configured source or the first `CREATE SOURCE`).
    pub fn live_pool(&self) -> Option<Arc<LivePool>> {
        self.inner.live_sources.started_pool()
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Offers the host's own `provider` to the engine's users as the shared
    /// table `namespace.table` (names as stored: DataFusion lowercases
    /// unquoted names in SQL), read at `level`: `PUBLIC` (everyone) or
    /// `PRIVATE` (roles service, dba and system). Every scan and insert is the
    /// provider's, for whoever may; its rows are one set for every user.
    ///
    /// Not logged: register it again after each open of a durable engine.
    /// So nothing logged may depend on it: SQL cannot drop or replace it,
    /// build a view over it or grant on it. Errors: `NAMESPACE_NOT_FOUND`,
    /// `TABLE_EXISTS`, `PERMISSION_DENIED` for the engine's own
    /// namespaces, `INVALID_ARGUMENT` for `RESTRICTED`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use datafusion::arrow::datatypes::{DataType, Field, Schema};
    /// # use datafusion::datasource::MemTable;
    /// # use tenantfusion::{AccessLevel, Engine, EngineConfig, Role, UserContext};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let engine = Engine::new(EngineConfig::default()).unwrap();
    /// let schema = Arc::new(Schema::new(vec![Field::new("code", DataType::Utf8, false)]));
    /// let host = Arc::new(MemTable::try_new(schema, vec![vec![]]).unwrap());
    /// engine
    ///     .register_host_table("default", "countries", host, AccessLevel::Public)
    ///     .await
    ///     .unwrap();
    /// let alice = engine.session(UserContext::new("alice", Role::User));
    /// assert!(alice.sql("SELECT * FROM countries").await.is_ok());
    /// # });
    /// ```
    pub async fn register_host_table(
        &self,
        namespace: &str,
        table: &str,
        provider: Arc<dyn TableProvider>,
        level: AccessLevel,
    ) -> Result<()> {
        let id = TableId::new(namespace, table);
        self.inner.register_host_table(id, level, provider).await
    }

    /// The tenantfusion catalog, for registering in another DataFusion context.
    pub fn catalog(&self) -> Arc<dyn CatalogProvider> {
        Arc::clone(&self.inner.catalog) as Arc<dyn CatalogProvider>
    }

    /// Registers the tenantfusion catalog in a host's own `SessionContext`
    /// under [`EngineConfig::catalog_name`] (`tenantfusion` by default), so
    /// `tenantfusion.ns.table` resolves there. Attach a caller to that context's config with
    /// [`attach_user`](crate::attach_user); without one, every scan of a
    /// tenantfusion table fails with `NO_USER_CONTEXT`.
    pub fn register_in(&self, ctx: &SessionContext) {
        ctx.register_catalog(&self.config().catalog_name, self.catalog());
    }
}
