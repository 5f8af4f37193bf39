//! The sqllogictest runner of tenantfusion.
//!
//! `connection NAME` records run as the user `NAME` (role `user`, unless the
//! file created that user with another role first); records without one run
//! as a built-in administrator (`admin`, role `dba`). Output is normalised
//! exactly as DataFusion's own sqllogictest driver does (its public
//! `convert_batches` and validators are reused), so DataFusion's `.slt` files
//! read the same here.
//!
//! Time in stream tables comes from a manual clock that starts at
//! 2023-11-14 22:13:20 UTC and moves only when a file says
//! `statement ok` / `ADVANCE CLOCK <n> SECONDS` (a runner command, not SQL).

mod datafusion_baseline;
mod scan_lines;

pub use datafusion_baseline::{Comparison, compare_file, run_file_on_datafusion};
pub use scan_lines::differ_only_in_scan_lines;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use datafusion_sqllogictest::{
    DFColumnType, convert_batches, convert_schema_to_types, df_value_validator, value_normalizer,
};
use sqllogictest::{AsyncDB, Connection, DBOutput, Record, Runner, strict_column_validator};
use tenantfusion::{
    Clock, Engine, EngineConfig, ManualClock, Role, TenantError, TenantSession, UserContext, UserId,
};

/// The name of the built-in administrator that runs records without a `connection`.
pub const ADMIN_USER: &str = "admin";

/// How to run a file.
#[derive(Debug, Clone, Default)]
pub struct SltOptions {
    /// Let plain `CREATE TABLE` (also `... AS SELECT/VALUES`) by any connection
    /// create a user table whose rows belong to that connection's user, so
    /// DataFusion's own `.slt` files run against tenantfusion's providers.
    pub user_tables: bool,
    /// The directory administrators may read and write files in
    /// (`CREATE EXTERNAL TABLE`, `COPY ... TO`); `None` gives each file a
    /// fresh temporary one. Files name it `${SERVER_FILES}` (with
    /// `control substitution on`).
    pub server_files: Option<std::path::PathBuf>,
    /// Run every query three times and require the same rows (or the same
    /// error) each time: the first run is planned for its caller alone, the
    /// second makes the plan the cache keeps, and the third, normally run
    /// from that plan, is checked against the record's expected output.
    pub repeat_queries: bool,
    /// Offer each file the tables DataFusion's own runner makes for it in
    /// Rust (its `TestContext`, by the file's name relative to this
    /// `test_files/` directory) as host tables, as an embedding program
    /// registers its own ([`Engine::register_host_table`], PUBLIC), and the
    /// scalar functions it registers as the host's
    /// ([`EngineConfig::with_scalar_function`]). The engine's catalog and
    /// default namespace are then named as DataFusion names its defaults
    /// (`datafusion`, `public`).
    pub datafusion_tables: Option<std::path::PathBuf>,
}

/// The outcome of one file.
#[derive(Debug, Default)]
pub struct FileReport {
    /// Every statement and query record run, in order.
    pub records: Vec<RecordOutcome>,
    /// Queries run again (`repeat_queries`).
    pub repeated: usize,
    /// Of those, last runs whose plan came from the plan cache.
    pub from_cache: usize,
}

/// One statement or query record of a file, as run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOutcome {
    /// Where the record is: `file:line` (an included file names itself).
    pub at: String,
    /// What differed from the record's expectation, if anything did.
    pub failure: Option<String>,
    /// Whether the failure is a query's output that differs from the
    /// expected one only in its scan lines ([`differ_only_in_scan_lines`]).
    pub scan_lines_only: bool,
}

