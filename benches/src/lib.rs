//! Benchmark scenarios. Every figure is measured beside its baseline in the
//! same run and reported as a ratio: the machines this runs on are shared and
//! noisy, so absolute times are only indicative.

mod charts;
mod concurrency;
mod live;
mod plan_reuse;
mod postgres;
mod scan_scaling;
mod storage;
mod streams;
mod web;
mod wire;
mod write_mix;

pub use charts::{Curve, draw_charts};
pub use concurrency::{concurrent_users, noisy_neighbour};
pub use live::{live_failover, live_fanout, live_memory, ws_decode};
pub use plan_reuse::plan_cache;
pub use postgres::{postgres_installed, postgres_rls};
pub use scan_scaling::{Stats, latency, loaded_engine, user_scan_scaling};
pub use storage::{
    durable_insert, many_durable_tables, parquet_scan_200k, point_lookup, storage_scan_scaling,
};
pub use streams::{idle_subscriptions, live_query_latency, stream_ingest};
pub use web::{http_sql, ws_live};
pub use wire::pgwire;
pub use write_mix::write_mix;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use tenantfusion::{
    Engine, EngineConfig, PreparedStatement, Role, TableId, TenantSession, UserContext,
};
use tenantfusion_tables::{MemoryPartitionStore, UserTableProvider};

/// Runs one statement through tenantfusion to the last row (benchmarks
/// panic on errors: a failing scenario must not print a figure).
pub async fn run_ours(session: &TenantSession, sql: &str) -> Vec<RecordBatch> {
    session
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run")
}

/// Runs a prepared statement of ours with `params` to the last row
/// (panics on errors, as [`run_ours`]).
pub async fn run_prepared(
    statement: &PreparedStatement,
    params: Vec<datafusion::common::ScalarValue>,
) -> Vec<RecordBatch> {
    statement
        .execute(params)
        .await
        .expect("execute")
        .collect()
        .await
        .expect("run")
}

/// Runs one statement through a plain DataFusion context to the last row.
pub async fn run_datafusion(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run")
}

/// One row of the results table.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Scenario name (stable, so results can be tracked over time).
    pub scenario: String,
    /// What was measured.
    pub metric: String,
    /// Our figure.
    pub ours: f64,
    /// The baseline's figure, measured in the same run.
    pub baseline: f64,
    /// Unit of both figures.
    pub unit: String,
    /// 95th percentiles, where the figures are latencies.
    pub p95: Option<(f64, f64)>,
    /// Where the row is drawn by [`draw_charts`], if it is part of a curve.
    pub curve: Option<Curve>,
}

impl Measurement {
    /// A row of two plain figures (not latencies, not on a chart).
    pub fn figure(scenario: &str, metric: String, ours: f64, baseline: f64, unit: &str) -> Self {
        Self {
            scenario: scenario.into(),
            metric,
            ours,
            baseline,
            unit: unit.into(),
            p95: None,
            curve: None,
        }
    }

    /// A latency row: medians as the figures, with their 95th percentiles.
    pub fn latency(scenario: &str, metric: String, ours: Stats, baseline: Stats) -> Self {
        Self {
            scenario: scenario.into(),
            metric,
            ours: ours.median,
            baseline: baseline.median,
            unit: "ns".into(),
            p95: Some((ours.p95, baseline.p95)),
            curve: None,
        }
    }

    /// This row drawn on `chart` at `x`, its figures named `ours` and `baseline`.
    pub fn on_curve(
        mut self,
        chart: &str,
        x_label: &str,
        x: usize,
        ours: &str,
        baseline: &str,
    ) -> Self {
        self.curve = Some(Curve {
            chart: chart.into(),
            x_label: x_label.into(),
            x: x as f64,
            ours: ours.into(),
            baseline: baseline.into(),
        });
        self
    }

    /// `ours / baseline`: below 1 means we are faster (or smaller).
    pub fn ratio(&self) -> f64 {
        if self.baseline == 0.0 {
            f64::NAN
        } else {
            self.ours / self.baseline
        }
    }
}

