use std::time::{Duration, Instant};

use super::records::APPEND;
use super::*;
use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, col, lit};
use tenantfusion_core::UserId;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("body", DataType::Utf8, true),
    ]))
}

fn rows(ids: &[i64]) -> RecordBatch {
    let bodies: Vec<String> = ids.iter().map(|i| format!("row {i}")).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(bodies)),
        ],
    )
    .unwrap()
}

fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

fn options() -> WalOptions {
    WalOptions {
        durability: Durability::Buffered,
        ..WalOptions::default()
    }
}

fn open(dir: &Path, policy: FlushPolicy) -> DurablePartitionStore {
    DurablePartitionStore::open(dir, options(), policy).unwrap()
}

fn user(name: &str) -> PartitionKey {
    PartitionKey::User(UserId::new(name))
}

fn segment_files(dir: &Path, partition: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("data").join(partition))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".parquet"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn flushed_and_logged_rows_come_back_once_after_reopen_and_drops_remove_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (user("alice"), user("bob"));
    {
        let store = open(dir.path(), FlushPolicy::MANUAL);
        store.append(&alice, vec![rows(&[1, 2])]).await.unwrap();
        store.append(&bob, vec![rows(&[10])]).await.unwrap();
        store
            .append(&PartitionKey::Shared, vec![rows(&[100])])
            .await
            .unwrap();
        let flushed = store.flush().await.unwrap();
        assert_eq!((flushed.partitions, flushed.rows), (3, 4));
        assert_eq!(store.flush().await.unwrap().rows, 0, "nothing new to flush");
        store.append(&alice, vec![rows(&[3])]).await.unwrap();
        store.append(&bob, vec![rows(&[11])]).await.unwrap();
        assert_eq!(ids(&store.read(&alice).await.unwrap()), [1, 2, 3]);
        assert_eq!(segment_files(dir.path(), "u-bob"), ["seg-0.parquet"]);
        // Bob's rows are in a segment and in memory: both go.
        assert_eq!(store.drop_partition(&bob).await.unwrap(), 2);
        assert_eq!(store.drop_partition(&bob).await.unwrap(), 0);
        assert!(segment_files(dir.path(), "u-bob").is_empty());
        store.append(&bob, vec![rows(&[12])]).await.unwrap();
        assert_eq!(store.stats().segments_written, 3);
    }
    // The log still holds the flushed records (its only segment is
    // the one being written); replay must skip them, not add them twice.
    let store = open(dir.path(), FlushPolicy::MANUAL);
    assert_eq!(ids(&store.read(&alice).await.unwrap()), [1, 2, 3]);
    assert_eq!(ids(&store.read(&bob).await.unwrap()), [12]);
    assert_eq!(
        ids(&store.read(&PartitionKey::Shared).await.unwrap()),
        [100]
    );
    assert_eq!(store.partition_count(), 3);
    // A segment number is never reused after a drop.
    store.flush().await.unwrap();
    assert_eq!(segment_files(dir.path(), "u-bob"), ["seg-1.parquet"]);
    assert_eq!(
        segment_files(dir.path(), "u-alice"),
        ["seg-0.parquet", "seg-1.parquet"]
    );
}

