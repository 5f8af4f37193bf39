//! Changes to what exists (namespaces, tables, users, grants, sources) as
//! [`CatalogEvent`]s: the one place they are applied, whether a statement
//! makes them or the catalog log replays them on open.
//!
//! A statement checks who may make the change, then [`EngineState::commit`]
//! applies it and, with durable storage, logs it before answering. Changes
//! are made one at a time so the log holds them in the order they were
//! applied, which is the order replay applies them in.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::DFSchema;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use futures::FutureExt;
use tenantfusion_core::{
    AccessLevel, BaseTableProvider, Result, SchemaCache, StorageId, TableId, TableType,
    TenantError, UserId,
};
use tenantfusion_live::{LiveConfig, LivePool};
use tenantfusion_store::{CatalogEvent, CatalogLog, StorageRoot, TableDef};
use tenantfusion_tables::{
    MemoryPartitionStore, PartitionStore, SharedTableProvider, StreamTableProvider,
    UserTableProvider,
};

use crate::config::EngineConfig;
use crate::external_table::{ExternalTable, is_host_table, split_access_level};
use crate::live_sources::{LiveSources, SourceTopics, from_live};
use crate::plan_cache::PlanCache;
use crate::server_files::ServerFiles;
use crate::table_options::{TableOptions, shared_access};
use crate::users::UserRegistry;
use crate::view::{View, tables_read};

/// The durable side of an engine: its storage root and catalog log.
#[derive(Debug)]
pub(crate) struct DurableCatalog {
    pub(crate) root: StorageRoot,
    pub(crate) log: CatalogLog,
}

/// What applying a change touches.
pub(crate) struct CatalogChanges<'a> {
    pub(crate) config: &'a EngineConfig,
    pub(crate) state: &'a SessionState,
    pub(crate) cache: &'a Arc<SchemaCache>,
    pub(crate) users: &'a UserRegistry,
    pub(crate) live_sources: &'a LiveSources,
    pub(crate) plans: &'a PlanCache,
    pub(crate) server_files: &'a Arc<ServerFiles>,
    pub(crate) root: Option<&'a StorageRoot>,
}

