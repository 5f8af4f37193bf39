//! Helpers shared by the pool tests.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::UInt64Type;
use tenantfusion_live::{LiveEvent, LivePool, Request, SourceKind, SubscribeOptions, Subscription};

/// Polls `condition` every 10 ms until it holds; panics after 20 s with
/// `what`. A bound against hanging, not a speed check.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that the last error of the source named `source` says `text`.
pub fn assert_last_error(pool: &LivePool, source: &str, text: &str) {
    let stats = pool.snapshot().source(source).cloned().unwrap();
    assert!(
        stats
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains(text)),
        "expected the last error of {source} to say '{text}': {stats:?}"
    );
}

/// Sequence numbers (column `seq_column`) received per topic, and lag events.
#[derive(Debug, Default)]
pub struct Received {
    pub seqs: BTreeMap<String, Vec<u64>>,
    pub lagged: u64,
}

impl Received {
    pub fn take(&mut self, event: LiveEvent, seq_column: usize) {
        match event {
            LiveEvent::Rows { topic, batch } => {
                let seqs = batch.column(seq_column).as_primitive::<UInt64Type>();
                self.seqs
                    .entry(topic.to_string())
                    .or_default()
                    .extend(seqs.values().iter());
            }
            LiveEvent::Lagged { missed } => self.lagged += missed,
        }
    }

    /// Takes what is queued, without waiting.
    pub fn drain(&mut self, sub: &mut Subscription, seq_column: usize) {
        while let Some(event) = sub.try_recv().unwrap() {
            self.take(event, seq_column);
        }
    }
}

/// Receives from `sub` until `done` holds (checked after every event and
/// every 50 ms); panics after 20 s.
pub async fn receive_until(
    sub: &mut Subscription,
    received: &mut Received,
    mut done: impl FnMut(&Received) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(received) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out receiving"
        );
        if let Ok(event) = tokio::time::timeout(Duration::from_millis(50), sub.recv()).await {
            match event.unwrap() {
                Some(event) => received.take(event, SEQ),
                None => panic!("the subscription ended"),
            }
        }
    }
}

/// Receives until every topic seen so far has a tick `margin` ticks newer
/// than the newest delivered so far (queued ones included): the flow is
/// back for all of them.
pub async fn flowing_again(sub: &mut Subscription, received: &mut Received, margin: u64) {
    received.drain(sub, SEQ);
    let high = received
        .seqs
        .values()
        .flat_map(|s| s.last())
        .max()
        .copied()
        .unwrap_or(0);
    receive_until(sub, received, |r| {
        r.seqs
            .values()
            .all(|s| s.last().is_some_and(|l| *l > high + margin))
    })
    .await;
}

/// The generator's sequence column.
pub const SEQ: usize = 1;

/// Subscribes to `names` (from a source of `kind`, if given) with a queue
/// that never fills in these tests.
pub fn subscribe_all(pool: &LivePool, kind: Option<SourceKind>, names: &[String]) -> Subscription {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let request = Request {
        kind,
        topics: &refs,
        ..Request::default()
    };
    let options = SubscribeOptions {
        queue_capacity: 1_000_000,
        ..Default::default()
    };
    pool.subscribe(&request, options).unwrap()
}

/// Every log line of this test process since [`logs`] was first called
/// (a global subscriber: the pool's tasks run on any worker thread).
/// Tests look for lines naming their own sources.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts capturing log lines (once per process); returns a reader of them.
pub fn logs() -> fn() -> String {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
    || String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}
