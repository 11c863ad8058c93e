//! Text readers.
//!
//! JSON Lines, CSV and TSV are parsed here; Parquet in the private `pq` module, through the
//! `parquet` crate's record API. Every reader yields the same rows (1-based line or row number,
//! then the requested columns), so texts, labels and side columns behave alike across formats.

mod pq;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A file format lmfuse reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
    /// One text per line.
    Text,
    /// Apache Parquet (uncompressed, snappy, gzip or zstd); "lines" are 1-based row numbers.
    Parquet,
}

impl Format {
    /// Guesses the format from the file extension: `.jsonl`/`.ndjson`/`.json`, `.csv`, `.tsv`,
    /// `.parquet`; anything else is plain text.
    pub fn from_path(path: &Path) -> Self {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("jsonl" | "ndjson" | "json") => Format::Jsonl,
            Some("csv") => Format::Csv,
            Some("tsv" | "tab") => Format::Tsv,
            Some("parquet") => Format::Parquet,
            _ => Format::Text,
        }
    }
}

/// A format name that is none of `jsonl`, `csv`, `tsv`, `parquet`, `text`.
#[derive(Debug, thiserror::Error)]
#[error("unknown input format {0:?}: expected jsonl, csv, tsv, parquet or text")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            "tsv" => Ok(Format::Tsv),
            "text" | "txt" => Ok(Format::Text),
            "parquet" => Ok(Format::Parquet),
            other => Err(UnknownFormat(other.to_string())),
        }
    }
}

