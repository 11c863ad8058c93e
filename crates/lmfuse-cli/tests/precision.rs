//! `--precision int8` and `bf16` end to end with the tiny test encoder: every int8 kernel this
//! CPU runs (forced by `LMFUSE_INT8_KERNEL`) gives the same vectors, every bf16 kernel
//! (`LMFUSE_BF16_KERNEL`) nearly the same, a converted folder runs in int8, and a bundle
//! trained in f32 predicts in int8 and bf16.

mod common;

use common::{assert_one_line_error, embed_json, lmfuse, ok_json, tiny_model, write_set};
use std::path::Path;

const KERNELS: [&str; 4] = ["portable", "avx2", "avx-vnni", "avx512-vnni"];
const INT8_ENV: &str = "LMFUSE_INT8_KERNEL";
const BF16_ENV: &str = "LMFUSE_BF16_KERNEL";

fn write_texts(path: &Path) {
    let texts: Vec<String> = (0..40)
        .map(|i| format!("text {i} about {} things", "many ".repeat(i % 9)))
        .collect();
    std::fs::write(path, texts.join("\n")).unwrap();
}

fn read_rows(path: &Path) -> Vec<Vec<f32>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| serde_json::from_value(v["embedding"].clone()).unwrap())
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(1e-30)
}

/// The tiny test encoder, a folder with 40 texts and their f32 vectors.
struct Setup {
    dir: tempfile::TempDir,
    model: String,
    input: std::path::PathBuf,
    exact: Vec<Vec<f32>>,
}

/// [`Setup`], or `None` (with a message) without the tiny encoder.
fn setup() -> Option<Setup> {
    let model = tiny_model()?.to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    write_texts(&input);
    let f32_out = dir.path().join("f32.jsonl");
    embed_json(&model, &input, &f32_out, &["--no-cache"], dir.path());
    let exact = read_rows(&f32_out);
    Some(Setup {
        dir,
        model,
        input,
        exact,
    })
}

