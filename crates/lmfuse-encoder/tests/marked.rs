//! Entity markers for relation extraction on real tokenizers (all-MiniLM-L6-v2's WordPiece,
//! multilingual-e5-small's SentencePiece): the markers are single tokens, they sit around the
//! entities' pieces in text order, long texts are cut around the entities, and the pair
//! states are the rows of a plain forward pass.

mod common;

use lmfuse_encoder::{LoadOptions, ModelFiles, SentenceEncoder, Span, MARKER_CHARS};

fn load(name: &str, max: usize) -> Option<SentenceEncoder> {
    let dir = common::require(common::workspace().join("models").join(name), name)?;
    let files = ModelFiles::from_dir(&dir, name).unwrap();
    let options = LoadOptions {
        max_seq_length: Some(max),
        ..LoadOptions::default()
    };
    Some(SentenceEncoder::load(&files, &options).unwrap())
}

fn pieces(enc: &SentenceEncoder, text: &str) -> Vec<u32> {
    let t = enc.tokenize_unprefixed(&[text]).unwrap().remove(0).ids;
    let f = enc.framing().unwrap();
    t[f.start.len()..t.len() - f.end.len()].to_vec()
}

#[test]
fn markers_are_single_tokens_around_the_entities() {
    for name in ["all-MiniLM-L6-v2", "multilingual-e5-small"] {
        let Some(enc) = load(name, 128) else { return };
        let markers = enc.punctuation_markers().unwrap();
        for (id, c) in markers.iter().zip(MARKER_CHARS) {
            assert_eq!(pieces(&enc, c).last(), Some(id), "{name}: {c}");
        }
        let text = "The child was wrapped into the cradle.";
        let pairs = enc
            .mark_pairs(&[(text, 4..9, 31..37), (text, 31..37, 4..9)], markers)
            .unwrap();
        let p = &pairs[0];
        assert_eq!(p.ids[p.e1], markers[0], "{name}");
        assert_eq!(p.ids[p.e2], markers[2], "{name}");
        assert!(p.e1 < p.e2 && !p.truncated);
        let close1 = p.ids.iter().position(|&t| t == markers[1]).unwrap();
        let child = &p.ids[p.e1 + 1..close1];
        assert!(pieces(&enc, "child").ends_with(child), "{name}: {child:?}");
        // e1 after e2 in the text: e2's markers come first.
        let q = &pairs[1];
        assert!(q.e2 < q.e1);
        assert_eq!((q.ids[q.e1], q.ids[q.e2]), (markers[0], markers[2]));
    }
}

#[test]
fn long_texts_are_cut_around_the_entities() {
    let Some(enc) = load("all-MiniLM-L6-v2", 24) else {
        return;
    };
    let markers = enc.punctuation_markers().unwrap();
    let filler = "word ".repeat(40);
    let text = format!("{filler}alpha {filler}beta {filler}");
    let a = filler.len();
    let b = a + 6 + filler.len();
    let pair = &enc
        .mark_pairs(&[(text.as_str(), a..a + 5, b..b + 4)], markers)
        .unwrap()[0];
    assert!(pair.truncated);
    assert!(pair.ids.len() <= 24, "{}", pair.ids.len());
    let alpha = pieces(&enc, "alpha");
    let beta = pieces(&enc, "beta");
    assert_eq!(
        &pair.ids[pair.e1 + 1..pair.e1 + 1 + alpha.len()],
        alpha.as_slice()
    );
    assert_eq!(
        &pair.ids[pair.e2 + 1..pair.e2 + 1 + beta.len()],
        beta.as_slice()
    );
    let f = enc.framing().unwrap();
    assert!(pair.ids.starts_with(&f.start) && pair.ids.ends_with(&f.end));
}

#[test]
fn pair_states_are_the_rows_of_a_plain_forward_pass() {
    let Some(enc) = load("all-MiniLM-L6-v2", 128) else {
        return;
    };
    let markers = enc.punctuation_markers().unwrap();
    let texts = ["A storm caused the flood.", "Le 马云 a fondé Alibaba hier."];
    let pairs = enc
        .mark_pairs(
            &[(texts[0], 2..7, 19..24), (texts[1], 3..5, 13..20)],
            markers,
        )
        .unwrap();
    let states = enc.pair_states(&pairs);
    let dim = enc.model().config().hidden_size;
    assert_eq!(states.len(), 2 * 3 * dim);
    for (k, p) in pairs.iter().enumerate() {
        let hidden = enc.model().forward(
            &p.ids,
            &vec![0; p.ids.len()],
            &[Span {
                start: 0,
                len: p.ids.len(),
            }],
            1,
        );
        for (slot, row) in [0, p.e1, p.e2].into_iter().enumerate() {
            let got = &states[(3 * k + slot) * dim..(3 * k + slot + 1) * dim];
            let want = &hidden[row * dim..(row + 1) * dim];
            let diff = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(diff < 1e-4, "pair {k} slot {slot}: {diff}");
        }
    }
}
