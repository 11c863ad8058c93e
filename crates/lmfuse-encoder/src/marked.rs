//! Texts with two marked entities, for relation extraction: marker tokens put around each
//! entity (`<e1>` … `</e1>`, `<e2>` … `</e2>`), and the last layer's states of the first token
//! and of the two opening markers (the "entity start" representation).

use crate::bert::Span;
use crate::{EncoderError, SentenceEncoder};
use rayon::prelude::*;
use std::ops::Range;

/// Token ids of the four markers: `<e1>`, `</e1>`, `<e2>`, `</e2>`.
pub type MarkerIds = [u32; 4];

/// The characters a pretrained encoder reads the markers as before any fine-tuning, and
/// which added marker tokens start from: `[` `]` around e1, `{` `}` around e2.
pub const MARKER_CHARS: [&str; 4] = ["[", "]", "{", "}"];

/// A text with its two entities marked, as the encoder reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedPair {
    /// Token ids, special tokens and markers included.
    pub ids: Vec<u32>,
    /// Row of the `<e1>` marker in `ids`.
    pub e1: usize,
    /// Row of the `<e2>` marker in `ids`.
    pub e2: usize,
    /// Whether tokens were left out to fit the maximum length.
    pub truncated: bool,
}

/// One text and the character ranges of its two entities (`e1`, `e2`, not overlapping).
pub type PairInput<'a> = (&'a str, Range<usize>, Range<usize>);

/// `v` cut to `n` tokens by dropping its middle.
fn keep_ends(v: &[u32], n: usize) -> Vec<u32> {
    if v.len() <= n {
        return v.to_vec();
    }
    let head = n.div_ceil(2);
    [&v[..head], &v[v.len() - (n - head)..]].concat()
}

/// The pieces of one pair in text order: before, first entity, between, second entity,
/// after; and whether e1 is the first.
struct Parts {
    pieces: [Vec<u32>; 5],
    e1_first: bool,
}

/// Lays the parts out in `budget` tokens with the markers: entities cut to their first half
/// of the budget when both do not fit, the text between cut in its middle, then as much
/// context before and after as fits, shared evenly. Returns (body, rows of the first and
/// second opening marker in the body, truncated).
fn lay_out(parts: &Parts, markers: MarkerIds, budget: usize) -> (Vec<u32>, usize, usize, bool) {
    let [before, first, mid, second, after] = &parts.pieces;
    let core_budget = budget.saturating_sub(4);
    let (mut first, mut second) = (first.clone(), second.clone());
    if first.len() + second.len() > core_budget {
        first.truncate((core_budget / 2).max(1));
        second.truncate((core_budget / 2).max(1));
    }
    let mid = keep_ends(mid, core_budget.saturating_sub(first.len() + second.len()));
    let rest = core_budget.saturating_sub(first.len() + mid.len() + second.len());
    let after_take = after.len().min(rest / 2);
    let before_take = before.len().min(rest - after_take);
    let after_take = after.len().min(rest - before_take);
    let [m1o, m1c, m2o, m2c] = if parts.e1_first {
        markers
    } else {
        [markers[2], markers[3], markers[0], markers[1]]
    };
    let mut body = before[before.len() - before_take..].to_vec();
    let first_row = body.len();
    body.push(m1o);
    body.extend_from_slice(&first);
    body.push(m1c);
    body.extend_from_slice(&mid);
    let second_row = body.len();
    body.push(m2o);
    body.extend_from_slice(&second);
    body.push(m2c);
    body.extend_from_slice(&after[..after_take]);
    let whole: usize = parts.pieces.iter().map(Vec::len).sum::<usize>() + 4;
    let truncated = body.len() < whole;
    (body, first_row, second_row, truncated)
}

