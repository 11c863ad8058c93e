//! Retrieval data in the BEIR layout: a corpus of documents, queries, and relevance judgements
//! (qrels).
//!
//! - corpus: JSON Lines, CSV, TSV or Parquet rows with an id (`id`, or BEIR's `_id`), an
//!   optional title and a text: `{"id": "d1", "title": "...", "text": "..."}`;
//! - queries: the same with an id and a text;
//! - qrels: BEIR's TSV (`query-id corpus-id score`, header optional) or TREC's
//!   `qid 0 docid relevance`.
//!
//! Bad input (an empty file, a duplicate id, an empty text, a judgement naming an unknown query
//! or document, a score that is no integer) is an error naming file and line.

use crate::read::{lines, parse_rows, read_file, DataError, Format, Kind};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// One document of a corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Its id, unique in the corpus.
    pub id: String,
    /// Its title; empty when the corpus has none.
    pub title: String,
    /// Its text.
    pub text: String,
}

impl Document {
    /// Title and text as one string (the title, a space, the text), as indexed.
    pub fn full_text(&self) -> String {
        if self.title.is_empty() {
            self.text.clone()
        } else {
            format!("{} {}", self.title, self.text)
        }
    }
}

/// One query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Its id.
    pub id: String,
    /// Its text.
    pub text: String,
}

/// Relevance judgements: for each query id, the judged documents and their grades (0: judged
/// not relevant).
pub type Qrels = BTreeMap<String, BTreeMap<String, i32>>;

/// Which columns hold a corpus's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusColumns {
    /// The id column; `None`: `id`, else `_id` (BEIR).
    pub id: Option<String>,
    /// The title column; `None`: no titles.
    pub title: Option<String>,
    /// The text column.
    pub text: String,
}

impl Default for CorpusColumns {
    fn default() -> Self {
        CorpusColumns {
            id: None,
            title: Some("title".into()),
            text: "text".into(),
        }
    }
}

/// Reads a corpus. Every id must be unique and every text (title and text together) non-empty.
pub fn read_corpus(
    path: &Path,
    format: Option<Format>,
    columns: &CorpusColumns,
) -> Result<Vec<Document>, DataError> {
    let bytes = read_file(path)?;
    parse_corpus(
        &bytes,
        path,
        format.unwrap_or_else(|| Format::from_path(path)),
        columns,
    )
}

/// Parses a corpus from the bytes of a file (see [`read_corpus`]).
pub fn parse_corpus(
    bytes: &[u8],
    path: &Path,
    format: Format,
    columns: &CorpusColumns,
) -> Result<Vec<Document>, DataError> {
    let id = id_column(bytes, path, format, columns.id.as_deref());
    let mut cols = vec![
        (id.as_str(), Kind::Label),
        (columns.text.as_str(), Kind::Text),
    ];
    if let Some(title) = &columns.title {
        cols.push((title.as_str(), Kind::Text));
    }
    let rows = parse_rows(bytes, path, format, &cols)?;
    if rows.is_empty() {
        return Err(DataError::NoRecords {
            path: path.to_path_buf(),
            what: "documents",
        });
    }
    let mut seen = HashMap::with_capacity(rows.len());
    let mut docs = Vec::with_capacity(rows.len());
    for mut row in rows {
        let title = if cols.len() == 3 {
            row.texts.pop().unwrap_or_default()
        } else {
            String::new()
        };
        let text = row.texts.pop().unwrap_or_default();
        let id = row.texts.pop().unwrap_or_default();
        check_id(&id, row.line, path, &mut seen)?;
        if title.trim().is_empty() && text.trim().is_empty() {
            return Err(DataError::EmptyText {
                path: path.to_path_buf(),
                line: row.line,
                id,
            });
        }
        docs.push(Document { id, title, text });
    }
    Ok(docs)
}

/// Reads queries (`id_col`: `None` for `id`, else `_id`). Ids must be unique and texts
/// non-empty.
pub fn read_queries(
    path: &Path,
    format: Option<Format>,
    id_col: Option<&str>,
    text_col: &str,
) -> Result<Vec<Query>, DataError> {
    let bytes = read_file(path)?;
    let format = format.unwrap_or_else(|| Format::from_path(path));
    let id = id_column(&bytes, path, format, id_col);
    let rows = parse_rows(
        &bytes,
        path,
        format,
        &[(id.as_str(), Kind::Label), (text_col, Kind::Text)],
    )?;
    if rows.is_empty() {
        return Err(DataError::NoRecords {
            path: path.to_path_buf(),
            what: "queries",
        });
    }
    let mut seen = HashMap::with_capacity(rows.len());
    let mut queries = Vec::with_capacity(rows.len());
    for mut row in rows {
        let text = row.texts.pop().unwrap_or_default();
        let id = row.texts.pop().unwrap_or_default();
        check_id(&id, row.line, path, &mut seen)?;
        if text.trim().is_empty() {
            return Err(DataError::EmptyText {
                path: path.to_path_buf(),
                line: row.line,
                id,
            });
        }
        queries.push(Query { id, text });
    }
    Ok(queries)
}

/// The id column: the one asked for, else `id`, else `_id` when the data has `_id` and no
/// `id` (the BEIR files' own name).
fn id_column(bytes: &[u8], path: &Path, format: Format, asked: Option<&str>) -> String {
    if let Some(a) = asked {
        return a.to_string();
    }
    let probe = parse_rows(bytes, path, format, &[("id", Kind::Label)]);
    let beir = parse_rows(bytes, path, format, &[("_id", Kind::Label)]);
    if probe.is_err() && beir.is_ok() {
        "_id".into()
    } else {
        "id".into()
    }
}

