//! Engine settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::logical_expr::ScalarUDF;
use tenantfusion_core::{Clock, Result, SystemClock, TableType, TenantError};
use tenantfusion_live::{LiveConfig, PoolConfig, Source};
use tenantfusion_store::Durability;

use crate::limits::StatementLimits;
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
    /// The name of the engine's one catalog in SQL (`catalog.namespace.table`)
    /// and in `information_schema`: [`CATALOG_NAME`](crate::CATALOG_NAME)
    /// unless set. SQL written for DataFusion's defaults reads catalog
    /// `datafusion`, namespace `public`:
    ///
    /// ```
    /// use tenantfusion::EngineConfig;
    /// let config = EngineConfig::default()
    ///     .with_catalog_name("datafusion")
    ///     .with_default_namespace("public");
    /// assert_eq!(config.catalog_name, "datafusion");
    /// ```
    pub catalog_name: String,
    /// What plain `CREATE TABLE` (no USER/SHARED/STREAM) creates.
    pub default_table_type: TableType,
    /// Let ordinary users create and drop *user* tables (the sqllogictest
    /// runner's `--user-tables` mode). Shared tables always need `Dba`/`System`.
    pub users_may_create_user_tables: bool,
    /// Directories on this machine whose files roles `dba` and `system` may
    /// read with `CREATE EXTERNAL TABLE` and write with `COPY ... TO` (and
    /// `INSERT` into an external table); none by default, which refuses
    /// both. Each must exist when the engine starts. See the
    /// `server_files` module docs for how a location is judged.
    pub server_files: Vec<PathBuf>,
    /// Upper bound for memory reserved by queries (sorts, joins,
    /// aggregations), shared by every session; `None` for no limit.
    pub memory_limit: Option<usize>,
    /// Bounds on each statement: its memory within `memory_limit`, its
    /// user's statements running at once, its time (none by default).
    pub statement_limits: StatementLimits,
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
    /// Write `INSERT INTO t [(columns)] VALUES ...` whose values are
    /// constants (literals, casts of them, `now()`, `NULL`) without planning
    /// the statement: its rows are built as the planner would build them and
    /// handed to the table's sink, the same checks and change events
    /// included. Any other INSERT, and any such INSERT the engine cannot
    /// build exactly as the planner would (a value that fails its cast, a
    /// NULL for a NOT NULL column), is planned. On by default; off plans
    /// every INSERT (the reference the direct path is tested against).
    pub direct_inserts: bool,
    /// Take the literal values out of a query's, an UPDATE's or a DELETE's
    /// filters (and the values an UPDATE assigns) as parameters, so that
    /// statements that differ only in those values share one generic plan
    /// (see the README, "Literal values as parameters", for the rules): on
    /// by default; off plans each text of its own (the reference the
    /// rewrite is tested against). Needs the plan cache.
    pub auto_parameters: bool,
    /// Threads that write and fsync the write-ahead logs of every durable
    /// table (and the catalog's), however many tables there are: a commit
    /// is mostly a wait for the disk, and each thread keeps one table's
    /// fsync in flight. Sixteen by default; ignored in memory.
    pub log_committers: usize,
    /// Bytes of decoded Parquet row groups kept in memory for the durable
    /// tables (64 MiB by default; 0 keeps none). An UPDATE or DELETE of a
    /// flushed row reads its row group whole, and so does every scan of
    /// that segment until the next flush rewrites it: kept, it is decoded
    /// once. Only such whole reads fill it; the least recently used row
    /// groups go first.
    pub row_group_cache_bytes: usize,
    /// What stream tables age their rows by (the system clock; tests use a
    /// [`ManualClock`](tenantfusion_core::ManualClock)).
    pub clock: Arc<dyn Clock>,
    /// The host's own scalar functions, offered to every session beside
    /// DataFusion's (one of the same name takes its place). They are the
    /// host's code: a function runs for whoever calls it, and one that
    /// declares itself immutable may have its results kept in cached plans.
    pub scalar_functions: Vec<Arc<ScalarUDF>>,
    /// Settings of the live provider pool that feeds stream tables. The
    /// pool starts with the engine when `live_sources` is not empty, else
    /// on the first `CREATE SOURCE`.
    pub live_pool: PoolConfig,
    /// Sources registered at start (e.g. from a TOML file with
    /// [`with_live_config`](Self::with_live_config)).
    pub live_sources: Vec<Arc<dyn Source>>,
    /// How long a topic stays subscribed upstream after its last live query
    /// ends, so a client that re-subscribes at once finds it flowing.
    pub stream_linger: Duration,
    /// Rows kept per topic or user by a stream table that declares neither
    /// `TTL_SECONDS` nor `MAX_ROWS_PER_TOPIC`/`MAX_ROWS_PER_USER`.
    pub stream_default_max_rows: usize,
    /// Where user and shared tables keep their rows, and the catalog its
    /// namespaces, tables and users ([`Storage::Memory`] by default: gone
    /// when the engine is).
    pub storage: Storage,
}

