//! Statements that change what exists: namespaces, tables, users, grants.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use datafusion::catalog::TableProvider;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{CreateMemoryTable, DdlStatement, DropTable, LogicalPlan};
use datafusion::physical_plan::collect;
use datafusion::sql::planner::object_name_to_table_reference;
use datafusion::sql::sqlparser::ast::ObjectName;
use tenantfusion_core::{
    AccessLevel, BaseTableProvider, Result, Role, TableId, TableType, TenantError, UserContext,
    UserId,
};
use tenantfusion_tables::{
    MemoryPartitionStore, PartitionStore, Privilege, Retention, SharedAccess, SharedTableProvider,
    StreamFeed, StreamTableProvider, UserTableProvider,
};

use tenantfusion_live::LiveConfig;

use crate::config::EngineConfig;

use crate::query::Query;
use crate::session::TenantSession;
use crate::system_tables::SYSTEM_NAMESPACE;

impl TenantSession {
    fn require_admin(&self, what: &str) -> Result<()> {
        if self.user.role().is_admin() {
            Ok(())
        } else {
            Err(TenantError::PermissionDenied(format!(
                "{what} requires role dba or system; user '{}' has role {}",
                self.user.user_id(),
                self.user.role()
            )))
        }
    }

    /// DDL on user tables: admins, or any signed-in user when the engine lets
    /// users manage user tables.
    fn require_table_ddl(&self, kind: TableType, what: &str) -> Result<()> {
        let users_may = self.engine.config.users_may_create_user_tables
            && kind == TableType::User
            && self.user.role() != Role::Anonymous;
        if users_may {
            Ok(())
        } else {
            self.require_admin(what)
        }
    }

    /// The result of a statement that has already run and returns no rows.
    pub(crate) fn done(&self) -> Result<Query> {
        Ok(Query::done(self.task_context(&self.engine.state)))
    }

    pub(crate) async fn run_ddl(&self, ddl: &DdlStatement, state: &SessionState) -> Result<Query> {
        match ddl {
            DdlStatement::CreateMemoryTable(create) => {
                self.create_table(None, &[], create, state).await
            }
            DdlStatement::DropTable(drop) => self.drop_table(drop),
            DdlStatement::CreateCatalogSchema(create) => {
                self.create_namespace(&create.schema_name, create.if_not_exists)
            }
            DdlStatement::DropCatalogSchema(drop) => {
                self.drop_namespace(drop.name.schema_name(), drop.if_exists)
            }
            other => Err(TenantError::NotSupported(format!(
                "{} is not supported; tables are created with CREATE [USER|SHARED] TABLE",
                other.name()
            ))),
        }
    }

    pub(crate) fn create_namespace(&self, name: &str, if_not_exists: bool) -> Result<Query> {
        self.require_admin("CREATE NAMESPACE")?;
        validate_namespace(name)?;
        match self.engine.cache.create_namespace(name) {
            Err(TenantError::NamespaceExists(_)) if if_not_exists => self.done(),
            other => other.and_then(|()| self.done()),
        }
    }

    pub(crate) fn drop_namespace(&self, name: &str, if_exists: bool) -> Result<Query> {
        self.require_admin("DROP NAMESPACE")?;
        if name == self.engine.config.default_namespace || name == SYSTEM_NAMESPACE {
            return Err(TenantError::PermissionDenied(format!(
                "namespace '{name}' is built in and cannot be dropped"
            )));
        }
        match self.engine.cache.drop_namespace(name) {
            Err(TenantError::NamespaceNotFound(_)) if if_exists => self.done(),
            other => other.and_then(|()| self.done()),
        }
    }

