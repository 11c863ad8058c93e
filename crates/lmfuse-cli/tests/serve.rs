//! End-to-end tests of `lmfuse serve` with the MiniLM encoder and a logistic-regression bundle:
//! readiness after warm-up, predictions equal to `lmfuse predict` (lmfuse's `/classify` and
//! text-embeddings-inference's `/predict` and `POST /`), embeddings equal to `lmfuse embed`
//! (`/embed`, and `/v1/embeddings` as floats, base64 and token ids), reload, graceful SIGTERM
//! under load, and a broken bundle at startup. A named-entity bundle answers Hugging Face's
//! token-classification shape with character offsets, as `lmfuse ner predict` finds them.

mod common;

use common::{lmfuse, ok_json, workspace};
use lmfuse_server::client::{self, Target};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// `models/all-MiniLM-L6-v2`, or `None` (with a message; a failure under LMFUSE_REQUIRE_ASSETS=1).
fn minilm() -> Option<PathBuf> {
    let dir = workspace().join("models/all-MiniLM-L6-v2");
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    let msg = format!(
        "all-MiniLM-L6-v2 not found at {}: run `bash scripts/fetch-models.sh`",
        dir.display()
    );
    if std::env::var("LMFUSE_REQUIRE_ASSETS").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// A running `lmfuse serve` and the address it printed.
struct Served {
    child: Child,
    base: String,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Served {
    fn start(bundle: &Path, cache: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["serve", "--model", bundle.to_str().unwrap(), "--port", "0"];
        args.extend_from_slice(extra);
        let mut child = lmfuse(&args, cache)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lmfuse serve");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("lmfuse serve printed nothing");
        let base = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Self {
            child,
            base,
            stderr: rx,
        }
    }

    fn target(&self, path: &str) -> Target {
        Target::parse(&format!("{}{path}", self.base)).unwrap()
    }

    fn get(&self, path: &str) -> client::Response {
        client::request(&self.target(path), "GET", &[], b"").unwrap()
    }

    fn post(&self, path: &str, body: Value) -> client::Response {
        client::request(&self.target(path), "POST", &[], body.to_string().as_bytes()).unwrap()
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if self.get("/ready").status == 200 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "not ready after 120 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sigterm(&self) {
        // SAFETY: kill(2) on the pid of our own child process.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0);
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("lmfuse serve did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's `/classify` answer `served` for `texts` has the labels of `lmfuse predict` with
/// `bundle`, and every probability within 1e-4 of its.
fn assert_predicts_like_predict(served: &Value, bundle: &Path, texts: &[&str], cache: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("texts.txt");
    std::fs::write(&input, texts.join("\n")).unwrap();
    let out = common::run(
        &[
            "predict",
            "--model",
            bundle.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--no-cache",
        ],
        cache,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let served = served.as_array().unwrap();
    assert_eq!((served.len(), offline.len()), (texts.len(), texts.len()));
    for (a, b) in served.iter().zip(&offline) {
        assert_eq!(a["label"], b["label"]);
        let probs = b["probabilities"].as_object().unwrap();
        assert!(probs.len() >= 2, "{b}");
        for (l, y) in probs {
            let (x, y) = (a["probabilities"][l].as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() < 1e-4, "{l}: served {x}, offline {y}");
        }
    }
}

/// A TEI ranked list `ranked` (`[{label, score}, ...]`) holds the labels of lmfuse's answer
/// `rich` (`{label, probabilities}`), highest score first, with the same scores.
fn assert_ranks_like(ranked: &Value, rich: &Value) {
    let ranked = ranked.as_array().unwrap();
    let probs = rich["probabilities"].as_object().unwrap();
    assert_eq!(ranked.len(), probs.len(), "{ranked:?}");
    assert_eq!(ranked[0]["label"], rich["label"]);
    for pair in ranked.windows(2) {
        assert!(
            pair[0]["score"].as_f64() >= pair[1]["score"].as_f64(),
            "{ranked:?}"
        );
    }
    for p in ranked {
        assert_eq!(p["score"], probs[p["label"].as_str().unwrap()], "{p}");
    }
}

/// The vectors of `lmfuse embed` for `texts` with `model`.
fn offline_embeddings(model: &Path, texts: &[&str], cache: &Path) -> Vec<Vec<f64>> {
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (tmp.path().join("t.txt"), tmp.path().join("e.jsonl"));
    std::fs::write(&input, texts.join("\n")).unwrap();
    common::embed_json(
        model.to_str().unwrap(),
        &input,
        &output,
        &["--no-cache"],
        cache,
    );
    std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| floats(&serde_json::from_str::<Value>(l).unwrap()["embedding"]))
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The little-endian `f32`s of a base64 string (standard alphabet, padded).
fn decode_base64_f32(s: &str) -> Vec<f64> {
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
        .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect()
}

fn assert_close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst <= tol, "differ by {worst}");
}

/// The ids of `words` in the model's WordPiece vocabulary (`vocab.txt`: one token a line).
fn vocab_ids(model: &Path, words: &[&str]) -> Vec<u32> {
    let vocab = std::fs::read_to_string(model.join("vocab.txt")).unwrap();
    let lines: Vec<&str> = vocab.lines().collect();
    words
        .iter()
        .map(|w| {
            let id = lines.iter().position(|l| l == w);
            id.unwrap_or_else(|| panic!("{w} is not a whole token of the vocabulary")) as u32
        })
        .collect()
}

/// `/embed` and `/v1/embeddings` (floats, base64 and token ids) equal `lmfuse embed`.
fn check_embeddings(s: &Served, model: &Path, texts: &[&str], cache: &Path) {
    let offline = offline_embeddings(model, texts, cache);
    let e = s.post("/embed", json!({ "inputs": texts })).json();
    for (served, want) in e.as_array().unwrap().iter().zip(&offline) {
        assert_eq!(want.len(), 384);
        assert_close(&floats(served), want, 1e-6);
    }
    let o = s
        .post("/v1/embeddings", json!({"input": texts, "model": "x"}))
        .json();
    assert_eq!(o["data"][0]["embedding"], e[0]);
    assert!(o["usage"]["prompt_tokens"].as_u64().unwrap() > 5);
    let b = s
        .post(
            "/v1/embeddings",
            json!({"input": texts, "encoding_format": "base64"}),
        )
        .json();
    for (d, want) in b["data"].as_array().unwrap().iter().zip(&offline) {
        assert_close(
            &decode_base64_f32(d["embedding"].as_str().unwrap()),
            want,
            1e-6,
        );
    }
    // Token ids of the served tokenizer are embedded exactly as the text they spell, with or
    // without the special tokens around them.
    let ids = vocab_ids(model, &["the", "battery", "died"]);
    let specials = vocab_ids(model, &["[CLS]", "[SEP]"]);
    let framed: Vec<u32> = [&specials[..1], &ids[..], &specials[1..]].concat();
    let text = s
        .post("/embed", json!({"inputs": "The battery died"}))
        .json();
    let o = s
        .post("/v1/embeddings", json!({"input": [ids, framed]}))
        .json();
    for d in o["data"].as_array().unwrap() {
        assert_close(&floats(&d["embedding"]), &floats(&text[0]), 1e-6);
    }
    assert_eq!(o["usage"]["prompt_tokens"], 10);
    let r = s.post("/v1/embeddings", json!({"input": [ids[0], 999_999]}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("999999"));
}

#[test]
fn serve_predicts_like_predict_and_stops_cleanly_on_sigterm_under_load() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bundle = dir.path().join("bundle");
    let reviews = workspace().join("examples/reviews.jsonl");
    let report = ok_json(
        &[
            "train",
            "--model",
            model.to_str().unwrap(),
            "--train",
            reviews.to_str().unwrap(),
            "--out",
            bundle.to_str().unwrap(),
            "--c-grid",
            "1,10",
            "--json",
        ],
        &cache,
    );
    let labels = report["labels"].clone();

    let mut s = Served::start(&bundle, &cache, &["--max-queue", "64"]);
    assert_eq!(s.get("/health").status, 200, "live as soon as it listens");
    s.wait_ready();

    // /classify equals `lmfuse predict` on the same texts.
    let texts = [
        "The battery died after two days. Avoid.",
        "Lovely hotel, friendly staff, would stay again!",
    ];
    let r = s.post("/classify", json!({ "inputs": texts }));
    assert_eq!(r.status, 200, "{}", r.text());
    let served = r.json();
    assert_predicts_like_predict(&served, &bundle, &texts, &cache);
    assert_eq!(
        served[0]["probabilities"].as_object().unwrap().len(),
        labels.as_array().unwrap().len()
    );
    assert_eq!(served[0]["label"], "negative");
    assert_eq!(served[1]["label"], "positive");
    let one = s.post("/classify", json!({"inputs": texts[1]}));
    assert_eq!(
        one.json()["label"],
        "positive",
        "a single text gives one object"
    );
    // /predict (TEI): the same scores as ranked lists; POST /: one list per input.
    let tei = s.post("/predict", json!({ "inputs": texts })).json();
    for (ranked, rich) in tei
        .as_array()
        .unwrap()
        .iter()
        .zip(served.as_array().unwrap())
    {
        assert_ranks_like(ranked, rich);
    }
    let single = s.post("/predict", json!({"inputs": texts[1]})).json();
    assert_eq!(single, tei[1], "a bare text gives one ranked list");
    let root = s
        .post("/", json!({"inputs": texts[1], "parameters": {}}))
        .json();
    assert_eq!(root, json!([tei[1]]));

    check_embeddings(&s, &model, &texts, &cache);

    let info = s.get("/info").json();
    assert_eq!(info["model"]["model"]["labels"], labels);
    assert_eq!(info["model"]["max_input_tokens"], 256);
    let metrics = s.get("/metrics").text();
    assert!(
        metrics.contains("lmfuse_requests_total{route=\"/classify\",status=\"200\"} 2"),
        "{metrics}"
    );
    assert!(s.get("/").text().contains("<textarea"));
    // Reload in place: same bundle, new model object, still serving.
    let r = s.post("/admin/reload", json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s.post("/classify", json!({"inputs": texts[0]})).json()["label"],
        "negative"
    );

    // SIGTERM under load: requests in flight get their answers, then exit code 0.
    let long = "This phone is wonderful but the battery is not great. ".repeat(20);
    let batch: Vec<String> = (0..32).map(|i| format!("{i} {long}")).collect();
    let t = s.target("/predict");
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (t, body) = (t.clone(), json!({"inputs": batch}).to_string());
            std::thread::spawn(move || client::request(&t, "POST", &[], body.as_bytes()))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    s.sigterm();
    for c in clients {
        let r = c
            .join()
            .unwrap()
            .expect("an in-flight request got its response");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json().as_array().unwrap().len(), 32);
    }
    let status = s.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{:?}", s.stderr_lines());
    let lines = s.stderr_lines();
    assert!(lines.iter().any(|l| l.contains("stopped")), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("panicked")), "{lines:?}");
}

#[test]
fn a_broken_bundle_at_startup_exits_non_zero_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("not-a-bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("manifest.json"), "{ nope").unwrap();
    let mut child = lmfuse(
        &["serve", "--model", bundle.to_str().unwrap(), "--port", "0"],
        &dir.path().join("cache"),
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("lmfuse: error: cannot serve"), "{stderr}");
    assert!(last.contains("not-a-bundle"), "{stderr}");
}

#[test]
fn an_empty_api_key_is_no_key_for_the_exposure_warning() {
    // The warning comes right after binding, before the (here broken) bundle is read.
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("not-a-bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let out = common::run(
        &[
            "serve",
            "--model",
            bundle.to_str().unwrap(),
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--api-key",
            "",
        ],
        &dir.path().join("cache"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("beyond this machine without --api-key"),
        "{stderr}"
    );
}

#[test]
fn serve_marks_out_of_scope_inputs_and_serves_a_finetuned_bundle() {
    let Some(tiny) = common::tiny_model() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, range: std::ops::Range<usize>| -> String {
        let path = dir.path().join(name);
        common::write_intents(&path, range.len(), range.start);
        path.to_str().unwrap().to_string()
    };
    let (d, dv) = (write("train.jsonl", 0..60), write("dev.jsonl", 100..130));
    let (d, dv) = (d.as_str(), dv.as_str());
    let m = tiny.to_str().unwrap();
    let oos_bundle = dir.path().join("oos");
    ok_json(
        &[
            "train",
            "--model",
            m,
            "--train",
            d,
            "--dev",
            dv,
            "--test",
            dv,
            "--oos",
            "mahalanobis",
            "--out",
            oos_bundle.to_str().unwrap(),
            "--json",
        ],
        dir.path(),
    );
    let server = Served::start(&oos_bundle, dir.path(), &[]);
    server.wait_ready();
    let r = server.post("/classify", json!({"inputs": ["please book a flight to city 7 for me", "my cat number 8 likes to sleep on the warm sofa"]}));
    assert_eq!(r.status, 200);
    let j: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(j[0]["oos"]["is_oos"], false, "{j}");
    assert_eq!(j[1]["oos"]["is_oos"], true, "{j}");
    drop(server);

    // A fine-tuned bundle carries its encoder: the server loads it from inside the bundle.
    let ft = dir.path().join("ft");
    ok_json(
        &[
            "finetune",
            "--model",
            m,
            "--train",
            d,
            "--dev",
            d,
            "--test",
            d,
            "--epochs",
            "1",
            "--out",
            ft.to_str().unwrap(),
            "--json",
        ],
        dir.path(),
    );
    let server = Served::start(&ft, dir.path(), &[]);
    server.wait_ready();
    let r = server.post(
        "/classify",
        json!({"inputs": "what is the weather in town 3 today"}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(j["label"].is_string() && j.get("oos").is_none(), "{j}");
    drop(server);

    // An ensemble whose last member reads an encoder fine-tuned inside the bundle, the
    // others the base encoder: the server loads both and predicts as `lmfuse predict` does.
    let mixed = dir.path().join("mixed");
    let name = "soft_vote(emb:logreg,tfidf:logreg,finetuned_shared)";
    ok_json(
        &[
            "compare",
            "--model",
            m,
            "--train",
            d,
            "--dev",
            dv,
            "--folds",
            "2",
            "--singles",
            "",
            "--members",
            "emb:logreg,tfidf:logreg",
            "--ensembles",
            "soft_vote",
            "--finetune-shared",
            "--finetune-epochs",
            "1",
            // A rate that moves the encoder far from its base: a member given the base
            // encoder's embeddings would predict visibly otherwise.
            "--finetune-lr",
            "1e-3",
            "--finetuned-members",
            "--out",
            mixed.to_str().unwrap(),
            "--save-candidate",
            name,
            "--json",
        ],
        dir.path(),
    );
    let texts = [
        "what is the weather in town 3 today",
        "please book a flight to city 7 for me",
    ];
    let server = Served::start(&mixed, dir.path(), &[]);
    server.wait_ready();
    let r = server.post("/classify", json!({ "inputs": texts }));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let served: Value = serde_json::from_slice(&r.body).unwrap();
    assert_predicts_like_predict(&served, &mixed, &texts, dir.path());
}

/// `n` CoNLL sentences from templates: English words (`Carol lives in Oslo .`) and Chinese
/// written one character per token (`我们知道张三住在北京。`), each with people and places.
fn people_and_places(n: usize) -> String {
    const PEOPLE: [&str; 5] = ["Alice", "Bob", "Carol", "David", "Emma"];
    const CITIES: [&str; 4] = ["Paris", "Rome", "Oslo", "Madrid"];
    const REN: [&str; 4] = ["张三", "李四", "王五", "赵六"];
    const CHENG: [&str; 4] = ["北京", "上海", "广州", "深圳"];
    const QIAN: [&str; 4] = ["", "我们知道", "他说", "听说"];
    let mut out = String::new();
    let chars = |text: &str, tag: &str, out: &mut String| {
        for (k, c) in text.chars().enumerate() {
            let t = match (tag, k) {
                ("O", _) => "O".to_string(),
                (_, 0) => format!("B-{tag}"),
                _ => format!("I-{tag}"),
            };
            out.push_str(&format!("{c}\t{t}\n"));
        }
    };
    for i in 0..n {
        let (person, city) = (PEOPLE[i % 5], CITIES[(i / 2) % 4]);
        let verb = ["lives", "works", "stays"][i % 3];
        out.push_str(&format!(
            "{person}\tB-PER\n{verb}\tO\nin\tO\n{city}\tB-LOC\n.\tO\n\n"
        ));
        chars(QIAN[i % 4], "O", &mut out);
        chars(REN[(i / 3) % 4], "PER", &mut out);
        chars(["住在", "去了"][i % 2], "O", &mut out);
        chars(CHENG[(i / 2) % 4], "LOC", &mut out);
        chars("。", "O", &mut out);
        out.push('\n');
    }
    out
}

/// (start, end, entity type, covered text) of entities, read with the given field names.
fn spans(entities: &Value, label: &str, text: &str) -> Vec<(u64, u64, String, String)> {
    entities
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().unwrap(),
                e["end"].as_u64().unwrap(),
                e[label].as_str().unwrap().to_string(),
                e[text].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn serve_answers_a_ner_bundles_entities_with_character_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let train = dir.path().join("train.conll");
    std::fs::write(&train, people_and_places(80)).unwrap();
    let bundle = dir.path().join("ner");
    let t = |p: &Path| p.to_str().unwrap().to_string();
    ok_json(
        &[
            "ner",
            "train",
            "--train",
            &t(&train),
            "--out",
            &t(&bundle),
            "--json",
        ],
        &cache,
    );
    let s = Served::start(&bundle, &cache, &[]);
    s.wait_ready();
    let english = "Carol lives in Oslo.";
    // Four CJK characters (12 bytes in UTF-8) before the person.
    let chinese = "我们知道张三住在北京。";
    let want_en = vec![
        (0, 5, "PER".to_string(), "Carol".to_string()),
        (15, 19, "LOC".to_string(), "Oslo".to_string()),
    ];
    let want_zh = vec![
        (4, 6, "PER".to_string(), "张三".to_string()),
        (8, 10, "LOC".to_string(), "北京".to_string()),
    ];
    // POST / with a bare text (what InferenceClient.token_classification sends): one list.
    for (text, want) in [(english, &want_en), (chinese, &want_zh)] {
        let r = s.post("/", json!({"inputs": text, "parameters": {}}));
        assert_eq!(r.status, 200, "{}", r.text());
        let got = r.json();
        assert_eq!(&spans(&got, "entity_group", "word"), want, "{got}");
        for e in got.as_array().unwrap() {
            assert_eq!(e.as_object().unwrap().len(), 5, "{e}");
            let score = e["score"].as_f64().unwrap();
            assert!(score > 0.5 && score <= 1.0, "{e}");
        }
    }
    // A list of texts: a list of lists, equal to `lmfuse ner predict` (scores included).
    let texts = [english, chinese, "nothing to see here"];
    let served = s.post("/predict", json!({ "inputs": texts })).json();
    let input = dir.path().join("texts.txt");
    std::fs::write(&input, texts.join("\n")).unwrap();
    let out = common::run(
        &["ner", "predict", "--model", &t(&bundle), "-i", &t(&input)],
        &cache,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(served.as_array().unwrap().len(), 3, "{served}");
    for (got, want) in served.as_array().unwrap().iter().zip(&offline) {
        assert_eq!(
            spans(got, "entity_group", "word"),
            spans(&want["entities"], "label", "text")
        );
        for (a, b) in got
            .as_array()
            .unwrap()
            .iter()
            .zip(want["entities"].as_array().unwrap())
        {
            assert_eq!(a["score"], b["score"], "{a} {b}");
        }
    }
    assert_eq!(served[2], json!([]));
    // The classifier's and the encoder's routes refuse a tagger with a 4xx.
    for path in ["/classify", "/embed"] {
        let r = s.post(path, json!({"inputs": english}));
        assert_eq!(r.status, 422, "{path}: {}", r.text());
        assert!(r.text().contains("named-entity tagger"), "{}", r.text());
    }
    assert_eq!(
        s.post("/v1/embeddings", json!({"input": english})).status,
        400
    );
    let info = s.get("/info").json();
    assert_eq!(info["model"]["model"]["task"], "ner");
    assert_eq!(s.get("/ready").json()["model"], "ner");
    // A reload loads the tagger again (the choice is made for every load).
    let r = s.post("/admin/reload", json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let again = s.post("/", json!({ "inputs": chinese })).json();
    assert_eq!(spans(&again, "entity_group", "word"), want_zh);
}
