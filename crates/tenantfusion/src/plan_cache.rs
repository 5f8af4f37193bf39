//! Physical plans reused across requests and across users.
//!
//! A plan here holds no user: scans and writes read the caller from the task
//! context each time they execute, and permissions are checked again before
//! every run. So one plan of `SELECT ... FROM notes` serves every user.
//!
//! An entry also remembers the provider of every table the plan reads or
//! writes. A table that was dropped and created again has a new provider, so
//! the old plan no longer matches and is planned anew: the key alone never
//! decides.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;
use datafusion::physical_plan::work_table::WorkTableExec;
use parking_lot::Mutex;
use tenantfusion_core::BaseTableProvider;
use tenantfusion_tables::PartitionScanExec;

/// Bounds of the plan cache. The cache is on by default; `max_entries = 0`
/// turns it off.
///
/// ```
/// use tenantfusion::{EngineConfig, PlanCacheConfig};
/// let config = EngineConfig::default().with_plan_cache(PlanCacheConfig {
///     max_entries: 256,
///     ..PlanCacheConfig::default()
/// });
/// assert_eq!(config.plan_cache.max_entries, 256);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanCacheConfig {
    /// Most plans kept; the least recently used is evicted first.
    pub max_entries: usize,
    /// Most bytes kept, by the estimate in [`PlanCacheStats::bytes`].
    pub max_bytes: usize,
}

impl Default for PlanCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 1024,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl PlanCacheConfig {
    /// A configuration that caches nothing.
    pub const DISABLED: PlanCacheConfig = PlanCacheConfig {
        max_entries: 0,
        max_bytes: 0,
    };
}

/// Counters of the plan cache, read with
/// [`Engine::plan_cache_stats`](crate::Engine::plan_cache_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanCacheStats {
    /// Statements answered with a cached plan.
    pub hits: u64,
    /// Cacheable statements that had to be planned.
    pub misses: u64,
    /// Plans dropped to stay within the bounds.
    pub evictions: u64,
    /// Plans dropped because a table they use was dropped or replaced.
    pub invalidations: u64,
    /// Plans held now.
    pub entries: usize,
    /// Estimated bytes held now: the key's text plus a fixed 2 KiB per plan
    /// node (plans share schemas and expressions, so an exact figure would
    /// count shared parts many times).
    pub bytes: usize,
}

/// Estimated size of one plan node, see [`PlanCacheStats::bytes`].
const NODE_BYTES: usize = 2048;

/// What a plan depends on besides the tables it references.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PlanKey {
    /// The session's settings that differ from the engine's, in a canonical
    /// text form; empty for sessions that never ran `SET`.
    pub settings: Arc<str>,
    /// The statement, normalised by the SQL parser's own display (keyword
    /// case and spacing), plus bound parameter values for prepared statements.
    pub text: String,
}

#[derive(Debug)]
struct Entry {
    plan: Arc<dyn ExecutionPlan>,
    tables: Tables,
    bytes: usize,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Lru {
    entries: HashMap<PlanKey, Entry>,
    /// `last_used` -> key, oldest first.
    order: BTreeMap<u64, PlanKey>,
    clock: u64,
    bytes: usize,
    /// Hashes of keys seen once: plans are only kept on their second
    /// sighting, so one-off statements and values do not push out the plans
    /// that are reused (see [`PlanCache::admit`]).
    seen_once: HashSet<u64>,
    /// Statement texts exactly as sent (with the settings) -> the key they
    /// normalise to (and the values taken out of them, for a generic plan):
    /// a statement sent again verbatim is not parsed again.
    verbatim: HashMap<PlanKey, (PlanKey, Option<Values>)>,
    /// Hashes of the keys of generic plans that cannot be made (a parameter
    /// where no value can be put), so that a statement is not planned
    /// generically again on each run only to find that out; bounded like
    /// `seen_once`, and forgotten when a table is dropped.
    per_value: HashSet<u64>,
}

impl Lru {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Marks `key` as just used.
    fn touch(&mut self, key: &PlanKey) {
        let Some(old) = self.entries.get(key).map(|e| e.last_used) else {
            return;
        };
        let now = self.tick();
        if let Some(order_key) = self.order.remove(&old) {
            self.order.insert(now, order_key);
        }
        if let Some(entry) = self.entries.get_mut(key) {
            entry.last_used = now;
        }
    }

    /// Remembers that `verbatim` normalises to `key`; bounded like
    /// `seen_once`.
    fn alias(&mut self, verbatim: Verbatim, key: &PlanKey, max_entries: usize) {
        if self.verbatim.len() >= 4 * max_entries {
            self.verbatim.clear();
        }
        self.verbatim
            .insert(verbatim.text, (key.clone(), verbatim.values));
    }

    fn remove(&mut self, key: &PlanKey) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.order.remove(&entry.last_used);
        self.bytes -= entry.bytes;
        Some(entry)
    }
}

/// The engine's plan cache (see the module documentation).
#[derive(Debug)]
pub(crate) struct PlanCache {
    config: PlanCacheConfig,
    lru: Mutex<Lru>,
    hasher: RandomState,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    invalidations: AtomicU64,
}

