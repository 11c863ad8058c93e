//! Texts longer than the encoder's window: truncated (the default) or encoded in
//! non-overlapping windows averaged by token count, on the tiny XLM-R and Chinese BERT
//! fixtures (24 tokens at most per pass).

use lmfuse_core::{LongText, TextEncoder};
use lmfuse_encoder::{LoadOptions, ModelFiles, SentenceEncoder, TokenizedText};
use std::path::PathBuf;

fn load(name: &str, long_text: LongText, normalize: bool) -> SentenceEncoder {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(name);
    let files = ModelFiles::from_dir(&dir, name).unwrap();
    let options = LoadOptions {
        long_text,
        normalize: Some(normalize),
        ..LoadOptions::default()
    };
    SentenceEncoder::load(&files, &options).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const LONG_EN: &str = "the hotel room was clean and quiet, the staff were kind, the breakfast \
                       was cold but the view over the river made up for it; we would stay again";
const LONG_ZH: &str =
    "酒店很干净，服务很好，早餐一般，但是位置很方便，离地铁站很近，房间也很安静，下次还会再来住。\
                       前台办理入住很快，床很舒服，卫生间有点小，总体来说性价比很高";

/// The windowed embedding is the token-count-weighted mean of the windows' pooled vectors,
/// each window framed by the special tokens and at most 24 tokens long.
fn windows_average_their_pooled_windows(name: &str, text: &str) {
    let windowed = load(name, LongText::Windows, false);
    let whole = windowed.tokenize_for_embedding(&[text]).unwrap().remove(0);
    assert!(
        whole.ids.len() > 2 * 24,
        "{name}: the text must need three windows"
    );
    let framing = windowed.framing().unwrap().clone();
    let windows = framing.windows(&whole, 24);
    assert!(windows.len() >= 3);
    for w in &windows {
        assert!(w.ids.len() <= 24);
        assert!(w.ids.starts_with(&framing.start) && w.ids.ends_with(&framing.end));
    }
    let content: Vec<u32> = windows
        .iter()
        .flat_map(|w| w.ids[framing.start.len()..w.ids.len() - framing.end.len()].to_vec())
        .collect();
    let inner = &whole.ids[framing.start.len()..whole.ids.len() - framing.end.len()];
    assert_eq!(
        content, inner,
        "{name}: windows cover the text once, in order"
    );

    let got = windowed.encode(&[text]).unwrap();
    assert!(!got.stats[0].truncated);
    assert_eq!(got.stats[0].tokens, whole.ids.len());
    let parts = windowed.encode_tokenized(&windows);
    let dim = windowed.dim();
    let mut want = vec![0.0f32; dim];
    let total: usize = windows.iter().map(|w| w.ids.len()).sum();
    for (i, w) in windows.iter().enumerate() {
        let share = w.ids.len() as f32 / total as f32;
        for (o, v) in want.iter_mut().zip(parts.row(i)) {
            *o += share * v;
        }
    }
    let d = max_diff(got.embeddings.row(0), &want);
    assert!(d < 1e-5, "{name}: max diff {d}");
}

#[test]
fn windows_average_their_pooled_windows_in_english_and_chinese() {
    windows_average_their_pooled_windows("xlmr", LONG_EN);
    windows_average_their_pooled_windows("bge_zh", LONG_ZH);
}

#[test]
fn short_texts_embed_alike_and_long_ones_differ_between_modes() {
    let cut = load("xlmr", LongText::Truncate, true);
    let windowed = load("xlmr", LongText::Windows, true);
    let texts = ["the room was clean", LONG_EN];
    let a = cut.encode(&texts).unwrap();
    let b = windowed.encode(&texts).unwrap();
    assert!(max_diff(a.embeddings.row(0), b.embeddings.row(0)) < 1e-6);
    assert!(max_diff(a.embeddings.row(1), b.embeddings.row(1)) > 1e-3);
    assert!(a.stats[1].truncated && !b.stats[1].truncated);
    let norm: f32 = b
        .embeddings
        .row(1)
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt();
    assert!(
        (norm - 1.0).abs() < 1e-5,
        "normalised after averaging: {norm}"
    );
    assert_ne!(
        cut.fingerprint().cache_key(),
        windowed.fingerprint().cache_key()
    );
}

#[test]
fn tokenize_cuts_for_one_pass_in_either_mode_as_the_tokenizer_does() {
    let cut = load("xlmr", LongText::Truncate, true);
    let windowed = load("xlmr", LongText::Windows, true);
    let a: Vec<TokenizedText> = cut.tokenize(&[LONG_EN]).unwrap();
    let b = windowed.tokenize(&[LONG_EN]).unwrap();
    assert_eq!(a, b);
    assert_eq!(a[0].ids.len(), 24);
    assert!(a[0].truncated);
}
