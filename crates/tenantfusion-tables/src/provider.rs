//! The one provider of a user or shared table.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Constraint, Constraints, DFSchema};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::Result;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType as DFTableType};
use datafusion::physical_plan::ExecutionPlan;
use tenantfusion_core::{
    Access, AccessLevel, BaseTableProvider, ChangeListener, Mutation, StorageId, TableId,
    TableProviderCore, TenantError, UserContext, UserId, WatchGuard,
};

use crate::binding::{IdentityBinding, PlannedFor};
use crate::change_listeners::ChangeListeners;
use crate::policy::{PartitionPolicy, SharedAccess, UserPartitions};
use crate::primary_key::PrimaryKey;
use crate::scan::{CallerStatistics, PartitionScanExec, ScanRequest};
use crate::sink::{MutationSink, PartitionSink};
use crate::store::{PartitionKey, PartitionStore};
use crate::topic_filter::topics_in;

/// A table whose rows live in a [`PartitionStore`] and whose partition per
/// caller is chosen by a [`PartitionPolicy`].
///
/// Use the aliases [`UserTableProvider`] and [`SharedTableProvider`].
#[derive(Debug)]
pub struct PartitionedTable<P> {
    core: TableProviderCore,
    /// `core.schema` with every column nullable: what is stored. DataFusion
    /// sees `core.schema` (NOT NULL included, so its rules on nullability
    /// apply); the sink enforces NOT NULL, naming table and column, and the
    /// scan labels what it reads with the declared schema again.
    stored_schema: SchemaRef,
    store: Arc<dyn PartitionStore>,
    policy: Arc<P>,
    column_defaults: HashMap<String, Expr>,
    /// Live queries of this table, told by every write.
    listeners: Arc<ChangeListeners>,
    primary_key: Option<Arc<PrimaryKey>>,
    /// What DataFusion is told of the primary key (see `constraints`).
    constraints: Option<Constraints>,
}

/// A user table: each caller reads and writes only their own rows.
///
/// ```
/// use std::sync::Arc;
/// use datafusion::arrow::datatypes::{DataType, Field, Schema};
/// use tenantfusion_core::{BaseTableProvider, TableId};
/// use tenantfusion_tables::{MemoryPartitionStore, UserTableProvider};
///
/// let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
/// let table = UserTableProvider::new_user(
///     TableId::new("app", "notes"), schema, Arc::new(MemoryPartitionStore::new()));
/// assert_eq!(table.core().table_id.to_string(), "app.notes");
/// ```
pub type UserTableProvider = PartitionedTable<UserPartitions>;

/// A shared table: one set of rows, guarded by an [`AccessLevel`] and grants.
pub type SharedTableProvider = PartitionedTable<SharedAccess>;

impl PartitionedTable<UserPartitions> {
    /// A user table over `store`.
    pub fn new_user(table_id: TableId, schema: SchemaRef, store: Arc<dyn PartitionStore>) -> Self {
        Self::with_policy(table_id, schema, store, UserPartitions)
    }
}

impl PartitionedTable<SharedAccess> {
    /// A shared table over `store`, at access level `level`.
    pub fn new_shared(
        table_id: TableId,
        schema: SchemaRef,
        level: AccessLevel,
        store: Arc<dyn PartitionStore>,
    ) -> Self {
        Self::with_policy(table_id, schema, store, SharedAccess::new(level))
    }

    /// The table's access level and grants.
    pub fn access(&self) -> &SharedAccess {
        &self.policy
    }
}

impl<P: PartitionPolicy> PartitionedTable<P> {
    pub(crate) fn with_policy(
        table_id: TableId,
        schema: SchemaRef,
        store: Arc<dyn PartitionStore>,
        policy: P,
    ) -> Self {
        let stored_schema = Arc::new(Schema::new_with_metadata(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
            schema.metadata().clone(),
        ));
        Self {
            core: TableProviderCore::new(table_id, policy.table_type(), schema),
            stored_schema,
            store,
            policy: Arc::new(policy),
            column_defaults: HashMap::new(),
            listeners: Arc::default(),
            primary_key: None,
            constraints: None,
        }
    }

    /// Declares columns `columns` (NOT NULL) the table's primary key: a
    /// write that would leave two rows of a partition with equal key values
    /// fails with `PRIMARY_KEY_VIOLATION` (see [`PrimaryKey`]). No columns:
    /// no key.
    pub fn with_primary_key(mut self, columns: Vec<usize>) -> Result<Self, TenantError> {
        self.primary_key = match columns.is_empty() {
            true => None,
            false => Some(Arc::new(PrimaryKey::new(&self.core.schema, columns)?)),
        };
        self.constraints = match (&self.primary_key, self.policy.topic_column()) {
            (Some(key), None) => Some(Constraints::new_unverified(vec![Constraint::PrimaryKey(
                key.columns().to_vec(),
            )])),
            _ => None,
        };
        Ok(self)
    }

