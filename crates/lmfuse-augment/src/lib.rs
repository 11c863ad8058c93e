//! Text augmentation: the four EDA operations of Wei & Zou (2019) — synonym replacement,
//! random insertion of a synonym, random swap, random deletion — applied to copies of a
//! training text. Each text's copies are fixed by the seed and the text alone (not by its
//! place in the file). Chinese texts are cut into words by jieba and joined without spaces;
//! others are split on white space.

mod command;
mod thesaurus;

pub use command::paraphrase_with;
pub use thesaurus::Thesaurus;

use lmfuse_core::{fnv1a, SeededRng};
use serde::Serialize;
use std::path::PathBuf;
use std::str::FromStr;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum AugmentError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A thesaurus file is not one.
    #[error("{}:{line}: {message}", path.display())]
    Thesaurus {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The augmentation settings are invalid.
    #[error("--augment: {0}")]
    Spec(String),
    /// The paraphrasing command failed or answered out of step.
    #[error("--augment-cmd `{command}`: {message}")]
    Command {
        /// The command.
        command: String,
        /// What went wrong.
        message: String,
    },
}

/// One EDA operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Replace words by one of their synonyms.
    Synonym,
    /// Insert a synonym of a word at a random place.
    Insert,
    /// Swap two words.
    Swap,
    /// Delete each word with the rate's probability.
    Delete,
    /// A paraphrase from an external command (`--augment-cmd`).
    Paraphrase,
}

/// How many copies of each text, and each operation's rate (share of the words changed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AugmentSpec {
    /// Augmented copies per training text (the operations take turns).
    pub copies: usize,
    /// Synonym replacement rate (`sr`).
    pub sr: f64,
    /// Random insertion rate (`ri`).
    pub ri: f64,
    /// Random swap rate (`rs`).
    pub rs: f64,
    /// Random deletion probability (`rd`).
    pub rd: f64,
}

/// Most copies per text.
pub const MAX_COPIES: usize = 32;

/// `copies=4,sr=0.1,ri=0.1,rs=0.1,rd=0.1`; rates left out are 0, `copies` defaults to 4.
impl FromStr for AugmentSpec {
    type Err = AugmentError;

    fn from_str(text: &str) -> Result<AugmentSpec, AugmentError> {
        let mut spec = AugmentSpec {
            copies: 4,
            sr: 0.0,
            ri: 0.0,
            rs: 0.0,
            rd: 0.0,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| AugmentError::Spec(format!("{part:?} is not key=value")))?;
            let number = || {
                value
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| AugmentError::Spec(format!("{key}: {value:?} is not a number")))
            };
            match key.trim() {
                "copies" => spec.copies = number()? as usize,
                "sr" => spec.sr = number()?,
                "ri" => spec.ri = number()?,
                "rs" => spec.rs = number()?,
                "rd" => spec.rd = number()?,
                other => {
                    return Err(AugmentError::Spec(format!(
                        "unknown key {other:?}: expected copies, sr, ri, rs, rd"
                    )))
                }
            }
        }
        spec.check()?;
        Ok(spec)
    }
}

impl AugmentSpec {
    /// Checks the numbers: 1 to [`MAX_COPIES`] copies, rates in [0, 1], one of them positive.
    pub fn check(&self) -> Result<(), AugmentError> {
        if !(1..=MAX_COPIES).contains(&self.copies) {
            return Err(AugmentError::Spec(format!(
                "copies must be 1 to {MAX_COPIES} (found {})",
                self.copies
            )));
        }
        for (name, rate) in [
            ("sr", self.sr),
            ("ri", self.ri),
            ("rs", self.rs),
            ("rd", self.rd),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(AugmentError::Spec(format!(
                    "{name} must be in [0, 1] (found {rate})"
                )));
            }
        }
        if self.ops().is_empty() {
            return Err(AugmentError::Spec(
                "every rate is 0: give sr, ri, rs or rd".into(),
            ));
        }
        Ok(())
    }

    /// The operations with a positive rate, in the order they take turns.
    pub fn ops(&self) -> Vec<(Op, f64)> {
        [
            (Op::Synonym, self.sr),
            (Op::Insert, self.ri),
            (Op::Swap, self.rs),
            (Op::Delete, self.rd),
        ]
        .into_iter()
        .filter(|&(_, r)| r > 0.0)
        .collect()
    }
}

