//! Documents longer than the encoder's window are cut into overlapping passages; each passage
//! is encoded apart and a document scores as its best passage.

use serde::{Deserialize, Serialize};

/// Passage length and overlap in words (a Han character counts as a word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassageParams {
    /// Words per passage.
    pub words: usize,
    /// Words shared by consecutive passages (less than `words`).
    pub overlap: usize,
}

impl PassageParams {
    /// Passages for a window of `max_tokens` tokens: half as many words (a word is about 1.3
    /// to 1.6 tokens, and the title rides along), a quarter of them shared.
    pub fn for_window(max_tokens: usize) -> Self {
        let words = (max_tokens / 2).max(8);
        PassageParams {
            words,
            overlap: words / 4,
        }
    }
}

/// Where each word starts and ends (bytes): runs of non-space characters, each Han character
/// a word of its own.
fn word_bounds(text: &str) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut open: Option<usize> = None;
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        if c.is_whitespace() {
            if let Some(s) = open.take() {
                out.push((s, i));
            }
        } else if lmfuse_features::is_han(c) {
            if let Some(s) = open.take() {
                out.push((s, i));
            }
            out.push((i, end));
        } else if open.is_none() {
            open = Some(i);
        }
    }
    if let Some(s) = open {
        out.push((s, text.len()));
    }
    out
}

/// The passages of a document: `title` then a window of its text, windows of
/// `params.words` words stepping by `words − overlap`; one passage when the text fits.
pub fn split_passages(title: &str, text: &str, params: PassageParams) -> Vec<String> {
    let with_title = |body: &str| {
        if title.is_empty() {
            body.to_string()
        } else if body.is_empty() {
            title.to_string()
        } else {
            format!("{title} {body}")
        }
    };
    let bounds = word_bounds(text);
    if bounds.len() <= params.words {
        return vec![with_title(text.trim())];
    }
    let step = params.words - params.overlap;
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + params.words).min(bounds.len());
        out.push(with_title(&text[bounds[start].0..bounds[end - 1].1]));
        if end == bounds.len() {
            return out;
        }
        start += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_become_overlapping_windows_with_the_title() {
        let text = (0..10)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let p = PassageParams {
            words: 4,
            overlap: 1,
        };
        let got = split_passages("T", &text, p);
        assert_eq!(got, ["T w0 w1 w2 w3", "T w3 w4 w5 w6", "T w6 w7 w8 w9"]);
        assert_eq!(split_passages("", "a b", p), ["a b"]);
    }

    #[test]
    fn han_characters_count_as_words() {
        let p = PassageParams {
            words: 3,
            overlap: 0,
        };
        assert_eq!(split_passages("", "我们在北京", p), ["我们在", "北京"]);
    }
}
