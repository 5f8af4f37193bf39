//! `tenantfusion-slt [--user-tables] [--repeat-queries] FILE.slt...`: runs sqllogictest files
//! against tenantfusion and ends with `N passed, N failed`.

use std::path::PathBuf;
use std::process::ExitCode;

use tenantfusion_sql_tests::{SltOptions, run_files};

const USAGE: &str = "usage: tenantfusion-slt [--user-tables] [--repeat-queries] FILE.slt...";

#[tokio::main]
async fn main() -> ExitCode {
    let mut options = SltOptions::default();
    let mut files = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--user-tables" => options.user_tables = true,
            "--repeat-queries" => options.repeat_queries = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            flag if flag.starts_with('-') => {
                eprintln!("unknown option {flag}\n{USAGE}");
                return ExitCode::from(2);
            }
            file => files.push(PathBuf::from(file)),
        }
    }
    if files.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let summary = run_files(&files, &options).await;
    println!("{summary}");
    if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
