//! End-to-end tests of `lmfuse monitor`: a seeded stream replayed over HTTP into a monitor that
//! is killed (-9) half-way and restarted, with its webhook receiver down until the end: every
//! acknowledged event is stored once, every burst alerts, and each alert reaches the webhook
//! and the log once. Bad requests and a bad rule file get errors naming the field.

mod common;

use common::{lmfuse, ok_json, tiny_model, workspace, write_file};
use lmfuse_monitor::store::Database;
use lmfuse_monitor::testing::{postgres_server, scratch_postgres};
use lmfuse_server::client::{self, Target};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `lmfuse monitor run` and the address it printed.
struct Running {
    child: Child,
    base: String,
}

impl Running {
    /// `db`: a SQLite file or a PostgreSQL URL.
    fn start(config: &Path, db: &str, cache: &Path) -> Running {
        let args = [
            "monitor",
            "run",
            "--config",
            config.to_str().unwrap(),
            "--db",
            db,
            "--port",
            "0",
        ];
        let mut child = lmfuse(&args, cache)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lmfuse monitor run");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let line = lines.next().expect("the monitor printed nothing").unwrap();
        let base = line
            .split("listening on ")
            .nth(1)
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim()
            .to_string();
        std::thread::spawn(move || {
            lines.for_each(|l| eprintln!("monitor: {}", l.unwrap_or_default()))
        });
        Running { child, base }
    }

    fn call(&self, method: &str, path: &str, body: &[u8]) -> client::Response {
        let target = Target::parse(&format!("{}{path}", self.base)).unwrap();
        client::request(&target, method, &[], body).unwrap()
    }

    fn health(&self) -> Value {
        self.call("GET", "/health", b"").json()["monitor"].clone()
    }

    /// Waits until every stored event is classified and no delivery is owed.
    fn wait_settled(&self, events: u64) -> Value {
        let started = Instant::now();
        loop {
            let h = self.health();
            let owed: u64 = h["deliveries"]
                .as_object()
                .map(|d| d.values().map(|v| v[1].as_u64().unwrap()).sum())
                .unwrap_or(0);
            if h["classified"] == events && owed == 0 {
                return h;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "not settled: {h}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook receiver on `port`: every request's `Idempotency-Key` and body.
fn receive_on(port: u16) -> Arc<Mutex<Vec<(String, Value)>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("the receiver's port is free");
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut key, mut length) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                match name.to_ascii_lowercase().as_str() {
                    "idempotency-key" => key = value.trim().to_string(),
                    "content-length" => length = value.trim().parse().unwrap(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            seen.lock()
                .unwrap()
                .push((key, serde_json::from_slice(&body).unwrap()));
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
        }
    });
    got
}

/// A TF-IDF sentiment bundle trained on the example reviews.
fn sentiment_bundle(dir: &Path, model: &Path, cache: &Path) -> PathBuf {
    let bundle = dir.join("sentiment");
    let reviews = workspace().join("examples/reviews.jsonl");
    ok_json(
        &[
            "train",
            "--model",
            model.to_str().unwrap(),
            "--train",
            reviews.to_str().unwrap(),
            "--features",
            "tfidf",
            "--out",
            bundle.to_str().unwrap(),
            "--json",
        ],
        cache,
    );
    bundle
}

fn config(bundle: &Path, webhook_port: u16, log: &Path) -> String {
    format!(
        r#"
[monitor]
window = "1h"

[[model]]
name = "sentiment"
bundle = {bundle:?}

[[rule]]
name = "negative-share"
kind = "share"
model = "sentiment"
label = "negative"
above = 0.6
min_count = 10
group_by = ["entity"]

[[sink]]
kind = "webhook"
url = "http://127.0.0.1:{webhook_port}/alerts"
max_backoff = "2s"

[[sink]]
kind = "log"
path = {log:?}
"#
    )
}

#[test]
fn a_killed_monitor_keeps_every_acknowledged_event_and_delivers_each_alert_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("monitor.db");
    killed_monitor(&dir, db.to_str().unwrap());
}

