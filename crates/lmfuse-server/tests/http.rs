//! Every route and every status of the error map, against a fake backend (no model, fast).

use lmfuse_server::client::{self, Connection, Target};
use lmfuse_server::{
    AnswerQuery, Backend, BackendError, Oos, OverLength, Prediction, Reloader, SearchHit,
    SearchQuery, ServedTask, Server, ServerConfig, TokenCount, TokenEntity,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tokens: words + 2, at most 12 (longer texts are truncated). Predicts `pos` when the text says
/// "good". `sleep:MS` sleeps; `fail` errs; `panic` panics; `zzz` is out of scope.
struct Fake {
    name: &'static str,
    batches: Mutex<Vec<usize>>,
}

impl Fake {
    fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            batches: Mutex::new(Vec::new()),
        })
    }
}

impl Backend for Fake {
    fn count_tokens(&self, texts: &[&str]) -> Result<Vec<TokenCount>, BackendError> {
        Ok(texts
            .iter()
            .map(|t| {
                let n = t.split_whitespace().count() + 2;
                TokenCount {
                    tokens: n.min(12),
                    truncated: n > 12,
                }
            })
            .collect())
    }

    fn predict(&self, texts: &[&str]) -> Result<Vec<Prediction>, BackendError> {
        self.batches.lock().unwrap().push(texts.len());
        let mut out = Vec::new();
        for t in texts {
            if let Some(ms) = t.strip_prefix("sleep:") {
                std::thread::sleep(Duration::from_millis(ms.trim().parse().unwrap()));
            }
            if *t == "fail" {
                return Err(BackendError::Inference("the fake failed".into()));
            }
            if *t == "panic" {
                panic!("the fake panicked");
            }
            let p = if t.contains("good") { 0.9 } else { 0.2 };
            let (pos, neg) = (format!("{}pos", self.name), format!("{}neg", self.name));
            out.push(Prediction {
                label: if p > 0.5 { pos.clone() } else { neg.clone() },
                probabilities: BTreeMap::from([(neg, 1.0 - p), (pos, p)]),
                oos: t.contains("zzz").then_some(Oos {
                    is_oos: true,
                    score: 3.5,
                }),
            });
        }
        Ok(out)
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BackendError> {
        Ok(texts
            .iter()
            .map(|t| vec![t.len() as f32, t.split_whitespace().count() as f32, 1.0])
            .collect())
    }

    /// Ids under 1000 are in the vocabulary; `[CLS]` 1 and `[SEP]` 2 frame each input.
    fn count_token_ids(&self, ids: &[&[u32]]) -> Result<Vec<TokenCount>, BackendError> {
        if let Some(bad) = ids.iter().flat_map(|l| l.iter()).find(|&&id| id >= 1000) {
            return Err(BackendError::Unsupported(format!(
                "token id {bad} is outside the vocabulary"
            )));
        }
        Ok(ids
            .iter()
            .map(|l| TokenCount {
                tokens: (l.len() + 2).min(12),
                truncated: l.len() + 2 > 12,
            })
            .collect())
    }

    /// `[ids, sum of ids, 1]`.
    fn embed_token_ids(&self, ids: &[&[u32]]) -> Result<Vec<Vec<f32>>, BackendError> {
        Ok(ids
            .iter()
            .map(|l| vec![l.len() as f32, l.iter().sum::<u32>() as f32, 1.0])
            .collect())
    }

    fn info(&self) -> Value {
        json!({"model": {"labels": ["neg", "pos"]}, "name": self.name})
    }

    fn model_name(&self) -> String {
        format!("fake{}", self.name)
    }
}

/// A server on an ephemeral loopback port, stopped on drop.
struct Running {
    addr: SocketAddr,
    server: Server,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Running {
    fn start(config: ServerConfig, backend: Option<Arc<dyn Backend>>) -> Self {
        Self::start_with(config, backend, None)
    }

    fn start_with(
        config: ServerConfig,
        backend: Option<Arc<dyn Backend>>,
        reloader: Option<Arc<Reloader>>,
    ) -> Self {
        let server = Server::new(config, reloader).unwrap();
        if let Some(b) = backend {
            server.set_backend(b);
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let s = server.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                s.serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .map_err(|e| e.to_string())
            })
        });
        let addr = addr_rx.recv().unwrap();
        Self {
            addr,
            server,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn target(&self, path: &str) -> Target {
        Target::parse(&format!("http://{}{path}", self.addr)).unwrap()
    }

    fn call(&self, method: &str, path: &str, body: &[u8]) -> client::Response {
        client::request(&self.target(path), method, &[], body).unwrap()
    }

    fn post(&self, path: &str, body: Value) -> client::Response {
        self.call("POST", path, body.to_string().as_bytes())
    }

    /// Sends the shutdown signal without waiting.
    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server and waits until `serve` returns; its result.
    fn shutdown(&mut self) -> Result<(), String> {
        self.signal_stop();
        match self.thread.take() {
            Some(t) => t.join().unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = self.shutdown();
        }
    }
}

/// Opens a connection and sends `head` (a request head, blank line included) and the first
/// `sent` bytes of `body`; the rest is for the caller to send (or not).
fn partial(addr: SocketAddr, head: &str, body: &[u8], sent: usize) -> std::net::TcpStream {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&body[..sent]).unwrap();
    c.flush().unwrap();
    c
}

/// Reads one response from `c` (the server closes or keeps the connection: both fine).
fn read_one(c: std::net::TcpStream) -> client::Response {
    let mut r = std::io::BufReader::new(c);
    let mut bytes = Vec::new();
    // Read until the server closes or the timeout; then parse what came.
    let _ = std::io::Read::read_to_end(&mut r, &mut bytes);
    client::parse_response(&bytes).unwrap_or_else(|e| panic!("{e}: {bytes:?}"))
}

fn post_head(path: &str, len: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
}