/// Sizes: `quick` keeps every scenario to seconds.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Timed repetitions per sample.
    pub iterations: usize,
    /// Samples (the median is reported).
    pub samples: usize,
    /// Table counts for `provider_lookup`.
    pub table_counts: &'static [usize],
    /// User counts for `user_scan_scaling` (100 rows each).
    pub user_counts: &'static [usize],
    /// Statements per task in `concurrent_users`.
    pub statements_per_task: usize,
    /// How long [`latency`] keeps sampling past `samples`.
    pub latency_budget: Duration,
    /// Subscribers in `live_fanout` and `live_memory`.
    pub live_subscribers: usize,
    /// Topics in `live_failover` and `live_memory`.
    pub live_topics: usize,
    /// How long `live_fanout`, `stream_ingest` and `live_query_latency` run each side.
    pub live_run: Duration,
    /// Topics fed every millisecond in `stream_ingest`.
    pub stream_topics: usize,
    /// Single-row appends timed in `stream_ingest`.
    pub stream_appends: usize,
    /// Users in `idle_subscriptions`.
    pub idle_users: usize,
    /// Live queries in `idle_subscriptions` (at most ten per user).
    pub idle_queries: usize,
    /// Users of the big side of `storage_scan_scaling` (100 rows each).
    pub storage_users: usize,
    /// Rows per segment in `parquet_scan_200k` (20 segments).
    pub segment_rows: usize,
    /// Durable tables of the big side of `many_durable_tables`.
    pub log_tables: usize,
    /// How long each side of `pgwire`'s concurrent runs lasts.
    pub wire_run: Duration,
    /// Idle connections opened to measure `pgwire`'s memory per connection.
    pub wire_idle: usize,
    /// Topics of the one subscription `live_memory` times.
    pub subscribe_topics: usize,
    /// Other users' sockets open in `ws_live`.
    pub ws_sockets: usize,
    /// Live queries on each of them.
    pub ws_subscriptions_per_socket: usize,
    /// Rows sent to each side of `ws_decode`.
    pub ws_messages: usize,
}

impl Size {
    /// The full run.
    pub const FULL: Size = Size {
        iterations: 2_000,
        samples: 15,
        table_counts: &[100, 100_000],
        user_counts: &[10, 1_000, 10_000, 100_000],
        statements_per_task: 200,
        latency_budget: Duration::from_millis(600),
        live_subscribers: 1_000,
        live_topics: 10_000,
        live_run: Duration::from_secs(5),
        stream_topics: 2_000,
        stream_appends: 2_000_000,
        idle_users: 10_000,
        idle_queries: 100_000,
        storage_users: 100_000,
        segment_rows: 10_000,
        log_tables: 10_000,
        wire_run: Duration::from_secs(5),
        wire_idle: 200,
        subscribe_topics: 1_000_000,
        ws_sockets: 100,
        ws_subscriptions_per_socket: 100,
        ws_messages: 400_000,
    };
    /// Reduced sizes for `--quick`.
    pub const QUICK: Size = Size {
        iterations: 500,
        samples: 7,
        table_counts: &[100, 10_000],
        user_counts: &[10, 1_000, 10_000],
        statements_per_task: 40,
        latency_budget: Duration::from_millis(600),
        live_subscribers: 200,
        live_topics: 2_000,
        live_run: Duration::from_secs(2),
        stream_topics: 500,
        stream_appends: 500_000,
        idle_users: 2_000,
        idle_queries: 20_000,
        storage_users: 10_000,
        segment_rows: 10_000,
        log_tables: 2_000,
        wire_run: Duration::from_secs(2),
        wire_idle: 100,
        subscribe_topics: 100_000,
        ws_sockets: 50,
        ws_subscriptions_per_socket: 50,
        ws_messages: 100_000,
    };
    /// Tiny sizes for the smoke test.
    pub const SMOKE: Size = Size {
        iterations: 5,
        samples: 3,
        table_counts: &[10],
        user_counts: &[10],
        statements_per_task: 2,
        latency_budget: Duration::from_millis(20),
        live_subscribers: 10,
        live_topics: 400,
        live_run: Duration::from_millis(300),
        stream_topics: 20,
        stream_appends: 2_000,
        idle_users: 20,
        idle_queries: 100,
        storage_users: 30,
        segment_rows: 100,
        log_tables: 40,
        wire_run: Duration::from_millis(200),
        wire_idle: 8,
        subscribe_topics: 1_000,
        ws_sockets: 3,
        ws_subscriptions_per_socket: 4,
        ws_messages: 500,
    };
}

