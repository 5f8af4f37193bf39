//! What every session of an engine shares: the planning state, the schema
//! cache, users, the plan cache, the live pool, durable storage, and the
//! one lock that orders changes to what exists.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProviderList, TableProvider,
};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
use datafusion::prelude::SessionConfig;
use tenantfusion_core::{
    AccessLevel, Result, SchemaCache, TableId, TableType, TenantError, UserContext, UserId,
};
use tenantfusion_store::{CatalogEvent, Durability, StorageRoot, WalOptions};

use crate::catalog::{
    TenantCatalog, refuse_reserved_namespace, validate_catalog_name, validate_namespace,
};
use crate::catalog_changes::{BuiltTable, CatalogChanges, DurableCatalog, replay};
use crate::config::{EngineConfig, Storage};
use crate::external_table::ExternalTable;
use crate::information_schema::InformationSchema;
use crate::limits::{Admission, CancelHandle, Deadline, Governor};
use crate::live_query::LiveQueries;
use crate::live_sources::LiveSources;
use crate::plan_cache::PlanCache;
use crate::server_files::ServerFiles;
use crate::system_tables::ReservedSchema;
use crate::users::UserRegistry;

#[derive(Debug)]
pub(crate) struct EngineState {
    pub(crate) config: EngineConfig,
    /// Plans every statement. It holds no user: identity is attached to the
    /// task context of each execution, so it is shared by all sessions.
    pub(crate) state: SessionState,
    pub(crate) cache: Arc<SchemaCache>,
    pub(crate) users: Arc<UserRegistry>,
    pub(crate) catalog: Arc<TenantCatalog>,
    pub(crate) plans: PlanCache,
    /// The directories administrators may read and write files in.
    pub(crate) server_files: Arc<ServerFiles>,
    /// The settings key of sessions that never ran `SET` (allocated once).
    pub(crate) default_settings: Arc<str>,
    /// The live pool and the feeds of source-bound stream tables.
    pub(crate) live_sources: Arc<LiveSources>,
    /// Running live queries (SUBSCRIBE).
    pub(crate) live_queries: Arc<LiveQueries>,
    /// The storage root and catalog log, unless storage is in memory.
    pub(crate) durable: Option<DurableCatalog>,
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

impl EngineState {
    /// The state of a new engine; see [`Engine::new`](crate::Engine::new).
    pub(crate) fn open(config: EngineConfig) -> Result<Self> {
        validate_catalog_name(&config.catalog_name)?;
        validate_namespace(&config.default_namespace)?;
        let cache = Arc::new(SchemaCache::new());
        cache.create_namespace(config.default_namespace.as_str())?;
        let users = Arc::new(UserRegistry::default());
        let live_sources = Arc::new(LiveSources::new(
            config.live_pool.clone(),
            &config.live_sources,
            config.stream_linger,
        )?);
        let live_queries = Arc::new(LiveQueries::default());
        let system = Arc::new(ReservedSchema::system(
            Arc::clone(&cache),
            Arc::clone(&users),
            Arc::clone(&live_sources),
            Arc::clone(&live_queries),
        )?);
        let information = Arc::new(InformationSchema::new(
            Arc::from(config.catalog_name.as_str()),
            Arc::clone(&cache),
            Arc::clone(&system),
        )?);
        let pg_catalog = Arc::new(crate::pg_catalog::schema(Arc::clone(&cache))?);
        let catalog = Arc::new(TenantCatalog::new(
            Arc::clone(&cache),
            system,
            information,
            pg_catalog,
        ));

        let mut session_config = SessionConfig::new()
            .with_default_catalog_and_schema(&config.catalog_name, &config.default_namespace)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(false)
            .with_round_robin_repartition(config.round_robin_repartition);
        if let Some(partitions) = config.target_partitions {
            session_config = session_config.with_target_partitions(partitions);
        }
        // No cache of directory listings: an external table's directory is
        // listed each time a statement plans it, so a file added since
        // (by COPY, or by anyone) is read. DataFusion's default keeps the
        // first listing until the cache fills.
        let caches = CacheManagerConfig::default().with_list_files_cache_limit(0);
        let mut runtime = RuntimeEnvBuilder::new().with_cache_manager(caches);
        if let Some(limit) = config.memory_limit {
            runtime = runtime.with_memory_limit(limit, 1.0);
        }
        let runtime = runtime.build_arc()?;
        let catalogs = Arc::new(MemoryCatalogProviderList::new());
        catalogs.register_catalog(
            config.catalog_name.clone(),
            Arc::clone(&catalog) as Arc<dyn CatalogProvider>,
        );
        let mut state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_runtime_env(runtime)
            .with_catalog_list(catalogs as Arc<dyn CatalogProviderList>)
            .with_default_features()
            .build();
        for function in crate::pg_catalog::functions() {
            state.register_udf(Arc::new(function))?;
        }
        for function in &config.scalar_functions {
            state.register_udf(Arc::clone(function))?;
        }
        let plans = PlanCache::new(config.plan_cache);
        let logs = |durability: &Durability| WalOptions {
            durability: *durability,
            committers: config.log_committers,
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
        if let Some(root) = &root {
            root.set_row_group_cache_bytes(config.row_group_cache_bytes);
        }
        let storage_dir = match &config.storage {
            Storage::Memory => None,
            Storage::Directory { path, .. } | Storage::S3 { path, .. } => Some(path.as_path()),
        };
        let server_files = Arc::new(ServerFiles::new(&config.server_files, storage_dir)?);
        let durable = match root {
            None => None,
            Some(root) => {
                let changes = CatalogChanges {
                    config: &config,
                    state: &state,
                    cache: &cache,
                    users: &users,
                    live_sources: &live_sources,
                    plans: &plans,
                    server_files: &server_files,
                    root: Some(&root),
                };
                let log = replay(&changes, &root)?;
                Some(DurableCatalog { root, log })
            }
        };
        let unfinished_drops = AtomicBool::new(!users.forgetting().is_empty());
        Ok(Self {
            plans,
            server_files,
            durable,
            ddl: tokio::sync::Mutex::new(()),
            unfinished_drops,
            finishing: tokio::sync::Mutex::new(()),
            admission: Admission::new(config.statement_limits.per_user),
            live_sources,
            live_queries,
            default_settings: Arc::from(""),
            config,
            state,
            cache,
            users,
            catalog,
        })
    }

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

    /// The view of this state through which changes are prepared, logged
    /// and applied.
    pub(crate) fn changes(&self) -> CatalogChanges<'_> {
        CatalogChanges {
            config: &self.config,
            state: &self.state,
            cache: &self.cache,
            users: &self.users,
            live_sources: &self.live_sources,
            plans: &self.plans,
            server_files: &self.server_files,
            root: self.durable.as_ref().map(|d| &d.root),
        }
    }

