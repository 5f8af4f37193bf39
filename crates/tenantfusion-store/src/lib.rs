//! Durable storage for tenantfusion tables.
//!
//! Every write is a checksummed record of a write-ahead log carrying Arrow
//! IPC rows, acknowledged only once it is durable (group commit: one fsync
//! serves every writer waiting on it), read back in order when the log
//! opens, with an unacknowledged write torn by a crash cut off and any
//! other damage reported with the file it is in.
//!
//! - [`StorageRoot`]: the directory of an engine's durable state.
//! - [`CatalogLog`]: namespaces, tables, users, grants and sources.
//! - [`DurablePartitionStore`]: one table's rows, per user partition: in
//!   the log and memory until flushed, then in Parquet segments listed by a
//!   manifest per partition.
//! - [`Wal`]: the log underneath both, written by [`Committers`] that
//!   every log of a root shares.

#![deny(missing_docs)]

mod catalog_log;
mod codec;
mod committers;
pub mod figures;
mod files;
mod flush_policy;
mod ipc;
mod manifest;
mod parquet_segment;
mod partition;
mod record;
mod root;
mod row_group_cache;
mod segment;
mod table_store;
mod wal;

pub use catalog_log::{CatalogEvent, CatalogLog, TableDef};
pub use committers::Committers;
pub use flush_policy::FlushPolicy;
pub use ipc::{decode_batches, encode_batches};
pub use record::MAX_PAYLOAD;
pub use root::StorageRoot;
pub use row_group_cache::{DEFAULT_ROW_GROUP_CACHE_BYTES, RowGroupCache};
pub use table_store::{DurablePartitionStore, FlushStats, Salvaged, TableStats, Verified};
pub use wal::{Durability, Lsn, Wal, WalOptions, WalStats};