/// Why a data file could not be read. Every variant names the file; those about content name
/// the line (1-based) and, where there is one, the field.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file does not exist.
    #[error("input file {path} does not exist")]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// Reading failed; the cause is the [`source`](std::error::Error::source), not repeated in
    /// the message.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not valid UTF-8.
    #[error("{path}:{line}: invalid UTF-8 (byte offset {offset} of the line)")]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// Offset of the first invalid byte within the line.
        offset: usize,
    },
    /// A JSON Lines line is not a JSON object.
    #[error("{path}:{line}: invalid JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A record lacks the text field.
    #[error("{path}:{line}: field {field:?} is missing{hint}")]
    MissingField {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// The field asked for.
        field: String,
        /// Fields that are there.
        hint: String,
    },
    /// The text field is not a string.
    #[error("{path}:{line}: field {field:?} is {found}, expected a string")]
    NotAString {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// The field.
        field: String,
        /// The JSON type found.
        found: &'static str,
    },
    /// The header of a CSV/TSV file, or the schema of a Parquet file, lacks a column.
    #[error("{path}: no column {column:?} (columns: {available})")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// The columns there are.
        available: String,
    },
    /// Labels were asked of a plain-text file.
    #[error("{path}: plain-text input has no label column; use JSONL, CSV or TSV")]
    NoLabels {
        /// The file.
        path: PathBuf,
    },
    /// A record's label is empty.
    #[error("{path}:{line}: label field {field:?} is empty")]
    EmptyLabel {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// The label field.
        field: String,
    },
    /// A CSV/TSV record is malformed.
    #[error("{path}:{line}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A JSON Lines side column holds a value that is no cell (an array or an object).
    #[error(
        "{path}:{line}: field {field:?} is {found}, expected a number, string, boolean or null"
    )]
    NotACell {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// The field.
        field: String,
        /// The JSON type found.
        found: &'static str,
    },
    /// A Parquet column's type does not suit its use (text, label or side column).
    #[error("{path}: column {column:?} holds {found}, expected {expected}")]
    ColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// Its Parquet type.
        found: String,
        /// What its use needs.
        expected: &'static str,
    },
    /// A Parquet text or label cell is null.
    #[error("{path}: row {row}: column {column:?} is null")]
    Null {
        /// The file.
        path: PathBuf,
        /// Row number (1-based).
        row: usize,
        /// The column.
        column: String,
    },
    /// A Parquet file is corrupt, truncated or uses an unsupported feature.
    #[error("{path}: cannot read Parquet data: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A CoNLL line has another number of columns than the file's first token line.
    #[error("{path}:{line}: {found} columns, expected {expected} as on the first token line")]
    Columns {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// Columns on this line.
        found: usize,
        /// Columns on the first token line.
        expected: usize,
    },
    /// A tag is malformed or breaks its scheme (an `I-X` without `B-X`, ...).
    #[error("{path}:{line}: tag {tag:?} {reason}")]
    BadTag {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// The tag.
        tag: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An entity span is outside its text, empty, or overlaps another.
    #[error("{path}:{line}: entity {index}: {reason}")]
    BadSpan {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// The entity's index in the line's list.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A relation example's entity pair is malformed (a marker missing or repeated, a span
    /// outside the text, empty or overlapping the other).
    #[error("{path}:{line}: {reason}")]
    BadPair {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Tagged sequences given in memory disagree in length (or a sentence is empty).
    #[error("{name}: {what}")]
    Sequences {
        /// What the sequences are called (`y`).
        name: String,
        /// What disagrees.
        what: String,
    },
    /// Two records share an id.
    #[error("{path}:{line}: duplicate id {id:?} (first on line {first})")]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// The id.
        id: String,
        /// The line of its first use.
        first: usize,
    },
    /// A document or query has no text.
    #[error("{path}:{line}: record {id:?} has an empty text")]
    EmptyText {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// The record's id.
        id: String,
    },
    /// A relevance judgement is malformed or names an unknown query or document.
    #[error("{path}:{line}: {reason}")]
    BadQrel {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A record is malformed or names something that does not exist.
    #[error("{path}:{line}: {reason}")]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A file holds no record of the kind needed.
    #[error("{path}: no {what}")]
    NoRecords {
        /// The file.
        path: PathBuf,
        /// What it should hold (`documents`, `queries`, `judgements`).
        what: &'static str,
    },
    /// A file holds no sentence.
    #[error("{path}: no sentences")]
    NoSentences {
        /// The file.
        path: PathBuf,
    },
}

/// Reads the texts of `path`: the `text_col` field of each JSON object or CSV/TSV row, or each
/// line of a plain text file. `format` defaults to [`Format::from_path`].
pub fn read_texts(
    path: &Path,
    format: Option<Format>,
    text_col: &str,
) -> Result<Vec<String>, DataError> {
    let bytes = read_file(path)?;
    parse_texts(
        &bytes,
        path,
        format.unwrap_or_else(|| Format::from_path(path)),
        text_col,
    )
}

/// Reads texts from `reader` (standard input, say); `name` is used in error messages.
pub fn read_texts_from(
    mut reader: impl Read,
    name: &Path,
    format: Format,
    text_col: &str,
) -> Result<Vec<String>, DataError> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(|e| DataError::Io {
        path: name.to_path_buf(),
        source: e,
    })?;
    parse_texts(&bytes, name, format, text_col)
}

/// Parses texts from the bytes of a file.
pub fn parse_texts(
    bytes: &[u8],
    path: &Path,
    format: Format,
    text_col: &str,
) -> Result<Vec<String>, DataError> {
    if format == Format::Text {
        return lines(bytes, path)
            .map(|r| r.map(|(_, l)| l.to_string()))
            .collect();
    }
    Ok(parse_rows(bytes, path, format, &[(text_col, Kind::Text)])?
        .into_iter()
        .map(|mut r| r.texts.swap_remove(0))
        .collect())
}

/// Side columns by name, one cell per row (see [`LabelledTexts::columns`]).
pub type SideColumns = Vec<(String, Vec<Cell>)>;

/// Parses texts and the side columns `feature_cols` (each an error when absent), for
/// predicting with a model that uses side columns; plain text has no columns.
pub fn parse_texts_with_columns(
    bytes: &[u8],
    path: &Path,
    format: Format,
    text_col: &str,
    feature_cols: &[String],
) -> Result<(Vec<String>, SideColumns), DataError> {
    if feature_cols.is_empty() {
        return Ok((parse_texts(bytes, path, format, text_col)?, Vec::new()));
    }
    if format == Format::Text {
        return Err(DataError::NoLabels {
            path: path.to_path_buf(),
        });
    }
    let mut cols = vec![(text_col, Kind::Text)];
    cols.extend(feature_cols.iter().map(|f| (f.as_str(), Kind::Cell)));
    let rows = parse_rows(bytes, path, format, &cols)?;
    let mut columns: Vec<(String, Vec<Cell>)> = feature_cols
        .iter()
        .map(|f| (f.clone(), Vec::with_capacity(rows.len())))
        .collect();
    let mut texts = Vec::with_capacity(rows.len());
    for mut row in rows {
        texts.push(row.texts.swap_remove(0));
        for ((_, column), cell) in columns.iter_mut().zip(row.cells) {
            column.push(cell);
        }
    }
    Ok((texts, columns))
}

/// One value of a side column (see [`LabelledTexts::columns`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A number: a JSON number or boolean (`true` = 1, `false` = 0), a CSV/TSV field that
    /// parses as a finite `f64` (surrounding white space ignored), a Parquet integer, float or
    /// boolean.
    Number(f64),
    /// Any other string, as written.
    Text(String),
    /// No value: an empty (or all white-space) CSV/TSV field, JSON `null`, a Parquet null.
    Missing,
}

