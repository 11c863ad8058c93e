//! End-to-end tests of the `lmfuse` binary: embedding outputs, the cache (including a process
//! killed mid-run), and one clear error line for each kind of bad input.

mod common;

use common::{assert_one_line_error, embed_json, lmfuse, tiny_model};
use std::path::Path;
use std::process::Stdio;

fn read_jsonl(path: &Path) -> Vec<Vec<f32>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            serde_json::from_value(v["embedding"].clone()).unwrap()
        })
        .collect()
}

fn read_npy(path: &Path) -> (usize, usize, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hl]).unwrap();
    let shape = header.split("'shape': (").nth(1).unwrap();
    let shape: Vec<usize> = shape
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data = bytes[10 + hl..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (shape[0], shape[1], data)
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const TEXTS: [&str; 6] = [
    "the first text",
    "",
    "a much longer text with many more words than the others in this little file",
    "the first text",
    "中文也可以",
    "émoji 🙂 and accents",
];

#[test]
fn embed_keeps_input_order_in_every_format_and_caches() {
    let Some(model) = tiny_model() else { return };
    let model = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let jsonl_in = dir.path().join("in.jsonl");
    let lines: Vec<String> = TEXTS
        .iter()
        .map(|t| serde_json::json!({ "text": t, "label": "x" }).to_string())
        .collect();
    std::fs::write(&jsonl_in, lines.join("\n")).unwrap();
    let csv_in = dir.path().join("in.csv");
    let mut csv = String::from("id,body\n");
    for (i, t) in TEXTS.iter().enumerate() {
        csv.push_str(&format!("{i},\"{t}\"\n"));
    }
    std::fs::write(&csv_in, csv).unwrap();
    let reversed_in = dir.path().join("rev.txt");
    let rev: Vec<&str> = TEXTS.iter().rev().copied().collect();
    std::fs::write(&reversed_in, rev.join("\n") + "\n").unwrap();

    let out_jsonl = dir.path().join("a.jsonl");
    let s = embed_json(model, &jsonl_in, &out_jsonl, &[], &cache);
    assert_eq!(s["count"], 6);
    assert_eq!(s["unique"], 5);
    assert_eq!(s["encoded"], 5);
    assert_eq!(s["cache_hits"], 0);
    assert_eq!(s["dim"], 128);
    let a = read_jsonl(&out_jsonl);
    assert_eq!(a.len(), 6);
    assert_eq!(a[0], a[3], "identical texts, identical vectors");

    // Same texts from CSV into .npy: all from the cache now.
    let out_npy = dir.path().join("b.npy");
    let s = embed_json(model, &csv_in, &out_npy, &["--text-col", "body"], &cache);
    assert_eq!(s["cache_hits"], 5);
    assert_eq!(s["encoded"], 0);
    let (rows, dim, data) = read_npy(&out_npy);
    assert_eq!((rows, dim), (6, 128));
    let b: Vec<Vec<f32>> = data.chunks(dim).map(<[f32]>::to_vec).collect();
    assert_eq!(max_diff(&a, &b), 0.0);

    // Reversed plain-text input without the cache: rows come back reversed.
    let out_rev = dir.path().join("c.jsonl");
    let s = embed_json(
        model,
        &reversed_in,
        &out_rev,
        &["--no-cache"],
        &dir.path().join("unused-cache"),
    );
    assert_eq!(s["encoded"], 5);
    assert!(
        !dir.path().join("unused-cache").exists(),
        "--no-cache created a cache"
    );
    let mut c = read_jsonl(&out_rev);
    c.reverse();
    assert!(max_diff(&a, &c) <= 1e-5);

    // Standard input to standard output.
    let mut child = lmfuse(
        &["embed", "--model", model, "-i", "-", "-o", "-", "-q"],
        &cache,
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(TEXTS.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 6);
}

#[test]
fn killed_run_leaves_a_cache_that_opens_and_agrees() {
    let Some(model) = tiny_model() else { return };
    let model = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = dir.path().join("many.txt");
    let n = 60_000;
    let text: String = (0..n)
        .map(|i| format!("text number {i} says {} things\n", "many ".repeat(i % 23)))
        .collect();
    std::fs::write(&input, text).unwrap();
    let out1 = dir.path().join("killed.npy");
    let mut child = lmfuse(
        &[
            "embed",
            "--model",
            model,
            "-i",
            input.to_str().unwrap(),
            "-o",
            out1.to_str().unwrap(),
            "-q",
        ],
        &cache,
    )
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Wait until some chunks are committed, then kill -9 mid-run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut before = 0;
    while std::time::Instant::now() < deadline {
        before = rows_in(&cache);
        if before >= 2048 {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            panic!("embed finished before it could be killed; make the input larger");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(before >= 2048, "no chunk was committed within two minutes");
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(!out1.exists(), "a killed run left an output file");
    assert!(before < n, "the run had finished before the kill");

    let c = lmfuse_cache::EmbeddingCache::open(&cache).expect("cache opens after kill -9");
    assert!(c.integrity_ok().unwrap());
    drop(c);
    let after_kill = rows_in(&cache);
    assert!(after_kill >= before);

    let resumed = dir.path().join("resumed.npy");
    let s = embed_json(model, &input, &resumed, &[], &cache);
    assert_eq!(s["cache_hits"].as_u64().unwrap() as usize, after_kill);
    assert_eq!(s["count"].as_u64().unwrap() as usize, n);
    let fresh = dir.path().join("fresh.npy");
    embed_json(model, &input, &fresh, &["--no-cache"], &cache);
    let (r1, d1, a) = read_npy(&resumed);
    let (r2, d2, b) = read_npy(&fresh);
    assert_eq!((r1, d1), (r2, d2));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "cached vs fresh: {worst}");
}

/// Rows in the cache database, over all encoder keys.
fn rows_in(cache: &Path) -> usize {
    let db = cache.join(lmfuse_cache::DB_FILE);
    if !db.exists() {
        return 0;
    }
    let c = match lmfuse_cache::EmbeddingCache::open(cache) {
        Ok(c) => c,
        Err(_) => return 0,
    };
    c.total_rows().unwrap_or(0)
}

/// Copies splade-tiny to a temp folder with its weights rewritten by `edit`.
fn broken_model(
    edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>),
) -> Option<tempfile::TempDir> {
    let src = tiny_model()?;
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    Some(dir)
}

#[test]
fn bad_inputs_give_one_clear_error_line() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.txt");
    std::fs::write(&good, "hello\nworld\n").unwrap();
    let g = good.to_str().unwrap();
    let out = dir.path().join("out.jsonl");
    let o = out.to_str().unwrap();

    // Missing input file.
    assert_one_line_error(
        &["embed", "--model", m, "-i", "/no/such/input.txt", "-o", o],
        &["/no/such/input.txt", "does not exist"],
    );
    // Invalid UTF-8.
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"fine\nbroken \xff\xfe here\n").unwrap();
    assert_one_line_error(
        &["embed", "--model", m, "-i", bad.to_str().unwrap(), "-o", o],
        &["bad.txt:2", "invalid UTF-8"],
    );
    // Missing text column / field.
    let csv = dir.path().join("d.csv");
    std::fs::write(&csv, "id,body\n1,hi\n").unwrap();
    assert_one_line_error(
        &["embed", "--model", m, "-i", csv.to_str().unwrap(), "-o", o],
        &["d.csv", "no column \"text\"", "id, body"],
    );
    let jl = dir.path().join("d.jsonl");
    std::fs::write(&jl, "{\"sentence\": \"hi\"}\n").unwrap();
    assert_one_line_error(
        &["embed", "--model", m, "-i", jl.to_str().unwrap(), "-o", o],
        &["d.jsonl:1", "\"text\" is missing", "--text-col"],
    );
    // Model folder that does not exist, or holds no model.
    assert_one_line_error(
        &["embed", "--model", "/no/such/model", "-i", g, "-o", o],
        &["/no/such/model", "does not exist"],
    );
    let empty = tempfile::tempdir().unwrap();
    assert_one_line_error(
        &[
            "embed",
            "--model",
            empty.path().to_str().unwrap(),
            "-i",
            g,
            "-o",
            o,
        ],
        &["config.json", "missing"],
    );
    // Unreadable model folder.
    let locked = tempfile::tempdir().unwrap();
    std::fs::copy(model.join("config.json"), locked.path().join("config.json")).unwrap();
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            locked.path().join("config.json"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        assert_one_line_error(
            &[
                "embed",
                "--model",
                locked.path().to_str().unwrap(),
                "-i",
                g,
                "-o",
                o,
            ],
            &["config.json", "cannot read"],
        );
    }
    // Broken config.json.
    let garbled = tempfile::tempdir().unwrap();
    std::fs::write(garbled.path().join("config.json"), "{\"hidden_size\": ").unwrap();
    assert_one_line_error(
        &[
            "embed",
            "--model",
            garbled.path().to_str().unwrap(),
            "-i",
            g,
            "-o",
            o,
        ],
        &["config.json", "invalid JSON"],
    );
    // Missing tensor.
    let missing =
        broken_model(|t| t.retain(|(n, _, _)| !n.ends_with("layer.1.intermediate.dense.weight")))
            .unwrap();
    assert_one_line_error(
        &[
            "embed",
            "--model",
            missing.path().to_str().unwrap(),
            "-i",
            g,
            "-o",
            o,
        ],
        &["encoder.layer.1.intermediate.dense.weight", "missing"],
    );
    // Wrong shape.
    let reshaped = broken_model(|t| {
        for (n, s, _) in t.iter_mut() {
            if n.ends_with("layer.0.attention.self.query.weight") {
                *s = vec![64, 256];
            }
        }
    })
    .unwrap();
    assert_one_line_error(
        &[
            "embed",
            "--model",
            reshaped.path().to_str().unwrap(),
            "-i",
            g,
            "-o",
            o,
        ],
        &["attention.self.query.weight", "[64, 256]", "[128, 128]"],
    );
    // Truncated weights file.
    let truncated = broken_model(|_| {}).unwrap();
    let w = truncated.path().join("model.safetensors");
    let len = std::fs::metadata(&w).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&w).unwrap();
    f.set_len(len / 2).unwrap();
    assert_one_line_error(
        &[
            "embed",
            "--model",
            truncated.path().to_str().unwrap(),
            "-i",
            g,
            "-o",
            o,
        ],
        &["model.safetensors", "invalid safetensors"],
    );
    // Nothing was written by any failed run.
    assert!(!out.exists());
}

