//! The CLI parses, calls `lmfuse-pipeline` and prints; the pipelines are written as short
//! functions. Both are held to functions of at most 80 lines (from `fn` to its closing
//! brace), so a job's logic cannot grow back into one long `run`.

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 80;

/// The `.rs` files under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Whether `line` (without its indentation) opens a function.
fn opens_fn(line: &str) -> bool {
    let mut rest = line;
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    rest.starts_with("fn ")
}

/// `(line, name, length)` of every function in `source` longer than [`MAX_LINES`]. A body
/// ends at the first line that is its indentation followed by `}` (rustfmt's layout).
fn long_functions(source: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut long = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let body = line.trim_start();
        if !opens_fn(body) || body.ends_with(';') {
            continue;
        }
        let indent = &line[..line.len() - body.len()];
        let close = format!("{indent}}}");
        let Some(end) = lines[i..].iter().position(|l| *l == close) else {
            continue;
        };
        if end + 1 > MAX_LINES {
            let name = body.split("fn ").nth(1).unwrap_or("");
            let name = name.split(['(', '<']).next().unwrap_or("").to_string();
            long.push((i + 1, name, end + 1));
        }
    }
    long
}

fn assert_short(crate_dir: &Path) {
    let mut long = Vec::new();
    for file in rust_files(&crate_dir.join("src")) {
        let source = std::fs::read_to_string(&file).unwrap();
        for (line, name, n) in long_functions(&source) {
            long.push(format!("{}:{line} {name}: {n} lines", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "functions longer than {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_cli_has_no_function_longer_than_80_lines() {
    assert_short(Path::new(env!("CARGO_MANIFEST_DIR")));
}

#[test]
fn the_pipelines_have_no_function_longer_than_80_lines() {
    assert_short(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../lmfuse-pipeline"));
}

#[test]
fn the_check_finds_a_long_function() {
    let body = "    let x = 1;\n".repeat(MAX_LINES);
    let source = format!("fn short() {{\n}}\n\npub fn long() {{\n{body}}}\n");
    assert_eq!(
        long_functions(&source),
        [(4, "long".to_string(), MAX_LINES + 2)]
    );
}