#[test]
fn a_killed_monitor_on_postgres_keeps_every_acknowledged_event_and_each_alert() {
    if let Some(db) = postgres_db("a_killed_monitor") {
        killed_monitor(&tempfile::tempdir().unwrap(), &db);
    }
}

/// A scratch PostgreSQL database for the test `name`: its URL, or `None` (a skip) without a
/// server.
fn postgres_db(name: &str) -> Option<String> {
    let server = postgres_server()?;
    match scratch_postgres(&server, &format!("cli_monitor_{name}")) {
        Database::Postgres(url) => Some(url),
        Database::Sqlite(_) => unreachable!("a scratch PostgreSQL database"),
    }
}

fn killed_monitor(dir: &tempfile::TempDir, db: &str) {
    let Some(model) = tiny_model() else { return };
    let cache = dir.path().join("cache");
    let bundle = sentiment_bundle(dir.path(), &model, &cache);
    let (stream, truth) = (
        dir.path().join("stream.jsonl"),
        dir.path().join("bursts.json"),
    );
    let reviews = workspace().join("examples/reviews.jsonl");
    let status = lmfuse(
        &[
            "monitor",
            "simulate",
            "--data",
            reviews.to_str().unwrap(),
            "--days",
            "8",
            "--seed",
            "3",
            "--out",
            stream.to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
        ],
        &cache,
    )
    .status()
    .unwrap();
    assert!(status.success());
    let lines: Vec<String> = std::fs::read_to_string(&stream)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let bursts: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&truth).unwrap()).unwrap();
    // The receiver's port, free for now: the webhook is down until the end.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("alerts.log");
    let config = write_file(dir.path(), "monitor.toml", &config(&bundle, port, &log));

    let mut monitor = Running::start(&config, db, &cache);
    let chunks: Vec<&[String]> = lines.chunks(400).collect();
    let half = chunks.len() / 2;
    for (i, chunk) in chunks.iter().enumerate() {
        if i == half {
            // Killed right after an acknowledgement, with events stored but not processed.
            monitor.kill();
            monitor = Running::start(&config, db, &cache);
            // The last acknowledged request sent again: stored once.
            let again = monitor.call("POST", "/events", chunks[i - 1].join("\n").as_bytes());
            assert_eq!(
                again.json()["duplicates"],
                chunks[i - 1].len(),
                "{}",
                again.text()
            );
        }
        let r = monitor.call("POST", "/events", chunk.join("\n").as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["accepted"], chunk.len());
    }
    let received = receive_on(port);
    let health = monitor.wait_settled(lines.len() as u64);
    assert_eq!(health["events"], lines.len());

    let alerts = monitor.call("GET", "/alerts", b"").json();
    let alerts = alerts.as_array().unwrap();
    for b in &bursts {
        let start = b["start"].as_i64().unwrap();
        let hit = alerts.iter().any(|a| {
            let w = a["window"].as_i64().unwrap();
            a["series"]["entity"] == b["entity"] && w + 3_600 > start && w <= start + 3_600
        });
        assert!(
            hit,
            "burst {b} raised no alert within a window of its start: {alerts:?}"
        );
    }
    let ids: BTreeSet<&str> = alerts.iter().map(|a| a["id"].as_str().unwrap()).collect();
    let got = received.lock().unwrap().clone();
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, body) in &got {
        assert_eq!(
            body["id"].as_str(),
            Some(key.as_str()),
            "the key is the alert's id"
        );
        *per_key.entry(key.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_key.keys().copied().collect::<BTreeSet<_>>(),
        ids,
        "every alert, by webhook"
    );
    assert!(
        per_key.values().all(|&n| n == 1),
        "an alert sent twice: {per_key:?}"
    );
    let logged: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged.len(), ids.len(), "every alert logged once");
}

