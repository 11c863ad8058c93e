//! `lmfuse bench serve` (closed-loop load on a running `lmfuse serve`) and `lmfuse bench
//! fuzz` (malformed raw HTTP, checking the server stays alive). Both are bounded in time and
//! requests and talk to loopback addresses only.

use anyhow::Context;
use clap::Args;
use lmfuse_core::SeededRng;
use lmfuse_data::Format;
use lmfuse_server::client::{self, Connection, Target};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Arguments of `lmfuse bench serve`.
#[derive(Args, Debug)]
pub struct BenchServeArgs {
    /// Endpoint to load: http://127.0.0.1:PORT/predict, /embed or /v1/embeddings (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080/predict")]
    url: String,
    /// Concurrent clients, each with its own keep-alive connection, sending back to back.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests (all clients together).
    #[arg(long)]
    requests: Option<usize>,
    /// Texts to send, cycled (JSONL/CSV/TSV with --text-col, or one a line); default: one
    /// short sentence.
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Field or column holding the text.
    #[arg(long, default_value = "text")]
    text_col: String,
    /// Input format instead of guessing from the extension.
    #[arg(long)]
    format: Option<Format>,
    /// Texts per request (1 sends a string, more a list).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Bearer token, if the server requires one.
    #[arg(long, env = "LMFUSE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Seconds of unmeasured requests before the run (one client).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// What a load run measured.
#[derive(Debug, Serialize)]
struct LoadReport {
    url: String,
    clients: usize,
    batch: usize,
    seconds: f64,
    requests: usize,
    texts: usize,
    requests_per_s: f64,
    texts_per_s: f64,
    latency_ms: BTreeMap<&'static str, f64>,
    /// Responses by HTTP status.
    statuses: BTreeMap<u16, usize>,
    /// Requests that could not be sent (connection refused or reset before the request was
    /// written whole): not seen by the server.
    transport_errors: usize,
    /// Requests written whole that got no (complete) response: the server closed, reset or
    /// stalled with the request in flight. A graceful stop must leave this at 0.
    dropped: usize,
    /// Requests that got something other than 200.
    errors: usize,
    first_errors: Vec<String>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[derive(Default)]
struct ClientLog {
    latencies_ms: Vec<f64>,
    statuses: BTreeMap<u16, usize>,
    transport_errors: usize,
    dropped: usize,
    first_errors: Vec<String>,
}

impl ClientLog {
    /// Records a response that took `ms` milliseconds.
    fn record_response(&mut self, r: &client::Response, ms: f64) {
        self.latencies_ms.push(ms);
        *self.statuses.entry(r.status).or_default() += 1;
        if r.status != 200 && self.first_errors.len() < 3 {
            self.first_errors
                .push(format!("{}: {}", r.status, r.text()));
        }
    }

    /// Records a request that got no response, as dropped or as a transport error.
    fn record_error(&mut self, e: &std::io::Error) {
        let kind = if client::is_no_response(e) {
            self.dropped += 1;
            "dropped"
        } else {
            self.transport_errors += 1;
            "transport"
        };
        if self.first_errors.len() < 3 {
            self.first_errors.push(format!("{kind}: {e}"));
        }
    }

