//! `tenantfusion-bench [--quick|--smoke] [--with-postgres] [--scenario NAME]...
//! [--json PATH] [--charts DIR] [--update-doc FILE]`: prints a markdown table
//! of our figures beside their baselines, measured in the same run; writes
//! the same rows as JSON, SVG charts of the scaling curves, and the results
//! section of BENCHMARKS.md when asked.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use tenantfusion::{Role, UserContext};
use tenantfusion_bench::{
    Measurement, Size, concurrent_users, draw_charts, durable_insert, engine_with_tables, http_sql,
    idle_subscriptions, json, live_failover, live_fanout, live_memory, live_query_latency,
    many_durable_tables, markdown, noisy_neighbour, parquet_scan_200k, pgwire, plan_cache,
    point_lookup, postgres_installed, postgres_rls, provider_lookup, results_section,
    session_per_request, storage_scan_scaling, stream_ingest, update_doc, user_scan_scaling,
    write_mix, ws_decode, ws_live,
};

/// Counts allocations, for the allocations-per-call figures.
struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not freed, for the memory figures.
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn live_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed)
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
    "noisy_neighbour",
    "plan_cache",
    "postgres_rls",
    "live_fanout",
    "live_failover",
    "live_memory",
    "stream_ingest",
    "live_query_latency",
    "idle_subscriptions",
    "durable_insert",
    "many_durable_tables",
    "storage_scan_scaling",
    "parquet_scan_200k",
    "point_lookup",
    "write_mix",
    "pgwire",
    "http_sql",
    "ws_live",
    "ws_decode",
];

const USAGE: &str = "usage: tenantfusion-bench [--quick|--smoke] [--with-postgres] \
                     [--scenario NAME]... [--json PATH] [--charts DIR] [--update-doc FILE]";

#[tokio::main]
async fn main() -> ExitCode {
    let mut size = Size::FULL;
    let mut full = true;
    let mut chosen: Vec<String> = Vec::new();
    let mut json_path: Option<String> = None;
    let mut charts_dir: Option<String> = None;
    let mut doc_path: Option<String> = None;
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
            flag @ ("--json" | "--charts" | "--update-doc") => match args.next() {
                Some(path) => match flag {
                    "--json" => json_path = Some(path),
                    "--charts" => charts_dir = Some(path),
                    _ => doc_path = Some(path),
                },
                None => {
                    eprintln!("{flag} needs a path\n{USAGE}");
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
    // PostgreSQL runs when asked for, and in the full run when it is installed.
    let run_postgres = with_postgres || (full && postgres_installed());
    let planned: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| wants(s) && (!matches!(*s, "postgres_rls" | "pgwire") || run_postgres))
        .collect();
    // Drawn on stderr, and only when it is a terminal.
    let progress = ProgressBar::new(planned.len() as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}") {
        progress.set_style(style);
    }
    let step = |name: &str| {
        let done = planned.iter().position(|p| *p == name).unwrap_or(0);
        progress.set_position(done as u64);
        progress.set_message(name.to_string());
    };
    let mut rows: Vec<Measurement> = Vec::new();
    if wants("provider_lookup") {
        step("provider_lookup");
        rows.extend(provider_lookup(size).await);
        let engine = engine_with_tables(100).await;
        let cache = engine.schema_cache();
        let lookups = allocations_per_call(|| {
            std::hint::black_box(cache.get_provider("app", "t42"));
        });
        let sessions = allocations_per_call(|| {
            std::hint::black_box(engine.session(UserContext::new("alice", Role::User)));
        });
        rows.push(Measurement::figure(
            "provider_lookup",
            "allocations per lookup (baseline: per session handle)".into(),
            lookups,
            sessions,
            "allocs",
        ));
    }
    if wants("session_per_request") {
        step("session_per_request");
        rows.extend(session_per_request(size).await);
    }
    if wants("user_scan_scaling") {
        step("user_scan_scaling");
        rows.extend(user_scan_scaling(size).await);
    }
    if wants("concurrent_users") {
        step("concurrent_users");
        rows.extend(concurrent_users(size).await);
    }
    if wants("noisy_neighbour") {
        step("noisy_neighbour");
        rows.extend(noisy_neighbour(size).await);
    }
    if wants("plan_cache") {
        step("plan_cache");
        rows.extend(plan_cache(size).await);
    }
    if planned.contains(&"postgres_rls") {
        step("postgres_rls");
        match postgres_rls(size).await {
            Ok(found) => rows.extend(found),
            Err(err) => {
                eprintln!("postgres_rls: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    if wants("live_fanout") {
        step("live_fanout");
        rows.extend(live_fanout(size).await);
    }
    if wants("live_failover") {
        step("live_failover");
        rows.extend(live_failover(size).await);
    }
    if wants("live_memory") {
        step("live_memory");
        rows.extend(live_memory(size, live_bytes).await);
    }
    if wants("stream_ingest") {
        step("stream_ingest");
        rows.extend(stream_ingest(size).await);
    }
    if wants("live_query_latency") {
        step("live_query_latency");
        rows.extend(live_query_latency(size).await);
    }
    if wants("idle_subscriptions") {
        step("idle_subscriptions");
        rows.extend(idle_subscriptions(size, live_bytes).await);
    }
    if wants("durable_insert") {
        step("durable_insert");
        match durable_insert(size, run_postgres).await {
            Ok(found) => rows.extend(found),
            Err(err) => {
                eprintln!("durable_insert: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    if wants("write_mix") {
        step("write_mix");
        match write_mix(size, run_postgres).await {
            Ok(found) => rows.extend(found),
            Err(err) => {
                eprintln!("write_mix: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    if planned.contains(&"pgwire") {
        step("pgwire");
        match pgwire(size, live_bytes).await {
            Ok(found) => rows.extend(found),
            Err(err) => {
                eprintln!("pgwire: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    if wants("http_sql") {
        step("http_sql");
        match http_sql(size).await {
            Ok(found) => rows.extend(found),
            Err(err) => {
                eprintln!("http_sql: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    if wants("ws_live") {
        step("ws_live");
        match ws_live(size, live_bytes).await {
            Ok(found) => rows.extend(found),
            Err(err) => {
                eprintln!("ws_live: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    if wants("ws_decode") {
        step("ws_decode");
        rows.extend(ws_decode(size).await);
    }
    if wants("many_durable_tables") {
        step("many_durable_tables");
        rows.extend(many_durable_tables(size).await);
    }
    if wants("storage_scan_scaling") {
        step("storage_scan_scaling");
        rows.extend(storage_scan_scaling(size).await);
    }
    if wants("parquet_scan_200k") {
        step("parquet_scan_200k");
        rows.extend(parquet_scan_200k(size).await);
    }
    if wants("point_lookup") {
        step("point_lookup");
        rows.extend(point_lookup(size).await);
    }
    progress.finish_and_clear();
    print!("{}", markdown(&rows));
    if let Some(path) = json_path
        && let Err(err) = std::fs::write(&path, json(&rows))
    {
        eprintln!("cannot write {path}: {err}");
        return ExitCode::FAILURE;
    }
    let mut charts = Vec::new();
    if let Some(dir) = &charts_dir {
        match draw_charts(&rows, std::path::Path::new(dir)) {
            Ok(written) => charts = written,
            Err(err) => {
                eprintln!("{err}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = doc_path {
        let section = results_section(&rows, &charts, std::path::Path::new(&path));
        if let Err(err) = update_doc(std::path::Path::new(&path), &section) {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
