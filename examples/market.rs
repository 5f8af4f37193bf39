//! A stream table fed by a generator source: two users follow different
//! symbols with live queries, and an aggregate reads the last minute per
//! symbol. Every reader shares one ring buffer per symbol.
//!
//! `cargo run -p tenantfusion-examples --example market`

use std::collections::BTreeSet;
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::pretty::pretty_format_batches;
use tenantfusion::{ChangeEvent, Engine, EngineConfig, LiveQuery, Role, UserContext};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::new(EngineConfig::default())?;
    let admin = engine.session(UserContext::new("admin", Role::Dba));
    for sql in [
        "CREATE NAMESPACE market",
        "CREATE SOURCE marketdata TYPE generator WITH (INTERVAL_MS = 10)",
        // AAPL, MSFT and NVDA are held upstream from the start; other
        // symbols only while a live query asks for them.
        "CREATE STREAM TABLE market.ticks \
            (symbol TEXT NOT NULL, price DOUBLE, volume BIGINT, ts TIMESTAMP) \
            WITH (SOURCE = 'marketdata', TOPIC_COLUMN = 'symbol', \
                  TTL_SECONDS = 60, MAX_ROWS_PER_TOPIC = 10000, TOPICS = 'AAPL,MSFT,NVDA')",
        "CREATE USER 'alice'",
        "CREATE USER 'bob'",
    ] {
        admin.sql(sql).await?.collect().await?;
    }

    let alice = engine.session(UserContext::new("alice", Role::User));
    let bob = engine.session(UserContext::new("bob", Role::User));
    let mut apple = alice
        .subscribe("SUBSCRIBE TO market.ticks WHERE symbol = 'AAPL' AND price > 0")
        .await?;
    let mut chips = bob
        .subscribe(
            "SUBSCRIBE TO market.ticks WHERE symbol IN ('NVDA', 'AMD') OPTIONS (LAST_ROWS = 5)",
        )
        .await?;
    let alice_saw = follow("alice", &mut apple, 20).await?;
    let bob_saw = follow("bob", &mut chips, 20).await?;
    assert_eq!(alice_saw, BTreeSet::from(["AAPL".to_string()]));
    assert!(bob_saw.iter().all(|s| s == "NVDA" || s == "AMD"));

    let last_minute = alice
        .sql(
            "SELECT symbol, count(*) AS ticks, round(avg(price), 2) AS avg_price, \
                    sum(volume) AS volume \
             FROM market.ticks \
             WHERE ts >= CAST(now() AS TIMESTAMP) - INTERVAL '1 minute' \
             GROUP BY symbol ORDER BY symbol",
        )
        .await?
        .collect()
        .await?;
    println!(
        "last minute per symbol:\n{}",
        pretty_format_batches(&last_minute)?
    );
    let symbols: BTreeSet<String> = strings(&last_minute, 0).into_iter().collect();
    assert!(symbols.is_superset(&BTreeSet::from(["AAPL".into(), "NVDA".into()])));

    let mine = bob
        .sql("SELECT id, topics, delivered FROM system.live_subscriptions")
        .await?
        .collect()
        .await?;
    println!("bob's live queries:\n{}", pretty_format_batches(&mine)?);
    Ok(())
}

/// Reads `rows` rows of `live` (snapshot first) and returns their symbols.
async fn follow(
    who: &str,
    live: &mut LiveQuery,
    rows: usize,
) -> Result<BTreeSet<String>, Box<dyn std::error::Error>> {
    let mut seen = BTreeSet::new();
    let mut count = 0;
    while count < rows {
        let event = tokio::time::timeout(Duration::from_secs(10), live.recv()).await??;
        let batches = match event.ok_or("the live query ended")? {
            ChangeEvent::Snapshot(batches) => batches,
            ChangeEvent::Insert(batch) => vec![batch],
            // Ticks age out of a stream table without an event; nothing
            // here updates or deletes them.
            ChangeEvent::Delete(_) => continue,
            ChangeEvent::Lagged { missed } => {
                println!("{who}: missed {missed} event(s)");
                continue;
            }
        };
        let symbols = strings(&batches, 0);
        count += symbols.len();
        seen.extend(symbols);
    }
    println!("{who}: {count} live row(s) of {seen:?}");
    Ok(seen)
}

/// The values of column `index` in `batches`, as text.
fn strings(batches: &[RecordBatch], index: usize) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        if let Ok(text) = cast(batch.column(index), &DataType::Utf8) {
            let text = text.as_string::<i32>();
            out.extend((0..text.len()).map(|i| text.value(i).to_string()));
        }
    }
    out
}