/// Texts with their labels, in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelledTexts {
    /// The texts.
    pub texts: Vec<String>,
    /// The label of each text, as written in the file (numbers in their JSON form).
    pub labels: Vec<String>,
    /// The 1-based line where each record starts (the 1-based row number for Parquet).
    pub lines: Vec<usize>,
    /// The side columns asked for, in the order asked (repeats dropped): name, then one cell
    /// per record in record order.
    pub columns: Vec<(String, Vec<Cell>)>,
}

impl LabelledTexts {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The records at `idx`, in that order, with their side-column cells.
    pub fn select(&self, idx: &[usize]) -> Self {
        Self {
            texts: idx.iter().map(|&i| self.texts[i].clone()).collect(),
            labels: idx.iter().map(|&i| self.labels[i].clone()).collect(),
            lines: idx.iter().map(|&i| self.lines[i]).collect(),
            columns: self
                .columns
                .iter()
                .map(|(name, cells)| {
                    (
                        name.clone(),
                        idx.iter().map(|&i| cells[i].clone()).collect(),
                    )
                })
                .collect(),
        }
    }
}

/// Reads texts and labels: the `text_col` and `label_col` fields of each JSON object, CSV/TSV
/// row or Parquet row, plus the side columns `feature_cols` (each an error when absent). Labels
/// may be strings or numbers (JSONL, Parquet integers); empty or null labels are errors.
pub fn read_labelled(
    path: &Path,
    format: Option<Format>,
    text_col: &str,
    label_col: &str,
    feature_cols: &[String],
) -> Result<LabelledTexts, DataError> {
    let bytes = read_file(path)?;
    parse_labelled(
        &bytes,
        path,
        format.unwrap_or_else(|| Format::from_path(path)),
        text_col,
        label_col,
        feature_cols,
    )
}

/// Parses texts, labels and the side columns `feature_cols` from the bytes of a file.
pub fn parse_labelled(
    bytes: &[u8],
    path: &Path,
    format: Format,
    text_col: &str,
    label_col: &str,
    feature_cols: &[String],
) -> Result<LabelledTexts, DataError> {
    if format == Format::Text {
        return Err(DataError::NoLabels {
            path: path.to_path_buf(),
        });
    }
    let mut features: Vec<&str> = Vec::with_capacity(feature_cols.len());
    for f in feature_cols {
        if !features.contains(&f.as_str()) {
            features.push(f);
        }
    }
    let mut cols = vec![(text_col, Kind::Text), (label_col, Kind::Label)];
    cols.extend(features.iter().map(|&f| (f, Kind::Cell)));
    let rows = parse_rows(bytes, path, format, &cols)?;
    let mut out = LabelledTexts {
        columns: features
            .iter()
            .map(|&f| (f.to_string(), Vec::with_capacity(rows.len())))
            .collect(),
        ..LabelledTexts::default()
    };
    for row in rows {
        let mut texts = row.texts.into_iter();
        let (Some(text), Some(label)) = (texts.next(), texts.next()) else {
            unreachable!("a text and a label column asked");
        };
        if label.trim().is_empty() {
            return Err(DataError::EmptyLabel {
                path: path.to_path_buf(),
                line: row.line,
                field: label_col.to_string(),
            });
        }
        out.labels.push(label);
        out.texts.push(text);
        out.lines.push(row.line);
        for ((_, column), cell) in out.columns.iter_mut().zip(row.cells) {
            column.push(cell);
        }
    }
    Ok(out)
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })
}