    /// The table's primary key, if it has one.
    pub fn primary_key(&self) -> Option<&PrimaryKey> {
        self.primary_key.as_deref()
    }

    /// Sets `DEFAULT` expressions used by INSERTs that omit columns.
    pub fn with_column_defaults(
        mut self,
        defaults: impl IntoIterator<Item = (String, Expr)>,
    ) -> Self {
        self.column_defaults = defaults.into_iter().collect();
        self
    }

    /// Records where the table's rows are stored durably, if anywhere
    /// ([`TableProviderCore::storage_id`]).
    pub fn with_storage_id(mut self, storage: Option<StorageId>) -> Self {
        self.core.storage_id = storage;
        self
    }

    /// The schema rows are stored with: the declared one, every column
    /// nullable (NOT NULL is the sink's to enforce).
    pub fn stored_schema(&self) -> &SchemaRef {
        &self.stored_schema
    }

    /// The store holding this table's rows.
    pub fn store(&self) -> &Arc<dyn PartitionStore> {
        &self.store
    }

    /// The access level and grants, for tables read like shared tables
    /// (shared tables, source-bound stream tables).
    pub fn shared_access(&self) -> Option<&SharedAccess> {
        self.policy.shared_access()
    }

    pub(crate) fn policy_ref(&self) -> &P {
        &self.policy
    }

    /// Appends rows to one partition and tells its live queries.
    pub(crate) async fn append_partition(
        &self,
        key: &PartitionKey,
        batches: Vec<RecordBatch>,
    ) -> Result<u64> {
        self.listeners
            .append(self.store.as_ref(), key, batches)
            .await
    }

    /// Live queries registered on this table.
    pub fn live_query_count(&self) -> usize {
        self.listeners.listener_count()
    }

    fn build_scan(
        &self,
        binding: IdentityBinding,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let predicate = conjunction(filters.iter().cloned())
            .map(|expr| {
                // Pushed-down filters only name this table's columns; the
                // scan evaluates them on unqualified batches.
                expr.transform(|e| match e {
                    Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(
                        c.name,
                    )))),
                    other => Ok(Transformed::no(other)),
                })
                .map(|t| t.data)
            })
            .transpose()?;
        // Read only the columns returned or filtered on.
        let (columns, projection) = match projection {
            None => (None, None),
            Some(projection) => {
                let mut columns = projection.clone();
                for column in predicate.iter().flat_map(Expr::column_refs) {
                    columns.push(self.stored_schema.index_of(column.name())?);
                }
                columns.sort_unstable();
                columns.dedup();
                let within = projection
                    .iter()
                    .map(|i| columns.binary_search(i).unwrap_or_default())
                    .collect();
                (Some(columns), Some(within))
            }
        };
        let read_schema = match &columns {
            Some(columns) => self.stored_schema.project(columns)?,
            None => self.stored_schema.as_ref().clone(),
        };
        let predicate = predicate
            .map(|expr| state.create_physical_expr(expr, &DFSchema::try_from(read_schema)?))
            .transpose()?;
        let topics = self
            .policy
            .topic_column()
            .and_then(|column| topics_in(filters, column));
        let statistics = self.caller_statistics(&binding, state, columns.as_deref());
        let request = ScanRequest {
            columns,
            projection,
            predicate,
            limit,
            topics,
            statistics,
        };
        Ok(Arc::new(PartitionScanExec::try_new(
            Arc::clone(&self.core.table_id),
            &self.stored_schema,
            &self.core.schema,
            Arc::clone(&self.store),
            Arc::clone(&self.policy) as Arc<dyn PartitionPolicy>,
            binding,
            request,
        )?))
    }

    /// Statistics of the caller the plan is made for alone, at `columns`
    /// (see [`PlannedFor`]); `None` in a plan that may be kept. A table
    /// stored per topic is read over many partitions: none either.
    fn caller_statistics(
        &self,
        binding: &IdentityBinding,
        state: &dyn Session,
        columns: Option<&[usize]>,
    ) -> Option<CallerStatistics> {
        if self.policy.topic_column().is_some() {
            return None;
        }
        let planned = state.config().get_extension::<PlannedFor>()?;
        // A bound scan (a view's, run as its invoker) reads its bound caller.
        let caller = match binding {
            IdentityBinding::Bound(user) => user,
            IdentityBinding::Task => &planned.0,
        };
        let key = self
            .policy
            .read_partition(&self.core.table_id, caller)
            .ok()?;
        let statistics = self.store.statistics(&key, &self.stored_schema, columns)?;
        Some(CallerStatistics {
            caller: caller.user_id().clone(),
            statistics: Arc::new(statistics),
        })
    }

    fn build_insert(
        &self,
        binding: IdentityBinding,
        input: Arc<dyn ExecutionPlan>,
        op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if op != InsertOp::Append {
            return Err(TenantError::NotSupported(format!(
                "{op} is not supported on table '{}'; use INSERT INTO",
                self.core.table_id
            ))
            .into());
        }
        let sink = self.sink(binding);
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    /// Writes of the caller `binding` resolves to.
    fn sink(&self, binding: IdentityBinding) -> PartitionSink {
        PartitionSink::new(
            Arc::clone(&self.core.table_id),
            Arc::clone(&self.core.schema),
            Arc::clone(&self.stored_schema),
            Arc::clone(&self.store),
            Arc::clone(&self.listeners),
            Arc::clone(&self.policy) as Arc<dyn PartitionPolicy>,
            binding,
        )
        .with_primary_key(self.primary_key.clone())
    }
}

