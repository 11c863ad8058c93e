//! Encoder families beyond English BERT, each a tiny random-weight model made by
//! `scripts/make_family_fixtures.py` with sentence-transformers' token ids and embeddings
//! (PyTorch) committed beside it: BERT with a SentencePiece-Unigram tokenizer and a default
//! prompt (multilingual-e5's layout), XLM-RoBERTa (positions after the padding index) and a
//! Chinese character WordPiece BERT with CLS pooling (bge-small-zh's layout).

mod common;

use common::cosine;
use lmfuse_core::{Pooling, TextEncoder};
use lmfuse_encoder::{LoadOptions, ModelFiles, SentenceEncoder};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Reference {
    texts: Vec<String>,
    ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

fn family(name: &str) -> (SentenceEncoder, Reference) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(name);
    let reference: Reference =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let files = ModelFiles::from_dir(&dir, name).unwrap();
    let encoder = SentenceEncoder::load(&files, &LoadOptions::default()).unwrap();
    (encoder, reference)
}

/// Token ids equal to sentence-transformers' and embeddings within cosine 0.99999 and 1e-4.
fn matches_reference(name: &str) -> SentenceEncoder {
    let (encoder, reference) = family(name);
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    let tokenized = encoder.tokenize(&texts).unwrap();
    for (i, t) in tokenized.iter().enumerate() {
        assert_eq!(t.ids, reference.ids[i], "{name}: ids of {:?}", texts[i]);
    }
    let out = encoder.encode(&texts).unwrap().embeddings;
    for (i, want) in reference.embeddings.iter().enumerate() {
        let got = out.row(i).to_vec();
        let c = cosine(&got, want);
        let diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            c >= 0.99999 && diff < 1e-4,
            "{name} text {i}: cosine {c}, max diff {diff}"
        );
    }
    encoder
}

#[test]
fn a_unigram_bert_with_a_default_prompt_matches_sentence_transformers() {
    let encoder = matches_reference("e5_unigram");
    assert_eq!(encoder.fingerprint().prefix, "query: ");
    assert!(encoder.fingerprint().normalize);
}

#[test]
fn xlm_roberta_numbers_positions_after_the_padding_index() {
    let encoder = matches_reference("xlmr");
    assert_eq!(encoder.fingerprint().pooling, Pooling::Mean);
    assert_eq!(encoder.model().config().position_offset(), 2);
}

#[test]
fn a_chinese_character_wordpiece_bert_with_cls_pooling_matches_sentence_transformers() {
    let encoder = matches_reference("bge_zh");
    assert_eq!(encoder.fingerprint().pooling, Pooling::Cls);
}

#[test]
fn xlm_roberta_refuses_a_window_longer_than_its_positions() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families/xlmr");
    let files = ModelFiles::from_dir(&dir, "xlmr").unwrap();
    // 26 positions, the first two taken by the offset: 24 tokens at most.
    let options = LoadOptions {
        max_seq_length: Some(25),
        ..LoadOptions::default()
    };
    let err = SentenceEncoder::load(&files, &options).err().unwrap();
    assert!(err.to_string().contains("24 positions"), "{err}");
}

#[test]
fn text_in_any_script_embeds_to_a_finite_vector() {
    let texts = [
        "مرحبا بالعالم",
        "नमस्ते दुनिया",
        "สวัสดีชาวโลก",
        "😀🎉👍🏽",
        "\u{200b}\u{feff}\u{200d}",
        "nul\u{0}and\u{7}bell",
        "\u{202e}reversed\u{202c}",
        "e\u{301}\u{301}\u{301}",
        "𠀀𪜀 rare Han",
        "\u{e000}\u{fffd}\u{10ffff}",
        "   ",
        "",
    ];
    for name in ["e5_unigram", "xlmr", "bge_zh"] {
        let (encoder, _) = family(name);
        let out = encoder.encode(&texts).unwrap();
        for (i, t) in texts.iter().enumerate() {
            let row = out.embeddings.row(i);
            assert!(row.iter().all(|v| v.is_finite()), "{name}: {t:?}");
            let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            let unit = (norm - 1.0).abs() < 1e-4;
            let ok = if encoder.fingerprint().normalize {
                unit
            } else {
                norm > 0.0
            };
            assert!(ok, "{name}: {t:?} has norm {norm}");
        }
    }
}
