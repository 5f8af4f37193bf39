//! Engine settings.

use tenantfusion_core::TableType;

use crate::plan_cache::PlanCacheConfig;

/// How an [`Engine`](crate::Engine) is set up. `Default` suits tests and
/// embedding: plain `CREATE TABLE` makes user tables, DDL is for `Dba`/`System`.
///
/// ```
/// use tenantfusion::EngineConfig;
/// let config = EngineConfig::default().with_memory_limit(512 * 1024 * 1024);
/// assert_eq!(config.default_namespace, "default");
/// ```
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The namespace of unqualified table names; created at start.
    pub default_namespace: String,
    /// What plain `CREATE TABLE` (no USER/SHARED/STREAM) creates.
    pub default_table_type: TableType,
    /// Let ordinary users create and drop *user* tables (the sqllogictest
    /// runner's `--user-tables` mode). Shared tables always need `Dba`/`System`.
    pub users_may_create_user_tables: bool,
    /// Upper bound for memory reserved by queries (sorts, joins,
    /// aggregations), shared by every session; `None` for no limit.
    pub memory_limit: Option<usize>,
    /// Partitions DataFusion plans with; `None` uses the number of cores.
    pub target_partitions: Option<usize>,
    /// Let DataFusion split a one-partition scan round-robin to run operators
    /// above it (e.g. partial aggregates) in parallel. Off by default: a
    /// tenantfusion scan is one partition holding one user's rows, usually
    /// few, where the split costs more in spawned tasks than it saves (a
    /// cached per-user `count(*), sum(id)` over 100 rows took 66 us with it,
    /// 9 us without); many users at once already use the cores. Turn it on
    /// for large shared tables, or per session with
    /// `SET datafusion.optimizer.enable_round_robin_repartition = true`.
    pub round_robin_repartition: bool,
    /// Bounds of the cache of physical plans shared by all sessions (on by
    /// default; [`PlanCacheConfig::DISABLED`] turns it off).
    pub plan_cache: PlanCacheConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_namespace: "default".to_string(),
            default_table_type: TableType::User,
            users_may_create_user_tables: false,
            memory_limit: None,
            target_partitions: None,
            plan_cache: PlanCacheConfig::default(),
            round_robin_repartition: false,
        }
    }
}

impl EngineConfig {
    /// Sets [`memory_limit`](Self::memory_limit).
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Sets [`plan_cache`](Self::plan_cache).
    pub fn with_plan_cache(mut self, plan_cache: PlanCacheConfig) -> Self {
        self.plan_cache = plan_cache;
        self
    }

    /// Sets [`users_may_create_user_tables`](Self::users_may_create_user_tables).
    pub fn with_users_may_create_user_tables(mut self, allow: bool) -> Self {
        self.users_may_create_user_tables = allow;
        self
    }
}
