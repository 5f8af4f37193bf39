//! The write-ahead log: records appended with group commit, replayed on
//! open, and dropped once what they hold is stored elsewhere.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};
use tenantfusion_core::{Result, TenantError};
use tokio::sync::oneshot;

use crate::committers::{Committers, Ready};
use crate::figures;
use crate::record::{MAX_PAYLOAD, encode};
use crate::segment::{MAGIC, Segment, io_error, scan, sync_dir};

/// A record's number in the log: consecutive, starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the record's commit group is written and `fsync`ed: it
    /// survives a crash of the process and of the machine.
    #[default]
    Fsync,
    /// After it is written to the operating system: it survives a crash of
    /// the process (`kill -9`), not a power loss. For tests and caches.
    Buffered,
}

/// Settings of a [`Wal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// When appends are acknowledged.
    pub durability: Durability,
    /// A segment is closed and a new one started once it is this big.
    pub segment_bytes: u64,
    /// Appends waiting while a group is written join the next group, up to
    /// this many payload bytes.
    pub group_bytes: usize,
    /// Committer threads a [`StorageRoot`](crate::StorageRoot) shares
    /// among all its logs, however many tables it holds (a log opened
    /// with [`Wal::open`] has one of its own).
    pub committers: usize,
    /// The segment being written is extended with zeros this many bytes
    /// at a time, ahead of the records: an fdatasync of records written
    /// into space already there need not also make the file's new length
    /// durable (measured here: about a quarter of its cost). At most this
    /// much disk per log goes unused; 0 grows the file with each write.
    pub preallocate_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            segment_bytes: 64 << 20,
            group_bytes: 8 << 20,
            committers: Committers::DEFAULT_THREADS,
            preallocate_bytes: 256 << 10,
        }
    }
}

/// Counters of a [`Wal`] since it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalStats {
    /// Records appended.
    pub appends: u64,
    /// Commit groups written (each one write and, with
    /// [`Durability::Fsync`], one fsync).
    pub groups: u64,
    /// Bytes written, headers included.
    pub bytes: u64,
    /// Records read back when the log opened.
    pub replayed: u64,
    /// Bytes of an unacknowledged last write cut off when the log opened.
    pub torn_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    appends: AtomicU64,
    groups: AtomicU64,
    bytes: AtomicU64,
}

/// One open log: what its appenders, its committer and its owner share.
#[derive(Debug)]
struct Log {
    dir: PathBuf,
    options: WalOptions,
    /// Oldest first; the last one is being written.
    segments: Mutex<Vec<Segment>>,
    /// Set by the first failed write or fsync: what the disk holds after it
    /// is unknown, so nothing more is acknowledged until the log reopens.
    failure: Mutex<Option<TenantError>>,
    counters: Counters,
    /// Makes the next write fail, as a full disk would.
    fail_next_write: AtomicBool,
    waiting: Mutex<Waiting>,
    /// Signalled when the log leaves the committers' queue with nothing
    /// waiting.
    idle: Condvar,
    /// Held by the one committer writing the log's group.
    writer: Mutex<Writer>,
}

/// Appends not yet taken into a commit group.
#[derive(Debug, Default)]
struct Waiting {
    requests: VecDeque<Request>,
    /// In the committers' queue, or being written by one of them.
    queued: bool,
}

#[derive(Debug)]
struct Request {
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<Lsn>>,
}

/// The segment being written, and where.
#[derive(Debug)]
struct Writer {
    file: File,
    /// Where the next record goes.
    len: u64,
    /// The file's length: zeros from `len` on.
    allocated: u64,
    next_lsn: u64,
    buf: Vec<u8>,
}

/// A write-ahead log in a directory of segment files.
///
/// [`append`](Self::append) resolves once the record is durable (see
/// [`Durability`]); appends that arrive while a group is being written and
/// synced are written and synced together as the next group, so one fsync
/// serves many writers. Records are numbered by [`Lsn`]. The writing is
/// done by [`Committers`], which many logs can share.
///
/// ```
/// use tenantfusion_store::{Lsn, Wal, WalOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tenantfusion_core::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let wal = Wal::open(dir.path(), WalOptions::default(), |_, _| Ok(()))?;
/// assert_eq!(wal.append(b"first".to_vec()).await?, Lsn(1));
/// drop(wal);
///
/// let mut seen = Vec::new();
/// let wal = Wal::open(dir.path(), WalOptions::default(), |lsn, payload| {
///     seen.push((lsn, payload.to_vec()));
///     Ok(())
/// })?;
/// assert_eq!(seen, [(Lsn(1), b"first".to_vec())]);
/// assert_eq!(wal.append(b"second".to_vec()).await?, Lsn(2));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Wal {
    log: Arc<Log>,
    committers: Committers,
    replayed: u64,
    torn_bytes: u64,
    opened_at: u64,
}