/// What a requested column must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string.
    Text,
    /// A string, a number or a boolean (kept in its JSON form).
    Label,
    /// Any [`Cell`].
    Cell,
}

impl Kind {
    /// The command-line flag that names a column of this kind.
    fn flag(self) -> &'static str {
        match self {
            Kind::Text => "--text-col",
            Kind::Label => "--label-col",
            Kind::Cell => "--feature-cols",
        }
    }
}

/// One record: its line, the requested text and label columns' values, then the requested
/// side columns' cells, each in the order asked.
pub(crate) struct Row {
    pub(crate) line: usize,
    pub(crate) texts: Vec<String>,
    cells: Vec<Cell>,
}

impl Row {
    fn new(line: usize, cols: &[(&str, Kind)]) -> Self {
        let cells = cols.iter().filter(|c| c.1 == Kind::Cell).count();
        Self {
            line,
            texts: Vec::with_capacity(cols.len() - cells),
            cells: Vec::with_capacity(cells),
        }
    }
}

pub(crate) fn parse_rows(
    bytes: &[u8],
    path: &Path,
    format: Format,
    cols: &[(&str, Kind)],
) -> Result<Vec<Row>, DataError> {
    match format {
        Format::Jsonl => parse_jsonl(bytes, path, cols),
        Format::Csv => parse_delimited(bytes, path, b',', cols),
        Format::Tsv => parse_delimited(bytes, path, b'\t', cols),
        Format::Parquet => pq::parse_parquet(bytes, path, cols),
        Format::Text => unreachable!("plain text has no columns"),
    }
}

/// Splits into lines (`\n` or `\r\n`), checking UTF-8; no final empty line after a trailing
/// newline. Yields (1-based line number, line).
pub(crate) fn lines<'a>(
    bytes: &'a [u8],
    path: &'a Path,
) -> impl Iterator<Item = Result<(usize, &'a str), DataError>> + 'a {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let body = if bytes.is_empty() { None } else { Some(body) };
    body.into_iter()
        .flat_map(|b| b.split(|&c| c == b'\n'))
        .enumerate()
        .map(move |(i, raw)| {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let raw = if i == 0 {
                raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
            } else {
                raw
            };
            std::str::from_utf8(raw)
                .map(|s| (i + 1, s))
                .map_err(|e| DataError::InvalidUtf8 {
                    path: path.to_path_buf(),
                    line: i + 1,
                    offset: e.valid_up_to(),
                })
        })
}

pub(crate) fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn parse_jsonl(bytes: &[u8], path: &Path, cols: &[(&str, Kind)]) -> Result<Vec<Row>, DataError> {
    let mut out = Vec::new();
    for item in lines(bytes, path) {
        let (line, text) = item?;
        if text.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| DataError::Json {
            path: path.to_path_buf(),
            line,
            message: e.to_string(),
        })?;
        let serde_json::Value::Object(obj) = value else {
            return Err(DataError::Json {
                path: path.to_path_buf(),
                line,
                message: format!("expected an object, found {}", json_type(&value)),
            });
        };
        let mut row = Row::new(line, cols);
        for &(field, kind) in cols {
            use serde_json::Value;
            let Some(value) = obj.get(field) else {
                let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
                return Err(DataError::MissingField {
                    path: path.to_path_buf(),
                    line,
                    field: field.to_string(),
                    hint: format!(
                        " (fields: {}; choose one with {})",
                        keys.join(", "),
                        kind.flag()
                    ),
                });
            };
            match (value, kind) {
                (Value::String(s), Kind::Cell) => row.cells.push(Cell::Text(s.clone())),
                (Value::String(s), _) => row.texts.push(s.clone()),
                (v @ (Value::Number(_) | Value::Bool(_)), Kind::Label) => {
                    row.texts.push(v.to_string())
                }
                (Value::Number(n), Kind::Cell) => {
                    // Without serde_json's arbitrary_precision every number is an f64.
                    row.cells
                        .push(n.as_f64().map_or(Cell::Missing, Cell::Number))
                }
                (Value::Bool(b), Kind::Cell) => {
                    row.cells.push(Cell::Number(f64::from(u8::from(*b))))
                }
                (Value::Null, Kind::Cell) => row.cells.push(Cell::Missing),
                (other, Kind::Cell) => {
                    return Err(DataError::NotACell {
                        path: path.to_path_buf(),
                        line,
                        field: field.to_string(),
                        found: json_type(other),
                    })
                }
                (other, _) => {
                    return Err(DataError::NotAString {
                        path: path.to_path_buf(),
                        line,
                        field: field.to_string(),
                        found: json_type(other),
                    })
                }
            }
        }
        out.push(row);
    }
    Ok(out)
}