    pub(crate) async fn create_table(
        &self,
        kind: Option<TableType>,
        options: &[(String, String)],
        create: &CreateMemoryTable,
        state: &SessionState,
    ) -> Result<Query> {
        let kind = kind.unwrap_or(self.engine.config.default_table_type);
        self.require_table_ddl(kind, "CREATE TABLE")?;
        if create.temporary {
            return Err(TenantError::NotSupported("temporary tables".into()));
        }
        let options = TableOptions::parse(kind, options, &self.engine.config)?;
        let (namespace, table) = self.resolve_name(&create.name)?;
        if namespace == SYSTEM_NAMESPACE {
            return Err(TenantError::PermissionDenied(
                "namespace 'system' is reserved for system tables".into(),
            ));
        }
        if !self.engine.cache.namespace_exists(namespace) {
            return Err(TenantError::NamespaceNotFound(namespace.to_string()));
        }
        if let Some(old) = self.engine.cache.get_provider(namespace, table) {
            if create.if_not_exists {
                return self.done();
            }
            if !create.or_replace {
                return Err(TenantError::TableExists(format!("{namespace}.{table}")));
            }
            self.engine.cache.invalidate(namespace, table);
            self.engine.plans.forget_table(&old);
        }

        let schema = Arc::new(create.input.schema().as_arrow().clone());
        let mut seen = HashSet::new();
        if let Some(dup) = schema.fields().iter().find(|f| !seen.insert(f.name())) {
            return Err(TenantError::InvalidArgument(format!(
                "column '{}' appears more than once in table '{namespace}.{table}'",
                dup.name()
            )));
        }
        let id = TableId::new(namespace, table);
        let store: Arc<dyn PartitionStore> = Arc::new(MemoryPartitionStore::new());
        let defaults = create.column_defaults.iter().cloned();
        let mut stream = None;
        let provider: Arc<dyn BaseTableProvider> = match (kind, options) {
            (TableType::Shared, TableOptions::Shared(level)) => Arc::new(
                SharedTableProvider::new_shared(id, schema, level, store)
                    .with_column_defaults(defaults),
            ),
            (TableType::Stream, TableOptions::Stream(options)) => {
                let table = Arc::new(
                    StreamTableProvider::new_stream(
                        id,
                        schema,
                        options.feed,
                        options.retention,
                        Arc::clone(&self.engine.config.clock),
                    )?
                    .with_column_defaults(defaults),
                );
                if table.source().is_some() {
                    stream = Some((Arc::clone(&table), options.topics));
                }
                table
            }
            _ => Arc::new(
                UserTableProvider::new_user(id, schema, store).with_column_defaults(defaults),
            ),
        };
        self.engine.cache.insert_provider(Arc::clone(&provider))?;
        if let Some((stream, topics)) = stream
            && let Err(err) = self.engine.streams.attach(stream, &topics)
        {
            self.engine.cache.invalidate(namespace, table);
            return Err(err);
        }

        if let Err(err) = self.fill_from(&provider, &create.input, state).await {
            // CREATE TABLE ... AS is all or nothing.
            self.engine.cache.invalidate(namespace, table);
            return Err(err);
        }
        self.done()
    }

    /// Inserts the rows of `CREATE TABLE ... AS SELECT/VALUES` as the creator.
    async fn fill_from(
        &self,
        provider: &Arc<dyn BaseTableProvider>,
        input: &LogicalPlan,
        state: &SessionState,
    ) -> Result<()> {
        if matches!(input, LogicalPlan::EmptyRelation(e) if !e.produce_one_row) {
            return Ok(());
        }
        let source = state.create_physical_plan(input).await?;
        let insert = provider
            .insert_user(&self.user, state, source, InsertOp::Append)
            .await?;
        collect(insert, self.task_context(state)).await?;
        Ok(())
    }

    pub(crate) fn drop_table(&self, drop: &DropTable) -> Result<Query> {
        let (namespace, table) = self.resolve_name(&drop.name)?;
        let cache = &self.engine.cache;
        let Some(provider) = cache.get_provider(namespace, table) else {
            if drop.if_exists {
                return self.done();
            }
            return Err(if cache.namespace_exists(namespace) {
                TenantError::TableNotFound(format!("{namespace}.{table}"))
            } else {
                TenantError::NamespaceNotFound(namespace.to_string())
            });
        };
        self.require_table_ddl(provider.core().table_type, "DROP TABLE")?;
        cache.invalidate(namespace, table);
        self.engine.streams.detach(provider.table_id());
        self.engine.plans.forget_table(&provider);
        self.done()
    }

    pub(crate) fn create_user(&self, name: &str, role: Role, if_not_exists: bool) -> Result<Query> {
        self.require_admin("CREATE USER")?;
        if name.trim().is_empty() {
            return Err(TenantError::InvalidArgument(
                "user name must not be empty".into(),
            ));
        }
        match self.engine.users.create(UserId::new(name), role) {
            Err(TenantError::UserExists(_)) if if_not_exists => self.done(),
            other => other.and_then(|()| self.done()),
        }
    }

