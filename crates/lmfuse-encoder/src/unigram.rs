//! Loading `tokenizer.json` with a compact Unigram model.
//!
//! Why not the `tokenizers` crate's own Unigram model: it keeps a byte trie with a hash map per
//! node, which for XLM-R's 250,002 pieces holds about 290 MB resident (measured here) — more
//! than the whole multilingual encoder's weights. [`CompactUnigram`] keeps one hash map from
//! piece to id and runs the same Viterbi search (the same scores, unknown-character penalty,
//! tie-breaking and fusing of adjacent unknowns) in about 20 MB. Everything around the model
//! (normaliser, pre-tokeniser, added tokens, post-processor, truncation) stays the crate's.

use crate::error::EncoderError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokenizers::models::unigram::UnigramTrainer;
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::{
    DecoderWrapper, Model, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Token,
    Tokenizer, TokenizerImpl,
};

/// Score of a character no piece covers, below the lowest piece score (as sentencepiece).
const UNK_PENALTY: f64 = 10.0;

/// A tokenizer whose model is either the crate's or a [`CompactUnigram`].
pub(crate) type LoadedTokenizer = TokenizerImpl<
    Vocab,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// A Unigram (sentencepiece) model held as one piece → id map.
#[derive(Debug, Clone)]
pub struct CompactUnigram {
    ids: HashMap<Box<str>, u32>,
    pieces: Vec<Box<str>>,
    scores: Vec<f64>,
    unk_id: u32,
    min_score: f64,
    max_piece_bytes: usize,
}

impl CompactUnigram {
    /// The model of `vocab` (piece, log-probability) in id order, with unknown piece `unk_id`.
    pub fn new(vocab: Vec<(String, f64)>, unk_id: usize) -> Result<Self, String> {
        if unk_id >= vocab.len() {
            return Err(format!(
                "unk_id {unk_id} is outside the {} pieces",
                vocab.len()
            ));
        }
        let mut ids = HashMap::with_capacity(vocab.len());
        let mut pieces = Vec::with_capacity(vocab.len());
        let mut scores = Vec::with_capacity(vocab.len());
        let (mut min_score, mut max_piece_bytes) = (f64::INFINITY, 1);
        for (id, (piece, score)) in vocab.into_iter().enumerate() {
            if !score.is_finite() {
                return Err(format!("piece {id} ({piece:?}) has score {score}"));
            }
            min_score = min_score.min(score);
            max_piece_bytes = max_piece_bytes.max(piece.len());
            let piece: Box<str> = piece.into();
            // A repeated piece maps to its last id, as in the tokenizers crate.
            ids.insert(piece.clone(), id as u32);
            pieces.push(piece);
            scores.push(score);
        }
        Ok(Self {
            ids,
            pieces,
            scores,
            unk_id: unk_id as u32,
            min_score,
            max_piece_bytes,
        })
    }

    /// The best segmentation of `text` as (start, end, id) byte spans; adjacent unknown
    /// characters are fused into one unknown token.
    fn segment(&self, text: &str) -> Vec<(usize, usize, u32)> {
        #[derive(Clone, Copy)]
        struct Best {
            score: f64,
            start: Option<usize>,
            id: u32,
        }
        let n = text.len();
        let unk_score = self.min_score - UNK_PENALTY;
        let mut best = vec![
            Best {
                score: 0.0,
                start: None,
                id: 0
            };
            n + 1
        ];
        let offer = |best: &mut Vec<Best>, end: usize, start: usize, score: f64, id: u32| {
            let slot = &mut best[end];
            if slot.start.is_none() || score > slot.score {
                *slot = Best {
                    score,
                    start: Some(start),
                    id,
                };
            }
        };
        for (start, c) in text.char_indices() {
            let here = best[start].score;
            let char_end = start + c.len_utf8();
            let mut covered = false;
            let limit = (start + self.max_piece_bytes).min(n);
            // Ends at char boundaries, shortest first (the trie's order in the crate).
            for end in (char_end..=limit).filter(|&e| text.is_char_boundary(e)) {
                if let Some(&id) = self.ids.get(&text[start..end]) {
                    offer(&mut best, end, start, here + self.scores[id as usize], id);
                    covered |= end == char_end;
                }
            }
            if !covered {
                offer(&mut best, char_end, start, here + unk_score, self.unk_id);
            }
        }
        let mut spans = Vec::new();
        let mut end = n;
        while end > 0 {
            let node = best[end];
            let start = node.start.unwrap_or(0);
            match spans.last_mut() {
                Some((s, _, id)) if node.id == self.unk_id && *id == self.unk_id => *s = start,
                _ => spans.push((start, end, node.id)),
            }
            end = start;
        }
        spans.reverse();
        spans
    }
}

