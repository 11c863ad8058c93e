//! Property tests of the readers: arbitrary bytes never panic, and what the writers of each
//! format produce reads back unchanged.

use lmfuse_data::read::parse_texts;
use lmfuse_data::Format;
use proptest::prelude::*;
use std::path::Path;

const FORMATS: [Format; 5] = [
    Format::Jsonl,
    Format::Csv,
    Format::Tsv,
    Format::Text,
    Format::Parquet,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for format in FORMATS {
            let _ = parse_texts(&bytes, Path::new("fuzz"), format, "text");
        }
    }

    #[test]
    fn parquet_like_noise_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256), footer in any::<u32>()) {
        // Magic at both ends and a footer length, so the reader gets past its first checks.
        let mut bytes = b"PAR1".to_vec();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&(footer % 300).to_le_bytes());
        bytes.extend_from_slice(b"PAR1");
        let e = parse_texts(&bytes, Path::new("fuzz.parquet"), Format::Parquet, "text").unwrap_err();
        prop_assert!(e.to_string().starts_with("fuzz.parquet: "));
    }

    #[test]
    fn structured_noise_never_panics(lines in proptest::collection::vec("[{}\\[\\]\",:a-z0-9 \\t\\r\\\\]{0,20}", 0..8)) {
        let bytes = lines.join("\n").into_bytes();
        for format in FORMATS {
            let _ = parse_texts(&bytes, Path::new("fuzz"), format, "text");
        }
    }

    #[test]
    fn jsonl_round_trips(texts in proptest::collection::vec(any::<String>(), 0..10)) {
        let body: String = texts
            .iter()
            .map(|t| serde_json::json!({ "text": t }).to_string() + "\n")
            .collect();
        let back = parse_texts(body.as_bytes(), Path::new("p.jsonl"), Format::Jsonl, "text").unwrap();
        prop_assert_eq!(back, texts);
    }

    #[test]
    fn csv_round_trips(texts in proptest::collection::vec("[^\u{feff}]{0,30}", 0..10)) {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["id", "text"]).unwrap();
        for (i, t) in texts.iter().enumerate() {
            w.write_record([i.to_string().as_str(), t.as_str()]).unwrap();
        }
        let bytes = w.into_inner().unwrap();
        let back = parse_texts(&bytes, Path::new("p.csv"), Format::Csv, "text").unwrap();
        prop_assert_eq!(back, texts);
    }

    #[test]
    fn text_lines_round_trip(texts in proptest::collection::vec("[^\n\r\u{feff}]{0,30}", 1..10)) {
        let body = texts.join("\n") + "\n";
        let back = parse_texts(body.as_bytes(), Path::new("p.txt"), Format::Text, "text").unwrap();
        prop_assert_eq!(back, texts);
    }
}
