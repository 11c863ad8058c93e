//! Word vectors for token classification (`encode_words`) on the tiny family fixtures (24
//! tokens at most per pass): first-subword rows of the framed sentence, the same whatever the
//! batch, and every word of a sentence longer than a window covered.

use lmfuse_core::TextEncoder;
use lmfuse_encoder::{LoadOptions, ModelFiles, SentenceEncoder, Span};
use std::path::PathBuf;

fn load(name: &str) -> SentenceEncoder {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(name);
    let files = ModelFiles::from_dir(&dir, name).unwrap();
    SentenceEncoder::load(&files, &LoadOptions::default()).unwrap()
}

fn words(text: &str) -> Vec<String> {
    text.split(' ').map(String::from).collect()
}

/// Each word's vector is the row of its first piece when the framed pieces are encoded.
fn first_piece_rows(name: &str, sentence: &[String]) {
    let enc = load(name);
    let framing = enc.framing().unwrap().clone();
    let mut ids = framing.start.clone();
    let mut firsts = Vec::new();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(name);
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    for w in sentence {
        let framed = enc
            .tokenize_unprefixed(&[w.as_str()])
            .unwrap()
            .remove(0)
            .ids;
        let mut pieces = &framed[framing.start.len()..framed.len() - framing.end.len()];
        // A lone word-start marker before the rest of the word is dropped.
        let tokens = tokenizer
            .encode(w.as_str(), false)
            .unwrap()
            .get_tokens()
            .to_vec();
        if pieces.len() > 1 && tokens.first().is_some_and(|t| t == "\u{2581}") {
            pieces = &pieces[1..];
        }
        firsts.push(ids.len());
        ids.extend_from_slice(pieces);
    }
    ids.extend_from_slice(&framing.end);
    let hidden = enc.model().forward(
        &ids,
        &vec![0; ids.len()],
        &[Span {
            start: 0,
            len: ids.len(),
        }],
        1,
    );
    let got = enc.encode_words(&[sentence.to_vec()]).unwrap().remove(0);
    let dim = enc.dim();
    for (k, &row) in firsts.iter().enumerate() {
        let want = &hidden[row * dim..(row + 1) * dim];
        let diff = want
            .iter()
            .zip(&got[k * dim..(k + 1) * dim])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "{name}: word {k} differs by {diff}");
    }
}

#[test]
fn word_vectors_are_first_piece_rows() {
    first_piece_rows("xlmr", &words("the hotel room was clean"));
    first_piece_rows("bge_zh", &words("酒 店 很 干 净"));
}

#[test]
fn batching_does_not_change_a_sentence_and_long_sentences_are_covered() {
    let enc = load("xlmr");
    let short = words("the staff were kind");
    let long = words("the hotel room was clean and quiet , the staff were kind , the breakfast was cold but the view over the river made up for it ; we would stay again");
    let alone = enc.encode_words(std::slice::from_ref(&short)).unwrap();
    let both = enc.encode_words(&[long.clone(), short]).unwrap();
    assert_eq!(alone[0], both[1]);
    let dim = enc.dim();
    assert_eq!(both[0].len(), long.len() * dim);
    for (k, row) in both[0].chunks_exact(dim).enumerate() {
        assert!(
            row.iter().any(|&v| v != 0.0) && row.iter().all(|v| v.is_finite()),
            "word {k}"
        );
    }
}

#[test]
fn word_windows_label_every_word_once_within_the_length() {
    let enc = load("xlmr");
    let long = words("the hotel room was clean and quiet , the staff were kind , the breakfast was cold but the view over the river made up for it ; we would stay again");
    let short = words("the staff were kind");
    let windows = enc.word_windows(&[long.clone(), short.clone()]).unwrap();
    let max = 24;
    let mut seen = [vec![0; long.len()], vec![0; short.len()]];
    for w in &windows {
        assert!(w.ids.len() <= max, "{} tokens", w.ids.len());
        for &(word, row) in &w.firsts {
            assert!((w.core.0..w.core.1).contains(&word) && row < w.ids.len());
            seen[w.sentence][word] += 1;
        }
    }
    assert!(windows.iter().filter(|w| w.sentence == 0).count() > 1);
    assert!(seen.iter().flatten().all(|&n| n == 1), "{seen:?}");
}