impl SentenceEncoder {
    /// Subword ids of `texts` without special tokens, a lone SentencePiece word-start piece
    /// before others dropped (shared with the word pieces of tagging).
    pub(crate) fn plain_pieces(&self, texts: Vec<&str>) -> Result<Vec<Vec<u32>>, EncoderError> {
        let encodings =
            self.tokenizer
                .encode_batch(texts, false)
                .map_err(|e| EncoderError::Tokenizer {
                    context: "encoding texts without special tokens".into(),
                    message: e.to_string(),
                })?;
        Ok(encodings
            .iter()
            .map(|e| {
                let lone = e.get_tokens().first().is_some_and(|t| t == "\u{2581}");
                e.get_ids()[usize::from(lone && e.get_ids().len() > 1)..].to_vec()
            })
            .collect())
    }

    /// The ids of [`MARKER_CHARS`]: each must be one token of the vocabulary.
    pub fn punctuation_markers(&self) -> Result<MarkerIds, EncoderError> {
        let pieces = self.plain_pieces(MARKER_CHARS.to_vec())?;
        let mut ids = [0u32; 4];
        for ((id, p), c) in ids.iter_mut().zip(&pieces).zip(MARKER_CHARS) {
            match p.as_slice() {
                [one] => *id = *one,
                _ => {
                    return Err(EncoderError::Tokenizer {
                        context: "entity markers".into(),
                        message: format!(
                            "the tokenizer reads {c:?} as {} tokens, not one",
                            p.len()
                        ),
                    })
                }
            }
        }
        Ok(ids)
    }