/// Median nanoseconds per call of `f` over `size.samples` samples, after one
/// untimed warm-up sample.
pub fn median_ns(size: Size, mut f: impl FnMut()) -> f64 {
    for _ in 0..size.iterations {
        f();
    }
    let mut samples: Vec<f64> = (0..size.samples)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..size.iterations {
                f();
            }
            start.elapsed().as_nanos() as f64 / size.iterations as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("payload", DataType::Utf8, true),
    ]))
}

/// An engine with `tables` user tables `app.t0..`.
pub async fn engine_with_tables(tables: usize) -> Engine {
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let admin = engine.session(UserContext::new("admin", Role::Dba));
    admin.sql("CREATE NAMESPACE app").await.expect("namespace");
    for t in 0..tables {
        admin
            .sql(&format!(
                "CREATE TABLE app.t{t} (id BIGINT NOT NULL, payload TEXT)"
            ))
            .await
            .expect("table");
    }
    engine
}

/// `provider_lookup`: `SchemaCache::get_provider` vs building a provider per
/// request (the pattern one-provider-per-table replaces). "hot" looks up one
/// table repeatedly (in cache); "random" strides over all tables, so at
/// 100,000 tables each lookup misses the CPU caches.
pub async fn provider_lookup(size: Size) -> Vec<Measurement> {
    let mut out = Vec::new();
    for &tables in size.table_counts {
        let engine = engine_with_tables(tables).await;
        let cache = Arc::clone(engine.schema_cache());
        let names: Vec<String> = (0..tables).map(|t| format!("t{t}")).collect();
        let hot = median_ns(size, || {
            black_box(cache.get_provider(black_box("app"), black_box("t0")));
        });
        let mut i = 0usize;
        let random = median_ns(size, || {
            i = (i + 7919) % tables;
            black_box(cache.get_provider("app", &names[i]));
        });
        // As a statement looks its tables up: the names are in hand (hot),
        // the tables' entries are not. Each name is written into one reused
        // buffer; `borrowed` leaves the provider's reference count alone.
        let mut name = String::new();
        let mut cold = |borrow: bool| {
            median_ns(size, || {
                use std::fmt::Write;
                i = (i + 7919) % tables;
                name.clear();
                write!(name, "t{i}").expect("name");
                // What the caller gets: the provider (an address only, so
                // the figure is the lookup's, not the use's).
                let address = |p: &Arc<dyn tenantfusion::BaseTableProvider>| {
                    Arc::as_ptr(p) as *const () as usize
                };
                match borrow {
                    true => black_box(cache.with_provider("app", &name, address)),
                    false => black_box(cache.get_provider("app", &name).map(|p| address(&p))),
                };
            })
        };
        let (hot_name, borrowed) = (cold(false), cold(true));
        let floor = memory_latency_ns(size, tables);
        let schema = schema();
        let baseline = median_ns(size, || {
            i = (i + 7919) % tables;
            black_box(UserTableProvider::new_user(
                TableId::new("app", names[i].as_str()),
                Arc::clone(&schema),
                Arc::new(MemoryPartitionStore::new()),
            ));
        });
        for (what, ours) in [
            ("random lookup, name in hand", hot_name),
            (
                "random borrowing lookup (with_provider), name in hand",
                borrowed,
            ),
        ] {
            out.push(Measurement::figure(
                "provider_lookup",
                format!(
                    "{what}, vs one dependent random read of as many cache lines, {tables} tables"
                ),
                ours,
                floor,
                "ns",
            ));
        }
        for (access, ours) in [("hot", hot), ("random", random)] {
            let row = Measurement::figure(
                "provider_lookup",
                format!("{access} lookup vs new provider, {tables} tables"),
                ours,
                baseline,
                "ns",
            );
            out.push(row.on_curve(
                "provider lookup vs number of tables",
                "tables",
                tables,
                &format!("SchemaCache::get_provider, {access}"),
                "new provider per request",
            ));
        }
    }
    out
}

