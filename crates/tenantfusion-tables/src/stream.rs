//! Stream tables: bounded, ephemeral rows, either fed by `INSERT` (owned
//! per user) or by a live source (one set of rows per topic, shared by
//! every reader under an access level).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use tenantfusion_core::{
    Access, AccessLevel, Clock, TableId, TableType, TenantError, UserContext, UserId,
};

use crate::policy::{PartitionPolicy, SharedAccess, UserPartitions};
use crate::provider::PartitionedTable;
use crate::ring::{Retention, RingStore};
use crate::store::{PartitionKey, PartitionStore};

/// Where a stream table's rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOrigin {
    /// `INSERT`: each user writes and reads their own rows.
    Users,
    /// A live source: rows keyed by a topic column, stored once per topic.
    Source {
        /// The source's name in the live pool.
        source: String,
        /// The column holding each row's topic.
        topic_column: String,
        /// Who may read.
        access: AccessLevel,
    },
}

/// Who reads and writes which partition of a stream table.
#[derive(Debug)]
pub enum StreamPolicy {
    /// Fed by `INSERT`: like a user table.
    Users(UserPartitions),
    /// Fed by a source: readers by access level; nobody inserts.
    Source {
        /// The source's name.
        source: String,
        /// The topic column.
        topic_column: String,
        /// Readers, as for a shared table.
        access: SharedAccess,
    },
}

impl PartitionPolicy for StreamPolicy {
    fn table_type(&self) -> TableType {
        TableType::Stream
    }

    fn read_partition(
        &self,
        table: &TableId,
        user: &UserContext,
    ) -> Result<PartitionKey, TenantError> {
        match self {
            StreamPolicy::Users(users) => users.read_partition(table, user),
            StreamPolicy::Source { access, .. } => access.read_partition(table, user),
        }
    }

    fn write_partition(
        &self,
        table: &TableId,
        user: &UserContext,
        access: Access,
    ) -> Result<PartitionKey, TenantError> {
        match self {
            StreamPolicy::Users(users) => users.write_partition(table, user, access),
            StreamPolicy::Source { source, .. } => Err(TenantError::NotSupported(format!(
                "stream table '{table}' is fed by source '{source}'; it takes no {access}"
            ))),
        }
    }

    fn owned_partition(&self, user: &UserId) -> Option<PartitionKey> {
        match self {
            StreamPolicy::Users(users) => users.owned_partition(user),
            StreamPolicy::Source { .. } => None,
        }
    }

    fn forget_user(&self, user: &UserId) {
        if let StreamPolicy::Source { access, .. } = self {
            access.forget_user(user);
        }
    }

    fn topic_column(&self) -> Option<&str> {
        match self {
            StreamPolicy::Users(_) => None,
            StreamPolicy::Source { topic_column, .. } => Some(topic_column),
        }
    }

    fn shared_access(&self) -> Option<&SharedAccess> {
        match self {
            StreamPolicy::Users(_) => None,
            StreamPolicy::Source { access, .. } => Some(access),
        }
    }
}

/// A stream table: bounded rows in a [`RingStore`], one ring per topic (fed
/// by a source) or per user (fed by `INSERT`), shared by every reader.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use datafusion::arrow::datatypes::{DataType, Field, Schema};
/// use tenantfusion_core::{BaseTableProvider, SystemClock, TableId, TableType};
/// use tenantfusion_tables::{Retention, StreamOrigin, StreamTableProvider};
///
/// let schema = Arc::new(Schema::new(vec![Field::new("body", DataType::Utf8, true)]));
/// let retention = Retention { ttl: Some(Duration::from_secs(30)), max_rows: Some(256) };
/// let table = StreamTableProvider::new_stream(
///     TableId::new("app", "events"), schema, StreamOrigin::Users, retention, Arc::new(SystemClock),
/// ).unwrap();
/// assert_eq!(table.core().table_type, TableType::Stream);
/// ```
pub type StreamTableProvider = PartitionedTable<StreamPolicy>;

impl PartitionedTable<StreamPolicy> {
    /// A stream table keeping rows by `retention`, aged by `clock`. A
    /// source-bound table's topic column must exist and be a string column.
    pub fn new_stream(
        table_id: TableId,
        schema: SchemaRef,
        origin: StreamOrigin,
        retention: Retention,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TenantError> {
        let policy = match origin {
            StreamOrigin::Users => StreamPolicy::Users(UserPartitions),
            StreamOrigin::Source {
                source,
                topic_column,
                access,
            } => {
                let field = schema.field_with_name(&topic_column).map_err(|_| {
                    TenantError::SchemaMismatch(format!(
                        "topic column '{topic_column}' is not a column of stream table '{table_id}'"
                    ))
                })?;
                if !field.data_type().is_string() {
                    return Err(TenantError::SchemaMismatch(format!(
                        "topic column '{topic_column}' of stream table '{table_id}' must be TEXT, not {}",
                        field.data_type()
                    )));
                }
                StreamPolicy::Source {
                    source,
                    topic_column,
                    access: SharedAccess::new(access),
                }
            }
        };
        let store: Arc<dyn PartitionStore> = Arc::new(RingStore::new(retention, clock));
        Ok(Self::with_policy(table_id, schema, store, policy))
    }

    /// Who feeds the table and how it may be read.
    pub fn policy(&self) -> &StreamPolicy {
        self.policy_ref()
    }

    /// The source feeding this table, if it is source-bound.
    pub fn source(&self) -> Option<&str> {
        match self.policy_ref() {
            StreamPolicy::Source { source, .. } => Some(source),
            StreamPolicy::Users(_) => None,
        }
    }

    /// The column naming each row's topic, if the table is source-bound.
    pub fn topic_column(&self) -> Option<&str> {
        self.policy_ref().topic_column()
    }

    /// Adds rows of one topic that arrived from the table's source; `batch`
    /// has the table's (all-nullable) schema. Live queries of the topic
    /// are told.
    pub async fn append_topic(&self, topic: &Arc<str>, batch: RecordBatch) -> Result<u64> {
        self.append_partition(&PartitionKey::Topic(Arc::clone(topic)), vec![batch])
            .await
    }
}