#[tokio::test]
async fn changes_to_flushed_rows_survive_reopen_flush_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (user("alice"), user("bob"));
    let sorted = |batches: Vec<RecordBatch>| {
        let mut ids = ids(&batches);
        ids.sort_unstable();
        ids
    };
    {
        let store = open(dir.path(), FlushPolicy::MANUAL);
        store.append(&alice, vec![rows(&[1, 2, 3])]).await.unwrap();
        store.append(&bob, vec![rows(&[2])]).await.unwrap();
        store.flush().await.unwrap();
        store.append(&alice, vec![rows(&[4])]).await.unwrap();
        // A flushed row updated, a row in memory deleted, a row that is
        // not there left alone.
        assert_eq!(
            store
                .replace(&alice, rows(&[2]), Some(rows(&[20])))
                .await
                .unwrap(),
            [0]
        );
        assert_eq!(store.replace(&alice, rows(&[4]), None).await.unwrap(), [0]);
        assert!(
            store
                .replace(&alice, rows(&[99]), None)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .replace(&alice, rows(&[2]), None)
                .await
                .unwrap()
                .is_empty(),
            "gone"
        );
        assert_eq!(sorted(store.read(&alice).await.unwrap()), [1, 3, 20]);
        assert_eq!(sorted(store.read(&bob).await.unwrap()), [2]);
    }
    let store = open(dir.path(), FlushPolicy::MANUAL);
    assert_eq!(sorted(store.read(&alice).await.unwrap()), [1, 3, 20]);
    assert_eq!(sorted(store.read(&bob).await.unwrap()), [2]);
    // The flush rewrites the segment the update took a row out of.
    store.flush().await.unwrap();
    assert_eq!(
        segment_files(dir.path(), "u-alice"),
        ["seg-1.parquet", "seg-2.parquet"]
    );
    assert_eq!(sorted(store.read(&alice).await.unwrap()), [1, 3, 20]);
    let compacted = store.compact().await.unwrap();
    assert_eq!((compacted.partitions, compacted.rows), (1, 3));
    assert_eq!(segment_files(dir.path(), "u-alice"), ["seg-3.parquet"]);
    assert_eq!(segment_files(dir.path(), "u-bob"), ["seg-0.parquet"]);
    drop(store);
    let store = open(dir.path(), FlushPolicy::MANUAL);
    assert_eq!(sorted(store.read(&alice).await.unwrap()), [1, 3, 20]);
    assert_eq!(sorted(store.read(&bob).await.unwrap()), [2]);
}

#[tokio::test]
async fn a_flush_cuts_the_log_up_to_the_oldest_unflushed_write() {
    let dir = tempfile::tempdir().unwrap();
    let small = WalOptions {
        segment_bytes: 256,
        ..options()
    };
    let (alice, bob) = (user("alice"), user("bob"));
    {
        let store = DurablePartitionStore::open(dir.path(), small, FlushPolicy::MANUAL).unwrap();
        for i in 0..20 {
            store.append(&alice, vec![rows(&[i])]).await.unwrap();
        }
        let before = store.log_segment_count();
        assert!(before > 5, "{before} log segments");
        let flushed = store.flush().await.unwrap();
        assert_eq!(flushed.rows, 20);
        assert_eq!(flushed.log_segments_removed as usize, before - 1);
        assert_eq!(store.log_segment_count(), 1);
        // Bob's unflushed write holds back every segment from his on.
        store.append(&bob, vec![rows(&[50])]).await.unwrap();
        for i in 20..30 {
            store.append(&alice, vec![rows(&[i])]).await.unwrap();
        }
        let segments = store.log_segment_count();
        let loaded = store.inner.load().await.unwrap();
        let partition = store.inner.partition(loaded, &alice).await.unwrap();
        store
            .inner
            .flush_partition(&alice, &partition, false)
            .await
            .unwrap();
        assert_eq!(store.inner.cut_log(loaded).await.unwrap(), 0);
        assert_eq!(store.log_segment_count(), segments);
    }
    let store = DurablePartitionStore::open(dir.path(), small, FlushPolicy::MANUAL).unwrap();
    assert_eq!(
        ids(&store.read(&alice).await.unwrap()),
        (0..30).collect::<Vec<_>>()
    );
    assert_eq!(ids(&store.read(&bob).await.unwrap()), [50]);
}

