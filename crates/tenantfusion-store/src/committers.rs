//! The threads that write and sync write-ahead logs, shared by every log
//! of a storage root.
//!
//! A log with appends waiting is *ready*: it is queued once, however many
//! appends wait in it, and the next free thread takes it, writes and syncs
//! everything waiting as one commit group, and if more arrived meanwhile
//! goes on with it, or queues it again behind other logs waiting. So:
//!
//! - one log's groups are written one at a time, in order (a log is never
//!   in the queue twice, nor held by two threads);
//! - appends that arrive while their log's group is being synced join the
//!   next group, so one fsync serves many writers of a table;
//! - different logs are written and synced by different threads at once,
//!   and the file system folds those fsyncs into shared journal commits;
//! - 10,000 durable tables need no more threads than one: a root has
//!   [`Committers::DEFAULT_THREADS`] unless configured otherwise.
//!
//! A log queued behind others waits at most for the groups ahead of it,
//! which are bounded in bytes ([`WalOptions::group_bytes`]), and the queue
//! is first in, first out, so no log starves.
//!
//! [`WalOptions::group_bytes`]: crate::WalOptions::group_bytes

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use tenantfusion_core::{Result, TenantError};

/// What committers run: a log with appends waiting.
pub(crate) trait Ready: Send + Sync + std::fmt::Debug {
    /// Writes (and syncs) what is waiting as one commit group; whether
    /// more arrived meanwhile (then it is queued again).
    fn commit_waiting(&self) -> bool;
}

/// A pool of log committer threads (cheap to clone: clones share it).
/// The threads stop once the pool and every log using it are dropped,
/// after writing what was sent to them.
///
/// ```
/// use tenantfusion_store::{Committers, Wal, WalOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tenantfusion_core::Result<()> {
/// let committers = Committers::new(2)?;
/// let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
/// // Two logs, two threads between them (and between a thousand logs).
/// let a = Wal::open_with(dirs[0].path(), WalOptions::default(), &committers, |_, _| Ok(()))?;
/// let b = Wal::open_with(dirs[1].path(), WalOptions::default(), &committers, |_, _| Ok(()))?;
/// let (x, y) = tokio::join!(a.append(b"x".to_vec()), b.append(b"y".to_vec()));
/// assert_eq!((x?.0, y?.0), (1, 1));
/// assert_eq!(committers.threads(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Committers {
    pool: Arc<Pool>,
}

#[derive(Debug)]
struct Pool {
    queue: Arc<Queue>,
    threads: Vec<JoinHandle<()>>,
}

/// The logs ready to be written, oldest first.
#[derive(Debug, Default)]
struct Queue {
    ready: Mutex<Waiting>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Waiting {
    logs: VecDeque<Arc<dyn Ready>>,
    stopping: bool,
}

impl Committers {
    /// Threads a storage root's logs share unless told otherwise. A commit
    /// is mostly a wait for the disk, so the threads are many more than the
    /// cores: measured here (2 cores, `many_durable_tables`), 16 writers
    /// over 10,000 tables got 1.7x the rows/s with 16 committers that they
    /// got with 4. An idle committer costs its stack's address space only.
    pub const DEFAULT_THREADS: usize = 16;

    /// A pool of `threads` committers (at least one). `STORAGE_ERROR` if a
    /// thread cannot be started.
    pub fn new(threads: usize) -> Result<Self> {
        let queue = Arc::new(Queue::default());
        let mut pool = Pool {
            queue: Arc::clone(&queue),
            threads: Vec::new(),
        };
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            let thread = std::thread::Builder::new()
                .name(format!("tf-wal-{i}"))
                .spawn(move || queue.work())
                .map_err(|e| TenantError::Storage(format!("cannot start a log writer: {e}")))?;
            // On an error above, dropping `pool` stops the threads started.
            pool.threads.push(thread);
        }
        Ok(Self {
            pool: Arc::new(pool),
        })
    }

    /// How many committer threads the pool has.
    pub fn threads(&self) -> usize {
        self.pool.threads.len()
    }

    /// Queues `log`, which has appends waiting and is not queued yet.
    pub(crate) fn schedule(&self, log: Arc<dyn Ready>) {
        self.pool.queue.push(log);
    }
}

impl Queue {
    fn push(&self, log: Arc<dyn Ready>) {
        self.ready.lock().logs.push_back(log);
        self.wake.notify_one();
    }

    /// The next ready log; `None` once the pool is stopping and nothing is
    /// left to write.
    fn next(&self) -> Option<Arc<dyn Ready>> {
        let mut ready = self.ready.lock();
        loop {
            if let Some(log) = ready.logs.pop_front() {
                return Some(log);
            }
            if ready.stopping {
                return None;
            }
            self.wake.wait(&mut ready);
        }
    }

