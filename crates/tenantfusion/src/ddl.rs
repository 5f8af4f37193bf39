//! Statements that change what exists: namespaces, tables, users, grants.

use std::collections::HashSet;
use std::sync::Arc;

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
    MemoryPartitionStore, PartitionStore, Privilege, SharedTableProvider, UserTableProvider,
};

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
        if kind == TableType::Stream {
            return Err(TenantError::NotSupported(
                "stream tables are not available yet; use CREATE USER TABLE or CREATE SHARED TABLE"
                    .into(),
            ));
        }
        if create.temporary {
            return Err(TenantError::NotSupported("temporary tables".into()));
        }
        let level = table_options(kind, options)?;
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
        let provider: Arc<dyn BaseTableProvider> = match kind {
            TableType::Shared => Arc::new(
                SharedTableProvider::new_shared(id, schema, level, store)
                    .with_column_defaults(defaults),
            ),
            _ => Arc::new(
                UserTableProvider::new_user(id, schema, store).with_column_defaults(defaults),
            ),
        };
        self.engine.cache.insert_provider(Arc::clone(&provider))?;

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
        let normalize = self
            .engine
            .state
            .config()
            .options()
            .sql_parser
            .enable_ident_normalization;
        let reference = object_name_to_table_reference(table, normalize)?;
        let (namespace, name) = self.resolve_name(&reference)?;
        let provider = self.engine.lookup(namespace, name)?;
        let shared = (provider.as_ref() as &dyn TableProvider)
            .downcast_ref::<SharedTableProvider>()
            .ok_or_else(|| {
                TenantError::InvalidArgument(format!(
                    "GRANT and REVOKE apply to shared tables; '{namespace}.{name}' is a {} table",
                    provider.core().table_type
                ))
            })?;
        if shared.access().level() != AccessLevel::Restricted {
            return Err(TenantError::InvalidArgument(format!(
                "grants apply to RESTRICTED shared tables; '{namespace}.{name}' is {}",
                shared.access().level()
            )));
        }
        if self.engine.users.get(user).is_none() {
            return Err(TenantError::UserNotFound(user.to_string()));
        }
        let user = UserId::new(user);
        for privilege in privileges {
            if grant {
                shared.access().grant(user.clone(), *privilege);
            } else {
                shared.access().revoke(&user, *privilege);
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

/// The access level from `WITH (...)`; rejects options that do not apply.
fn table_options(kind: TableType, options: &[(String, String)]) -> Result<AccessLevel> {
    let mut level = AccessLevel::default();
    for (key, value) in options {
        match key.as_str() {
            "ACCESS_LEVEL" if kind == TableType::Shared => level = value.parse()?,
            "ACCESS_LEVEL" => {
                return Err(TenantError::InvalidArgument(format!(
                    "ACCESS_LEVEL applies to shared tables, not {kind} tables"
                )));
            }
            other => {
                return Err(TenantError::InvalidArgument(format!(
                    "unknown table option '{other}' (supported: ACCESS_LEVEL)"
                )));
            }
        }
    }
    Ok(level)
}
