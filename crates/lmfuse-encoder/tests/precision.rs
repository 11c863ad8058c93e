//! The int8 and bf16 encoders: their accuracy against f32 (tiny random models here,
//! all-MiniLM-L6-v2 on the reference sentences when present), converted int8 folders, and the
//! refusals.

mod common;

use common::{cosine, require, shared_dir, workspace};
use lmfuse_core::{Precision, TextEncoder};
use lmfuse_encoder::{convert_to_int8, LoadOptions, ModelFiles, SentenceEncoder};
use std::path::{Path, PathBuf};

fn load(dir: &Path, precision: Option<Precision>) -> SentenceEncoder {
    let files = ModelFiles::from_dir(dir, "model").unwrap();
    let options = LoadOptions {
        precision,
        ..LoadOptions::default()
    };
    SentenceEncoder::load(&files, &options).unwrap()
}

fn family(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(name)
}

const TEXTS: [&str; 6] = [
    "the hotel was clean and the staff were kind",
    "a terrible, slow service",
    "where is my card",
    "酒店很好不错服务。",
    "x",
    "",
];

fn embed(encoder: &SentenceEncoder, texts: &[&str]) -> Vec<Vec<f32>> {
    let out = encoder.encode(texts).unwrap().embeddings;
    (0..texts.len()).map(|i| out.row(i).to_vec()).collect()
}

/// Spearman's rank correlation (no ties expected among float similarities).
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let ranks = |v: &[f64]| {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        for (rank, i) in order.into_iter().enumerate() {
            r[i] = rank as f64;
        }
        r
    };
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let d2: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - y).powi(2)).sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

#[test]
fn int8_and_bf16_embeddings_of_every_family_stay_close_to_f32() {
    for name in ["e5_unigram", "xlmr", "bge_zh"] {
        let f32_encoder = load(&family(name), None);
        let exact = embed(&f32_encoder, &TEXTS);
        // bf16 keeps 8 significant bits where int8 keeps about 7, and needs no scales.
        for (precision, floor) in [(Precision::Int8, 0.99), (Precision::Bf16, 0.999)] {
            let encoder = load(&family(name), Some(precision));
            assert_eq!(encoder.fingerprint().precision, precision);
            assert_eq!(encoder.model().precision(), precision);
            assert_ne!(
                encoder.fingerprint().cache_key(),
                f32_encoder.fingerprint().cache_key(),
                "a cache must never serve f32 vectors for {precision} ones"
            );
            for (i, (e, q)) in exact.iter().zip(&embed(&encoder, &TEXTS)).enumerate() {
                let c = cosine(e, q);
                assert!(c > floor, "{name} {precision} text {i}: cosine {c}");
                assert_ne!(
                    e, q,
                    "{name} text {i}: {precision} gave the f32 vector exactly"
                );
            }
        }
    }
}

#[test]
fn a_converted_folder_loads_in_int8_and_gives_the_vectors_of_quantising_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("xlmr-int8");
    let source = ModelFiles::from_dir(&family("xlmr"), "xlmr").unwrap();
    let done = convert_to_int8(&source, &out).unwrap();
    assert!(done.weights_bytes < done.source_weights_bytes);
    let files = ModelFiles::from_dir(&out, "xlmr-int8").unwrap();
    assert_eq!(files.stored_precision, Precision::Int8);
    let converted = load(&out, None);
    assert_eq!(converted.fingerprint().precision, Precision::Int8);
    // The same int8 layers; only the word table differs, f16 in the converted folder.
    let at_load = load(&family("xlmr"), Some(Precision::Int8));
    for (a, b) in embed(&converted, &TEXTS)
        .iter()
        .zip(embed(&at_load, &TEXTS))
    {
        let c = cosine(a, &b);
        assert!(c > 0.99999, "cosine {c}");
    }

    // f32 cannot be had back from int8 weights, and the error says so.
    let options = LoadOptions {
        precision: Some(Precision::F32),
        ..LoadOptions::default()
    };
    let err = SentenceEncoder::load(&files, &options)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("stored in int8"), "{err}");
    // Nor bf16: int8 weights run in int8 only.
    let options = LoadOptions {
        precision: Some(Precision::Bf16),
        ..LoadOptions::default()
    };
    let err = SentenceEncoder::load(&files, &options)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot run in bf16"), "{err}");
    // Nor is a conversion written over its own source.
    let err = convert_to_int8(&files, &out).unwrap_err().to_string();
    assert!(err.contains("new folder"), "{err}");
}

#[test]
fn a_converted_checkpoint_with_a_broken_scale_is_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let source = ModelFiles::from_dir(&family("bge_zh"), "bge_zh").unwrap();
    convert_to_int8(&source, &out).unwrap();
    // Rewrite one scale as NaN, keeping everything else.
    let path = out.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let name = st
        .names()
        .into_iter()
        .find(|n| n.ends_with("attention.output.dense.weight_scale"))
        .unwrap()
        .to_string();
    let owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let mut data = v.data().to_vec();
            if n == name {
                data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
            }
            (n, v.dtype(), v.shape().to_vec(), data)
        })
        .collect();
    let views = owned.iter().map(|(n, d, s, b)| {
        (
            n.clone(),
            safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
        )
    });
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let files = ModelFiles::from_dir(&out, "m").unwrap();
    let err = SentenceEncoder::load(&files, &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("weight_scale[0]") && err.contains("NaN"),
        "{err}"
    );
}

/// The accuracy guard on a real model: int8 and bf16 vs f32 on the 40 reference sentences,
/// mean cosine ≥ 0.995 and minimum ≥ 0.99, and the ranking of all 780 pairs' similarities
/// kept (Spearman ≥ 0.995 against f32's).
#[test]
fn minilm_in_int8_and_bf16_keeps_the_reference_sentences_and_their_similarity_ranking() {
    let Some(fixture) = require(
        shared_dir().join("fixtures/minilm_l6_reference.json"),
        "reference fixture",
    ) else {
        return;
    };
    let Some(dir) = require(
        workspace().join("models/all-MiniLM-L6-v2"),
        "all-MiniLM-L6-v2",
    ) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let sentences: Vec<String> = serde_json::from_value(v["sentences"].clone()).unwrap();
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let exact = embed(&load(&dir, None), &texts);
    let pairs = |e: &[Vec<f32>]| {
        let mut out = Vec::new();
        for i in 0..e.len() {
            for j in i + 1..e.len() {
                out.push(cosine(&e[i], &e[j]));
            }
        }
        out
    };
    for precision in [Precision::Int8, Precision::Bf16] {
        let reduced = embed(&load(&dir, Some(precision)), &texts);
        let cosines: Vec<f64> = exact
            .iter()
            .zip(&reduced)
            .map(|(e, q)| cosine(e, q))
            .collect();
        let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
        let min = cosines.iter().copied().fold(1.0, f64::min);
        eprintln!(
            "{precision} vs f32 over {} sentences: mean cosine {mean:.5}, min {min:.5}",
            texts.len()
        );
        assert!(
            mean >= 0.995 && min >= 0.99,
            "{precision}: mean {mean}, min {min}"
        );
        let rho = spearman(&pairs(&exact), &pairs(&reduced));
        eprintln!("Spearman of the 780 pair similarities, {precision} vs f32: {rho:.5}");
        assert!(rho >= 0.995, "{precision}: Spearman {rho}");
    }
}