/// The floor under a random lookup among `lines` entries: one read of a
/// random 64-byte line out of `lines` of them, each read's address taken
/// from the read before (a single random cycle through all lines), so no
/// two reads overlap, as no two of a statement's dependent steps do. A
/// lookup cannot cost less than the one line holding its entry; at 100,000
/// tables that line is rarely in the CPU's caches or its TLB.
pub fn memory_latency_ns(size: Size, lines: usize) -> f64 {
    let lines = lines.max(2);
    // The lines in a shuffled order (a Fisher-Yates shuffle driven by an
    // LCG: reproducible, no dependency), each pointing at the next.
    let mut order: Vec<usize> = (0..lines).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for k in (1..lines).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        order.swap(k, (state >> 33) as usize % (k + 1));
    }
    let mut next = vec![[0usize; 8]; lines];
    for k in 0..lines {
        next[order[k]][0] = order[(k + 1) % lines];
    }
    let mut at = 0;
    median_ns(size, || {
        at = next[at][0];
        black_box(at);
    })
}

/// `session_per_request`: our per-request session vs a fresh DataFusion
/// `SessionContext` with the tables registered.
pub async fn session_per_request(size: Size) -> Vec<Measurement> {
    let tables = 10;
    let engine = engine_with_tables(tables).await;
    let providers: Vec<_> = (0..tables)
        .map(|t| {
            engine
                .schema_cache()
                .get_provider("app", &format!("t{t}"))
                .expect("table")
        })
        .collect();
    let mut u = 0usize;
    let ours = median_ns(size, || {
        u += 1;
        black_box(engine.session(UserContext::new(format!("user{}", u % 100_000), Role::User)));
    });
    let baseline = median_ns(size, || {
        let ctx = SessionContext::new();
        for (t, provider) in providers.iter().enumerate() {
            ctx.register_table(format!("t{t}"), Arc::clone(provider) as _)
                .expect("register");
        }
        black_box(ctx);
    });
    // The query path itself is measured by `user_scan_scaling`, against
    // DataFusion's full SQL path on a MemTable.
    vec![Measurement::figure(
        "session_per_request",
        "create session vs SessionContext::new() + 10 tables".into(),
        ours,
        baseline,
        "ns",
    )]
}

/// The results as a JSON array of objects with the table's fields (and
/// `ours_p95`/`baseline_p95` where measured).
pub fn json(rows: &[Measurement]) -> String {
    fn text(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }
    fn number(x: f64) -> String {
        if x.is_finite() {
            format!("{x}")
        } else {
            "null".to_string()
        }
    }
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            let mut fields = vec![
                format!("\"scenario\": {}", text(&r.scenario)),
                format!("\"metric\": {}", text(&r.metric)),
                format!("\"ours\": {}", number(r.ours)),
                format!("\"baseline\": {}", number(r.baseline)),
                format!("\"ratio\": {}", number(r.ratio())),
                format!("\"unit\": {}", text(&r.unit)),
            ];
            if let Some((ours, base)) = r.p95 {
                fields.push(format!("\"ours_p95\": {}", number(ours)));
                fields.push(format!("\"baseline_p95\": {}", number(base)));
            }
            format!("  {{{}}}", fields.join(", "))
        })
        .collect();
    format!("[\n{}\n]\n", items.join(",\n"))
}

/// Marks the start of the generated part of BENCHMARKS.md.
pub const DOC_START: &str = "<!-- results:start (written by tenantfusion-bench --update-doc) -->";
/// Marks its end.
pub const DOC_END: &str = "<!-- results:end -->";