impl RecordOutcome {
    /// The outcome of running the record at `loc`.
    fn new<T>(loc: &sqllogictest::Location, result: Result<T, sqllogictest::TestError>) -> Self {
        let error = result.err();
        let scan_lines_only = match error.as_ref().map(|e| e.kind()) {
            Some(sqllogictest::TestErrorKind::QueryResultMismatch {
                expected, actual, ..
            }) => differ_only_in_scan_lines(&expected, &actual),
            _ => false,
        };
        Self {
            at: format!("{}:{}", loc.file(), loc.line()),
            failure: error.map(|e| e.kind().to_string().trim_end().to_string()),
            scan_lines_only,
        }
    }
}

/// What a file's loop does with a record. One rule for both engines, so
/// that the outcomes of a file's two runs pair by position.
enum Step<'a> {
    /// A statement or query: run and counted.
    Check(&'a sqllogictest::Location, &'a Connection),
    /// A setting for the records after it (sort mode, hash threshold).
    Setting,
    /// `halt`: nothing after it runs.
    Stop,
    /// Anything else.
    Other,
}

impl<'a> Step<'a> {
    fn of(record: &'a Record<DFColumnType>) -> Self {
        match record {
            Record::Statement {
                connection, loc, ..
            }
            | Record::Query {
                connection, loc, ..
            } => Step::Check(loc, connection),
            Record::Control(_) | Record::HashThreshold { .. } => Step::Setting,
            Record::Halt { .. } => Step::Stop,
            _ => Step::Other,
        }
    }
}

impl FileReport {
    /// How many records passed.
    pub fn passed(&self) -> usize {
        self.records.iter().filter(|r| r.failure.is_none()).count()
    }

    /// The records that failed.
    pub fn failures(&self) -> impl Iterator<Item = &RecordOutcome> {
        self.records.iter().filter(|r| r.failure.is_some())
    }
}

/// Counts of second runs, shared by a file's connections.
#[derive(Debug, Default)]
struct RepeatCounts {
    repeated: AtomicUsize,
    from_cache: AtomicUsize,
}

/// How DataFusion begins the text of each of its errors
/// (`DataFusionError::error_prefix`).
const DATAFUSION_PREFIXES: &[&str] = &[
    "Arrow error: ",
    "Parquet error: ",
    "Object Store error: ",
    "IO error: ",
    "SQL error: ",
    "This feature is not implemented: ",
    "Internal error: ",
    "Error during planning: ",
    "Invalid or Unsupported Configuration: ",
    "Schema error: ",
    "Execution error: ",
    "ExecutionJoin error: ",
    "Resources exhausted: ",
    "External error: ",
];

/// How DataFusion joins the context it wrapped around an error to the error.
const DATAFUSION_CONTEXT: &str = "\ncaused by\n";

/// An error as a record sees it: the engine's code, then, where the text is
/// DataFusion's own, `DataFusion error: ` before it, as DataFusion's own
/// runner prints it (`PLAN_ERROR: DataFusion error: Error during planning:
/// ...`), so expectations written for DataFusion's runner match.
#[derive(Debug)]
pub struct SltError(pub TenantError);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0.to_string();
        let code = self.0.code();
        match text.strip_prefix(code).and_then(|t| t.strip_prefix(": ")) {
            Some(rest)
                if DATAFUSION_PREFIXES.iter().any(|p| rest.starts_with(p))
                    || rest.contains(DATAFUSION_CONTEXT) =>
            {
                write!(f, "{code}: DataFusion error: {rest}")
            }
            _ => f.write_str(&text),
        }
    }
}

impl std::error::Error for SltError {}

impl From<TenantError> for SltError {
    fn from(err: TenantError) -> Self {
        SltError(err)
    }
}

/// One connection of a test file: a session as one user.
pub struct TenantConnection {
    session: TenantSession,
    repeat: Option<Arc<RepeatCounts>>,
    clock: Arc<ManualClock>,
}

/// Partitions a plan targets, whatever the machine has (DataFusion's runner uses 4 too).
const TARGET_PARTITIONS: usize = 4;

/// Where the manual clock starts (µs since the epoch).
const CLOCK_START_US: i64 = 1_700_000_000_000_000;

