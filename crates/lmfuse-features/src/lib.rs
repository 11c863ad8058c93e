//! Featurisers fit on the training data only and stored with the model.
//!
//! [`TfidfParams`] → [`TfidfParams::fit`] → [`Tfidf`], whose [`Tfidf::transform`] gives sparse
//! rows. The definitions follow scikit-learn's `TfidfVectorizer` so results compare one to one:
//! lower-casing, word tokens of two or more word characters (`(?u)\b\w\w+\b`), character n-grams
//! over the text with runs of white space folded to one space (`analyzer="char"`), smoothed idf
//! `ln((1 + n) / (1 + df)) + 1`, optional sublinear tf `1 + ln(tf)`, and L2-normalised rows.
//!
//! One departure, on by default for word n-grams ([`TfidfParams::segment_cjk`]): Chinese has no
//! spaces, so scikit-learn's pattern makes a whole clause one token. Runs of Han characters are
//! instead cut into words by jieba (default dictionary, no HMM, so deterministic), and every
//! word is kept, one-character words included (猫 "cat", 在 "at" are words in Chinese). Text
//! without Han characters tokenises exactly as before.
//!
//! A second, on by default ([`TfidfParams::nfkc`]): texts are NFKC-normalised before
//! lower-casing, so full-width letters, digits and punctuation (Ａ１，) count as their ASCII
//! forms (A1,), as Chinese input methods and web text mix both.
//!
//! [`tabular`] turns side columns (numbers and categories) into dense features.

mod stop_words;
pub mod tabular;

pub use stop_words::{StopWords, UnknownStopWords, CHINESE as CHINESE_STOP_WORDS};
pub use tabular::{Cell, ColumnSpec, Tabular, TabularError, TabularParams, TabularSpec};

use jieba_rs::Jieba;
use lmfuse_core::CsrMatrix;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::OnceLock;
use unicode_normalization::UnicodeNormalization;

/// Which units n-grams are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Analyzer {
    /// Word tokens.
    Word,
    /// Characters.
    Char,
}

/// Hyperparameters of a TF-IDF vectoriser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TfidfParams {
    /// Word or character n-grams.
    pub analyzer: Analyzer,
    /// Smallest n.
    pub ngram_min: usize,
    /// Largest n.
    pub ngram_max: usize,
    /// `1 + ln(tf)` instead of raw counts.
    pub sublinear_tf: bool,
    /// Terms in fewer training documents than this are dropped.
    pub min_df: usize,
    /// Word analyzer only: cut runs of Han (Chinese) characters into words with jieba instead
    /// of keeping each run whole, and keep one-character Chinese words. Absent (false) in
    /// settings stored before it existed, so those vocabularies keep tokenising as they were
    /// fit; omitted from JSON when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub segment_cjk: bool,
    /// NFKC-normalise texts first (full-width → half-width, compatibility forms folded).
    /// Absent (false) in settings stored before it existed; omitted from JSON when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nfkc: bool,
    /// Word analyzer only: words dropped before n-grams are formed (so an n-gram spans the
    /// dropped word). Absent (none) in settings stored before it existed.
    #[serde(default, skip_serializing_if = "StopWords::is_none")]
    pub stop_words: StopWords,
}

/// Invalid TF-IDF hyperparameters or input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeatureError {
    /// An n-gram range or count is out of bounds.
    #[error("invalid TF-IDF parameter: {0}")]
    Param(String),
    /// Nothing to fit on.
    #[error("no training texts to fit the TF-IDF vocabulary on")]
    Empty,
    /// Stored parts that do not fit together.
    #[error("stored TF-IDF vocabulary has {terms} terms but {idf} idf weights")]
    Stored {
        /// Terms.
        terms: usize,
        /// Weights.
        idf: usize,
    },
}