#[async_trait]
impl<P: PartitionPolicy> TableProvider for PartitionedTable<P> {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.core.schema)
    }

    /// The primary key, where it holds for what a scan returns: a scan
    /// reads one partition (one user's rows, or the shared ones), and every
    /// write keeps the key unique within a partition. A table stored per
    /// topic is read over many partitions, so its key is not declared.
    fn constraints(&self) -> Option<&Constraints> {
        self.constraints.as_ref()
    }

    fn table_type(&self) -> DFTableType {
        DFTableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.column_defaults.get(column)
    }

    /// DataFusion keeps every filter in a `FilterExec` above the scan, as
    /// over its own memory tables, and offers it to the scan when it
    /// optimises the physical plan: the scan hands it to the store, which
    /// may leave out files and row groups it cannot match
    /// ([`ReadRequest::predicate`](crate::ReadRequest::predicate)). A table
    /// stored per topic takes its deterministic filters here, exactly: they
    /// say which topics' partitions to read, and the scan applies them to
    /// the ring's own buffers (all rows kept: no copy).
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let by_topic = self.policy.topic_column().is_some();
        Ok(filters
            .iter()
            .map(|f| {
                if by_topic && !f.is_volatile() {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.build_scan(IdentityBinding::Task, state, projection, filters, limit)
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.build_insert(IdentityBinding::Task, input, insert_op)
    }
}

#[async_trait]
impl<P: PartitionPolicy> BaseTableProvider for PartitionedTable<P> {
    fn core(&self) -> &TableProviderCore {
        &self.core
    }

    fn authorize(&self, user: &UserContext, access: Access) -> Result<(), TenantError> {
        let id = &self.core.table_id;
        match access {
            Access::Select => self.policy.read_partition(id, user).map(drop),
            write => self.policy.write_partition(id, user, write).map(drop),
        }
    }

    async fn forget_user(&self, user: &UserId) -> Result<(), TenantError> {
        self.policy.forget_user(user);
        if let Some(key) = self.policy.owned_partition(user) {
            self.store.drop_partition(&key).await?;
        }
        Ok(())
    }

    async fn scan_user(
        &self,
        user: &UserContext,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let binding = IdentityBinding::Bound(Arc::new(user.clone()));
        self.build_scan(binding, state, projection, filters, limit)
    }

    async fn insert_user(
        &self,
        user: &UserContext,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.build_insert(IdentityBinding::Bound(Arc::new(user.clone())), input, op)
    }

    fn mutate(
        &self,
        input: Arc<dyn ExecutionPlan>,
        mutation: Mutation,
    ) -> Result<Arc<dyn ExecutionPlan>, TenantError> {
        if !self.store.supports_replace() {
            return Err(self.core.refuses(mutation));
        }
        let sink = MutationSink::new(self.sink(IdentityBinding::Task), mutation, input.schema());
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    async fn watch_user(
        &self,
        user: &UserContext,
        topics: Option<Vec<Arc<str>>>,
        listener: Arc<dyn ChangeListener>,
    ) -> Result<WatchGuard, TenantError> {
        let key = self.policy.read_partition(&self.core.table_id, user)?;
        let (keys, read) = match (self.policy.topic_column(), topics) {
            (None, _) => (vec![key.clone()], Some(vec![key])),
            (Some(_), None) => (vec![PartitionKey::Shared], None),
            (Some(_), Some(topics)) => {
                let keys: Vec<_> = topics.into_iter().map(PartitionKey::Topic).collect();
                (keys.clone(), Some(keys))
            }
        };
        let watch = self
            .listeners
            .watch(keys, listener, self.store.as_ref(), read)
            .await?;
        Ok(WatchGuard::new(watch))
    }
}
