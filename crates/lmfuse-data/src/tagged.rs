//! Token-tagged sentences for sequence labelling (named entities): CoNLL column files and JSON
//! Lines with character-offset spans, read into tokens with IOB2 tags.
//!
//! CoNLL: one token per line, the token first and the tag last (tab-separated when the line has a
//! tab, else whitespace-separated), a blank line between sentences, `-DOCSTART-` lines ignored.
//! Tags in IO, IOB2 (`BIO`) or IOBES (`BIOES`) are told apart by the prefixes present (or fixed by
//! the caller) and converted to IOB2. A tag that breaks its scheme is an error naming the line,
//! unless `repair` is asked, in which case the tags are read by conlleval's rules (a stray `I-X`
//! opens an entity).
//!
//! JSON Lines: `{"text": ..., "entities": [{"start": 0, "end": 5, "label": "PER"}]}` with offsets
//! in characters (Unicode scalar values) of `text`; the text is cut into tokens by [`tokenize`],
//! with a cut forced at every span edge.

use crate::read::{json_type, lines, read_file, DataError};
use lmfuse_metrics::entity::{entities, Entity, Reading};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How the tags of a file mark entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagScheme {
    /// `I-X` and `O` only: adjacent entities of one type cannot be told apart.
    Io,
    /// IOB2: `B-X` opens an entity, `I-X` continues it.
    Bio,
    /// `B-X`, `I-X`, `E-X` (last token) and `S-X` (a one-token entity).
    Bioes,
}

impl std::fmt::Display for TagScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Io => "IO",
            Self::Bio => "BIO",
            Self::Bioes => "BIOES",
        })
    }
}

impl std::str::FromStr for TagScheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "io" => Ok(Self::Io),
            "bio" | "iob2" => Ok(Self::Bio),
            "bioes" | "iobes" => Ok(Self::Bioes),
            _ => Err(format!(
                "unknown tag scheme {s:?} (expected io, bio or bioes)"
            )),
        }
    }
}

/// One sentence: its tokens and their IOB2 tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaggedSentence {
    /// Tokens.
    pub tokens: Vec<String>,
    /// One IOB2 tag per token.
    pub tags: Vec<String>,
    /// The sentence's first line in its file.
    pub line: usize,
}

impl TaggedSentence {
    /// The sentence's entities (token spans).
    pub fn entities(&self) -> Vec<Entity> {
        entities(&self.tags, Reading::Strict)
    }
}

/// The sentences of one file and the scheme its tags were written in.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedSet {
    /// Sentences, tags converted to IOB2.
    pub sentences: Vec<TaggedSentence>,
    /// The scheme the file used.
    pub scheme: TagScheme,
}

impl TaggedSet {
    /// Entity types, sorted.
    pub fn entity_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self
            .sentences
            .iter()
            .flat_map(|s| s.entities().into_iter().map(|e| e.label))
            .collect();
        types.sort();
        types.dedup();
        types
    }
}

/// How tags are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TagOptions {
    /// The scheme; `None` tells it from the prefixes present.
    pub scheme: Option<TagScheme>,
    /// Read tags that break their scheme by conlleval's rules instead of refusing them.
    pub repair: bool,
}

/// The file formats of tagged data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaggedFormat {
    /// CoNLL columns.
    Conll,
    /// JSON Lines with text and character-offset spans.
    Spans,
}

impl TaggedFormat {
    /// `.jsonl`/`.json`/`.ndjson` are spans; anything else is CoNLL.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "json" | "ndjson") => Self::Spans,
            _ => Self::Conll,
        }
    }
}

/// Reads tagged sentences from `path`, in the format its extension says.
pub fn read_tagged(path: &Path, options: TagOptions) -> Result<TaggedSet, DataError> {
    let bytes = read_file(path)?;
    let set = match TaggedFormat::from_path(path) {
        TaggedFormat::Conll => parse_conll(&bytes, path, options)?,
        TaggedFormat::Spans => parse_spans(&bytes, path)?,
    };
    if set.sentences.is_empty() {
        return Err(DataError::NoSentences {
            path: path.to_path_buf(),
        });
    }
    Ok(set)
}