#[test]
fn bad_requests_and_a_bad_rule_file_are_named() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bundle = sentiment_bundle(dir.path(), &model, &cache);
    let log = dir.path().join("alerts.log");
    let text =
        config(&bundle, 9, &log).replace("[monitor]\n", "[monitor]\nmax_body_bytes = 2000\n");
    let config_path = write_file(dir.path(), "monitor.toml", &text);
    let db = dir.path().join("monitor.db");
    let monitor = Running::start(&config_path, db.to_str().unwrap(), &cache);
    let good = json!([{"id": "a", "time": "2026-11-01T10:00:00Z", "text": "Great gym, friendly staff.", "entity": "acme"}]);
    assert_eq!(
        monitor
            .call("POST", "/events", good.to_string().as_bytes())
            .status,
        200
    );
    let cases: Vec<(String, u16, &str)> = vec![
        (
            json!([{"id": "b", "time": 5}]).to_string(),
            422,
            "field `text`: missing",
        ),
        (
            json!([{"id": "b", "text": "x"}]).to_string(),
            422,
            "field `time`: missing",
        ),
        (
            json!([{"id": "b", "time": "2099-01-01T00:00:00Z", "text": "x"}]).to_string(),
            422,
            "after the monitor's clock",
        ),
        (
            json!([{"id": "b", "time": "soon", "text": "x"}]).to_string(),
            422,
            "not an RFC 3339 time",
        ),
        (
            json!([{"id": "b", "time": 5, "text": "x"}, {"id": "b", "time": 6, "text": "y"}])
                .to_string(),
            422,
            "appears twice",
        ),
        (
            json!([{"id": "a", "time": "2026-11-01T10:00:00Z", "text": "changed"}]).to_string(),
            409,
            "already stored with a different text",
        ),
        ("[{\"id\": \"b\",".to_string(), 400, "not a JSON array"),
        (
            format!(
                "[{{\"id\": \"b\", \"time\": 5, \"text\": \"{}\"}}]",
                "x".repeat(3000)
            ),
            413,
            "over the limit of 2000 bytes",
        ),
    ];
    for (body, status, needle) in cases {
        let r = monitor.call("POST", "/events", body.as_bytes());
        assert_eq!(
            r.status,
            status,
            "{}: {}",
            &body[..body.len().min(80)],
            r.text()
        );
        assert!(
            r.json()["error"].as_str().unwrap().contains(needle),
            "{}",
            r.text()
        );
    }
    assert_eq!(
        monitor.health()["events"],
        1,
        "nothing of a refused request was stored"
    );
    let bad_state = monitor.call("GET", "/alerts?state=closed", b"");
    assert_eq!(bad_state.status, 422, "{}", bad_state.text());
    assert_eq!(
        monitor
            .call("POST", "/alerts/nope%2Fx/acknowledge", b"")
            .status,
        404
    );
    drop(monitor);

    // `text` with `from` replaced by `to`, as a file named `name`: `monitor run` refuses it.
    let refused = |name: &str, from: &str, to: &str| -> String {
        let changed = text.replace(from, to);
        assert_ne!(changed, text, "{from:?} is in the configuration");
        let path = write_file(dir.path(), name, &changed);
        let args = ["monitor", "run", "--config", path.to_str().unwrap(), "--db"];
        let out = lmfuse(&args, &cache)
            .args([db.to_str().unwrap(), "--port", "0"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused("broken.toml", "above = 0.6", "above = 1.5");
    assert!(
        stderr.contains("broken.toml") && stderr.contains("rule[0]: `above`"),
        "{stderr}"
    );
    let stderr = refused("label.toml", "label = \"negative\"", "label = \"angry\"");
    assert!(stderr.contains("no label \"angry\""), "{stderr}");
}

/// A text in a vocabulary the example reviews never use, and its label.
fn parcel_text(i: usize) -> (String, &'static str) {
    const NEGATIVE: [&str; 4] = ["smashed", "soaked", "crushed", "missing"];
    const POSITIVE: [&str; 4] = ["intact", "punctual", "spotless", "early"];
    let (words, label) = if i.is_multiple_of(2) {
        (NEGATIVE, "negative")
    } else {
        (POSITIVE, "positive")
    };
    (
        format!("parcel {i} came {} via courier", words[(i / 2) % 4]),
        label,
    )
}

fn parcel_events(prefix: &str, range: std::ops::Range<usize>) -> Vec<Value> {
    range
        .map(|i| {
            let (text, _) = parcel_text(i);
            json!({"id": format!("{prefix}{i}"), "time": 1_780_000_000 + i as i64, "text": text})
        })
        .collect()
}

fn ndjson(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

/// A running monitor on a TF-IDF bundle trained on the first 200 example reviews, with
/// `train` and `test` (the other 100) configured and `extra` lines added to its model, holding
/// 300 events in a vocabulary the reviews never use, classified. The monitor, its
/// configuration file and its database.
fn parcel_monitor(
    dir: &Path,
    db: &str,
    model: &Path,
    cache: &Path,
    extra: &str,
) -> (Running, PathBuf) {
    let reviews = std::fs::read_to_string(workspace().join("examples/reviews.jsonl")).unwrap();
    let lines: Vec<&str> = reviews.lines().collect();
    let train = write_file(dir, "train.jsonl", &(lines[..200].join("\n") + "\n"));
    let test = write_file(dir, "test.jsonl", &(lines[200..].join("\n") + "\n"));
    let bundle = dir.join("sentiment");
    let (m, t, b) = (
        model.to_str().unwrap(),
        train.to_str().unwrap(),
        bundle.to_str().unwrap(),
    );
    let test = test.to_str().unwrap();
    let args = [
        "train",
        "--model",
        m,
        "--train",
        t,
        "--test",
        test,
        "--features",
        "tfidf",
    ];
    ok_json(&[&args[..], &["--out", b, "--json"]].concat(), cache);
    let mut text = format!(
        "[[model]]\nname = \"sentiment\"\nbundle = {b:?}\ntrain = {t:?}\ntest = {test:?}\n{extra}"
    );
    if db.starts_with("postgres") {
        // Retrained versions need a folder: there is none beside a server's database.
        let versions = dir.join("versions");
        text = format!("[monitor]\nmodels_dir = {versions:?}\n\n{text}");
    }
    let config = write_file(dir, "monitor.toml", &text);
    let monitor = Running::start(&config, db, cache);
    let stream = parcel_events("s", 0..300);
    assert_eq!(
        monitor
            .call("POST", "/events", ndjson(&stream).as_bytes())
            .status,
        200
    );
    monitor.wait_settled(300);
    (monitor, config)
}

/// `lmfuse monitor retrain ... --json` and its report.
fn retrain(config: &Path, db: &str, cache: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "monitor",
        "retrain",
        "--config",
        config.to_str().unwrap(),
        "--db",
        db,
        "--model",
        "sentiment",
        "--json",
    ];
    args.extend_from_slice(extra);
    ok_json(&args, cache)
}

#[test]
fn feedback_retrains_a_better_model_that_serves_at_once_and_a_worse_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("monitor.db");
    feedback_retrain(&dir, db.to_str().unwrap());
}

#[test]
fn feedback_retrains_on_postgres_and_a_worse_model_is_refused() {
    if let Some(db) = postgres_db("feedback_retrains") {
        feedback_retrain(&tempfile::tempdir().unwrap(), &db);
    }
}

fn feedback_retrain(dir: &tempfile::TempDir, db: &str) {
    let Some(model) = tiny_model() else { return };
    let cache = dir.path().join("cache");
    let (monitor, config) = parcel_monitor(dir.path(), db, &model, &cache, "");
    let reviews = std::fs::read_to_string(workspace().join("examples/reviews.jsonl")).unwrap();
    let lines: Vec<&str> = reviews.lines().collect();
    let flipped: String = lines[..200]
        .iter()
        .map(|l| {
            let swapped = l.replace("\"negative\"", "\"tmp\"");
            let swapped = swapped.replace("\"positive\"", "\"negative\"");
            swapped.replace("\"tmp\"", "\"positive\"") + "\n"
        })
        .collect();
    let flipped = write_file(dir.path(), "flipped.jsonl", &flipped);
    let corrections: Vec<Value> = (0..300)
        .map(|i| json!({"id": format!("s{i}"), "label": parcel_text(i).1}))
        .collect();
    let r = monitor.call(
        "POST",
        "/feedback",
        Value::from(corrections).to_string().as_bytes(),
    );
    assert_eq!(r.json()["stored"], 300, "{}", r.text());

    // Events keep arriving while the challenger trains and the monitor swaps it in.
    let base = monitor.base.clone();
    let poster = std::thread::spawn(move || {
        (0..30)
            .map(|k| {
                let target = Target::parse(&format!("{base}/events")).unwrap();
                let body = ndjson(&parcel_events("p", 1000 + 10 * k..1010 + 10 * k));
                std::thread::sleep(Duration::from_millis(100));
                client::request(&target, "POST", &[], body.as_bytes())
                    .unwrap()
                    .status
            })
            .collect::<Vec<u16>>()
    });
    let report = retrain(&config, db, &cache, &[]);
    eprintln!("retrain on feedback: {report:#}");
    assert_eq!(report["promoted"], true, "{report:#}");
    let (champion, challenger) = (&report["champion"], &report["challenger"]);
    assert!(
        challenger["feedback"].as_f64().unwrap() > champion["feedback"].as_f64().unwrap() + 0.2,
        "{report:#}"
    );
    assert!(
        report["feedback_holdout"].as_u64().unwrap() > 50,
        "{report:#}"
    );
    let started = Instant::now();
    while monitor.call("GET", "/models", b"").json()[0]["serving"] != 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "version 2 never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let statuses = poster.join().unwrap();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    // Fresh events of the new vocabulary are classified by the new version.
    let fresh = parcel_events("f", 5000..5040);
    assert_eq!(
        monitor
            .call("POST", "/events", ndjson(&fresh).as_bytes())
            .status,
        200
    );
    monitor.wait_settled(300 + 300 + 40);
    let latest = monitor.call("GET", "/events?limit=40", b"").json();
    let right = latest
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            let i: usize = e["id"].as_str().unwrap()[1..].parse().unwrap();
            e["predictions"]["sentiment"]["label"] == parcel_text(i).1
        })
        .count();
    assert!(
        right >= 36,
        "only {right} of 40 fresh events right after the reload"
    );

    // A challenger trained on flipped labels loses on the test set: refused, kept, not served.
    let worse = retrain(&config, db, &cache, &["--train", flipped.to_str().unwrap()]);
    eprintln!("retrain on flipped labels: {worse:#}");
    assert_eq!(worse["promoted"], false, "{worse:#}");
    let models = monitor.call("GET", "/models", b"").json();
    let versions = models[0]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3, "{models:#}");
    assert_eq!(versions[2]["promoted"], false);
    assert!(versions[2]["report"]["challenger"]["test"].is_number());
    assert_eq!(models[0]["serving"], 2);
    assert!(Path::new(versions[2]["path"].as_str().unwrap())
        .join("manifest.json")
        .is_file());
    let drift = monitor.call("GET", "/drift", b"").json();
    assert_eq!(drift["sentiment"]["has_reference"], true, "{drift:#}");

    // A retrain that fails is named and recorded as failed; the serving version stays.
    let missing = dir.path().join("missing.jsonl");
    let (c, d) = (config.to_str().unwrap(), db);
    let args = [
        "monitor",
        "retrain",
        "--config",
        c,
        "--db",
        d,
        "--model",
        "sentiment",
    ];
    let out = lmfuse(
        &[&args[..], &["--train", missing.to_str().unwrap()]].concat(),
        &cache,
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("missing.jsonl"),
        "{err}"
    );
    let models = monitor.call("GET", "/models", b"").json();
    assert_eq!(
        models[0]["versions"][3]["report"]["state"], "failed",
        "{models:#}"
    );
    assert_eq!(models[0]["serving"], 2);
}