fn check_id(
    id: &str,
    line: usize,
    path: &Path,
    seen: &mut HashMap<String, usize>,
) -> Result<(), DataError> {
    if id.trim().is_empty() {
        return Err(DataError::EmptyLabel {
            path: path.to_path_buf(),
            line,
            field: "id".into(),
        });
    }
    if let Some(first) = seen.insert(id.to_string(), line) {
        return Err(DataError::DuplicateId {
            path: path.to_path_buf(),
            line,
            id: id.to_string(),
            first,
        });
    }
    Ok(())
}

/// Reads judgements. With `queries` and `docs` given, a line naming an id outside them is an
/// error.
pub fn read_qrels(
    path: &Path,
    queries: Option<&HashSet<&str>>,
    docs: Option<&HashSet<&str>>,
) -> Result<Qrels, DataError> {
    let bytes = read_file(path)?;
    parse_qrels(&bytes, path, queries, docs)
}

/// Parses judgements from the bytes of a file (see [`read_qrels`]). Blank lines are skipped; a
/// first line whose last field is no integer is a header.
pub fn parse_qrels(
    bytes: &[u8],
    path: &Path,
    queries: Option<&HashSet<&str>>,
    docs: Option<&HashSet<&str>>,
) -> Result<Qrels, DataError> {
    let mut qrels = Qrels::new();
    let bad = |line, reason: String| DataError::BadQrel {
        path: path.to_path_buf(),
        line,
        reason,
    };
    for item in lines(bytes, path) {
        let (line, text) = item?;
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let (query, doc, grade) = match fields.as_slice() {
            [q, d, g] | [q, _, d, g] => (*q, *d, *g),
            _ => {
                return Err(bad(
                    line,
                    format!(
                        "{} fields, expected 3 (query-id corpus-id score) or 4 (TREC)",
                        fields.len()
                    ),
                ))
            }
        };
        let Ok(grade) = grade.parse::<i32>() else {
            if line == 1 {
                continue;
            }
            return Err(bad(line, format!("score {grade:?} is not an integer")));
        };
        if queries.is_some_and(|q| !q.contains(query)) {
            return Err(bad(
                line,
                format!("query id {query:?} is not among the queries"),
            ));
        }
        if docs.is_some_and(|d| !d.contains(doc)) {
            return Err(bad(
                line,
                format!("document id {doc:?} is not in the corpus"),
            ));
        }
        qrels
            .entry(query.to_string())
            .or_default()
            .insert(doc.to_string(), grade);
    }
    if qrels.is_empty() {
        return Err(DataError::NoRecords {
            path: path.to_path_buf(),
            what: "judgements",
        });
    }
    Ok(qrels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(text: &str, format: Format) -> Result<Vec<Document>, DataError> {
        parse_corpus(
            text.as_bytes(),
            Path::new("c.jsonl"),
            format,
            &CorpusColumns::default(),
        )
    }

    #[test]
    fn a_beir_corpus_reads_with_either_id_name() {
        let docs = corpus(
            "{\"_id\": \"a\", \"title\": \"T\", \"text\": \"x\"}\n{\"_id\": 7, \"title\": \"\", \"text\": \"y\"}\n",
            Format::Jsonl,
        )
        .unwrap();
        assert_eq!(docs[1].id, "7");
        assert_eq!(docs[0].full_text(), "T x");
        assert_eq!(docs[1].full_text(), "y");
        let csv = corpus("id,title,text\na,T,x\n", Format::Csv).unwrap();
        assert_eq!(csv[0].id, "a");
    }

    #[test]
    fn duplicate_ids_empty_texts_and_empty_files_name_the_line() {
        let dup = corpus(
            "{\"id\": \"a\", \"title\": \"\", \"text\": \"x\"}\n{\"id\": \"a\", \"title\": \"\", \"text\": \"y\"}\n",
            Format::Jsonl,
        )
        .unwrap_err();
        assert_eq!(
            dup.to_string(),
            "c.jsonl:2: duplicate id \"a\" (first on line 1)"
        );
        let empty = corpus(
            "{\"id\": \"a\", \"title\": \" \", \"text\": \"\"}\n",
            Format::Jsonl,
        )
        .unwrap_err();
        assert!(empty.to_string().starts_with("c.jsonl:1: "), "{empty}");
        let none = corpus("\n", Format::Jsonl).unwrap_err();
        assert_eq!(none.to_string(), "c.jsonl: no documents");
    }

    #[test]
    fn qrels_read_beir_and_trec_lines_and_refuse_unknown_ids() {
        let beir = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n";
        let q = parse_qrels(beir.as_bytes(), Path::new("q.tsv"), None, None).unwrap();
        assert_eq!(q["q1"]["d1"], 1);
        assert_eq!(q["q1"]["d2"], 0);
        let trec = parse_qrels(b"q1 0 d1 2\n", Path::new("q.txt"), None, None).unwrap();
        assert_eq!(trec["q1"]["d1"], 2);
        let docs: HashSet<&str> = ["d1"].into_iter().collect();
        let err = parse_qrels(beir.as_bytes(), Path::new("q.tsv"), None, Some(&docs)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "q.tsv:3: document id \"d2\" is not in the corpus"
        );
        let bad = parse_qrels(b"q1\td1\t1\nq1\td2\tx\n", Path::new("q.tsv"), None, None);
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("q.tsv:2: score \"x\""));
    }
}