#[test]
fn hub_id_offline_says_how_to_use_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let out = lmfuse(
        &[
            "embed",
            "--model",
            "sentence-transformers/all-MiniLM-L6-v2",
            "-i",
            input.to_str().unwrap(),
            "-o",
            "x.jsonl",
        ],
        &dir.path().join("cache"),
    )
    .env("HF_HOME", dir.path().join("hf"))
    // A closed local port: fails at once, like an offline machine.
    .env("HF_ENDPOINT", "http://127.0.0.1:9")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("sentence-transformers/all-MiniLM-L6-v2"),
        "{stderr}"
    );
    assert!(stderr.contains("--model /path/to/folder"), "{stderr}");
}

#[test]
fn hub_id_found_in_the_local_hf_cache_needs_no_network() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("hf/hub/models--lmfuse-test--tiny");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::os::unix::fs::symlink(model.join(f).canonicalize().unwrap(), snap.join(f)).unwrap();
    }
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let out_path = dir.path().join("o.jsonl");
    let out = lmfuse(
        &[
            "embed",
            "--model",
            "lmfuse-test/tiny",
            "-i",
            input.to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
            "--json",
        ],
        &dir.path().join("cache"),
    )
    .env("HF_HOME", dir.path().join("hf"))
    .env("HF_ENDPOINT", "http://127.0.0.1:9")
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_jsonl(&out_path).len(), 1);
}

/// `--model` naming a file, or a folder whose config.json is broken: the one error line names
/// the path and gives the cause exactly once (error messages leave their cause to `source()`).
#[test]
fn a_bad_model_prints_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let train = common::workspace().join("examples/reviews.jsonl");
    let out = dir.path().join("out");
    let (t, o) = (train.to_str().unwrap(), out.to_str().unwrap());
    let broken = dir.path().join("broken-model");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("config.json"), "{\"hidden_size\": ").unwrap();
    let b = broken.to_str().unwrap();
    for (model, cause) in [
        ("/etc/passwd", "is a file, not a model folder"),
        (b, "EOF while parsing"),
    ] {
        let args = ["train", "--model", model, "--train", t, "--out", o];
        assert_one_line_error(&args, &[model]);
        let stderr = common::run(&args, &dir.path().join("cache")).stderr;
        let stderr = String::from_utf8_lossy(&stderr);
        assert_eq!(stderr.matches(cause).count(), 1, "{model}: {stderr}");
    }
    assert!(!out.exists());
}
