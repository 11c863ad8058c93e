//! Question/answer tables for an answer engine, and questions judged against them.
//!
//! - a table: JSON Lines, CSV, TSV or Parquet rows with an id, a question (may be empty: an
//!   answer-only entry), an answer, optionally a category and paraphrases (one cell, `|`
//!   between them);
//! - judged questions: a text and the id of the entry that answers it, empty when none does
//!   (out of scope).
//!
//! Bad input (an empty file, a duplicate id, an empty answer, a judged question naming an
//! unknown entry) is an error naming file and line.

use crate::read::{parse_rows, read_file, DataError, Format, Kind};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// One entry of a question/answer table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FaqEntry {
    /// Its id, unique in the table.
    pub id: String,
    /// Its question and paraphrases (may be empty).
    pub questions: Vec<String>,
    /// Its answer.
    pub answer: String,
    /// Its category (intent), if the table has them.
    pub category: Option<String>,
}

/// Which columns hold a table's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaqColumns {
    /// The id column.
    pub id: String,
    /// The question column.
    pub question: String,
    /// The answer column.
    pub answer: String,
    /// The category column; `None`: no categories.
    pub category: Option<String>,
    /// The paraphrases column (`|` between them); `None`: none.
    pub paraphrases: Option<String>,
}

impl Default for FaqColumns {
    fn default() -> Self {
        FaqColumns {
            id: "id".into(),
            question: "question".into(),
            answer: "answer".into(),
            category: None,
            paraphrases: None,
        }
    }
}

/// Reads a question/answer table. Ids must be unique and answers non-empty.
pub fn read_faq_table(
    path: &Path,
    format: Option<Format>,
    columns: &FaqColumns,
) -> Result<Vec<FaqEntry>, DataError> {
    let bytes = read_file(path)?;
    let format = format.unwrap_or_else(|| Format::from_path(path));
    let mut cols = vec![
        (columns.id.as_str(), Kind::Label),
        (columns.question.as_str(), Kind::Text),
        (columns.answer.as_str(), Kind::Text),
    ];
    for extra in [&columns.category, &columns.paraphrases]
        .into_iter()
        .flatten()
    {
        cols.push((extra.as_str(), Kind::Text));
    }
    let rows = parse_rows(&bytes, path, format, &cols)?;
    if rows.is_empty() {
        return Err(DataError::NoRecords {
            path: path.to_path_buf(),
            what: "question/answer entries",
        });
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut cells = row.texts.into_iter();
        let mut next = || cells.next().unwrap_or_default();
        let (id, question, answer) = (next(), next(), next());
        let category = columns.category.as_ref().map(|_| next());
        let paraphrases = columns.paraphrases.as_ref().map(|_| next());
        let bad = |reason: String| DataError::BadRecord {
            path: path.to_path_buf(),
            line: row.line,
            reason,
        };
        if id.trim().is_empty() || answer.trim().is_empty() {
            return Err(bad(format!(
                "entry {id:?} needs an id and a non-empty answer"
            )));
        }
        if let Some(first) = seen.insert(id.clone(), row.line) {
            return Err(bad(format!("duplicate id {id:?} (first on line {first})")));
        }
        let questions = std::iter::once(question.as_str())
            .chain(paraphrases.as_deref().unwrap_or("").split('|'))
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(String::from)
            .collect();
        let category = category.filter(|c| !c.trim().is_empty());
        out.push(FaqEntry {
            id,
            questions,
            answer,
            category,
        });
    }
    Ok(out)
}

/// A question judged against a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgedQuestion {
    /// Its line in the file.
    pub line: usize,
    /// Its text.
    pub text: String,
    /// The entry that answers it; `None`: out of scope.
    pub answer_id: Option<String>,
}

/// Reads judged questions (`text_col`, `answer_col`; an empty answer id means out of scope),
/// checking every answer id is one of `known`.
pub fn read_judged_questions(
    path: &Path,
    format: Option<Format>,
    (text_col, answer_col): (&str, &str),
    known: &HashSet<&str>,
) -> Result<Vec<JudgedQuestion>, DataError> {
    let bytes = read_file(path)?;
    let format = format.unwrap_or_else(|| Format::from_path(path));
    let cols = [(text_col, Kind::Text), (answer_col, Kind::Text)];
    let rows = parse_rows(&bytes, path, format, &cols)?;
    if rows.is_empty() {
        return Err(DataError::NoRecords {
            path: path.to_path_buf(),
            what: "questions",
        });
    }
    rows.into_iter()
        .map(|mut row| {
            let answer = row.texts.pop().unwrap_or_default();
            let text = row.texts.pop().unwrap_or_default();
            let bad = |reason: String| DataError::BadRecord {
                path: path.to_path_buf(),
                line: row.line,
                reason,
            };
            if text.trim().is_empty() {
                return Err(bad("empty question".into()));
            }
            let answer_id = Some(answer.trim().to_string()).filter(|a| !a.is_empty());
            if let Some(a) = answer_id.as_deref().filter(|a| !known.contains(a)) {
                return Err(bad(format!("{answer_col} {a:?} is no entry of the table")));
            }
            Ok(JudgedQuestion {
                line: row.line,
                text,
                answer_id,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn a_table_reads_with_paraphrases_and_answer_only_entries() {
        let dir = tempfile::tempdir().unwrap();
        let body = "id,question,answer,cat,para\na,How much?,It costs 5.,cost,What is the price? | price\nb,,Open 9-5.,,\n";
        let path = write(dir.path(), "t.csv", body);
        let cols = FaqColumns {
            category: Some("cat".into()),
            paraphrases: Some("para".into()),
            ..FaqColumns::default()
        };
        let t = read_faq_table(&path, None, &cols).unwrap();
        assert_eq!(t[0].questions, ["How much?", "What is the price?", "price"]);
        assert_eq!(t[0].category.as_deref(), Some("cost"));
        assert!(t[1].questions.is_empty() && t[1].category.is_none());
        let known: HashSet<&str> = t.iter().map(|e| e.id.as_str()).collect();
        let q = write(dir.path(), "q.jsonl", "{\"text\": \"price?\", \"answer_id\": \"a\"}\n{\"text\": \"weather\", \"answer_id\": \"\"}\n");
        let judged = read_judged_questions(&q, None, ("text", "answer_id"), &known).unwrap();
        assert_eq!(judged[0].answer_id.as_deref(), Some("a"));
        assert_eq!(judged[1].answer_id, None);
    }

    #[test]
    fn bad_tables_and_questions_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let cols = FaqColumns::default();
        for (body, needle) in [
            (
                "id,question,answer\na,q,x\na,q2,y\n",
                ":3: duplicate id \"a\" (first on line 2)",
            ),
            (
                "id,question,answer\na,q,\n",
                ":2: entry \"a\" needs an id and a non-empty answer",
            ),
            ("id,question,answer\n", "no question/answer entries"),
            ("id,question\na,q\n", "answer"),
        ] {
            let path = write(dir.path(), "t.csv", body);
            let err = read_faq_table(&path, None, &cols).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        let known: HashSet<&str> = ["a"].into_iter().collect();
        let q = write(dir.path(), "q.csv", "text,answer_id\nfine,a\nlost,zz\n");
        let err = read_judged_questions(&q, None, ("text", "answer_id"), &known).unwrap_err();
        assert!(
            err.to_string().contains(":3: answer_id \"zz\" is no entry"),
            "{err}"
        );
    }
}