    /// Adds the counts of `log`, keeping at most 5 example errors in all.
    fn merge(&mut self, log: ClientLog) {
        self.latencies_ms.extend(log.latencies_ms);
        for (s, n) in log.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.transport_errors += log.transport_errors;
        self.dropped += log.dropped;
        for e in log.first_errors {
            if self.first_errors.len() < 5 {
                self.first_errors.push(e);
            }
        }
    }
}

/// Runs `lmfuse bench serve`.
pub fn run(args: &BenchServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    anyhow::ensure!(
        args.duration > 0.0 && args.duration <= 3600.0,
        "--duration must be in (0, 3600] seconds"
    );
    let target = Target::parse(&args.url).with_context(|| format!("bad --url {}", args.url))?;
    let texts = load_texts(args)?;
    let bodies = Arc::new(request_bodies(&texts, args.batch, &target.path));
    let auth = args.api_key.as_ref().map(|k| format!("Bearer {k}"));
    if args.warmup > 0.0 {
        warm_up(&target, auth.as_deref(), &bodies, args.warmup)?;
    }

    let budget = Arc::new(AtomicUsize::new(args.requests.unwrap_or(usize::MAX)));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let handles: Vec<_> = (0..args.clients)
        .map(|id| {
            let (target, bodies, budget, auth) =
                (target.clone(), bodies.clone(), budget.clone(), auth.clone());
            std::thread::spawn(move || {
                load_client(id, &target, &bodies, &budget, auth.as_deref(), deadline)
            })
        })
        .collect();
    let mut all = ClientLog::default();
    for h in handles {
        let log = h
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        all.merge(log);
    }
    let report = load_report(args, all, started.elapsed().as_secs_f64());
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        print_load_report(&report);
    }
    Ok(())
}

/// The texts of `--input`, or one short sentence without it; fails when there are none.
fn load_texts(args: &BenchServeArgs) -> anyhow::Result<Vec<String>> {
    let texts: Vec<String> = match &args.input {
        Some(p) => lmfuse_pipeline::data::read_input(p, args.format, &args.text_col)?,
        None => vec!["The battery lasts all day and the screen is lovely.".to_string()],
    };
    anyhow::ensure!(!texts.is_empty(), "no texts to send");
    Ok(texts)
}

/// One JSON request body per text for the endpoint at `path`: the text alone when `batch`
/// is 1, else it and the next `batch - 1` texts (cycled) as a list.
fn request_bodies(texts: &[String], batch: usize, path: &str) -> Vec<Vec<u8>> {
    let field = if path.starts_with("/v1/embeddings") {
        "input"
    } else {
        "inputs"
    };
    (0..texts.len())
        .map(|i| {
            let value = if batch == 1 {
                serde_json::Value::from(texts[i].clone())
            } else {
                (0..batch)
                    .map(|k| texts[(i + k) % texts.len()].clone())
                    .collect::<Vec<_>>()
                    .into()
            };
            serde_json::json!({ field: value }).to_string().into_bytes()
        })
        .collect()
}

/// Sends `bodies` in turn on one connection for `seconds`, unmeasured; fails on the first
/// request that fails.
fn warm_up(
    target: &Target,
    auth: Option<&str>,
    bodies: &[Vec<u8>],
    seconds: f64,
) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut c = Connection::open(target.addr, &target.host, Duration::from_secs(30))?;
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    let mut i = 0;
    while Instant::now() < end {
        c.send("POST", &target.path, &headers, &bodies[i % bodies.len()])?;
        i += 1;
    }
    Ok(())
}

