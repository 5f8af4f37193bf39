//! Changes to what exists (namespaces, tables, users, grants, sources) as
//! [`CatalogEvent`]s: the one place they are applied, whether a statement
//! makes them or the catalog log replays them on open.
//!
//! A statement checks who may make the change, then [`EngineInner::commit`]
//! applies it and, with durable storage, logs it before answering. Changes
//! are made one at a time so the log holds them in the order they were
//! applied, which is the order replay applies them in.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::execution::session_state::SessionState;
use tenantfusion_core::{
    AccessLevel, BaseTableProvider, Result, SchemaCache, StorageId, TableId, TableType,
    TenantError, UserId,
};
use tenantfusion_live::LiveConfig;
use tenantfusion_store::{CatalogEvent, CatalogLog, StorageRoot, TableDef};
use tenantfusion_tables::{
    MemoryPartitionStore, PartitionStore, SharedTableProvider, StreamTableProvider,
    UserTableProvider,
};

use crate::config::EngineConfig;
use crate::ddl::{TableOptions, shared_access};
use crate::engine::EngineInner;
use crate::plan_cache::PlanCache;
use crate::streams::Streams;
use crate::users::UserRegistry;

/// The durable side of an engine: its storage root and catalog log.
#[derive(Debug)]
pub(crate) struct Durable {
    pub(crate) root: StorageRoot,
    pub(crate) log: CatalogLog,
}

/// What applying a change touches.
pub(crate) struct Changes<'a> {
    pub(crate) config: &'a EngineConfig,
    pub(crate) state: &'a SessionState,
    pub(crate) cache: &'a SchemaCache,
    pub(crate) users: &'a UserRegistry,
    pub(crate) streams: &'a Streams,
    pub(crate) plans: &'a PlanCache,
    pub(crate) root: Option<&'a StorageRoot>,
}

impl Changes<'_> {
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
            CatalogEvent::CreateUser { name, role } => {
                self.users.create(UserId::new(name.as_str()), *role)
            }
            CatalogEvent::DropUser { name } => self.users.drop_user(name).map(|_| ()),
            CatalogEvent::Grant {
                namespace,
                table,
                user,
                privileges,
                grant,
            } => {
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
                if self.users.get(user).is_none() {
                    return Err(TenantError::UserNotFound(user.clone()));
                }
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
                let source = LiveConfig::source_from_options(name, kind, options)?;
                self.streams.pool()?.add_source(source)
            }
            CatalogEvent::DropSource { name } => {
                let tables = self.streams.tables_of(name);
                if !tables.is_empty() {
                    return Err(TenantError::InvalidArgument(format!(
                        "source '{name}' feeds stream table(s) {}; drop them first",
                        tables.join(", ")
                    )));
                }
                match self.streams.started_pool() {
                    Some(pool) => pool.remove_source(name),
                    None => Err(TenantError::SourceNotFound(format!(
                        "no source named '{name}'"
                    ))),
                }
            }
            CatalogEvent::AlterTopics {
                namespace,
                table,
                add,
                topics,
            } => {
                let provider = self.cache.lookup(namespace, table)?;
                let feed = self.streams.feed(provider.table_id()).ok_or_else(|| {
                    TenantError::InvalidArgument(format!(
                        "'{namespace}.{table}' is not a stream table with a SOURCE; \
                         only those have topics"
                    ))
                })?;
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

    /// Takes a table out of every place that knows it; its storage, if any.
    fn remove(&self, provider: &Arc<dyn BaseTableProvider>) -> Vec<String> {
        let id = provider.table_id();
        self.cache
            .invalidate(id.namespace_id().as_str(), id.table_name().as_str());
        self.streams.detach(id);
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
        if !replace && self.cache.get_provider(namespace, table).is_some() {
            return Err(TenantError::TableExists(format!("{namespace}.{table}")));
        }
        Ok(())
    }

    /// The table `def` describes, with its storage opened, known to nothing
    /// yet: what `CREATE TABLE ... AS` fills before it replaces anything.
    pub(crate) fn build_table(&self, def: &TableDef) -> Result<BuiltTable> {
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
        let mut stream = None;
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
                        options.feed,
                        options.retention,
                        Arc::clone(&self.config.clock),
                    )?
                    .with_column_defaults(defaults),
                );
                if provider.source().is_some() {
                    stream = Some((Arc::clone(&provider), options.topics));
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
        Ok(BuiltTable { provider, stream })
    }

    /// Makes a built table the one its name means, in place of any table
    /// of that name (whose storage is returned, to delete once logged).
    fn install(&self, built: BuiltTable) -> Result<Vec<String>> {
        let BuiltTable { provider, stream } = built;
        let id = Arc::clone(provider.table_id());
        let (namespace, table) = (id.namespace_id().as_str(), id.table_name().as_str());
        let old = self.cache.get_provider(namespace, table);
        let removed = old.map(|old| self.remove(&old)).unwrap_or_default();
        self.cache.insert_provider(provider)?;
        if let Some((stream, topics)) = stream
            && let Err(err) = self.streams.attach(stream, &topics)
        {
            self.cache.invalidate(namespace, table);
            return Err(err);
        }
        Ok(removed)
    }
}

