//! Parquet input through the `parquet` crate's record API (no arrow).
//!
//! The schema is checked before any row is decoded: every requested column must be a top-level
//! primitive column of a type its use accepts (text: strings; label: strings, integers or
//! booleans; side columns: strings, integers, floats or booleans), so the record API only ever
//! meets types it converts. Rows are read with a projection onto the requested columns, so wide
//! files (say, with an embedding column) cost only what is asked for. Column chunks may be
//! uncompressed or compressed with snappy, gzip or zstd (the codecs pandas, pyarrow and Spark
//! write); a requested column in another codec is an error naming the file, column and codec.

use super::{Cell, DataError, Kind, Row};
use parquet::basic::{Compression, ConvertedType, LogicalType, Repetition, Type as PhysicalType};
use parquet::errors::ParquetError;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;
use std::path::Path;
use std::sync::Arc;

/// The longest parser message kept in an error (corrupt data can make it very long).
const MAX_MESSAGE: usize = 300;

/// What a Parquet column holds, as far as lmfuse is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    /// UTF-8 strings (`BYTE_ARRAY` annotated `UTF8`/`STRING`, `ENUM` or `JSON`).
    Str,
    /// Signed or unsigned integers of 8 to 64 bits.
    Int,
    /// Floats of 16, 32 or 64 bits.
    Float,
    /// Booleans.
    Bool,
}

/// Reads the requested columns of every row of a Parquet file held in `bytes`.
///
/// The decoder runs under [`quietly`]: the `parquet` crate (60.x) still panics on some
/// malformed input (negative column-chunk offsets, a dictionary-encoded page without a
/// dictionary, ...), and a corrupt file must be an error naming the file, not a crash.
pub(super) fn parse_parquet(
    bytes: &[u8],
    path: &Path,
    cols: &[(&str, Kind)],
) -> Result<Vec<Row>, DataError> {
    let data = bytes::Bytes::copy_from_slice(bytes);
    quietly(|| read(data, path, cols)).unwrap_or_else(|payload| {
        let reason = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the decoder failed".into());
        Err(DataError::Parquet {
            path: path.to_path_buf(),
            message: format!("malformed file ({})", clip(&reason)),
        })
    })
}

thread_local! {
    /// Set while this thread runs [`quietly`]: its panics are caught and turned into errors,
    /// so the panic hook must not print them.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, catching a panic; the panic message is not printed. The first call wraps the
/// process's panic hook (the one in place then) in one that stays silent for the thread inside
/// `quietly` and defers to the old hook everywhere else.
fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    out
}

