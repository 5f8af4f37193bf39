//! Statements that change what exists: namespaces, tables, users, grants.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::{Constraint, SchemaError, TableReference};
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{
    CreateExternalTable as PlanCreateExternalTable, CreateMemoryTable, CreateView, DdlStatement,
    DropTable, LogicalPlan,
};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::{ExecutionPlanProperties, collect};
use datafusion::sql::planner::object_name_to_table_reference;
use datafusion::sql::sqlparser::ast::ObjectName;
use datafusion::sql::unparser::expr_to_sql;
use tenantfusion_core::{
    Access, BaseTableProvider, Result, Role, TableId, TableType, TenantError, UserContext,
};
use tenantfusion_store::{CatalogEvent, TableDef};

use super::TenantSession;
use crate::catalog::{is_reserved_namespace, refuse_reserved_namespace, validate_namespace};
use crate::catalog_changes::BuiltTable;
use crate::external_table::{ExternalTable, split_access_level};
use crate::query::Query;
use crate::statement::{AlterUser, CreateUser};
use crate::table_options::TableOptions;
use crate::view::{View, tables_read};

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
        Ok(Query::done(self.task_context(&self.engine.state)?))
    }

    pub(crate) async fn run_ddl(&self, ddl: &DdlStatement, state: &SessionState) -> Result<Query> {
        match ddl {
            DdlStatement::CreateMemoryTable(create) => {
                self.create_table(None, &[], create, state).await
            }
            DdlStatement::DropTable(drop) => self.drop_table(drop).await,
            DdlStatement::CreateExternalTable(create) => {
                self.create_external_table(create, state).await
            }
            DdlStatement::CreateView(create) => self.create_view(create).await,
            DdlStatement::DropView(drop) => self.drop_view(&drop.name, drop.if_exists).await,
            DdlStatement::CreateCatalogSchema(create) => {
                self.create_namespace(&create.schema_name, create.if_not_exists)
                    .await
            }
            DdlStatement::DropCatalogSchema(drop) => {
                self.drop_namespace(drop.name.schema_name(), drop.if_exists)
                    .await
            }
            other => Err(TenantError::NotSupported(format!(
                "{} is not supported; tables are created with CREATE [USER|SHARED] TABLE",
                other.name()
            ))),
        }
    }

    /// The answer to a change: done, or `outcome`'s error, unless the
    /// statement said `IF [NOT] EXISTS` (`if_clause`) and the error is
    /// that it already is so (`already`).
    fn done_unless(
        &self,
        outcome: Result<()>,
        if_clause: bool,
        already: impl FnOnce(&TenantError) -> bool,
    ) -> Result<Query> {
        match outcome {
            Err(err) if if_clause && already(&err) => self.done(),
            other => other.and_then(|()| self.done()),
        }
    }

    pub(crate) async fn create_namespace(&self, name: &str, if_not_exists: bool) -> Result<Query> {
        self.require_admin("CREATE NAMESPACE")?;
        validate_namespace(name)?;
        let event = CatalogEvent::CreateNamespace { name: name.into() };
        let outcome = self.engine.commit(event).await;
        self.done_unless(outcome, if_not_exists, |e| {
            matches!(e, TenantError::NamespaceExists(_))
        })
    }

    pub(crate) async fn drop_namespace(&self, name: &str, if_exists: bool) -> Result<Query> {
        self.require_admin("DROP NAMESPACE")?;
        if name == self.engine.config.default_namespace || is_reserved_namespace(name) {
            return Err(TenantError::PermissionDenied(format!(
                "namespace '{name}' is built in and cannot be dropped"
            )));
        }
        let event = CatalogEvent::DropNamespace { name: name.into() };
        let outcome = self.engine.commit(event).await;
        self.done_unless(outcome, if_exists, |e| {
            matches!(e, TenantError::NamespaceNotFound(_))
        })
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
        // Checked here too (commit checks again) so bad options are reported
        // before anything else about the statement.
        TableOptions::parse(kind, options, &self.engine.config)?;
        let (namespace, table) = self.resolve_name(&create.name)?;
        refuse_reserved_namespace(namespace)?;
        let (schema, primary_key) = keyed_schema(kind, create)?;
        ensure_unique_column_names(&schema)?;
        if create.or_replace
            && create.if_not_exists
            && self.engine.cache.get_provider(namespace, table).is_some()
        {
            // DataFusion's rule and words: both only where the table exists.
            return Err(TenantError::InvalidArgument(
                DataFusionError::Execution("'IF NOT EXISTS' cannot coexist with 'REPLACE'".into())
                    .to_string(),
            ));
        }
        // Defaults are kept as SQL so the catalog log can rebuild them; one
        // that cannot be written back as SQL is refused now, not on reopen.
        let defaults = create
            .column_defaults
            .iter()
            .map(|(column, expr)| Ok((column.clone(), expr_to_sql(expr)?.to_string())))
            .collect::<Result<Vec<_>>>()?;
        let id = TableId::new(namespace, table);
        let def = TableDef {
            namespace: namespace.to_string(),
            table: table.to_string(),
            kind,
            storage: self.engine.new_storage(&id, kind),
            schema,
            options: options.to_vec(),
            defaults,
            primary_key,
            definition: None,
        };
        let replace = create.or_replace;
        let has_rows =
            !matches!(create.input.as_ref(), LogicalPlan::EmptyRelation(e) if !e.produce_one_row);
        let built = if has_rows {
            // CREATE TABLE ... AS is all or nothing: the new table is built
            // and filled aside, and replaces the old one (or takes its name)
            // only once every row is in. A failure leaves what was there.
            let changes = self.engine.changes();
            match changes.check_create(&def, replace) {
                Err(TenantError::TableExists(_)) if create.if_not_exists => return self.done(),
                other => other?,
            }
            let built = changes.build_table(&def)?;
            if let Err(err) = self.fill_from(&built.provider, &create.input, state).await {
                self.engine.discard(built);
                return Err(err);
            }
            Some(built)
        } else {
            None
        };
        let event = CatalogEvent::CreateTable { def, replace };
        let outcome = self.engine.commit_built(event, built).await;
        self.done_unless(outcome, create.if_not_exists, |e| {
            matches!(e, TenantError::TableExists(_))
        })
    }

    /// `CREATE [OR REPLACE] VIEW`, for administrators: a stored query that
    /// runs as its reader (see `view`). Its plan was checked against the
    /// creator like any statement's.
    pub(crate) async fn create_view(&self, create: &CreateView) -> Result<Query> {
        self.require_admin("CREATE VIEW")?;
        if create.temporary {
            return Err(TenantError::NotSupported("temporary views".into()));
        }
        let (namespace, table) = self.resolve_name(&create.name)?;
        refuse_reserved_namespace(namespace)?;
        let sql = create
            .definition
            .clone()
            .ok_or_else(|| TenantError::Internal("CREATE VIEW planned without its SQL".into()))?;
        if let Some(old) = self.engine.cache.get_provider(namespace, table)
            && old.core().table_type != TableType::View
        {
            return Err(TenantError::TableExists(format!(
                "{namespace}.{table} (a table, not a view)"
            )));
        }
        let reads = tables_read(&create.input, &self.engine.cache, &self.engine.config)?;
        ensure_unique_column_names(create.input.schema().as_arrow())?;
        let view = View::new(
            TableId::new(namespace, table),
            create.input.as_ref().clone(),
            sql.clone(),
            reads,
            &self.engine.cache,
        );
        let def = TableDef {
            namespace: namespace.to_string(),
            table: table.to_string(),
            kind: TableType::View,
            storage: None,
            schema: view.schema(),
            options: Vec::new(),
            defaults: Vec::new(),
            primary_key: Vec::new(),
            definition: Some(sql),
        };
        let event = CatalogEvent::CreateTable {
            def,
            replace: create.or_replace,
        };
        let built = BuiltTable::ready(Arc::new(view));
        self.engine.commit_built(event, Some(built)).await?;
        self.done()
    }

    /// `DROP VIEW [IF EXISTS]`.
    pub(crate) async fn drop_view(&self, name: &TableReference, if_exists: bool) -> Result<Query> {
        self.require_admin("DROP VIEW")?;
        let (namespace, table) = self.resolve_name(name)?;
        match self.engine.cache.lookup(namespace, table) {
            Ok(view) if view.core().table_type == TableType::View => {
                self.refuse_if_read_by_a_view(&view)?;
            }
            Ok(_) => {
                return Err(TenantError::InvalidArgument(format!(
                    "'{namespace}.{table}' is a table, not a view; use DROP TABLE"
                )));
            }
            Err(TenantError::TableNotFound(_) | TenantError::NamespaceNotFound(_)) if if_exists => {
                return self.done();
            }
            Err(e) => return Err(e),
        }
        let event = CatalogEvent::DropTable {
            namespace: namespace.to_string(),
            table: table.to_string(),
        };
        let outcome = self.engine.commit(event).await;
        self.done_unless(outcome, if_exists, |e| {
            matches!(e, TenantError::TableNotFound(_))
        })
    }

    /// A table or view another view reads cannot be dropped (PostgreSQL's
    /// `RESTRICT`): the view would be left reading nothing.
    fn refuse_if_read_by_a_view(&self, table: &Arc<dyn BaseTableProvider>) -> Result<()> {
        for other in self.engine.cache.all_providers() {
            let other_table = other.as_ref() as &dyn TableProvider;
            if let Some(view) = other_table.downcast_ref::<View>()
                && view.reads(table)
            {
                return Err(TenantError::InvalidArgument(format!(
                    "view '{}' reads '{}'; drop the view first",
                    other.table_id(),
                    table.table_id()
                )));
            }
        }
        Ok(())
    }

    /// `CREATE [UNBOUNDED] EXTERNAL TABLE`: a shared table over server files,
    /// for administrators (see `external_table`).
    pub(crate) async fn create_external_table(
        &self,
        create: &PlanCreateExternalTable,
        state: &SessionState,
    ) -> Result<Query> {
        self.require_admin("CREATE EXTERNAL TABLE")?;
        if create.temporary {
            return Err(TenantError::NotSupported("temporary tables".into()));
        }
        let (namespace, table) = self.resolve_name(&create.name)?;
        refuse_reserved_namespace(namespace)?;
        let sql = create.definition.clone().ok_or_else(|| {
            TenantError::Internal("CREATE EXTERNAL TABLE planned without its SQL".into())
        })?;
        let (command, level) = split_access_level(create)?;
        let def = TableDef {
            namespace: namespace.to_string(),
            table: table.to_string(),
            kind: TableType::Shared,
            storage: None,
            schema: Arc::new(Schema::empty()),
            options: Vec::new(),
            defaults: Vec::new(),
            primary_key: Vec::new(),
            definition: Some(sql),
        };
        let replace = create.or_replace;
        match self.engine.changes().check_create(&def, replace) {
            Err(TenantError::TableExists(_)) if create.if_not_exists => return self.done(),
            other => other?,
        }
        let id = TableId::new(namespace, table);
        let external = ExternalTable::create(
            id,
            level,
            command,
            Arc::clone(&self.engine.server_files),
            state,
        )
        .await?;
        let def = TableDef {
            schema: external.schema(),
            ..def
        };
        let built = BuiltTable::ready(Arc::new(external));
        let event = CatalogEvent::CreateTable { def, replace };
        let outcome = self.engine.commit_built(event, Some(built)).await;
        self.done_unless(outcome, create.if_not_exists, |e| {
            matches!(e, TenantError::TableExists(_))
        })
    }

    /// Inserts the rows of `CREATE TABLE ... AS SELECT/VALUES` as the
    /// creator, from every partition of the input.
    async fn fill_from(
        &self,
        provider: &Arc<dyn BaseTableProvider>,
        input: &LogicalPlan,
        state: &SessionState,
    ) -> Result<()> {
        let mut source = state.create_physical_plan(input).await?;
        // The sink writes the one stream it is given: all the partitions.
        if source.output_partitioning().partition_count() > 1 {
            source = Arc::new(CoalescePartitionsExec::new(source));
        }
        let insert = provider
            .insert_user(&self.user, state, source, InsertOp::Append)
            .await?;
        collect(insert, self.task_context(state)?).await?;
        Ok(())
    }

    pub(crate) async fn drop_table(&self, drop: &DropTable) -> Result<Query> {
        let (namespace, table) = self.resolve_name(&drop.name)?;
        let provider = match self.engine.cache.lookup(namespace, table) {
            Ok(provider) => provider,
            Err(TenantError::TableNotFound(_) | TenantError::NamespaceNotFound(_))
                if drop.if_exists =>
            {
                return self.done();
            }
            Err(e) => return Err(e),
        };
        self.require_table_ddl(provider.core().table_type, "DROP TABLE")?;
        if provider.core().table_type == TableType::View {
            return Err(TenantError::InvalidArgument(format!(
                "'{namespace}.{table}' is a view; use DROP VIEW"
            )));
        }
        self.refuse_if_read_by_a_view(&provider)?;
        let event = CatalogEvent::DropTable {
            namespace: namespace.to_string(),
            table: table.to_string(),
        };
        let outcome = self.engine.commit(event).await;
        self.done_unless(outcome, drop.if_exists, |e| {
            matches!(e, TenantError::TableNotFound(_))
        })
    }

    pub(crate) async fn create_user(&self, create: CreateUser) -> Result<Query> {
        self.require_admin("CREATE USER")?;
        if create.name.trim().is_empty() {
            return Err(TenantError::InvalidArgument(
                "user name must not be empty".into(),
            ));
        }
        let event = CatalogEvent::CreateUser {
            name: create.name,
            role: create.role,
            verifier: create.verifier,
        };
        let outcome = self.engine.commit(event).await;
        self.done_unless(outcome, create.if_not_exists, |e| {
            matches!(e, TenantError::UserExists(_))
        })
    }

    /// `ALTER USER ... PASSWORD`: administrators set anyone's password, a
    /// user their own (an anonymous session is nobody's to set).
    pub(crate) async fn alter_user(&self, alter: AlterUser) -> Result<Query> {
        let own = alter.name == self.user.user_id().as_str()
            && !matches!(self.user.role(), Role::Anonymous);
        if !own {
            self.require_admin("ALTER USER of another user")?;
        }
        let event = CatalogEvent::SetPassword {
            name: alter.name,
            verifier: alter.verifier,
        };
        self.engine.commit(event).await?;
        self.done()
    }

    /// Drops a user and everything tables hold for them, so a later user of
    /// the same name does not inherit their rows or grants. The drop is
    /// logged first, then each table lets go of the user's rows, then that
    /// is logged too: a crash in between leaves a log the engine finishes
    /// from when it next opens, and a failure part of the way through is
    /// finished by running `DROP USER` again.
    pub(crate) async fn drop_user(&self, name: &str, if_exists: bool) -> Result<Query> {
        self.require_admin("DROP USER")?;
        let users = &self.engine.users;
        let registered = users.exists(name);
        if !registered && !users.is_forgetting(name) {
            if if_exists {
                return self.done();
            }
            return Err(TenantError::UserNotFound(name.to_string()));
        }
        // On a task of its own, so a caller that goes away does not leave
        // the drop logged and the rows in place.
        let engine = Arc::clone(&self.engine);
        let user = name.to_string();
        let dropped = tokio::spawn(async move {
            if registered {
                engine
                    .commit(CatalogEvent::DropUser { name: user.clone() })
                    .await?;
            }
            engine.forget_user(&user).await
        })
        .await
        .map_err(|e| TenantError::Internal(format!("DROP USER's task ended abnormally: {e}")))?;
        let outcome = dropped;
        self.done_unless(outcome, if_exists, |e| {
            matches!(e, TenantError::UserNotFound(_))
        })
    }

    pub(crate) async fn grant(
        &self,
        privileges: &[Access],
        table: ObjectName,
        user: &str,
        grant: bool,
    ) -> Result<Query> {
        self.require_admin(if grant { "GRANT" } else { "REVOKE" })?;
        let provider = self.lookup_object(table)?;
        let id = provider.table_id();
        let event = CatalogEvent::Grant {
            namespace: id.namespace_id().to_string(),
            table: id.table_name().to_string(),
            user: user.into(),
            privileges: privileges.to_vec(),
            grant,
        };
        self.engine.commit(event).await?;
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
        self.engine.cache.lookup(namespace, name)
    }

    /// `CREATE SOURCE`: a new upstream in the live pool (started if needed).
    pub(crate) async fn create_source(
        &self,
        name: &str,
        kind: &str,
        options: &[(String, String)],
    ) -> Result<Query> {
        self.require_admin("CREATE SOURCE")?;
        let event = CatalogEvent::CreateSource {
            name: name.into(),
            kind: kind.into(),
            options: options.to_vec(),
        };
        self.engine.commit(event).await?;
        self.done()
    }

    /// `DROP SOURCE`: refused while a stream table reads from it.
    pub(crate) async fn drop_source(&self, name: &str, if_exists: bool) -> Result<Query> {
        self.require_admin("DROP SOURCE")?;
        // Topics of tables dropped just before are still being let go.
        self.engine.live_sources.settle().await;
        let event = CatalogEvent::DropSource { name: name.into() };
        let outcome = self.engine.commit(event).await;
        self.done_unless(outcome, if_exists, |e| {
            matches!(e, TenantError::SourceNotFound(_))
        })
    }

    /// `ALTER STREAM TABLE t ADD|DROP TOPICS (...)`: topics held upstream
    /// whether or not a live query wants them.
    pub(crate) async fn alter_topics(
        &self,
        table: ObjectName,
        add: bool,
        topics: &[String],
    ) -> Result<Query> {
        self.require_admin("ALTER STREAM TABLE")?;
        let provider = self.lookup_object(table)?;
        let id = provider.table_id();
        let event = CatalogEvent::AlterTopics {
            namespace: id.namespace_id().to_string(),
            table: id.table_name().to_string(),
            add,
            topics: topics.to_vec(),
        };
        self.engine.commit(event).await?;
        self.done()
    }

    /// `FLUSH TABLE t`: writes every partition's rows held in memory to a
    /// Parquet segment of that partition and cuts the table's log.
    /// `COMPACT TABLE t` (`compact`): rewrites each partition's segments
    /// and rows in memory as one segment. Returns one row: `partitions`
    /// and `rows` written.
    pub(crate) async fn flush_table(&self, table: ObjectName, compact: bool) -> Result<Query> {
        let statement = if compact {
            "COMPACT TABLE"
        } else {
            "FLUSH TABLE"
        };
        let provider = self.lookup_object(table)?;
        let core = provider.core();
        self.require_table_ddl(core.table_type, statement)?;
        let store = core
            .storage_id
            .as_ref()
            .zip(self.engine.durable.as_ref())
            .and_then(|(storage, durable)| durable.root.table(storage.as_str()))
            .ok_or_else(|| {
                TenantError::NotSupported(format!(
                    "table '{}' is kept in memory only (a {} table{}); {statement} applies \
                     to user and shared tables of an engine with durable storage",
                    core.table_id,
                    core.table_type,
                    if self.engine.durable.is_some() {
                        ""
                    } else {
                        " of an engine with Storage::Memory"
                    }
                ))
            })?;
        let flushed = if compact {
            store.compact().await?
        } else {
            store.flush().await?
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("partitions", DataType::UInt64, false),
            Field::new("rows", DataType::UInt64, false),
        ]));
        let row = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt64Array::from(vec![flushed.partitions])),
                Arc::new(UInt64Array::from(vec![flushed.rows])),
            ],
        )
        .map_err(|e| TenantError::Internal(e.to_string()))?;
        Query::rows(row, self.task_context(&self.engine.state)?)
    }

    /// `VERIFY TABLE t` / `VERIFY DATABASE`: reads everything the table
    /// (or the catalog and every table) keeps on disk, changing nothing,
    /// and answers one row per damaged file, or one `ok` row per object
    /// with what was read.
    pub(crate) async fn verify(&self, table: Option<ObjectName>) -> Result<Query> {
        let statement = if table.is_some() {
            "VERIFY TABLE"
        } else {
            "VERIFY DATABASE"
        };
        self.require_admin(statement)?;
        let whole = table.is_none();
        let providers = match table {
            Some(table) => vec![self.lookup_object(table)?],
            None => {
                let mut all = self.engine.cache.all_providers();
                all.sort_by_key(|p| p.table_id().to_string());
                all
            }
        };
        let mut report = Report::default();
        let durable = self.engine.durable.as_ref();
        if let Some(durable) = durable.filter(|_| whole) {
            match durable.root.verify_catalog() {
                Ok((segments, records)) => report.ok(
                    "catalog",
                    format!("{records} records in {segments} log segments"),
                ),
                Err(damage) => report.damage("catalog", damage),
            }
        }
        for provider in providers {
            let core = provider.core();
            let name = core.table_id.to_string();
            let store = core
                .storage_id
                .as_ref()
                .zip(durable)
                .and_then(|(storage, durable)| durable.root.table(storage.as_str()));
            let Some(store) = store else {
                report.row(
                    &name,
                    "",
                    "memory",
                    "kept in memory only: nothing on disk".into(),
                );
                continue;
            };
            let verified = store.verify().await?;
            if verified.damage.is_empty() {
                report.ok(
                    &name,
                    format!(
                        "{} log records in {} segments; {} partitions, {} Parquet segments \
                         checked{}",
                        verified.log_records,
                        verified.log_segments,
                        verified.partitions,
                        verified.segments - verified.unchecked_segments,
                        if verified.unchecked_segments > 0 {
                            format!(
                                " ({} written before checksums, not checked)",
                                verified.unchecked_segments
                            )
                        } else {
                            String::new()
                        }
                    ),
                );
            }
            for damage in verified.damage {
                report.damage(&name, damage);
            }
        }
        let batch = report.batch()?;
        Query::rows(batch, self.task_context(&self.engine.state)?)
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

/// The declared columns of `create`, its PRIMARY KEY columns made NOT
/// NULL (as SQL has them), and the key's column names.
fn keyed_schema(kind: TableType, create: &CreateMemoryTable) -> Result<(SchemaRef, Vec<String>)> {
    let schema = create.input.schema().as_arrow();
    let mut key = Vec::new();
    for constraint in create.constraints.iter() {
        match constraint {
            Constraint::PrimaryKey(columns) if key.is_empty() => key.clone_from(columns),
            Constraint::PrimaryKey(_) => {
                return Err(TenantError::InvalidArgument(format!(
                    "table '{}' declares more than one primary key",
                    create.name
                )));
            }
            Constraint::Unique(_) => {
                return Err(TenantError::NotSupported(format!(
                    "UNIQUE constraints (table '{}'); declare a PRIMARY KEY",
                    create.name
                )));
            }
        }
    }
    if key.is_empty() {
        return Ok((Arc::new(schema.clone()), Vec::new()));
    }
    if kind == TableType::Stream {
        return Err(TenantError::NotSupported(
            "a PRIMARY KEY on a stream table (its rows expire)".into(),
        ));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            f.as_ref()
                .clone()
                .with_nullable(f.is_nullable() && !key.contains(&i))
        })
        .collect();
    let names = key
        .iter()
        .map(|&i| schema.field(i).name().clone())
        .collect();
    Ok((
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        names,
    ))
}