/// Tagged sentences given in memory (`tokens[i]` and `tags[i]` of sentence `i`), checked and
/// converted as [`parse_conll`] does; an error names `name[sentence]:token` (1-based token).
pub fn from_sequences(
    tokens: Vec<Vec<String>>,
    tags: Vec<Vec<String>>,
    options: TagOptions,
    name: &str,
) -> Result<TaggedSet, DataError> {
    let place = |i: usize| PathBuf::from(format!("{name}[{i}]"));
    let mismatch = |what: String| DataError::Sequences {
        name: name.to_string(),
        what,
    };
    if tokens.len() != tags.len() {
        let what = format!(
            "{} sentences of tokens but {} of tags",
            tokens.len(),
            tags.len()
        );
        return Err(mismatch(what));
    }
    let mut raw = Vec::with_capacity(tokens.len());
    for (i, (t, g)) in tokens.into_iter().zip(tags).enumerate() {
        if t.len() != g.len() || t.is_empty() {
            let what = format!(
                "sentence {i} has {} tokens and {} tags (at least one of each)",
                t.len(),
                g.len()
            );
            return Err(mismatch(what));
        }
        raw.push(RawSentence {
            lines: (1..=t.len()).collect(),
            tokens: t,
            tags: g,
        });
    }
    let scheme = options.scheme.unwrap_or_else(|| detect_scheme(&raw));
    let sentences = raw
        .into_iter()
        .enumerate()
        .map(|(i, s)| to_iob2(s, scheme, options.repair, &place(i)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TaggedSet { sentences, scheme })
}

/// A sentence as read: tokens, raw tags and the line of each token.
struct RawSentence {
    tokens: Vec<String>,
    tags: Vec<String>,
    lines: Vec<usize>,
}

/// Parses a CoNLL column file (see the module's documentation).
pub fn parse_conll(bytes: &[u8], path: &Path, options: TagOptions) -> Result<TaggedSet, DataError> {
    let raw = split_conll(bytes, path)?;
    let scheme = options.scheme.unwrap_or_else(|| detect_scheme(&raw));
    let sentences = raw
        .into_iter()
        .map(|s| to_iob2(s, scheme, options.repair, path))
        .collect::<Result<_, _>>()?;
    Ok(TaggedSet { sentences, scheme })
}

fn split_conll(bytes: &[u8], path: &Path) -> Result<Vec<RawSentence>, DataError> {
    let mut out = Vec::new();
    let mut current = RawSentence {
        tokens: Vec::new(),
        tags: Vec::new(),
        lines: Vec::new(),
    };
    let mut columns = None;
    for item in lines(bytes, path) {
        let (line_no, line) = item?;
        // A line of only spaces or byte-order marks (a stray U+FEFF) separates sentences.
        let blank = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        if blank.is_empty() || line.starts_with("-DOCSTART-") {
            if !current.tokens.is_empty() {
                out.push(std::mem::replace(
                    &mut current,
                    RawSentence {
                        tokens: Vec::new(),
                        tags: Vec::new(),
                        lines: Vec::new(),
                    },
                ));
            }
            continue;
        }
        let fields: Vec<&str> = if line.contains('\t') {
            line.split('\t').collect()
        } else {
            line.split_whitespace().collect()
        };
        let expected = *columns.get_or_insert(fields.len());
        if fields.len() != expected || fields.len() < 2 {
            return Err(DataError::Columns {
                path: path.to_path_buf(),
                line: line_no,
                found: fields.len(),
                expected: expected.max(2),
            });
        }
        current.tokens.push(fields[0].to_string());
        current
            .tags
            .push(fields[fields.len() - 1].trim().to_string());
        current.lines.push(line_no);
    }
    if !current.tokens.is_empty() {
        out.push(current);
    }
    Ok(out)
}

/// BIOES when any `E-`/`S-` prefix is present, IOB2 when any `B-` is, else IO.
fn detect_scheme(sentences: &[RawSentence]) -> TagScheme {
    let prefixes = || {
        sentences
            .iter()
            .flat_map(|s| s.tags.iter())
            .map(|t| prefix(t))
    };
    if prefixes().any(|p| matches!(p, Some('E' | 'S'))) {
        TagScheme::Bioes
    } else if prefixes().any(|p| p == Some('B')) || !prefixes().any(|p| p == Some('I')) {
        TagScheme::Bio
    } else {
        TagScheme::Io
    }
}

/// The prefix letter of a well-formed tag (`None` for `O` and malformed tags).
fn prefix(tag: &str) -> Option<char> {
    let (p, label) = tag.split_once('-')?;
    match p {
        "B" | "I" | "E" | "S" if !label.is_empty() => p.chars().next(),
        _ => None,
    }
}

fn to_iob2(
    raw: RawSentence,
    scheme: TagScheme,
    repair: bool,
    path: &Path,
) -> Result<TaggedSentence, DataError> {
    let bad = |i: usize, reason: &str| DataError::BadTag {
        path: path.to_path_buf(),
        line: raw.lines[i],
        tag: raw.tags[i].clone(),
        reason: reason.to_string(),
    };
    for (i, tag) in raw.tags.iter().enumerate() {
        let allowed = match scheme {
            TagScheme::Io => "IO",
            TagScheme::Bio => "BIO",
            TagScheme::Bioes => "BIES",
        };
        let ok = tag == "O" || prefix(tag).is_some_and(|p| allowed.contains(p));
        if !ok {
            return Err(bad(i, &format!("is not O or one of {allowed:?} with a type, as the {scheme} scheme wants (--tag-scheme sets the scheme)")));
        }
    }
    let reading = match scheme {
        TagScheme::Bioes => Reading::StrictIobes,
        _ => Reading::Strict,
    };
    let found = match scheme {
        TagScheme::Io => entities(&raw.tags, Reading::Lenient),
        _ if repair => entities(&raw.tags, Reading::Lenient),
        _ => {
            if let Some(i) = first_break(&raw.tags, scheme) {
                return Err(bad(i, &break_reason(scheme)));
            }
            entities(&raw.tags, reading)
        }
    };
    Ok(TaggedSentence {
        tags: iob2_tags(raw.tokens.len(), &found),
        tokens: raw.tokens,
        line: raw.lines[0],
    })
}

fn break_reason(scheme: TagScheme) -> String {
    let rule = match scheme {
        TagScheme::Bioes => {
            "I-X and E-X must follow B-X or I-X, and B-X/I-X be followed by I-X or E-X"
        }
        _ => "I-X must follow B-X or I-X",
    };
    format!("breaks the {scheme} scheme ({rule}); --repair-bio reads it by conlleval's rules")
}

/// The first token whose tag breaks the scheme, if any.
fn first_break(tags: &[String], scheme: TagScheme) -> Option<usize> {
    let parsed: Vec<(Option<char>, &str)> = tags
        .iter()
        .map(|t| (prefix(t), t.split_once('-').map_or("", |p| p.1)))
        .collect();
    let continues = |i: usize| {
        i > 0 && matches!(parsed[i - 1].0, Some('B' | 'I')) && parsed[i - 1].1 == parsed[i].1
    };
    for (i, (p, _)) in parsed.iter().enumerate() {
        let broken = match p {
            Some('I') => !continues(i),
            Some('E') => !continues(i),
            _ => false,
        };
        let unfinished = scheme == TagScheme::Bioes
            && matches!(p, Some('B' | 'I'))
            && !(i + 1 < parsed.len()
                && matches!(parsed[i + 1].0, Some('I' | 'E'))
                && parsed[i + 1].1 == parsed[i].1);
        if broken || unfinished {
            return Some(i);
        }
    }
    None
}

/// IOB2 tags of `n` tokens holding `found` (non-overlapping token spans).
pub fn iob2_tags(n: usize, found: &[Entity]) -> Vec<String> {
    let mut tags = vec!["O".to_string(); n];
    for e in found {
        for (k, tag) in tags[e.start..e.end].iter_mut().enumerate() {
            let p = if k == 0 { 'B' } else { 'I' };
            *tag = format!("{p}-{}", e.label);
        }
    }
    tags
}

/// Whether `c` is written without spaces between words (CJK ideographs, kana, Hangul syllables
/// are tokens of one character each).
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF
        | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

fn is_edge_punct(c: char) -> bool {
    c.is_ascii_punctuation() && !matches!(c, '@' | '#' | '_' | '$' | '&')
        || matches!(
            c,
            '，' | '。'
                | '、'
                | '；'
                | '：'
                | '！'
                | '？'
                | '“'
                | '”'
                | '‘'
                | '’'
                | '（'
                | '）'
                | '《'
                | '》'
        )
}

/// Cuts `text` into tokens, as character offsets `(start, end)`: whitespace separates, each CJK
/// character is a token, punctuation at either end of a word is split off one character at a
/// time, and a token is also cut at every offset in `cuts`.
pub fn tokenize(text: &str, cuts: &[usize]) -> Vec<(usize, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() {
            i += 1;
        }
        split_word(&chars, start, i, cuts, &mut out);
    }
    out
}

