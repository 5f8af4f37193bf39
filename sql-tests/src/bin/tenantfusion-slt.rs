//! `tenantfusion-slt [--user-tables] [--repeat-queries] FILE.slt...`: runs sqllogictest files
//! against tenantfusion and ends with `N passed, N failed`.
//!
//! `tenantfusion-slt --against-datafusion TEST_FILES [--user-tables] FILE.slt...` runs each
//! file on stock DataFusion first and then on tenantfusion, prints both counts per file and
//! every record that passes on DataFusion but not here, and ends with the share of
//! DataFusion's passing records that pass here (`scripts/datafusion-slt.sh` drives it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tenantfusion_sql_tests::{SltOptions, compare_file, run_files};

const USAGE: &str = "usage: tenantfusion-slt [--against-datafusion TEST_FILES] \
                     [--user-tables] [--repeat-queries] FILE.slt...";

#[tokio::main]
async fn main() -> ExitCode {
    let mut options = SltOptions::default();
    let mut files = Vec::new();
    let mut against = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--user-tables" => options.user_tables = true,
            "--repeat-queries" => options.repeat_queries = true,
            "--against-datafusion" => match args.next() {
                Some(dir) => against = Some(PathBuf::from(dir)),
                None => {
                    eprintln!("--against-datafusion needs the test_files directory\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
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
    if let Some(test_files) = against {
        // DataFusion's files read and write under the working directory, and
        // read DataFusion's repository data two levels up (`../../testing`).
        options.server_files = std::env::current_dir()
            .ok()
            .and_then(|dir| dir.ancestors().nth(2).map(Path::to_path_buf));
        options.datafusion_tables = Some(test_files.clone());
        return compare(&test_files, &files, &options).await;
    }
    let summary = run_files(&files, &options).await;
    println!("{summary}");
    if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The `--against-datafusion` run: succeeds when every record that passes on
/// DataFusion passes here too.
async fn compare(test_files: &Path, files: &[PathBuf], options: &SltOptions) -> ExitCode {
    let (mut theirs, mut both, mut records, mut scan_lines) = (0, 0, 0, 0);
    for file in files {
        let name = file.strip_prefix(test_files).unwrap_or(file).display();
        // A panic in either engine ends only that file's run.
        let run = tokio::spawn({
            let (file, test_files, options) =
                (file.clone(), test_files.to_path_buf(), options.clone());
            async move { compare_file(&file, &test_files, &options).await }
        });
        let comparison = match run.await {
            Ok(Ok(comparison)) => comparison,
            Ok(Err(err)) => {
                println!("SKIP {err}");
                continue;
            }
            Err(panic) => {
                println!("SKIP {name}: the run panicked: {panic}");
                continue;
            }
        };
        let only_theirs: Vec<_> = comparison.only_on_datafusion().collect();
        let passing = comparison.passing_on_datafusion();
        println!(
            "FILE {name}: {} records; datafusion {} passed; tenantfusion {} passed; \
             {} pass on datafusion only",
            comparison.datafusion.records.len(),
            passing,
            comparison.tenantfusion.passed(),
            only_theirs.len()
        );
        for record in &only_theirs {
            let why = record.failure.as_deref().unwrap_or_default();
            let scan = if record.scan_lines_only {
                scan_lines += 1;
                " (scan lines only)"
            } else {
                ""
            };
            println!(
                "ONLY-DATAFUSION {}{scan}: {}",
                record.at,
                why.replace('\n', " | ")
            );
        }
        records += comparison.datafusion.records.len();
        theirs += passing;
        both += passing - only_theirs.len();
    }
    let share = |passed: usize| {
        if theirs == 0 {
            100.0
        } else {
            100.0 * passed as f64 / theirs as f64
        }
    };
    println!(
        "TOTAL {records} records; {theirs} pass on datafusion; {both} of them pass on \
         tenantfusion ({:.1}%); {scan_lines} more differ only in their scan lines \
         ({:.1}% with scan lines read alike)",
        share(both),
        share(both + scan_lines)
    );
    if both == theirs {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
