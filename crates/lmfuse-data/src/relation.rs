//! Relation examples: a text with two marked entities and, for training, the relation.
//!
//! Two JSON Lines forms, told apart per line:
//! - markers in the text, as in SemEval-2010 Task 8:
//!   `{"text": "The <e1>child</e1> was wrapped into the <e2>cradle</e2>.", "label": "Other"}`;
//! - character-offset spans: `{"text": ..., "e1": {"start": 4, "end": 9}, "e2": {...},
//!   "label": ...}` (offsets count characters, `end` exclusive; an optional `"label"` inside a
//!   span is the entity's type).
//!
//! Bad input (a marker missing or repeated, a span outside the text, empty or overlapping the
//! other) is an error naming file and line.

use crate::read::{json_type, lines, read_file, DataError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// An entity of a relation example: characters `start..end` of the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairSpan {
    /// First character.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// The entity's type, when given.
    #[serde(default, rename = "label", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// One relation example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationExample {
    /// The text, markers removed.
    pub text: String,
    /// The first entity (`e1`).
    pub e1: PairSpan,
    /// The second entity (`e2`).
    pub e2: PairSpan,
    /// The relation, when the file gives one.
    pub label: Option<String>,
    /// The line it came from (1-based).
    pub line: usize,
}

/// The entity markers of the marked form, in the order (e1 open, e1 close, e2 open, e2 close).
pub const MARKERS: [&str; 4] = ["<e1>", "</e1>", "<e2>", "</e2>"];

/// Reads relation examples from a JSON Lines file; with `labelled`, every line needs a
/// non-empty `"label"`.
pub fn read_relations(path: &Path, labelled: bool) -> Result<Vec<RelationExample>, DataError> {
    let bytes = read_file(path)?;
    let examples = parse_relations(&bytes, path, labelled)?;
    if examples.is_empty() {
        return Err(DataError::NoSentences {
            path: path.to_path_buf(),
        });
    }
    Ok(examples)
}

/// Parses relation examples from JSON Lines bytes (blank lines skipped); `path` names them in
/// errors.
pub fn parse_relations(
    bytes: &[u8],
    path: &Path,
    labelled: bool,
) -> Result<Vec<RelationExample>, DataError> {
    let mut out = Vec::new();
    for item in lines(bytes, path) {
        let (line, raw) = item?;
        if raw.trim().is_empty() {
            continue;
        }
        out.push(parse_line(raw, path, line, labelled)?);
    }
    Ok(out)
}

fn bad(path: &Path, line: usize, reason: impl Into<String>) -> DataError {
    DataError::BadPair {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

fn string_field(
    value: &serde_json::Value,
    name: &str,
    path: &Path,
    line: usize,
) -> Result<Option<String>, DataError> {
    match value.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(DataError::NotAString {
            path: path.to_path_buf(),
            line,
            field: name.into(),
            found: json_type(other),
        }),
    }
}

fn parse_line(
    raw: &str,
    path: &Path,
    line: usize,
    labelled: bool,
) -> Result<RelationExample, DataError> {
    let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| DataError::Json {
        path: path.to_path_buf(),
        line,
        message: e.to_string(),
    })?;
    let missing = |field: &str| DataError::MissingField {
        path: path.to_path_buf(),
        line,
        field: field.into(),
        hint: String::new(),
    };
    let text = string_field(&value, "text", path, line)?.ok_or_else(|| missing("text"))?;
    let label = string_field(&value, "label", path, line)?;
    if labelled && label.is_none() {
        return Err(missing("label"));
    }
    if label.as_deref().is_some_and(|l| l.trim().is_empty()) {
        return Err(DataError::EmptyLabel {
            path: path.to_path_buf(),
            line,
            field: "label".into(),
        });
    }
    let (text, e1, e2) = match (value.get("e1"), value.get("e2")) {
        (Some(a), Some(b)) => {
            let span = |v: &serde_json::Value, name: &str| {
                serde_json::from_value::<PairSpan>(v.clone())
                    .map_err(|e| bad(path, line, format!("field \"{name}\": {e}")))
            };
            (text, span(a, "e1")?, span(b, "e2")?)
        }
        (None, None) => unmark(&text).map_err(|reason| bad(path, line, reason))?,
        _ => return Err(bad(path, line, "give both \"e1\" and \"e2\", or neither")),
    };
    check_spans(&text, &e1, &e2).map_err(|reason| bad(path, line, reason))?;
    Ok(RelationExample {
        text,
        e1,
        e2,
        label,
        line,
    })
}

/// Checks two spans against their text: inside it, not empty, not overlapping.
pub fn check_spans(text: &str, e1: &PairSpan, e2: &PairSpan) -> Result<(), String> {
    let n = text.chars().count();
    for (name, s) in [("e1", e1), ("e2", e2)] {
        if s.start >= s.end || s.end > n {
            return Err(format!(
                "{name} span {}..{} is empty or outside the text ({n} characters)",
                s.start, s.end
            ));
        }
    }
    if e1.start < e2.end && e2.start < e1.end {
        return Err(format!(
            "e1 ({}..{}) and e2 ({}..{}) overlap",
            e1.start, e1.end, e2.start, e2.end
        ));
    }
    Ok(())
}

