//! The sqllogictest runner of tenantfusion.
//!
//! `connection NAME` records run as the user `NAME` (role `user`, unless the
//! file created that user with another role first); records without one run
//! as a built-in administrator (`admin`, role `dba`). Output is normalised
//! exactly as DataFusion's own sqllogictest driver does (its public
//! `convert_batches` and validators are reused), so DataFusion's `.slt` files
//! read the same here.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use datafusion_sqllogictest::{
    DFColumnType, convert_batches, convert_schema_to_types, df_value_validator, value_normalizer,
};
use sqllogictest::{AsyncDB, Connection, DBOutput, Record, Runner, strict_column_validator};
use tenantfusion::{Engine, EngineConfig, Role, TenantError, TenantSession, UserContext, UserId};

/// The name of the built-in administrator that runs records without a `connection`.
pub const ADMIN_USER: &str = "admin";

/// How to run a file.
#[derive(Debug, Clone, Default)]
pub struct SltOptions {
    /// Let plain `CREATE TABLE` (also `... AS SELECT/VALUES`) by any connection
    /// create a user table whose rows belong to that connection's user, so
    /// DataFusion's own `.slt` files run against tenantfusion's providers.
    pub user_tables: bool,
}

/// The outcome of one file.
#[derive(Debug, Default)]
pub struct FileReport {
    /// Statement and query records that passed.
    pub passed: usize,
    /// Records that failed, one line each (`file:line: what differed`).
    pub failures: Vec<String>,
}

/// One connection of a test file: a session as one user.
pub struct TenantConnection {
    session: TenantSession,
}

#[async_trait]
impl AsyncDB for TenantConnection {
    type Error = TenantError;
    type ColumnType = DFColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DFColumnType>, TenantError> {
        let query = self.session.sql(sql).await?;
        let schema = query.schema().clone();
        let batches = query.collect().await?;
        let types = convert_schema_to_types(schema.fields());
        let rows = convert_batches(&schema, batches, false)
            .map_err(|e| TenantError::Internal(format!("cannot render results: {e}")))?;
        if rows.is_empty() && types.is_empty() {
            Ok(DBOutput::StatementComplete(0))
        } else {
            Ok(DBOutput::Rows { types, rows })
        }
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
    Box<dyn FnMut() -> futures::future::Ready<Result<TenantConnection, TenantError>> + Send>;

fn runner_for(session: TenantSession) -> Runner<TenantConnection, MakeConn> {
    let make: MakeConn = Box::new(move || {
        futures::future::ready(Ok(TenantConnection {
            session: session.clone(),
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
    let config = EngineConfig::default().with_users_may_create_user_tables(options.user_tables);
    let engine = Engine::new(config).map_err(|e| e.to_string())?;
    let admin = engine.session(UserContext::new(ADMIN_USER, Role::Dba));

    let mut runners: HashMap<String, Runner<TenantConnection, MakeConn>> = HashMap::new();
    // Settings records apply to every connection, including ones opened later.
    let mut settings: Vec<Record<DFColumnType>> = Vec::new();
    let mut report = FileReport::default();

    for record in records {
        let (connection, loc) = match &record {
            Record::Statement {
                connection, loc, ..
            }
            | Record::Query {
                connection, loc, ..
            } => (connection.clone(), loc.clone()),
            Record::Halt { .. } => break,
            Record::Control(_) | Record::HashThreshold { .. } => {
                for runner in runners.values_mut() {
                    let _ = runner.run_async(record.clone()).await;
                }
                settings.push(record);
                continue;
            }
            _ => continue,
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
                            .create(UserId::new(&name), Role::User)
                            .map_err(|e| e.to_string())?;
                        Role::User
                    }
                };
                engine.session(UserContext::new(name.as_str(), role))
            };
            let mut runner = runner_for(session);
            for setting in &settings {
                let _ = runner.run_async(setting.clone()).await;
            }
            runners.insert(name.clone(), runner);
        }
        let record = with_default_connection(record);
        let runner = runners.get_mut(&name).ok_or("runner vanished")?;
        match runner.run_async(record).await {
            Ok(_) => report.passed += 1,
            Err(err) => report.failures.push(format!(
                "{}:{}: {}",
                loc.file(),
                loc.line(),
                err.kind().to_string().trim_end()
            )),
        }
    }
    Ok(report)
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
}

/// Runs files, printing one line per failing record; returns the totals.
pub async fn run_files(paths: &[impl AsRef<Path>], options: &SltOptions) -> Summary {
    let mut summary = Summary::default();
    for path in paths {
        match run_file(path.as_ref(), options).await {
            Ok(report) => {
                summary.passed += report.passed;
                summary.failed += report.failures.len();
                for failure in report.failures {
                    println!("FAIL {failure}");
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

impl std::fmt::Display for Summary {
    /// The closing line: `N passed, N failed`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)
    }
}
