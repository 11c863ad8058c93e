//! Synonym dictionaries read from the thesaurus files users have: MyThes (`th_en_US_v2.dat`,
//! Debian's `mythes-en-us`, LibreOffice's) and the extended HIT Cilin (`cilin_ex.txt`).

use crate::AugmentError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Words and their synonyms.
#[derive(Debug, Clone, Default)]
pub struct Thesaurus {
    synonyms: HashMap<String, Vec<String>>,
}

impl Thesaurus {
    /// Reads `path`, telling the format by its first line: an encoding name (MyThes) or a
    /// Cilin entry (`Aa01A01= 人 士 ...`).
    pub fn load(path: &Path) -> Result<Thesaurus, AugmentError> {
        let bytes = std::fs::read(path).map_err(|source| AugmentError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| bad(path, line_of(&e), "not UTF-8"))?;
        let text = text.trim_start_matches('\u{feff}');
        let first = text.lines().next().unwrap_or_default().trim();
        let thesaurus = if is_cilin_line(first) {
            cilin(text, path)?
        } else if first.eq_ignore_ascii_case("UTF-8") {
            mythes(text, path)?
        } else {
            return Err(bad(
                path,
                1,
                "neither a MyThes file (its first line names the encoding, UTF-8) nor a Cilin \
                 file (lines like `Aa01A01= 人 士`)",
            ));
        };
        if thesaurus.synonyms.is_empty() {
            return Err(bad(path, 1, "no synonyms in it"));
        }
        Ok(thesaurus)
    }

    /// A thesaurus of the groups given: each word's synonyms are the other words of its
    /// groups.
    pub fn from_groups<'a>(groups: impl IntoIterator<Item = &'a [&'a str]>) -> Thesaurus {
        let mut t = Thesaurus::default();
        for group in groups {
            t.add_group(group.iter().copied());
        }
        t.finish();
        t
    }

    /// The synonyms of `word` (looked up as given, then lower-cased).
    pub fn synonyms(&self, word: &str) -> &[String] {
        self.synonyms
            .get(word)
            .or_else(|| self.synonyms.get(&word.to_lowercase()))
            .map_or(&[], Vec::as_slice)
    }

    /// Words with synonyms.
    pub fn len(&self) -> usize {
        self.synonyms.len()
    }

    /// Whether no word has a synonym.
    pub fn is_empty(&self) -> bool {
        self.synonyms.is_empty()
    }

    fn add_group<'a>(&mut self, words: impl Iterator<Item = &'a str> + Clone) {
        for w in words.clone() {
            let entry = self.synonyms.entry(w.to_string()).or_default();
            entry.extend(words.clone().filter(|o| *o != w).map(String::from));
        }
    }

    /// Sorts and deduplicates every list (so a seed picks the same synonym on every run) and
    /// drops words left without one.
    fn finish(&mut self) {
        for list in self.synonyms.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
        self.synonyms.retain(|_, list| !list.is_empty());
    }
}

fn bad(path: &Path, line: usize, message: &str) -> AugmentError {
    AugmentError::Thesaurus {
        path: PathBuf::from(path),
        line,
        message: message.to_string(),
    }
}

fn line_of(e: &std::string::FromUtf8Error) -> usize {
    let valid = e.utf8_error().valid_up_to();
    e.as_bytes()[..valid]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `Aa01A01=` (or `#`, `@`) then words.
fn is_cilin_line(line: &str) -> bool {
    let code: Vec<char> = line.chars().take(8).collect();
    code.len() == 8
        && code[..7].iter().all(char::is_ascii_alphanumeric)
        && matches!(code[7], '=' | '#' | '@')
}

/// Cilin: only the `=` groups are synonyms (`#` groups are related words, `@` single words).
fn cilin(text: &str, path: &Path) -> Result<Thesaurus, AugmentError> {
    let mut t = Thesaurus::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !is_cilin_line(line) {
            return Err(bad(path, i + 1, "not a Cilin entry (`Aa01A01= words`)"));
        }
        if line.as_bytes()[7] == b'=' {
            t.add_group(line[8..].split_whitespace());
        }
    }
    t.finish();
    Ok(t)
}

/// MyThes: `word|n` then `n` lines `(pos)|syn|syn (generic term)|...`; only plain synonyms and
/// `(similar term)`s are kept (not generic, related or antonym terms).
fn mythes(text: &str, path: &Path) -> Result<Thesaurus, AugmentError> {
    let mut t = Thesaurus::default();
    let mut lines = text.lines().enumerate().skip(1);
    while let Some((i, head)) = lines.next() {
        let Some((word, n)) = head.rsplit_once('|') else {
            return Err(bad(path, i + 1, "expected `word|count`"));
        };
        let n: usize = n
            .trim()
            .parse()
            .map_err(|_| bad(path, i + 1, "the count after `|` is not a number"))?;
        let word = word.trim();
        let mut found = Vec::new();
        for _ in 0..n {
            let Some((j, sense)) = lines.next() else {
                return Err(bad(path, i + 1, "the file ends inside this entry"));
            };
            if !sense.starts_with('(') {
                return Err(bad(
                    path,
                    j + 1,
                    "expected a sense line `(pos)|synonym|...`",
                ));
            }
            found.extend(sense.split('|').skip(1).filter_map(plain_synonym));
        }
        let entry = t.synonyms.entry(word.to_string()).or_default();
        entry.extend(found.into_iter().filter(|s| *s != word).map(String::from));
    }
    t.finish();
    Ok(t)
}

fn plain_synonym(term: &str) -> Option<&str> {
    let term = term.trim();
    match term.rsplit_once(" (") {
        None => Some(term),
        Some((word, "similar term)")) => Some(word),
        Some(_) => None,
    }
    .filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.dat");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn mythes_keeps_plain_and_similar_terms() {
        let (_d, p) = write(
            "UTF-8\nhappy|2\n(adj)|felicitous|glad (similar term)|content (related term)\n\
             (adj)|well-chosen|unhappy (antonym)\nsad|1\n(adj)|unhappy\n",
        );
        let t = Thesaurus::load(&p).unwrap();
        assert_eq!(t.synonyms("happy"), ["felicitous", "glad", "well-chosen"]);
        assert_eq!(t.synonyms("Sad"), ["unhappy"], "looked up lower-cased too");
        assert!(t.synonyms("content").is_empty());
    }

    #[test]
    fn cilin_keeps_only_equal_groups() {
        let (_d, p) =
            write("\u{feff}Aa01A02= 人类 生人 全人类\nAa01A06# 非人 畜生\nAa01A07@ 独词\n");
        let t = Thesaurus::load(&p).unwrap();
        assert_eq!(t.synonyms("人类"), ["全人类", "生人"]);
        assert!(t.synonyms("非人").is_empty());
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn a_file_that_is_not_a_thesaurus_is_named_with_its_line() {
        for (text, line, needle) in [
            ("hello world\n", 1, "neither a MyThes"),
            ("UTF-8\nhappy|two\n", 2, "not a number"),
            ("UTF-8\nhappy|2\n(adj)|glad\n", 2, "ends inside"),
            (
                "Aa01A02= 人类 生人\nsomething else\n",
                2,
                "not a Cilin entry",
            ),
            ("UTF-8\n", 1, "no synonyms"),
        ] {
            let (_d, p) = write(text);
            let e = Thesaurus::load(&p).unwrap_err().to_string();
            assert!(
                e.contains(&format!("t.dat:{line}")) && e.contains(needle),
                "{text:?}: {e}"
            );
        }
    }
}