fn split_word(
    chars: &[char],
    start: usize,
    end: usize,
    cuts: &[usize],
    out: &mut Vec<(usize, usize)>,
) {
    let mut lo = start;
    let mut hi = end;
    let mut tail = Vec::new();
    while lo < hi && is_edge_punct(chars[lo]) {
        out.push((lo, lo + 1));
        lo += 1;
    }
    while hi > lo && is_edge_punct(chars[hi - 1]) {
        tail.push((hi - 1, hi));
        hi -= 1;
    }
    let mut piece = lo;
    for k in lo..hi {
        let cut_here = k > piece && (cuts.contains(&k) || is_cjk(chars[k]) || is_cjk(chars[k - 1]));
        if cut_here {
            out.push((piece, k));
            piece = k;
        }
    }
    if piece < hi {
        out.push((piece, hi));
    }
    out.extend(tail.into_iter().rev());
}

/// Joins tokens into a text: a space between two tokens unless both are CJK characters (Chinese
/// written one character per token). Returns the text and each token's character offsets.
pub fn join_tokens<S: AsRef<str>>(tokens: &[S]) -> (String, Vec<(usize, usize)>) {
    let mut text = String::new();
    let mut offsets = Vec::with_capacity(tokens.len());
    let mut at = 0;
    let mut prev_cjk = false;
    for (i, token) in tokens.iter().enumerate() {
        let token = token.as_ref();
        let cjk = token.chars().all(is_cjk) && !token.is_empty();
        if i > 0 && !(cjk && prev_cjk) {
            text.push(' ');
            at += 1;
        }
        let len = token.chars().count();
        text.push_str(token);
        offsets.push((at, at + len));
        at += len;
        prev_cjk = cjk;
    }
    (text, offsets)
}