impl TfidfParams {
    /// Word 1-2 grams with sublinear tf (the issue's scikit-learn baseline), Chinese segmented
    /// with jieba.
    pub fn words() -> Self {
        Self {
            analyzer: Analyzer::Word,
            ngram_min: 1,
            ngram_max: 2,
            sublinear_tf: true,
            min_df: 1,
            segment_cjk: true,
            nfkc: true,
            stop_words: StopWords::None,
        }
    }

    /// Character 2-5 grams with sublinear tf.
    pub fn chars() -> Self {
        Self {
            analyzer: Analyzer::Char,
            ngram_min: 2,
            ngram_max: 5,
            sublinear_tf: true,
            min_df: 1,
            segment_cjk: false,
            nfkc: true,
            stop_words: StopWords::None,
        }
    }

    /// Validates the hyperparameters.
    pub fn check(&self) -> Result<(), FeatureError> {
        if self.ngram_min == 0 || self.ngram_min > self.ngram_max || self.ngram_max > 10 {
            return Err(FeatureError::Param(format!(
                "n-gram range {}..={} must satisfy 1 <= min <= max <= 10",
                self.ngram_min, self.ngram_max
            )));
        }
        if self.min_df == 0 {
            return Err(FeatureError::Param("min_df must be at least 1".into()));
        }
        if self.analyzer == Analyzer::Char && !self.stop_words.is_none() {
            return Err(FeatureError::Param(
                "stop words apply to the word analyzer, not to character n-grams".into(),
            ));
        }
        Ok(())
    }

    /// The n-grams of one text, with repeats, per these parameters.
    fn terms(&self, text: &str) -> Vec<String> {
        let lower = if self.nfkc {
            text.nfkc().collect::<String>().to_lowercase()
        } else {
            text.to_lowercase()
        };
        let mut out = Vec::new();
        match self.analyzer {
            Analyzer::Word => {
                let mut tokens = word_tokens(&lower, self.segment_cjk);
                tokens.retain(|w| !self.stop_words.contains(w));
                for n in self.ngram_min..=self.ngram_max {
                    for w in tokens.windows(n) {
                        out.push(w.join(" "));
                    }
                }
            }
            Analyzer::Char => {
                let chars: Vec<char> = fold_white_space(&lower).chars().collect();
                for n in self.ngram_min..=self.ngram_max {
                    for w in chars.windows(n) {
                        out.push(w.iter().collect());
                    }
                }
            }
        }
        out
    }

    /// Learns the vocabulary and idf weights from `texts`.
    pub fn fit(&self, texts: &[&str]) -> Result<Tfidf, FeatureError> {
        self.check()?;
        if texts.is_empty() {
            return Err(FeatureError::Empty);
        }
        let per_doc: Vec<Vec<String>> = texts
            .par_iter()
            .map(|t| {
                let mut terms = self.terms(t);
                terms.sort_unstable();
                terms.dedup();
                terms
            })
            .collect();
        let mut df: HashMap<String, usize> = HashMap::new();
        for terms in per_doc {
            for t in terms {
                *df.entry(t).or_insert(0) += 1;
            }
        }
        let mut terms: Vec<(String, usize)> =
            df.into_iter().filter(|(_, d)| *d >= self.min_df).collect();
        terms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let n = texts.len() as f64;
        let idf = terms
            .iter()
            .map(|(_, d)| (((1.0 + n) / (1.0 + *d as f64)).ln() + 1.0) as f32)
            .collect();
        let vocab = terms.into_iter().map(|(t, _)| t).collect();
        Tfidf::from_parts(*self, vocab, idf)
    }
}

