//! What keeps one tenant from starving the others: a memory cap per
//! statement inside the engine's pool, a cap on each user's concurrent
//! statements, a time limit per statement, and cancellation.
//!
//! The model. Every statement draws on what the whole process has: memory
//! (DataFusion's pool of the engine's `RuntimeEnv`, [`EngineConfig::memory_limit`]),
//! the cores, and time. [`StatementLimits`] bounds one statement's share:
//! - **memory**: each statement reserves through its own
//!   [`StatementMemoryPool`], which forwards to the engine's pool and refuses
//!   past its own cap. Operators that can spill (sorts, grouped
//!   aggregates) spill when refused; the others fail the statement with
//!   `RESOURCES_EXHAUSTED`, and only that statement.
//! - **concurrency**: a user may have so many statements running at once
//!   (planning to the last row); one more is refused at once with
//!   `RESOURCES_EXHAUSTED` rather than queued behind the user's own work.
//! - **time**: a query that runs past its time limit ends with `TIMEOUT`;
//!   [`Query::cancel_handle`](crate::Query::cancel_handle) ends it at once
//!   with `CANCELLED`; dropping its stream stops the work too. Ending a
//!   query drops its plan's streams, which stops their tasks and frees
//!   their memory.
//!
//! Writes (INSERT, UPDATE, DELETE) are the exception to the last point:
//! once a write's stream is made, the write runs to its end whatever
//! happens to its caller (on the caller's task; a stream dropped half way
//! hands the rest to a task of its own), because a write cut between the
//! log and the table would leave rows durable that the running engine
//! never shows. Their time and cancellation limits apply until they start.
//!
//! [`EngineConfig::memory_limit`]: crate::EngineConfig::memory_limit

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;
use futures::task::AtomicWaker;
use parking_lot::Mutex;
use tenantfusion_core::{Clock, Result, TenantError, UserId};
use tokio::time::Sleep;

/// Bounds on one statement (see the [module docs](self)). `Default` sets
/// none; a server facing tenants it does not trust sets all three.
///
/// ```
/// use std::time::Duration;
/// use tenantfusion::{EngineConfig, StatementLimits};
/// let config = EngineConfig::default()
///     .with_memory_limit(1 << 30)
///     .with_statement_limits(StatementLimits {
///         memory: Some(64 << 20),
///         per_user: Some(8),
///         timeout: Some(Duration::from_secs(30)),
///     });
/// assert_eq!(config.statement_limits.per_user, Some(8));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatementLimits {
    /// Bytes one statement may reserve (sorts, joins, aggregations), within
    /// the engine's [`memory_limit`](crate::EngineConfig::memory_limit).
    pub memory: Option<usize>,
    /// Statements one user may have running at once.
    pub per_user: Option<usize>,
    /// How long a statement may run, from when it is handed in.
    pub timeout: Option<Duration>,
}

/// A statement's share of the engine's memory pool: reservations go to the
/// engine's pool, and stop at `limit` however much the engine has left.
#[derive(Debug)]
pub(crate) struct StatementMemoryPool {
    engine: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl StatementMemoryPool {
    pub(crate) fn new(engine: Arc<dyn MemoryPool>, limit: usize) -> Self {
        Self {
            engine,
            limit,
            used: AtomicUsize::new(0),
        }
    }
}

impl fmt::Display for StatementMemoryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "statement pool ({} of {} bytes) in {}",
            self.used.load(Ordering::Relaxed),
            self.limit,
            self.engine
        )
    }
}

impl MemoryPool for StatementMemoryPool {
    fn name(&self) -> &str {
        "statement"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.engine.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.engine.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.engine.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        self.engine.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DFResult<()> {
        let limit = self.limit;
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(additional).filter(|total| *total <= limit)
            })
            .map_err(|used| {
                DataFusionError::ResourcesExhausted(format!(
                    "{} asked for {additional} more bytes with {used} of the statement's \
                     {limit} in use (StatementLimits::memory)",
                    reservation.consumer().name()
                ))
            })?;
        if let Err(err) = self.engine.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(err);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        match self.engine.memory_limit() {
            MemoryLimit::Finite(engine) => MemoryLimit::Finite(engine.min(self.limit)),
            _ => MemoryLimit::Finite(self.limit),
        }
    }
}

/// Statements running per user, against [`StatementLimits::per_user`].
#[derive(Debug, Default)]
pub(crate) struct Admission {
    max: Option<usize>,
    running: Mutex<HashMap<UserId, usize>>,
}

impl Admission {
    pub(crate) fn new(max: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            max,
            running: Mutex::default(),
        })
    }

    /// Admits one more statement of `user`, until the returned guard drops;
    /// `RESOURCES_EXHAUSTED` when they have the most they may.
    pub(crate) fn admit(self: &Arc<Self>, user: &UserId) -> Result<Option<Running>> {
        let Some(max) = self.max else {
            return Ok(None);
        };
        let mut running = self.running.lock();
        let count = running.entry(user.clone()).or_default();
        if *count >= max {
            return Err(TenantError::ResourcesExhausted(format!(
                "user '{user}' has {max} statements running, the most one user may \
                 (StatementLimits::per_user); wait for one to end"
            )));
        }
        *count += 1;
        Ok(Some(Running {
            admission: Arc::clone(self),
            user: user.clone(),
        }))
    }
}

