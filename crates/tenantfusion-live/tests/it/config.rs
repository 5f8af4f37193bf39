//! The pool's TOML configuration: inheritance order and errors that name
//! the key.

use std::time::Duration;

use tenantfusion_live::*;

use crate::support::{Received, receive_until};

fn cap(config: &LiveConfig, name: &str) -> Option<usize> {
    let source = config
        .sources
        .iter()
        .find(|s| s.spec().name == name)
        .unwrap();
    source.spec().capabilities.max_topics_per_connection
}

#[test]
fn per_instance_beats_per_type_beats_defaults() {
    let config = LiveConfig::from_toml(
        r#"
        [defaults]
        max_topics_per_connection = 100
        weight = 3
        ping_interval_ms = 1000      # only WebSocket sources know it

        [types.websocket]
        max_topics_per_connection = 200

        [sources.a]
        type = "websocket"
        url = "ws://127.0.0.1:1/a"
        schema = "ticks"

        [sources.b]
        type = "websocket"
        url = "ws://127.0.0.1:1/b"
        schema = "ticks"
        max_topics_per_connection = 50
        weight = 7

        [sources.g]
        type = "generator"

        [sources.r]
        type = "rest"
        base_url = "http://127.0.0.1:1"
        path = "/q/{topics}"
        columns = ["sym:utf8", "px:float64"]
        "#,
    )
    .unwrap();
    assert_eq!(cap(&config, "a"), Some(200), "the type's value");
    assert_eq!(cap(&config, "b"), Some(50), "the instance's value");
    assert_eq!(cap(&config, "g"), Some(100), "the default");
    assert_eq!(cap(&config, "r"), Some(100), "the default");
    let weight = |name: &str| {
        config
            .sources
            .iter()
            .find(|s| s.spec().name == name)
            .unwrap()
            .spec()
            .weight
    };
    assert_eq!((weight("a"), weight("b"), weight("g")), (3, 7, 3));
    let rest = config
        .sources
        .iter()
        .find(|s| s.spec().name == "r")
        .unwrap();
    assert_eq!(rest.spec().capabilities.schema.field(0).name(), "sym");
    assert_eq!(config.pool, PoolConfig::default());
}

#[test]
fn fail_back_is_on_by_default_and_0_turns_it_off() {
    let on = LiveConfig::from_toml("[pool]\nfail_back_after_ms = 60000").unwrap();
    assert_eq!(on.pool.fail_back_after, Some(Duration::from_secs(60)));
    let off = LiveConfig::from_toml("[pool]\nfail_back_after_ms = 0").unwrap();
    assert_eq!(off.pool.fail_back_after, None);
    assert!(PoolConfig::default().fail_back_after.is_some());
}

#[test]
fn every_mistake_names_its_key() {
    let source = |extra: &str| {
        format!(
            "[sources.a]\ntype = \"websocket\"\nurl = \"ws://h:1/\"\nschema = \"ticks\"\n{extra}"
        )
    };
    let cases = [
        (source("urll = \"x\""), "sources.a.urll"),
        (source("ping_interval_ms = \"fast\""), "sources.a.ping_interval_ms"),
        (format!("[types.websocket]\nping_interval_ms = 0\n{}", source("")), "types.websocket.ping_interval_ms"),
        (format!("[types.websocket]\nseed = 1\n{}", source("")), "types.websocket.seed"),
        ("[sources.a]\ntype = \"websocket\"\nschema = \"ticks\"".to_string(), "sources.a.url"),
        ("[sources.a]\ntype = \"carrier-pigeon\"".to_string(), "sources.a.type"),
        ("[sources.a]\nurl = \"ws://h:1/\"".to_string(), "sources.a.type"),
        (source("columns = [\"topic:utf8\"]"), "sources.a.columns"),
        ("[sources.a]\ntype = \"rest\"\nbase_url = \"http://h:1\"\npath = \"/{topics}\"\ncolumns = [\"n:int64\"]".to_string(), "sources.a.columns"),
        ("[sources.a]\ntype = \"rest\"\nbase_url = \"http://h:1\"\npath = \"/{topics}\"\ncolumns = [\"t:utf8\", \"x:decimal\"]".to_string(), "sources.a.columns"),
        ("[sources.a]\ntype = \"websocket\"\nurl = \"http://h:1/\"\nschema = \"ticks\"".to_string(), "sources.a"),
        ("[pool]\nrebalance_threshold = 2.0".to_string(), "pool.rebalance_threshold"),
        ("[pool]\nstrategy = \"random\"".to_string(), "pool.strategy"),
        ("[pool]\nidle_timeout = 5".to_string(), "pool.idle_timeout"),
        ("[pool]\nsequence_window = 0".to_string(), "pool.sequence_window"),
        ("[pool]\nconnect_timeout_ms = \"long\"".to_string(), "pool.connect_timeout_ms"),
        ("[pool]\nmin_stable_ms = -1".to_string(), "pool.min_stable_ms"),
        ("[pool]\nfail_back_after_ms = -1".to_string(), "pool.fail_back_after_ms"),
        (source("max_message_bytes = 10"), "sources.a.max_message_bytes"),
        ("[sources.a]\ntype = \"rest\"\nbase_url = \"http://h:1\"\npath = \"/{topics}\"\nschema = \"ticks\"\nmax_body_bytes = 0".to_string(), "sources.a.max_body_bytes"),
        ("[sources.a]\ntype = \"rest\"\nbase_url = \"http://h:1\"\npath = \"/{topics}\"\nschema = \"ticks\"\nconcurrent_requests = 0".to_string(), "sources.a.concurrent_requests"),
        ("[defaults]\nnope = 1".to_string(), "defaults.nope"),
        ("[poool]\nx = 1".to_string(), "poool"),
        ("[types.fax]\nx = 1".to_string(), "types.fax"),
        ("[pool\nbroken".to_string(), "(file)"),
    ];
    for (text, key) in cases {
        let err = LiveConfig::from_toml(&text).unwrap_err();
        assert_eq!(err.code(), "INVALID_CONFIG", "{text}: {err}");
        let tenantfusion_live::LiveError::InvalidConfig { key: named, .. } = &err else {
            unreachable!()
        };
        assert_eq!(named, key, "{text}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_file_loads_and_its_generator_delivers() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let config = LiveConfig::load(path).unwrap();
    assert_eq!(config.sources.len(), 4);
    assert_eq!(config.pool.strategy, Strategy::Priority);
    assert_eq!(config.pool.breaker.cool_down, Duration::from_secs(10));
    assert_eq!(config.pool.fail_back_after, Some(Duration::from_secs(120)));
    let pool = config.build().unwrap();
    // No source named, no kind: the configured default, the generator.
    let mut sub = pool
        .subscribe(
            &Request {
                topics: &["AAPL"],
                ..Request::default()
            },
            SubscribeOptions::default(),
        )
        .unwrap();
    let mut received = Received::default();
    receive_until(&mut sub, &mut received, |r| {
        r.seqs.get("AAPL").is_some_and(|s| s.len() >= 2)
    })
    .await;
    assert_eq!(pool.snapshot().topic("AAPL").unwrap().source, "ticks");
    assert_eq!(
        LiveConfig::load("/no/such/file.toml").unwrap_err().code(),
        "INVALID_CONFIG"
    );
}