/// Where an engine keeps what it stores.
///
/// ```
/// use tenantfusion::{Durability, Storage};
///
/// assert_eq!(Storage::from_url("memory").unwrap(), Storage::Memory);
/// let Storage::Directory { path, durability } = Storage::from_url("file:///var/lib/tf").unwrap() else {
///     unreachable!()
/// };
/// assert_eq!((path.to_str(), durability), (Some("/var/lib/tf"), Durability::Fsync));
/// assert_eq!(Storage::from_url("ftp://x").unwrap_err().code(), "INVALID_ARGUMENT");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Storage {
    /// In memory only: nothing survives the engine.
    #[default]
    Memory,
    /// A directory on the local file system: every write is logged there
    /// before it is acknowledged, and the engine reopens with what it held.
    /// One engine at a time may have it open.
    Directory {
        /// The directory (created if missing).
        path: PathBuf,
        /// When a write counts as done.
        durability: Durability,
    },
    /// Flushed rows (Parquet segments and their manifests) in an S3 bucket
    /// (or any S3-compatible store); the write-ahead logs and the catalog
    /// in the local directory `path`, where writes are acknowledged.
    S3 {
        /// `s3://bucket` or `s3://bucket/prefix`.
        url: String,
        /// The local directory of the logs (created if missing).
        path: PathBuf,
        /// When a write counts as done.
        durability: Durability,
        /// Settings of object_store's `AmazonS3Builder` by name, on top of
        /// the `AWS_*` environment: `endpoint`, `access_key_id`,
        /// `secret_access_key`, `region`, `allow_http`, ...
        options: Vec<(String, String)>,
    },
}

impl Storage {
    /// Reads a storage URL: `memory`, `file:///absolute/path` or a plain
    /// path (both [`Durability::Fsync`]), or `s3://bucket/prefix` (its
    /// logs in the local directory `data`; see [`Storage::with_s3_option`]).
    pub fn from_url(url: &str) -> Result<Self> {
        let url = url.trim();
        if url == "memory" || url == "memory://" {
            return Ok(Storage::Memory);
        }
        let path = match url.split_once("://") {
            Some(("file", path)) if !path.is_empty() => path,
            Some(("s3", bucket)) if !bucket.is_empty() => {
                return Ok(Storage::S3 {
                    url: url.to_string(),
                    path: PathBuf::from("data"),
                    durability: Durability::Fsync,
                    options: Vec::new(),
                });
            }
            Some((scheme, _)) => {
                return Err(TenantError::InvalidArgument(format!(
                    "storage URL '{url}': scheme '{scheme}' is not supported \
                     (use memory, file:///path, a path or s3://bucket/prefix)"
                )));
            }
            None if !url.is_empty() => url,
            None => {
                return Err(TenantError::InvalidArgument(
                    "storage URL must not be empty".into(),
                ));
            }
        };
        Ok(Storage::Directory {
            path: PathBuf::from(path),
            durability: Durability::Fsync,
        })
    }