#[tokio::test]
async fn scans_skip_row_groups_the_filter_rules_out_and_read_only_asked_columns() {
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    let store = open(dir.path(), FlushPolicy::MANUAL);
    for start in [0, 100, 200] {
        let ids: Vec<i64> = (start..start + 10).collect();
        store.append(&alice, vec![rows(&ids)]).await.unwrap();
        store.flush().await.unwrap();
    }
    store.append(&alice, vec![rows(&[300])]).await.unwrap();
    let request = |columns: Option<Vec<usize>>, schema: SchemaRef| {
        let predicate = BinaryExpr::new(col("id", &schema).unwrap(), Operator::GtEq, lit(205i64));
        ReadRequest {
            columns,
            schema,
            predicate: Some(Arc::new(predicate)),
        }
    };
    let got = store.scan(&alice, &request(None, schema())).await.unwrap();
    // Only the last segment (200..210) is read, and of it only the rows
    // the filter's plain comparison accepts are kept; the rows in memory
    // are left to the scan's own filter.
    assert_eq!(ids(&got), [205, 206, 207, 208, 209, 300]);
    assert_eq!(store.stats().row_groups_skipped, 2);
    assert_eq!(store.stats().row_groups_read, 1);

    let only_id = Arc::new(schema().project(&[0]).unwrap());
    let got = store
        .scan(&alice, &request(Some(vec![0]), Arc::clone(&only_id)))
        .await
        .unwrap();
    assert!(
        got.iter().all(|b| b.schema() == only_id),
        "{:?}",
        got[0].schema()
    );
    assert_eq!(ids(&got).len(), 6);
    // A filter that could fail on some row (a division here) leaves rows
    // to the scan: it is not evaluated on rows the query may never meet.
    let divided = BinaryExpr::new(
        Arc::new(BinaryExpr::new(
            lit(1000i64),
            Operator::Divide,
            col("id", &schema()).unwrap(),
        )),
        Operator::Lt,
        lit(5i64),
    );
    let request_divided = ReadRequest {
        columns: None,
        schema: schema(),
        predicate: Some(Arc::new(divided)),
    };
    let got = store.scan(&alice, &request_divided).await.unwrap();
    assert_eq!(ids(&got).len(), 31, "id 0 would divide by zero");
    // Without a predicate every segment is read, oldest first.
    let all = store.read(&alice).await.unwrap();
    assert_eq!(ids(&all).len(), 31);
    assert_eq!(ids(&all)[..3], [0, 1, 2]);
    // An UPDATE or DELETE looks for its rows only in the row groups whose
    // statistics can hold them: one segment each here.
    let read = |store: &DurablePartitionStore| {
        let stats = store.stats();
        (stats.row_groups_read, stats.row_groups_skipped)
    };
    let (before, skipped) = read(&store);
    assert_eq!(
        store.replace(&alice, rows(&[206]), None).await.unwrap(),
        [0]
    );
    assert_eq!(read(&store), (before + 1, skipped + 2));
    assert_eq!(store.replace(&alice, rows(&[3]), None).await.unwrap(), [0]);
    // (Found in the first segment: the others are not even looked at.)
    assert_eq!(read(&store), (before + 2, skipped + 2));
    // Rows taken out of segments (not yet rewritten) still leave the
    // other segments' row groups to pruning, and stay hidden.
    let skipped = store.stats().row_groups_skipped;
    let got = store.scan(&alice, &request(None, schema())).await.unwrap();
    assert_eq!(ids(&got), [205, 207, 208, 209, 300]);
    assert_eq!(store.stats().row_groups_skipped, skipped + 2);
}