/// The text without its four markers, and the character spans they enclosed.
pub fn unmark(marked: &str) -> Result<(String, PairSpan, PairSpan), String> {
    let mut found = [None; 4];
    let mut text = String::with_capacity(marked.len());
    let mut chars = 0usize;
    let mut rest = marked;
    while let Some(c) = rest.chars().next() {
        if let Some(k) = MARKERS.iter().position(|m| rest.starts_with(m)) {
            if found[k].is_some() {
                return Err(format!("marker {} appears twice", MARKERS[k]));
            }
            found[k] = Some(chars);
            rest = &rest[MARKERS[k].len()..];
            continue;
        }
        text.push(c);
        chars += 1;
        rest = &rest[c.len_utf8()..];
    }
    let at = |k: usize| found[k].ok_or_else(|| format!("marker {} is missing", MARKERS[k]));
    let (a, b, c, d) = (at(0)?, at(1)?, at(2)?, at(3)?);
    let inside = |open: usize, close: usize, name: &str| {
        if close <= open {
            return Err(format!(
                "the {name} span is empty or closed before it opens"
            ));
        }
        Ok(())
    };
    inside(a, b, "e1")?;
    inside(c, d, "e2")?;
    let span = |start, end| PairSpan {
        start,
        end,
        kind: None,
    };
    Ok((text, span(a, b), span(c, d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<RelationExample>, DataError> {
        parse_relations(s.as_bytes(), Path::new("rel.jsonl"), true)
    }

    #[test]
    fn markers_are_removed_and_become_character_spans() {
        let r = parse(r#"{"text": "Ein <e1>Kind</e1> in der <e2>Wiege</e2>.", "label": "Other"}"#)
            .unwrap();
        let ex = &r[0];
        assert_eq!(ex.text, "Ein Kind in der Wiege.");
        let chars: Vec<char> = ex.text.chars().collect();
        let word = |s: &PairSpan| chars[s.start..s.end].iter().collect::<String>();
        assert_eq!(
            (word(&ex.e1), word(&ex.e2)),
            ("Kind".into(), "Wiege".into())
        );
        assert_eq!(ex.label.as_deref(), Some("Other"));
    }

    #[test]
    fn chinese_spans_count_characters_and_e2_may_come_first() {
        let r = parse(
            r#"{"text": "马云创立了阿里巴巴", "e1": {"start": 5, "end": 9, "label": "ORG"}, "e2": {"start": 0, "end": 2}, "label": "founded_by"}"#,
        )
        .unwrap();
        assert_eq!(r[0].e1.kind.as_deref(), Some("ORG"));
        assert_eq!((r[0].e2.start, r[0].e2.end), (0, 2));
    }

    #[test]
    fn bad_lines_name_file_line_and_cause() {
        let cases = [
            (
                r#"{"text": "<e1>a</e1> b", "label": "x"}"#,
                "marker <e2> is missing",
            ),
            (
                r#"{"text": "<e1>a</e1> <e1>b</e1> <e2>c</e2>", "label": "x"}"#,
                "appears twice",
            ),
            (
                r#"{"text": "</e1>a<e1> <e2>c</e2>", "label": "x"}"#,
                "closed before",
            ),
            (
                r#"{"text": "abc", "e1": {"start": 0, "end": 2}, "e2": {"start": 1, "end": 3}, "label": "x"}"#,
                "overlap",
            ),
            (
                r#"{"text": "abc", "e1": {"start": 0, "end": 9}, "e2": {"start": 1, "end": 3}, "label": "x"}"#,
                "outside the text",
            ),
            (
                r#"{"text": "abc", "e1": {"start": 0, "end": 1}, "label": "x"}"#,
                "or neither",
            ),
            (
                r#"{"text": "<e1>a</e1> <e2>b</e2>"}"#,
                "\"label\" is missing",
            ),
            (
                r#"{"text": "<e1>a</e1> <e2>b</e2>", "label": " "}"#,
                "is empty",
            ),
            (r#"{"text": 3, "label": "x"}"#, "expected a string"),
            ("{not json", "invalid JSON"),
        ];
        for (line, want) in cases {
            let input = format!(
                "{}\n{line}\n",
                r#"{"text": "<e1>a</e1> <e2>b</e2>", "label": "x"}"#
            );
            let err = parse(&input).unwrap_err().to_string();
            assert!(err.starts_with("rel.jsonl:2:"), "{err}");
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn unlabelled_lines_read_for_prediction() {
        let r = parse_relations(
            br#"{"text": "<e1>a</e1> <e2>b</e2>"}"#,
            Path::new("p.jsonl"),
            false,
        )
        .unwrap();
        assert_eq!(r[0].label, None);
    }
}