/// The generated part of BENCHMARKS.md: the machine, the table and the
/// charts (linked relative to the document at `doc`).
pub fn results_section(
    rows: &[Measurement],
    charts: &[std::path::PathBuf],
    doc: &std::path::Path,
) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = format!(
        "Machine: {cpu}, {cores} cores available. Release build (`codegen-units = 16`, no LTO).\n\n"
    );
    out.push_str(&markdown(rows));
    let base = doc.parent().unwrap_or(std::path::Path::new(""));
    for chart in charts {
        let link = chart.strip_prefix(base).unwrap_or(chart);
        let name = chart
            .file_stem()
            .map_or(String::new(), |s| s.to_string_lossy().replace('_', " "));
        out.push_str(&format!("\n![{name}]({})\n", link.display()));
    }
    out
}

/// Replaces the text between [`DOC_START`] and [`DOC_END`] in `doc` with
/// `section`; the hand-written rest of the document is kept.
pub fn update_doc(doc: &std::path::Path, section: &str) -> Result<(), String> {
    let text =
        std::fs::read_to_string(doc).map_err(|e| format!("cannot read {}: {e}", doc.display()))?;
    let (Some(start), Some(end)) = (text.find(DOC_START), text.find(DOC_END)) else {
        return Err(format!(
            "{} has no {DOC_START} ... {DOC_END} markers",
            doc.display()
        ));
    };
    if end < start {
        return Err(format!(
            "{}: the end marker comes before the start marker",
            doc.display()
        ));
    }
    let updated = format!("{}{DOC_START}\n{section}{}", &text[..start], &text[end..]);
    std::fs::write(doc, updated).map_err(|e| format!("cannot write {}: {e}", doc.display()))
}