impl Wal {
    /// Opens the log in `dir` (created if missing), handing every record in
    /// it to `replay` in order first, with a committer thread of its own.
    /// An unacknowledged write cut short at the end is dropped; damage
    /// elsewhere is `DATA_CORRUPTED`, naming the file.
    pub fn open(
        dir: impl AsRef<Path>,
        options: WalOptions,
        replay: impl FnMut(Lsn, &[u8]) -> Result<()>,
    ) -> Result<Self> {
        Self::open_with(dir, options, &Committers::new(1)?, replay)
    }

    /// [`Wal::open`], written by `committers` (shared with other logs).
    pub fn open_with(
        dir: impl AsRef<Path>,
        options: WalOptions,
        committers: &Committers,
        mut replay: impl FnMut(Lsn, &[u8]) -> Result<()>,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, "cannot create", e))?;
        let mut replayed = 0;
        let found = scan(&dir, |lsn, payload| {
            replayed += 1;
            replay(Lsn(lsn), payload)
        })?;
        let mut segments = found.segments;
        let (file, len, allocated) = match segments.last() {
            Some(newest) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&newest.path)
                    .map_err(|e| io_error(&newest.path, "cannot open", e))?;
                let mut len = found.valid_len;
                if len < MAGIC.len() as u64 {
                    len = write_header(&file, &newest.path)?;
                } else if found.torn_bytes > 0 {
                    file.set_len(len)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| io_error(&newest.path, "cannot cut the torn end of", e))?;
                }
                let allocated = file
                    .metadata()
                    .map_err(|e| io_error(&newest.path, "cannot read the length of", e))?
                    .len()
                    .max(len);
                (file, len, allocated)
            }
            None => {
                let segment = Segment::new(&dir, found.next_lsn);
                let (file, len) = create_segment(&dir, &segment)?;
                segments.push(segment);
                (file, len, len)
            }
        };
        let log = Arc::new(Log {
            dir,
            options,
            segments: Mutex::new(segments),
            failure: Mutex::new(None),
            counters: Counters::default(),
            fail_next_write: AtomicBool::new(false),
            waiting: Mutex::new(Waiting::default()),
            idle: Condvar::new(),
            writer: Mutex::new(Writer {
                file,
                len,
                allocated,
                next_lsn: found.next_lsn,
                buf: Vec::new(),
            }),
        });
        Ok(Self {
            log,
            committers: committers.clone(),
            replayed,
            torn_bytes: found.torn_bytes,
            opened_at: found.next_lsn,
        })
    }

    /// The LSN the log went on at when it opened: one past its last
    /// record (the newest segment is never removed, so this holds even for
    /// a log cut down to nothing). Whatever anything durable says was
    /// logged before must be below it.
    pub fn opened_at(&self) -> Lsn {
        Lsn(self.opened_at)
    }

    /// Appends one record; resolves with its LSN once it is durable.
    /// `STORAGE_ERROR` when it could not be written (then nothing more is
    /// written until the log is reopened), `INVALID_ARGUMENT` when it is
    /// bigger than [`MAX_PAYLOAD`].
    pub async fn append(&self, payload: Vec<u8>) -> Result<Lsn> {
        if payload.len() > MAX_PAYLOAD {
            return Err(TenantError::InvalidArgument(format!(
                "a write of {} bytes is more than the log takes at once ({MAX_PAYLOAD})",
                payload.len()
            )));
        }
        let (reply, done) = oneshot::channel();
        let first_waiting = {
            let mut waiting = self.log.waiting.lock();
            waiting.requests.push_back(Request { payload, reply });
            !std::mem::replace(&mut waiting.queued, true)
        };
        if first_waiting {
            self.committers
                .schedule(Arc::clone(&self.log) as Arc<dyn Ready>);
        }
        done.await
            .map_err(|_| TenantError::Storage("the write-ahead log is closed".into()))?
    }

    /// Removes the segments holding only records up to `lsn` (their
    /// contents are stored elsewhere now); the segment being written stays.
    /// Returns how many were removed.
    pub fn truncate_through(&self, lsn: Lsn) -> Result<usize> {
        let mut segments = self.log.segments.lock();
        let mut removable = 0;
        while removable + 1 < segments.len() && segments[removable + 1].first_lsn <= lsn.0 + 1 {
            removable += 1;
        }
        for segment in segments.drain(..removable) {
            std::fs::remove_file(&segment.path)
                .map_err(|e| io_error(&segment.path, "cannot remove", e))?;
        }
        if removable > 0 {
            sync_dir(&self.log.dir)?;
        }
        Ok(removable)
    }

    /// Segment files in the log now.
    pub fn segment_count(&self) -> usize {
        self.log.segments.lock().len()
    }

    /// Makes the next commit group fail half-written, as a full disk would:
    /// for tests of what a failed write leaves behind (one relaxed atomic
    /// swap per commit group otherwise).
    #[doc(hidden)]
    pub fn fail_next_write(&self) {
        self.log.fail_next_write.store(true, Ordering::Relaxed);
    }

    /// Counters since the log opened.
    pub fn stats(&self) -> WalStats {
        let c = &self.log.counters;
        WalStats {
            appends: c.appends.load(Ordering::Relaxed),
            groups: c.groups.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            replayed: self.replayed,
            torn_bytes: self.torn_bytes,
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // What was sent is written before the log closes.
        let mut waiting = self.log.waiting.lock();
        while waiting.queued {
            self.log.idle.wait(&mut waiting);
        }
        drop(waiting);
        if self.log.options.durability == Durability::Buffered {
            let _ = self.log.writer.lock().file.sync_data();
        }
    }
}