/// One load client: sends `bodies` back to back, starting at an offset given by `id`, on a
/// keep-alive connection (reopened when lost or closed by the server) until `deadline` or
/// until `budget` is spent, and logs what came back.
fn load_client(
    id: usize,
    target: &Target,
    bodies: &[Vec<u8>],
    budget: &AtomicUsize,
    auth: Option<&str>,
    deadline: Instant,
) -> ClientLog {
    let mut log = ClientLog::default();
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    let mut conn: Option<Connection> = None;
    let mut i = id * 7919;
    while Instant::now() < deadline {
        if budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_err()
        {
            break;
        }
        let body = &bodies[i % bodies.len()];
        i += 1;
        let t = Instant::now();
        let result = match conn.as_mut() {
            Some(c) => c.send("POST", &target.path, &headers, body),
            None => Connection::open(target.addr, &target.host, Duration::from_secs(60)).and_then(
                |mut c| {
                    let r = c.send("POST", &target.path, &headers, body);
                    conn = Some(c);
                    r
                },
            ),
        };
        match result {
            Ok(r) => {
                log.record_response(&r, t.elapsed().as_secs_f64() * 1e3);
                if r.header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    conn = None;
                }
            }
            Err(e) => {
                log.record_error(&e);
                conn = None;
                // A stopped or restarting server: do not spin on refused connects.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    log
}

/// The report of a load run that took `seconds` and logged `all`.
fn load_report(args: &BenchServeArgs, all: ClientLog, seconds: f64) -> LoadReport {
    let mut lat = all.latencies_ms;
    lat.sort_by(f64::total_cmp);
    let requests = lat.len();
    let ok = all.statuses.get(&200).copied().unwrap_or(0);
    LoadReport {
        url: args.url.clone(),
        clients: args.clients,
        batch: args.batch,
        seconds,
        requests,
        texts: ok * args.batch,
        requests_per_s: requests as f64 / seconds,
        texts_per_s: (ok * args.batch) as f64 / seconds,
        latency_ms: BTreeMap::from([
            ("p50", percentile(&lat, 0.50)),
            ("p90", percentile(&lat, 0.90)),
            ("p99", percentile(&lat, 0.99)),
            ("max", lat.last().copied().unwrap_or(f64::NAN)),
            ("mean", lat.iter().sum::<f64>() / lat.len().max(1) as f64),
        ]),
        errors: requests - ok,
        statuses: all.statuses,
        transport_errors: all.transport_errors,
        dropped: all.dropped,
        first_errors: all.first_errors,
    }
}

/// Prints `report` as readable lines on stderr.
fn print_load_report(report: &LoadReport) {
    eprintln!(
        "{} requests ({} texts) in {:.1} s from {} clients: {:.1} req/s, {:.1} texts/s",
        report.requests,
        report.texts,
        report.seconds,
        report.clients,
        report.requests_per_s,
        report.texts_per_s
    );
    eprintln!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        report.latency_ms["p50"],
        report.latency_ms["p90"],
        report.latency_ms["p99"],
        report.latency_ms["max"]
    );
    eprintln!(
        "statuses: {:?}; transport errors: {}; dropped in flight: {}",
        report.statuses, report.transport_errors, report.dropped
    );
    for e in &report.first_errors {
        eprintln!("  e.g. {e}");
    }
}

/// Arguments of `lmfuse bench fuzz`.
#[derive(Args, Debug)]
pub struct BenchFuzzArgs {
    /// The server: http://127.0.0.1:PORT (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many malformed requests.
    #[arg(long)]
    requests: Option<usize>,
    /// Seed of the mutations.
    #[arg(long, default_value_t = 13)]
    seed: u64,
    /// Concurrent fuzzing connections.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// What a fuzz run did.
#[derive(Debug, Serialize)]
struct FuzzReport {
    url: String,
    seconds: f64,
    cases: usize,
    /// Responses by status class ("2xx", "4xx", "5xx"), plus "none" (the server closed the
    /// connection or gave no parsable response: normal for garbage).
    responses: BTreeMap<String, usize>,
    /// Responses with 5xx other than 503/504 (a server fault).
    server_errors: usize,
    health_checks: usize,
    health_failures: usize,
    alive_at_end: bool,
}

const ROUTES: &[&str] = &[
    "/",
    "/health",
    "/ready",
    "/metrics",
    "/info",
    "/predict",
    "/embed",
    "/v1/embeddings",
    // Not /admin/reload: a fuzz case that passes its checks would reload the model, again and
    // again (its refusals are tested in lmfuse-server's tests/http.rs).
    "/nope",
];
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "BREW", "",
];

/// One malformed (or borderline) request.
fn fuzz_case(rng: &mut SeededRng) -> Vec<u8> {
    let route = ROUTES[rng.below(ROUTES.len())];
    let method = METHODS[rng.below(METHODS.len())];
    let bodies: [&[u8]; 10] = [
        br#"{"inputs": "a fine text"}"#,
        br#"{"inputs": ["a", "b", 3]}"#,
        br#"{"inputs": []}"#,
        br#"{"input": "x", "encoding_format": "base64"}"#,
        b"{\"inputs\": \"\xff\xfe\"}",
        b"{{{{[[[[",
        br#"{"inputs": null}"#,
        b"",
        br#"{"model": "/nonexistent"}"#,
        br#"{"inputs": "\ud800"}"#,
    ];
    let mut body = bodies[rng.below(bodies.len())].to_vec();
    let mut head = format!("{method} {route} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    match rng.below(12) {
        0 => head = format!("{method} {route}\r\n"),
        1 => head = format!("{method} {route} HTTP/7.3\r\n"),
        2 => head.push_str("Content-Length: -5\r\n"),
        3 => head.push_str(&format!("Content-Length: {}\r\n", body.len() + 1000)),
        4 => head.push_str("Transfer-Encoding: chunked\r\n"),
        5 => head.push_str(&format!("X-Long: {}\r\n", "h".repeat(rng.below(200_000)))),
        6 => head.push_str("Bad Header Without Colon\r\n"),
        7 => head.push_str("Content-Length: 5\r\nContent-Length: 7\r\n"),
        8 => head.push_str("Authorization: Bearer \x01\x02\r\n"),
        _ => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
    }
    if rng.below(4) == 0 {
        head.push_str("Connection: keep-alive\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    // Random byte flips, truncation or garbage.
    match rng.below(6) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                if !body.is_empty() {
                    let i = rng.below(body.len());
                    body[i] = rng.next_u64() as u8;
                }
            }
        }
        1 => body.truncate(rng.below(body.len() + 1)),
        2 => body = (0..rng.below(4096)).map(|_| rng.next_u64() as u8).collect(),
        _ => {}
    }
    bytes.extend_from_slice(&body);
    if rng.below(10) == 0 {
        let i = rng.below(bytes.len());
        bytes.truncate(i);
    }
    if rng.below(15) == 0 {
        bytes = (0..rng.below(2048)).map(|_| rng.next_u64() as u8).collect();
    }
    bytes
}