/// The model of a loaded tokenizer.
#[derive(Debug, Clone)]
pub(crate) enum Vocab {
    /// Any model the tokenizers crate reads.
    Crate(Box<ModelWrapper>),
    /// A Unigram model held compactly.
    Unigram(CompactUnigram),
}

impl Model for Vocab {
    type Trainer = TrainerWrapper;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        match self {
            Vocab::Crate(m) => m.tokenize(sequence),
            Vocab::Unigram(u) => {
                let tokens = u.segment(sequence).into_iter().map(|(s, e, id)| {
                    let value = match id == u.unk_id {
                        true => sequence[s..e].to_string(),
                        false => u.pieces[id as usize].to_string(),
                    };
                    Token::new(id, value, (s, e))
                });
                Ok(tokens.collect())
            }
        }
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            Vocab::Crate(m) => m.token_to_id(token),
            Vocab::Unigram(u) => u.ids.get(token).copied(),
        }
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        match self {
            Vocab::Crate(m) => m.id_to_token(id),
            Vocab::Unigram(u) => u.pieces.get(id as usize).map(|p| p.to_string()),
        }
    }

    fn get_vocab(&self) -> std::collections::HashMap<String, u32> {
        match self {
            Vocab::Crate(m) => m.get_vocab(),
            Vocab::Unigram(u) => u.ids.iter().map(|(p, &i)| (p.to_string(), i)).collect(),
        }
    }

    fn get_vocab_size(&self) -> usize {
        match self {
            Vocab::Crate(m) => m.get_vocab_size(),
            Vocab::Unigram(u) => u.pieces.len(),
        }
    }

    fn save(&self, folder: &Path, prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        match self {
            Vocab::Crate(m) => m.save(folder, prefix),
            Vocab::Unigram(_) => Err("lmfuse's compact Unigram model is read-only".into()),
        }
    }

    fn get_trainer(&self) -> TrainerWrapper {
        match self {
            Vocab::Crate(m) => m.get_trainer(),
            Vocab::Unigram(_) => TrainerWrapper::UnigramTrainer(UnigramTrainer::default()),
        }
    }
}

