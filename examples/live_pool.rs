//! The live provider pool from its example configuration: two subscribers
//! share one generator connection; a third asks for too little queue and
//! is told how much it missed.
//!
//! `cargo run -p tenantfusion-examples --example live_pool`

use std::time::Duration;

use tenantfusion_live::{LiveConfig, LiveEvent, Request, SourceKind, SubscribeOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/tenantfusion-live/config/example.toml"
    );
    let pool = LiveConfig::load(path)?.build()?;
    let ticks = |topics: &'static [&'static str]| Request {
        kind: Some(SourceKind::Generator),
        topics,
        ..Request::default()
    };
    let mut alice = pool.subscribe(&ticks(&["AAPL", "MSFT"]), SubscribeOptions::default())?;
    let mut bob = pool.subscribe(&ticks(&["MSFT"]), SubscribeOptions::default())?;
    let slow = SubscribeOptions {
        queue_capacity: 2,
        ..SubscribeOptions::default()
    };
    let mut carol = pool.subscribe(&ticks(&["AAPL", "MSFT", "NVDA"]), slow)?;

    for (name, sub) in [("alice", &mut alice), ("bob", &mut bob)] {
        let mut rows = 0;
        while rows < 5 {
            if let Some(LiveEvent::Rows { topic, batch }) = sub.recv().await? {
                rows += batch.num_rows();
                println!("{name}: {} row(s) of {topic}", batch.num_rows());
            }
        }
    }
    // carol did not read while the others did: her queue kept the newest two.
    tokio::time::sleep(Duration::from_millis(50)).await;
    if let Some(LiveEvent::Lagged { missed }) = carol.recv().await? {
        println!("carol: missed {missed} deliveries");
    }

    let snapshot = pool.snapshot();
    let ticks = snapshot.source("ticks").ok_or("no source 'ticks'")?;
    println!(
        "source 'ticks': {} connection(s) for {} topics, latency p50 {:?} p99 {:?}",
        ticks.connections, ticks.topics, ticks.latency.p50, ticks.latency.p99
    );
    assert_eq!(
        ticks.connections, 1,
        "one connection serves every subscriber"
    );
    Ok(())
}
