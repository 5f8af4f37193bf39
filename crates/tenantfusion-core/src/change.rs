//! Live queries' side of a table: being told about new rows.

use std::any::Any;
use std::fmt;

use datafusion::arrow::record_batch::RecordBatch;

/// Told about the rows a live query watches: first what is there, then
/// what is added and removed (an UPDATE removes rows' old values and adds
/// their new ones).
pub trait ChangeListener: fmt::Debug + Send + Sync {
    /// The rows present when the listener was registered. Called once,
    /// before any [`on_rows`](Self::on_rows), with the table's writers held
    /// off in between, so no row is both in the snapshot and an event, and
    /// none is in neither.
    fn on_snapshot(&self, rows: Vec<RecordBatch>);

    /// Rows just added to what the listener watches (the table's schema).
    /// `false` when the listener is gone for good; it is then removed.
    fn on_rows(&self, rows: &[RecordBatch]) -> bool;

    /// Rows just removed from what the listener watches (by DELETE, or an
    /// UPDATE's old values); `false` when the listener is gone for good.
    fn on_removed(&self, rows: &[RecordBatch]) -> bool;
}

/// Keeps a listener registered with a table; dropping it unregisters.
pub struct WatchGuard {
    _registration: Box<dyn Any + Send + Sync>,
}

impl WatchGuard {
    /// Wraps whatever unregisters the listener when dropped.
    pub fn new(registration: impl Any + Send + Sync) -> Self {
        Self {
            _registration: Box::new(registration),
        }
    }
}

impl fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WatchGuard")
    }
}