/// One entity of a text, in characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextSpan {
    /// First character.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// Type.
    pub label: String,
}

/// Parses JSON Lines of texts with character-offset spans into tagged sentences.
pub fn parse_spans(bytes: &[u8], path: &Path) -> Result<TaggedSet, DataError> {
    let mut sentences = Vec::new();
    for item in lines(bytes, path) {
        let (line, text_line) = item?;
        if text_line.trim().is_empty() {
            continue;
        }
        let (text, spans) = parse_span_line(text_line, path, line)?;
        let bounds: Vec<usize> = spans.iter().flat_map(|s| [s.start, s.end]).collect();
        let offsets = tokenize(&text, &bounds);
        let chars: Vec<char> = text.chars().collect();
        let mut found = Vec::new();
        for (index, span) in spans.iter().enumerate() {
            let start = offsets.iter().position(|o| o.0 >= span.start);
            let end = offsets.iter().rposition(|o| o.1 <= span.end);
            match (start, end) {
                (Some(s), Some(e)) if s <= e => found.push(Entity {
                    start: s,
                    end: e + 1,
                    label: span.label.clone(),
                }),
                _ => {
                    return Err(span_error(
                        path,
                        line,
                        index,
                        "covers no token (only spaces)",
                    ))
                }
            }
        }
        sentences.push(TaggedSentence {
            tags: iob2_tags(offsets.len(), &found),
            tokens: offsets
                .iter()
                .map(|&(s, e)| chars[s..e].iter().collect())
                .collect(),
            line,
        });
    }
    Ok(TaggedSet {
        sentences,
        scheme: TagScheme::Bio,
    })
}

fn span_error(path: &Path, line: usize, index: usize, reason: &str) -> DataError {
    DataError::BadSpan {
        path: path.to_path_buf(),
        line,
        index,
        reason: reason.to_string(),
    }
}

