//! The engine: shared planning state, the schema cache, users.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::catalog::{CatalogProvider, CatalogProviderList, MemoryCatalogProviderList};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};
use tenantfusion_core::{Result, SchemaCache, UserContext, UserId};
use tenantfusion_live::LivePool;

use tenantfusion_store::{CatalogEvent, Durability, StorageRoot, WalOptions};

use crate::catalog::{CATALOG_NAME, TenantCatalog};
use crate::changes::{Changes, Durable, replay};
use crate::config::{EngineConfig, Storage};
use crate::limits::{Admission, CancelHandle, Deadline, Governor};
use crate::live_query::LiveQueries;
use crate::plan_cache::{PlanCache, PlanCacheStats};
use crate::session::TenantSession;
use crate::streams::Streams;
use crate::system_tables::SystemSchema;
use crate::users::UserRegistry;

/// A multi-tenant SQL engine: one provider per table, one caller per session.
///
/// Create it once per process and hand out [`TenantSession`]s per request
/// with [`Engine::session`].
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

#[derive(Debug)]
pub(crate) struct EngineInner {
    pub(crate) config: EngineConfig,
    /// Plans every statement. It holds no user: identity is attached to the
    /// task context of each execution, so it is shared by all sessions.
    pub(crate) state: SessionState,
    pub(crate) cache: Arc<SchemaCache>,
    pub(crate) users: Arc<UserRegistry>,
    pub(crate) catalog: Arc<TenantCatalog>,
    pub(crate) plans: PlanCache,
    /// The settings key of sessions that never ran `SET` (allocated once).
    pub(crate) default_settings: Arc<str>,
    /// The live pool and the feeds of source-bound stream tables.
    pub(crate) streams: Arc<Streams>,
    /// Running live queries (SUBSCRIBE).
    pub(crate) live_queries: Arc<LiveQueries>,
    /// The storage root and catalog log, unless storage is in memory.
    pub(crate) durable: Option<Durable>,
    /// Held while a change to what exists is applied and logged.
    pub(crate) ddl: tokio::sync::Mutex<()>,
    /// Set when the catalog log ended inside a `DROP USER` (the user gone,
    /// not all their rows): the first statement finishes the job.
    pub(crate) unfinished_drops: AtomicBool,
    /// Held while unfinished drops are finished.
    finishing: tokio::sync::Mutex<()>,
    /// Statements running per user.
    admission: Arc<Admission>,
}

impl Engine {
    /// An engine with its default namespace created. With
    /// [`Storage::Directory`](crate::Storage::Directory) it opens with the
    /// namespaces, tables, users and rows the directory holds;
    /// `DATA_CORRUPTED` names the file when they cannot be read back, and
    /// `STORAGE_ERROR` says when another engine has the directory open.
    pub fn new(config: EngineConfig) -> Result<Self> {
        let cache = Arc::new(SchemaCache::new());
        cache.create_namespace(config.default_namespace.as_str())?;
        let users = Arc::new(UserRegistry::default());
        let streams = Arc::new(Streams::new(
            config.live_pool.clone(),
            &config.live_sources,
            config.stream_linger,
        )?);
        let live_queries = Arc::new(LiveQueries::default());
        let system = Arc::new(SystemSchema::new(
            Arc::clone(&cache),
            Arc::clone(&users),
            Arc::clone(&streams),
            Arc::clone(&live_queries),
        ));
        let catalog = Arc::new(TenantCatalog::new(Arc::clone(&cache), system));

        let mut session_config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG_NAME, &config.default_namespace)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(false)
            .with_round_robin_repartition(config.round_robin_repartition);
        if let Some(partitions) = config.target_partitions {
            session_config = session_config.with_target_partitions(partitions);
        }
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(limit) = config.memory_limit {
            runtime = runtime.with_memory_limit(limit, 1.0);
        }
        let runtime = runtime.build_arc()?;
        let catalogs = Arc::new(MemoryCatalogProviderList::new());
        catalogs.register_catalog(
            CATALOG_NAME.to_string(),
            Arc::clone(&catalog) as Arc<dyn CatalogProvider>,
        );
        let state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_runtime_env(runtime)
            .with_catalog_list(catalogs as Arc<dyn CatalogProviderList>)
            .with_default_features()
            .build();
        let plans = PlanCache::new(config.plan_cache);
        let logs = |durability: &Durability| WalOptions {
            durability: *durability,
            ..WalOptions::default()
        };
        let root = match &config.storage {
            Storage::Memory => None,
            Storage::Directory { path, durability } => {
                Some(StorageRoot::open(path, logs(durability))?)
            }
            Storage::S3 {
                url,
                path,
                durability,
                options,
            } => Some(StorageRoot::open_s3(path, logs(durability), url, options)?),
        };
        let durable = match root {
            None => None,
            Some(root) => {
                let changes = Changes {
                    config: &config,
                    state: &state,
                    cache: &cache,
                    users: &users,
                    streams: &streams,
                    plans: &plans,
                    root: Some(&root),
                };
                let log = replay(&changes, &root)?;
                Some(Durable { root, log })
            }
        };
        let unfinished_drops = AtomicBool::new(!users.forgetting().is_empty());
        Ok(Self {
            inner: Arc::new(EngineInner {
                plans,
                durable,
                ddl: tokio::sync::Mutex::new(()),
                unfinished_drops,
                finishing: tokio::sync::Mutex::new(()),
                admission: Admission::new(config.statement_limits.per_user),
                streams,
                live_queries,
                default_settings: Arc::from(""),
                config,
                state,
                cache,
                users,
                catalog,
            }),
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
        self.inner.streams.started_pool()
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

impl EngineInner {
    /// What a statement of `user` handed in now runs under; refused when
    /// the user has as many statements running as they may. Unfinished
    /// drops are finished first (see [`finish_drops`](Self::finish_drops)).
    pub(crate) async fn begin(self: &Arc<Self>, user: &UserContext) -> Result<Governor> {
        self.finish_drops().await?;
        let limits = &self.config.statement_limits;
        Ok(Governor {
            running: self.admission.admit(user.user_id())?,
            deadline: limits
                .timeout
                .map(|limit| Deadline::after(Arc::clone(&self.config.clock), limit)),
            cancel: CancelHandle::default(),
        })
    }

    /// Lets every table go of the rows of `name`, a user dropped (and
    /// logged as dropped) before, then logs that they are gone. Safe to run
    /// again after a failure or a crash part of the way through.
    pub(crate) async fn forget_user(self: &Arc<Self>, name: &str) -> Result<()> {
        let user = UserId::new(name);
        for provider in self.cache.all_providers() {
            provider.forget_user(&user).await?;
        }
        self.commit(CatalogEvent::UserForgotten { name: name.into() })
            .await
    }

    /// Finishes the `DROP USER`s the engine opened in the middle of, before
    /// any statement runs: until then a new user of that name (or an
    /// administrator) could see the old user's rows. One load of an atomic
    /// flag once they are done.
    pub(crate) async fn finish_drops(self: &Arc<Self>) -> Result<()> {
        if !self.unfinished_drops.load(Ordering::Acquire) {
            return Ok(());
        }
        let _one_at_a_time = self.finishing.lock().await;
        for name in self.users.forgetting() {
            self.forget_user(&name).await?;
        }
        self.unfinished_drops.store(false, Ordering::Release);
        Ok(())
    }
}