#[tokio::test]
async fn decoded_row_groups_are_kept_and_give_the_rows_a_fresh_decode_gives() {
    // Two stores of the same rows, one keeping no decoded row groups: the
    // same changes and scans give the same rows.
    let (kept_dir, plain_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = user("alice");
    let kept = open(kept_dir.path(), FlushPolicy::MANUAL);
    let plain = open(plain_dir.path(), FlushPolicy::MANUAL);
    plain.inner.files.row_groups().set_budget(0);
    for store in [&kept, &plain] {
        for start in [0, 100] {
            let ids: Vec<i64> = (start..start + 10).collect();
            store.append(&alice, vec![rows(&ids)]).await.unwrap();
            store.flush().await.unwrap();
        }
    }
    let sorted = |batches: Vec<RecordBatch>| {
        let mut ids = ids(&batches);
        ids.sort_unstable();
        ids
    };
    let only_id = Arc::new(schema().project(&[0]).unwrap());
    let request = |columns: Option<Vec<usize>>, schema: SchemaRef| ReadRequest {
        predicate: Some(Arc::new(BinaryExpr::new(
            col("id", &schema).unwrap(),
            Operator::GtEq,
            lit(5i64),
        ))),
        columns,
        schema,
    };
    for (old, new) in [(3, Some(30)), (105, None), (7, Some(70)), (30, Some(31))] {
        let mut answers = Vec::new();
        for store in [&kept, &plain] {
            let new = new.map(|id| rows(&[id]));
            let found = store.replace(&alice, rows(&[old]), new).await.unwrap();
            let all = sorted(store.read(&alice).await.unwrap());
            let some = store
                .scan(&alice, &request(Some(vec![0]), Arc::clone(&only_id)))
                .await
                .unwrap();
            assert!(some.iter().all(|b| b.schema() == only_id));
            answers.push((found, all, sorted(some)));
        }
        assert_eq!(answers[0], answers[1], "after replacing {old}");
    }
    assert!(kept.inner.files.row_groups().bytes() > 0);
    assert_eq!(plain.inner.files.row_groups().bytes(), 0);
    // A flush rewrites the segments rows were taken out of and deletes
    // them: their row groups are forgotten with them.
    kept.flush().await.unwrap();
    assert_eq!(kept.inner.files.row_groups().bytes(), 0);
    assert_eq!(
        sorted(kept.read(&alice).await.unwrap()),
        sorted(plain.read(&alice).await.unwrap())
    );
}

#[tokio::test]
async fn two_users_segments_of_one_name_keep_their_own_rows_and_places() {
    // Both partitions' first segment is seg-0.parquet: kept row groups and
    // places taken out must be told apart by partition, not file name.
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (user("alice"), user("bob"));
    let store = open(dir.path(), FlushPolicy::MANUAL);
    store.append(&alice, vec![rows(&[1, 2, 3])]).await.unwrap();
    store.append(&bob, vec![rows(&[10, 20, 30])]).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(segment_files(dir.path(), "u-alice"), ["seg-0.parquet"]);
    assert_eq!(segment_files(dir.path(), "u-bob"), ["seg-0.parquet"]);
    // Alice's segment read whole (and kept) first, then bob's.
    assert_eq!(store.replace(&alice, rows(&[2]), None).await.unwrap(), [0]);
    assert_eq!(ids(&store.read(&bob).await.unwrap()), [10, 20, 30]);
    assert_eq!(ids(&store.read(&alice).await.unwrap()), [1, 3]);
    // Bob's row at alice's taken-out place (index 1) is still his.
    assert!(
        store
            .replace(&bob, rows(&[2]), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.replace(&bob, rows(&[30]), None).await.unwrap(), [0]);
    assert_eq!(ids(&store.read(&bob).await.unwrap()), [10, 20]);
    assert_eq!(ids(&store.read(&alice).await.unwrap()), [1, 3]);
    store.flush().await.unwrap();
    drop(store);
    let store = open(dir.path(), FlushPolicy::MANUAL);
    assert_eq!(ids(&store.read(&alice).await.unwrap()), [1, 3]);
    assert_eq!(ids(&store.read(&bob).await.unwrap()), [10, 20]);
}

#[tokio::test]
async fn equal_rows_taken_out_by_place_and_by_value_leave_the_right_count() {
    // Three equal rows flushed. A live DELETE takes one out by its place;
    // after a reopen that one is known by value only (its log record), and
    // the next live DELETE must take out another copy, by place, while the
    // by-value one is still being met.
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    let count = |batches: Vec<RecordBatch>| ids(&batches).len();
    {
        let store = open(dir.path(), FlushPolicy::MANUAL);
        store
            .append(&alice, vec![rows(&[1, 1, 1, 2])])
            .await
            .unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.replace(&alice, rows(&[1]), None).await.unwrap(), [0]);
        assert_eq!(count(store.read(&alice).await.unwrap()), 3);
    }
    let store = open(dir.path(), FlushPolicy::MANUAL);
    assert_eq!(count(store.read(&alice).await.unwrap()), 3);
    assert_eq!(store.replace(&alice, rows(&[1]), None).await.unwrap(), [0]);
    assert_eq!(ids(&store.read(&alice).await.unwrap()), [1, 2]);
    // Two wanted where one is left: one is found.
    assert_eq!(
        store
            .replace(&alice, rows(&[1, 1]), Some(rows(&[5, 6])))
            .await
            .unwrap(),
        [0]
    );
    let mut left = ids(&store.read(&alice).await.unwrap());
    left.sort_unstable();
    assert_eq!(left, [2, 5]);
    // A projected scan leaves the same rows out.
    let only_id = Arc::new(schema().project(&[0]).unwrap());
    let request = ReadRequest {
        columns: Some(vec![0]),
        schema: Arc::clone(&only_id),
        predicate: None,
    };
    let mut projected = ids(&store.scan(&alice, &request).await.unwrap());
    projected.sort_unstable();
    assert_eq!(projected, [2, 5]);
    store.flush().await.unwrap();
    drop(store);
    let store = open(dir.path(), FlushPolicy::MANUAL);
    let mut reopened = ids(&store.read(&alice).await.unwrap());
    reopened.sort_unstable();
    assert_eq!(reopened, [2, 5]);
}

#[tokio::test]
async fn a_failed_log_write_stores_nothing_and_reports_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    let store = open(dir.path(), FlushPolicy::MANUAL);
    store.append(&alice, vec![rows(&[1])]).await.unwrap();
    store.inner.load().await.unwrap().wal.fail_next_write();
    let err = store.append(&alice, vec![rows(&[2])]).await.unwrap_err();
    assert!(err.to_string().contains("STORAGE_ERROR"), "{err}");
    assert_eq!(ids(&store.read(&alice).await.unwrap()), [1]);
    drop(store);
    let store = open(dir.path(), FlushPolicy::MANUAL);
    assert_eq!(ids(&store.read(&alice).await.unwrap()), [1]);
}