fn write_header(mut file: &File, path: &Path) -> Result<u64> {
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(MAGIC))
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, "cannot write the header of", e))?;
    Ok(MAGIC.len() as u64)
}

fn create_segment(dir: &Path, segment: &Segment) -> Result<(File, u64)> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&segment.path)
        .map_err(|e| io_error(&segment.path, "cannot create", e))?;
    let len = write_header(&file, &segment.path)?;
    sync_dir(dir)?;
    Ok((file, len))
}

impl Ready for Log {
    /// Writes (and syncs) the appends waiting as one commit group, and
    /// answers them: called by one committer at a time. Whether more
    /// arrived meanwhile (then the log stays queued).
    fn commit_waiting(&self) -> bool {
        let group: Vec<Request> = {
            let mut waiting = self.waiting.lock();
            // The first, then as many as fit in `group_bytes`.
            let mut bytes = 0;
            let take = waiting
                .requests
                .iter()
                .enumerate()
                .take_while(|(i, request)| {
                    bytes += request.payload.len();
                    *i == 0 || bytes <= self.options.group_bytes
                })
                .count();
            waiting.requests.drain(..take).collect()
        };
        if !group.is_empty() {
            let failed = self.failure.lock().clone();
            let outcome = match failed {
                Some(failure) => Err(failure),
                None => self.commit(&group),
            };
            for (i, request) in group.into_iter().enumerate() {
                let _ = request
                    .reply
                    .send(outcome.clone().map(|first| Lsn(first + i as u64)));
            }
        }
        let mut waiting = self.waiting.lock();
        if waiting.requests.is_empty() {
            waiting.queued = false;
            self.idle.notify_all();
            false
        } else {
            true
        }
    }
}

