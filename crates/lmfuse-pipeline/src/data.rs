//! Reading labelled data into train, dev and test splits, and unlabelled texts to predict.

use crate::ensure;
use crate::error::{Context, Result};
use lmfuse_core::LabelSet;
use lmfuse_data::{Cell, Format, LabelledTexts, SideColumns};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Which columns hold text, label and side features, and the files' format.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSpec {
    /// Format instead of guessing from the extension.
    pub format: Option<Format>,
    /// Field (JSONL) or column (CSV/TSV/Parquet) holding the text.
    pub text_col: String,
    /// Field or column holding the label.
    pub label_col: String,
    /// Side columns for the `tab` feature block.
    pub feature_cols: Vec<String>,
}

impl Default for DataSpec {
    fn default() -> Self {
        DataSpec {
            format: None,
            text_col: "text".to_string(),
            label_col: "label".to_string(),
            feature_cols: Vec::new(),
        }
    }
}

/// Where train, dev and test come from: files, or stratified 10% slices of train.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitPlan {
    /// Training data.
    pub train: PathBuf,
    /// Dev data; `None`: a stratified 10% of train (or no dev, see [`SplitPlan::carve_dev`]).
    pub dev: Option<PathBuf>,
    /// Test data; `None`: a stratified 10% of train.
    pub test: Option<PathBuf>,
    /// Seed of the slices.
    pub seed: u64,
    /// Carve a dev slice when no dev file is given (a command that chooses by
    /// cross-validation on train would only report dev, so it keeps the rows in train).
    pub carve_dev: bool,
    /// Carve a test slice when no test file is given (the Python package's `fit` trains on
    /// every row but dev and evaluates nothing).
    pub carve_test: bool,
}

impl SplitPlan {
    /// Train from `train`, dev and test carved from it with seed 13.
    pub fn carved(train: impl Into<PathBuf>) -> Self {
        SplitPlan {
            train: train.into(),
            dev: None,
            test: None,
            seed: 13,
            carve_dev: true,
            carve_test: true,
        }
    }
}

/// What the data looked like.
#[derive(Debug, Clone, Serialize)]
pub struct DataReport {
    /// Training rows (after carving).
    pub train: usize,
    /// Dev rows.
    pub dev: usize,
    /// Test rows.
    pub test: usize,
    /// Where dev came from.
    pub dev_source: String,
    /// Where test came from.
    pub test_source: String,
    /// Rows per label in train.
    pub label_counts: BTreeMap<String, usize>,
    /// Texts that are empty or blank, over all splits.
    pub empty_texts: usize,
    /// Repeated texts in train.
    pub duplicate_texts: usize,
    /// Test texts that also occur in train.
    pub train_test_overlap: usize,
}

/// Train, dev and test rows with their class indices, and what they looked like.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Training rows.
    pub train: LabelledTexts,
    /// Dev rows (empty when none were asked for).
    pub dev: LabelledTexts,
    /// Test rows.
    pub test: LabelledTexts,
    /// The classes, from train.
    pub labels: LabelSet,
    /// Class of each training row.
    pub y_train: Vec<usize>,
    /// Class of each dev row.
    pub y_dev: Vec<usize>,
    /// Class of each test row.
    pub y_test: Vec<usize>,
    /// What the data looked like.
    pub report: DataReport,
    /// The training file's name, for messages and cards.
    pub train_name: String,
}

/// Reads a labelled file with the text, label and `feature_cols` columns of `data`.
pub fn read_labelled(
    path: &Path,
    data: &DataSpec,
    feature_cols: &[String],
) -> Result<LabelledTexts> {
    Ok(lmfuse_data::read_labelled(
        path,
        data.format,
        &data.text_col,
        &data.label_col,
        feature_cols,
    )?)
}