    fn work(&self) {
        let mut next = self.next();
        while let Some(log) = next {
            next = match log.commit_waiting() {
                true => Some(self.then(log)),
                false => self.next(),
            };
        }
    }

    /// What to write after a group of `log`, which has more waiting: `log`
    /// again if no other log waits (handing it to another thread would
    /// cost the next group a thread's wake-up), else the oldest waiting,
    /// `log` going to the back behind the logs that waited meanwhile.
    fn then(&self, log: Arc<dyn Ready>) -> Arc<dyn Ready> {
        let mut ready = self.ready.lock();
        match ready.logs.pop_front() {
            None => log,
            Some(oldest) => {
                // One thread was woken for `oldest`; it finds `log` instead.
                ready.logs.push_back(log);
                oldest
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.queue.ready.lock().stopping = true;
        self.queue.wake.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{Lsn, Wal, WalOptions};

    fn open(dir: &Path, committers: &Committers) -> (Wal, Vec<Vec<u8>>) {
        let mut seen = Vec::new();
        let wal = Wal::open_with(dir, WalOptions::default(), committers, |_, payload| {
            seen.push(payload.to_vec());
            Ok(())
        })
        .unwrap();
        (wal, seen)
    }

    /// 200 logs on two threads, written at once by many tasks: every log's
    /// records are numbered 1.. in the order each log acknowledged them,
    /// and all of them come back when the logs are reopened.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_threads_serve_two_hundred_logs_written_at_once() {
        let root = tempfile::tempdir().unwrap();
        let committers = Committers::new(2).unwrap();
        let dirs: Vec<_> = (0..200).map(|i| root.path().join(i.to_string())).collect();
        let wals: Vec<_> = dirs
            .iter()
            .map(|dir| Arc::new(open(dir, &committers).0))
            .collect();
        let tasks: Vec<_> = (0..1000)
            .map(|n| {
                let wal = Arc::clone(&wals[n % wals.len()]);
                tokio::spawn(async move {
                    let payload = format!("{n}").into_bytes();
                    (n % 200, wal.append(payload.clone()).await.unwrap(), payload)
                })
            })
            .collect();
        let mut acked = vec![Vec::new(); 200];
        for task in tasks {
            let (log, lsn, payload) = task.await.unwrap();
            acked[log].push((lsn, payload));
        }
        for (wal, acked) in wals.iter().zip(&mut acked) {
            assert_eq!(wal.stats().appends, 5);
            acked.sort();
            let lsns: Vec<_> = acked.iter().map(|(lsn, _)| lsn.0).collect();
            assert_eq!(lsns, [1, 2, 3, 4, 5]);
        }
        drop(wals);
        assert_eq!(committers.threads(), 2);
        for (dir, acked) in dirs.iter().zip(acked) {
            let (wal, seen) = open(dir, &committers);
            let written: Vec<_> = acked.into_iter().map(|(_, payload)| payload).collect();
            assert_eq!(seen, written, "{}", dir.display());
            assert_eq!(wal.append(b"more".to_vec()).await.unwrap(), Lsn(6));
        }
    }

    /// A log whose disk fails stops; the other logs on the same threads
    /// go on being written.
    #[tokio::test]
    async fn a_failed_log_does_not_stop_the_others_on_its_threads() {
        let root = tempfile::tempdir().unwrap();
        let committers = Committers::new(1).unwrap();
        let (broken, _) = open(&root.path().join("broken"), &committers);
        let (fine, _) = open(&root.path().join("fine"), &committers);
        broken.fail_next_write();
        let (lost, kept) = tokio::join!(broken.append(b"a".to_vec()), fine.append(b"b".to_vec()));
        assert_eq!(lost.unwrap_err().code(), "STORAGE_ERROR");
        assert_eq!(kept.unwrap(), Lsn(1));
        assert_eq!(
            broken.append(b"c".to_vec()).await.unwrap_err().code(),
            "STORAGE_ERROR"
        );
        assert_eq!(fine.append(b"d".to_vec()).await.unwrap(), Lsn(2));
    }

    /// Appends sent before a log is dropped are written before the drop
    /// returns, though nobody waits for their answers.
    #[tokio::test]
    async fn dropping_a_log_writes_what_was_sent_first() {
        let dir = tempfile::tempdir().unwrap();
        let committers = Committers::new(1).unwrap();
        let (wal, _) = open(dir.path(), &committers);
        for n in 0..50u8 {
            // Polled once: the append is sent, its answer never awaited.
            let append = std::pin::pin!(wal.append(vec![n]));
            let _ = futures::poll!(append);
        }
        drop(wal);
        let (_, seen) = open(dir.path(), &committers);
        assert_eq!(seen, (0..50u8).map(|n| vec![n]).collect::<Vec<_>>());
    }
}
