//! The console in a real browser: Debian's Chromium, headless (installed
//! by `scripts/chromium.sh` when missing), driven over the Chrome DevTools
//! protocol with the WebSocket client the tests already have. Screenshots
//! are kept in the test target's temporary directory, not in git.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tenantfusion_server::create_demo;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{TestServer, with_http};
use crate::web::{Auth, Socket, request};

fn chromium_path() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/chromium.sh");
    let out = Command::new(script)
        .output()
        .expect("run scripts/chromium.sh");
    assert!(out.status.success(), "scripts/chromium.sh failed: {out:?}");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// One headless Chromium and its page, killed when dropped.
struct Chrome {
    child: Child,
    _profile: tempfile::TempDir,
    page: Socket,
    next_id: u64,
}

impl Chrome {
    async fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(chromium_path())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Chromium writes the port it chose, once it listens.
        let active = profile.path().join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let port: u16 = loop {
            if let Some(port) = std::fs::read_to_string(&active)
                .ok()
                .and_then(|text| text.lines().next().and_then(|l| l.parse().ok()))
            {
                break port;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Chromium did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let list = request(addr, "GET", "/json/list", &Auth::None, &[], Vec::new())
            .await
            .unwrap()
            .json();
        let url = list
            .as_array()
            .unwrap()
            .iter()
            .find(|target| target["type"] == "page")
            .and_then(|target| target["webSocketDebuggerUrl"].as_str())
            .expect("a page to drive")
            .to_string();
        let (page, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self {
            child,
            _profile: profile,
            page,
            next_id: 1,
        }
    }

    /// Calls a DevTools method and returns its result (events skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({"id": id, "method": method, "params": params});
        self.page
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
        loop {
            let answer = tokio::time::timeout(Duration::from_secs(30), self.page.next())
                .await
                .expect("no DevTools answer within 30 s")
                .unwrap()
                .unwrap();
            let Message::Text(text) = answer else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits until `condition` (JavaScript) is true in the page.
    async fn wait_for(&mut self, condition: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.eval(condition).await != json!(true) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page never showed: {condition}\n{}",
                self.eval("location.href + '\\n' + document.body.innerText")
                    .await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `value` into the field `id` and clicks `button`.
    async fn fill_and_click(&mut self, fields: &[(&str, &str)], button: &str) {
        let mut script = String::new();
        for (id, value) in fields {
            script.push_str(&format!(
                "document.getElementById({}).value = {};",
                json!(id),
                json!(value)
            ));
        }
        script.push_str(&format!(
            "document.getElementById({}).click(); true",
            json!(button)
        ));
        self.eval(&script).await;
    }

    /// The texts of the cells of the table `id`'s body, row by row.
    async fn table(&mut self, id: &str) -> Value {
        self.eval(&format!(
            "[...document.querySelectorAll('#{id} tbody tr')].map(r => [...r.cells].map(c => c.textContent))"
        ))
        .await
    }

    /// A PNG of the page, saved as `name` in the tests' temporary directory.
    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = BASE64.decode(shot["data"].as_str().unwrap()).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, &png).unwrap();
        path
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_logs_in_runs_sql_and_follows_a_live_query_in_chromium() {
    let server = TestServer::start_with(with_http()).await;
    assert!(create_demo(&server.engine).await.unwrap());
    let http = server.http.unwrap();
    let alice = server.alice().await;
    alice
        .batch_execute(
            "INSERT INTO app.notes VALUES (1, 'from psql'), (2, '<img src=x onerror=\"document.title=1\">')",
        )
        .await
        .unwrap();
    let mut chrome = Chrome::start().await;
    chrome
        .call("Page.navigate", json!({"url": format!("http://{http}/")}))
        .await;
    chrome
        .wait_for("document.readyState === 'complete' && !!document.getElementById('login-button')")
        .await;
    assert_eq!(
        chrome.eval("document.getElementById('main').hidden").await,
        json!(true)
    );

    // A wrong password is told, and nothing opens.
    chrome
        .fill_and_click(&[("user", "alice"), ("password", "nope")], "login-button")
        .await;
    chrome
        .wait_for("document.getElementById('login-error').textContent.includes('password authentication failed')")
        .await;
    chrome
        .fill_and_click(
            &[("user", "alice"), ("password", "alice-pw")],
            "login-button",
        )
        .await;
    chrome
        .wait_for("!document.getElementById('main').hidden")
        .await;
    chrome
        .wait_for("document.getElementById('tables').textContent.includes('app.notes')")
        .await;
    assert!(
        chrome
            .eval("document.getElementById('tables').textContent")
            .await
            .as_str()
            .unwrap()
            .contains("demo.ticks"),
        "the demo's stream table is listed"
    );

    // A query's rows as a table; a value that looks like HTML stays text.
    chrome
        .fill_and_click(
            &[("sql", "SELECT id, body FROM app.notes ORDER BY id")],
            "run",
        )
        .await;
    chrome
        .wait_for("document.querySelectorAll('#results tbody tr').length === 2")
        .await;
    assert_eq!(
        chrome.table("results").await,
        json!([
            ["1", "from psql"],
            ["2", "<img src=x onerror=\"document.title=1\">"]
        ])
    );
    assert_eq!(
        chrome
            .eval("document.querySelectorAll('#results img').length")
            .await,
        json!(0)
    );
    let shot = chrome.screenshot("console-query.png").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "{shot:?}");

    // A live query: alice's new row appears, bob's never.
    chrome
        .fill_and_click(&[("live-sql", "SUBSCRIBE TO app.notes")], "live-start")
        .await;
    chrome
        .wait_for("document.getElementById('live-status').textContent === 'live'")
        .await;
    assert_eq!(
        chrome.table("live-table").await.as_array().unwrap().len(),
        2
    );
    server
        .bob()
        .await
        .batch_execute("INSERT INTO app.notes VALUES (3, 'bob row')")
        .await
        .unwrap();
    alice
        .batch_execute("INSERT INTO app.notes VALUES (4, 'live row')")
        .await
        .unwrap();
    chrome
        .wait_for("document.getElementById('live-table').textContent.includes('live row')")
        .await;
    let live = chrome
        .eval("document.getElementById('live-table').textContent")
        .await;
    assert!(!live.as_str().unwrap().contains("bob row"), "{live}");
    assert_eq!(
        chrome.table("live-table").await[0],
        json!(["4", "live row"])
    );
    chrome.screenshot("console-live.png").await;
    assert_eq!(
        chrome.eval("document.title").await,
        json!("tenantfusion console")
    );
    server.stop().await;
}