fn tokenizer_error(path: &Path, message: impl std::fmt::Display) -> EncoderError {
    EncoderError::Tokenizer {
        context: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Reads `tokenizer.json`; a Unigram model without byte fallback is held as a
/// [`CompactUnigram`], any other model as the crate's.
pub(crate) fn load_tokenizer(path: &Path) -> Result<LoadedTokenizer, EncoderError> {
    let text = std::fs::read_to_string(path).map_err(|e| EncoderError::io(path, e))?;
    let mut json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| EncoderError::Json {
            path: path.to_path_buf(),
            source: e,
        })?;
    drop(text);
    // Added tokens are registered again on the real model (ids checked), so the crate parses
    // the file without them.
    let added = added_tokens(path, json["added_tokens"].take())?;
    json["added_tokens"] = serde_json::json!([]);
    let model = &mut json["model"];
    let compact = model["type"] == "Unigram" && model["byte_fallback"] != true;
    let unigram = if compact {
        let vocab: Vec<(String, f64)> = serde_json::from_value(model["vocab"].take())
            .map_err(|e| tokenizer_error(path, format!("model.vocab: {e}")))?;
        let unk_id = model["unk_id"]
            .as_u64()
            .ok_or_else(|| tokenizer_error(path, "a Unigram model needs an unk_id"))?;
        let unigram =
            CompactUnigram::new(vocab, unk_id as usize).map_err(|e| tokenizer_error(path, e))?;
        // A one-piece stand-in lets the crate parse everything around the model.
        model["vocab"] = serde_json::json!([["<unk>", 0.0]]);
        model["unk_id"] = serde_json::json!(0);
        Some(unigram)
    } else {
        None
    };
    let parsed: Tokenizer = serde_json::from_value(json).map_err(|e| tokenizer_error(path, e))?;
    let parts = parsed.into_inner();
    let vocab = match unigram {
        Some(u) => Vocab::Unigram(u),
        None => Vocab::Crate(Box::new(parts.get_model().clone())),
    };
    let mut out = TokenizerImpl::new(vocab);
    out.with_normalizer(parts.get_normalizer().cloned())
        .map_err(|e| tokenizer_error(path, e))?;
    out.with_pre_tokenizer(parts.get_pre_tokenizer().cloned())
        .with_post_processor(parts.get_post_processor().cloned())
        .with_decoder(parts.get_decoder().cloned());
    for (id, token) in added {
        let got = match token.special {
            true => out.add_special_tokens([token.clone()]),
            false => out.add_tokens([token.clone()]),
        };
        let now = out.token_to_id(&token.content);
        if got.is_err() || now != Some(id) {
            return Err(tokenizer_error(
                path,
                format!(
                    "added token {:?} has id {id} in the file but {now:?} in its model",
                    token.content
                ),
            ));
        }
    }
    Ok(out)
}

/// The `added_tokens` of a tokenizer.json, by id.
fn added_tokens(
    path: &Path,
    list: serde_json::Value,
) -> Result<Vec<(u32, tokenizers::AddedToken)>, EncoderError> {
    #[derive(serde::Deserialize)]
    struct Entry {
        id: u32,
        content: String,
        #[serde(default)]
        single_word: bool,
        #[serde(default)]
        lstrip: bool,
        #[serde(default)]
        rstrip: bool,
        #[serde(default = "yes")]
        normalized: bool,
        #[serde(default)]
        special: bool,
    }
    fn yes() -> bool {
        true
    }
    if list.is_null() {
        return Ok(Vec::new());
    }
    let mut entries: Vec<Entry> = serde_json::from_value(list)
        .map_err(|e| tokenizer_error(path, format!("added_tokens: {e}")))?;
    entries.sort_by_key(|e| e.id);
    Ok(entries
        .into_iter()
        .map(|e| {
            let token = tokenizers::AddedToken::from(e.content, e.special)
                .single_word(e.single_word)
                .lstrip(e.lstrip)
                .rstrip(e.rstrip)
                .normalized(e.normalized);
            (e.id, token)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> CompactUnigram {
        let vocab = [
            ("<unk>", 0.0),
            ("\u{2581}", -2.0),
            ("a", -3.0),
            ("b", -3.0),
            ("ab", -4.0),
            ("\u{2581}ab", -3.5),
            ("酒", -5.0),
            ("酒店", -4.0),
        ];
        CompactUnigram::new(vocab.iter().map(|(p, s)| (p.to_string(), *s)).collect(), 0).unwrap()
    }

    #[test]
    fn viterbi_takes_the_best_scoring_path_and_fuses_unknowns() {
        let m = model();
        let ids = |t: &str| m.segment(t).iter().map(|s| s.2).collect::<Vec<_>>();
        assert_eq!(ids("\u{2581}ab"), vec![5]);
        assert_eq!(ids("abab"), vec![4, 4]);
        assert_eq!(ids("酒店"), vec![7]);
        // Two unknown characters become one unknown token spanning both.
        assert_eq!(m.segment("a☃☃b"), vec![(0, 1, 2), (1, 7, 0), (7, 8, 3)]);
        assert!(m.segment("").is_empty());
        assert!(CompactUnigram::new(vec![("a".into(), 0.0)], 3).is_err());
        assert!(CompactUnigram::new(vec![("a".into(), f64::NAN)], 0).is_err());
    }
}