impl CatalogChanges<'_> {
    /// Applies `event` to the engine's state, checking that it can be made
    /// (the table exists, the user is registered, ...). Returns the storage
    /// of tables it removed: deleted once the change is logged. A
    /// `CreateTable` installs `built` when given (a table built and filled
    /// beforehand), else builds the table from its definition.
    pub(crate) fn apply(
        &self,
        event: &CatalogEvent,
        built: Option<BuiltTable>,
    ) -> Result<Vec<String>> {
        match event {
            CatalogEvent::CreateNamespace { name } => self.cache.create_namespace(name.as_str()),
            CatalogEvent::DropNamespace { name } => self.cache.drop_namespace(name),
            CatalogEvent::CreateTable { def, replace } => {
                self.check_create(def, *replace)?;
                let built = match built {
                    Some(built) => built,
                    None => self.build_table(def)?,
                };
                return self.install(built);
            }
            CatalogEvent::DropTable { namespace, table } => {
                let old = self.cache.lookup(namespace, table)?;
                return Ok(self.remove(&old));
            }
            CatalogEvent::CreateUser {
                name,
                role,
                verifier,
            } => self
                .users
                .create(UserId::new(name.as_str()), *role, verifier.clone()),
            CatalogEvent::SetPassword { name, verifier } => {
                self.users.set_verifier(name, verifier.clone())
            }
            // The user goes now; their rows go next (see
            // `EngineState::forget_user`), then `UserForgotten` is logged.
            CatalogEvent::DropUser { name } => self.users.drop_user(name).map(|_| ()),
            CatalogEvent::UserForgotten { name } => {
                self.users.forgotten(name);
                Ok(())
            }
            CatalogEvent::Grant {
                namespace,
                table,
                user,
                privileges,
                grant,
            } => {
                let provider = self.grant_target(namespace, table, user)?;
                let shared = shared_access(&provider).ok_or_else(|| {
                    TenantError::Internal("grant_target gave a table without grants".into())
                })?;
                let user = UserId::new(user.as_str());
                for privilege in privileges {
                    if *grant {
                        shared.grant(user.clone(), *privilege);
                    } else {
                        shared.revoke(&user, *privilege);
                    }
                }
                Ok(())
            }
            CatalogEvent::CreateSource {
                name,
                kind,
                options,
            } => {
                let source =
                    LiveConfig::source_from_options(name, kind, options).map_err(from_live)?;
                self.live_sources
                    .pool()?
                    .add_source(source)
                    .map_err(from_live)
            }
            CatalogEvent::DropSource { name } => self
                .droppable_source(name)?
                .remove_source(name)
                .map_err(from_live),
            CatalogEvent::AlterTopics {
                namespace,
                table,
                add,
                topics,
            } => {
                let feed = self.topic_feed(namespace, table)?;
                for topic in topics {
                    if *add {
                        feed.declare(topic)?;
                    } else {
                        feed.undeclare(topic);
                    }
                }
                Ok(())
            }
        }
        .map(|()| Vec::new())
    }

    /// Whether `event` can be applied now, changing nothing: what a change
    /// must pass before it is logged, so that a change the log holds is one
    /// that applies (here, and again on replay).
    fn check(&self, event: &CatalogEvent) -> Result<()> {
        match event {
            CatalogEvent::CreateNamespace { name } => {
                if self.cache.namespace_exists(name) {
                    return Err(TenantError::NamespaceExists(name.clone()));
                }
            }
            CatalogEvent::DropNamespace { name } => {
                if !self.cache.namespace_exists(name) {
                    return Err(TenantError::NamespaceNotFound(name.clone()));
                }
                if self.cache.table_names(name).is_some_and(|t| !t.is_empty()) {
                    return Err(TenantError::NamespaceNotEmpty(name.clone()));
                }
            }
            CatalogEvent::CreateTable { def, replace } => self.check_create(def, *replace)?,
            CatalogEvent::DropTable { namespace, table } => {
                refuse_host_table(&self.cache.lookup(namespace, table)?, "dropped")?;
            }
            CatalogEvent::CreateUser { name, .. } => self.users.check_create(name)?,
            CatalogEvent::SetPassword { name, .. } | CatalogEvent::DropUser { name } => {
                if !self.users.exists(name) {
                    return Err(TenantError::UserNotFound(name.clone()));
                }
            }
            CatalogEvent::UserForgotten { name } => {
                if !self.users.is_forgetting(name) {
                    return Err(TenantError::Internal(format!(
                        "user '{name}' is not being dropped"
                    )));
                }
            }
            CatalogEvent::Grant {
                namespace,
                table,
                user,
                ..
            } => {
                self.grant_target(namespace, table, user)?;
            }
            CatalogEvent::CreateSource {
                name,
                kind,
                options,
            } => {
                let source =
                    LiveConfig::source_from_options(name, kind, options).map_err(from_live)?;
                self.live_sources
                    .pool()?
                    .check_source(source.as_ref())
                    .map_err(from_live)?;
            }
            CatalogEvent::DropSource { name } => {
                let pool = self.droppable_source(name)?;
                if pool.source_spec(name).is_none() {
                    return Err(TenantError::SourceNotFound(format!(
                        "no source named '{name}'"
                    )));
                }
            }
            CatalogEvent::AlterTopics {
                namespace, table, ..
            } => {
                self.topic_feed(namespace, table)?;
            }
        }
        Ok(())
    }

    /// Makes ready a change about to be logged: checks it, builds the
    /// table of a `CreateTable` (unless built already) and starts its feed,
    /// and subscribes topics to add. What it started is in `ahead`, to undo
    /// should the change not be logged.
    fn prepare(&self, event: &CatalogEvent, ahead: &mut Ahead) -> Result<()> {
        self.check(event)?;
        if let (CatalogEvent::CreateTable { def, .. }, None) = (event, &ahead.built) {
            ahead.built = Some(self.build_table(def)?);
        }
        if let Some(built) = ahead.built.as_mut() {
            let provider = built.provider.as_ref() as &dyn TableProvider;
            if let Some(view) = provider.downcast_ref::<View>()
                && let Some(host) = view.tables_read().iter().find(|t| is_host_table(t))
            {
                return Err(TenantError::NotSupported(format!(
                    "a view over host table '{}': the view is logged, the host table is \
                     registered anew after each open, so the view could not be planned then",
                    host.table_id()
                )));
            }
            self.start_feed(built)?;
        }
        ahead.topics = self.declare_ahead(event)?;
        Ok(())
    }

    /// For `ALTER STREAM TABLE ... ADD TOPICS`, subscribes the new topics
    /// before the change is logged (a topic the source cannot give fails
    /// it then); the feed and the topics declared here, to undeclare if
    /// the change is not logged. Applying the change declares them again,
    /// which changes nothing.
    fn declare_ahead(
        &self,
        event: &CatalogEvent,
    ) -> Result<Option<(Arc<SourceTopics>, Vec<String>)>> {
        let CatalogEvent::AlterTopics {
            namespace,
            table,
            add: true,
            topics,
        } = event
        else {
            return Ok(None);
        };
        let feed = self.topic_feed(namespace, table)?;
        let mut declared: Vec<String> = Vec::new();
        for topic in topics {
            if feed.is_declared(topic) {
                continue;
            }
            if let Err(err) = feed.declare(topic) {
                for topic in &declared {
                    feed.undeclare(topic);
                }
                return Err(err);
            }
            declared.push(topic.clone());
        }
        Ok(Some((feed, declared)))
    }

    /// The restricted table a GRANT or REVOKE to `user` changes.
    ///
    /// (A host table is never RESTRICTED: see `ExternalTable::host`.)
    fn grant_target(
        &self,
        namespace: &str,
        table: &str,
        user: &str,
    ) -> Result<Arc<dyn BaseTableProvider>> {
        let provider = self.cache.lookup(namespace, table)?;
        let shared = shared_access(&provider).ok_or_else(|| {
            TenantError::InvalidArgument(format!(
                "GRANT and REVOKE apply to shared and source-bound stream tables; \
                 '{namespace}.{table}' is a {} table",
                provider.core().table_type
            ))
        })?;
        if shared.level() != AccessLevel::Restricted {
            return Err(TenantError::InvalidArgument(format!(
                "grants apply to RESTRICTED tables; '{namespace}.{table}' is {}",
                shared.level()
            )));
        }
        if !self.users.exists(user) {
            return Err(TenantError::UserNotFound(user.to_string()));
        }
        Ok(provider)
    }

    /// The pool holding source `name`, which no stream table uses.
    fn droppable_source(&self, name: &str) -> Result<Arc<LivePool>> {
        let tables = self.live_sources.tables_of(name);
        if !tables.is_empty() {
            return Err(TenantError::InvalidArgument(format!(
                "source '{name}' feeds stream table(s) {}; drop them first",
                tables.join(", ")
            )));
        }
        self.live_sources
            .started_pool()
            .ok_or_else(|| TenantError::SourceNotFound(format!("no source named '{name}'")))
    }

    /// The feed of a source-bound stream table, whose topics can change.
    fn topic_feed(&self, namespace: &str, table: &str) -> Result<Arc<SourceTopics>> {
        let provider = self.cache.lookup(namespace, table)?;
        self.live_sources.feed(provider.table_id()).ok_or_else(|| {
            TenantError::InvalidArgument(format!(
                "'{namespace}.{table}' is not a stream table with a SOURCE; \
                 only those have topics"
            ))
        })
    }

    /// Takes a table out of every place that knows it; its storage, if any.
    fn remove(&self, provider: &Arc<dyn BaseTableProvider>) -> Vec<String> {
        let id = provider.table_id();
        self.cache
            .invalidate(id.namespace_id().as_str(), id.table_name().as_str());
        self.live_sources.detach(id);
        self.plans.forget_table(provider);
        provider
            .core()
            .storage_id
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Whether a table of `def` can be created now: its namespace exists
    /// and, unless `replace`, the name is free.
    pub(crate) fn check_create(&self, def: &TableDef, replace: bool) -> Result<()> {
        let (namespace, table) = (def.namespace.as_str(), def.table.as_str());
        if !self.cache.namespace_exists(namespace) {
            return Err(TenantError::NamespaceNotFound(namespace.to_string()));
        }
        match self.cache.get_provider(namespace, table) {
            Some(_) if !replace => {
                return Err(TenantError::TableExists(format!("{namespace}.{table}")));
            }
            Some(old) => refuse_host_table(&old, "replaced")?,
            None => {}
        }
        Ok(())
    }

    /// The table `def` describes, with its storage opened, known to nothing
    /// yet: what `CREATE TABLE ... AS` fills before it replaces anything.
    pub(crate) fn build_table(&self, def: &TableDef) -> Result<BuiltTable> {
        match (&def.definition, def.kind) {
            (Some(sql), TableType::View) => {
                return self.reopen_view(def, sql).map(BuiltTable::ready);
            }
            (Some(sql), _) => return self.reopen_external(def, sql).map(BuiltTable::ready),
            (None, _) => {}
        }
        let (namespace, table) = (def.namespace.as_str(), def.table.as_str());
        let options = TableOptions::parse(def.kind, &def.options, self.config)?;
        let columns = DFSchema::try_from(def.schema.as_ref().clone())?;
        let defaults = def
            .defaults
            .iter()
            .map(|(column, sql)| {
                Ok((
                    column.clone(),
                    self.state.create_logical_expr(sql, &columns)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let id = TableId::new(namespace, table);
        let schema = Arc::clone(&def.schema);
        let flush = match &options {
            TableOptions::User(flush) | TableOptions::Shared(_, flush) => Some(*flush),
            TableOptions::Stream(_) => None,
        };
        let key = def
            .primary_key
            .iter()
            .map(|name| {
                schema.index_of(name).map_err(|_| {
                    TenantError::InvalidArgument(format!(
                        "primary key column '{name}' is not a column of table '{namespace}.{table}'"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (store, storage): (Arc<dyn PartitionStore>, _) = match (&def.storage, self.root, flush)
        {
            (Some(name), Some(root), Some(flush)) => (
                root.table_store(name, flush)?,
                Some(StorageId::new(name.as_str())),
            ),
            _ => (Arc::new(MemoryPartitionStore::new()), None),
        };
        let mut feed = Feed::None;
        let provider: Arc<dyn BaseTableProvider> = match (def.kind, options) {
            (TableType::Shared, TableOptions::Shared(level, _)) => Arc::new(
                SharedTableProvider::new_shared(id, schema, level, store)
                    .with_column_defaults(defaults)
                    .with_storage_id(storage)
                    .with_primary_key(key)?,
            ),
            (TableType::Stream, TableOptions::Stream(options)) => {
                let provider = Arc::new(
                    StreamTableProvider::new_stream(
                        id,
                        schema,
                        options.origin,
                        options.retention,
                        Arc::clone(&self.config.clock),
                    )?
                    .with_column_defaults(defaults),
                );
                if provider.source().is_some() {
                    feed = Feed::Unstarted(Arc::clone(&provider), options.topics);
                }
                provider
            }
            _ => Arc::new(
                UserTableProvider::new_user(id, schema, store)
                    .with_column_defaults(defaults)
                    .with_storage_id(storage)
                    .with_primary_key(key)?,
            ),
        };
        Ok(BuiltTable { provider, feed })
    }

    /// A logged `CREATE` statement planned again. It reads no file and
    /// waits for nothing: the engine's catalog answers at once.
    fn replan(&self, sql: &str) -> Result<LogicalPlan> {
        let dialect = self.state.config().options().sql_parser.dialect;
        let statement = self.state.sql_to_statement(sql, &dialect)?;
        self.state
            .statement_to_plan(statement)
            .now_or_never()
            .ok_or_else(|| TenantError::Internal(format!("planning '{sql}' waited for something")))?
            .map_err(TenantError::from)
    }

    /// A view from its logged statement, planned against the tables there
    /// now (as the log replays, the ones there when it was created).
    fn reopen_view(&self, def: &TableDef, sql: &str) -> Result<Arc<dyn BaseTableProvider>> {
        let LogicalPlan::Ddl(DdlStatement::CreateView(create)) = self.replan(sql)? else {
            return Err(logged_as_other(def, sql, "CREATE VIEW"));
        };
        let reads = tables_read(&create.input, self.cache, self.config)?;
        Ok(Arc::new(View::new(
            TableId::new(def.namespace.as_str(), def.table.as_str()),
            create.input.as_ref().clone(),
            sql.to_string(),
            reads,
            self.cache,
        )))
    }

    /// An external table from its logged statement: planned again (which
    /// reads no file: the statement names no table), its files opened when
    /// first used.
    fn reopen_external(&self, def: &TableDef, sql: &str) -> Result<Arc<dyn BaseTableProvider>> {
        let planned = self.replan(sql)?;
        let LogicalPlan::Ddl(DdlStatement::CreateExternalTable(command)) = planned else {
            return Err(logged_as_other(def, sql, "CREATE EXTERNAL TABLE"));
        };
        let (command, level) = split_access_level(&command)?;
        Ok(Arc::new(ExternalTable::reopen(
            TableId::new(def.namespace.as_str(), def.table.as_str()),
            level,
            Arc::clone(&def.schema),
            command,
            Arc::clone(self.server_files),
        )))
    }

    /// Makes a built table the one its name means, in place of any table
    /// of that name (whose storage is returned, to delete once logged).
    fn install(&self, built: BuiltTable) -> Result<Vec<String>> {
        let BuiltTable { provider, feed } = built;
        let id = Arc::clone(provider.table_id());
        let (namespace, table) = (id.namespace_id().as_str(), id.table_name().as_str());
        let feed = match feed {
            // Replay: nothing was started beforehand.
            Feed::Unstarted(stream, topics) => Some(self.live_sources.start(stream, &topics)?),
            Feed::Started(feed) => Some(feed),
            Feed::None => None,
        };
        let old = self.cache.get_provider(namespace, table);
        let removed = old.map(|old| self.remove(&old)).unwrap_or_default();
        if let Err(err) = self.cache.insert_provider(provider) {
            if let Some(feed) = feed {
                self.live_sources.discard(&feed);
            }
            return Err(err);
        }
        if let Some(feed) = feed {
            self.live_sources.install(feed);
        }
        Ok(removed)
    }

    /// Starts the feed of a built stream table bound to a source, so that
    /// whatever of it can fail (the source, its topics) fails before the
    /// table is logged.
    fn start_feed(&self, built: &mut BuiltTable) -> Result<()> {
        if let Feed::Unstarted(stream, topics) = &built.feed {
            let feed = self.live_sources.start(Arc::clone(stream), topics)?;
            built.feed = Feed::Started(feed);
        }
        Ok(())
    }
}

/// A table built from its definition and not yet installed (see
/// [`CatalogChanges::build_table`]).
pub(crate) struct BuiltTable {
    /// The table.
    pub(crate) provider: Arc<dyn BaseTableProvider>,
    /// Its feed, for a stream table bound to a source.
    feed: Feed,
}

/// A table whose logged statement plans as something else than `expected`.
fn logged_as_other(def: &TableDef, sql: &str, expected: &str) -> TenantError {
    TenantError::Corrupted {
        file: "catalog".into(),
        detail: format!(
            "{}.{} is logged as '{sql}', not a {expected}",
            def.namespace, def.table
        ),
    }
}

impl BuiltTable {
    /// A table with nothing to start.
    pub(crate) fn ready(provider: Arc<dyn BaseTableProvider>) -> Self {
        Self {
            provider,
            feed: Feed::None,
        }
    }
}

/// What preparing a change started (see [`CatalogChanges::prepare`]).
struct Ahead {
    /// The table a `CreateTable` installs.
    built: Option<BuiltTable>,
    /// Topics an `AlterTopics` subscribed, and the feed they are in.
    topics: Option<(Arc<SourceTopics>, Vec<String>)>,
}

/// The feed of a [`BuiltTable`].
enum Feed {
    None,
    /// To start: the table and its declared topics.
    Unstarted(Arc<StreamTableProvider>, Vec<String>),
    /// Started (its topics subscribed), not yet the table's.
    Started(Arc<SourceTopics>),
}

impl CatalogChanges<'_> {
    /// Checks and prepares `event`, logs it to `log` (durable storage;
    /// returns once it is durable), then applies it. Call with the catalog
    /// lock held: changes are made one at a time.
    pub(crate) async fn commit(
        &self,
        event: &CatalogEvent,
        built: Option<BuiltTable>,
        log: Option<&CatalogLog>,
    ) -> Result<()> {
        // Everything that can fail happens before the change is logged: a
        // change the log holds is one that applies, and one that could not
        // be logged is not applied.
        let mut ahead = Ahead {
            built,
            topics: None,
        };
        let logged = match self.prepare(event, &mut ahead) {
            Ok(()) => match log {
                Some(log) => log.append(event).await,
                None => Ok(()),
            },
            Err(err) => Err(err),
        };
        if let Err(err) = logged {
            self.undo(ahead);
            return Err(err);
        }
        // Prepared above under the same lock: this applies. Should it not,
        // the engine says so, and the log's record fails the next open
        // (DATA_CORRUPTED) rather than hiding the difference.
        let removed = self.apply(event, ahead.built).map_err(|err| {
            TenantError::Internal(format!(
                "a logged change did not apply ({err}); reopen the engine"
            ))
        })?;
        if let Some(root) = self.root {
            for storage in removed {
                root.remove_table(&storage)?;
            }
        }
        Ok(())
    }

    /// Takes back what [`CatalogChanges::prepare`] did for a change not logged.
    fn undo(&self, ahead: Ahead) {
        if let Some(built) = ahead.built {
            self.discard(built);
        }
        if let Some((feed, topics)) = ahead.topics {
            for topic in topics {
                feed.undeclare(&topic);
            }
        }
    }

    /// Throws away a table built but never installed: its feed and storage.
    pub(crate) fn discard(&self, built: BuiltTable) {
        if let Feed::Started(feed) = &built.feed {
            self.live_sources.discard(feed);
        }
        if let (Some(root), Some(storage)) = (self.root, &built.provider.core().storage_id) {
            // Best effort: a directory left behind is one the catalog does
            // not list, removed when the engine next opens.
            let _ = root.remove_table(storage.as_str());
        }
    }
}

/// Opens the catalog log of `root`, replaying it through `changes`, and
/// removes table storage no table uses.
pub(crate) fn replay(changes: &CatalogChanges<'_>, root: &StorageRoot) -> Result<CatalogLog> {
    let log = root.catalog(|event| {
        for storage in changes.apply(&event, None)? {
            root.remove_table(&storage)?;
        }
        Ok(())
    })?;
    let used: HashSet<String> = changes
        .cache
        .all_providers()
        .iter()
        .filter_map(|p| p.core().storage_id.as_ref().map(|s| s.to_string()))
        .collect();
    root.remove_unused(&used)?;
    Ok(log)
}

/// Refuses a logged change to a host table: nothing logged may depend on
/// one (see the `external_table` module docs).
fn refuse_host_table(provider: &Arc<dyn BaseTableProvider>, what: &str) -> Result<()> {
    if is_host_table(provider) {
        return Err(TenantError::NotSupported(format!(
            "host table '{}' is the embedding program's: it cannot be {what} by SQL",
            provider.table_id()
        )));
    }
    Ok(())
}