/// `ADVANCE CLOCK <n> SECONDS`: how far to move the clock, if `sql` says so.
fn clock_advance(sql: &str) -> Option<Result<Duration, TenantError>> {
    let words: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(|w| w.to_ascii_uppercase())
        .collect();
    if words.len() < 2 || words[0] != "ADVANCE" || words[1] != "CLOCK" {
        return None;
    }
    Some(match words.as_slice() {
        [_, _, n, unit] if unit == "SECONDS" || unit == "SECOND" => n
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| TenantError::Syntax(format!("ADVANCE CLOCK: '{n}' is not a number"))),
        _ => Err(TenantError::Syntax(
            "expected ADVANCE CLOCK <n> SECONDS".into(),
        )),
    })
}

impl TenantConnection {
    /// One run: the rendered output, and whether the plan came from the cache.
    async fn run_once(&self, sql: &str) -> Result<(DBOutput<DFColumnType>, bool), TenantError> {
        let query = self.session.sql(sql).await?;
        let from_cache = query.from_cache();
        let schema = query.schema().clone();
        let batches = query.collect().await?;
        let types = convert_schema_to_types(schema.fields());
        let rows = convert_batches(&schema, batches, false)
            .map_err(|e| TenantError::Internal(format!("cannot render results: {e}")))?;
        let output = if rows.is_empty() && types.is_empty() {
            DBOutput::StatementComplete(0)
        } else {
            DBOutput::Rows { types, rows }
        };
        Ok((output, from_cache))
    }
}

/// Whether a record's SQL only reads (so running it twice is harmless).
fn is_query(sql: &str) -> bool {
    let first = sql
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(first.as_str(), "select" | "with" | "values")
}

/// Same columns and the same rows in any order (the record's own sort mode
/// checks the order of the second run, which is the one returned), or both
/// no rows.
fn same_output(a: &DBOutput<DFColumnType>, b: &DBOutput<DFColumnType>) -> bool {
    match (a, b) {
        (
            DBOutput::Rows { types, rows },
            DBOutput::Rows {
                types: types_b,
                rows: rows_b,
            },
        ) => {
            let (mut rows, mut rows_b) = (rows.clone(), rows_b.clone());
            rows.sort();
            rows_b.sort();
            types == types_b && rows == rows_b
        }
        (DBOutput::StatementComplete(x), DBOutput::StatementComplete(y)) => x == y,
        _ => false,
    }
}

#[async_trait]
impl AsyncDB for TenantConnection {
    type Error = SltError;
    type ColumnType = DFColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DFColumnType>, SltError> {
        if let Some(by) = clock_advance(sql) {
            self.clock.advance(by?);
            return Ok(DBOutput::StatementComplete(0));
        }
        let first = self.run_once(sql).await;
        let Some(counts) = self.repeat.as_ref().filter(|_| is_query(sql)) else {
            return first.map(|(output, _)| output).map_err(SltError);
        };
        // A query's first run is planned for its caller alone; the second
        // makes the plan the cache keeps; the third normally runs it.
        let kept = self.run_once(sql).await;
        let second = self.run_once(sql).await;
        counts.repeated.fetch_add(1, Ordering::Relaxed);
        let same_as_first =
            |other: &Result<(DBOutput<DFColumnType>, bool), TenantError>| match (&first, other) {
                (Ok((a, _)), Ok((b, _))) => same_output(a, b),
                (Err(a), Err(b)) => a.to_string() == b.to_string(),
                _ => false,
            };
        let same = same_as_first(&kept)
            && match (&first, &second) {
                (Ok((a, _)), Ok((b, cached))) => {
                    if *cached {
                        counts.from_cache.fetch_add(1, Ordering::Relaxed);
                    }
                    same_output(a, b)
                }
                (Err(a), Err(b)) => a.to_string() == b.to_string(),
                _ => false,
            };
        if !same {
            let show = |r: &Result<(DBOutput<DFColumnType>, bool), TenantError>| match r {
                Ok((DBOutput::Rows { rows, .. }, cached)) => {
                    format!("{rows:?} (from the plan cache: {cached})")
                }
                Ok(_) => "no rows".to_string(),
                Err(e) => e.to_string(),
            };
            return Err(SltError(TenantError::Internal(format!(
                "the second run differs from the first: {} then {}",
                show(&first),
                show(&second)
            ))));
        }
        // The second run (normally from the plan cache) is what the record checks.
        second.map(|(output, _)| output).map_err(SltError)
    }

