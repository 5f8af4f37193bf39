//! Decoded row groups of Parquet segments, kept in memory up to a budget.
//!
//! An UPDATE or DELETE of a flushed row reads its row group whole (rows are
//! matched on every column), and so does every scan while rows taken out of
//! that segment wait for the next flush. Decoding the same row group again
//! and again (snappy, then Parquet's encodings) was most of such a
//! statement's time. A segment file never changes once written and its name
//! is never reused (a manifest's `next_segment` only grows), so a decoded
//! row group stays right for as long as the file exists.
//!
//! Only whole-width reads fill the cache (an analytic scan of two columns
//! does not push out the rows being changed); any read may be served from
//! it, projected. The least recently used row groups go first once the
//! budget is exceeded; a budget of 0 keeps nothing.
//!
//! Why not a caching crate (moka, quick_cache): none is in the build, and
//! this needs one map, one byte budget and least-recently-used order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::Mutex;

/// The budget when none is set: 64 MiB.
pub const DEFAULT_ROW_GROUP_CACHE_BYTES: usize = 64 << 20;

/// A row group kept: its rows, their size, when it was last used.
type Entry = (RecordBatch, usize, u64);

/// Decoded row groups, least recently used first out. See the module docs.
#[derive(Debug)]
pub struct RowGroupCache {
    budget: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Segment object path -> row group index -> what is kept of it; by
    /// path first, so a lookup borrows the path and a deleted segment goes
    /// whole.
    segments: HashMap<String, HashMap<usize, Entry>>,
    bytes: usize,
    clock: u64,
}

impl Default for RowGroupCache {
    fn default() -> Self {
        Self::new(DEFAULT_ROW_GROUP_CACHE_BYTES)
    }
}

impl RowGroupCache {
    /// A cache holding up to `budget` bytes of decoded rows.
    pub fn new(budget: usize) -> Self {
        Self {
            budget: AtomicUsize::new(budget),
            state: Mutex::default(),
        }
    }

    /// Changes the budget; what is over it goes at once.
    pub fn set_budget(&self, budget: usize) {
        self.budget.store(budget, Ordering::Relaxed);
        self.state.lock().shrink_to(budget);
    }

    /// Row group `group` of segment `path`, if kept.
    pub fn get(&self, path: &str, group: usize) -> Option<RecordBatch> {
        let mut state = self.state.lock();
        state.clock += 1;
        let now = state.clock;
        let (rows, _, used) = state.segments.get_mut(path)?.get_mut(&group)?;
        *used = now;
        Some(rows.clone())
    }

    /// Keeps `rows`, every column of row group `group` of segment `path`,
    /// unless they alone exceed the budget.
    pub fn insert(&self, path: &str, group: usize, rows: RecordBatch) {
        let budget = self.budget.load(Ordering::Relaxed);
        let size = rows.get_array_memory_size();
        if size > budget {
            return;
        }
        let mut state = self.state.lock();
        state.clock += 1;
        let now = state.clock;
        let groups = state.segments.entry(path.to_string()).or_default();
        if let Some((_, old, _)) = groups.insert(group, (rows, size, now)) {
            state.bytes -= old;
        }
        state.bytes += size;
        state.shrink_to(budget);
    }

    /// Drops every row group of segment `path` (its file is being deleted).
    pub fn forget(&self, path: &str) {
        let mut state = self.state.lock();
        if let Some(groups) = state.segments.remove(path) {
            state.bytes -= groups.values().map(|(_, size, _)| size).sum::<usize>();
        }
    }

    /// Bytes of decoded rows kept now.
    pub fn bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

impl State {
    /// Drops least recently used row groups until at most `budget` bytes
    /// are kept. A scan for the oldest per drop: the cache holds at most
    /// a few thousand row groups, and drops are rare next to hits.
    fn shrink_to(&mut self, budget: usize) {
        while self.bytes > budget {
            let oldest = self
                .segments
                .iter()
                .flat_map(|(path, groups)| {
                    groups
                        .iter()
                        .map(move |(group, (_, _, used))| (*used, path, *group))
                })
                .min()
                .map(|(_, path, group)| (path.clone(), group));
            let Some((path, group)) = oldest else {
                break;
            };
            let Some(groups) = self.segments.get_mut(&path) else {
                break;
            };
            if let Some((_, size, _)) = groups.remove(&group) {
                self.bytes -= size;
            }
            if groups.is_empty() {
                self.segments.remove(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn rows(n: i64) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from((0..n).collect::<Vec<_>>()))],
        )
        .unwrap()
    }

    #[test]
    fn keeps_within_its_budget_dropping_the_least_recently_used() {
        let size = rows(1000).get_array_memory_size();
        let cache = RowGroupCache::new(2 * size);
        cache.insert("a", 0, rows(1000));
        cache.insert("a", 1, rows(1000));
        assert!(cache.get("a", 0).is_some(), "a/0 used last now");
        cache.insert("b", 0, rows(1000));
        assert!(cache.get("a", 1).is_none(), "the least recently used went");
        assert!(cache.get("a", 0).is_some() && cache.get("b", 0).is_some());
        assert_eq!(cache.bytes(), 2 * size);
        // Larger than the whole budget: not kept, nothing pushed out.
        cache.insert("c", 0, rows(10_000));
        assert!(cache.get("c", 0).is_none() && cache.get("b", 0).is_some());
        cache.forget("a");
        assert!(cache.get("a", 0).is_none());
        assert_eq!(cache.bytes(), size);
        cache.set_budget(0);
        assert_eq!(cache.bytes(), 0);
        assert!(cache.get("b", 0).is_none());
    }
}