fn parse_delimited(
    bytes: &[u8],
    path: &Path,
    delimiter: u8,
    cols: &[(&str, Kind)],
) -> Result<Vec<Row>, DataError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let csv_err = |e: csv::Error, fallback_line: usize| {
        let line = e
            .position()
            .map(|p| p.line() as usize)
            .unwrap_or(fallback_line);
        DataError::Csv {
            path: path.to_path_buf(),
            line,
            message: match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => format!("record has {len} fields, the header has {expected_len}"),
                _ => e.to_string(),
            },
        }
    };
    let headers = reader.byte_headers().map_err(|e| csv_err(e, 1))?.clone();
    let names: Vec<String> = headers
        .iter()
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .collect();
    let mut index = Vec::with_capacity(cols.len());
    for &(column, _) in cols {
        match names.iter().position(|h| h == column) {
            Some(i) => index.push(i),
            None => {
                return Err(DataError::MissingColumn {
                    path: path.to_path_buf(),
                    column: column.to_string(),
                    available: names.join(", "),
                })
            }
        }
    }
    let mut out = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_err(e, 0)),
        }
        let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
        let mut row = Row::new(line, cols);
        for (&i, &(_, kind)) in index.iter().zip(cols) {
            let field = record.get(i).unwrap_or_default();
            let text = std::str::from_utf8(field).map_err(|e| DataError::InvalidUtf8 {
                path: path.to_path_buf(),
                line,
                offset: e.valid_up_to(),
            })?;
            if kind == Kind::Cell {
                row.cells.push(csv_cell(text));
            } else {
                row.texts.push(text.to_string());
            }
        }
        out.push(row);
    }
    Ok(out)
}