    /// An S3 setting (e.g. `endpoint`, `access_key_id`), for [`Storage::S3`];
    /// other storage is returned as it is.
    ///
    /// ```
    /// use tenantfusion::Storage;
    ///
    /// let storage = Storage::from_url("s3://bucket/tenants")
    ///     .unwrap()
    ///     .with_s3_option("endpoint", "http://127.0.0.1:9010")
    ///     .with_s3_option("allow_http", "true");
    /// let Storage::S3 { options, .. } = &storage else { unreachable!() };
    /// assert_eq!(options.len(), 2);
    /// ```
    pub fn with_s3_option(mut self, key: &str, value: &str) -> Self {
        if let Storage::S3 { options, .. } = &mut self {
            options.push((key.to_string(), value.to_string()));
        }
        self
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_namespace: "default".to_string(),
            catalog_name: crate::CATALOG_NAME.to_string(),
            default_table_type: TableType::User,
            users_may_create_user_tables: false,
            server_files: Vec::new(),
            memory_limit: None,
            statement_limits: StatementLimits::default(),
            target_partitions: None,
            plan_cache: PlanCacheConfig::default(),
            round_robin_repartition: false,
            direct_inserts: true,
            auto_parameters: true,
            log_committers: tenantfusion_store::Committers::DEFAULT_THREADS,
            row_group_cache_bytes: tenantfusion_store::DEFAULT_ROW_GROUP_CACHE_BYTES,
            clock: Arc::new(SystemClock),
            live_pool: PoolConfig::default(),
            live_sources: Vec::new(),
            stream_linger: Duration::from_secs(10),
            stream_default_max_rows: 10_000,
            storage: Storage::Memory,
            scalar_functions: Vec::new(),
        }
    }
}

impl EngineConfig {
    /// Sets [`catalog_name`](Self::catalog_name).
    pub fn with_catalog_name(mut self, name: impl Into<String>) -> Self {
        self.catalog_name = name.into();
        self
    }

    /// Sets [`default_namespace`](Self::default_namespace).
    pub fn with_default_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.default_namespace = namespace.into();
        self
    }

    /// Sets [`memory_limit`](Self::memory_limit).
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Sets [`statement_limits`](Self::statement_limits).
    pub fn with_statement_limits(mut self, limits: StatementLimits) -> Self {
        self.statement_limits = limits;
        self
    }

    /// Sets [`plan_cache`](Self::plan_cache).
    pub fn with_plan_cache(mut self, plan_cache: PlanCacheConfig) -> Self {
        self.plan_cache = plan_cache;
        self
    }

    /// Sets [`direct_inserts`](Self::direct_inserts).
    pub fn with_direct_inserts(mut self, direct: bool) -> Self {
        self.direct_inserts = direct;
        self
    }

    /// Sets [`auto_parameters`](Self::auto_parameters).
    pub fn with_auto_parameters(mut self, auto: bool) -> Self {
        self.auto_parameters = auto;
        self
    }

    /// Sets [`row_group_cache_bytes`](Self::row_group_cache_bytes).
    pub fn with_row_group_cache(mut self, bytes: usize) -> Self {
        self.row_group_cache_bytes = bytes;
        self
    }

    /// Sets [`log_committers`](Self::log_committers) (at least one).
    pub fn with_log_committers(mut self, threads: usize) -> Self {
        self.log_committers = threads.max(1);
        self
    }

    /// Sets [`clock`](Self::clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Takes the pool settings and sources of a live configuration file
    /// ([`LiveConfig::load`]).
    pub fn with_live_config(mut self, live: LiveConfig) -> Self {
        self.live_pool = live.pool;
        self.live_sources = live.sources;
        self
    }

    /// Sets [`stream_linger`](Self::stream_linger).
    pub fn with_stream_linger(mut self, linger: Duration) -> Self {
        self.stream_linger = linger;
        self
    }

    /// Sets [`storage`](Self::storage).
    pub fn with_storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Adds a directory to [`server_files`](Self::server_files).
    ///
    /// ```
    /// use tenantfusion::EngineConfig;
    /// let config = EngineConfig::default().with_server_files_dir("/srv/exports");
    /// assert_eq!(config.server_files.len(), 1);
    /// ```
    pub fn with_server_files_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.server_files.push(dir.into());
        self
    }

    /// Adds a function to [`scalar_functions`](Self::scalar_functions).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use datafusion::logical_expr::ScalarUDF;
    /// use tenantfusion::EngineConfig;
    /// # let udf: ScalarUDF = datafusion::functions::math::abs().as_ref().clone();
    /// let config = EngineConfig::default().with_scalar_function(Arc::new(udf));
    /// assert_eq!(config.scalar_functions.len(), 1);
    /// ```
    pub fn with_scalar_function(mut self, function: Arc<ScalarUDF>) -> Self {
        self.scalar_functions.push(function);
        self
    }

    /// Sets [`users_may_create_user_tables`](Self::users_may_create_user_tables).
    pub fn with_users_may_create_user_tables(mut self, allow: bool) -> Self {
        self.users_may_create_user_tables = allow;
        self
    }
}