/// The providers of a statement's tables, in the order it names them.
pub(crate) type Tables = Vec<Arc<dyn BaseTableProvider>>;

/// What [`PlanCache::get_or_admit`] found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The plan kept for the key.
    Kept(Arc<dyn ExecutionPlan>),
    /// None yet; one made now is to be kept here.
    Admitted(CacheSlot),
    /// None, and one made now is not to be kept (a first sighting).
    NotYet,
    /// None can be made: the statement is planned per value (see
    /// [`PlanCache::mark_per_value`]).
    PerValue,
}

/// Values a generic plan is run with, `$1`'s first.
pub(crate) type Values = Arc<[ScalarValue]>;

/// A query's text exactly as sent (with the settings), remembered beside
/// the key its plan is kept under, so that the same text sent again is not
/// parsed again ([`PlanCache::get_verbatim`]). Only queries: a hit on it
/// checks read access alone.
#[derive(Debug, Clone)]
pub(crate) struct Verbatim {
    pub text: PlanKey,
    /// For a text run from a generic plan: the values taken out of it, which
    /// each run binds.
    pub values: Option<Values>,
}

/// Where a newly made plan goes in the plan cache, and what it was made
/// against.
#[derive(Debug)]
pub(crate) struct CacheSlot {
    pub key: PlanKey,
    pub tables: Tables,
    /// The query's text as sent, remembered for [`PlanCache::get_verbatim`].
    pub verbatim: Option<Verbatim>,
}