/// Debian's chromium, or `None` (a skip, or a failure under LMFUSE_REQUIRE_ASSETS=1) when it
/// is not installed (`bash scripts/install-chromium.sh`).
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = "chromium not found: run `bash scripts/install-chromium.sh`";
        if std::env::var("LMFUSE_REQUIRE_ASSETS").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// Headless chromium on `url`: the DOM after the page's scripts ran, and a screenshot at
/// `screenshot` when given.
fn headless(chromium: &Path, url: &str, screenshot: Option<&Path>) -> String {
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--hide-scrollbars".into(),
        "--virtual-time-budget=8000".into(),
    ];
    match screenshot {
        Some(p) => args.extend([
            "--window-size=1280,1560".into(),
            format!("--screenshot={}", p.display()),
        ]),
        None => args.extend(["--window-size=1280,1000".into(), "--dump-dom".into()]),
    }
    args.push(url.to_string());
    let out = std::process::Command::new(chromium)
        .args(&args)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_dashboard_draws_the_series_and_marks_every_burst_alert() {
    let (Some(model), Some(chromium)) = (tiny_model(), chromium()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bundle = sentiment_bundle(dir.path(), &model, &cache);
    let (stream, truth) = (
        dir.path().join("stream.jsonl"),
        dir.path().join("bursts.json"),
    );
    let reviews = workspace().join("examples/reviews.jsonl");
    let (s, t) = (stream.to_str().unwrap(), truth.to_str().unwrap());
    let args = [
        "monitor",
        "simulate",
        "--data",
        reviews.to_str().unwrap(),
        "--days",
        "7",
    ];
    let status = lmfuse(
        &[&args[..], &["--seed", "3", "--out", s, "--truth", t]].concat(),
        &cache,
    )
    .status()
    .unwrap();
    assert!(status.success());
    let log = dir.path().join("alerts.log");
    // The rules without the sinks, drift against the training data.
    let text = config(&bundle, 9, &log).replace(
        "\n\n[[rule]]",
        &format!("\ntrain = {:?}\n\n[[rule]]", reviews.display().to_string()),
    );
    let config = write_file(
        dir.path(),
        "monitor.toml",
        text.split("[[sink]]").next().unwrap(),
    );
    let db = dir.path().join("monitor.db");
    let (c, d) = (config.to_str().unwrap(), db.to_str().unwrap());
    let ingested = ok_json(
        &["monitor", "ingest", "--config", c, "--db", d, "--input", s],
        &cache,
    );
    let events = ingested["monitor"]["events"].as_u64().unwrap();
    let monitor = Running::start(&config, d, &cache);
    monitor.wait_settled(events);
    let bursts: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&truth).unwrap()).unwrap();

    let dom = headless(&chromium, &format!("{}/", monitor.base), None);
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page did not finish: {dom}"
    );
    assert!(
        dom.contains("data-windows=\"168\""),
        "no chart of a week of hours: {dom}"
    );
    assert!(
        dom.contains("id=\"share-line\" points=\""),
        "no share line: {dom}"
    );
    let markers = dom.matches("class=\"alert-marker\"").count();
    assert!(
        markers >= bursts.len(),
        "{markers} alert markers for {} bursts",
        bursts.len()
    );
    for b in &bursts {
        let entity = b["entity"].as_str().unwrap();
        assert!(
            dom.contains(&format!("<td>{entity}</td>")),
            "the alert of {entity} is not listed"
        );
    }
    assert!(
        dom.contains(&format!("{events} events, {events} classified")),
        "no status line"
    );
    if let Some(path) = std::env::var_os("LMFUSE_DASHBOARD_SCREENSHOT") {
        headless(
            &chromium,
            &format!("{}/", monitor.base),
            Some(Path::new(&path)),
        );
    }
}