/// One admitted statement; its place is freed when this drops.
#[derive(Debug)]
pub(crate) struct Running {
    admission: Arc<Admission>,
    user: UserId,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self.admission.running.lock();
        if let Some(count) = running.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.user);
            }
        }
    }
}

/// Ends a running query with `CANCELLED`, from any task or thread.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use tenantfusion::{Engine, EngineConfig, Role, UserContext};
/// let engine = Engine::new(EngineConfig::default())?;
/// let session = engine.session(UserContext::new("alice", Role::User));
/// let query = session.sql("SELECT 1").await?;
/// query.cancel_handle().cancel();
/// assert_eq!(query.collect().await.unwrap_err().code(), "CANCELLED");
/// # Ok::<_, tenantfusion::TenantError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelHandle {
    state: Arc<CancelState>,
}

#[derive(Debug, Default)]
struct CancelState {
    cancelled: AtomicBool,
    waker: AtomicWaker,
}

impl CancelHandle {
    /// Cancels the query: its stream ends with `CANCELLED` and its work
    /// stops. A write that has started runs to its end (see the module docs).
    pub fn cancel(&self) {
        self.state.cancelled.store(true, Ordering::Release);
        self.state.waker.wake();
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.state.cancelled.load(Ordering::Acquire)
    }
}

/// What a statement runs under: its place among its user's statements,
/// its deadline and its cancel handle.
#[derive(Debug, Default)]
pub(crate) struct Governor {
    pub(crate) running: Option<Running>,
    pub(crate) deadline: Option<Deadline>,
    pub(crate) cancel: CancelHandle,
}

/// When a statement must end, on the engine's clock (injectable, so tests
/// move time instead of waiting for it).
#[derive(Debug)]
pub(crate) struct Deadline {
    clock: Arc<dyn Clock>,
    at_us: i64,
    limit: Duration,
}

impl Deadline {
    /// `limit` from now on `clock`.
    pub(crate) fn after(clock: Arc<dyn Clock>, limit: Duration) -> Self {
        let limit_us = i64::try_from(limit.as_micros()).unwrap_or(i64::MAX);
        let at_us = clock.now_us().saturating_add(limit_us);
        Self {
            clock,
            at_us,
            limit,
        }
    }

    fn passed(&self) -> bool {
        self.clock.now_us() >= self.at_us
    }

    /// How long until the deadline, as the clock sees it now.
    fn remaining(&self) -> Duration {
        Duration::from_micros(u64::try_from(self.at_us - self.clock.now_us()).unwrap_or(0))
    }
}

impl Governor {
    /// The error that ends the statement now, if any.
    pub(crate) fn stopped(&self) -> Option<TenantError> {
        if self.cancel.is_cancelled() {
            return Some(cancelled());
        }
        match &self.deadline {
            Some(deadline) if deadline.passed() => Some(timed_out(deadline.limit)),
            _ => None,
        }
    }

    /// `stream` ending early when the statement is cancelled or times out.
    pub(crate) fn govern(self, stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
        let sleep = self.deadline.map(|deadline| {
            let wake = Box::pin(tokio::time::sleep(deadline.remaining()));
            (deadline, wake)
        });
        Box::pin(Governed {
            schema: stream.schema(),
            inner: Some(stream),
            sleep,
            cancel: self.cancel,
            _running: self.running,
        })
    }
}

fn cancelled() -> TenantError {
    TenantError::Cancelled("the statement was cancelled".into())
}

fn timed_out(limit: Duration) -> TenantError {
    TenantError::Timeout(format!(
        "the statement ran longer than its limit of {limit:?} (StatementLimits::timeout)"
    ))
}

/// A statement's stream under its [`Governor`]: the inner stream (and the
/// work behind it) is dropped the moment the statement is cancelled or
/// times out.
struct Governed {
    schema: SchemaRef,
    inner: Option<SendableRecordBatchStream>,
    /// The deadline and a timer that wakes the stream at it.
    sleep: Option<(Deadline, Pin<Box<Sleep>>)>,
    cancel: CancelHandle,
    _running: Option<Running>,
}

impl Governed {
    fn end(&mut self, err: TenantError) -> Poll<Option<DFResult<RecordBatch>>> {
        self.inner = None;
        self.sleep = None;
        Poll::Ready(Some(Err(DataFusionError::External(Box::new(err)))))
    }
}

impl Stream for Governed {
    type Item = DFResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.inner.is_none() {
            return Poll::Ready(None);
        }
        self.cancel.state.waker.register(cx.waker());
        if self.cancel.is_cancelled() {
            return self.end(cancelled());
        }
        // The clock is read on every poll: a stream that is always ready
        // never lets the timer driver fire the sleep below.
        if let Some((deadline, _)) = &self.sleep
            && deadline.passed()
        {
            let limit = deadline.limit;
            return self.end(timed_out(limit));
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.as_mut().poll_next(cx) {
            Poll::Ready(None) => {
                self.inner = None;
                self.sleep = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Pending => {
                // Waiting on the work: be woken at the deadline too. The
                // clock decides; the timer only wakes.
                if let Some((deadline, wake)) = &mut self.sleep
                    && wake.as_mut().poll(cx).is_ready()
                    && deadline.passed()
                {
                    let limit = deadline.limit;
                    return self.end(timed_out(limit));
                }
                Poll::Pending
            }
        }
    }
}

impl RecordBatchStream for Governed {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}