/// Word tokens of `text`: maximal runs of word characters (letters, digits, marks, `_`) of
/// length two or more, as Python's `(?u)\b\w\w+\b`. With `segment_cjk`, a run holding Han
/// characters is split into its Han and other stretches (a combining mark stays with the
/// stretch before it): Han stretches are cut by [`jieba`] and all their words kept, the other
/// stretches kept when two characters or longer. So `"nlp课程2024年"` gives `nlp`, `课程`,
/// `2024`, `年`.
pub fn word_tokens(text: &str, segment_cjk: bool) -> Vec<&str> {
    let mut out = Vec::new();
    let keep = |s: &str| s.chars().nth(1).is_some();
    for run in word_runs(text) {
        if !(segment_cjk && run.chars().any(is_han)) {
            if keep(run) {
                out.push(run);
            }
            continue;
        }
        let mut start = 0;
        let mut han = None;
        for (i, c) in run.char_indices() {
            if is_mark(c) {
                continue;
            }
            let h = is_han(c);
            if han.is_some_and(|was| was != h) {
                push_stretch(&run[start..i], han == Some(true), &mut out);
                start = i;
            }
            han = Some(h);
        }
        push_stretch(&run[start..], han == Some(true), &mut out);
    }
    out
}

/// Every token of `text` as jieba cuts it (words, spaces and punctuation alike): the pieces
/// concatenate back to `text`.
pub fn jieba_cut(text: &str) -> Vec<&str> {
    jieba()
        .cut(text, false)
        .into_iter()
        .map(|t| t.word)
        .collect()
}

/// Appends the words of one stretch of a word run: jieba's for Han, else the stretch itself
/// when it has two characters or more.
fn push_stretch<'a>(stretch: &'a str, han: bool, out: &mut Vec<&'a str>) {
    if han {
        out.extend(jieba().cut(stretch, false).into_iter().map(|t| t.word));
    } else if stretch.chars().nth(1).is_some() {
        out.push(stretch);
    }
}

/// Maximal runs of word characters (letters, digits, marks, `_`), as Python's `\w+`.
fn word_runs(text: &str) -> Vec<&str> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || is_mark(c);
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (is_word(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push(&text[s..i]);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(&text[s..]);
    }
    out
}

/// The jieba segmenter with its default dictionary, loaded on first use (about 0.1 s) and
/// shared by all threads.
fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(Jieba::new)
}

/// Han ideographs (CJK Unified Ideographs and extensions A-I, compatibility ideographs, and
/// the ideographic zero 〇): the characters jieba segments. Kana and Hangul are not included.
pub fn is_han(c: char) -> bool {
    matches!(c as u32,
        0x3007
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xF900..=0xFAFF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2EE5F
        | 0x2F800..=0x2FA1F
        | 0x30000..=0x323AF)
}