/// A CSV/TSV field as a side-column cell: empty or white space → missing, a finite number →
/// number, anything else → text as written.
fn csv_cell(field: &str) -> Cell {
    let trimmed = field.trim();
    if trimmed.is_empty() {
        return Cell::Missing;
    }
    match trimmed.parse::<f64>() {
        Ok(x) if x.is_finite() => Cell::Number(x),
        _ => Cell::Text(field.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], format: Format) -> Result<Vec<String>, DataError> {
        parse_texts(bytes, Path::new("in.x"), format, "text")
    }

    #[test]
    fn a_read_failure_names_the_file_and_keeps_the_cause_as_its_source() {
        // Reading a folder fails with EISDIR.
        let dir = tempfile::tempdir().unwrap();
        let e = read_texts(dir.path(), Some(Format::Text), "text").unwrap_err();
        assert!(matches!(e, DataError::Io { .. }), "{e}");
        let cause = std::error::Error::source(&e).expect("a source").to_string();
        assert_eq!(
            e.to_string(),
            format!("cannot read {}", dir.path().display())
        );
        assert!(!cause.is_empty() && !e.to_string().contains(&cause), "{e}");
    }

    #[test]
    fn reads_every_format() {
        assert_eq!(
            parse(b"a\r\n\nb c\n", Format::Text).unwrap(),
            ["a", "", "b c"]
        );
        assert!(parse(b"", Format::Text).unwrap().is_empty());
        assert_eq!(
            parse(
                b"{\"text\":\"x\",\"label\":1}\n\n{\"text\":\"y\"}",
                Format::Jsonl
            )
            .unwrap(),
            ["x", "y"]
        );
        assert_eq!(
            parse(
                b"id,text\n1,\"hello, world\"\n2,\"multi\nline\"\n",
                Format::Csv
            )
            .unwrap(),
            ["hello, world", "multi\nline"]
        );
        assert_eq!(
            parse(b"text\tlabel\nx y\t1\n", Format::Tsv).unwrap(),
            ["x y"]
        );
        assert_eq!(
            parse(b"\xEF\xBB\xBFtext\nbom\n", Format::Csv).unwrap(),
            ["bom"]
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = parse(b"{\"text\":\"ok\"}\n{\"body\":\"x\"}\n", Format::Jsonl)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("in.x:2") && e.contains("\"text\"") && e.contains("body"),
            "{e}"
        );
        let e = parse(b"{\"text\":3}\n", Format::Jsonl)
            .unwrap_err()
            .to_string();
        assert!(e.contains("in.x:1") && e.contains("a number"), "{e}");
        let e = parse(b"{\"text\":\"a\"}\n{broken\n", Format::Jsonl)
            .unwrap_err()
            .to_string();
        assert!(e.contains("in.x:2: invalid JSON"), "{e}");
        let e = parse(b"[1]\n", Format::Jsonl).unwrap_err().to_string();
        assert!(e.contains("expected an object"), "{e}");
        let e = parse(b"ok\nbad \xff byte\n", Format::Text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("in.x:2: invalid UTF-8"), "{e}");
        let e = parse(b"id,body\n1,x\n", Format::Csv)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no column \"text\"") && e.contains("id, body"),
            "{e}"
        );
        let e = parse(b"id,text\n1,x\n2,y,z\n", Format::Csv)
            .unwrap_err()
            .to_string();
        assert!(e.contains("in.x:3") && e.contains("3 fields"), "{e}");
        let e = parse(b"text\nfine\n\"\xff\"\n", Format::Csv)
            .unwrap_err()
            .to_string();
        assert!(e.contains("in.x:3: invalid UTF-8"), "{e}");
    }

    #[test]
    fn reads_labels_of_every_kind() {
        let p = Path::new("l.jsonl");
        let l = parse_labelled(
            b"{\"text\":\"a\",\"label\":\"pos\"}\n{\"text\":\"b\",\"label\":3}\n\n{\"text\":\"c\",\"label\":true}\n",
            p,
            Format::Jsonl,
            "text",
            "label",
            &[],
        )
        .unwrap();
        assert_eq!(l.texts, ["a", "b", "c"]);
        assert_eq!(l.labels, ["pos", "3", "true"]);
        assert_eq!(l.lines, [1, 2, 4]);
        let l = parse_labelled(
            b"text,category\n\"x, y\",card\nz,atm\n",
            Path::new("b.csv"),
            Format::Csv,
            "text",
            "category",
            &[],
        )
        .unwrap();
        assert_eq!(l.labels, ["card", "atm"]);
        assert_eq!(l.lines, [2, 3]);
        let e = parse_labelled(
            b"{\"text\":\"a\"}\n",
            p,
            Format::Jsonl,
            "text",
            "label",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("l.jsonl:1") && e.contains("--label-col"), "{e}");
        let e = parse_labelled(
            b"{\"text\":\"a\",\"label\":null}\n",
            p,
            Format::Jsonl,
            "text",
            "label",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("null"), "{e}");
        let e = parse_labelled(
            b"{\"text\":\"a\",\"label\":\" \"}\n",
            p,
            Format::Jsonl,
            "text",
            "label",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("l.jsonl:1: label field \"label\" is empty"),
            "{e}"
        );
        let e = parse_labelled(
            b"x\n",
            Path::new("t.txt"),
            Format::Text,
            "text",
            "label",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no label column"), "{e}");
    }

    #[test]
    fn reads_side_columns() {
        let cols: Vec<String> = ["age", "city", "ok", "age"].map(String::from).to_vec();
        let l = parse_labelled(
            b"{\"text\":\"a\",\"label\":\"x\",\"age\":3,\"city\":\"Oslo\",\"ok\":true}\n\
              {\"text\":\"b\",\"label\":\"y\",\"age\":null,\"city\":\"\",\"ok\":false}\n",
            Path::new("s.jsonl"),
            Format::Jsonl,
            "text",
            "label",
            &cols,
        )
        .unwrap();
        assert_eq!(
            l.columns,
            [
                ("age".to_string(), vec![Cell::Number(3.0), Cell::Missing]),
                (
                    "city".to_string(),
                    vec![Cell::Text("Oslo".into()), Cell::Text(String::new())]
                ),
                ("ok".to_string(), vec![Cell::Number(1.0), Cell::Number(0.0)]),
            ]
        );
        let l = parse_labelled(
            b"text,label,age,city\na,x,3.5,Oslo\nb,y,,  \nc,z,nan,1e3\nd,z, -2 ,inf\n",
            Path::new("s.csv"),
            Format::Csv,
            "text",
            "label",
            &cols[..2],
        )
        .unwrap();
        assert_eq!(l.lines, [2, 3, 4, 5]);
        assert_eq!(
            l.columns[0].1,
            [
                Cell::Number(3.5),
                Cell::Missing,
                Cell::Text("nan".into()),
                Cell::Number(-2.0)
            ]
        );
        assert_eq!(
            l.columns[1].1,
            [
                Cell::Text("Oslo".into()),
                Cell::Missing,
                Cell::Number(1000.0),
                Cell::Text("inf".into())
            ]
        );
        let picked = l.select(&[3, 0]);
        assert_eq!(picked.texts, ["d", "a"]);
        assert_eq!(picked.lines, [5, 2]);
        assert_eq!(picked.columns[0].1, [Cell::Number(-2.0), Cell::Number(3.5)]);
        assert_eq!(picked.len(), 2);
    }

    #[test]
    fn missing_or_bad_side_columns_are_named() {
        let cols = ["age".to_string()];
        let e = parse_labelled(
            b"{\"text\":\"a\",\"label\":1,\"age\":1}\n{\"text\":\"b\",\"label\":1}\n",
            Path::new("m.jsonl"),
            Format::Jsonl,
            "text",
            "label",
            &cols,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "m.jsonl:2: field \"age\" is missing (fields: label, text; choose one with --feature-cols)"
        );
        let e = parse_labelled(
            b"{\"text\":\"a\",\"label\":1,\"age\":[1]}\n",
            Path::new("m.jsonl"),
            Format::Jsonl,
            "text",
            "label",
            &cols,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("m.jsonl:1: field \"age\" is an array"), "{e}");
        let e = parse_labelled(
            b"text,label\na,1\n",
            Path::new("m.csv"),
            Format::Csv,
            "text",
            "label",
            &cols,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "m.csv: no column \"age\" (columns: text, label)");
    }

    #[test]
    fn missing_file_is_named() {
        let e = read_texts(Path::new("/no/such.jsonl"), None, "text")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "input file /no/such.jsonl does not exist");
    }

    #[test]
    fn format_from_extension() {
        assert_eq!(Format::from_path(Path::new("a.JSONL")), Format::Jsonl);
        assert_eq!(Format::from_path(Path::new("a.csv")), Format::Csv);
        assert_eq!(Format::from_path(Path::new("a.tsv")), Format::Tsv);
        assert_eq!(Format::from_path(Path::new("a.txt")), Format::Text);
        assert_eq!(Format::from_path(Path::new("a.Parquet")), Format::Parquet);
        assert_eq!("parquet".parse::<Format>().unwrap(), Format::Parquet);
        assert!("feather".parse::<Format>().is_err());
    }
}