impl PlanCache {
    pub(crate) fn new(config: PlanCacheConfig) -> Self {
        Self {
            config,
            lru: Mutex::new(Lru::default()),
            hasher: RandomState::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.config.max_entries > 0
    }

    /// The plan kept for `key`, if it was made against exactly `tables` (the
    /// providers the statement resolves to now). A plan made against another
    /// provider of the same name is dropped.
    ///
    /// `verbatim`, the statement's text as sent, is remembered on a hit so
    /// that [`get_verbatim`](Self::get_verbatim) finds it next time.
    pub(crate) fn get(
        &self,
        key: &PlanKey,
        tables: &[Arc<dyn BaseTableProvider>],
        verbatim: Option<&Verbatim>,
    ) -> Option<Arc<dyn ExecutionPlan>> {
        if !self.enabled() {
            return None;
        }
        let mut lru = self.lru.lock();
        let Some(entry) = lru.entries.get(key) else {
            drop(lru);
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if !same_providers(&entry.tables, tables) {
            lru.remove(key);
            drop(lru);
            self.invalidations.fetch_add(1, Ordering::Relaxed);
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let plan = Arc::clone(&entry.plan);
        lru.touch(key);
        if let Some(text) = verbatim {
            lru.alias(text.clone(), key, self.config.max_entries);
        }
        drop(lru);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(plan)
    }

    /// The plan kept for a query sent before with exactly this text and
    /// these settings, the providers it was made against, and the values
    /// to bind if it is a generic plan. The caller checks those providers
    /// are still current and readable, then calls
    /// [`record_hit`](Self::record_hit); otherwise it takes the full path.
    pub(crate) fn get_verbatim(
        &self,
        text: &PlanKey,
    ) -> Option<(Arc<dyn ExecutionPlan>, Tables, Option<Values>)> {
        let mut lru = self.lru.lock();
        let (key, values) = lru.verbatim.get(text)?.clone();
        let entry = lru.entries.get(&key)?;
        let found = (Arc::clone(&entry.plan), entry.tables.clone(), values);
        lru.touch(&key);
        Some(found)
    }

    /// Counts a hit found by [`get_verbatim`](Self::get_verbatim).
    pub(crate) fn record_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the plan about to be made for `slot` is to be kept: a
    /// statement is kept on its second sighting (by any caller), so a
    /// one-off statement takes no room and, not being kept, is planned for
    /// its caller alone (`PlannedFor`), with the statistics of their rows.
    /// Counts the sighting.
    pub(crate) fn admit(&self, slot: &CacheSlot) -> bool {
        if !self.enabled() {
            return false;
        }
        let hash = self.hasher.hash_one(&slot.key);
        let mut lru = self.lru.lock();
        if lru.entries.contains_key(&slot.key) {
            // Kept by a concurrent run, or a stale plan to be replaced.
            return true;
        }
        if lru.seen_once.insert(hash) {
            // Bounded: forgetting sightings only delays admission.
            if lru.seen_once.len() > 4 * self.config.max_entries {
                lru.seen_once.clear();
            }
            return false;
        }
        lru.seen_once.remove(&hash);
        true
    }

    /// What a generic plan's `key` has against `tables`: the plan kept
    /// (see [`get`](Self::get)), none that can be made (see
    /// [`mark_per_value`](Self::mark_per_value)), or else the slot to keep
    /// one in if the cache [admits](Self::admit) it now.
    pub(crate) fn get_or_admit(
        &self,
        key: PlanKey,
        tables: &Tables,
        verbatim: Option<Verbatim>,
    ) -> Lookup {
        let per_value = self.hasher.hash_one(&key);
        if self.lru.lock().per_value.contains(&per_value) {
            return Lookup::PerValue;
        }
        if let Some(plan) = self.get(&key, tables, verbatim.as_ref()) {
            return Lookup::Kept(plan);
        }
        let slot = CacheSlot {
            key,
            tables: tables.clone(),
            verbatim,
        };
        match self.admit(&slot) {
            true => Lookup::Admitted(slot),
            false => Lookup::NotYet,
        }
    }

    /// Remembers that the generic plan of `key` cannot be made: the
    /// statement is planned per value, and [`get_or_admit`](Self::get_or_admit)
    /// says so until a table is dropped.
    pub(crate) fn mark_per_value(&self, key: &PlanKey) {
        if !self.enabled() {
            return;
        }
        let hash = self.hasher.hash_one(key);
        let mut lru = self.lru.lock();
        if lru.per_value.len() >= 4 * self.config.max_entries {
            lru.per_value.clear();
        }
        lru.per_value.insert(hash);
    }

    /// Keeps `plan` for `key`, evicting the least recently used plans beyond
    /// the bounds. Callers decide what is cacheable ([`is_reusable`]).
    pub(crate) fn insert(&self, slot: CacheSlot, plan: Arc<dyn ExecutionPlan>) {
        let CacheSlot {
            key,
            tables,
            verbatim,
        } = slot;
        if !self.enabled() {
            return;
        }
        let bytes = key.text.len() + key.settings.len() + NODE_BYTES * count_nodes(&plan);
        if bytes > self.config.max_bytes {
            return;
        }
        let mut lru = self.lru.lock();
        lru.remove(&key);
        if let Some(text) = verbatim {
            lru.alias(text, &key, self.config.max_entries);
        }
        let now = lru.tick();
        lru.order.insert(now, key.clone());
        lru.bytes += bytes;
        lru.entries.insert(
            key,
            Entry {
                plan,
                tables,
                bytes,
                last_used: now,
            },
        );
        let mut evicted = 0;
        while lru.entries.len() > self.config.max_entries || lru.bytes > self.config.max_bytes {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            if let Some(entry) = lru.entries.remove(&oldest) {
                lru.bytes -= entry.bytes;
                evicted += 1;
            }
        }
        drop(lru);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    /// Drops every plan that uses `dropped`, so that a dropped table's
    /// provider (and its rows) is not kept alive by cached plans.
    pub(crate) fn forget_table(&self, dropped: &Arc<dyn BaseTableProvider>) {
        let mut lru = self.lru.lock();
        let stale: Vec<PlanKey> = lru
            .entries
            .iter()
            .filter(|(_, entry)| entry.tables.iter().any(|t| Arc::ptr_eq(t, dropped)))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &stale {
            lru.remove(key);
        }
        // A table of the same name may make plans generic that were not.
        lru.per_value.clear();
        drop(lru);
        self.invalidations
            .fetch_add(stale.len() as u64, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> PlanCacheStats {
        let lru = self.lru.lock();
        PlanCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            entries: lru.entries.len(),
            bytes: lru.bytes,
        }
    }
}

/// Whether two statements' tables resolve to the very same providers (a
/// table dropped and created again has a new one).
pub(crate) fn same_providers(
    a: &[Arc<dyn BaseTableProvider>],
    b: &[Arc<dyn BaseTableProvider>],
) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| Arc::ptr_eq(a, b))
}

fn count_nodes(plan: &Arc<dyn ExecutionPlan>) -> usize {
    1 + plan.children().into_iter().map(count_nodes).sum::<usize>()
}

/// Whether a logical plan gives the same physical plan whenever it is
/// planned: no function that is not immutable (`now()` is folded into a
/// constant at planning; `random()` is kept out too, to keep the rule
/// simple), and no session variable.
pub(crate) fn is_deterministic(plan: &LogicalPlan) -> bool {
    let mut deterministic = true;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                let fixed = match e {
                    Expr::ScalarFunction(f) => {
                        f.func.signature().volatility == Volatility::Immutable
                    }
                    Expr::ScalarVariable(..) => false,
                    _ => true,
                };
                if fixed {
                    Ok(TreeNodeRecursion::Continue)
                } else {
                    deterministic = false;
                    Ok(TreeNodeRecursion::Stop)
                }
            })
        })
    });
    deterministic
}

/// Whether a physical plan may be executed again, and by several users at
/// once, after [`reset_plan_states`](datafusion::physical_plan::execution_plan::reset_plan_states).
/// Not these, whose state survives the reset and is shared by every copy:
/// scalar subqueries (their results container) and recursive queries (their
/// work table).
pub(crate) fn is_reusable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let shared_state = plan.exists(|node| {
        Ok(node.downcast_ref::<ScalarSubqueryExec>().is_some()
            || node.downcast_ref::<RecursiveQueryExec>().is_some()
            || node.downcast_ref::<WorkTableExec>().is_some()
            || node
                .downcast_ref::<PartitionScanExec>()
                .is_some_and(|scan| scan.planned_for().is_some()))
    });
    matches!(shared_state, Ok(false))
}