impl Log {
    /// Writes and syncs `group`; the LSN of its first record.
    fn commit(&self, group: &[Request]) -> Result<u64> {
        let mut writer = self.writer.lock();
        let writer = &mut *writer;
        let first = writer.next_lsn;
        writer.buf.clear();
        for (i, request) in group.iter().enumerate() {
            encode(first + i as u64, &request.payload, &mut writer.buf);
        }
        if self.fail_next_write.swap(false, Ordering::Relaxed) {
            // Half the group reaches the file, then the disk is full.
            let half = &writer.buf[..writer.buf.len() / 2];
            let _ = writer.file.write_all_at(half, writer.len);
            let err = std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left");
            return Err(self.fail(io_error(&self.active_path(), "cannot write to", err)));
        }
        let end = writer.len + writer.buf.len() as u64;
        let started = std::time::Instant::now();
        let written = self
            .preallocate(writer, end)
            .and_then(|()| writer.file.write_all_at(&writer.buf, writer.len))
            .and_then(|()| {
                if self.options.durability == Durability::Fsync {
                    writer.file.sync_data()
                } else {
                    Ok(())
                }
            });
        if let Err(err) = written {
            let path = self.active_path();
            // Best effort: the partial group is cut off now, and would be
            // cut off as torn on the next open anyway.
            let _ = writer.file.set_len(writer.len);
            writer.allocated = writer.len;
            return Err(self.fail(io_error(&path, "cannot write to", err)));
        }
        figures::wal_committed(group.len(), writer.buf.len(), started.elapsed());
        let counters = &self.counters;
        counters
            .appends
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        counters.groups.fetch_add(1, Ordering::Relaxed);
        counters
            .bytes
            .fetch_add(writer.buf.len() as u64, Ordering::Relaxed);
        writer.len += writer.buf.len() as u64;
        writer.next_lsn += group.len() as u64;
        if writer.len >= self.options.segment_bytes {
            // The group is durable whatever happens here; a failure to
            // start the next segment only stops later appends.
            if let Err(err) = self.rotate(writer) {
                self.fail(err);
            }
        }
        Ok(first)
    }

    /// Makes the segment at least `end` bytes long, zeros past its records,
    /// in steps of [`WalOptions::preallocate_bytes`] (made durable by the
    /// group's sync).
    fn preallocate(&self, writer: &mut Writer, end: u64) -> std::io::Result<()> {
        let step = self.options.preallocate_bytes;
        if end <= writer.allocated || step == 0 {
            return Ok(());
        }
        // The group's own bytes fill up to `end`; zeros only after them,
        // from one fixed buffer (a step of any size allocates nothing).
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let target = (end / step + 1) * step;
        let mut at = end;
        while at < target {
            let chunk = (target - at).min(ZEROS.len() as u64);
            writer.file.write_all_at(&ZEROS[..chunk as usize], at)?;
            at += chunk;
        }
        writer.allocated = target;
        Ok(())
    }

    fn rotate(&self, writer: &mut Writer) -> Result<()> {
        let segment = Segment::new(&self.dir, writer.next_lsn);
        let (file, len) = create_segment(&self.dir, &segment)?;
        // The closed segment's unused zeros go (were this lost in a crash,
        // reading the segment stops at them just as well).
        let _ = writer.file.set_len(writer.len);
        writer.file = file;
        writer.len = len;
        writer.allocated = len;
        self.segments.lock().push(segment);
        Ok(())
    }

    fn active_path(&self) -> PathBuf {
        self.segments
            .lock()
            .last()
            .map_or_else(|| self.dir.clone(), |s| s.path.clone())
    }

    fn fail(&self, err: TenantError) -> TenantError {
        figures::wal_failed();
        tracing::error!(dir = %self.dir.display(), "write-ahead log failed, the table takes no more writes: {err}");
        *self.failure.lock() = Some(err.clone());
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, options: WalOptions) -> (Wal, Vec<(u64, Vec<u8>)>) {
        let mut seen = Vec::new();
        let wal = Wal::open(dir, options, |lsn, payload| {
            seen.push((lsn.0, payload.to_vec()));
            Ok(())
        })
        .unwrap();
        (wal, seen)
    }

    /// Segments of about 200 bytes, made 64 bytes at a time ahead of the
    /// records (so damage lands on records and zeros alike).
    fn small_segments() -> WalOptions {
        WalOptions {
            segment_bytes: 200,
            preallocate_bytes: 64,
            ..WalOptions::default()
        }
    }

    fn payload(n: u64) -> Vec<u8> {
        format!("record {n:04} ").repeat(4).into_bytes()
    }

