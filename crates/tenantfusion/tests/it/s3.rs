//! The durable-storage suite on S3: segments and manifests in a bucket of
//! a real S3-compatible server (moto), started on 127.0.0.1 by
//! `scripts/s3-server.sh` (which installs it into a venv where it is
//! missing) and stopped when the test ends.

use std::path::PathBuf;
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::durable::{Backend, flush_suite};
use crate::model::{check_on, op};

const ENDPOINT: &str = "http://127.0.0.1:9010";
const BUCKET: &str = "tenantfusion";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/s3-server.sh")
}

/// Stops the server when the test ends, passed or not.
struct Server;

impl Server {
    async fn start() -> Self {
        let status = tokio::task::spawn_blocking(|| Command::new(script()).arg("start").status())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "scripts/s3-server.sh start failed");
        Server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").status();
    }
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path.display().to_string());
        }
    }
    files
}

/// A prefix of the bucket no other run used.
fn fresh_prefix(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_suite_passes_on_s3() {
    let _server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    flush_suite(&Backend::s3(
        dir.path(),
        ENDPOINT,
        BUCKET,
        &fresh_prefix("flush"),
    ))
    .await;
    // The logs are local; no segment or manifest is.
    let local = walk(dir.path());
    assert!(local.iter().any(|f| f.ends_with(".wal")), "{local:?}");
    assert!(
        !local
            .iter()
            .any(|f| f.ends_with(".parquet") || f.ends_with("manifest")),
        "{local:?}"
    );

    // The random multi-user workloads, reopens, flushes and compactions
    // included, against the per-user model.
    let ops = prop::collection::vec(op(), 1..16);
    let outcome = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases: 12,
            ..Config::default()
        });
        runner
            .run(&ops, |ops| {
                let dir = tempfile::tempdir().unwrap();
                let backend = Backend::s3(dir.path(), ENDPOINT, BUCKET, &fresh_prefix("model"));
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(check_on(ops, backend.config.clone()))
            })
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    outcome.unwrap();
}

#[tokio::test]
async fn bad_s3_settings_are_refused_when_the_engine_opens() {
    let dir = tempfile::tempdir().unwrap();
    for (storage, what) in [
        (
            tenantfusion::Storage::from_url("s3://bucket/p")
                .unwrap()
                .with_s3_option("no_such_setting", "1"),
            "no_such_setting",
        ),
        (
            tenantfusion::Storage::S3 {
                url: "s3:///p".into(),
                path: dir.path().to_path_buf(),
                durability: tenantfusion::Durability::Fsync,
                options: Vec::new(),
            },
            "no bucket",
        ),
    ] {
        let err =
            tenantfusion::Engine::new(tenantfusion::EngineConfig::default().with_storage(storage))
                .unwrap_err();
        assert_eq!(err.code(), "INVALID_ARGUMENT", "{err}");
        assert!(err.to_string().contains(what), "{err}");
    }
}