fn fast() -> ServerConfig {
    ServerConfig {
        shutdown_grace: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

/// Asserts the status and the JSON error body `{error, type}`.
fn assert_error(r: &client::Response, status: u16, kind: &str) -> String {
    let j = r.json();
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(j["type"], kind, "{}", r.text());
    let msg = j["error"].as_str().expect("an error message").to_string();
    assert!(!msg.is_empty());
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    msg
}

/// Asserts the status and OpenAI's JSON error body `{error: {message, type, param, code}}`.
fn assert_openai_error(r: &client::Response, status: u16, code: &str) -> Value {
    let j = r.json();
    assert_eq!(r.status, status, "{}", r.text());
    let e = &j["error"];
    assert_eq!(e["code"], code, "{}", r.text());
    assert!(!e["message"].as_str().expect("a message").is_empty());
    assert!(e["type"].is_string() && e.get("param").is_some(), "{j}");
    assert_eq!(j.as_object().unwrap().len(), 1, "only `error`: {j}");
    e.clone()
}

/// The little-endian `f32`s of a base64 string (standard alphabet, padded).
fn decode_base64_f32(s: &str) -> Vec<f32> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = A.iter().position(|&a| a == c).expect("a base64 character") as u8;
        bits.extend((0..6).rev().map(|i| (v >> i) & 1));
    }
    let bytes: Vec<u8> = bits
        .chunks_exact(8)
        .map(|b| b.iter().fold(0u8, |acc, bit| (acc << 1) | bit))
        .collect();
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn every_endpoint_answers() {
    let s = Running::start(fast(), Some(Fake::new("")));
    let h = s.call("GET", "/health", b"");
    assert_eq!((h.status, h.json()), (200, json!({"status": "ok"})));
    let r = s.call("GET", "/ready", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ready");

    // lmfuse's answer: label, probabilities, out-of-scope verdict.
    let one = s.post("/classify", json!({"inputs": "a good phone"}));
    assert_eq!(one.status, 200, "{}", one.text());
    let j = one.json();
    assert_eq!(j["label"], "pos");
    assert!((j["probabilities"]["pos"].as_f64().unwrap() - 0.9).abs() < 1e-6);
    assert!(
        j.get("oos").is_none(),
        "no oos unless the bundle has it: {j}"
    );
    let many = s.post("/classify", json!({"inputs": ["good", "bad", "zzz"]}));
    let j = many.json();
    assert_eq!(many.status, 200);
    assert_eq!(j.as_array().unwrap().len(), 3);
    assert_eq!(j[1]["label"], "neg");
    assert_eq!(j[2]["oos"], json!({"is_oos": true, "score": 3.5}));

    let e = s.post(
        "/embed",
        json!({"inputs": ["ab c", "x"], "normalize": false}),
    );
    assert_eq!(e.status, 200, "{}", e.text());
    assert_eq!(e.json(), json!([[4.0, 2.0, 1.0], [1.0, 1.0, 1.0]]));
    let e1 = s.post("/embed", json!({"inputs": "ab c", "normalize": false}));
    assert_eq!(e1.json(), json!([[4.0, 2.0, 1.0]]));

    let o = s.post(
        "/v1/embeddings",
        json!({"input": ["ab c", "x"], "model": "any"}),
    );
    assert_eq!(o.status, 200, "{}", o.text());
    let j = o.json();
    assert_eq!(j["object"], "list");
    assert_eq!(j["model"], "fake");
    assert_eq!(j["data"][1]["index"], 1);
    assert_eq!(j["data"][1]["object"], "embedding");
    // Unit length, as OpenAI's vectors are: [4, 2, 1] / sqrt(21).
    let norm = 21f64.sqrt();
    let v: Vec<f64> = j["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    for (x, y) in v.iter().zip([4.0 / norm, 2.0 / norm, 1.0 / norm]) {
        assert!((x - y).abs() < 1e-6, "{v:?}");
    }
    assert_eq!(j["usage"]["prompt_tokens"], 4 + 3);
    let m = s.call("GET", "/v1/models", b"");
    assert_eq!(m.status, 200, "{}", m.text());
    let j = m.json();
    assert_eq!(j["object"], "list");
    assert_eq!(j["data"][0]["id"], "fake");
    assert_eq!(j["data"][0]["object"], "model");
    assert!(
        j["data"][0]["created"].as_u64().unwrap() > 1_600_000_000,
        "{j}"
    );

    let i = s.call("GET", "/info", b"");
    assert_eq!(i.status, 200);
    let j = i.json();
    assert_eq!(j["model"]["model"]["labels"], json!(["neg", "pos"]));
    assert_eq!(j["server"]["limits"]["max_batch_size"], 32);

    let page = s.call("GET", "/", b"");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let html = page.text();
    assert!(html.contains("<textarea") && html.contains("/classify"));
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no external assets"
    );

    let m = s.call("GET", "/metrics", b"");
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.text();
    for needle in [
        "lmfuse_requests_total{route=\"/classify\",status=\"200\"} 2",
        "lmfuse_requests_total{route=\"/v1/models\",status=\"200\"} 1",
        "lmfuse_queue_seconds_count",
        "lmfuse_inference_seconds_bucket{le=\"+Inf\"}",
        "lmfuse_batch_size_count",
        "lmfuse_ready 1",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }
}

#[test]
fn bad_input_table_gets_4xx_json_and_the_server_stays_healthy() {
    let s = Running::start(fast(), Some(Fake::new("")));
    let big_text = "a".repeat(1_000_000);
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "malformed JSON",
            b"{\"inputs\": ".to_vec(),
            400,
            "invalid_json",
            "JSON",
        ),
        ("not JSON", b"hello".to_vec(), 400, "invalid_json", "JSON"),
        ("empty body", Vec::new(), 400, "invalid_json", "JSON"),
        (
            "unpaired surrogate",
            br#"{"inputs": "caf\ud800e"}"#.to_vec(),
            400,
            "invalid_json",
            "surrogate",
        ),
        (
            "unpaired low surrogate",
            br#"{"inputs": ["ok", "\udc00"]}"#.to_vec(),
            400,
            "invalid_json",
            "surrogate",
        ),
        (
            "invalid UTF-8",
            b"{\"inputs\": \"caf\xc3\"}".to_vec(),
            400,
            "invalid_utf8",
            "UTF-8",
        ),
        (
            "wrong JSON type",
            br#"{"inputs": 5}"#.to_vec(),
            422,
            "invalid_input",
            "a number",
        ),
        (
            "top-level list",
            br#"["a"]"#.to_vec(),
            422,
            "invalid_input",
            "object",
        ),
        (
            "list of numbers",
            br#"{"inputs": ["a", 1]}"#.to_vec(),
            422,
            "invalid_input",
            "inputs[1]",
        ),
        (
            "missing field",
            br#"{"text": "a"}"#.to_vec(),
            422,
            "invalid_input",
            "missing",
        ),
        (
            "empty batch",
            br#"{"inputs": []}"#.to_vec(),
            400,
            "empty_batch",
            "empty",
        ),
        (
            "1 MB text",
            json!({"inputs": big_text}).to_string().into_bytes(),
            413,
            "text_too_long",
            "max_input_chars",
        ),
        (
            "batch over the limit",
            json!({"inputs": vec!["x"; 33]}).to_string().into_bytes(),
            413,
            "batch_too_large",
            "max_batch_size",
        ),
        (
            "invalid UTF-8",
            b"{\"inputs\": \"caf\xe9\"}".to_vec(),
            400,
            "invalid_utf8",
            "UTF-8",
        ),
    ];
    for (name, body, status, kind, needle) in cases {
        for path in ["/predict", "/embed"] {
            let r = s.call("POST", path, &body);
            let msg = assert_error(&r, status, kind);
            assert!(
                msg.contains(needle),
                "{name} on {path}: {msg:?} lacks {needle:?}"
            );
        }
    }
    // Body over the limit, declared by Content-Length.
    let huge = json!({"inputs": "a".repeat(3_000_000)}).to_string();
    let r = s.call("POST", "/predict", huge.as_bytes());
    let msg = assert_error(&r, 413, "payload_too_large");
    assert!(msg.contains("max_body_bytes"), "{msg}");
    // Body over the limit, chunked (no length up front): found while reading.
    let mut chunked =
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..40 {
        chunked.extend_from_slice(format!("{:x}\r\n", 100_000).as_bytes());
        chunked.extend_from_slice(&vec![b'a'; 100_000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let raw = client::raw(s.addr, chunked, Duration::from_secs(10)).unwrap();
    let r = client::parse_response(&raw).unwrap();
    assert_error(&r, 413, "payload_too_large");
    // Unknown route, unknown method.
    let r = s.call("GET", "/nope", b"");
    assert!(assert_error(&r, 404, "not_found").contains("/nope"));
    let r = s.call("POST", "/predict/extra", b"{}");
    assert_error(&r, 404, "not_found");
    let r = s.call("GET", "/predict", b"");
    assert!(assert_error(&r, 405, "method_not_allowed").contains("GET"));
    let r = s.call("DELETE", "/health", b"");
    assert_error(&r, 405, "method_not_allowed");
    // Model failures: 500 with a message, and the server carries on.
    let r = s.post("/predict", json!({"inputs": ["ok", "fail"]}));
    assert!(assert_error(&r, 500, "backend_error").contains("the fake failed"));
    let r = s.post("/predict", json!({"inputs": "panic"}));
    assert!(assert_error(&r, 500, "backend_error").contains("panicked"));

    let h = s.call("GET", "/health", b"");
    assert_eq!(h.status, 200);
    let ok = s.post("/predict", json!({"inputs": "good"}));
    assert_eq!(ok.status, 200, "{}", ok.text());
    // The failure counter has each reason.
    let metrics = s.call("GET", "/metrics", b"").text();
    assert!(
        metrics.contains("lmfuse_request_failures_total{reason=\"invalid_utf8\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lmfuse_request_failures_total{reason=\"payload_too_large\"} 2"),
        "{metrics}"
    );
}

#[test]
fn malformed_http_does_not_kill_the_server() {
    let s = Running::start(fast(), Some(Fake::new("")));
    let garbage: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\xff\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"POST /predict HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n".to_vec(),
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"in".to_vec(),
        format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100_000)).into_bytes(),
        format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(200_000)).into_bytes(),
    ];
    for g in garbage {
        let _ = client::raw(s.addr, g, Duration::from_millis(500));
    }
    // Refused with a 4xx, not just survived.
    let overflow =
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n";
    let raw = client::raw(s.addr, overflow.to_vec(), Duration::from_secs(2)).unwrap();
    let r = client::parse_response(&raw).unwrap();
    assert!((400..500).contains(&r.status), "{}", r.status);
    let bad_chunk =
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    let raw = client::raw(s.addr, bad_chunk.to_vec(), Duration::from_secs(2)).unwrap();
    let r = client::parse_response(&raw).unwrap();
    let msg = assert_error(&r, 400, "invalid_body");
    assert!(msg.contains("cannot read the body"), "{msg}");
    assert!(s.server.metrics().failures("invalid_body") >= 1);
    assert_eq!(s.call("GET", "/health", b"").status, 200);
    assert_eq!(s.post("/predict", json!({"inputs": "good"})).status, 200);
}