/// CoNLL sentences `<person> works at <org> in <city> .` (organisations are ORG).
fn org_sentences(n: usize) -> String {
    const PEOPLE: [&str; 4] = ["Alice", "Bob", "Carol", "David"];
    const ORGS: [&str; 3] = ["Acme", "Globex", "Initech"];
    const CITIES: [&str; 3] = ["Paris", "Rome", "Oslo"];
    (0..n)
        .map(|i| {
            format!(
                "{}\tB-PER\nworks\tO\nat\tO\n{}\tB-ORG\nin\tO\n{}\tB-LOC\n.\tO\n\n",
                PEOPLE[i % 4],
                ORGS[(i / 4) % 3],
                CITIES[(i / 2) % 3]
            )
        })
        .collect()
}

#[test]
fn a_ner_bundle_names_the_entities_of_events_that_name_none() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bundle = sentiment_bundle(dir.path(), &model, &cache);
    let conll = write_file(dir.path(), "orgs.conll", &org_sentences(60));
    let ner = dir.path().join("ner");
    let (c, n) = (conll.to_str().unwrap(), ner.to_str().unwrap());
    ok_json(
        &["ner", "train", "--train", c, "--out", n, "--json"],
        &cache,
    );
    let base = format!(
        "[[model]]\nname = \"sentiment\"\nbundle = {bundle:?}\n\n[entity_model]\nbundle = {n:?}\n"
    );
    let config = write_file(
        dir.path(),
        "monitor.toml",
        &format!("{base}types = [\"ORG\"]\n"),
    );
    let db = dir.path().join("monitor.db");
    let monitor = Running::start(&config, db.to_str().unwrap(), &cache);
    let events = json!([
        {"id": "1", "time": 100, "text": "Carol works at Globex in Rome ."},
        {"id": "2", "time": 100, "text": "Bob works at Initech in Paris ."},
        {"id": "3", "time": 100, "text": "David works at Globex in Oslo .", "entity": "sender-named"},
    ]);
    assert_eq!(
        monitor
            .call("POST", "/events", events.to_string().as_bytes())
            .status,
        200
    );
    monitor.wait_settled(3);
    let entities = monitor.call("GET", "/entities", b"").json();
    let names: BTreeMap<String, u64> = entities
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["entity"].as_str().unwrap().to_string(),
                e["events"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [("Globex", 1), ("Initech", 1), ("sender-named", 1)];
    assert_eq!(
        names,
        expected.iter().map(|(e, n)| (e.to_string(), *n)).collect()
    );
    drop(monitor);

    // A type the tagger does not know stops the start, naming the field.
    let bad = write_file(
        dir.path(),
        "bad.toml",
        &format!("{base}types = [\"COMPANY\"]\n"),
    );
    let out = lmfuse(
        &[
            "monitor",
            "ingest",
            "--config",
            bad.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--input",
            "-",
        ],
        &cache,
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("entity_model.bundle") && err.contains("COMPANY"),
        "{err}"
    );
}