/// The rows `VERIFY` answers: object, file, status, detail.
#[derive(Debug, Default)]
struct Report {
    rows: Vec<[String; 4]>,
}

impl Report {
    fn row(&mut self, object: &str, file: &str, status: &str, detail: String) {
        self.rows
            .push([object.into(), file.into(), status.into(), detail]);
    }

    fn ok(&mut self, object: &str, detail: String) {
        self.row(object, "", "ok", detail);
    }

    fn damage(&mut self, object: &str, damage: TenantError) {
        match damage {
            TenantError::Corrupted { file, detail } => self.row(object, &file, "damaged", detail),
            other => self.row(object, "", "damaged", other.to_string()),
        }
    }

    fn batch(self) -> Result<RecordBatch> {
        let names = ["object", "file", "status", "detail"];
        let schema = Arc::new(Schema::new(
            names
                .iter()
                .map(|name| Field::new(*name, DataType::Utf8, false))
                .collect::<Vec<_>>(),
        ));
        let columns = (0..names.len())
            .map(|i| {
                Arc::new(StringArray::from_iter_values(
                    self.rows.iter().map(|row| row[i].as_str()),
                )) as ArrayRef
            })
            .collect();
        RecordBatch::try_new(schema, columns).map_err(|e| TenantError::Internal(e.to_string()))
    }
}

/// What a table or view stores has no qualifiers, so its column names must
/// be unique without them (DataFusion's rule, in its words).
fn ensure_unique_column_names(schema: &Schema) -> Result<()> {
    let mut seen = HashSet::with_capacity(schema.fields().len());
    match schema.fields().iter().find(|f| !seen.insert(f.name())) {
        Some(duplicate) => Err(TenantError::from_datafusion(DataFusionError::SchemaError(
            Box::new(SchemaError::DuplicateUnqualifiedField {
                name: duplicate.name().clone(),
            }),
            Box::new(None),
        ))),
        None => Ok(()),
    }
}
