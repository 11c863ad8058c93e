//! Contextual vectors of the words of pre-tokenised sentences, for token classification.
//!
//! Each word is cut into subword pieces on its own (as Hugging Face does for
//! `is_split_into_words`; a lone word-start marker before a CJK character is dropped), the pieces of a sentence are framed by the special tokens and encoded
//! together, and a word's vector is the last layer's row of its first piece (first-subword
//! labelling). A sentence longer than the maximum length is read in overlapping windows: its
//! words are cut into cores of at most half the window, each core is encoded with as much
//! context on both sides as fits, and each word takes its vector from its own core's window.

use crate::bert::Span;
use crate::{EncoderError, SentenceEncoder};
use lmfuse_core::TextEncoder;
use rayon::prelude::*;
use std::collections::HashMap;

/// The words one window covers: `core` words take their vectors from it, `context` words
/// are encoded in it.
struct Window {
    sentence: usize,
    core: (usize, usize),
    context: (usize, usize),
}

/// One encoder pass over (part of) a pre-tokenised sentence: its token ids with the special
/// tokens, and where the first piece of each word it gives a vector for sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordWindow {
    /// Index of the sentence.
    pub sentence: usize,
    /// Words `core.0..core.1` of the sentence take their vectors from this window.
    pub core: (usize, usize),
    /// Token ids, special tokens included (segment ids are all 0).
    pub ids: Vec<u32>,
    /// `(word, row of its first piece in ids)` for each core word the tokenizer made pieces
    /// of, in word order.
    pub firsts: Vec<(usize, usize)>,
}

impl SentenceEncoder {
    /// Subword pieces of each distinct word (no special tokens).
    fn word_pieces(
        &self,
        sentences: &[Vec<String>],
    ) -> Result<HashMap<String, Vec<u32>>, EncoderError> {
        let mut distinct: Vec<&str> = sentences.iter().flatten().map(String::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();
        // SentencePiece often cuts a word into the word-start marker alone and the rest
        // (`▁`, `酒` for a lone CJK character): the marker carries no meaning and would be
        // the word's first piece, so `plain_pieces` drops it (a Chinese character then reads
        // as in running text, where no marker precedes it).
        let encoded = self.plain_pieces(distinct.clone())?;
        let vocab = self.model.config().vocab_size;
        let mut pieces = HashMap::with_capacity(distinct.len());
        for (word, ids) in distinct.into_iter().zip(encoded) {
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(EncoderError::Tokenizer {
                    context: "encoding words".into(),
                    message: format!("token id {bad} is outside the model's vocabulary"),
                });
            }
            pieces.insert(word.to_string(), ids);
        }
        Ok(pieces)
    }

    /// The windows of one sentence whose words have `counts` pieces each, `budget` pieces
    /// fitting in one window.
    fn windows_of(sentence: usize, counts: &[usize], budget: usize, out: &mut Vec<Window>) {
        let n = counts.len();
        let total: usize = counts.iter().sum();
        if total <= budget {
            out.push(Window {
                sentence,
                core: (0, n),
                context: (0, n),
            });
            return;
        }
        let half = (budget / 2).max(1);
        let mut start = 0;
        while start < n {
            let mut end = start;
            let mut used = 0;
            while end < n && (end == start || used + counts[end] <= half) {
                used += counts[end];
                end += 1;
            }
            let (mut lo, mut hi) = (start, end);
            let mut grew = true;
            while grew {
                grew = false;
                if lo > 0 && used + counts[lo - 1] <= budget {
                    lo -= 1;
                    used += counts[lo];
                    grew = true;
                }
                if hi < n && used + counts[hi] <= budget {
                    used += counts[hi];
                    hi += 1;
                    grew = true;
                }
            }
            out.push(Window {
                sentence,
                core: (start, end),
                context: (lo, hi),
            });
            start = end;
        }
    }