    /// Makes the change `event`: checks and prepares it, logs it (with
    /// durable storage; returns once it is durable), then applies it.
    /// Changes are made one at a time.
    pub(crate) async fn commit(self: &Arc<Self>, event: CatalogEvent) -> Result<()> {
        self.commit_built(event, None).await
    }

    /// [`commit`](Self::commit) of a `CreateTable` whose table was built
    /// (and filled) beforehand; see [`CatalogChanges::apply`].
    ///
    /// Runs on a task of its own: once begun, a change is logged and
    /// applied (or neither) whatever becomes of its caller. A caller
    /// dropped between the two would leave the change logged and not
    /// applied, and the log would then hold, say, two CREATEs of one table.
    pub(crate) async fn commit_built(
        self: &Arc<Self>,
        event: CatalogEvent,
        built: Option<BuiltTable>,
    ) -> Result<()> {
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let _one_at_a_time = engine.ddl.lock().await;
            let log = engine.durable.as_ref().map(|d| &d.log);
            engine.changes().commit(&event, built, log).await
        })
        .await
        .map_err(|e| TenantError::Internal(format!("a change's task ended abnormally: {e}")))?
    }

    /// See [`Engine::register_host_table`](crate::Engine::register_host_table).
    pub(crate) async fn register_host_table(
        &self,
        id: TableId,
        level: AccessLevel,
        provider: Arc<dyn TableProvider>,
    ) -> Result<()> {
        refuse_reserved_namespace(id.namespace_id().as_str())?;
        let table = ExternalTable::host(id, level, provider)?;
        // Between a CREATE's check of its name and its install, no table
        // may take the name.
        let _one_at_a_time = self.ddl.lock().await;
        self.cache.insert_provider(Arc::new(table))
    }

    /// Throws away a table built but never installed: its feed and storage.
    pub(crate) fn discard(&self, built: BuiltTable) {
        self.changes().discard(built);
    }

    /// A storage name for a new table's rows, when they are durable.
    pub(crate) fn new_storage(&self, table: &TableId, kind: TableType) -> Option<String> {
        let durable = self.durable.as_ref()?;
        (kind != TableType::Stream).then(|| durable.root.new_storage_name(table))
    }
}
