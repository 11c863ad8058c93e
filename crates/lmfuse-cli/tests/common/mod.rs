//! Helpers shared by the CLI's end-to-end tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `models/splade-tiny`, or `None` (with a message; a failure under LMFUSE_REQUIRE_ASSETS=1).
pub fn tiny_model() -> Option<PathBuf> {
    let dir = workspace().join("models/splade-tiny");
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    let msg = format!(
        "splade-tiny not found at {}: run `bash scripts/fetch-models.sh`",
        dir.display()
    );
    if std::env::var("LMFUSE_REQUIRE_ASSETS").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// `lmfuse ARGS` with its cache in `cache`, two threads and no model from the environment.
pub fn lmfuse(args: &[&str], cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lmfuse"));
    cmd.args(args)
        .env("LMFUSE_CACHE_DIR", cache)
        .env("LMFUSE_THREADS", "2")
        .env_remove("LMFUSE_MODEL");
    cmd
}

/// Runs `lmfuse ARGS` to completion.
pub fn run(args: &[&str], cache: &Path) -> Output {
    lmfuse(args, cache).output().expect("run lmfuse")
}

/// Runs `lmfuse ARGS`, asserts success, and parses its standard output as JSON.
pub fn ok_json(args: &[&str], cache: &Path) -> serde_json::Value {
    let out = run(args, cache);
    assert!(
        out.status.success(),
        "lmfuse {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json output")
}

/// `lmfuse embed --model MODEL -i INPUT -o OUTPUT --json EXTRA...`, parsed.
pub fn embed_json(
    model: &str,
    input: &Path,
    output: &Path,
    extra: &[&str],
    cache: &Path,
) -> serde_json::Value {
    let mut args = vec![
        "embed",
        "--model",
        model,
        "-i",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    ok_json(&args, cache)
}

/// Asserts that `args` fails with exit code 1 and exactly one stderr line that starts with
/// `lmfuse: error:` and contains every one of `needles`.
pub fn assert_one_line_error(args: &[&str], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = run(args, &dir.path().join("cache"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "lmfuse {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    assert!(lines[0].starts_with("lmfuse: error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in: {stderr}");
    }
}

/// Runs lmfuse with `args`, expecting it to fail with every one of `needles` in its
/// standard error.
pub fn fails_with(args: &[&str], cache: &Path, needles: &[&str]) {
    let out = run(args, cache);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} lacks {n:?}");
    }
}

/// A small two-class set where the words decide the label.
pub fn write_set(path: &Path, n: usize, offset: usize) {
    let good = ["great", "excellent", "lovely", "wonderful", "superb"];
    let bad = ["awful", "terrible", "broken", "horrible", "useless"];
    let items = [
        "phone", "hotel", "pizza", "laptop", "movie", "chair", "course",
    ];
    let mut s = String::new();
    for i in offset..offset + n {
        let (words, label) = if i % 2 == 0 {
            (&good, "pos")
        } else {
            (&bad, "neg")
        };
        let text = format!(
            "the {} was {} and {}",
            items[i % items.len()],
            words[i % 5],
            words[(i / 5) % 5]
        );
        s.push_str(&serde_json::json!({"text": text, "label": label}).to_string());
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// Two in-scope intents and out-of-scope texts about something else, labelled `oos`.
pub fn write_intents(path: &Path, n: usize, offset: usize) {
    let mut s = String::new();
    for i in offset..offset + n {
        let (text, label) = match i % 3 {
            0 => (
                format!("please book a flight to city {i} for me"),
                "book_flight",
            ),
            1 => (
                format!("what is the weather like in town {i} today"),
                "weather",
            ),
            _ => (
                format!("my cat number {i} likes to sleep on the warm sofa"),
                "oos",
            ),
        };
        s.push_str(&serde_json::json!({"text": text, "label": label}).to_string());
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// Writes `text` to `dir/name`; returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