#[tokio::test]
async fn a_record_that_does_not_decode_names_the_log_and_record_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path().join("wal"), options(), |_, _| Ok(())).unwrap();
        wal.append(vec![APPEND, 9]).await.unwrap();
    }
    let store = open(dir.path(), FlushPolicy::MANUAL);
    for _ in 0..2 {
        let err = TenantError::from(store.read(&user("alice")).await.unwrap_err());
        assert_eq!(err.code(), "DATA_CORRUPTED");
        let message = err.to_string();
        assert!(
            message.contains(&dir.path().join("wal").display().to_string()),
            "{message}"
        );
        assert!(message.contains("record 1"), "{message}");
    }
}

#[tokio::test]
async fn a_damaged_manifest_or_segment_fails_only_its_partition_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    {
        let store = open(dir.path(), FlushPolicy::MANUAL);
        for key in [&alice, &bob, &carol] {
            store.append(key, vec![rows(&[1, 2, 3])]).await.unwrap();
        }
        store.flush().await.unwrap();
    }
    let manifest = dir.path().join("data/u-alice/manifest");
    let mut bytes = std::fs::read(&manifest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&manifest, bytes).unwrap();
    let segment = dir.path().join("data/u-bob/seg-0.parquet");
    let bytes = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(dir.path().join("data/u-carol/seg-0.parquet")).unwrap();

    let store = open(dir.path(), FlushPolicy::MANUAL);
    let failure = |key: PartitionKey| {
        let store = &store;
        async move { TenantError::from(store.read(&key).await.unwrap_err()) }
    };
    let err = failure(alice.clone()).await;
    assert_eq!(err.code(), "DATA_CORRUPTED");
    assert!(
        err.to_string().contains(&manifest.display().to_string()),
        "{err}"
    );
    let err = failure(bob.clone()).await;
    assert_eq!(err.code(), "DATA_CORRUPTED");
    assert!(
        err.to_string().contains(&segment.display().to_string()),
        "{err}"
    );
    let err = failure(carol.clone()).await;
    assert_eq!(err.code(), "DATA_CORRUPTED");
    assert!(err.to_string().contains("missing"), "{err}");
    // Other partitions are untouched.
    store.append(&user("dave"), vec![rows(&[4])]).await.unwrap();
    assert_eq!(ids(&store.read(&user("dave")).await.unwrap()), [4]);
}

#[tokio::test]
async fn the_policy_flushes_full_and_old_partitions_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (user("alice"), user("bob"));
    let policy: FlushPolicy = "rows:5,interval:1".parse().unwrap();
    let store = open(dir.path(), policy);
    store
        .append(&alice, vec![rows(&[1, 2, 3, 4, 5])])
        .await
        .unwrap();
    store.append(&bob, vec![rows(&[10])]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Alice at once (row threshold), Bob after a second (interval).
    while segment_files(dir.path(), "u-alice").is_empty()
        || segment_files(dir.path(), "u-bob").is_empty()
    {
        assert!(Instant::now() < deadline, "no flush: {:?}", store.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ids(&store.read(&alice).await.unwrap()), [1, 2, 3, 4, 5]);
    assert_eq!(ids(&store.read(&bob).await.unwrap()), [10]);
    assert_eq!(store.stats().background_flush_failures, 0);
}
