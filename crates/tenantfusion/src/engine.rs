//! The engine: shared planning state, the schema cache, users.

use std::sync::Arc;

use datafusion::catalog::CatalogProvider;
use datafusion::prelude::SessionContext;
use tenantfusion_core::{Result, SchemaCache, UserContext};
use tenantfusion_live::LivePool;

use crate::catalog::CATALOG_NAME;
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

    /// The tenantfusion catalog, for registering in another DataFusion context.
    pub fn catalog(&self) -> Arc<dyn CatalogProvider> {
        Arc::clone(&self.inner.catalog) as Arc<dyn CatalogProvider>
    }

    /// Registers the tenantfusion catalog in a host's own `SessionContext`
    /// under the name `tenantfusion`, so `tenantfusion.ns.table` resolves
    /// there. Attach a caller to that context's config with
    /// [`attach_user`](crate::attach_user); without one, every scan of a
    /// tenantfusion table fails with `NO_USER_CONTEXT`.
    pub fn register_in(&self, ctx: &SessionContext) {
        ctx.register_catalog(CATALOG_NAME, self.catalog());
    }
}
