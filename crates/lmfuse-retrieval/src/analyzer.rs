//! How texts become BM25 terms: word runs as scikit-learn's and bm25s's default pattern
//! (`\w\w+`), Han runs cut into words by jieba, lower-cased, English stop words dropped and
//! English words stemmed (Snowball), each step optional.

use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use tantivy::tokenizer::{
    Language, LowerCaser, Stemmer, StopWordFilter, TextAnalyzer, Token, TokenStream, Tokenizer,
};

/// The name the analyser is registered under in every index.
pub(crate) const ANALYZER: &str = "lmfuse_words";

/// Which steps the analyser takes after cutting words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AnalyzerParams {
    /// Drop English stop words.
    pub stop_words: bool,
    /// Stem English words (Snowball).
    pub stem: bool,
}

impl Default for AnalyzerParams {
    fn default() -> Self {
        AnalyzerParams {
            stop_words: true,
            stem: true,
        }
    }
}

/// Cuts a text into [`lmfuse_features::word_tokens`] (jieba for Han runs).
#[derive(Debug, Clone, Copy, Default)]
pub struct WordTokenizer;

/// The tokens of one text, cut up front (jieba needs each Han run whole).
pub struct WordStream {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = WordStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream {
        let base = text.as_ptr() as usize;
        let tokens = lmfuse_features::word_tokens(text, true)
            .into_iter()
            .enumerate()
            .map(|(position, word)| {
                // Every word is a slice of `text`, so its offset is the pointer difference.
                let from = word.as_ptr() as usize - base;
                Token {
                    offset_from: from,
                    offset_to: from + word.len(),
                    position,
                    text: word.to_string(),
                    position_length: 1,
                }
            })
            .collect();
        WordStream { tokens, next: 0 }
    }
}

impl TokenStream for WordStream {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next.saturating_sub(1)]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next.saturating_sub(1)]
    }
}

/// The analyser for `params`.
pub fn analyzer(params: AnalyzerParams) -> TextAnalyzer {
    let mut builder = TextAnalyzer::builder(WordTokenizer).filter_dynamic(LowerCaser);
    if params.stop_words {
        let stop =
            StopWordFilter::new(Language::English).expect("tantivy ships English stop words");
        builder = builder.filter_dynamic(stop);
    }
    if params.stem {
        builder = builder.filter_dynamic(Stemmer::new(Language::English));
    }
    builder.build()
}

/// The terms `params` makes of `text`, in order (repeats kept).
pub fn terms(text: &str, params: AnalyzerParams) -> Vec<String> {
    thread_local! {
        // Building an analyser builds its stop-word set: keep one per thread and setting.
        static ANALYZERS: RefCell<HashMap<AnalyzerParams, TextAnalyzer>> = RefCell::new(HashMap::new());
    }
    ANALYZERS.with(|cell| {
        let mut analyzers = cell.borrow_mut();
        let analyzer = analyzers.entry(params).or_insert_with(|| analyzer(params));
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_is_lowered_stopped_and_stemmed_and_chinese_cut_by_jieba() {
        let p = AnalyzerParams::default();
        assert_eq!(
            terms("The Running of a Dog's races", p),
            ["run", "dog", "race"]
        );
        let plain = AnalyzerParams {
            stop_words: false,
            stem: false,
        };
        assert_eq!(terms("The Running", plain), ["the", "running"]);
        let zh = terms("我们在北京大学学习", p);
        assert!(zh.contains(&"北京大学".to_string()), "{zh:?}");
    }

    #[test]
    fn offsets_point_at_the_words() {
        let text = "αβ 课程 nlp";
        let mut stream = WordTokenizer.token_stream(text);
        let mut seen = Vec::new();
        while stream.advance() {
            let t = stream.token();
            seen.push(text[t.offset_from..t.offset_to].to_string());
            assert_eq!(text[t.offset_from..t.offset_to], t.text);
        }
        assert_eq!(seen, ["αβ", "课程", "nlp"]);
    }
}