/// The results as a markdown table.
pub fn markdown(rows: &[Measurement]) -> String {
    let mut s = String::from(
        "| scenario | metric | ours | baseline | ratio | unit |\n|---|---|---:|---:|---:|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.3} | {} |\n",
            r.scenario,
            r.metric,
            r.ours,
            r.baseline,
            r.ratio(),
            r.unit
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scenarios_produce_figures() {
        let mut rows = provider_lookup(Size::SMOKE).await;
        rows.extend(session_per_request(Size::SMOKE).await);
        assert_eq!(
            rows.len(),
            5,
            "two lookups by hand-held name, hot and random lookups, one session row"
        );
        for r in &rows {
            assert!(r.ours > 0.0 && r.baseline > 0.0, "{r:?}");
        }
        let table = markdown(&rows);
        assert!(table.contains("| provider_lookup |"), "{table}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_scenarios_produce_figures() {
        let fanout = live_fanout(Size::SMOKE).await;
        assert_eq!(fanout.len(), 5);
        assert!(
            fanout[0].ours > 0.0 && fanout[0].baseline > 0.0,
            "{:?}",
            fanout[0]
        );
        assert_eq!(fanout[4].ours, 1.0, "one shared upstream connection");
        let failover = live_failover(Size::SMOKE).await;
        assert_eq!(failover[0].ours, 2.0, "400 topics at 200 per connection");
        assert_eq!(failover[2].ours, 0.0, "nothing lost outside the gaps");
        // Without a counting allocator the memory figures are zero, but the
        // scenario runs through.
        assert_eq!(live_memory(Size::SMOKE, || 0).await.len(), 4);
        // Checks inside: every row arrives both ways.
        let decode = ws_decode(Size::SMOKE).await;
        assert_eq!(decode.len(), 2);
        for r in &decode {
            assert!(r.ours > 0.0 && r.baseline > 0.0, "{r:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream_scenarios_produce_figures() {
        let ingest = stream_ingest(Size::SMOKE).await;
        assert_eq!(ingest.len(), 2);
        for r in &ingest {
            assert!(r.ours > 0.0 && r.baseline > 0.0, "{r:?}");
        }
        // Checks inside: bob's query stays quiet while alice inserts.
        let latency = live_query_latency(Size::SMOKE).await;
        assert_eq!(latency.len(), 4);
        for r in &latency {
            assert!(r.ours > 0.0 && r.baseline > 0.0, "{r:?}");
        }
        // Checks inside: an insert reaches its user's query only. Without a
        // counting allocator the memory figures are zero.
        let idle = idle_subscriptions(Size::SMOKE, || 0).await;
        assert!(idle[0].ours > 0.0, "{:?}", idle[0]);
        assert_eq!(idle[1].ours, 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn storage_scenarios_produce_figures() {
        // Checks inside: every acknowledged row is in the table, and each
        // INSERT took the path it was timed on. PostgreSQL's side runs in
        // the bench's own smoke run (`.ci/run`), which installs it.
        let mut rows = durable_insert(Size::SMOKE, false).await.unwrap();
        assert_eq!(rows.len(), 9);
        // Checks inside: every append is in its table's log. (The thread
        // figure is checked by the store's own test: tests running beside
        // this one start and stop committers too.)
        let many = many_durable_tables(Size::SMOKE).await;
        assert_eq!(many.len(), 3);
        assert!(
            many[0].ours > 0.0 && many[0].baseline > 0.0,
            "{:?}",
            many[0]
        );
        // Checks inside: the user's query answers the same at both sizes,
        // and both readers of the segments return the same rows.
        let scaling = storage_scan_scaling(Size::SMOKE).await;
        assert_eq!(scaling.len(), 2);
        rows.extend(scaling);
        let parquet = parquet_scan_200k(Size::SMOKE).await;
        assert_eq!(parquet.len(), 3);
        rows.extend(parquet);
        // Checks inside: one row found by key, a flushed key refused again.
        let lookup = point_lookup(Size::SMOKE).await;
        assert_eq!(lookup.len(), 2);
        rows.extend(lookup);
        // Checks inside: every change by key changed exactly one row.
        let mix = write_mix(Size::SMOKE, false).await.unwrap();
        assert_eq!(mix.len(), 4);
        rows.extend(mix);
        for r in &rows {
            assert!(r.ours > 0.0 && r.baseline > 0.0, "{r:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scaling_and_concurrency_produce_figures() {
        let rows = user_scan_scaling(Size::SMOKE).await;
        assert_eq!(
            rows.len(),
            4,
            "two queries x two baselines at one user count"
        );
        let rows_c = concurrent_users(Size::SMOKE).await;
        assert_eq!(rows_c.len(), 2);
        for r in rows.iter().chain(&rows_c) {
            assert!(r.ours > 0.0 && r.baseline > 0.0, "{r:?}");
        }
        let out = json(&rows);
        assert!(
            out.starts_with("[\n  {\"scenario\": \"user_scan_scaling\""),
            "{out}"
        );
        assert!(out.contains("\"ours_p95\": "), "{out}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plan_cache_rows_compare_cached_with_planned() {
        let rows = plan_cache(Size::SMOKE).await;
        assert_eq!(
            rows.len(),
            6,
            "two queries, round robin off, prepared twice, text with new values"
        );
        for r in &rows {
            assert!(r.ours > 0.0 && r.baseline > 0.0, "{r:?}");
        }
        assert!(rows[0].curve.is_some() && rows[5].curve.is_none());
    }

    #[test]
    fn update_doc_replaces_only_the_marked_section() {
        let path = std::env::temp_dir().join(format!("tf-doc-{}.md", std::process::id()));
        std::fs::write(
            &path,
            format!("# Intro\n{DOC_START}\nold\n{DOC_END}\n# After\n"),
        )
        .unwrap();
        update_doc(&path, "new table\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("# Intro\n{DOC_START}\nnew table\n{DOC_END}\n# After\n")
        );
        std::fs::write(&path, "no markers").unwrap();
        assert!(update_doc(&path, "x").is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn json_escapes_text() {
        let row = Measurement::figure("s", "a \"quoted\" \\ name".into(), 1.0, 0.0, "ns");
        let out = json(&[row]);
        assert!(out.contains(r#""metric": "a \"quoted\" \\ name""#), "{out}");
        assert!(out.contains(r#""ratio": null"#), "{out}");
    }
}