/// A table built from its definition and not yet installed (see
/// [`Changes::build_table`]).
pub(crate) struct BuiltTable {
    /// The table.
    pub(crate) provider: Arc<dyn BaseTableProvider>,
    /// Its feed, for a stream table bound to a source: attached on install.
    stream: Option<(Arc<StreamTableProvider>, Vec<String>)>,
}

impl EngineInner {
    pub(crate) fn changes(&self) -> Changes<'_> {
        Changes {
            config: &self.config,
            state: &self.state,
            cache: &self.cache,
            users: &self.users,
            streams: &self.streams,
            plans: &self.plans,
            root: self.durable.as_ref().map(|d| &d.root),
        }
    }

    /// Applies `event` and, with durable storage, logs it; returns once it
    /// is durable. Changes are made one at a time.
    pub(crate) async fn commit(&self, event: CatalogEvent) -> Result<()> {
        self.commit_built(event, None).await
    }

    /// [`commit`](Self::commit) of a `CreateTable` whose table was built
    /// (and filled) beforehand; see [`Changes::apply`].
    pub(crate) async fn commit_built(
        &self,
        event: CatalogEvent,
        built: Option<BuiltTable>,
    ) -> Result<()> {
        let _one_at_a_time = self.ddl.lock().await;
        let staged = built.as_ref().map(|b| Arc::clone(&b.provider));
        let removed = match self.changes().apply(&event, built) {
            Ok(removed) => removed,
            Err(err) => {
                if let Some(staged) = staged {
                    self.discard_storage_of(&staged);
                }
                return Err(err);
            }
        };
        drop(staged);
        if let Some(durable) = &self.durable {
            // The change stays applied in this process if it cannot be
            // logged; the log refuses every later write, so the engine must
            // be reopened, and then it is gone.
            durable.log.append(&event).await?;
            for storage in removed {
                durable.root.remove_table(&storage)?;
            }
        }
        Ok(())
    }

    /// Throws away a table built but never installed, and its storage.
    pub(crate) fn discard(&self, built: BuiltTable) {
        self.discard_storage_of(&built.provider);
    }

    fn discard_storage_of(&self, provider: &Arc<dyn BaseTableProvider>) {
        if let (Some(durable), Some(storage)) = (&self.durable, &provider.core().storage_id) {
            // Best effort: a directory left behind is one the catalog does
            // not list, removed when the engine next opens.
            let _ = durable.root.remove_table(storage.as_str());
        }
    }

    /// A storage name for a new table's rows, when they are durable.
    pub(crate) fn new_storage(&self, table: &TableId, kind: TableType) -> Option<String> {
        let durable = self.durable.as_ref()?;
        (kind != TableType::Stream).then(|| durable.root.new_storage_name(table))
    }
}

/// Opens the catalog log of `root`, replaying it through `changes`, and
/// removes table storage no table uses.
pub(crate) fn replay(changes: &Changes<'_>, root: &StorageRoot) -> Result<CatalogLog> {
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