fn read(data: bytes::Bytes, path: &Path, cols: &[(&str, Kind)]) -> Result<Vec<Row>, DataError> {
    let reader = SerializedFileReader::new(data).map_err(|e| parquet_error(path, e))?;
    let schema = reader.metadata().file_metadata().schema();
    let fields = schema.get_fields();

    // The projection: each requested column once, in order of first request.
    let mut projected: Vec<Arc<Type>> = Vec::new();
    // For each requested column, its position in the projection and what it holds.
    let mut plan: Vec<(usize, Holds)> = Vec::with_capacity(cols.len());
    for &(name, kind) in cols {
        let field =
            fields
                .iter()
                .find(|f| f.name() == name)
                .ok_or_else(|| DataError::MissingColumn {
                    path: path.to_path_buf(),
                    column: name.to_string(),
                    available: fields
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        let holds = check_type(field, kind).map_err(|(found, expected)| DataError::ColumnType {
            path: path.to_path_buf(),
            column: name.to_string(),
            found,
            expected,
        })?;
        let at = match projected.iter().position(|f| f.name() == name) {
            Some(at) => at,
            None => {
                projected.push(field.clone());
                projected.len() - 1
            }
        };
        plan.push((at, holds));
    }
    check_codecs(&reader, path, &projected)?;
    let projection = Type::group_type_builder(schema.name())
        .with_fields(projected)
        .build()
        .map_err(|e| parquet_error(path, e))?;

    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|e| parquet_error(path, e))?;
    let mut out = Vec::with_capacity(
        usize::try_from(reader.metadata().file_metadata().num_rows())
            .unwrap_or(0)
            .min(1 << 20),
    );
    for (i, record) in rows.enumerate() {
        let line = i + 1;
        let record = record.map_err(|e| DataError::Parquet {
            path: path.to_path_buf(),
            message: format!("row {line}: {}", clip(&e.to_string())),
        })?;
        let values: Vec<&Field> = record.get_column_iter().map(|(_, f)| f).collect();
        let mut row = Row::new(line, cols);
        for (&(name, kind), &(at, holds)) in cols.iter().zip(&plan) {
            let field = values.get(at).copied().unwrap_or(&Field::Null);
            let null = || DataError::Null {
                path: path.to_path_buf(),
                row: line,
                column: name.to_string(),
            };
            match kind {
                Kind::Text => match field {
                    Field::Str(s) => row.texts.push(s.clone()),
                    Field::Null => return Err(null()),
                    other => return Err(unexpected(path, name, other, holds)),
                },
                Kind::Label => match field {
                    Field::Str(s) => row.texts.push(s.clone()),
                    Field::Bool(b) => row.texts.push(b.to_string()),
                    Field::Null => return Err(null()),
                    other => match integer(other) {
                        Some(s) => row.texts.push(s),
                        None => return Err(unexpected(path, name, other, holds)),
                    },
                },
                Kind::Cell => row.cells.push(match field {
                    Field::Null => Cell::Missing,
                    Field::Str(s) => Cell::Text(s.clone()),
                    Field::Bool(b) => Cell::Number(f64::from(u8::from(*b))),
                    Field::Float16(x) => Cell::Number(f64::from(*x)),
                    Field::Float(x) => Cell::Number(f64::from(*x)),
                    Field::Double(x) => Cell::Number(*x),
                    other => match number(other) {
                        Some(x) => Cell::Number(x),
                        None => return Err(unexpected(path, name, other, holds)),
                    },
                }),
            }
        }
        out.push(row);
    }
    Ok(out)
}

/// The codecs this build decompresses, as named in errors.
const READABLE_CODECS: &str = "uncompressed, SNAPPY, GZIP or ZSTD";

/// Checks that every chunk of the `projected` columns uses a codec this build decompresses, so
/// that a file in another codec fails before any row is decoded, naming the column and codec.
fn check_codecs(
    reader: &SerializedFileReader<bytes::Bytes>,
    path: &Path,
    projected: &[Arc<Type>],
) -> Result<(), DataError> {
    for group in reader.metadata().row_groups() {
        for chunk in group.columns() {
            let Some(column) = chunk.column_path().parts().first() else {
                continue;
            };
            if !projected.iter().any(|f| f.name() == column) {
                continue;
            }
            if let Some(codec) = unreadable_codec(chunk.compression()) {
                return Err(DataError::Parquet {
                    path: path.to_path_buf(),
                    message: format!(
                        "column {column:?} is compressed with {codec}, which this build cannot \
                         decompress (it reads {READABLE_CODECS}); re-save the file with one of \
                         those"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The Parquet name of `codec` when this build cannot decompress it.
fn unreadable_codec(codec: Compression) -> Option<&'static str> {
    match codec {
        Compression::UNCOMPRESSED
        | Compression::SNAPPY
        | Compression::GZIP(_)
        | Compression::ZSTD(_) => None,
        Compression::LZO => Some("LZO"),
        Compression::BROTLI(_) => Some("BROTLI"),
        Compression::LZ4 => Some("LZ4"),
        Compression::LZ4_RAW => Some("LZ4_RAW"),
    }
}

/// What `field` holds if `kind` accepts it, else (what it is, what was expected).
fn check_type(field: &Type, kind: Kind) -> Result<Holds, (String, &'static str)> {
    let expected = match kind {
        Kind::Text => "strings",
        Kind::Label => "strings, integers or booleans",
        Kind::Cell => "strings, numbers or booleans",
    };
    let holds = if !field.is_primitive() {
        Err("a group (struct, list or map)".to_string())
    } else if field.get_basic_info().has_repetition()
        && field.get_basic_info().repetition() == Repetition::REPEATED
    {
        Err("a repeated field (a list)".to_string())
    } else {
        holds(field).ok_or_else(|| describe(field))
    };
    let holds = holds.map_err(|found| (found, expected))?;
    let ok = match kind {
        Kind::Text => holds == Holds::Str,
        Kind::Label => holds != Holds::Float,
        Kind::Cell => true,
    };
    if ok {
        Ok(holds)
    } else {
        Err((describe(field), expected))
    }
}

/// Classifies a primitive column; `None` for types lmfuse does not read (binary, decimals,
/// dates, times, timestamps, UUIDs, ...).
fn holds(field: &Type) -> Option<Holds> {
    let info = field.get_basic_info();
    let logical = info.logical_type_ref();
    let converted = info.converted_type();
    match field.get_physical_type() {
        PhysicalType::BOOLEAN => Some(Holds::Bool),
        PhysicalType::INT32 | PhysicalType::INT64 => {
            let plain = matches!(logical, None | Some(LogicalType::Integer(_)));
            let int = matches!(
                converted,
                ConvertedType::NONE
                    | ConvertedType::INT_8
                    | ConvertedType::INT_16
                    | ConvertedType::INT_32
                    | ConvertedType::INT_64
                    | ConvertedType::UINT_8
                    | ConvertedType::UINT_16
                    | ConvertedType::UINT_32
                    | ConvertedType::UINT_64
            );
            (plain && int).then_some(Holds::Int)
        }
        PhysicalType::FLOAT | PhysicalType::DOUBLE => {
            (logical.is_none() && converted == ConvertedType::NONE).then_some(Holds::Float)
        }
        PhysicalType::FIXED_LEN_BYTE_ARRAY => {
            let half = logical == Some(&LogicalType::Float16) && field_length(field) == Some(2);
            half.then_some(Holds::Float)
        }
        PhysicalType::BYTE_ARRAY => {
            let string = matches!(
                converted,
                ConvertedType::UTF8 | ConvertedType::ENUM | ConvertedType::JSON
            );
            string.then_some(Holds::Str)
        }
        PhysicalType::INT96 => None,
    }
}

fn field_length(field: &Type) -> Option<i32> {
    match field {
        Type::PrimitiveType { type_length, .. } => Some(*type_length),
        Type::GroupType { .. } => None,
    }
}

/// A column's type in words for error messages, e.g. `BYTE_ARRAY` or `INT64 (TIMESTAMP)`.
fn describe(field: &Type) -> String {
    if !field.is_primitive() {
        return "a group (struct, list or map)".into();
    }
    let info = field.get_basic_info();
    let physical = field.get_physical_type();
    let physical = match physical {
        PhysicalType::BYTE_ARRAY if info.converted_type() == ConvertedType::NONE => {
            "BYTE_ARRAY (binary, not annotated as UTF-8 strings)".to_string()
        }
        other => other.to_string(),
    };
    match (info.logical_type_ref(), info.converted_type()) {
        (Some(l), _) => format!("{physical} ({l:?})"),
        (None, ConvertedType::NONE) => physical,
        (None, c) => format!("{physical} ({c})"),
    }
}

/// An integer field in decimal.
fn integer(field: &Field) -> Option<String> {
    Some(match field {
        Field::Byte(x) => x.to_string(),
        Field::Short(x) => x.to_string(),
        Field::Int(x) => x.to_string(),
        Field::Long(x) => x.to_string(),
        Field::UByte(x) => x.to_string(),
        Field::UShort(x) => x.to_string(),
        Field::UInt(x) => x.to_string(),
        Field::ULong(x) => x.to_string(),
        _ => return None,
    })
}

/// An integer field as `f64` (rounded to the nearest representable value beyond 2^53).
fn number(field: &Field) -> Option<f64> {
    Some(match field {
        Field::Byte(x) => f64::from(*x),
        Field::Short(x) => f64::from(*x),
        Field::Int(x) => f64::from(*x),
        Field::Long(x) => *x as f64,
        Field::UByte(x) => f64::from(*x),
        Field::UShort(x) => f64::from(*x),
        Field::UInt(x) => f64::from(*x),
        Field::ULong(x) => *x as f64,
        _ => return None,
    })
}

/// A decoded value of a kind the schema check should have ruled out.
fn unexpected(path: &Path, column: &str, field: &Field, holds: Holds) -> DataError {
    DataError::Parquet {
        path: path.to_path_buf(),
        message: format!("column {column:?} ({holds:?}) decoded to an unexpected value {field}"),
    }
}

/// The parquet crate's error as a [`DataError`]; a codec left out of this build (which
/// [`check_codecs`] normally reports first) is named as Parquet names it.
fn parquet_error(path: &Path, e: ParquetError) -> DataError {
    let text = e.to_string();
    let message = match text.find("Disabled feature at compile time: ") {
        Some(at) => {
            let feature = text[at + "Disabled feature at compile time: ".len()..].trim();
            let codec = match feature {
                "brotli" => "BROTLI",
                "flate2" => "GZIP",
                "snap" => "SNAPPY",
                "lz4" => "LZ4",
                "zstd" => "ZSTD",
                other => other,
            };
            format!(
                "compression {codec} is not supported by this build (it reads \
                 {READABLE_CODECS}); re-save the file with one of those"
            )
        }
        None => clip(&text),
    };
    DataError::Parquet {
        path: path.to_path_buf(),
        message,
    }
}

/// At most [`MAX_MESSAGE`] characters of `text`.
fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_labelled, parse_texts, read_labelled, read_texts, Format};
    use super::*;
    use parquet::basic::Compression;
    use parquet::data_type::{
        BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type,
    };
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    /// The values of one column; `None` is null.
    enum Col<'a> {
        Str(Vec<Option<&'a str>>),
        I32(Vec<Option<i32>>),
        I64(Vec<Option<i64>>),
        F64(Vec<Option<f64>>),
        Bool(Vec<Option<bool>>),
    }

    fn split<T: Clone>(v: &[Option<T>]) -> (Vec<T>, Vec<i16>) {
        let values = v.iter().flatten().cloned().collect();
        let defs = v.iter().map(|x| i16::from(x.is_some())).collect();
        (values, defs)
    }

    /// A snappy-compressed Parquet file of `schema`, one row group per item of `groups`, each a
    /// list of columns in schema order.
    fn parquet_file(schema: &str, groups: &[Vec<Col<'_>>]) -> Vec<u8> {
        parquet_file_with(Compression::SNAPPY, schema, groups)
    }

    /// The codecs this build reads.
    fn readable() -> [Compression; 4] {
        [
            Compression::UNCOMPRESSED,
            Compression::SNAPPY,
            Compression::GZIP(Default::default()),
            Compression::ZSTD(Default::default()),
        ]
    }

    /// [`parquet_file`] with every column chunk compressed by `codec`.
    fn parquet_file_with(codec: Compression, schema: &str, groups: &[Vec<Col<'_>>]) -> Vec<u8> {
        let schema = Arc::new(parse_message_type(schema).unwrap());
        let props = Arc::new(WriterProperties::builder().set_compression(codec).build());
        let mut buf = Vec::new();
        let mut writer = SerializedFileWriter::new(&mut buf, schema, props).unwrap();
        for group in groups {
            let mut rg = writer.next_row_group().unwrap();
            let mut cols = group.iter();
            while let Some(mut w) = rg.next_column().unwrap() {
                match cols.next().unwrap() {
                    Col::Str(v) => {
                        let (values, defs) = split(v);
                        let values: Vec<ByteArray> =
                            values.into_iter().map(ByteArray::from).collect();
                        w.typed::<ByteArrayType>()
                            .write_batch(&values, Some(&defs), None)
                            .unwrap();
                    }
                    Col::I32(v) => {
                        let (values, defs) = split(v);
                        w.typed::<Int32Type>()
                            .write_batch(&values, Some(&defs), None)
                            .unwrap();
                    }
                    Col::I64(v) => {
                        let (values, defs) = split(v);
                        w.typed::<Int64Type>()
                            .write_batch(&values, Some(&defs), None)
                            .unwrap();
                    }
                    Col::F64(v) => {
                        let (values, defs) = split(v);
                        w.typed::<DoubleType>()
                            .write_batch(&values, Some(&defs), None)
                            .unwrap();
                    }
                    Col::Bool(v) => {
                        let (values, defs) = split(v);
                        w.typed::<BoolType>()
                            .write_batch(&values, Some(&defs), None)
                            .unwrap();
                    }
                }
                w.close().unwrap();
            }
            rg.close().unwrap();
        }
        writer.close().unwrap();
        buf
    }

    const SCHEMA: &str = "message schema {
        OPTIONAL BYTE_ARRAY text (UTF8);
        OPTIONAL INT64 label;
        OPTIONAL DOUBLE score;
        OPTIONAL BYTE_ARRAY city (STRING);
        OPTIONAL BOOLEAN flag;
        OPTIONAL BYTE_ARRAY name (STRING);
    }";

    /// Three rows over two row groups.
    fn sample() -> Vec<u8> {
        parquet_file(
            SCHEMA,
            &[
                vec![
                    Col::Str(vec![Some("héllo, world"), Some("多语言 text")]),
                    Col::I64(vec![Some(1), Some(-20)]),
                    Col::F64(vec![Some(0.5), None]),
                    Col::Str(vec![Some("Oslo"), Some("")]),
                    Col::Bool(vec![Some(true), Some(false)]),
                    Col::Str(vec![Some("a"), Some("b")]),
                ],
                vec![
                    Col::Str(vec![Some("third")]),
                    Col::I64(vec![Some(3)]),
                    Col::F64(vec![Some(-1e3)]),
                    Col::Str(vec![None]),
                    Col::Bool(vec![None]),
                    Col::Str(vec![Some("c")]),
                ],
            ],
        )
    }

    #[test]
    fn reads_texts_labels_and_side_columns_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.parquet");
        std::fs::write(&path, sample()).unwrap();
        assert_eq!(
            read_texts(&path, None, "text").unwrap(),
            ["héllo, world", "多语言 text", "third"]
        );
        let cols = [
            "flag".to_string(),
            "score".into(),
            "city".into(),
            "flag".into(),
        ];
        let l = read_labelled(&path, None, "text", "label", &cols).unwrap();
        assert_eq!(l.texts, ["héllo, world", "多语言 text", "third"]);
        assert_eq!(l.labels, ["1", "-20", "3"]);
        assert_eq!(l.lines, [1, 2, 3]);
        assert_eq!(
            l.columns,
            [
                (
                    "flag".to_string(),
                    vec![Cell::Number(1.0), Cell::Number(0.0), Cell::Missing]
                ),
                (
                    "score".to_string(),
                    vec![Cell::Number(0.5), Cell::Missing, Cell::Number(-1e3)]
                ),
                (
                    "city".to_string(),
                    vec![
                        Cell::Text("Oslo".into()),
                        Cell::Text(String::new()),
                        Cell::Missing
                    ]
                ),
            ]
        );
        // String labels, and the text column asked again as a side column.
        let l = read_labelled(
            &path,
            Some(Format::Parquet),
            "text",
            "name",
            &["text".into()],
        )
        .unwrap();
        assert_eq!(l.labels, ["a", "b", "c"]);
        assert_eq!(l.columns[0].1[2], Cell::Text("third".into()));
    }

    #[test]
    fn reads_every_integer_width_as_labels() {
        let bytes = parquet_file(
            "message m { REQUIRED BYTE_ARRAY text (UTF8); REQUIRED INT32 a (INT_8);
                         REQUIRED INT32 b (UINT_32); REQUIRED INT64 c (UINT_64); }",
            &[vec![
                Col::Str(vec![Some("x")]),
                Col::I32(vec![Some(-5)]),
                Col::I32(vec![Some(-1)]),
                Col::I64(vec![Some(-1)]),
            ]],
        );
        let p = Path::new("ints.parquet");
        let label = |col: &str| parse_labelled(&bytes, p, Format::Parquet, "text", col, &[]);
        assert_eq!(label("a").unwrap().labels, ["-5"]);
        assert_eq!(label("b").unwrap().labels, ["4294967295"]);
        assert_eq!(label("c").unwrap().labels, ["18446744073709551615"]);
    }

    #[test]
    fn missing_columns_list_the_available_ones() {
        let bytes = sample();
        let p = Path::new("d.parquet");
        let e = parse_texts(&bytes, p, Format::Parquet, "body")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "d.parquet: no column \"body\" (columns: text, label, score, city, flag, name)"
        );
        let e = parse_labelled(&bytes, p, Format::Parquet, "text", "label", &["age".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no column \"age\""), "{e}");
    }

    #[test]
    fn nulls_in_text_or_label_name_file_row_and_column() {
        let bytes = parquet_file(
            "message m { OPTIONAL BYTE_ARRAY text (UTF8); OPTIONAL INT32 label; }",
            &[
                vec![Col::Str(vec![Some("a")]), Col::I32(vec![Some(1)])],
                vec![
                    Col::Str(vec![Some("b"), None]),
                    Col::I32(vec![Some(2), Some(3)]),
                ],
            ],
        );
        let p = Path::new("n.parquet");
        let e = parse_texts(&bytes, p, Format::Parquet, "text")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "n.parquet: row 3: column \"text\" is null");
        let bytes = parquet_file(
            "message m { OPTIONAL BYTE_ARRAY text (UTF8); OPTIONAL INT32 label; }",
            &[vec![
                Col::Str(vec![Some("a"), Some("b")]),
                Col::I32(vec![None, Some(3)]),
            ]],
        );
        let e = parse_labelled(&bytes, p, Format::Parquet, "text", "label", &[])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "n.parquet: row 1: column \"label\" is null");
    }

    #[test]
    fn wrong_column_types_are_named() {
        let bytes = parquet_file(
            "message m { REQUIRED BYTE_ARRAY text (UTF8); REQUIRED BYTE_ARRAY raw;
                         REQUIRED DOUBLE x; REQUIRED INT64 t (TIMESTAMP_MILLIS); }",
            &[vec![
                Col::Str(vec![Some("a")]),
                Col::Str(vec![Some("b")]),
                Col::F64(vec![Some(1.0)]),
                Col::I64(vec![Some(0)]),
            ]],
        );
        let p = Path::new("t.parquet");
        let e = parse_texts(&bytes, p, Format::Parquet, "raw")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.parquet: column \"raw\" holds BYTE_ARRAY (binary")
                && e.ends_with("expected strings"),
            "{e}"
        );
        let e = parse_texts(&bytes, p, Format::Parquet, "x")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.parquet: column \"x\" holds DOUBLE, expected strings");
        let e = parse_labelled(&bytes, p, Format::Parquet, "text", "x", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected strings, integers or booleans"), "{e}");
        let e = parse_labelled(&bytes, p, Format::Parquet, "text", "text", &["t".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("column \"t\" holds INT64 (TIMESTAMP_MILLIS)") && e.contains("numbers"),
            "{e}"
        );
        // A double side column is fine.
        let l = parse_labelled(&bytes, p, Format::Parquet, "text", "text", &["x".into()]).unwrap();
        assert_eq!(l.columns[0].1, [Cell::Number(1.0)]);
    }

    #[test]
    fn corrupt_and_truncated_files_are_errors_naming_the_file() {
        let good = sample();
        let p = Path::new("bad.parquet");
        let check = |bytes: &[u8]| match parse_labelled(
            bytes,
            p,
            Format::Parquet,
            "text",
            "label",
            &["score".into()],
        ) {
            Ok(_) => {}
            Err(e) => {
                let e = e.to_string();
                assert!(e.starts_with("bad.parquet: "), "{e}");
            }
        };
        for bytes in [
            &b""[..],
            b"PAR1",
            b"not a parquet file at all",
            &good[..good.len() - 1],
            &good[..good.len() / 2],
            &good[4..],
        ] {
            let e = parse_texts(bytes, p, Format::Parquet, "text")
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("bad.parquet: cannot read Parquet data: "),
                "{e}"
            );
        }
        // Every single-byte corruption reads or fails cleanly (some of them make the parquet
        // crate panic: "column start and length should not be negative", "Decoder for dict
        // should have been set").
        for i in 0..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bytes = good.clone();
                bytes[i] ^= flip;
                check(&bytes);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn round_trips(rows in proptest::collection::vec(
            (proptest::prelude::any::<String>(), proptest::prelude::any::<i64>(),
             proptest::option::of(-1e9..1e9f64)),
            0..20,
        ), codec in proptest::sample::select(readable().to_vec())) {
            let bytes = parquet_file_with(
                codec,
                "message m { REQUIRED BYTE_ARRAY text (UTF8); REQUIRED INT64 label;
                             OPTIONAL DOUBLE x; }",
                &[vec![
                    Col::Str(rows.iter().map(|r| Some(r.0.as_str())).collect()),
                    Col::I64(rows.iter().map(|r| Some(r.1)).collect()),
                    Col::F64(rows.iter().map(|r| r.2).collect()),
                ]],
            );
            let l = parse_labelled(&bytes, Path::new("p.parquet"), Format::Parquet, "text", "label", &["x".into()]).unwrap();
            let texts: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
            let labels: Vec<String> = rows.iter().map(|r| r.1.to_string()).collect();
            let cells: Vec<Cell> = rows.iter().map(|r| r.2.map_or(Cell::Missing, Cell::Number)).collect();
            proptest::prop_assert_eq!(l.texts, texts);
            proptest::prop_assert_eq!(l.labels, labels);
            proptest::prop_assert_eq!(l.lines, (1..=rows.len()).collect::<Vec<_>>());
            proptest::prop_assert_eq!(&l.columns[0].1, &cells);
        }
    }

    /// `bytes` (a Parquet file) with a footer claiming that every column chunk is compressed
    /// with `codec`; the pages are left as they are.
    fn claiming(bytes: &[u8], codec: Compression) -> Vec<u8> {
        use parquet::file::metadata::ParquetMetaDataWriter;
        let reader = SerializedFileReader::new(bytes::Bytes::copy_from_slice(bytes)).unwrap();
        let meta = reader.metadata().clone();
        let groups = meta
            .row_groups()
            .iter()
            .map(|g| {
                let chunks = g
                    .columns()
                    .iter()
                    .map(|c| {
                        c.clone()
                            .into_builder()
                            .set_compression(codec)
                            .build()
                            .unwrap()
                    })
                    .collect();
                g.clone()
                    .into_builder()
                    .set_column_metadata(chunks)
                    .build()
                    .unwrap()
            })
            .collect();
        let meta = meta.into_builder().set_row_groups(groups).build();
        let tail = bytes.len() - 8;
        let footer = u32::from_le_bytes(bytes[tail..tail + 4].try_into().unwrap()) as usize;
        let mut out = bytes[..tail - footer].to_vec();
        ParquetMetaDataWriter::new(&mut out, &meta)
            .finish()
            .unwrap();
        out
    }

    /// `n` texts (repetitive, so every codec shrinks them) and string labels.
    fn texts_and_labels(n: usize) -> (Vec<String>, Vec<String>) {
        let texts = (0..n)
            .map(|i| {
                format!(
                    "review {i}: the plot was {} — ünïcödé, 多语言",
                    ["good", "bad"][i % 2]
                )
            })
            .collect();
        let labels = (0..n)
            .map(|i| ["pos", "neg", "mixed"][i % 3].to_string())
            .collect();
        (texts, labels)
    }

    const TEXT_LABEL: &str =
        "message m { REQUIRED BYTE_ARRAY text (UTF8); OPTIONAL BYTE_ARRAY label (UTF8); }";

    fn text_label_file(codec: Compression, texts: &[String], labels: &[String]) -> Vec<u8> {
        parquet_file_with(
            codec,
            TEXT_LABEL,
            &[vec![
                Col::Str(texts.iter().map(|t| Some(t.as_str())).collect()),
                Col::Str(labels.iter().map(|l| Some(l.as_str())).collect()),
            ]],
        )
    }

    #[test]
    fn files_in_every_readable_codec_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (texts, labels) = texts_and_labels(300);
        let plain = text_label_file(Compression::UNCOMPRESSED, &texts, &labels).len();
        for (i, codec) in readable().into_iter().enumerate() {
            let bytes = text_label_file(codec, &texts, &labels);
            // The chunks are written with `codec`, and all but the plain file are smaller.
            let reader = SerializedFileReader::new(bytes::Bytes::from(bytes.clone())).unwrap();
            for chunk in reader.metadata().row_groups()[0].columns() {
                let same =
                    std::mem::discriminant(&chunk.compression()) == std::mem::discriminant(&codec);
                assert!(same, "{codec:?}: {:?}", chunk.compression());
            }
            assert!(
                codec == Compression::UNCOMPRESSED || bytes.len() < plain,
                "{codec:?}"
            );
            let path = dir.path().join(format!("codec{i}.parquet"));
            std::fs::write(&path, &bytes).unwrap();
            let l = read_labelled(&path, None, "text", "label", &[]).unwrap();
            assert_eq!(l.texts, texts, "{codec:?}");
            assert_eq!(l.labels, labels, "{codec:?}");
            assert_eq!(read_texts(&path, None, "text").unwrap(), texts, "{codec:?}");
        }
    }

    #[test]
    fn an_unreadable_codec_is_named_with_the_file_and_column() {
        let (texts, labels) = texts_and_labels(5);
        let plain = text_label_file(Compression::UNCOMPRESSED, &texts, &labels);
        let p = Path::new("c.parquet");
        let read = |bytes: &[u8]| parse_labelled(bytes, p, Format::Parquet, "text", "label", &[]);
        // The footer rewrite itself keeps the file readable.
        let same = claiming(&plain, Compression::UNCOMPRESSED);
        assert_eq!(read(&same).unwrap().texts, texts);
        for (codec, name) in [
            (Compression::BROTLI(Default::default()), "BROTLI"),
            (Compression::LZ4, "LZ4"),
            (Compression::LZ4_RAW, "LZ4_RAW"),
            (Compression::LZO, "LZO"),
        ] {
            let e = read(&claiming(&plain, codec)).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "c.parquet: cannot read Parquet data: column \"text\" is compressed with \
                     {name}, which this build cannot decompress (it reads uncompressed, SNAPPY, \
                     GZIP or ZSTD); re-save the file with one of those"
                )
            );
            // A column that is not read may use any codec: only "label" is asked for here.
            let e = parse_texts(&claiming(&plain, codec), p, Format::Parquet, "label")
                .unwrap_err()
                .to_string();
            assert!(e.contains("column \"label\" is compressed with"), "{e}");
        }
    }

    #[test]
    fn panics_are_caught_quietly() {
        let r = quietly(|| -> u8 { panic!("boom") });
        assert_eq!(r.unwrap_err().downcast_ref::<&str>(), Some(&"boom"));
        assert!(!QUIET.with(std::cell::Cell::get));
        assert_eq!(quietly(|| 7).unwrap(), 7);
    }

    #[test]
    fn disabled_codecs_get_a_plain_message() {
        let e = parquet_error(
            Path::new("z.parquet"),
            ParquetError::General("Disabled feature at compile time: brotli".into()),
        )
        .to_string();
        assert_eq!(
            e,
            "z.parquet: cannot read Parquet data: compression BROTLI is not supported by this \
             build (it reads uncompressed, SNAPPY, GZIP or ZSTD); re-save the file with one of \
             those"
        );
        assert_eq!(clip(&"é".repeat(400)).chars().count(), MAX_MESSAGE + 1);
    }
}
