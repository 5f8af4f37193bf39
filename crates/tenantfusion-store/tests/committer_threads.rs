//! How many threads a storage root's logs take: alone in its test binary,
//! so the process's threads are the test's own.

use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use tenantfusion_core::UserId;
use tenantfusion_store::{Committers, FlushPolicy, StorageRoot, WalOptions};
use tenantfusion_tables::{PartitionKey, PartitionStore};

/// The names of this process's threads, less tokio's (its blocking pool
/// grows with file I/O and is not what is counted here).
fn threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.starts_with("tokio-"))
        .collect();
    names.sort();
    names
}

/// 300 durable tables of one root, each written: the root's committer
/// threads and no thread per table (there used to be one per table).
#[tokio::test]
async fn three_hundred_tables_are_written_by_the_roots_few_committers() {
    let dir = tempfile::tempdir().unwrap();
    let before = threads();
    let root = StorageRoot::open(dir.path(), WalOptions::default()).unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
    let alice = PartitionKey::User(UserId::new("alice"));
    let mut stores = Vec::new();
    for t in 0..300 {
        let store = root
            .table_store(&format!("t.{t}"), FlushPolicy::MANUAL)
            .unwrap();
        let rows = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(vec![t]))],
        )
        .unwrap();
        store.append(&alice, vec![rows]).await.unwrap();
        stores.push(store);
    }
    let during = threads();
    let added = during.len() - before.len();
    assert_eq!(
        added,
        Committers::DEFAULT_THREADS,
        "threads before: {before:?}, with 300 tables: {during:?}"
    );
    assert!(during.iter().filter(|n| n.starts_with("tf-wal-")).count() == added);
    for (t, store) in stores.iter().enumerate() {
        assert_eq!(store.stats().wal.appends, 1, "table {t}");
    }
    drop(stores);
    drop(root);
    // The pool joined its threads, but a joined thread's /proc entry can
    // outlive the join by a moment (the kernel wakes the joiner before it
    // removes the task): a bounded wait, not a timing check.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while threads() != before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(threads(), before, "the committers stop with the root");
}