/// What one fuzz client did: cases sent, responses by class, server faults.
#[derive(Default)]
struct FuzzLog {
    cases: usize,
    classes: BTreeMap<String, usize>,
    server_errors: usize,
}

/// Runs `lmfuse bench fuzz`: exits with an error when the server stops answering `/health`.
pub fn fuzz(args: &BenchFuzzArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    let target = Target::parse(&args.url).with_context(|| format!("bad --url {}", args.url))?;
    let health = target.with_path("/health");
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let budget = Arc::new(AtomicUsize::new(args.requests.unwrap_or(usize::MAX)));
    let handles: Vec<_> = (0..args.clients)
        .map(|id| {
            let (addr, budget) = (target.addr, budget.clone());
            let rng = SeededRng::new(args.seed.wrapping_add(id as u64 * 0x9e37_79b9));
            std::thread::spawn(move || fuzz_client(addr, rng, &budget, deadline))
        })
        .collect();
    let (checks, failures) = watch_health(&health, &handles);
    let mut responses = BTreeMap::new();
    let (mut cases, mut server_errors) = (0, 0);
    for h in handles {
        let log = h
            .join()
            .map_err(|_| anyhow::anyhow!("a fuzz thread panicked"))?;
        cases += log.cases;
        server_errors += log.server_errors;
        for (k, n) in log.classes {
            *responses.entry(k).or_default() += n;
        }
    }
    let alive_at_end = is_healthy(&health);
    let report = FuzzReport {
        url: args.url.clone(),
        seconds: started.elapsed().as_secs_f64(),
        cases,
        responses,
        server_errors,
        health_checks: checks,
        health_failures: failures,
        alive_at_end,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        eprintln!(
            "{} malformed requests in {:.1} s: responses {:?}, server errors {}, health {}/{} ok, alive at the end: {}",
            report.cases,
            report.seconds,
            report.responses,
            report.server_errors,
            checks - failures,
            checks,
            alive_at_end
        );
    }
    anyhow::ensure!(
        alive_at_end,
        "the server at {} stopped answering /health",
        args.url
    );
    Ok(())
}

/// One fuzz client: sends cases drawn from `rng` to `addr`, each on its own connection,
/// until `deadline` or until `budget` is spent, and counts the responses by class.
fn fuzz_client(
    addr: SocketAddr,
    mut rng: SeededRng,
    budget: &AtomicUsize,
    deadline: Instant,
) -> FuzzLog {
    let mut log = FuzzLog::default();
    while Instant::now() < deadline
        && budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_ok()
    {
        let bytes = fuzz_case(&mut rng);
        log.cases += 1;
        let class = match client::raw(addr, bytes, Duration::from_millis(300))
            .ok()
            .and_then(|raw| client::parse_response(&raw).ok())
        {
            Some(r) => {
                if r.status >= 500 && r.status != 503 && r.status != 504 {
                    log.server_errors += 1;
                }
                format!("{}xx", r.status / 100)
            }
            None => "none".to_string(),
        };
        *log.classes.entry(class).or_default() += 1;
    }
    log
}

/// Checks `health` twice a second until every thread of `handles` has finished: the checks
/// made and how many failed.
fn watch_health<T>(health: &Target, handles: &[JoinHandle<T>]) -> (usize, usize) {
    let (mut checks, mut failures) = (0, 0);
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(500));
        checks += 1;
        if !is_healthy(health) {
            failures += 1;
        }
    }
    (checks, failures)
}

/// Whether a GET of `health` answers 200.
fn is_healthy(health: &Target) -> bool {
    client::request(health, "GET", &[], b"").is_ok_and(|r| r.status == 200)
}