/// Augments texts as its spec says.
#[derive(Debug, Clone)]
pub struct Augmenter {
    spec: AugmentSpec,
    thesaurus: Option<Thesaurus>,
    seed: u64,
}

impl Augmenter {
    /// An augmenter; synonym replacement and insertion need a thesaurus.
    pub fn new(
        spec: AugmentSpec,
        thesaurus: Option<Thesaurus>,
        seed: u64,
    ) -> Result<Augmenter, AugmentError> {
        spec.check()?;
        if thesaurus.is_none() && (spec.sr > 0.0 || spec.ri > 0.0) {
            return Err(AugmentError::Spec(
                "sr and ri take synonyms from a thesaurus: give --thesaurus (MyThes or Cilin \
                 file; scripts/fetch-thesauri.sh)"
                    .into(),
            ));
        }
        Ok(Augmenter {
            spec,
            thesaurus,
            seed,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &AugmentSpec {
        &self.spec
    }

    /// The augmented copies of `text` with the operation that made each; copies equal to the
    /// text or to an earlier copy are left out.
    pub fn augment(&self, text: &str) -> Vec<(Op, String)> {
        let (words, joiner) = words_of(text);
        if words.is_empty() {
            return Vec::new();
        }
        // Each text its own stream of random numbers.
        let mut rng = SeededRng::new(self.seed ^ fnv1a(text.bytes()));
        let ops = self.spec.ops();
        let mut out: Vec<(Op, String)> = Vec::new();
        for i in 0..self.spec.copies {
            let (op, rate) = ops[i % ops.len()];
            let changed = self.apply(op, rate, &words, &mut rng).join(joiner);
            if changed != text && !out.iter().any(|(_, t)| *t == changed) {
                out.push((op, changed));
            }
        }
        out
    }

    fn apply(&self, op: Op, rate: f64, words: &[&str], rng: &mut SeededRng) -> Vec<String> {
        let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        let n = ((rate * w.len() as f64).round() as usize).max(1);
        match op {
            Op::Synonym => self.replace(&mut w, n, rng),
            Op::Insert => self.insert(&mut w, n, rng),
            Op::Swap => {
                for _ in 0..n {
                    let (a, b) = (rng.below(w.len()), rng.below(w.len()));
                    w.swap(a, b);
                }
            }
            Op::Delete if w.len() > 1 => {
                let keep: Vec<String> = w
                    .iter()
                    .filter(|_| (rng.next_u64() as f64 / u64::MAX as f64) >= rate)
                    .cloned()
                    .collect();
                w = match keep.is_empty() {
                    true => vec![w[rng.below(w.len())].clone()],
                    false => keep,
                };
            }
            // Not an operation of the spec: paraphrases come from `paraphrase_with`.
            Op::Delete | Op::Paraphrase => {}
        }
        w
    }

    /// Replaces up to `n` distinct words that have synonyms, chosen at random.
    fn replace(&self, w: &mut [String], n: usize, rng: &mut SeededRng) {
        let thesaurus = self.thesaurus.as_ref().expect("checked in new");
        let mut order: Vec<usize> = (0..w.len()).collect();
        rng.shuffle(&mut order);
        let mut done = 0;
        for i in order {
            if done == n {
                break;
            }
            if let Some(new) = synonym_of(thesaurus, &w[i], rng) {
                w[i] = new;
                done += 1;
            }
        }
    }

    /// Inserts `n` times a synonym of a random word (of one that has some) at a random place.
    fn insert(&self, w: &mut Vec<String>, n: usize, rng: &mut SeededRng) {
        let thesaurus = self.thesaurus.as_ref().expect("checked in new");
        for _ in 0..n {
            // A few tries to find a word with synonyms, as EDA does.
            let found = (0..10).find_map(|_| synonym_of(thesaurus, &w[rng.below(w.len())], rng));
            if let Some(new) = found {
                let at = rng.below(w.len() + 1);
                w.insert(at, new);
            }
        }
    }
}

/// A synonym of `word` (of its letters, punctuation around it kept), chosen at random.
fn synonym_of(thesaurus: &Thesaurus, word: &str, rng: &mut SeededRng) -> Option<String> {
    let core = word.trim_matches(|c: char| !c.is_alphanumeric());
    if core.is_empty() {
        return None;
    }
    let choices = thesaurus.synonyms(core);
    if choices.is_empty() {
        return None;
    }
    let pick = &choices[rng.below(choices.len())];
    Some(word.replacen(core, pick, 1))
}

/// The words of `text` and how to join them back: jieba's words (no white space) for a text
/// with Han characters, else the white-space-separated words.
fn words_of(text: &str) -> (Vec<&str>, &'static str) {
    if text.chars().any(is_han) {
        let words = lmfuse_features::jieba_cut(text)
            .into_iter()
            .filter(|w| !w.trim().is_empty())
            .collect();
        (words, "")
    } else {
        (text.split_whitespace().collect(), " ")
    }
}

fn is_han(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0xF900..=0xFAFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thesaurus() -> Thesaurus {
        Thesaurus::from_groups([
            &["good", "fine", "nice"][..],
            &["movie", "film"][..],
            &["好", "良好"][..],
        ])
    }

    #[test]
    fn specs_are_read_and_checked() {
        let s: AugmentSpec = "copies=2, sr=0.2,rd=0.1".parse().unwrap();
        assert_eq!((s.copies, s.sr, s.ri, s.rs, s.rd), (2, 0.2, 0.0, 0.0, 0.1));
        for (bad, needle) in [
            ("sr=1.5", "sr must be in [0, 1]"),
            ("copies=0,sr=0.1", "copies must be 1 to 32"),
            ("copies=4", "every rate is 0"),
            ("sr=x", "not a number"),
            ("swap=0.1", "unknown key \"swap\""),
            ("sr", "not key=value"),
        ] {
            let e = bad.parse::<AugmentSpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let e = Augmenter::new("sr=0.1".parse().unwrap(), None, 0).unwrap_err();
        assert!(e.to_string().contains("--thesaurus"), "{e}");
    }

    #[test]
    fn each_operation_does_what_it_says_and_a_seed_fixes_the_copies() {
        let spec: AugmentSpec = "copies=4,sr=0.3,ri=0.3,rs=0.3,rd=0.3".parse().unwrap();
        let a = Augmenter::new(spec, Some(thesaurus()), 7).unwrap();
        let text = "a good movie, truly good.";
        let copies = a.augment(text);
        assert_eq!(copies, a.augment(text), "same seed, same copies");
        let other = Augmenter::new(spec, Some(thesaurus()), 8).unwrap();
        assert_ne!(copies, other.augment(text), "another seed, other copies");
        let words = |t: &str| t.split_whitespace().count();
        for (op, copy) in &copies {
            match op {
                Op::Synonym => {
                    assert_eq!(words(copy), 5);
                    assert!(
                        ["fine", "nice", "film"].iter().any(|s| copy.contains(s)),
                        "{copy}"
                    );
                    assert!(copy.contains("movie,") || copy.contains("film,"), "{copy}");
                }
                Op::Insert => assert!(words(copy) > 5, "{copy}"),
                Op::Swap => {
                    let mut a: Vec<&str> = copy.split_whitespace().collect();
                    let mut b: Vec<&str> = text.split_whitespace().collect();
                    a.sort_unstable();
                    b.sort_unstable();
                    assert_eq!(a, b, "{copy}");
                }
                Op::Delete => assert!(words(copy) < 5 && words(copy) >= 1, "{copy}"),
                Op::Paraphrase => unreachable!("not an operation of the spec"),
            }
        }
    }

    #[test]
    fn chinese_is_cut_into_words_and_joined_without_spaces() {
        let a = Augmenter::new("copies=1,sr=1".parse().unwrap(), Some(thesaurus()), 1).unwrap();
        let copies = a.augment("这家酒店很好");
        assert_eq!(copies.len(), 1);
        assert!(
            copies[0].1.contains("良好") && !copies[0].1.contains(' '),
            "{copies:?}"
        );
    }

    #[test]
    fn a_text_nothing_changes_gives_no_copy() {
        let a = Augmenter::new("copies=3,sr=0.5".parse().unwrap(), Some(thesaurus()), 1).unwrap();
        assert!(a.augment("zzz qqq").is_empty());
        assert!(a.augment("   ").is_empty());
    }
}