    /// The windows that read `sentences` (in sentence order, each sentence's in word order).
    pub fn word_windows(&self, sentences: &[Vec<String>]) -> Result<Vec<WordWindow>, EncoderError> {
        let pieces = self.word_pieces(sentences)?;
        let (start, end) = self.framing.as_ref().map_or((Vec::new(), Vec::new()), |f| {
            (f.start.clone(), f.end.clone())
        });
        let max = self.fingerprint.max_seq_length;
        let budget = max.saturating_sub(start.len() + end.len()).max(1);
        let mut windows = Vec::new();
        for (i, words) in sentences.iter().enumerate() {
            // A word longer than a window keeps its first `budget` pieces.
            let counts: Vec<usize> = words.iter().map(|w| pieces[w].len().min(budget)).collect();
            Self::windows_of(i, &counts, budget, &mut windows);
        }
        Ok(windows
            .into_iter()
            .map(|w| {
                let mut ids = start.clone();
                let mut firsts = Vec::new();
                for word in w.context.0..w.context.1 {
                    let p = &pieces[&sentences[w.sentence][word]];
                    let p = &p[..p.len().min(budget)];
                    if !p.is_empty() && (w.core.0..w.core.1).contains(&word) {
                        firsts.push((word, ids.len()));
                    }
                    ids.extend_from_slice(p);
                }
                ids.extend_from_slice(&end);
                WordWindow {
                    sentence: w.sentence,
                    core: w.core,
                    ids,
                    firsts,
                }
            })
            .collect())
    }

    /// The vector of every word of every sentence: `n_words × dim` values per sentence. A word
    /// the tokenizer makes no piece of (a lone zero-width character) gets zeros.
    pub fn encode_words(&self, sentences: &[Vec<String>]) -> Result<Vec<Vec<f32>>, EncoderError> {
        let windows = self.word_windows(sentences)?;
        let dim = self.dim();
        let mut out: Vec<Vec<f32>> = sentences.iter().map(|s| vec![0.0; s.len() * dim]).collect();
        let groups = self.window_groups(&windows);
        let encoded: Vec<Vec<(usize, usize, Vec<f32>)>> = groups
            .par_iter()
            .map(|group| self.encode_group(group, &windows))
            .collect();
        for (sentence, word, row) in encoded.into_iter().flatten() {
            out[sentence][word * dim..(word + 1) * dim].copy_from_slice(&row);
        }
        Ok(out)
    }

    /// Windows grouped under the batch token budget.
    fn window_groups(&self, windows: &[WordWindow]) -> Vec<Vec<usize>> {
        let mut groups = vec![Vec::new()];
        let mut used = 0;
        for (k, w) in windows.iter().enumerate() {
            let n = w.ids.len();
            if used + n > self.batch_tokens && !groups.last().is_some_and(Vec::is_empty) {
                groups.push(Vec::new());
                used = 0;
            }
            used += n;
            groups.last_mut().expect("one group").push(k);
        }
        groups
    }

    /// Encodes one group of windows (one thread); returns (sentence, word, vector) rows.
    fn encode_group(
        &self,
        group: &[usize],
        windows: &[WordWindow],
    ) -> Vec<(usize, usize, Vec<f32>)> {
        let mut tokens = Vec::new();
        let mut spans = Vec::new();
        // (sentence, word, row of its first piece), for words with pieces in their core.
        let mut firsts = Vec::new();
        for &k in group {
            let w = &windows[k];
            let begin = tokens.len();
            firsts.extend(
                w.firsts
                    .iter()
                    .map(|&(word, row)| (w.sentence, word, begin + row)),
            );
            tokens.extend_from_slice(&w.ids);
            spans.push(Span {
                start: begin,
                len: w.ids.len(),
            });
        }
        let types = vec![0u32; tokens.len()];
        let hidden = self.model.forward(&tokens, &types, &spans, 1);
        let dim = self.dim();
        firsts
            .into_iter()
            .map(|(s, word, row)| (s, word, hidden[row * dim..(row + 1) * dim].to_vec()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_sentences_get_overlapping_windows_covering_every_word_once() {
        let counts = vec![3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5];
        let mut windows = Vec::new();
        SentenceEncoder::windows_of(0, &counts, 12, &mut windows);
        let mut covered = vec![0; counts.len()];
        for w in &windows {
            assert!(w.context.0 <= w.core.0 && w.core.1 <= w.context.1);
            let used: usize = counts[w.context.0..w.context.1].iter().sum();
            assert!(used <= 12 || w.context.1 - w.context.0 == 1, "{used}");
            (w.core.0..w.core.1).for_each(|i| covered[i] += 1);
        }
        assert!(covered.iter().all(|&c| c == 1), "{covered:?}");
        assert!(windows.len() > 1);
        let mut one = Vec::new();
        SentenceEncoder::windows_of(0, &[2, 2], 12, &mut one);
        assert_eq!(one.len(), 1);
    }
}