    /// Marks each pair's entities with `markers` and cuts it to the maximum length, keeping
    /// both entities and their markers.
    pub fn mark_pairs(
        &self,
        pairs: &[PairInput<'_>],
        markers: MarkerIds,
    ) -> Result<Vec<MarkedPair>, EncoderError> {
        let mut segments = Vec::with_capacity(pairs.len() * 5);
        let mut order = Vec::with_capacity(pairs.len());
        for (text, e1, e2) in pairs {
            let e1_first = e1.start < e2.start;
            let (a, b) = if e1_first { (e1, e2) } else { (e2, e1) };
            let bytes = char_to_byte(text, [a.start, a.end, b.start, b.end]).ok_or_else(|| {
                EncoderError::Tokenizer {
                    context: "entity markers".into(),
                    message: format!("entity spans {e1:?}, {e2:?} overlap or leave the text"),
                }
            })?;
            let cuts = [0, bytes[0], bytes[1], bytes[2], bytes[3], text.len()];
            segments.extend(cuts.windows(2).map(|w| &text[w[0]..w[1]]));
            order.push(e1_first);
        }
        let pieces = self.plain_pieces(segments)?;
        let (start, end) = self.framing.as_ref().map_or((Vec::new(), Vec::new()), |f| {
            (f.start.clone(), f.end.clone())
        });
        let budget = self
            .fingerprint
            .max_seq_length
            .saturating_sub(start.len() + end.len());
        let mut out = Vec::with_capacity(pairs.len());
        for (chunk, e1_first) in pieces.chunks_exact(5).zip(order) {
            let parts = Parts {
                pieces: std::array::from_fn(|k| chunk[k].clone()),
                e1_first,
            };
            let (body, r1, r2, truncated) = lay_out(&parts, markers, budget);
            let (first, second) = (start.len() + r1, start.len() + r2);
            let (e1, e2) = if e1_first {
                (first, second)
            } else {
                (second, first)
            };
            out.push(MarkedPair {
                ids: [start.as_slice(), &body, &end].concat(),
                e1,
                e2,
                truncated,
            });
        }
        Ok(out)
    }

    /// The last layer's states of each pair's first token, `<e1>` and `<e2>` markers:
    /// `pairs × 3·dim` values (no pooling, no normalisation).
    pub fn pair_states(&self, pairs: &[MarkedPair]) -> Vec<f32> {
        let mut groups: Vec<Range<usize>> = Vec::new();
        let (mut from, mut used) = (0, 0);
        for (k, p) in pairs.iter().enumerate() {
            if used + p.ids.len() > self.batch_tokens && k > from {
                groups.push(from..k);
                (from, used) = (k, 0);
            }
            used += p.ids.len();
        }
        groups.push(from..pairs.len());
        let dim = self.model.config().hidden_size;
        groups
            .par_iter()
            .flat_map_iter(|g| {
                let group = &pairs[g.clone()];
                let mut tokens = Vec::new();
                let mut spans = Vec::new();
                for p in group {
                    spans.push(Span {
                        start: tokens.len(),
                        len: p.ids.len(),
                    });
                    tokens.extend_from_slice(&p.ids);
                }
                let types = vec![0u32; tokens.len()];
                let hidden = self.model.forward(&tokens, &types, &spans, 1);
                let mut out = Vec::with_capacity(group.len() * 3 * dim);
                for (p, s) in group.iter().zip(&spans) {
                    for row in [s.start, s.start + p.e1, s.start + p.e2] {
                        out.extend_from_slice(&hidden[row * dim..(row + 1) * dim]);
                    }
                }
                out
            })
            .collect()
    }
}

/// Byte offsets of character offsets `at` (ascending) in `text`; `None` when one is past the
/// end or they are not ascending.
fn char_to_byte(text: &str, at: [usize; 4]) -> Option<[usize; 4]> {
    if at.windows(2).any(|w| w[0] > w[1]) {
        return None;
    }
    let mut bytes = [0usize; 4];
    let mut chars = text.char_indices().map(|(b, _)| b).chain([text.len()]);
    let mut pos = 0usize;
    let mut current = chars.next()?;
    for (k, &c) in at.iter().enumerate() {
        while pos < c {
            current = chars.next()?;
            pos += 1;
        }
        bytes[k] = current;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(lens: [usize; 5], e1_first: bool) -> Parts {
        let mut next = 100u32;
        Parts {
            pieces: lens.map(|n| {
                let v: Vec<u32> = (next..next + n as u32).collect();
                next += 100;
                v
            }),
            e1_first,
        }
    }

    const M: MarkerIds = [1, 2, 3, 4];

    #[test]
    fn a_pair_that_fits_is_laid_out_whole() {
        let (body, r1, r2, cut) = lay_out(&parts([2, 1, 3, 2, 1], true), M, 64);
        assert_eq!(
            body,
            [100, 101, 1, 200, 2, 300, 301, 302, 3, 400, 401, 4, 500]
        );
        assert_eq!((body[r1], body[r2], cut), (1, 3, false));
    }

    #[test]
    fn e2_first_takes_the_e2_markers_first() {
        let (body, r1, r2, _) = lay_out(&parts([0, 1, 0, 1, 0], false), M, 64);
        assert_eq!(body, [3, 100 + 100, 4, 1, 400, 2]);
        assert_eq!((body[r1], body[r2]), (3, 1));
    }

    #[test]
    fn long_pairs_keep_both_entities_within_the_budget() {
        for lens in [
            [50, 3, 40, 2, 50],
            [0, 30, 0, 30, 0],
            [5, 2, 2, 2, 90],
            [90, 1, 1, 1, 0],
        ] {
            for budget in [8, 12, 20, 33] {
                let p = parts(lens, true);
                let (body, r1, r2, cut) = lay_out(&p, M, budget);
                assert!(body.len() <= budget, "{lens:?} {budget}: {}", body.len());
                assert_eq!((body[r1], body[r2]), (1, 3));
                assert!(body.contains(&2) && body.contains(&4));
                assert!(body.contains(&200) && body.contains(&400), "entities kept");
                assert_eq!(cut, body.len() < lens.iter().sum::<usize>() + 4);
            }
        }
    }

    #[test]
    fn character_offsets_become_byte_offsets() {
        assert_eq!(
            char_to_byte("马云创立了", [0, 2, 3, 5]),
            Some([0, 6, 9, 15])
        );
        assert_eq!(char_to_byte("ab", [0, 1, 1, 3]), None);
        assert_eq!(char_to_byte("abc", [0, 2, 1, 3]), None);
    }
}