/// One line's text and its spans, checked: inside the text, not empty, not overlapping.
fn parse_span_line(
    line_text: &str,
    path: &Path,
    line: usize,
) -> Result<(String, Vec<TextSpan>), DataError> {
    let json_error = |message: String| DataError::Json {
        path: path.to_path_buf(),
        line,
        message,
    };
    let value: serde_json::Value =
        serde_json::from_str(line_text).map_err(|e| json_error(e.to_string()))?;
    let field = |name: &str| {
        value.get(name).ok_or_else(|| DataError::MissingField {
            path: path.to_path_buf(),
            line,
            field: name.to_string(),
            hint: String::new(),
        })
    };
    let text = match field("text")? {
        serde_json::Value::String(s) => s.clone(),
        other => {
            return Err(DataError::NotAString {
                path: path.to_path_buf(),
                line,
                field: "text".into(),
                found: json_type(other),
            })
        }
    };
    let mut spans: Vec<TextSpan> = serde_json::from_value(field("entities")?.clone())
        .map_err(|e| json_error(format!("field \"entities\": {e}")))?;
    let n = text.chars().count();
    for (index, s) in spans.iter().enumerate() {
        if s.start >= s.end || s.end > n {
            let reason = format!(
                "span {}..{} is empty or outside the text ({n} characters)",
                s.start, s.end
            );
            return Err(span_error(path, line, index, &reason));
        }
        if s.label.trim().is_empty() {
            return Err(span_error(path, line, index, "label is empty"));
        }
    }
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].start, spans[i].end));
    for pair in order.windows(2) {
        if spans[pair[1]].start < spans[pair[0]].end {
            let reason = format!("overlaps entity {}", pair[0]);
            return Err(span_error(path, line, pair[1], &reason));
        }
    }
    spans.sort_by_key(|s| (s.start, s.end));
    Ok((text, spans))
}

/// The character spans of token-span entities, given each token's character offsets.
pub fn text_spans(found: &[Entity], offsets: &[(usize, usize)]) -> Vec<TextSpan> {
    found
        .iter()
        .map(|e| TextSpan {
            start: offsets[e.start].0,
            end: offsets[e.end - 1].1,
            label: e.label.clone(),
        })
        .collect()
}