    /// Drops a user and everything tables hold for them, so a later user of
    /// the same name does not inherit their rows or grants.
    pub(crate) async fn drop_user(&self, name: &str, if_exists: bool) -> Result<Query> {
        self.require_admin("DROP USER")?;
        match self.engine.users.drop_user(name) {
            Err(TenantError::UserNotFound(_)) if if_exists => return self.done(),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let user = UserId::new(name);
        for provider in self.engine.cache.all_providers() {
            provider.forget_user(&user).await?;
        }
        self.done()
    }

    pub(crate) fn grant(
        &self,
        privileges: &[Privilege],
        table: ObjectName,
        user: &str,
        grant: bool,
    ) -> Result<Query> {
        self.require_admin(if grant { "GRANT" } else { "REVOKE" })?;
        let provider = self.lookup_object(table)?;
        let id = provider.table_id();
        let (namespace, name) = (id.namespace_id(), id.table_name());
        let shared = shared_access(&provider).ok_or_else(|| {
            TenantError::InvalidArgument(format!(
                "GRANT and REVOKE apply to shared and source-bound stream tables; \
                 '{namespace}.{name}' is a {} table",
                provider.core().table_type
            ))
        })?;
        if shared.level() != AccessLevel::Restricted {
            return Err(TenantError::InvalidArgument(format!(
                "grants apply to RESTRICTED tables; '{namespace}.{name}' is {}",
                shared.level()
            )));
        }
        if self.engine.users.get(user).is_none() {
            return Err(TenantError::UserNotFound(user.to_string()));
        }
        let user = UserId::new(user);
        for privilege in privileges {
            if grant {
                shared.grant(user.clone(), *privilege);
            } else {
                shared.revoke(&user, *privilege);
            }
        }
        self.done()
    }

    /// The provider of a table named in one of our own statements.
    pub(crate) fn lookup_object(&self, table: ObjectName) -> Result<Arc<dyn BaseTableProvider>> {
        let normalize = self
            .engine
            .state
            .config()
            .options()
            .sql_parser
            .enable_ident_normalization;
        let reference = object_name_to_table_reference(table, normalize)?;
        let (namespace, name) = self.resolve_name(&reference)?;
        self.engine.lookup(namespace, name)
    }

    /// `CREATE SOURCE`: a new upstream in the live pool (started if needed).
    pub(crate) fn create_source(
        &self,
        name: &str,
        kind: &str,
        options: &[(String, String)],
    ) -> Result<Query> {
        self.require_admin("CREATE SOURCE")?;
        let source = LiveConfig::source_from_options(name, kind, options)?;
        self.engine.streams.pool()?.add_source(source)?;
        self.done()
    }

    /// `DROP SOURCE`: refused while a stream table reads from it.
    pub(crate) fn drop_source(&self, name: &str, if_exists: bool) -> Result<Query> {
        self.require_admin("DROP SOURCE")?;
        let tables = self.engine.streams.tables_of(name);
        if !tables.is_empty() {
            return Err(TenantError::InvalidArgument(format!(
                "source '{name}' feeds stream table(s) {}; drop them first",
                tables.join(", ")
            )));
        }
        let removed = match self.engine.streams.started_pool() {
            Some(pool) => pool.remove_source(name),
            None => Err(TenantError::SourceNotFound(format!(
                "no source named '{name}'"
            ))),
        };
        match removed {
            Err(TenantError::SourceNotFound(_)) if if_exists => self.done(),
            other => other.and_then(|()| self.done()),
        }
    }

    /// `ALTER STREAM TABLE t ADD|DROP TOPICS (...)`: topics held upstream
    /// whether or not a live query wants them.
    pub(crate) fn alter_topics(
        &self,
        table: ObjectName,
        add: bool,
        topics: &[String],
    ) -> Result<Query> {
        self.require_admin("ALTER STREAM TABLE")?;
        let provider = self.lookup_object(table)?;
        let feed = self
            .engine
            .streams
            .feed(provider.table_id())
            .ok_or_else(|| {
                TenantError::InvalidArgument(format!(
                    "'{}' is not a stream table with a SOURCE; only those have topics",
                    provider.table_id()
                ))
            })?;
        for topic in topics {
            if add {
                feed.declare(topic)?;
            } else {
                feed.undeclare(topic);
            }
        }
        self.done()
    }

    /// The session `EXECUTE AS USER` runs its statement in.
    pub(crate) fn impersonate(&self, name: &str) -> Result<TenantSession> {
        self.require_admin("EXECUTE AS USER")?;
        let target = self
            .engine
            .users
            .get(name)
            .ok_or_else(|| TenantError::UserNotFound(name.to_string()))?;
        let user =
            UserContext::impersonated(target.user_id, target.role, self.user.user_id().clone());
        Ok(TenantSession::new(Arc::clone(&self.engine), user))
    }
}

/// The access level and grants of a table read like a shared table.
pub(crate) fn shared_access(provider: &Arc<dyn BaseTableProvider>) -> Option<&SharedAccess> {
    let any = provider.as_ref() as &dyn TableProvider;
    if let Some(shared) = any.downcast_ref::<SharedTableProvider>() {
        return shared.shared_access();
    }
    any.downcast_ref::<StreamTableProvider>()?.shared_access()
}

fn validate_namespace(name: &str) -> Result<()> {
    if name == SYSTEM_NAMESPACE {
        return Err(TenantError::PermissionDenied(
            "namespace 'system' is reserved for system tables".into(),
        ));
    }
    if name.is_empty() || name.contains('.') {
        return Err(TenantError::InvalidArgument(format!(
            "namespace name '{name}' must be non-empty and contain no '.'"
        )));
    }
    Ok(())
}

/// What `WITH (...)` says about a new table.
enum TableOptions {
    User,
    Shared(AccessLevel),
    Stream(StreamOptions),
}

struct StreamOptions {
    feed: StreamFeed,
    retention: Retention,
    /// Topics held upstream from the start (`TOPICS = 'A,B'`).
    topics: Vec<String>,
}

impl TableOptions {
    /// Reads the options of a `kind` table; rejects those that do not apply.
    fn parse(kind: TableType, options: &[(String, String)], config: &EngineConfig) -> Result<Self> {
        let applies_to = |key: &str| match key {
            "ACCESS_LEVEL" => Some("shared and source-bound stream tables"),
            "SOURCE" | "TOPIC_COLUMN" | "TOPICS" | "MAX_ROWS_PER_TOPIC" => {
                Some("stream tables with a SOURCE")
            }
            "TTL_SECONDS" => Some("stream tables"),
            "MAX_ROWS_PER_USER" => Some("stream tables without a SOURCE"),
            _ => None,
        };
        let get = |name: &str| options.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let source = get("SOURCE");
        for (key, _) in options {
            let fits = match key.as_str() {
                "ACCESS_LEVEL" => {
                    kind == TableType::Shared || (kind == TableType::Stream && source.is_some())
                }
                "SOURCE" | "TTL_SECONDS" => kind == TableType::Stream,
                "TOPIC_COLUMN" | "TOPICS" | "MAX_ROWS_PER_TOPIC" => source.is_some(),
                "MAX_ROWS_PER_USER" => kind == TableType::Stream && source.is_none(),
                other => {
                    return Err(TenantError::InvalidArgument(format!(
                        "unknown table option '{other}' (supported: ACCESS_LEVEL; for stream \
                         tables SOURCE, TOPIC_COLUMN, TOPICS, TTL_SECONDS, MAX_ROWS_PER_TOPIC, \
                         MAX_ROWS_PER_USER)"
                    )));
                }
            };
            if !fits {
                return Err(TenantError::InvalidArgument(format!(
                    "table option {key} applies to {}, not to this {kind} table",
                    applies_to(key).unwrap_or("other tables")
                )));
            }
        }
        let level = get("ACCESS_LEVEL")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or_default();
        Ok(match kind {
            TableType::User => Self::User,
            TableType::Shared => Self::Shared(level),
            TableType::Stream => {
                let positive = |key: &str| -> Result<Option<u64>> {
                    get(key)
                        .map(|v| match v.parse::<u64>() {
                            Ok(n) if n > 0 => Ok(n),
                            _ => Err(TenantError::InvalidArgument(format!(
                                "{key} must be a positive whole number, not '{v}'"
                            ))),
                        })
                        .transpose()
                };
                let ttl = positive("TTL_SECONDS")?.map(Duration::from_secs);
                let max_rows = positive("MAX_ROWS_PER_TOPIC")?
                    .or(positive("MAX_ROWS_PER_USER")?)
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
                let retention = Retention {
                    ttl,
                    max_rows: max_rows
                        .or((ttl.is_none()).then_some(config.stream_default_max_rows)),
                };
                let feed = match source {
                    None => StreamFeed::Users,
                    Some(source) => StreamFeed::Source {
                        source: source.to_ascii_lowercase(),
                        topic_column: get("TOPIC_COLUMN")
                            .ok_or_else(|| {
                                TenantError::InvalidArgument(
                                    "a stream table with a SOURCE needs TOPIC_COLUMN = 'column'"
                                        .into(),
                                )
                            })?
                            .to_ascii_lowercase(),
                        access: level,
                    },
                };
                let topics = get("TOPICS")
                    .map(|t| {
                        t.split(',')
                            .map(|t| t.trim().to_string())
                            .filter(|t| !t.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                Self::Stream(StreamOptions {
                    feed,
                    retention,
                    topics,
                })
            }
        })
    }
}
