//! Values of every type the wire carries, through tokio-postgres: as
//! parameters (binary) into a table and back as results (binary by the
//! extended protocol, text by the simple one), NULLs included.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::types::ToSql;

use crate::harness::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_as_parameter_and_result() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    admin
        .batch_execute(
            "CREATE USER TABLE app.types (\
               id INT NOT NULL, i16 SMALLINT, i64 BIGINT, f32 REAL, f64 DOUBLE, \
               dec DECIMAL(10, 2), t TEXT, b BOOLEAN, bin BYTEA, d DATE, \
               ts TIMESTAMP)",
        )
        .await
        .unwrap();
    let alice = server.alice().await;
    let dec = Decimal::from_str("-12345678.91").unwrap();
    let d = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
    let ts = NaiveDateTime::parse_from_str("2026-12-07 16:25:26.123456", "%Y-%m-%d %H:%M:%S%.f")
        .unwrap();
    let tstz: DateTime<Utc> = ts.and_utc();
    let text = "ünïcode 'quoted' \t tab";
    let bin: Vec<u8> = vec![0, 1, 2, 255, b'\\'];
    let values: [&(dyn ToSql + Sync); 11] = [
        &1i32,
        &-32768i16,
        &i64::MAX,
        &1.5f32,
        &-2.25e300f64,
        &dec,
        &text,
        &true,
        &bin,
        &d,
        &ts,
    ];
    let insert = alice
        .prepare("INSERT INTO app.types VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
        .await
        .unwrap();
    alice.execute(&insert, &values).await.unwrap();
    let nulls: [&(dyn ToSql + Sync); 11] = [
        &2i32,
        &None::<i16>,
        &None::<i64>,
        &None::<f32>,
        &None::<f64>,
        &None::<Decimal>,
        &None::<String>,
        &None::<bool>,
        &None::<Vec<u8>>,
        &None::<NaiveDate>,
        &None::<NaiveDateTime>,
    ];
    alice.execute(&insert, &nulls).await.unwrap();

    // A timestamp with a time zone: DataFusion 55 gives a column declared
    // WITH TIME ZONE none unless `datafusion.execution.time_zone` is set,
    // so the zone comes from a cast here.
    let rows = alice
        .query(
            "SELECT *, arrow_cast(ts, 'Timestamp(Microsecond, Some(\"+00:00\"))') AS tstz \
             FROM app.types ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let row = &rows[0];
    assert_eq!(row.get::<_, i16>("i16"), -32768);
    assert_eq!(row.get::<_, i64>("i64"), i64::MAX);
    assert_eq!(row.get::<_, f32>("f32"), 1.5);
    assert_eq!(row.get::<_, f64>("f64"), -2.25e300);
    assert_eq!(row.get::<_, Decimal>("dec"), dec);
    assert_eq!(row.get::<_, String>("t"), text);
    assert!(row.get::<_, bool>("b"));
    assert_eq!(row.get::<_, Vec<u8>>("bin"), bin);
    assert_eq!(row.get::<_, NaiveDate>("d"), d);
    assert_eq!(row.get::<_, NaiveDateTime>("ts"), ts);
    assert_eq!(row.get::<_, DateTime<Utc>>("tstz"), tstz);
    let row = &rows[1];
    assert_eq!(row.get::<_, Option<i16>>("i16"), None);
    assert_eq!(row.get::<_, Option<Decimal>>("dec"), None);
    assert_eq!(row.get::<_, Option<String>>("t"), None);
    assert_eq!(row.get::<_, Option<Vec<u8>>>("bin"), None);
    assert_eq!(row.get::<_, Option<DateTime<Utc>>>("tstz"), None);

    // The same values as text (the simple protocol), PostgreSQL's spelling.
    let messages = alice
        .simple_query("SELECT i16, dec, b, bin, d, ts, t FROM app.types WHERE id = 1")
        .await
        .unwrap();
    let SimpleQueryMessage::Row(row) = messages
        .iter()
        .find(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(row.get("i16"), Some("-32768"));
    assert_eq!(row.get("dec"), Some("-12345678.91"));
    assert_eq!(row.get("b"), Some("t"));
    assert_eq!(row.get("bin"), Some("\\x000102ff5c"));
    assert_eq!(row.get("d"), Some("2026-12-07"));
    assert_eq!(row.get("ts"), Some("2026-12-07 16:25:26.123456"));
    assert_eq!(row.get("t"), Some(text));

    // Lists and intervals, which DataFusion computes.
    let rows = alice
        .query(
            "SELECT make_array(1, 2, 3) AS a, make_array('x', NULL) AS s",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, Vec<i64>>("a"), [1, 2, 3]);
    assert_eq!(
        rows[0].get::<_, Vec<Option<String>>>("s"),
        [Some("x".to_string()), None]
    );
    let messages = alice
        .simple_query("SELECT INTERVAL '1 day 2 hours' AS i")
        .await
        .unwrap();
    let interval = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(interval.as_deref(), Some("1 day 02:00:00"));
    server.stop().await;
}
