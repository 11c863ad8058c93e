//! Hand-made token features: the attribute strings a CRF sees for each token.
//!
//! The set follows the usual CoNLL/crfsuite recipe: the lower-cased token and its neighbours
//! within a window, neighbour bigrams, prefixes and suffixes, the word shape, case and digit
//! flags, sentence edges, and gazetteer membership. Attributes are plain strings (`w[-1]=the`),
//! so any CRF toolkit given the same strings trains on the same features
//! ([`sentence_attributes`] is what `lmfuse ner features` writes).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which features are made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureParams {
    /// Neighbours on each side whose lower form is an attribute (0 for the token alone).
    pub window: usize,
    /// Prefixes and suffixes of 1 to this many characters (only those shorter than the token).
    pub affixes: usize,
    /// Bigrams of the lower forms of adjacent tokens within the window.
    pub bigrams: bool,
}

impl Default for FeatureParams {
    fn default() -> Self {
        Self {
            window: 2,
            affixes: 3,
            bigrams: true,
        }
    }
}

/// Phrases by entity type; a token inside a matching phrase gets `gaz:B-TYPE` or `gaz:I-TYPE`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gazetteer {
    /// (type, phrase as lower-cased tokens).
    pub phrases: Vec<(String, Vec<String>)>,
}

impl Gazetteer {
    /// Marks each token covered by a phrase (longest match first, left to right).
    fn marks(&self, lower: &[String]) -> Vec<Option<(bool, &str)>> {
        let mut by_first: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, (_, phrase)) in self.phrases.iter().enumerate() {
            if let Some(first) = phrase.first() {
                by_first.entry(first.as_str()).or_default().push(i);
            }
        }
        let mut marks = vec![None; lower.len()];
        let mut i = 0;
        while i < lower.len() {
            let best = by_first
                .get(lower[i].as_str())
                .into_iter()
                .flatten()
                .map(|&p| &self.phrases[p])
                .filter(|(_, phrase)| lower[i..].starts_with(phrase))
                .max_by_key(|(_, phrase)| phrase.len());
            match best {
                Some((label, phrase)) => {
                    for (k, mark) in marks[i..i + phrase.len()].iter_mut().enumerate() {
                        *mark = Some((k == 0, label.as_str()));
                    }
                    i += phrase.len();
                }
                None => i += 1,
            }
        }
        marks
    }
}

/// The word shape with runs collapsed: `X` upper, `x` lower, `d` digit, `C` CJK, else the
/// character itself (`McDonald's` → `XxXx'x`).
pub fn shape(token: &str) -> String {
    let mut out = String::new();
    for c in token.chars() {
        let s = if c.is_uppercase() {
            'X'
        } else if c.is_lowercase() {
            'x'
        } else if c.is_numeric() {
            'd'
        } else if lmfuse_data::tagged::is_cjk(c) {
            'C'
        } else {
            c
        };
        if !out.ends_with(s) {
            out.push(s);
        }
    }
    out
}

fn flags(token: &str, out: &mut Vec<String>) {
    let letters: Vec<char> = token.chars().filter(|c| c.is_alphabetic()).collect();
    if !letters.is_empty() && letters.iter().all(|c| c.is_uppercase()) {
        out.push("upper".into());
    }
    let mut chars = token.chars();
    if chars.next().is_some_and(char::is_uppercase) && chars.all(|c| !c.is_uppercase()) {
        out.push("title".into());
    }
    if token.chars().all(|c| c.is_numeric()) {
        out.push("digit".into());
    } else if token.chars().any(|c| c.is_numeric()) {
        out.push("has_digit".into());
    }
    if token.contains('-') && token.chars().count() > 1 {
        out.push("hyphen".into());
    }
    if token.starts_with('@') || token.starts_with('#') {
        out.push(format!("sigil={}", &token[..1]));
    }
}

fn affixes(token: &str, n: usize, out: &mut Vec<String>) {
    let chars: Vec<char> = token.chars().collect();
    for k in 1..=n.min(chars.len().saturating_sub(1)) {
        out.push(format!("p{k}={}", chars[..k].iter().collect::<String>()));
        out.push(format!(
            "s{k}={}",
            chars[chars.len() - k..].iter().collect::<String>()
        ));
    }
}

/// The attributes of every token of a sentence.
pub fn sentence_attributes<S: AsRef<str>>(
    tokens: &[S],
    params: &FeatureParams,
    gazetteer: &Gazetteer,
) -> Vec<Vec<String>> {
    let lower: Vec<String> = tokens.iter().map(|t| t.as_ref().to_lowercase()).collect();
    let shapes: Vec<String> = tokens.iter().map(|t| shape(t.as_ref())).collect();
    let marks = gazetteer.marks(&lower);
    let n = tokens.len() as isize;
    let w = params.window as isize;
    (0..tokens.len())
        .map(|i| {
            let mut out = vec!["bias".to_string()];
            let at = |d: isize| {
                let j = i as isize + d;
                (0..n).contains(&j).then_some(j as usize)
            };
            for d in -w..=w {
                match at(d) {
                    Some(j) => out.push(format!("w[{d}]={}", lower[j])),
                    None if d == -1 => out.push("BOS".into()),
                    None if d == 1 => out.push("EOS".into()),
                    None => {}
                }
            }
            if params.bigrams {
                for d in -w..w {
                    if let (Some(a), Some(b)) = (at(d), at(d + 1)) {
                        out.push(format!("w[{d}]|w[{}]={}|{}", d + 1, lower[a], lower[b]));
                    }
                }
            }
            for d in -1..=1 {
                if let Some(j) = at(d) {
                    out.push(format!("shape[{d}]={}", shapes[j]));
                }
            }
            flags(tokens[i].as_ref(), &mut out);
            affixes(tokens[i].as_ref(), params.affixes, &mut out);
            if let Some((first, label)) = marks[i] {
                out.push(format!("gaz:{}-{label}", if first { 'B' } else { 'I' }));
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_collapse_runs() {
        assert_eq!(shape("McDonald's"), "XxXx'x");
        assert_eq!(shape("2026-12"), "d-d");
        assert_eq!(shape("北京"), "C");
    }

    #[test]
    fn attributes_cover_window_edges_and_affixes() {
        let attrs = sentence_attributes(
            &["Paris", "is"],
            &FeatureParams::default(),
            &Gazetteer::default(),
        );
        let first = &attrs[0];
        for want in [
            "bias",
            "w[0]=paris",
            "w[1]=is",
            "BOS",
            "w[0]|w[1]=paris|is",
            "title",
            "p3=Par",
            "s2=is",
            "shape[0]=Xx",
        ] {
            assert!(
                first.iter().any(|a| a == want),
                "{want} missing from {first:?}"
            );
        }
        assert!(attrs[1].iter().any(|a| a == "EOS"));
        assert!(
            !attrs[1].iter().any(|a| a.starts_with("p2=")),
            "no affix as long as the token"
        );
    }

    #[test]
    fn gazetteer_marks_the_longest_phrase() {
        let gaz = Gazetteer {
            phrases: vec![
                ("LOC".into(), vec!["new".into()]),
                ("LOC".into(), vec!["new".into(), "york".into()]),
            ],
        };
        let attrs = sentence_attributes(&["in", "New", "York"], &FeatureParams::default(), &gaz);
        assert!(attrs[1].contains(&"gaz:B-LOC".to_string()));
        assert!(attrs[2].contains(&"gaz:I-LOC".to_string()));
        assert!(!attrs[0].iter().any(|a| a.starts_with("gaz")));
    }
}