#[test]
fn token_limit_truncates_or_rejects() {
    let long = "w ".repeat(30);
    let s = Running::start(fast(), Some(Fake::new("")));
    let r = s.post("/predict", json!({"inputs": long}));
    assert_eq!(r.status, 200, "truncate is the default: {}", r.text());
    let o = s.post("/v1/embeddings", json!({"input": long}));
    assert_eq!(
        o.json()["usage"]["prompt_tokens"],
        12,
        "counted after truncation"
    );

    let s = Running::start(
        ServerConfig {
            over_length: OverLength::Reject,
            ..fast()
        },
        Some(Fake::new("")),
    );
    let r = s.post("/predict", json!({"inputs": ["short", long]}));
    let msg = assert_error(&r, 413, "too_many_tokens");
    assert!(msg.contains("text 1") && msg.contains("12"), "{msg}");
    assert_eq!(s.post("/predict", json!({"inputs": "short"})).status, 200);
}

#[test]
fn api_key_guards_everything_but_health_ready_and_the_page() {
    let s = Running::start(
        ServerConfig {
            api_key: Some("s3cret".into()),
            ..fast()
        },
        Some(Fake::new("")),
    );
    for (method, path) in [
        ("POST", "/"),
        ("POST", "/predict"),
        ("POST", "/classify"),
        ("POST", "/embed"),
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/models"),
        ("GET", "/info"),
        ("GET", "/metrics"),
        ("POST", "/admin/reload"),
    ] {
        let t = s.target(path);
        let r = s.call(method, path, b"{\"inputs\": \"x\"}");
        let wrong =
            client::request(&t, method, &[("Authorization", "Bearer nope")], b"{}").unwrap();
        for r in [&r, &wrong] {
            if path.starts_with("/v1/") {
                assert_openai_error(r, 401, "invalid_api_key");
            } else {
                assert_error(r, 401, "unauthorized");
            }
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        }
    }
    let t = s.target("/predict");
    let ok = client::request(
        &t,
        "POST",
        &[("Authorization", "Bearer s3cret")],
        br#"{"inputs": "good"}"#,
    )
    .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    for path in ["/health", "/ready", "/"] {
        assert_eq!(s.call("GET", path, b"").status, 200, "{path}");
    }
}

#[test]
fn not_ready_until_a_backend_is_installed() {
    let s = Running::start(fast(), None);
    assert_eq!(s.call("GET", "/health", b"").status, 200);
    assert_error(&s.call("GET", "/ready", b""), 503, "not_ready");
    assert_error(
        &s.post("/predict", json!({"inputs": "x"})),
        503,
        "not_ready",
    );
    assert_error(&s.call("GET", "/info", b""), 503, "not_ready");
    s.server.set_backend(Fake::new(""));
    assert_eq!(s.call("GET", "/ready", b"").status, 200);
    assert_eq!(s.post("/predict", json!({"inputs": "x"})).status, 200);
}

