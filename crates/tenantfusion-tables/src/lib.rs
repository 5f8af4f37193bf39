//! Table providers of tenantfusion: [`UserTableProvider`] (rows partitioned
//! per owner) and [`SharedTableProvider`] (one partition behind access
//! levels), over a [`PartitionStore`].
//!
//! One provider exists per table. Its plans carry no identity: the caller's
//! partition and permissions are decided when the plan executes, from the
//! [`UserContext`](tenantfusion_core::UserContext) in the task's session
//! config, so every plan is user-independent.

#![deny(missing_docs)]

mod binding;
mod change_listeners;
mod compact;
mod matching;
mod policy;
mod primary_key;
mod provider;
mod ring;
mod scan;
mod sink;
mod store;
mod stream;
mod topic_filter;

pub use binding::{BoundCallerExec, IdentityBinding, PlannedFor};
pub use change_listeners::{ChangeListeners, Watch};
pub use matching::{RowMatcher, bounds_of, rows_at};
pub use policy::{PartitionPolicy, SharedAccess, UserPartitions};
pub use primary_key::PrimaryKey;
pub use provider::{PartitionedTable, SharedTableProvider, UserTableProvider};
pub use ring::{Retention, RingStore};
pub use scan::{CallerStatistics, PartitionScanExec, ScanRequest};
pub use sink::{MutationSink, PartitionSink};
pub use store::{
    MemoryPartitionStore, PartitionKey, PartitionStore, ReadRequest, append_coalesced,
};
pub use stream::{StreamOrigin, StreamPolicy, StreamTableProvider};
pub use topic_filter::topics_in;