#[test]
fn every_int8_kernel_this_cpu_runs_gives_the_portable_kernels_vectors() {
    let Some(Setup {
        dir,
        model,
        input,
        exact,
    }) = setup()
    else {
        return;
    };
    let m = model.as_str();
    let mut outputs = Vec::new();
    for kernel in KERNELS {
        if let Some(rows) = embed_forced(m, &input, ("int8", INT8_ENV, kernel), dir.path()) {
            outputs.push((kernel, rows));
        }
    }
    let (_, reference) = &outputs[0];
    for (kernel, rows) in &outputs[1..] {
        assert_eq!(rows, reference, "{kernel} differs from the portable kernel");
    }
    for (i, (e, q)) in exact.iter().zip(reference).enumerate() {
        let c = cosine(e, q);
        assert!(c > 0.99 && e != q, "text {i}: cosine {c}");
    }
    let bad = common::run(
        &[
            "embed",
            "--model",
            m,
            "-i",
            input.to_str().unwrap(),
            "-o",
            "-",
            "--precision",
            "int4",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("unknown precision \"int4\""),
        "{stderr}"
    );
}

/// `embed --precision P` with the environment variable `env` set to `kernel`: the rows, or
/// `None` when this CPU lacks the kernel (refused by name, never replaced silently).
fn embed_forced(
    model: &str,
    input: &Path,
    (precision, env, kernel): (&str, &str, &str),
    dir: &Path,
) -> Option<Vec<Vec<f32>>> {
    let out = dir.join(format!("{precision}-{kernel}.jsonl"));
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let args = [
        "embed",
        "--model",
        model,
        "-i",
        i,
        "-o",
        o,
        "--precision",
        precision,
        "--no-cache",
        "-q",
    ];
    let run = lmfuse(&args, dir).env(env, kernel).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    if run.status.success() {
        return Some(read_rows(&out));
    }
    assert!(
        stderr.contains("lacks its instructions") && stderr.contains(kernel),
        "{kernel}: {stderr}"
    );
    assert_ne!(kernel, "portable", "the portable kernel runs everywhere");
    eprintln!("{kernel}: not on this CPU, skipped");
    None
}

#[test]
fn every_bf16_kernel_this_cpu_runs_gives_the_portable_kernels_vectors_within_rounding() {
    let Some(Setup {
        dir,
        model,
        input,
        exact,
    }) = setup()
    else {
        return;
    };
    let m = model.as_str();
    let reference = embed_forced(m, &input, ("bf16", BF16_ENV, "portable"), dir.path()).unwrap();
    if let Some(rows) = embed_forced(m, &input, ("bf16", BF16_ENV, "avx512-bf16"), dir.path()) {
        // The same rounded products summed in another order.
        for (i, (a, b)) in rows.iter().zip(&reference).enumerate() {
            let c = cosine(a, b);
            assert!(c > 0.99999, "text {i}: cosine {c} to the portable kernel's");
        }
    }
    for (i, (e, q)) in exact.iter().zip(&reference).enumerate() {
        let c = cosine(e, q);
        assert!(c > 0.999 && e != q, "text {i}: cosine {c} to f32");
    }
}

#[test]
fn a_converted_folder_runs_in_int8_and_a_bundle_predicts_in_int8_and_bf16() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let converted = dir.path().join("tiny-int8");
    let c = converted.to_str().unwrap();
    let done = ok_json(
        &["models", "convert", "--model", m, "--out", c, "--json"],
        &cache,
    );
    assert_eq!(done["precision"], "int8");
    assert!(done["ratio"].as_f64().unwrap() < 0.6, "{done}");

    let input = dir.path().join("in.txt");
    write_texts(&input);
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    embed_json(c, &input, &a, &[], &cache);
    embed_json(m, &input, &b, &["--precision", "int8"], &cache);
    for (x, y) in read_rows(&a).iter().zip(read_rows(&b)) {
        assert!(cosine(x, &y) > 0.9999);
    }
    let i = input.to_str().unwrap();
    assert_one_line_error(
        &[
            "embed",
            "--model",
            c,
            "-i",
            i,
            "-o",
            "-",
            "--precision",
            "f32",
        ],
        &["stored in int8"],
    );

    // A bundle trained in f32 predicts in int8 without retraining, nearly always alike.
    let (train, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("test.jsonl"),
    );
    write_set(&train, 120, 0);
    write_set(&test, 60, 1000);
    let bundle = dir.path().join("bundle");
    let bundle_s = bundle.to_str().unwrap();
    let train_s = train.to_str().unwrap();
    ok_json(
        &[
            "train", "--model", m, "--train", train_s, "--out", bundle_s, "--json",
        ],
        &cache,
    );
    let eval = |bundle: &str, extra: &[&str]| {
        let mut args = vec!["eval", "--model", bundle, "--data", test.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push("--json");
        ok_json(&args, &cache)["test"]["accuracy"].as_f64().unwrap()
    };
    let f32_acc = eval(bundle_s, &[]);
    assert!(f32_acc >= 0.9, "f32 accuracy {f32_acc}");
    for precision in ["int8", "bf16"] {
        let acc = eval(bundle_s, &["--precision", precision]);
        assert!(
            (f32_acc - acc).abs() <= 0.05,
            "f32 {f32_acc}, {precision} {acc}"
        );
        // A converted bundle records the precision and runs in it without the flag.
        let converted = dir.path().join(format!("bundle-{precision}"));
        let c = converted.to_str().unwrap();
        let done = ok_json(
            &[
                "models",
                "convert",
                "--bundle",
                bundle_s,
                "--precision",
                precision,
                "--out",
                c,
                "--json",
            ],
            &cache,
        );
        assert_eq!(done["encoders"], 1, "{done}");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(converted.join("manifest.json")).unwrap())
                .unwrap();
        let manifest = manifest.to_string();
        assert!(
            manifest.contains(&format!("\"precision\":\"{precision}\"")),
            "{manifest}"
        );
        assert_eq!(eval(c, &[]), acc, "{precision}: converted vs --precision");
    }
    assert_one_line_error(
        &[
            "models",
            "convert",
            "--bundle",
            bundle_s,
            "--precision",
            "int8",
            "--out",
            bundle_s,
        ],
        &["another folder"],
    );
}
