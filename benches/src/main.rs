//! `tenantfusion-bench [--quick] [--scenario NAME]... [--json PATH]`: prints
//! a markdown table of our figures beside their baselines, measured in the
//! same run, and writes the same rows as JSON when asked.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use tenantfusion::{Role, UserContext};
use tenantfusion_bench::{
    Measurement, Size, concurrent_users, engine_with_tables, json, markdown, postgres_installed,
    postgres_rls, provider_lookup, session_per_request, user_scan_scaling,
};

/// Counts allocations, for the allocations-per-call figures.
struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations per call of `f`, averaged over 10,000 calls.
fn allocations_per_call(mut f: impl FnMut()) -> f64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..10_000 {
        f();
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / 10_000.0
}

const SCENARIOS: &[&str] = &[
    "provider_lookup",
    "session_per_request",
    "user_scan_scaling",
    "concurrent_users",
    "postgres_rls",
];

const USAGE: &str = "usage: tenantfusion-bench [--quick|--smoke] [--with-postgres] [--scenario NAME]... [--json PATH]";

#[tokio::main]
async fn main() -> ExitCode {
    let mut size = Size::FULL;
    let mut full = true;
    let mut chosen: Vec<String> = Vec::new();
    let mut json_path: Option<String> = None;
    let mut with_postgres = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => (size, full) = (Size::QUICK, false),
            "--smoke" => (size, full) = (Size::SMOKE, false),
            "--with-postgres" => with_postgres = true,
            "--scenario" => match args.next() {
                Some(name) if SCENARIOS.contains(&name.as_str()) => chosen.push(name),
                other => {
                    eprintln!(
                        "unknown scenario {other:?}; known: {}",
                        SCENARIOS.join(", ")
                    );
                    return ExitCode::from(2);
                }
            },
            "--json" => match args.next() {
                Some(path) => json_path = Some(path),
                None => {
                    eprintln!("--json needs a path\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("unknown argument {other}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let wants = |name: &str| chosen.is_empty() || chosen.iter().any(|c| c == name);
    let mut rows: Vec<Measurement> = Vec::new();
    if wants("provider_lookup") {
        rows.extend(provider_lookup(size).await);
        let engine = engine_with_tables(100).await;
        let cache = engine.schema_cache();
        let lookups = allocations_per_call(|| {
            std::hint::black_box(cache.get_provider("app", "t42"));
        });
        let sessions = allocations_per_call(|| {
            std::hint::black_box(engine.session(UserContext::new("alice", Role::User)));
        });
        rows.push(Measurement {
            scenario: "provider_lookup".into(),
            metric: "allocations per lookup (baseline: per session handle)".into(),
            ours: lookups,
            baseline: sessions,
            unit: "allocs".into(),
            p95: None,
        });
    }
    if wants("session_per_request") {
        rows.extend(session_per_request(size).await);
    }
    if wants("user_scan_scaling") {
        rows.extend(user_scan_scaling(size).await);
    }
    if wants("concurrent_users") {
        rows.extend(concurrent_users(size).await);
    }
    // PostgreSQL runs when asked for, and in the full run when it is installed.
    if wants("postgres_rls") && (with_postgres || (full && postgres_installed())) {
        match postgres_rls(size).await {
            Ok(found) => rows.extend(found),
            Err(err) => {
                eprintln!("postgres_rls: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{}", markdown(&rows));
    if let Some(path) = json_path
        && let Err(err) = std::fs::write(&path, json(&rows))
    {
        eprintln!("cannot write {path}: {err}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