/// Combining marks count as word characters in Python's `\w` (for accents written apart).
fn is_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// Replaces every run of two or more white-space characters by one space, as scikit-learn's
/// character analyzer (`re.sub(r"\s\s+", " ", text)`); single white-space characters stay.
fn fold_white_space(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if j - i >= 2 {
                out.push(' ');
            } else {
                out.push(chars[i]);
            }
            i = j;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// A fitted TF-IDF vectoriser.
#[derive(Debug, Clone, PartialEq)]
pub struct Tfidf {
    params: TfidfParams,
    vocab: Vec<String>,
    index: HashMap<String, u32>,
    idf: Vec<f32>,
}

impl Tfidf {
    /// Rebuilds a vectoriser from its stored vocabulary (in column order) and idf weights.
    pub fn from_parts(
        params: TfidfParams,
        vocab: Vec<String>,
        idf: Vec<f32>,
    ) -> Result<Self, FeatureError> {
        params.check()?;
        if vocab.len() != idf.len() {
            return Err(FeatureError::Stored {
                terms: vocab.len(),
                idf: idf.len(),
            });
        }
        let index = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        Ok(Self {
            params,
            vocab,
            index,
            idf,
        })
    }

    /// The hyperparameters.
    pub fn params(&self) -> &TfidfParams {
        &self.params
    }

    /// Terms in column order.
    pub fn vocab(&self) -> &[String] {
        &self.vocab
    }

    /// Idf weight of each column.
    pub fn idf(&self) -> &[f32] {
        &self.idf
    }

    /// Number of columns.
    pub fn dim(&self) -> usize {
        self.vocab.len()
    }

    /// TF-IDF rows of `texts`, L2-normalised; unknown terms are ignored.
    pub fn transform(&self, texts: &[&str]) -> CsrMatrix {
        let rows: Vec<Vec<(u32, f32)>> = texts
            .par_iter()
            .map(|t| {
                let mut counts: HashMap<u32, u32> = HashMap::new();
                for term in self.params.terms(t) {
                    if let Some(&col) = self.index.get(&term) {
                        *counts.entry(col).or_insert(0) += 1;
                    }
                }
                let mut row: Vec<(u32, f32)> = counts
                    .into_iter()
                    .map(|(col, tf)| {
                        let tf = if self.params.sublinear_tf {
                            1.0 + (tf as f64).ln()
                        } else {
                            tf as f64
                        };
                        (col, (tf * self.idf[col as usize] as f64) as f32)
                    })
                    .collect();
                row.sort_unstable_by_key(|e| e.0);
                let norm = row.iter().map(|e| (e.1 as f64).powi(2)).sum::<f64>().sqrt();
                if norm > 0.0 {
                    for e in row.iter_mut() {
                        e.1 = (e.1 as f64 / norm) as f32;
                    }
                }
                row
            })
            .collect();
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        indptr.push(0);
        let (mut indices, mut values) = (Vec::new(), Vec::new());
        for row in rows {
            for (c, v) in row {
                indices.push(c);
                values.push(v);
            }
            indptr.push(indices.len());
        }
        CsrMatrix::new(texts.len(), self.dim(), indptr, indices, values)
            .expect("rows built in range")
    }
}

/// Places several sparse blocks side by side (scikit-learn's `FeatureUnion` / `hstack`), each
/// block's values multiplied by its weight (a weight of 1 copies them exactly).
pub fn hstack(blocks: &[(&CsrMatrix, f32)]) -> CsrMatrix {
    let rows = blocks.first().map_or(0, |(b, _)| b.rows());
    let cols: usize = blocks.iter().map(|(b, _)| b.cols()).sum();
    let nnz: usize = blocks.iter().map(|(b, _)| b.nnz()).sum();
    let mut indptr = Vec::with_capacity(rows + 1);
    indptr.push(0);
    let (mut indices, mut values) = (Vec::with_capacity(nnz), Vec::with_capacity(nnz));
    for r in 0..rows {
        let mut offset = 0u32;
        for (b, w) in blocks {
            let (c, v) = b.row(r);
            indices.extend(c.iter().map(|&i| i + offset));
            if *w == 1.0 {
                values.extend_from_slice(v);
            } else {
                values.extend(v.iter().map(|x| x * w));
            }
            offset += b.cols() as u32;
        }
        indptr.push(indices.len());
    }
    CsrMatrix::new(rows, cols, indptr, indices, values).expect("blocks of equal rows")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_char_grams_follow_scikit_learn() {
        assert_eq!(
            word_tokens("a cat's 2nd-best, x_y 中文", false),
            ["cat", "2nd", "best", "x_y", "中文"]
        );
        assert_eq!(fold_white_space("a  b\tc \n d"), "a b\tc d");
        let p = TfidfParams {
            ngram_min: 2,
            ngram_max: 3,
            ..TfidfParams::chars()
        };
        assert_eq!(p.terms("Ab c"), ["ab", "b ", " c", "ab ", "b c"]);
        assert_eq!(
            TfidfParams::words().terms("The cat sat"),
            ["the", "cat", "sat", "the cat", "cat sat"]
        );
    }

    /// Reference values from scikit-learn 1.9.1 `TfidfVectorizer(sublinear_tf=True)` with
    /// `analyzer="word", ngram_range=(1, 2)` and `analyzer="char", ngram_range=(2, 5)`.
    #[test]
    fn matches_scikit_learn_tfidf() {
        let docs = [
            "The cat sat on the mat.",
            "The dog  sat on the log!",
            "Cats and dogs: friends?",
            "一只猫 and 一只狗",
        ];
        let queries = ["the cat and the dog sat", "猫 sat"];
        let check = |params: TfidfParams, dim: usize, want: &[&[(&str, f32)]]| {
            let v = params.fit(&docs).unwrap();
            assert_eq!(v.dim(), dim);
            let x = v.transform(&queries);
            for (r, expected) in want.iter().enumerate() {
                let (cols, vals) = x.row(r);
                let got: HashMap<&str, f32> = cols
                    .iter()
                    .zip(vals)
                    .map(|(c, x)| (v_term(&v, *c), *x))
                    .collect();
                for (term, value) in expected.iter() {
                    let g = got.get(term).copied().unwrap_or(f32::NAN);
                    assert!((g - value).abs() < 1e-5, "{term:?}: {g} vs {value}");
                }
            }
        };
        fn v_term(v: &Tfidf, c: u32) -> &str {
            &v.vocab()[c as usize]
        }
        // scikit-learn keeps each run of Han characters whole.
        let sklearn_words = TfidfParams {
            segment_cjk: false,
            nfkc: false,
            ..TfidfParams::words()
        };
        check(
            sklearn_words,
            26,
            &[
                &[
                    ("and", 0.278309),
                    ("cat", 0.352999),
                    ("dog sat", 0.352999),
                    ("sat", 0.278309),
                    ("the", 0.471218),
                    ("the dog", 0.352999),
                ],
                &[("sat", 1.0)],
            ],
        );
        check(
            TfidfParams::chars(),
            204,
            &[
                &[
                    (" a", 0.104532),
                    (" and ", 0.104532),
                    (" c", 0.132586),
                    (" cat ", 0.132586),
                ],
                &[
                    (" s", 0.371027),
                    ("at", 0.300379),
                    ("sat", 0.371027),
                    ("猫 ", 0.470601),
                ],
            ],
        );
    }

    #[test]
    fn chinese_is_segmented_with_jieba() {
        assert_eq!(
            word_tokens("我们在北京大学学习", true),
            ["我们", "在", "北京大学", "学习"]
        );
        // Mixed text: non-Han stretches keep the two-character rule ("i" goes), Han words of
        // one character stay (年), punctuation of either script separates.
        assert_eq!(
            word_tokens("i like 北京大学的nlp课程，2024年!", true),
            ["like", "北京大学", "的", "nlp", "课程", "2024", "年"]
        );
        assert_eq!(
            word_tokens("我们在北京大学学习", false),
            ["我们在北京大学学习"]
        );
        let p = TfidfParams::words();
        assert_eq!(
            p.terms("我在北京"),
            ["我", "在", "北京", "我 在", "在 北京"]
        );
        let v = p.fit(&["我们在北京大学学习", "他在上海学习"]).unwrap();
        assert_eq!(
            v.vocab(),
            [
                "上海",
                "上海 学习",
                "他",
                "他 在",
                "北京大学",
                "北京大学 学习",
                "在",
                "在 上海",
                "在 北京大学",
                "学习",
                "我们",
                "我们 在"
            ]
        );
        let x = v.transform(&["学习在北京大学"]);
        assert_eq!(x.row(0).0, [4, 6, 8, 9]);
    }

    #[test]
    fn segmentation_leaves_other_text_alone() {
        let docs = [
            "The cat sat on the mat.",
            "Ünïcödé wörds, x_y and 2nd-best!",
            "Кошки и собаки; 고양이와 개",
            "a b c d e",
        ];
        let on = TfidfParams::words().fit(&docs).unwrap();
        let off = TfidfParams {
            segment_cjk: false,
            ..TfidfParams::words()
        }
        .fit(&docs)
        .unwrap();
        assert_eq!(on.vocab(), off.vocab());
        assert_eq!(on.idf(), off.idf());
        assert_eq!(on.transform(&docs), off.transform(&docs));
        // Stored settings without the field read as "off"; "off" is not written.
        let old =
            r#"{"analyzer":"word","ngram_min":1,"ngram_max":2,"sublinear_tf":true,"min_df":1}"#;
        let p: TfidfParams = serde_json::from_str(old).unwrap();
        assert!(!p.segment_cjk);
        assert_eq!(serde_json::to_string(&p).unwrap(), old);
        let on: TfidfParams =
            serde_json::from_str(&serde_json::to_string(&TfidfParams::words()).unwrap()).unwrap();
        assert!(on.segment_cjk);
    }

    #[test]
    fn full_width_forms_count_as_their_ascii_forms() {
        let p = TfidfParams::words();
        assert_eq!(p.terms("ＡＢＣ１２３ 好！"), p.terms("abc123 好!"));
        assert_eq!(
            TfidfParams::chars().terms("Ｗｉ－Ｆｉ"),
            TfidfParams::chars().terms("wi-fi")
        );
        let off = TfidfParams {
            nfkc: false,
            ..TfidfParams::words()
        };
        assert_ne!(off.terms("ＡＢＣ"), off.terms("abc"));
        // Stored settings without the field read as "off".
        let old = r#"{"analyzer":"word","ngram_min":1,"ngram_max":2,"sublinear_tf":true,"min_df":1,"segment_cjk":true}"#;
        assert!(!serde_json::from_str::<TfidfParams>(old).unwrap().nfkc);
    }

    #[test]
    fn chinese_stop_words_leave_the_n_grams_and_keep_negations() {
        let zh = TfidfParams {
            stop_words: StopWords::Chinese,
            ..TfidfParams::words()
        };
        let terms = zh.terms("我们的房间不干净");
        assert!(!terms
            .iter()
            .any(|t| t.split(' ').any(|w| w == "的" || w == "我们")));
        assert!(terms.contains(&"不".to_string()), "{terms:?}");
        assert!(
            terms.contains(&"房间 不".to_string()),
            "n-grams span dropped words: {terms:?}"
        );
        assert!(TfidfParams::words()
            .terms("我们的房间")
            .contains(&"的".to_string()));
        let bad = TfidfParams {
            stop_words: StopWords::Chinese,
            ..TfidfParams::chars()
        };
        assert!(bad
            .check()
            .unwrap_err()
            .to_string()
            .contains("word analyzer"));
        let stored = serde_json::to_string(&zh).unwrap();
        assert!(stored.contains(r#""stop_words":"chinese""#), "{stored}");
        assert!(!serde_json::to_string(&TfidfParams::words())
            .unwrap()
            .contains("stop_words"));
    }

    #[test]
    fn bad_params_are_rejected() {
        let p = TfidfParams {
            ngram_min: 3,
            ngram_max: 2,
            ..TfidfParams::words()
        };
        assert!(p.fit(&["x"]).is_err());
        assert_eq!(
            TfidfParams::words().fit(&[]).unwrap_err(),
            FeatureError::Empty
        );
    }

    #[test]
    fn hstack_offsets_columns() {
        let a = CsrMatrix::new(2, 2, vec![0, 1, 2], vec![1, 0], vec![1.0, 2.0]).unwrap();
        let b = CsrMatrix::new(2, 3, vec![0, 1, 1], vec![2], vec![3.0]).unwrap();
        let h = hstack(&[(&a, 1.0), (&b, 1.0)]);
        assert_eq!(h.cols(), 5);
        assert_eq!(h.row(0), (&[1u32, 4][..], &[1.0f32, 3.0][..]));
        assert_eq!(h.row(1), (&[0u32][..], &[2.0f32][..]));
    }
}