/// The side columns of several row sets, concatenated in order.
pub fn concat_columns(parts: &[&LabelledTexts]) -> Vec<(String, Vec<Cell>)> {
    let Some(first) = parts.first() else {
        return Vec::new();
    };
    first
        .columns
        .iter()
        .enumerate()
        .map(|(c, (name, _))| {
            let cells = parts
                .iter()
                .flat_map(|p| p.columns[c].1.iter().cloned())
                .collect();
            (name.clone(), cells)
        })
        .collect()
}

/// The classes of train, checked: rows, and at least two classes.
fn train_labels(train: &LabelledTexts, name: &str) -> Result<LabelSet> {
    ensure!(!train.texts.is_empty(), "{name} holds no examples");
    let labels = LabelSet::from_labels(train.labels.iter().map(String::as_str));
    ensure!(
        labels.len() >= 2,
        "{name}: every example has the label {:?}; a classifier needs at least two classes",
        labels.names()[0]
    );
    Ok(labels)
}

/// Labelled rows already in memory (the Python package's `fit`), split as `plan` says; its
/// `train` path only names the rows in messages.
pub fn splits_from_rows(rows: LabelledTexts, plan: &SplitPlan, data: &DataSpec) -> Result<Splits> {
    split_rows(rows, plan, data)
}

/// Reads the training file and the dev/test files, or carves stratified 10% slices of train
/// for the ones not given (test first, then dev; seeded).
pub fn load_splits(plan: &SplitPlan, data: &DataSpec) -> Result<Splits> {
    let train = read_labelled(&plan.train, data, &data.feature_cols)?;
    split_rows(train, plan, data)
}

fn split_rows(mut train: LabelledTexts, plan: &SplitPlan, data: &DataSpec) -> Result<Splits> {
    let train_name = plan.train.display().to_string();
    let labels = train_labels(&train, &train_name)?;
    let y_all = lmfuse_train::encode_labels(&labels, &train.labels, &train_name, &train.lines)?;

    // Held-out parts: given files, else stratified slices of train (test first, then dev).
    let mut remaining: Vec<usize> = (0..train.texts.len()).collect();
    let mut carve = |seed: u64| -> LabelledTexts {
        let y: Vec<usize> = remaining.iter().map(|&i| y_all[i]).collect();
        let (keep, held) = lmfuse_data::stratified_split(&y, 0.1, seed);
        let held_rows: Vec<usize> = held.iter().map(|&k| remaining[k]).collect();
        remaining = keep.iter().map(|&k| remaining[k]).collect();
        train.select(&held_rows)
    };
    let seed = plan.seed;
    let (test, test_source) = match &plan.test {
        Some(p) => (
            read_labelled(p, data, &data.feature_cols)?,
            p.display().to_string(),
        ),
        None if plan.carve_test => (carve(seed), format!("10% of {train_name} (seed {seed})")),
        // No rows, but train's side columns (empty), as every split has them.
        None => (train.select(&[]), "none".to_string()),
    };
    let (dev, dev_source) = match &plan.dev {
        Some(p) => (
            read_labelled(p, data, &data.feature_cols)?,
            p.display().to_string(),
        ),
        None if plan.carve_dev => (
            carve(seed.wrapping_add(1)),
            format!("10% of {train_name} (seed {})", seed.wrapping_add(1)),
        ),
        None => (train.select(&[]), "none".to_string()),
    };
    if remaining.len() != train.texts.len() {
        train = train.select(&remaining);
    }
    ensure!(
        !dev.texts.is_empty() || (!plan.carve_dev && plan.dev.is_none()),
        "the dev set is empty"
    );
    ensure!(
        !test.texts.is_empty() || (!plan.carve_test && plan.test.is_none()),
        "the test set is empty"
    );
    let y_train = lmfuse_train::encode_labels(&labels, &train.labels, &train_name, &train.lines)?;
    let y_dev = lmfuse_train::encode_labels(&labels, &dev.labels, &dev_source, &dev.lines)?;
    let y_test = lmfuse_train::encode_labels(&labels, &test.labels, &test_source, &test.lines)?;
    let report = data_report(&train, &dev, &test, dev_source, test_source);
    Ok(Splits {
        train,
        dev,
        test,
        labels,
        y_train,
        y_dev,
        y_test,
        report,
        train_name,
    })
}

