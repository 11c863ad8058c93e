//! all-MiniLM-L6-v2 against sentence-transformers' reference vectors, and batch == single.

mod common;

use common::{cosine, load_model, require, shared_dir};
use lmfuse_core::TextEncoder;
use lmfuse_encoder::SentenceEncoder;

struct Reference {
    sentences: Vec<String>,
    token_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
    pair: (usize, usize, f64),
}

fn reference() -> Option<Reference> {
    let path = require(
        shared_dir().join("fixtures/minilm_l6_reference.json"),
        "reference fixture",
    )?;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let pair = &v["pairs"][0];
    Some(Reference {
        sentences: serde_json::from_value(v["sentences"].clone()).unwrap(),
        token_ids: serde_json::from_value(v["token_ids"].clone()).unwrap(),
        embeddings: serde_json::from_value(v["embeddings"].clone()).unwrap(),
        pair: (
            pair["a"].as_u64().unwrap() as usize,
            pair["b"].as_u64().unwrap() as usize,
            pair["cosine"].as_f64().unwrap(),
        ),
    })
}

#[test]
fn minilm_matches_sentence_transformers() {
    let (Some(reference), Some(encoder)) = (reference(), load_model("all-MiniLM-L6-v2")) else {
        return;
    };
    let texts: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let tokenized = encoder.tokenize(&texts).unwrap();
    for (i, (got, want)) in tokenized.iter().zip(&reference.token_ids).enumerate() {
        assert_eq!(&got.ids, want, "token ids of sentence {i}: {:?}", texts[i]);
    }
    let encoded = encoder.encode(&texts).unwrap();
    assert_eq!(encoded.embeddings.rows(), texts.len());
    let mut worst = 1.0f64;
    for (i, want) in reference.embeddings.iter().enumerate() {
        let c = cosine(encoded.embeddings.row(i), want);
        assert!(c >= 0.9999, "sentence {i} {:?}: cosine {c}", texts[i]);
        worst = worst.min(c);
    }
    eprintln!(
        "min cosine to sentence-transformers over {} sentences: {worst:.8}",
        texts.len()
    );
    // Something in the fixture is longer than 256 tokens and must have been truncated there.
    let longest = tokenized.iter().map(|t| t.ids.len()).max().unwrap();
    assert!(longest <= 256);
    assert_eq!(
        encoded.stats.iter().filter(|s| s.truncated).count(),
        tokenized.iter().filter(|t| t.truncated).count()
    );
    let (a, b, want) = reference.pair;
    let got = cosine(encoded.embeddings.row(a), encoded.embeddings.row(b));
    assert!((got - want).abs() < 1e-4, "pair cosine {got} want {want}");
}

fn assert_batch_equals_single(encoder: &SentenceEncoder, texts: &[&str]) {
    let batched = encoder.encode(texts).unwrap().embeddings;
    let mut worst = 0.0f32;
    for (i, text) in texts.iter().enumerate() {
        let single = encoder.encode(&[text]).unwrap().embeddings;
        for (x, y) in single.row(0).iter().zip(batched.row(i)) {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst <= 1e-5, "max abs diff batch vs single: {worst}");
}

fn mixed_lengths() -> Vec<String> {
    let mut texts = vec![String::new(), "a".to_string(), "Short one.".to_string()];
    for n in [3, 17, 40, 90, 300] {
        texts.push(
            (0..n)
                .map(|i| format!("word{} ", i % 13))
                .collect::<String>(),
        );
    }
    texts.push("混合 lengths 和中文 ünïcödé 🙂".to_string());
    texts
}

#[test]
fn minilm_batch_equals_single() {
    let Some(encoder) = load_model("all-MiniLM-L6-v2") else {
        return;
    };
    let texts = mixed_lengths();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    assert_batch_equals_single(&encoder, &refs);
}

#[test]
fn splade_tiny_loads_prefixed_gamma_beta_checkpoint() {
    let Some(encoder) = load_model("splade-tiny") else {
        return;
    };
    assert_eq!(encoder.dim(), 128);
    let texts = mixed_lengths();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let out = encoder.encode(&refs).unwrap();
    assert!(out.embeddings.as_slice().iter().all(|v| v.is_finite()));
    assert_batch_equals_single(&encoder, &refs);
}

#[test]
fn many_batches_equal_one_batch() {
    // Enough texts for several token-budget batches run on different threads.
    let Some(encoder) = load_model("splade-tiny") else {
        return;
    };
    let texts: Vec<String> = (0..400)
        .map(|i| {
            format!(
                "sentence number {i} with {} extra words",
                "more ".repeat(i % 37)
            )
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let all = encoder.encode(&refs).unwrap().embeddings;
    for chunk_start in (0..refs.len()).step_by(97) {
        let end = (chunk_start + 97).min(refs.len());
        let part = encoder.encode(&refs[chunk_start..end]).unwrap().embeddings;
        for i in 0..end - chunk_start {
            let d = part
                .row(i)
                .iter()
                .zip(all.row(chunk_start + i))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(d <= 1e-5, "text {}: diff {d}", chunk_start + i);
        }
    }
}

#[test]
fn truncated_or_corrupt_weights_are_typed_errors() {
    let Some(src) = common::require(
        common::workspace().join("models/splade-tiny"),
        "splade-tiny",
    ) else {
        return;
    };
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut cases: Vec<(String, Vec<u8>)> = [
        0usize,
        4,
        8,
        8 + header_len / 2,
        8 + header_len + 100,
        bytes.len() / 2,
        bytes.len() - 1,
    ]
    .iter()
    .map(|&n| (format!("truncated at {n} bytes"), bytes[..n].to_vec()))
    .collect();
    let mut huge_header = bytes.clone();
    huge_header[..8].copy_from_slice(&(bytes.len() as u64 * 2).to_le_bytes());
    cases.push(("header length beyond the file".into(), huge_header));
    let mut flipped = bytes.clone();
    flipped[10] ^= 0xff;
    cases.push(("flipped byte in the header".into(), flipped));
    for (what, data) in cases {
        let dir = tempfile::tempdir().unwrap();
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        std::fs::write(dir.path().join("model.safetensors"), &data).unwrap();
        // Resolving reads the header (for the stored precision), so a broken one is caught
        // there; a broken body when the weights are loaded.
        let err = match lmfuse_encoder::ModelFiles::from_dir(dir.path(), "broken") {
            Err(e) => e.to_string(),
            Ok(files) => SentenceEncoder::load(&files, &Default::default())
                .err()
                .unwrap_or_else(|| panic!("{what}: loaded"))
                .to_string(),
        };
        assert!(
            err.contains("model.safetensors") && err.contains("invalid safetensors"),
            "{what}: {err}"
        );
    }
}
