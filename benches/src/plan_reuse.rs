//! `plan_cache`: what reusing plans saves on one user's repeated queries, at
//! the largest user count of the run.

use datafusion::common::ScalarValue;
use tenantfusion::{EngineConfig, PlanCacheConfig, Role, UserContext};

use crate::scan_scaling::{CACHED, PLANNED, QUERIES, latency, loaded_engine};
use crate::{Measurement, Size, run_ours};

/// A query with a parameter, for the prepared-statement rows.
const PREPARED: &str = "SELECT id, payload FROM t WHERE id >= $1 ORDER BY id DESC LIMIT 10";

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
    // A prepared statement with a new value each run: its generic plan is
    // kept and each run's copy given the value, so nothing is planned.
    let prepared = cached.prepare(PREPARED).await.expect("prepare");
    let mut value = 0i64;
    let mut new_value = || {
        value += 1;
        vec![ScalarValue::Int64(Some(value))]
    };
    let ours = latency(size, || {
        let params = new_value();
        let prepared = &prepared;
        async move {
            prepared
                .execute(params)
                .await
                .expect("execute")
                .collect()
                .await
                .expect("run");
        }
    })
    .await;
    let mut text_value = 0i64;
    let base = latency(size, || {
        text_value += 1;
        let sql = PREPARED.replace("$1", &text_value.to_string());
        let planned = &planned;
        async move {
            run_ours(planned, &sql).await;
        }
    })
    .await;
    out.push(Measurement::latency(
        "plan_cache",
        format!("prepared, new value each run, {users} users, vs SQL text planned every time"),
        ours,
        base,
    ));
    let hit = PREPARED.replace("$1", "1");
    let base = latency(size, || async {
        run_ours(&cached, &hit).await;
    })
    .await;
    out.push(Measurement::latency(
        "plan_cache",
        format!("prepared, new value each run, {users} users, vs one SQL text from the cache"),
        ours,
        base,
    ));
    // The same as SQL text with the value written in: taken out as a
    // parameter (`EngineConfig::auto_parameters`), it runs from one
    // generic plan too.
    let mut text_value = 0i64;
    let text = latency(size, || {
        text_value += 1;
        let sql = PREPARED.replace("$1", &text_value.to_string());
        let cached = &cached;
        async move {
            run_ours(cached, &sql).await;
        }
    })
    .await;
    out.push(Measurement::latency(
        "plan_cache",
        format!("SQL text, new value each run, {users} users, vs one SQL text from the cache"),
        text,
        base,
    ));
    out
}