/// The path shown in messages for data given inline.
pub fn inline_path() -> PathBuf {
    PathBuf::from("<input>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conll(text: &str, options: TagOptions) -> Result<TaggedSet, DataError> {
        parse_conll(text.as_bytes(), Path::new("t.conll"), options)
    }

    #[test]
    fn reads_sentences_skipping_docstart_and_tab_only_lines() {
        let set = conll(
            "-DOCSTART- -X- O\n\nJohn\tB-PER\nlives\tO\n\t\nin\tO\nParis\tB-LOC\n\u{feff}\n",
            TagOptions::default(),
        )
        .unwrap();
        assert_eq!(set.sentences.len(), 2);
        assert_eq!(set.sentences[0].tokens, vec!["John", "lives"]);
        assert_eq!(set.sentences[1].line, 6);
        assert_eq!(set.scheme, TagScheme::Bio);
        assert_eq!(set.entity_types(), vec!["LOC", "PER"]);
    }

    #[test]
    fn converts_bioes_and_io_to_iob2() {
        let set = conll("A S-PER\nB B-LOC\nC E-LOC\n", TagOptions::default()).unwrap();
        assert_eq!(set.scheme, TagScheme::Bioes);
        assert_eq!(set.sentences[0].tags, vec!["B-PER", "B-LOC", "I-LOC"]);
        let set = conll("A I-PER\nB I-PER\nC O\nD I-LOC\n", TagOptions::default()).unwrap();
        assert_eq!(set.scheme, TagScheme::Io);
        assert_eq!(set.sentences[0].tags, vec!["B-PER", "I-PER", "O", "B-LOC"]);
    }

    #[test]
    fn an_i_without_b_is_an_error_naming_the_line_unless_repaired() {
        let text = "A B-PER\nB O\n\nC O\nD I-LOC\n";
        let err = conll(text, TagOptions::default()).unwrap_err().to_string();
        assert!(err.starts_with("t.conll:5: tag \"I-LOC\" breaks"), "{err}");
        let repaired = TagOptions {
            repair: true,
            ..TagOptions::default()
        };
        let set = conll(text, repaired).unwrap();
        assert_eq!(set.sentences[1].tags, vec!["O", "B-LOC"]);
    }

    #[test]
    fn bad_tags_and_column_counts_name_the_line() {
        let err = conll("A B-PER\nB X-PER\n", TagOptions::default()).unwrap_err();
        assert!(
            err.to_string().starts_with("t.conll:2: tag \"X-PER\""),
            "{err}"
        );
        let err = conll("A NN B-PER\nB O\n", TagOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.conll:2: 2 columns, expected 3 as on the first token line"
        );
        let err = conll("A B-PER\nB E-PER O\n", TagOptions::default()).unwrap_err();
        assert!(err.to_string().starts_with("t.conll:2: 3 columns"), "{err}");
        let bioes = conll(
            "A B-PER\nB O\n",
            TagOptions {
                scheme: Some(TagScheme::Bioes),
                repair: false,
            },
        );
        assert!(bioes
            .unwrap_err()
            .to_string()
            .starts_with("t.conll:1: tag \"B-PER\" breaks"));
    }

    #[test]
    fn sequences_in_memory_are_checked_and_converted() {
        let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let set = from_sequences(
            vec![words("Ann in Rome")],
            vec![words("S-PER O S-LOC")],
            TagOptions::default(),
            "y",
        )
        .unwrap();
        assert_eq!(set.sentences[0].tags, words("B-PER O B-LOC"));
        let err = from_sequences(
            vec![words("a b"), words("Ann Lee")],
            vec![words("B-LOC O"), words("O I-PER")],
            TagOptions::default(),
            "y",
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("y[1]:2: tag \"I-PER\" breaks"),
            "{err}"
        );
        let err = from_sequences(
            vec![words("a b")],
            vec![words("O")],
            TagOptions::default(),
            "y",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "y: sentence 0 has 2 tokens and 1 tags (at least one of each)"
        );
    }

    fn spans(line: &str) -> Result<TaggedSet, DataError> {
        parse_spans(line.as_bytes(), Path::new("s.jsonl"))
    }

    #[test]
    fn spans_become_tokens_and_tags_chinese_included() {
        let set = spans(r#"{"text": "Ann visited New York.", "entities": [{"start": 0, "end": 3, "label": "PER"}, {"start": 12, "end": 20, "label": "LOC"}]}"#).unwrap();
        let s = &set.sentences[0];
        assert_eq!(s.tokens, vec!["Ann", "visited", "New", "York", "."]);
        assert_eq!(s.tags, vec!["B-PER", "O", "B-LOC", "I-LOC", "O"]);
        let set = spans(
            r#"{"text": "我在北京工作", "entities": [{"start": 2, "end": 4, "label": "LOC"}]}"#,
        )
        .unwrap();
        assert_eq!(
            set.sentences[0].tags,
            vec!["O", "O", "B-LOC", "I-LOC", "O", "O"]
        );
    }

    #[test]
    fn a_span_cuts_a_word_where_it_ends() {
        let set = spans(
            r#"{"text": "AcmeCorp's", "entities": [{"start": 0, "end": 8, "label": "ORG"}]}"#,
        )
        .unwrap();
        assert_eq!(set.sentences[0].tokens, vec!["AcmeCorp", "'s"]);
        assert_eq!(set.sentences[0].tags, vec!["B-ORG", "O"]);
    }

    #[test]
    fn bad_spans_name_line_and_entity() {
        let outside = spans(
            "\n{\"text\": \"abc\", \"entities\": [{\"start\": 1, \"end\": 9, \"label\": \"X\"}]}",
        );
        assert!(outside
            .unwrap_err()
            .to_string()
            .starts_with("s.jsonl:2: entity 0: span 1..9"));
        let overlap = spans(
            r#"{"text": "abc def", "entities": [{"start": 0, "end": 5, "label": "X"}, {"start": 4, "end": 7, "label": "Y"}]}"#,
        );
        assert_eq!(
            overlap.unwrap_err().to_string(),
            "s.jsonl:1: entity 1: overlaps entity 0"
        );
        let spaces =
            spans(r#"{"text": "a   b", "entities": [{"start": 1, "end": 3, "label": "X"}]}"#);
        assert!(spaces.unwrap_err().to_string().contains("covers no token"));
        let missing = spans(r#"{"text": "a b"}"#);
        assert!(missing
            .unwrap_err()
            .to_string()
            .contains("\"entities\" is missing"));
    }

    #[test]
    fn joined_tokens_keep_chinese_together_and_offsets_exact() {
        let (text, offsets) = join_tokens(&["我", "在", "Paris", "工"]);
        assert_eq!(text, "我在 Paris 工");
        let chars: Vec<char> = text.chars().collect();
        let third: String = chars[offsets[2].0..offsets[2].1].iter().collect();
        assert_eq!(third, "Paris");
    }
}