/// Runs `n` concurrent POSTs of `body` to `path`; returns the responses.
fn concurrent(s: &Running, path: &str, bodies: Vec<Value>) -> Vec<client::Response> {
    let target = s.target(path);
    let handles: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            let t = target.clone();
            std::thread::spawn(move || {
                client::request(&t, "POST", &[], b.to_string().as_bytes()).unwrap()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn a_full_queue_answers_429_and_nothing_else() {
    let s = Running::start(
        ServerConfig {
            max_queue: 2,
            ..fast()
        },
        Some(Fake::new("")),
    );
    let responses = concurrent(
        &s,
        "/predict",
        (0..16).map(|_| json!({"inputs": "sleep:150"})).collect(),
    );
    let ok = responses.iter().filter(|r| r.status == 200).count();
    let busy: Vec<_> = responses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok + busy.len(), 16, "only 200 and 429");
    assert!(ok >= 2 && !busy.is_empty(), "ok {ok}, 429 {}", busy.len());
    let msg = assert_error(busy[0], 429, "overloaded");
    assert!(msg.contains("max_queue"), "{msg}");
    // The failure counter matches what the clients saw, and the server serves again.
    assert_eq!(s.server.metrics().failures("overloaded"), busy.len() as u64);
    assert_eq!(s.call("GET", "/health", b"").status, 200);
    assert_eq!(s.post("/predict", json!({"inputs": "good"})).status, 200);
}

#[test]
fn a_slow_request_times_out_with_504_and_the_worker_moves_on() {
    let fake = Fake::new("");
    let s = Running::start(
        ServerConfig {
            request_timeout: Duration::from_millis(150),
            ..fast()
        },
        Some(fake.clone()),
    );
    let started = Instant::now();
    let r = s.post("/predict", json!({"inputs": "sleep:600"}));
    let msg = assert_error(&r, 504, "timeout");
    assert!(msg.contains("150 ms"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_millis(550),
        "answered at the deadline"
    );
    // Let the worker finish the abandoned 600 ms batch.
    std::thread::sleep(Duration::from_millis(600));
    let dropped_before = s.server.metrics().dropped.load(Ordering::Relaxed);
    // Queued behind a slow one: out of time before it runs, then dropped unrun.
    let t = s.target("/predict");
    let slow = std::thread::spawn(move || {
        client::request(&t, "POST", &[], br#"{"inputs": "sleep:400"}"#).unwrap()
    });
    // Once the slow one runs (the fake logs a batch as it starts), queue another behind it.
    let batches = fake.batches.lock().unwrap().len();
    let waiting = Instant::now();
    while fake.batches.lock().unwrap().len() == batches {
        assert!(
            waiting.elapsed() < Duration::from_secs(5),
            "the slow one never ran"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let queued = s.post("/predict", json!({"inputs": "x"}));
    assert_error(&queued, 504, "timeout");
    assert_error(&slow.join().unwrap(), 504, "timeout");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.post("/predict", json!({"inputs": "good"})).status, 200);
    let dropped = s.server.metrics().dropped.load(Ordering::Relaxed);
    assert!(
        dropped > dropped_before,
        "the queued request was not dropped"
    );
    let m = s.call("GET", "/metrics", b"").text();
    let line = m
        .lines()
        .find(|l| l.starts_with("lmfuse_dropped_total "))
        .unwrap_or_else(|| panic!("{m}"));
    let n: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(n >= 1, "{line}");
}

#[test]
fn concurrent_requests_are_merged_into_batches() {
    let fake = Fake::new("");
    let s = Running::start(fast(), Some(fake.clone()));
    // The first request holds the worker; the others queue and then run as one batch.
    let mut bodies = vec![json!({"inputs": "sleep:300"})];
    bodies.extend((0..8).map(|i| json!({"inputs": [format!("text {i}"), "good"]})));
    let target = s.target("/predict");
    let first = {
        let t = target.clone();
        let b = bodies.remove(0);
        std::thread::spawn(move || {
            client::request(&t, "POST", &[], b.to_string().as_bytes()).unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let rs = concurrent(&s, "/predict", bodies);
    assert_eq!(first.join().unwrap().status, 200);
    for (i, r) in rs.iter().enumerate() {
        assert_eq!(r.status, 200);
        // Each request gets its own texts back, in order.
        let j = r.json();
        assert_eq!(j.as_array().unwrap().len(), 2);
        assert_eq!(j[1][0]["label"], "pos", "request {i}");
    }
    let batches = fake.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 1 + 16);
    assert!(
        batches.iter().any(|&b| b >= 4),
        "no merged batch: {batches:?}"
    );
}

#[test]
fn reload_swaps_the_model_without_dropping_requests() {
    let reloader: Arc<Reloader> = Arc::new(|model: Option<&str>| match model {
        Some("broken") => Err(BackendError::Load("no such bundle".into())),
        _ => {
            std::thread::sleep(Duration::from_millis(200));
            Ok(Fake::new("v2-") as Arc<dyn Backend>)
        }
    });
    let s = Running::start_with(fast(), Some(Fake::new("v1-")), Some(reloader));
    assert_eq!(
        s.post("/classify", json!({"inputs": "good"})).json()["label"],
        "v1-pos"
    );
    // Requests keep flowing while the new model loads.
    let target = s.target("/classify");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (t, stop) = (target.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = Connection::open(t.addr, &t.host, Duration::from_secs(10)).unwrap();
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = c
                    .send("POST", "/classify", &[], br#"{"inputs": "good"}"#)
                    .unwrap();
                statuses.push((
                    r.status,
                    r.json()["label"].as_str().unwrap_or("").to_string(),
                ));
            }
            statuses
        })
    };
    let r = s.post("/admin/reload", json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"]["name"], "v2-");
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.join().unwrap();
    assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
    assert!(statuses.iter().any(|(_, l)| l == "v1-pos"));
    assert_eq!(statuses.last().unwrap().1, "v2-pos");
    // Without an API key, another folder is refused before anything is loaded.
    let r = s.post("/admin/reload", json!({"model": "broken"}));
    let msg = assert_error(&r, 403, "forbidden");
    assert!(msg.contains("--api-key"), "{msg}");
    assert_eq!(
        s.post("/classify", json!({"inputs": "good"})).json()["label"],
        "v2-pos"
    );
    let m = s.call("GET", "/metrics", b"").text();
    assert!(m.contains("lmfuse_reloads_total{result=\"ok\"} 1"), "{m}");
    assert!(
        m.contains("lmfuse_reloads_total{result=\"failed\"} 0"),
        "{m}"
    );
}

#[test]
fn reload_wants_json_a_key_for_other_folders_and_runs_one_at_a_time() {
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reloader: Arc<Reloader> = {
        let (running, most, seen) = (running.clone(), most.clone(), seen.clone());
        Arc::new(move |model: Option<&str>| {
            seen.lock().unwrap().push(model.map(str::to_string));
            if model == Some("broken") {
                return Err(BackendError::Load("no such bundle".into()));
            }
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(400));
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(Fake::new("v2-") as Arc<dyn Backend>)
        })
    };
    let s = Running::start_with(
        ServerConfig {
            api_key: Some("k".into()),
            ..fast()
        },
        Some(Fake::new("v1-")),
        Some(reloader),
    );
    let t = s.target("/admin/reload");
    let key = ("Authorization", "Bearer k");
    let send = |ct: &str, body: &[u8]| {
        client::request(&t, "POST", &[key, ("Content-Type", ct)], body).unwrap()
    };
    // What a web page can send without a preflight: refused, nothing loaded.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let r = send(ct, br#"{"model": "/tmp/evil"}"#);
        assert!(assert_error(&r, 415, "unsupported_media_type").contains("application/json"));
    }
    let r = client::request(&t, "POST", &[key], b"").unwrap();
    assert_error(&r, 415, "unsupported_media_type");
    // With a key, another folder is allowed; a failed reload keeps the serving model.
    let r = send("application/json; charset=utf-8", br#"{"model": "broken"}"#);
    assert!(assert_error(&r, 422, "reload_failed").contains("no such bundle"));
    let r = send("application/json", br#"{"model": 3}"#);
    assert_error(&r, 422, "invalid_input");
    assert_eq!(*seen.lock().unwrap(), vec![Some("broken".to_string())]);

    // A client that goes away during a load does not let a second load start beside it.
    let head = "POST /admin/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n";
    let gone = partial(s.addr, head, b"{}", 2);
    std::thread::sleep(Duration::from_millis(100));
    drop(gone);
    std::thread::sleep(Duration::from_millis(50));
    let r = send("application/json", b"{}");
    assert!(assert_error(&r, 409, "reload_in_progress").contains("in progress"));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(most.load(Ordering::SeqCst), 1, "two loads ran at once");
    // The abandoned reload still completed and swapped the model in.
    let p = client::request(
        &s.target("/classify"),
        "POST",
        &[key],
        br#"{"inputs": "good"}"#,
    )
    .unwrap();
    assert_eq!(p.json()["label"], "v2-pos");
    let r = send("application/json", b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.server.metrics().failures("reload_in_progress"), 1);
}

#[test]
fn admission_is_taken_before_the_body_is_read() {
    let s = Running::start(
        ServerConfig {
            max_queue: 2,
            ..fast()
        },
        Some(Fake::new("")),
    );
    let body = br#"{"inputs": "good"}"#;
    // Two clients send their heads and half their bodies, then stall: they hold both places.
    let stalled: Vec<_> = (0..2)
        .map(|_| partial(s.addr, &post_head("/predict", body.len()), body, 5))
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let r = s.post("/predict", json!({"inputs": "good"}));
    assert_error(&r, 429, "overloaded");
    // Once they finish, they are served and the places are free again.
    for mut c in stalled {
        std::io::Write::write_all(&mut c, &body[5..]).unwrap();
        assert_eq!(read_one(c).status, 200);
    }
    assert_eq!(s.post("/predict", json!({"inputs": "good"})).status, 200);
}

#[test]
fn a_body_that_never_arrives_gets_408() {
    let s = Running::start(
        ServerConfig {
            request_timeout: Duration::from_millis(300),
            ..fast()
        },
        Some(Fake::new("")),
    );
    let started = Instant::now();
    // Content-Length: 10, four bytes sent, then nothing.
    let c = partial(s.addr, &post_head("/predict", 10), b"{\"in", 4);
    let r = read_one(c);
    let msg = assert_error(&r, 408, "body_timeout");
    assert!(
        msg.contains("300 ms") && msg.contains("request_timeout_ms"),
        "{msg}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(s.server.open_requests(), 0);
    assert_eq!(s.post("/predict", json!({"inputs": "good"})).status, 200);
}

#[test]
fn a_request_over_the_batch_token_budget_gets_413() {
    let s = Running::start(
        ServerConfig {
            max_batch_tokens: 20,
            ..fast()
        },
        Some(Fake::new("")),
    );
    // 3 texts of 10 tokens each (8 words + 2).
    let text = "w w w w w w w w";
    let r = s.post("/predict", json!({"inputs": [text, text, text]}));
    let msg = assert_error(&r, 413, "too_many_batch_tokens");
    assert!(
        msg.contains("30 tokens") && msg.contains("max_batch_tokens"),
        "{msg}"
    );
    let r = s.post("/embed", json!({"inputs": [text, text, text]}));
    assert_error(&r, 413, "too_many_batch_tokens");
    assert_eq!(
        s.post("/predict", json!({"inputs": [text, text]})).status,
        200
    );
}

#[test]
fn a_request_still_arriving_at_shutdown_is_served() {
    let mut s = Running::start(fast(), Some(Fake::new("")));
    let body = br#"{"inputs": "good"}"#;
    let mut c = partial(s.addr, &post_head("/predict", body.len()), body, 5);
    std::thread::sleep(Duration::from_millis(100));
    s.signal_stop();
    std::thread::sleep(Duration::from_millis(100));
    std::io::Write::write_all(&mut c, &body[5..]).unwrap();
    let r = read_one(c);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["label"], "pos");
    s.shutdown().unwrap();
}

#[test]
fn an_expired_grace_period_is_an_error() {
    let mut s = Running::start(
        ServerConfig {
            shutdown_grace: Duration::from_millis(200),
            ..fast()
        },
        Some(Fake::new("")),
    );
    let t = s.target("/predict");
    let slow = std::thread::spawn(move || {
        client::request(&t, "POST", &[], br#"{"inputs": "sleep:1500"}"#)
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.server.open_requests(), 1);
    let e = s.shutdown().unwrap_err();
    assert!(e.contains("grace period") && e.contains("1 request"), "{e}");
    let _ = slow.join();
}

#[test]
fn shutdown_lets_in_flight_requests_finish() {
    let mut s = Running::start(fast(), Some(Fake::new("")));
    let t = s.target("/predict");
    let in_flight = std::thread::spawn(move || {
        client::request(&t, "POST", &[], br#"{"inputs": "sleep:400"}"#).unwrap()
    });
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    s.shutdown()
        .expect("everything finished within the grace period");
    let r = in_flight.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "serve waited for it"
    );
    // The listener is closed afterwards.
    assert!(std::net::TcpStream::connect_timeout(&s.addr, Duration::from_millis(300)).is_err());
}

#[test]
fn target_refuses_non_loopback_hosts() {
    assert!(Target::parse("http://127.0.0.1:8080/predict").is_ok());
    assert!(Target::parse("http://localhost:8080").is_ok());
    let e = Target::parse("http://10.1.2.3:80/").unwrap_err();
    assert!(e.to_string().contains("loopback"), "{e}");
    assert!(Target::parse("https://127.0.0.1/").is_err());
}

#[test]
fn the_client_tells_a_dropped_request_from_one_never_sent() {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // A server that reads a whole request head, then hangs up without answering.
    let server = std::thread::spawn(move || {
        let (c, _) = listener.accept().unwrap();
        let mut r = BufReader::new(c);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
    });
    let mut c = Connection::open(addr, "x", Duration::from_secs(5)).unwrap();
    let e = c.send("GET", "/", &[], b"").unwrap_err();
    assert!(client::is_no_response(&e), "{e}");
    server.join().unwrap();
    // Nothing listens any more: refused, not dropped.
    let e = Connection::open(addr, "x", Duration::from_secs(5))
        .and_then(|mut c| c.send("GET", "/", &[], b""))
        .unwrap_err();
    assert!(!client::is_no_response(&e), "{e}");
}

/// The labels of one ranked TEI list.
fn labels(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect()
}

#[test]
fn tei_routes_answer_in_tei_shapes() {
    let s = Running::start(fast(), Some(Fake::new("")));
    // /predict: a ranked list for a text, a list of them for a list (flat or TEI's nested form).
    let one = s.post("/predict", json!({"inputs": "a good phone"}));
    assert_eq!(one.status, 200, "{}", one.text());
    let j = one.json();
    assert_eq!(labels(&j), ["pos", "neg"]);
    assert!((j[0]["score"].as_f64().unwrap() - 0.9).abs() < 1e-6, "{j}");
    assert_eq!(
        j[0].as_object().unwrap().len(),
        2,
        "only label and score: {j}"
    );
    for inputs in [json!(["good", "bad"]), json!([["good"], ["bad"]])] {
        let j = s.post("/predict", json!({ "inputs": inputs })).json();
        assert_eq!(j.as_array().unwrap().len(), 2, "{j}");
        assert_eq!(
            (labels(&j[0]), labels(&j[1])),
            (vec!["pos", "neg"], vec!["neg", "pos"])
        );
    }
    // POST /: one list per input, also for a bare text (what InferenceClient reads); the
    // client's `parameters` are honoured.
    let j = s
        .post("/", json!({"inputs": "bad", "parameters": {}}))
        .json();
    assert_eq!(j.as_array().unwrap().len(), 1, "{j}");
    assert_eq!(labels(&j[0]), ["neg", "pos"]);
    let j = s
        .post(
            "/",
            json!({"inputs": "bad", "parameters": {"top_k": 1, "function_to_apply": "softmax"}}),
        )
        .json();
    assert_eq!(labels(&j[0]), ["neg"]);
    // GET / is still the playground.
    assert!(s.call("GET", "/", b"").text().contains("<textarea"));

    for (path, body, needle) in [
        (
            "/predict",
            json!({"inputs": "x", "raw_scores": true}),
            "`raw_scores`",
        ),
        (
            "/",
            json!({"inputs": "x", "parameters": {"function_to_apply": "sigmoid"}}),
            "\"sigmoid\"",
        ),
        (
            "/",
            json!({"inputs": "x", "parameters": {"top_k": 0}}),
            "`parameters.top_k`",
        ),
        (
            "/predict",
            json!({"inputs": [["a", "b"]]}),
            "`inputs[0]` holds 2 texts",
        ),
        (
            "/predict",
            json!({"inputs": [1, 2]}),
            "token ids are taken by /embed",
        ),
        (
            "/predict",
            json!({"inputs": "x", "truncation_direction": "left"}),
            "\"left\"",
        ),
        (
            "/embed",
            json!({"inputs": "x", "prompt_name": "query"}),
            "`prompt_name`",
        ),
        (
            "/embed",
            json!({"inputs": "x", "dimensions": 4}),
            "`dimensions` 4",
        ),
        (
            "/embed",
            json!({"inputs": "x", "normalize": 1}),
            "`normalize` must be true or false",
        ),
        (
            "/embed",
            json!({"inputs": "x", "encoding_format": "base64"}),
            "/v1/embeddings",
        ),
    ] {
        let msg = assert_error(&s.post(path, body.clone()), 422, "invalid_input");
        assert!(msg.contains(needle), "{path} {body}: {msg}");
    }
    // /embed: unit length by default, the model's own vectors with normalize=false; the
    // model's dimension may be asked for; token ids are embedded too.
    let j = s
        .post("/embed", json!({"inputs": ["ab c"], "dimensions": 3}))
        .json();
    let norm = 21f64.sqrt();
    assert!((j[0][0].as_f64().unwrap() - 4.0 / norm).abs() < 1e-6, "{j}");
    let j = s
        .post("/embed", json!({"inputs": [5, 6], "normalize": false}))
        .json();
    assert_eq!(j, json!([[2.0, 11.0, 1.0]]));
}

#[test]
fn tei_truncate_overrides_the_servers_over_length_for_one_request() {
    let long = "w ".repeat(30);
    let s = Running::start(fast(), Some(Fake::new("")));
    let r = s.post("/predict", json!({"inputs": long, "truncate": false}));
    let msg = assert_error(&r, 413, "too_many_tokens");
    assert!(msg.contains("text 0"), "{msg}");
    let s = Running::start(
        ServerConfig {
            over_length: OverLength::Reject,
            ..fast()
        },
        Some(Fake::new("")),
    );
    assert_error(
        &s.post("/embed", json!({"inputs": long})),
        413,
        "too_many_tokens",
    );
    let r = s.post("/embed", json!({"inputs": long, "truncate": true}));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn openai_embeddings_take_every_input_shape_and_base64() {
    let s = Running::start(fast(), Some(Fake::new("")));
    let floats = |r: &client::Response| -> Vec<Vec<f32>> {
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| match &d["embedding"] {
                Value::String(b64) => decode_base64_f32(b64),
                v => v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect(),
            })
            .collect()
    };
    let plain = floats(&s.post("/v1/embeddings", json!({"input": ["ab c", "x"]})));
    let b64 = s.post(
        "/v1/embeddings",
        json!({"input": ["ab c", "x"], "encoding_format": "base64", "model": "whatever"}),
    );
    assert!(
        b64.json()["data"][0]["embedding"].is_string(),
        "{}",
        b64.text()
    );
    assert_eq!(
        floats(&b64),
        plain,
        "base64 holds the same little-endian f32s"
    );
    let one = floats(&s.post(
        "/v1/embeddings",
        json!({"input": "ab c", "encoding_format": "float"}),
    ));
    assert_eq!(one, plain[..1]);
    // Token ids: one input as a list of integers, several as a list of such lists.
    let r = s.post("/v1/embeddings", json!({"input": [3, 4, 5]}));
    let ids = floats(&r);
    assert_eq!(ids.len(), 1);
    let n = (9f32 + 144.0 + 1.0).sqrt();
    assert!((ids[0][1] - 12.0 / n).abs() < 1e-6, "{ids:?}");
    assert_eq!(
        r.json()["usage"]["prompt_tokens"],
        5,
        "3 ids and 2 special tokens"
    );
    let many = floats(&s.post("/v1/embeddings", json!({"input": [[3, 4, 5], [7]]})));
    assert_eq!(many.len(), 2);
    assert_eq!(many[0], ids[0]);
    // The model's own dimension may be asked for.
    let r = s.post("/v1/embeddings", json!({"input": "x", "dimensions": 3}));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn every_failure_on_the_v1_routes_answers_in_openais_shape() {
    let s = Running::start(fast(), Some(Fake::new("")));
    let cases: Vec<(Vec<u8>, u16, &str, Value, &str)> = vec![
        (
            b"{\"input\": ".to_vec(),
            400,
            "invalid_json",
            Value::Null,
            "JSON",
        ),
        (
            br#"{"input": "\ud83d"}"#.to_vec(),
            400,
            "invalid_json",
            Value::Null,
            "surrogate",
        ),
        (
            br#"{"input": []}"#.to_vec(),
            400,
            "empty_batch",
            json!("input"),
            "empty",
        ),
        (
            json!({"input": vec!["x"; 33]}).to_string().into_bytes(),
            400,
            "batch_too_large",
            json!("input"),
            "max_batch_size",
        ),
        (
            br#"{"input": 5}"#.to_vec(),
            400,
            "invalid_input",
            json!("input"),
            "found a number",
        ),
        (
            br#"{"input": "x", "dimensions": 8}"#.to_vec(),
            400,
            "invalid_input",
            json!("dimensions"),
            "3-dimensional",
        ),
        (
            br#"{"input": "x", "encoding_format": "hex"}"#.to_vec(),
            400,
            "invalid_input",
            json!("encoding_format"),
            "\"float\" or \"base64\"",
        ),
        (
            br#"{"input": "x", "model": 7}"#.to_vec(),
            400,
            "invalid_input",
            json!("model"),
            "`model` must be a string",
        ),
        (
            br#"{"input": [1, 5000]}"#.to_vec(),
            400,
            "invalid_input",
            Value::Null,
            "token id 5000",
        ),
        (
            br#"{"input": [[1], "a"]}"#.to_vec(),
            400,
            "invalid_input",
            json!("input"),
            "`input[1]`",
        ),
    ];
    for (body, status, code, param, needle) in cases {
        let r = s.call("POST", "/v1/embeddings", &body);
        let e = assert_openai_error(&r, status, code);
        assert_eq!(e["type"], "invalid_request_error", "{e}");
        assert_eq!(e["param"], param, "{e}");
        assert!(e["message"].as_str().unwrap().contains(needle), "{e}");
    }
    let e = assert_openai_error(
        &s.call("GET", "/v1/embeddings", b""),
        405,
        "method_not_allowed",
    );
    assert!(e["message"].as_str().unwrap().contains("GET"), "{e}");
    assert_openai_error(
        &s.call("POST", "/v1/chat/completions", b"{}"),
        404,
        "not_found",
    );
    // The same failure elsewhere keeps lmfuse's shape.
    assert_error(
        &s.call("POST", "/embed", br#"{"inputs": []}"#),
        400,
        "empty_batch",
    );
    // Failures are counted by reason, whatever the shape.
    let m = s.call("GET", "/metrics", b"").text();
    assert!(
        m.contains("lmfuse_request_failures_total{reason=\"empty_batch\"} 2"),
        "{m}"
    );

    let s = Running::start(fast(), None);
    let e = assert_openai_error(
        &s.post("/v1/embeddings", json!({"input": "x"})),
        503,
        "not_ready",
    );
    assert_eq!(e["type"], "server_error");
    assert_openai_error(&s.call("GET", "/v1/models", b""), 503, "not_ready");
}

/// A named-entity tagger: every word that starts with a capital letter is a `PER` entity (an
/// all-capital one an `ORG`), with character offsets; `fail` errs. Counts its batches.
struct FakeTagger {
    batches: Mutex<Vec<usize>>,
}

impl FakeTagger {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            batches: Mutex::new(Vec::new()),
        })
    }

    fn entities(text: &str) -> Vec<TokenEntity> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            if chars[i].is_whitespace() {
                i += 1;
                continue;
            }
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.chars().next().is_some_and(char::is_uppercase) {
                let all_caps = word.chars().all(char::is_uppercase);
                out.push(TokenEntity {
                    entity_group: if all_caps { "ORG" } else { "PER" }.into(),
                    score: 0.75,
                    word,
                    start,
                    end: i,
                });
            }
        }
        out
    }
}

impl Backend for FakeTagger {
    fn count_tokens(&self, texts: &[&str]) -> Result<Vec<TokenCount>, BackendError> {
        Ok(texts
            .iter()
            .map(|t| TokenCount {
                tokens: t.split_whitespace().count(),
                truncated: false,
            })
            .collect())
    }

    fn predict(&self, _: &[&str]) -> Result<Vec<Prediction>, BackendError> {
        Err(BackendError::Unsupported(
            "the fake tagger cannot classify".into(),
        ))
    }

    fn embed(&self, _: &[&str]) -> Result<Vec<Vec<f32>>, BackendError> {
        Err(BackendError::Unsupported(
            "the fake tagger cannot embed".into(),
        ))
    }

    fn info(&self) -> Value {
        json!({"model": {"task": "ner", "types": ["ORG", "PER"]}})
    }

    fn model_name(&self) -> String {
        "fake-tagger".into()
    }

    fn task(&self) -> ServedTask {
        ServedTask::TokenClassification
    }

    fn tag(&self, texts: &[&str]) -> Result<Vec<Vec<TokenEntity>>, BackendError> {
        self.batches.lock().unwrap().push(texts.len());
        if texts.contains(&"fail") {
            return Err(BackendError::Inference("the fake tagger failed".into()));
        }
        Ok(texts.iter().map(|t| Self::entities(t)).collect())
    }
}

#[test]
fn a_tagger_answers_hugging_faces_token_classification_shape() {
    let tagger = FakeTagger::new();
    let s = Running::start(fast(), Some(tagger.clone() as Arc<dyn Backend>));
    let text = "我们 met Ann at ACME";
    let want = json!([
        {"entity_group": "PER", "score": 0.75, "word": "Ann", "start": 7, "end": 10},
        {"entity_group": "ORG", "score": 0.75, "word": "ACME", "start": 14, "end": 18},
    ]);
    // A bare text: one list of entities, on `/` (what InferenceClient calls) and `/predict`;
    // offsets count characters, not bytes.
    for path in ["/", "/predict"] {
        let r = s.post(path, json!({"inputs": text, "parameters": {}}));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), want, "{path}");
    }
    // A list of texts: one list per text (an empty one where nothing was found).
    let r = s.post("/", json!({"inputs": [text, "nothing here", "Bob"]}));
    assert_eq!(
        r.json(),
        json!([
            want,
            [],
            [{"entity_group": "PER", "score": 0.75, "word": "Bob", "start": 0, "end": 3}]
        ])
    );
    // Hugging Face's parameters: the entity-level strategies, ignored labels, a stride.
    let r = s.post(
        "/predict",
        json!({"inputs": text, "parameters": {
            "aggregation_strategy": "SIMPLE", "ignore_labels": ["PER", "O"], "stride": 16
        }}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([want[1]]));
    let r = s.post(
        "/",
        json!({"inputs": text, "parameters": {"aggregation_strategy": "max", "ignore_labels": null}}),
    );
    assert_eq!(r.json(), want);

    for (path, body, needle) in [
        (
            "/",
            json!({"inputs": "x", "parameters": {"aggregation_strategy": "none"}}),
            "\"none\" is not available",
        ),
        (
            "/",
            json!({"inputs": "x", "parameters": {"aggregation_strategy": "mean"}}),
            "\"simple\"",
        ),
        (
            "/predict",
            json!({"inputs": "x", "parameters": {"ignore_labels": "PER"}}),
            "`parameters.ignore_labels` must be a list",
        ),
        (
            "/predict",
            json!({"inputs": "x", "parameters": {"ignore_labels": ["PER", 1]}}),
            "a non-string",
        ),
        (
            "/predict",
            json!({"inputs": "x", "parameters": {"ignore_labels": vec!["X"; 101]}}),
            "at most 100",
        ),
        (
            "/",
            json!({"inputs": "x", "parameters": {"stride": -1}}),
            "`parameters.stride`",
        ),
        ("/", json!({"inputs": [1, 2]}), "send texts"),
        ("/", json!({"inputs": 5}), "found a number"),
        // The classifier's and the encoder's routes refuse a tagger.
        ("/classify", json!({"inputs": "Ann"}), "named-entity tagger"),
        ("/embed", json!({"inputs": "Ann"}), "named-entity tagger"),
    ] {
        let msg = assert_error(&s.post(path, body.clone()), 422, "invalid_input");
        assert!(msg.contains(needle), "{path} {body}: {msg}");
    }
    let e = assert_openai_error(
        &s.post("/v1/embeddings", json!({"input": "Ann"})),
        400,
        "invalid_input",
    );
    assert!(
        e["message"].as_str().unwrap().contains("/v1/embeddings"),
        "{e}"
    );
    // The limits and the error map are the classifier's.
    assert_error(&s.post("/", json!({"inputs": []})), 400, "empty_batch");
    assert_error(
        &s.post("/", json!({"inputs": vec!["x"; 33]})),
        413,
        "batch_too_large",
    );
    assert_error(
        &s.post("/", json!({"inputs": "fail"})),
        500,
        "backend_error",
    );
    let m = s.call("GET", "/metrics", b"").text();
    assert!(
        m.contains("lmfuse_requests_total{route=\"/\",status=\"200\"} 3"),
        "{m}"
    );
    assert_eq!(s.call("GET", "/ready", b"").json()["model"], "fake-tagger");
    // Concurrent requests go through the batcher, each answered with its own entities.
    let tagged = |t: &FakeTagger| t.batches.lock().unwrap().iter().sum::<usize>();
    let before = tagged(&tagger);
    let bodies = (0..16)
        .map(|i| json!({"inputs": [format!("Ann{i}"), "Bob"]}))
        .collect();
    for (i, r) in concurrent(&s, "/predict", bodies).iter().enumerate() {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()[0][0]["word"], format!("Ann{i}"));
        assert_eq!(r.json()[1][0]["word"], "Bob");
    }
    assert_eq!(tagged(&tagger) - before, 32);
}

#[test]
fn a_reload_from_a_classifier_to_a_tagger_checks_it_by_tagging() {
    let health = Arc::new(AtomicUsize::new(0));
    let reloader: Arc<Reloader> = {
        let health = health.clone();
        Arc::new(move |_: Option<&str>| {
            health.fetch_add(1, Ordering::SeqCst);
            Ok(FakeTagger::new() as Arc<dyn Backend>)
        })
    };
    let s = Running::start_with(fast(), Some(Fake::new("")), Some(reloader));
    assert_eq!(
        labels(&s.post("/", json!({"inputs": "good"})).json()[0]),
        ["pos", "neg"]
    );
    let r = s.post("/admin/reload", json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"]["model"]["task"], "ner");
    assert_eq!(health.load(Ordering::SeqCst), 1);
    let r = s.post("/", json!({"inputs": "hi Ann"}));
    assert_eq!(
        r.json(),
        json!([{"entity_group": "PER", "score": 0.75, "word": "Ann", "start": 3, "end": 6}])
    );
    // The default health check of a tagger tags (its `predict` would fail).
    assert!(FakeTagger::new().health().is_ok());
    assert!(Fake::new("").health().is_ok());
    let e = FakeTagger::new().predict(&["x"]).unwrap_err();
    assert!(matches!(e, BackendError::Unsupported(_)));
    // A classifier has no entities: the default `tag` says so.
    let e = Fake::new("").tag(&["x"]).unwrap_err().to_string();
    assert!(e.contains("this model is a classifier"), "{e}");
}

/// An index of five documents (`d0`..`d4`, "doc N about TOPIC"); a query finds the documents
/// that share a word with it, scored by shared words. Embeddings count the letters a..e;
/// reranking is their cosine. Modes: `hybrid` (default) and `bm25`. With `answers`, it is an
/// answer engine instead: each reply names the question and how many turns its session
/// held before it.
struct FakeIndex {
    answers: bool,
    batches: Mutex<Vec<usize>>,
    sessions: Mutex<BTreeMap<String, usize>>,
}

const TOPICS: [&str; 5] = ["cats", "dogs", "tea", "rust", "bread"];

impl FakeIndex {
    fn new(answers: bool) -> Arc<Self> {
        Arc::new(Self {
            answers,
            batches: Mutex::new(Vec::new()),
            sessions: Mutex::new(BTreeMap::new()),
        })
    }

    fn letters(text: &str) -> Vec<f32> {
        "abcde"
            .chars()
            .map(|c| text.chars().filter(|&x| x == c).count() as f32)
            .collect()
    }
}

impl Backend for FakeIndex {
    fn count_tokens(&self, texts: &[&str]) -> Result<Vec<TokenCount>, BackendError> {
        Ok(texts
            .iter()
            .map(|t| TokenCount {
                tokens: t.split_whitespace().count() + 2,
                truncated: false,
            })
            .collect())
    }

    fn predict(&self, _: &[&str]) -> Result<Vec<Prediction>, BackendError> {
        Err(BackendError::Unsupported(
            "the fake index has no labels".into(),
        ))
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BackendError> {
        Ok(texts.iter().map(|t| Self::letters(t)).collect())
    }

    fn info(&self) -> Value {
        json!({"model": {"task": "search"}})
    }

    fn model_name(&self) -> String {
        "fake-index".into()
    }

    fn task(&self) -> ServedTask {
        match self.answers {
            true => ServedTask::Answer,
            false => ServedTask::Search,
        }
    }

    fn modes(&self) -> Vec<String> {
        vec!["hybrid".into(), "bm25".into()]
    }

    fn search(&self, queries: &[SearchQuery]) -> Result<Vec<Vec<SearchHit>>, BackendError> {
        self.batches.lock().unwrap().push(queries.len());
        Ok(queries
            .iter()
            .map(|q| {
                let mut hits: Vec<(usize, usize)> = TOPICS
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (i, q.text.split_whitespace().filter(|w| w == t).count()))
                    .filter(|h| h.1 > 0)
                    .collect();
                hits.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let bonus = if q.mode.as_deref() == Some("bm25") {
                    10.0
                } else {
                    0.0
                };
                hits.iter()
                    .take(q.k)
                    .enumerate()
                    .map(|(r, &(i, n))| SearchHit {
                        rank: r + 1,
                        id: format!("d{i}"),
                        score: n as f32 + bonus,
                        title: TOPICS[i].into(),
                        text: q
                            .return_text
                            .then(|| format!("doc {i} about {}", TOPICS[i])),
                    })
                    .collect()
            })
            .collect())
    }

    fn answer(&self, questions: &[AnswerQuery]) -> Result<Vec<Value>, BackendError> {
        let mut sessions = self.sessions.lock().unwrap();
        Ok(questions
            .iter()
            .map(|q| {
                let before = match &q.session {
                    Some(s) => {
                        let n = sessions.entry(s.clone()).or_insert(0);
                        *n += 1;
                        *n - 1
                    }
                    None => 0,
                };
                json!({"question": q.question, "turns_before": before, "mode": q.mode, "k": q.k})
            })
            .collect())
    }

    fn rerank(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>, BackendError> {
        Ok(pairs
            .iter()
            .map(|(q, t)| lmfuse_server::cosine(&Self::letters(q), &Self::letters(t)))
            .collect())
    }
}

#[test]
fn an_index_answers_search_rerank_and_similarity() {
    let index = FakeIndex::new(false);
    let s = Running::start(fast(), Some(index.clone() as Arc<dyn Backend>));
    // A bare query: its hits; a list: one list per query.
    let one = s.post(
        "/search",
        json!({"query": "dogs and more dogs then tea", "k": 1}),
    );
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(
        one.json(),
        json!([{"rank": 1, "id": "d1", "score": 2.0, "title": "dogs"}])
    );
    let many = s.post(
        "/search",
        json!({"query": ["tea", "rust cats"], "mode": "bm25", "return_text": true}),
    );
    let j = many.json();
    assert_eq!(j.as_array().unwrap().len(), 2, "{j}");
    assert_eq!(j[0][0]["text"], "doc 2 about tea");
    assert_eq!(j[0][0]["score"], 11.0, "the mode reaches the backend");
    assert_eq!(j[1].as_array().unwrap().len(), 2);
    // Reranking: most relevant first, with the input's index.
    let r = s.post(
        "/rerank",
        json!({"query": "abc", "texts": ["ddd", "abc", "aab"], "return_text": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let order: Vec<u64> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["index"].as_u64().unwrap())
        .collect();
    assert_eq!(order, [1, 2, 0]);
    assert_eq!(r.json()[0]["text"], "abc");
    assert!((r.json()[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    // Similarity on /similarity and on / (huggingface_hub's sentence_similarity), embeddings
    // on / for texts.
    let body = json!({"inputs": {"source_sentence": "abc", "sentences": ["abc", "ddd"]}});
    for path in ["/similarity", "/"] {
        let sim = s.post(path, body.clone());
        assert_eq!(sim.status, 200, "{path}: {}", sim.text());
        assert_eq!(sim.json(), json!([1.0, 0.0]), "{path}");
    }
    let emb = s.post("/", json!({"inputs": "abc"}));
    assert_eq!(emb.status, 200, "{}", emb.text());
    assert_eq!(emb.json().as_array().unwrap().len(), 1);
    // What an index does not do.
    let msg = assert_error(
        &s.post("/answer", json!({"question": "tea?"})),
        422,
        "invalid_input",
    );
    assert!(msg.contains("--faq") && msg.contains("an index"), "{msg}");
    let msg = assert_error(
        &s.post("/predict", json!({"inputs": "tea"})),
        422,
        "invalid_input",
    );
    assert!(msg.contains("no labels"), "{msg}");
}

#[test]
fn bad_retrieval_requests_are_refused_before_they_reach_a_batch() {
    let index = FakeIndex::new(false);
    let s = Running::start(fast(), Some(index.clone() as Arc<dyn Backend>));
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "/search",
            json!({"query": "tea", "mode": "learned"}),
            422,
            "invalid_input",
            "hybrid, bm25",
        ),
        (
            "/search",
            json!({"query": "tea", "kk": 3}),
            422,
            "invalid_input",
            "unknown field `kk`",
        ),
        (
            "/search",
            json!({"query": "tea", "k": 0}),
            422,
            "invalid_input",
            "`k` must be",
        ),
        (
            "/search",
            json!({"query": "tea", "k": 1001}),
            422,
            "invalid_input",
            "1 to 1000",
        ),
        (
            "/search",
            json!({"query": "  "}),
            422,
            "invalid_input",
            "is empty",
        ),
        ("/search", json!({"query": []}), 400, "empty_batch", "query"),
        (
            "/search",
            json!({"query": [1]}),
            422,
            "invalid_input",
            "`query[0]` must be a string",
        ),
        (
            "/search",
            json!({"k": 3}),
            422,
            "invalid_input",
            "`query` is missing",
        ),
        (
            "/search",
            json!(["tea"]),
            422,
            "invalid_input",
            "JSON object",
        ),
        (
            "/search",
            json!({"query": "x".repeat(5000)}),
            413,
            "text_too_long",
            "4096",
        ),
        (
            "/search",
            json!({"query": "tea", "return_text": "yes"}),
            422,
            "invalid_input",
            "true or false",
        ),
        (
            "/rerank",
            json!({"query": "abc", "texts": ["a"], "raw_scores": true}),
            422,
            "invalid_input",
            "cosine",
        ),
        (
            "/rerank",
            json!({"query": "abc"}),
            422,
            "invalid_input",
            "`texts` is missing",
        ),
        (
            "/rerank",
            json!({"query": "abc", "texts": "a", "truncation_direction": "left"}),
            422,
            "invalid_input",
            "left",
        ),
        (
            "/similarity",
            json!({"inputs": "abc"}),
            422,
            "invalid_input",
            "source_sentence",
        ),
        (
            "/similarity",
            json!({"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"x": 1}}),
            422,
            "invalid_input",
            "parameters",
        ),
        (
            "/similarity",
            json!({"inputs": {"source_sentence": "a", "sentences": ["b"]}, "prompt_name": "q"}),
            422,
            "invalid_input",
            "`prompt_name`",
        ),
    ];
    for (path, body, status, kind, needle) in cases {
        let msg = assert_error(&s.post(path, body.clone()), status, kind);
        assert!(msg.contains(needle), "{path} {body}: {msg}");
    }
    let broken = s.call("POST", "/search", b"{\"query\": ");
    assert_error(&broken, 400, "invalid_json");
    assert!(
        index.batches.lock().unwrap().is_empty(),
        "no bad request reached the backend"
    );
    let ok = s.post("/search", json!({"query": "tea"}));
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[test]
fn an_answer_engine_keeps_each_sessions_turns_in_order() {
    let engine = FakeIndex::new(true);
    let s = Running::start(fast(), Some(engine.clone() as Arc<dyn Backend>));
    let ask = |q: &str, session: Option<&str>| {
        let mut body = json!({"question": q, "k": 2, "mode": "bm25"});
        if let Some(id) = session {
            body["session"] = id.into();
        }
        let r = s.post("/answer", body);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    assert_eq!(ask("first", Some("a"))["turns_before"], 0);
    assert_eq!(ask("second", Some("a"))["turns_before"], 1);
    assert_eq!(ask("other", Some("b"))["turns_before"], 0);
    assert_eq!(ask("alone", None)["turns_before"], 0);
    let reply = ask("third", Some("a"));
    assert_eq!(reply["turns_before"], 2);
    assert_eq!(
        (reply["mode"].clone(), reply["k"].clone()),
        (json!("bm25"), json!(2))
    );
    let cases: Vec<(Value, &str)> = vec![
        (json!({"question": ["a", "b"]}), "one question per request"),
        (
            json!({"question": "a", "session": ""}),
            "`session` must hold",
        ),
        (json!({"question": "a", "mode": "fused"}), "hybrid, bm25"),
        (
            json!({"question": "a", "context": []}),
            "unknown field `context`",
        ),
    ];
    for (body, needle) in cases {
        let msg = assert_error(&s.post("/answer", body.clone()), 422, "invalid_input");
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let msg = assert_error(
        &s.post("/search", json!({"query": "tea"})),
        422,
        "invalid_input",
    );
    assert!(msg.contains("--index"), "{msg}");
}

#[test]
fn concurrent_searches_are_merged_into_batches() {
    let index = FakeIndex::new(false);
    let s = Running::start(fast(), Some(index.clone() as Arc<dyn Backend>));
    let bodies: Vec<Value> = (0..24)
        .map(|i| json!({"query": format!("{t} {t} tea", t = TOPICS[i % 5]), "k": 3}))
        .collect();
    let responses = concurrent(&s, "/search", bodies);
    for (i, r) in responses.iter().enumerate() {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json()[0]["title"],
            TOPICS[i % 5],
            "each request gets its own hits"
        );
    }
    let batches = index.batches.lock().unwrap();
    assert_eq!(batches.iter().sum::<usize>(), 24);
}