    /// A log of records `payload(1..=n)`, closed.
    async fn written(n: u64, options: WalOptions) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open(dir.path(), options);
        for n in 1..=n {
            wal.append(payload(n)).await.unwrap();
        }
        dir
    }

    #[tokio::test]
    async fn concurrent_appends_get_distinct_lsns_and_all_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, seen) = open(dir.path(), small_segments());
        assert!(seen.is_empty());
        let wal = Arc::new(wal);
        let tasks: Vec<_> = (0..100)
            .map(|n| {
                let wal = Arc::clone(&wal);
                tokio::spawn(async move { (wal.append(payload(n)).await.unwrap(), n) })
            })
            .collect();
        let mut acked = Vec::new();
        for task in tasks {
            acked.push(task.await.unwrap());
        }
        let stats = wal.stats();
        assert_eq!(stats.appends, 100);
        assert!(stats.groups >= 1 && stats.groups <= 100);
        assert!(wal.segment_count() > 1, "200-byte segments rotate");
        drop(wal);

        let (wal, seen) = open(dir.path(), small_segments());
        assert_eq!(seen.len(), 100);
        for (lsn, n) in acked {
            assert_eq!(seen[lsn.0 as usize - 1], (lsn.0, payload(n)));
        }
        assert_eq!(wal.append(b"next".to_vec()).await.unwrap(), Lsn(101));
        assert_eq!(wal.stats().replayed, 100);
        drop(wal);
        // Appends after a reopen go after what was there.
        let (_, seen) = open(dir.path(), small_segments());
        assert_eq!(seen.len(), 101);
        assert_eq!(seen[100], (101, b"next".to_vec()));
    }

    /// The newest segment file.
    fn newest(dir: &Path) -> PathBuf {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files.pop().unwrap()
    }

    #[tokio::test]
    async fn a_torn_last_write_is_cut_off_and_the_log_goes_on() {
        let dir = written(3, WalOptions::default()).await;
        let path = newest(dir.path());
        // Where the records end (zeros made ahead of them follow).
        let whole = (MAGIC.len() + 3 * (16 + payload(1).len())) as u64;
        // Every way the third record can be torn: cut short, or its last
        // bytes never written (zeros, as a crash can leave them).
        let third = whole - (16 + payload(3).len() as u64);
        for cut in [third + 1, third + 10, whole - 1] {
            let copy = tempfile::tempdir().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let target = copy.path().join(path.file_name().unwrap());
            std::fs::write(&target, &bytes[..cut as usize]).unwrap();
            let (wal, seen) = open(copy.path(), WalOptions::default());
            assert_eq!(seen.len(), 2, "cut at {cut}");
            assert_eq!(wal.stats().torn_bytes, cut - third);
            assert_eq!(wal.append(b"again".to_vec()).await.unwrap(), Lsn(3));
            drop(wal);
            let (_, seen) = open(copy.path(), WalOptions::default());
            assert_eq!(seen[2], (3, b"again".to_vec()));
        }
        let mut zeroed = std::fs::read(&path).unwrap();
        zeroed[whole as usize - 5..].fill(0);
        std::fs::write(&path, zeroed).unwrap();
        let (_, seen) = open(dir.path(), WalOptions::default());
        assert_eq!(seen.len(), 2);
    }

    /// Records go into zeros made ahead of them: the file is longer than
    /// its records, reading stops at the zeros without calling them torn,
    /// and nothing is cut; segments closed by rotation lose their zeros.
    #[tokio::test]
    async fn records_are_written_into_space_made_ahead_and_the_zeros_end_them() {
        let dir = written(3, WalOptions::default()).await;
        let path = newest(dir.path());
        let records = (MAGIC.len() + 3 * (16 + payload(1).len())) as u64;
        let step = WalOptions::default().preallocate_bytes;
        assert_eq!(std::fs::metadata(&path).unwrap().len(), step);
        let (wal, seen) = open(dir.path(), WalOptions::default());
        assert_eq!(seen.len(), 3);
        assert_eq!(wal.stats().torn_bytes, 0);
        assert_eq!(wal.append(payload(4)).await.unwrap(), Lsn(4));
        drop(wal);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), step, "not cut");
        let (_, seen) = open(dir.path(), WalOptions::default());
        assert_eq!(seen.len(), 4);
        assert!(
            std::fs::read(&path).unwrap()[records as usize..]
                .iter()
                .any(|&b| b != 0)
        );

        // A group bigger than a step: the file grows past it.
        let big = tempfile::tempdir().unwrap();
        let (wal, _) = open(big.path(), WalOptions::default());
        wal.append(vec![7; step as usize + 10]).await.unwrap();
        assert_eq!(wal.append(b"after".to_vec()).await.unwrap(), Lsn(2));
        drop(wal);
        assert_eq!(
            std::fs::metadata(newest(big.path())).unwrap().len(),
            2 * step
        );
        let (_, seen) = open(big.path(), WalOptions::default());
        assert_eq!(seen[1], (2, b"after".to_vec()));

        // Rotation: every closed segment ends with its last record.
        let small = written(20, small_segments()).await;
        let files = segments(small.path());
        assert!(files.len() > 2);
        for closed in &files[..files.len() - 1] {
            let bytes = std::fs::read(closed).unwrap();
            assert!((bytes.len() - MAGIC.len()).is_multiple_of(16 + payload(1).len()));
        }
        let (_, seen) = open(small.path(), small_segments());
        assert_eq!(seen.len(), 20);

        // Off: the file holds the records only.
        let exact = tempfile::tempdir().unwrap();
        let unallocated = WalOptions {
            preallocate_bytes: 0,
            ..WalOptions::default()
        };
        let (wal, _) = open(exact.path(), unallocated);
        wal.append(payload(1)).await.unwrap();
        drop(wal);
        let len = std::fs::metadata(newest(exact.path())).unwrap().len();
        assert_eq!(len, (MAGIC.len() + 16 + payload(1).len()) as u64);
    }

    /// Zeros are the end only when nothing but zeros follows: a good record
    /// after them means records were lost there, which is damage.
    #[tokio::test]
    async fn a_record_after_zeros_is_damage_not_the_end() {
        let dir = written(3, WalOptions::default()).await;
        let path = newest(dir.path());
        let good = std::fs::read(&path).unwrap();
        let record = 16 + payload(1).len();
        // Record 2 zeroed in place (3 follows), and record 5 written far
        // into the zeros (4 missing).
        let mut zeroed = good.clone();
        zeroed[MAGIC.len() + record..MAGIC.len() + 2 * record].fill(0);
        let mut stray = good.clone();
        let mut five = Vec::new();
        crate::record::encode(5, &payload(5), &mut five);
        stray[4096..4096 + five.len()].copy_from_slice(&five);
        for (what, bytes) in [("record 2 zeroed", zeroed), ("record 5 after zeros", stray)] {
            std::fs::write(&path, &bytes).unwrap();
            let err = Wal::open(dir.path(), WalOptions::default(), |_, _| Ok(())).unwrap_err();
            assert_eq!(err.code(), "DATA_CORRUPTED", "{what}: {err}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}: file changed");
        }
    }

    #[tokio::test]
    async fn damage_before_the_end_is_reported_with_the_file() {
        let dir = written(20, small_segments()).await;
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() > 2);

        // A flipped bit in an older segment.
        let mut bytes = std::fs::read(&files[0]).unwrap();
        bytes[MAGIC.len() + 20] ^= 1;
        std::fs::write(&files[0], &bytes).unwrap();
        let err = Wal::open(dir.path(), WalOptions::default(), |_, _| Ok(())).unwrap_err();
        assert_eq!(err.code(), "DATA_CORRUPTED");
        assert!(
            err.to_string().contains(&files[0].display().to_string()),
            "{err}"
        );
        bytes[MAGIC.len() + 20] ^= 1;
        std::fs::write(&files[0], &bytes).unwrap();

        // A bad record followed by good ones in the newest segment is
        // damage, not a torn write.
        let last = files.last().unwrap();
        let mut bytes = std::fs::read(last).unwrap();
        let good = bytes.clone();
        if bytes.len() > MAGIC.len() + 16 + payload(1).len() {
            bytes[MAGIC.len() + 20] ^= 1;
            std::fs::write(last, &bytes).unwrap();
            let err = Wal::open(dir.path(), WalOptions::default(), |_, _| Ok(())).unwrap_err();
            assert_eq!(err.code(), "DATA_CORRUPTED", "{err}");
            std::fs::write(last, &good).unwrap();
        }

        // A missing segment.
        std::fs::remove_file(&files[1]).unwrap();
        let err = Wal::open(dir.path(), WalOptions::default(), |_, _| Ok(())).unwrap_err();
        assert_eq!(err.code(), "DATA_CORRUPTED");
        assert!(err.to_string().contains("a segment is missing"), "{err}");
    }

    /// Every kind of damage to any record but the last of one segment:
    /// the log refuses to open, naming the file, and leaves it byte for
    /// byte as it was (it used to read a damaged length field as a torn
    /// end and cut the five intact records after it).
    #[tokio::test]
    async fn damage_inside_the_newest_segment_is_reported_and_nothing_is_cut() {
        let dir = written(6, WalOptions::default()).await;
        let path = newest(dir.path());
        let good = std::fs::read(&path).unwrap();
        let record = 16 + payload(1).len();
        let start = |i: usize| MAGIC.len() + i * record;
        let mut damaged = Vec::new();
        for i in 0..5 {
            let at = start(i);
            // Every bit of the length field, and a byte each of the
            // checksum, the LSN and the payload.
            for bit in 0..32 {
                let mut bytes = good.clone();
                bytes[at + bit / 8] ^= 1 << (bit % 8);
                damaged.push((format!("record {i}: length bit {bit}"), bytes));
            }
            for (what, offset) in [("checksum", 5), ("lsn", 9), ("payload", 20)] {
                let mut bytes = good.clone();
                bytes[at + offset] ^= 0x40;
                damaged.push((format!("record {i}: {what}"), bytes));
            }
            let mut missing = good.clone();
            missing.drain(at + 20..at + 25);
            damaged.push((format!("record {i}: five bytes missing"), missing));
            let mut doubled = good.clone();
            let copy = doubled[at + 20..at + 25].to_vec();
            doubled.splice(at + 20..at + 20, copy);
            damaged.push((format!("record {i}: five bytes doubled"), doubled));
        }
        for (what, bytes) in damaged {
            std::fs::write(&path, &bytes).unwrap();
            let mut replayed = 0;
            let err = Wal::open(dir.path(), WalOptions::default(), |_, _| {
                replayed += 1;
                Ok(())
            })
            .unwrap_err();
            assert_eq!(err.code(), "DATA_CORRUPTED", "{what}: {err}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
            assert!(replayed < 6, "{what}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}: file changed");
        }
        // Put back, everything is there.
        std::fs::write(&path, &good).unwrap();
        let (_, seen) = open(dir.path(), WalOptions::default());
        assert_eq!(seen.len(), 6);
    }

    /// One way a disk or a crash can damage a segment.
    #[derive(Debug, Clone)]
    enum Damage {
        Flip { at: usize, bit: u8 },
        Truncate { at: usize },
        Remove { at: usize, len: usize },
        Insert { at: usize, bytes: Vec<u8> },
    }

    impl Damage {
        fn apply(&self, bytes: &mut Vec<u8>) {
            let len = bytes.len().max(1);
            match self {
                Damage::Flip { at, bit } => {
                    if !bytes.is_empty() {
                        bytes[at % len] ^= 1 << bit;
                    }
                }
                Damage::Truncate { at } => bytes.truncate(at % len),
                Damage::Remove { at, len: n } => {
                    let start = at % len;
                    let end = (start + n).min(bytes.len());
                    bytes.drain(start.min(end)..end);
                }
                Damage::Insert { at, bytes: new } => {
                    let at = (at % len).min(bytes.len());
                    bytes.splice(at..at, new.iter().copied());
                }
            }
        }
    }

    fn damage() -> impl proptest::strategy::Strategy<Value = Damage> {
        use proptest::prelude::*;
        prop_oneof![
            (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
            any::<usize>().prop_map(|at| Damage::Truncate { at }),
            (any::<usize>(), 1usize..40).prop_map(|(at, len)| Damage::Remove { at, len }),
            (
                any::<usize>(),
                proptest::collection::vec(any::<u8>(), 1..40)
            )
                .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
        ]
    }

    fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut all: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        all.sort();
        all
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(tenantfusion_test_support::fuzz_cases(64)))]

        /// Any damage to any segment: the log opens with exactly a prefix
        /// of what was written (a torn tail of the newest segment cut), or
        /// fails with DATA_CORRUPTED naming the file and leaves every file
        /// as it was. Never a wrong record, never a panic.
        #[test]
        fn any_damage_is_a_clean_prefix_or_reported_untouched(
            payloads in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..120), 1..24),
            which in proptest::prelude::any::<usize>(),
            damage in damage(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let (wal, _) = open(dir.path(), small_segments());
                for payload in &payloads {
                    wal.append(payload.clone()).await.unwrap();
                }
            });
            let files = segments(dir.path());
            let target = &files[which % files.len()];
            let is_newest = Some(target) == files.last();
            let mut bytes = std::fs::read(target).unwrap();
            damage.apply(&mut bytes);
            std::fs::write(target, &bytes).unwrap();
            let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
            let mut seen = Vec::new();
            let opened = Wal::open(dir.path(), small_segments(), |lsn, payload| {
                seen.push((lsn.0, payload.to_vec()));
                Ok(())
            });
            match opened {
                Ok(_) => {
                    for (i, (lsn, payload)) in seen.iter().enumerate() {
                        proptest::prop_assert_eq!(*lsn, i as u64 + 1);
                        proptest::prop_assert_eq!(payload, &payloads[i], "a wrong record came back");
                    }
                    if seen.len() < payloads.len() {
                        proptest::prop_assert!(is_newest, "records lost from an older segment: {:?}", damage);
                    }
                }
                Err(err) => {
                    proptest::prop_assert_eq!(err.code(), "DATA_CORRUPTED", "{}", err);
                    let after: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
                    proptest::prop_assert!(before == after, "a damaged log was changed");
                    let named = files.iter().any(|f| err.to_string().contains(&f.display().to_string()))
                        || err.to_string().contains(&dir.path().display().to_string());
                    proptest::prop_assert!(named, "{}", err);
                }
            }
        }
    }

    #[tokio::test]
    async fn truncation_removes_only_segments_wholly_stored_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open(dir.path(), small_segments());
        let mut last = Lsn(0);
        for n in 1..=30 {
            last = wal.append(payload(n)).await.unwrap();
        }
        let before = wal.segment_count();
        assert_eq!(wal.truncate_through(Lsn(0)).unwrap(), 0);
        let removed = wal.truncate_through(Lsn(15)).unwrap();
        assert!(removed > 0 && removed < before);
        // Everything stored: all but the segment being written go.
        wal.truncate_through(last).unwrap();
        assert_eq!(wal.segment_count(), 1);
        drop(wal);
        let (wal, seen) = open(dir.path(), small_segments());
        assert!(seen.iter().all(|(lsn, _)| *lsn > 15));
        assert_eq!(wal.append(b"x".to_vec()).await.unwrap(), Lsn(31));
    }

    #[tokio::test]
    async fn a_failed_write_is_not_acknowledged_and_stops_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open(dir.path(), WalOptions::default());
        wal.append(b"kept".to_vec()).await.unwrap();
        wal.fail_next_write();
        let err = wal.append(b"lost".to_vec()).await.unwrap_err();
        assert_eq!(err.code(), "STORAGE_ERROR");
        assert!(err.to_string().contains("no space left"), "{err}");
        // What the disk holds is unknown now: nothing more is acknowledged.
        let again = wal.append(b"after".to_vec()).await.unwrap_err();
        assert_eq!(again, err);
        drop(wal);
        let (wal, seen) = open(dir.path(), WalOptions::default());
        assert_eq!(seen, [(1, b"kept".to_vec())]);
        assert_eq!(wal.append(b"next".to_vec()).await.unwrap(), Lsn(2));
    }

    #[tokio::test]
    async fn replay_errors_stop_the_open_and_big_writes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open(dir.path(), WalOptions::default());
        wal.append(b"a".to_vec()).await.unwrap();
        let err = wal.append(vec![0; MAX_PAYLOAD + 1]).await.unwrap_err();
        assert_eq!(err.code(), "INVALID_ARGUMENT");
        drop(wal);
        let err = Wal::open(dir.path(), WalOptions::default(), |_, _| {
            Err(TenantError::SchemaMismatch("no such table".into()))
        })
        .unwrap_err();
        assert_eq!(err.code(), "SCHEMA_MISMATCH");
    }
}
