//! The cross-encoder against `transformers`: a tiny random-weight `BertForSequenceClassification`
//! and its logits, committed by `scripts/make-cross-encoder-fixture.py`.

use lmfuse_encoder::{CrossEncoder, ModelFiles};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cross-tiny")
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn pairs_are_tokenized_and_scored_as_transformers_does() {
    let r = reference();
    let max = r["max_length"].as_u64().unwrap() as usize;
    let files = ModelFiles::from_dir(&fixture(), "cross-tiny").unwrap();
    let model = CrossEncoder::load(&files, Some(max)).unwrap();
    let pairs: Vec<(&str, &str)> = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["query"].as_str().unwrap(), p["passage"].as_str().unwrap()))
        .collect();
    let tokens = model.tokenize(&pairs).unwrap();
    let scores = model.score(&pairs).unwrap();
    let mut cut = 0;
    for (i, p) in r["pairs"].as_array().unwrap().iter().enumerate() {
        let want: Vec<u32> = p["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tokens[i].ids, want, "pair {i}'s tokens");
        let sep = want.iter().position(|&t| t == 3).unwrap();
        assert!(tokens[i].type_ids[..=sep].iter().all(|&t| t == 0));
        assert!(tokens[i].type_ids[sep + 1..].iter().all(|&t| t == 1));
        cut += usize::from(tokens[i].truncated);
        let logit = p["logit"].as_f64().unwrap() as f32;
        assert!(
            (scores[i] - logit).abs() < 1e-4,
            "pair {i}: {} vs transformers {logit}",
            scores[i]
        );
    }
    assert_eq!(cut, 1, "the long pair is cut longest first");
    // Scoring a pair alone gives what it gets in a batch.
    let alone = model.score(&pairs[2..3]).unwrap();
    assert!((alone[0] - scores[2]).abs() < 1e-5);
}

#[test]
fn a_sentence_encoder_is_not_a_cross_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture();
    for f in ["config.json", "tokenizer.json", "vocab.txt"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    // The same weights without the classifier.
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("classifier."))
        .collect();
    safetensors::serialize_to_file(kept, None, &dir.path().join("model.safetensors")).unwrap();
    let files = ModelFiles::from_dir(dir.path(), "no-head").unwrap();
    let err = CrossEncoder::load(&files, None)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("classifier.weight"), "{err}");
}
