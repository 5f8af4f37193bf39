//! A panic while a statement is planned or run becomes that statement's
//! `INTERNAL` error, never the caller's.
//!
//! DataFusion panics on some inputs it should refuse (an index out of
//! bounds in its planner, found by the SQL fuzz test), and a host's own
//! function may panic. Either would unwind into the code that called the
//! engine: a host database's thread, a server connection's task. So the
//! engine's entry points run their planning under [`guard`] and hand out
//! streams wrapped in [`Guarded`]; the statement fails, the session and
//! every other statement go on.
//!
//! What a panic leaves behind: the session's locks do not poison
//! (`parking_lot`) and the statement's slot is released as its guard
//! unwinds. What the statement had done before it panicked stays done: a
//! write's rows reach the table's log whole or not at all (a record is one
//! statement), but a panic between logging a write and applying it would
//! leave rows that show only once the table is reopened. Catching does not
//! make that worse than unwinding into the caller would.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::{FutureExt, Stream};
use tenantfusion_core::{Result, TenantError};

/// The error of a statement that panicked while `doing` (planning it,
/// running it).
fn panicked(doing: &str, panic: &(dyn Any + Send)) -> TenantError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string());
    TenantError::Internal(format!("the statement panicked while {doing}: {message}"))
}

/// `work` (a statement planned, or run at once as DDL is), its panic made
/// an `INTERNAL` error.
pub(crate) async fn guard<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(panicked("being planned", panic.as_ref())))
}

/// A statement's stream of batches whose panic ends it with an `INTERNAL`
/// error.
pub(crate) struct Guarded {
    inner: SendableRecordBatchStream,
    /// A panic ended the stream: nothing is polled after it.
    ended: bool,
}

impl Guarded {
    /// `inner`, guarded.
    pub(crate) fn stream(inner: SendableRecordBatchStream) -> SendableRecordBatchStream {
        Box::pin(Self {
            inner,
            ended: false,
        })
    }
}

impl Stream for Guarded {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match std::panic::catch_unwind(AssertUnwindSafe(|| this.inner.as_mut().poll_next(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                this.ended = true;
                let err = panicked("running", panic.as_ref());
                Poll::Ready(Some(Err(DataFusionError::from(err))))
            }
        }
    }
}

impl RecordBatchStream for Guarded {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}