#[test]
fn a_scheduled_retrain_runs_once_enough_corrections_arrived() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let schedule = "retrain_every = \"1s\"\nmin_feedback = 200\n";
    let db = dir.path().join("monitor.db");
    let (monitor, _) = parcel_monitor(dir.path(), db.to_str().unwrap(), &model, &cache, schedule);
    let versions = |m: &Running| m.call("GET", "/models", b"").json()[0]["versions"].clone();
    // Too few corrections: nothing happens.
    let few: Vec<Value> = (0..100)
        .map(|i| json!({"id": format!("s{i}"), "label": parcel_text(i).1}))
        .collect();
    monitor.call("POST", "/feedback", Value::from(few).to_string().as_bytes());
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(versions(&monitor).as_array().unwrap().len(), 1);
    let more: Vec<Value> = (100..300)
        .map(|i| json!({"id": format!("s{i}"), "label": parcel_text(i).1}))
        .collect();
    monitor.call(
        "POST",
        "/feedback",
        Value::from(more).to_string().as_bytes(),
    );
    let started = Instant::now();
    while monitor.call("GET", "/models", b"").json()[0]["serving"] != 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no scheduled retrain: {}",
            versions(&monitor)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let v = versions(&monitor);
    assert_eq!(v[1]["report"]["promoted"], true, "{v:#}");
    // A retrain needs new corrections: no second one without them.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(versions(&monitor).as_array().unwrap().len(), 2);
}
