//! `plan_cache`: what reusing plans saves on one user's repeated queries, at
//! the largest user count of the run.

use datafusion::common::ScalarValue;
use tenantfusion::{EngineConfig, PlanCacheConfig, Role, UserContext};

use crate::scan_scaling::{CACHED, PLANNED, QUERIES, latency, loaded_engine};
use crate::{Measurement, Size, run_ours, run_prepared};

/// A query with parameters, for the prepared-statement rows: every run
/// finds ten of the user's 100 rows whatever its values (see [`values`]).
const PREPARED: &str =
    "SELECT id, payload FROM t WHERE id >= $1 AND id < $2 ORDER BY id DESC LIMIT 10";

/// The values of run `n`: a lower bound among the user's ids and an upper
/// bound past them that no run repeats, so each run's text is new (never a
/// text sent before) and each run does the same work.
fn values(n: i64) -> [i64; 2] {
    [n % 50, 1_000 + n]
}

/// [`PREPARED`] with run `n`'s values written in.
fn text(n: i64) -> String {
    let [low, high] = values(n);
    PREPARED
        .replace("$1", &low.to_string())
        .replace("$2", &high.to_string())
}

/// Runs the scenario; returns its rows.
pub async fn plan_cache(size: Size) -> Vec<Measurement> {
    let users = size.user_counts.last().copied().unwrap_or(10);
    let (engine, _) = loaded_engine(users, EngineConfig::default()).await;
    let off = EngineConfig::default().with_plan_cache(PlanCacheConfig::DISABLED);
    let (planned, _) = loaded_engine(users, off).await;
    let target = format!("u{}", users / 2);
    let user = UserContext::new(target.as_str(), Role::User);
    let cached = engine.session(user.clone());
    // DataFusion can split a one-partition scan round-robin to aggregate in
    // parallel (off by default here); for one user's rows that is mostly
    // task-spawning overhead.
    let split = engine.session(user.clone());
    run_ours(
        &split,
        "SET datafusion.optimizer.enable_round_robin_repartition = true",
    )
    .await;
    let planned = planned.session(user);
    let mut out = Vec::new();
    for (name, sql, _) in QUERIES {
        let ours = latency(size, || async {
            run_ours(&cached, sql).await;
        })
        .await;
        let base = latency(size, || async {
            run_ours(&planned, sql).await;
        })
        .await;
        let row = Measurement::latency(
            "plan_cache",
            format!("{name}, {users} users, cached plan vs planned every time"),
            ours,
            base,
        );
        let chart = format!("{name}: one user's query vs number of users");
        out.push(row.on_curve(&chart, "users", users, CACHED, PLANNED));
    }
    let (name, sql, _) = QUERIES[0];
    let ours = latency(size, || async {
        run_ours(&cached, sql).await;
    })
    .await;
    let base = latency(size, || async {
        run_ours(&split, sql).await;
    })
    .await;
    out.push(Measurement::latency(
        "plan_cache",
        format!(
            "{name}, {users} users, cached, round-robin repartition off (default) vs on (session SET)"
        ),
        ours,
        base,
    ));
    // A prepared statement with new values each run: its generic plan is
    // kept and each run's copy given the values, so nothing is planned.
    let prepared = cached.prepare(PREPARED).await.expect("prepare");
    let mut n = 0i64;
    let ours = latency(size, || {
        n += 1;
        let params = values(n).map(ScalarValue::from).to_vec();
        let prepared = &prepared;
        async move {
            run_prepared(prepared, params).await;
        }
    })
    .await;
    let mut n = 0i64;
    let base = latency(size, || {
        n += 1;
        let (planned, sql) = (&planned, text(n));
        async move {
            run_ours(planned, &sql).await;
        }
    })
    .await;
    out.push(Measurement::latency(
        "plan_cache",
        format!("prepared, new values each run, {users} users, vs SQL text planned every time"),
        ours,
        base,
    ));
    // The same text every run: found without parsing (verbatim).
    let hit = text(1);
    let base = latency(size, || async {
        run_ours(&cached, &hit).await;
    })
    .await;
    out.push(Measurement::latency(
        "plan_cache",
        format!("prepared, new values each run, {users} users, vs one SQL text from the cache"),
        ours,
        base,
    ));
    // SQL text with new values written in each run: taken out as
    // parameters (`EngineConfig::auto_parameters`), it runs from one
    // generic plan too, after parsing.
    let mut n = 0i64;
    let texts = latency(size, || {
        n += 1;
        let (cached, sql) = (&cached, text(n));
        async move {
            run_ours(cached, &sql).await;
        }
    })
    .await;
    out.push(Measurement::latency(
        "plan_cache",
        format!("SQL text, new values each run, {users} users, vs one SQL text from the cache"),
        texts,
        base,
    ));
    out
}
