//! Durable storage for tenantfusion tables.
//!
//! This first part is the write-ahead log: every write is a checksummed
//! record carrying Arrow IPC rows, acknowledged only once it is durable
//! (group commit: one fsync serves every writer waiting on it), read back
//! in order when the log opens, with an unacknowledged write torn by a
//! crash cut off and any other damage reported with the file it is in.
//! Parquet segments, manifests, flush and compaction build on it.

mod ipc;
mod record;
mod segment;
mod wal;

pub use ipc::{decode_batches, encode_batches};
pub use record::MAX_PAYLOAD;
pub use wal::{Durability, Lsn, Wal, WalOptions, WalStats};