    fn engine_name(&self) -> &str {
        "tenantfusion"
    }

    /// Sessions hold nothing to release.
    async fn shutdown(&mut self) {}

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

type MakeConn =
    Box<dyn FnMut() -> futures::future::Ready<Result<TenantConnection, SltError>> + Send>;

fn runner_for(
    session: TenantSession,
    repeat: Option<Arc<RepeatCounts>>,
    clock: Arc<ManualClock>,
) -> Runner<TenantConnection, MakeConn> {
    let make: MakeConn = Box::new(move || {
        futures::future::ready(Ok(TenantConnection {
            session: session.clone(),
            repeat: repeat.clone(),
            clock: Arc::clone(&clock),
        }))
    });
    let mut runner = Runner::new(make);
    runner.add_label("tenantfusion");
    runner.add_label("DataFusion");
    runner.with_normalizer(value_normalizer);
    runner.with_validator(df_value_validator);
    runner.with_column_validator(strict_column_validator);
    runner
}

/// Runs every record of one `.slt` file against a fresh engine.
///
/// Returns an error only when the file cannot be read or parsed; failing
/// records are counted in the report.
pub async fn run_file(path: &Path, options: &SltOptions) -> Result<FileReport, String> {
    let records = sqllogictest::parse_file::<DFColumnType>(path)
        .map_err(|e| format!("{}: cannot parse: {e}", path.display()))?;
    // Kept until the file has run.
    let scratch = tempdir_unless(options.server_files.as_deref())?;
    let server_files = match (&options.server_files, &scratch) {
        (Some(dir), _) => dir.clone(),
        (None, Some(scratch)) => scratch.path().to_path_buf(),
        (None, None) => return Err("no server files directory".into()),
    };
    let clock = Arc::new(ManualClock::new(CLOCK_START_US));
    let mut config = EngineConfig::default()
        .with_users_may_create_user_tables(options.user_tables)
        .with_server_files_dir(&server_files)
        .with_clock(Arc::clone(&clock) as Arc<dyn Clock>);
    // DataFusion's planner defaults, and its runner's partition count, so plans
    // read as in DataFusion's own files on every machine.
    config.target_partitions = Some(TARGET_PARTITIONS);
    config.round_robin_repartition = true;
    let test_context = match &options.datafusion_tables {
        Some(test_files) => datafusion_baseline::test_context(path, test_files).await,
        None => None,
    };
    if test_context.is_some() {
        // DataFusion's files name its default catalog and schema.
        config = config
            .with_catalog_name("datafusion")
            .with_default_namespace("public");
    }
    if let Some(ctx) = &test_context {
        for function in datafusion_baseline::test_functions(ctx) {
            config = config.with_scalar_function(function);
        }
    }
    let engine = Engine::new(config).map_err(|e| e.to_string())?;
    if let Some(ctx) = &test_context {
        datafusion_baseline::register_test_tables(&engine, ctx, path).await?;
    }
    let admin = engine.session(UserContext::new(ADMIN_USER, Role::Dba));

    let mut runners: HashMap<String, Runner<TenantConnection, MakeConn>> = HashMap::new();
    // Settings records apply to every connection, including ones opened later.
    let mut settings: Vec<Record<DFColumnType>> = Vec::new();
    let mut report = FileReport::default();
    let repeat = options
        .repeat_queries
        .then(|| Arc::new(RepeatCounts::default()));

    for record in records {
        let (connection, loc) = match Step::of(&record) {
            Step::Check(loc, connection) => (connection.clone(), loc.clone()),
            Step::Stop => break,
            Step::Setting => {
                for runner in runners.values_mut() {
                    let _ = runner.run_async(record.clone()).await;
                }
                settings.push(record);
                continue;
            }
            Step::Other => continue,
        };
        let name = match &connection {
            Connection::Default => String::new(),
            Connection::Named(name) => name.clone(),
        };
        if !runners.contains_key(&name) {
            let session = if name.is_empty() {
                admin.clone()
            } else {
                let role = match engine.users().get(&name) {
                    Some(user) => user.role,
                    None => {
                        engine
                            .users()
                            .create(UserId::new(&name), Role::User, None)
                            .map_err(|e| e.to_string())?;
                        Role::User
                    }
                };
                engine.session(UserContext::new(name.as_str(), role))
            };
            let mut runner = runner_for(session, repeat.clone(), Arc::clone(&clock));
            runner.set_var("SERVER_FILES".into(), server_files.display().to_string());
            for setting in &settings {
                let _ = runner.run_async(setting.clone()).await;
            }
            runners.insert(name.clone(), runner);
        }
        let record = with_default_connection(record);
        let runner = runners.get_mut(&name).ok_or("runner vanished")?;
        let result = runner.run_async(record).await;
        report.records.push(RecordOutcome::new(&loc, result));
    }
    if let Some(counts) = repeat {
        report.repeated = counts.repeated.load(Ordering::Relaxed);
        report.from_cache = counts.from_cache.load(Ordering::Relaxed);
    }
    Ok(report)
}

/// A temporary directory, unless `dir` is given.
fn tempdir_unless(dir: Option<&Path>) -> Result<Option<tempfile::TempDir>, String> {
    match dir {
        Some(_) => Ok(None),
        None => tempfile::tempdir()
            .map(Some)
            .map_err(|e| format!("cannot make a temporary directory: {e}")),
    }
}

/// Each runner has one connection; the record's own name picked the runner.
fn with_default_connection(mut record: Record<DFColumnType>) -> Record<DFColumnType> {
    match &mut record {
        Record::Statement { connection, .. } | Record::Query { connection, .. } => {
            *connection = Connection::Default;
        }
        _ => {}
    }
    record
}

/// Totals over several files.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Records that passed.
    pub passed: usize,
    /// Records (or whole files that could not be read) that failed.
    pub failed: usize,
    /// Queries run again (`repeat_queries`).
    pub repeated: usize,
    /// Of those, last runs whose plan came from the plan cache.
    pub from_cache: usize,
}

/// Runs files, printing one line per failing record; returns the totals.
pub async fn run_files(paths: &[impl AsRef<Path>], options: &SltOptions) -> Summary {
    let mut summary = Summary::default();
    for path in paths {
        match run_file(path.as_ref(), options).await {
            Ok(report) => {
                summary.passed += report.passed();
                summary.repeated += report.repeated;
                summary.from_cache += report.from_cache;
                for failed in report.failures() {
                    summary.failed += 1;
                    println!(
                        "FAIL {}: {}",
                        failed.at,
                        failed.failure.as_deref().unwrap_or("")
                    );
                }
            }
            Err(err) => {
                summary.failed += 1;
                println!("FAIL {err}");
            }
        }
    }
    summary
}

impl std::ops::AddAssign for Summary {
    fn add_assign(&mut self, other: Summary) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.repeated += other.repeated;
        self.from_cache += other.from_cache;
    }
}

impl std::fmt::Display for Summary {
    /// The closing line: `N passed, N failed`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.repeated > 0 {
            write!(
                f,
                "; {} queries repeated, {} last runs from the plan cache",
                self.repeated, self.from_cache
            )?;
        }
        Ok(())
    }
}