fn data_report(
    train: &LabelledTexts,
    dev: &LabelledTexts,
    test: &LabelledTexts,
    dev_source: String,
    test_source: String,
) -> DataReport {
    let mut label_counts = BTreeMap::new();
    for l in &train.labels {
        *label_counts.entry(l.clone()).or_insert(0) += 1;
    }
    let train_set: HashSet<&str> = train.texts.iter().map(String::as_str).collect();
    DataReport {
        train: train.texts.len(),
        dev: dev.texts.len(),
        test: test.texts.len(),
        dev_source,
        test_source,
        label_counts,
        empty_texts: train
            .texts
            .iter()
            .chain(&dev.texts)
            .chain(&test.texts)
            .filter(|t| t.trim().is_empty())
            .count(),
        duplicate_texts: train.texts.len() - train_set.len(),
        train_test_overlap: test
            .texts
            .iter()
            .filter(|t| train_set.contains(t.as_str()))
            .count(),
    }
}

/// Reads the texts of `input` (`-` is standard input, plain text unless `format`).
pub fn read_input(input: &Path, format: Option<Format>, text_col: &str) -> Result<Vec<String>> {
    let texts = if input == Path::new("-") {
        lmfuse_data::read_texts_from(
            std::io::stdin().lock(),
            Path::new("<stdin>"),
            format.unwrap_or(Format::Text),
            text_col,
        )?
    } else {
        lmfuse_data::read_texts(input, format, text_col)?
    };
    Ok(texts)
}

/// Texts and side columns of a file or of standard input (`-`, JSONL unless `format`).
pub fn read_input_with_columns(
    input: &Path,
    format: Option<Format>,
    text_col: &str,
    feature_cols: &[String],
) -> Result<(Vec<String>, SideColumns)> {
    let (bytes, name, format) = if input == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)?;
        (
            bytes,
            PathBuf::from("<stdin>"),
            format.unwrap_or(Format::Jsonl),
        )
    } else {
        let bytes =
            std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
        let format = format.unwrap_or_else(|| Format::from_path(input));
        (bytes, input.to_path_buf(), format)
    };
    Ok(lmfuse_data::parse_texts_with_columns(
        &bytes,
        &name,
        format,
        text_col,
        feature_cols,
    )?)
}

/// Texts (and side columns) to predict: only the text column when the model reads no side
/// columns.
pub fn read_unlabelled(
    input: &Path,
    format: Option<Format>,
    text_col: &str,
    feature_cols: &[String],
) -> Result<(Vec<String>, SideColumns)> {
    if feature_cols.is_empty() {
        return Ok((read_input(input, format, text_col)?, Vec::new()));
    }
    read_input_with_columns(input, format, text_col, feature_cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_not_asked_for_keep_the_side_columns() {
        let rows = LabelledTexts {
            texts: (0..6).map(|i| format!("text {i}")).collect(),
            labels: ["a", "b"].repeat(3).into_iter().map(String::from).collect(),
            lines: (1..=6).collect(),
            columns: vec![(
                "price".to_string(),
                (0..6).map(|i| Cell::Number(f64::from(i))).collect(),
            )],
        };
        let plan = SplitPlan {
            carve_dev: false,
            carve_test: false,
            ..SplitPlan::carved("<rows>")
        };
        let data = DataSpec {
            feature_cols: vec!["price".to_string()],
            ..DataSpec::default()
        };
        let s = splits_from_rows(rows, &plan, &data).unwrap();
        assert_eq!((s.train.len(), s.dev.len(), s.test.len()), (6, 0, 0));
        let all = concat_columns(&[&s.train, &s.dev, &s.test]);
        assert_eq!(all[0].0, "price");
        assert_eq!(all[0].1.len(), 6);
    }
}
