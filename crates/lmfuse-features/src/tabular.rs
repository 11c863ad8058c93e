//! Side columns (`--feature-cols`) as dense features, fit on the training rows only.
//!
//! [`TabularParams`] → [`TabularParams::fit`] → [`Tabular`], whose [`Tabular::transform`] gives
//! one dense row per record. Each column is either
//!
//! * **numeric** — every non-missing training cell is a [`Cell::Number`]: standardised with the
//!   training mean and (population) standard deviation, as scikit-learn's `StandardScaler`
//!   (a constant column gets scale 1); a missing cell becomes 0, i.e. the mean; or
//! * **categorical** — otherwise: one-hot over the values seen in training, sorted; numbers count
//!   as their canonical decimal text (`3.0` → `"3"`, `-0.0` → `"0"`, `0.5` → `"0.5"`), so a CSV
//!   `3` and a JSON `"3"` are the same category; unknown and missing values give all zeros.
//!
//! A column with no value at all in training is numeric with mean 0 and scale 1 (always 0).
//! NaN and infinite numbers are rejected, naming the column and row. The fitted state is a
//! JSON-able [`TabularSpec`] (column kinds and categories) plus two f32 tensors, `mean` and
//! `std` (one value per numeric column, in column order), checked again by
//! [`Tabular::from_parts`].

use lmfuse_core::{DenseMatrix, Tensor};
pub use lmfuse_data::Cell;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Name of the tensor of numeric columns' training means.
pub const MEAN: &str = "mean";
/// Name of the tensor of numeric columns' training scales (standard deviations, 1 if constant).
pub const STD: &str = "std";

/// Hyperparameters of the side-column featuriser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TabularParams {
    /// Most distinct values a categorical column may have in training (default 1,000): one-hot
    /// columns are dense, so a free-text or id column would blow up the matrix; such a column is
    /// an error rather than a silent memory hog.
    pub max_categories: usize,
}

impl Default for TabularParams {
    fn default() -> Self {
        Self {
            max_categories: 1000,
        }
    }
}

/// Why side columns could not be fit, transformed or restored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TabularError {
    /// A hyperparameter is out of bounds.
    #[error("invalid side-column parameter: {0}")]
    Param(String),
    /// No column, or no row, to fit on.
    #[error("no side columns (or no rows) to fit on")]
    Empty,
    /// Two columns share a name.
    #[error("side column {column:?} is given twice")]
    Duplicate {
        /// The name.
        column: String,
    },
    /// Columns of different lengths.
    #[error("side column {column:?} has {len} values but other columns have {rows}")]
    Length {
        /// The column.
        column: String,
        /// Its length.
        len: usize,
        /// The others' length.
        rows: usize,
    },
    /// A column seen in training is not among the columns to transform.
    #[error("side column {column:?} is missing (columns given: {available})")]
    MissingColumn {
        /// The column.
        column: String,
        /// The columns given.
        available: String,
    },
    /// A number is NaN or infinite, or overflows f32 once standardised.
    #[error("side column {column:?}, row {row}: {value} is not a finite number")]
    NonFinite {
        /// The column.
        column: String,
        /// 1-based position in the column.
        row: usize,
        /// The value (standardised, when the overflow happened there).
        value: f64,
    },
    /// Text in a column that was numeric in training.
    #[error(
        "side column {column:?}, row {row}: {value:?} is not a number (the column was numeric \
         in training)"
    )]
    NotNumeric {
        /// The column.
        column: String,
        /// 1-based position in the column.
        row: usize,
        /// The text found.
        value: String,
    },
    /// A categorical column with more distinct values than allowed.
    #[error(
        "side column {column:?} has {count} distinct values, more than the {limit} a \
         categorical column may have (is it free text or an id?)"
    )]
    TooManyCategories {
        /// The column.
        column: String,
        /// Distinct values in training.
        count: usize,
        /// [`TabularParams::max_categories`].
        limit: usize,
    },
    /// Stored state that is inconsistent.
    #[error("stored side-column state is invalid: {0}")]
    Stored(String),
}

/// How one column is encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnSpec {
    /// Standardised number (one feature).
    Numeric {
        /// Column name.
        name: String,
    },
    /// One-hot category (one feature per category).
    Categorical {
        /// Column name.
        name: String,
        /// The categories, sorted, without repeats.
        categories: Vec<String>,
    },
}

impl ColumnSpec {
    /// The column name.
    pub fn name(&self) -> &str {
        match self {
            ColumnSpec::Numeric { name } | ColumnSpec::Categorical { name, .. } => name,
        }
    }

    /// Number of features it gives.
    pub fn width(&self) -> usize {
        match self {
            ColumnSpec::Numeric { .. } => 1,
            ColumnSpec::Categorical { categories, .. } => categories.len(),
        }
    }
}

/// The JSON part of a fitted [`Tabular`]: the columns in feature order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TabularSpec {
    /// The columns, in the order their features appear.
    pub columns: Vec<ColumnSpec>,
}

/// Fitted side-column featuriser.
#[derive(Debug, Clone, PartialEq)]
pub struct Tabular {
    spec: TabularSpec,
    mean: Vec<f32>,
    std: Vec<f32>,
    /// Per column: (offset of its first feature, index of its statistics for a numeric column).
    layout: Vec<(usize, usize)>,
    /// Per categorical column (by column index): category → position among its categories.
    index: HashMap<usize, HashMap<String, usize>>,
    dim: usize,
}

impl TabularParams {
    /// Validates the hyperparameters.
    pub fn check(&self) -> Result<(), TabularError> {
        if self.max_categories == 0 {
            return Err(TabularError::Param(
                "max_categories must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Learns each column's kind and statistics from the training rows. `columns` is
    /// (name, one cell per row), as `lmfuse_data::LabelledTexts::columns`.
    pub fn fit(&self, columns: &[(String, Vec<Cell>)]) -> Result<Tabular, TabularError> {
        self.check()?;
        let rows = rows_of(columns.iter().map(|(n, c)| (n.as_str(), c.len())))?;
        if columns.is_empty() || rows == 0 {
            return Err(TabularError::Empty);
        }
        let mut seen = BTreeSet::new();
        let mut spec = Vec::with_capacity(columns.len());
        let (mut mean, mut std) = (Vec::new(), Vec::new());
        for (name, cells) in columns {
            if !seen.insert(name.as_str()) {
                return Err(TabularError::Duplicate {
                    column: name.clone(),
                });
            }
            for (i, cell) in cells.iter().enumerate() {
                if let Cell::Number(x) = cell {
                    if !x.is_finite() {
                        return Err(non_finite(name, i, *x));
                    }
                }
            }
            if cells.iter().any(|c| matches!(c, Cell::Text(_))) {
                let categories: BTreeSet<String> = cells.iter().filter_map(category).collect();
                if categories.len() > self.max_categories {
                    return Err(TabularError::TooManyCategories {
                        column: name.clone(),
                        count: categories.len(),
                        limit: self.max_categories,
                    });
                }
                spec.push(ColumnSpec::Categorical {
                    name: name.clone(),
                    categories: categories.into_iter().collect(),
                });
            } else {
                let (m, s) = standard_scale(name, cells)?;
                mean.push(m);
                std.push(s);
                spec.push(ColumnSpec::Numeric { name: name.clone() });
            }
        }
        Tabular::build(TabularSpec { columns: spec }, mean, std)
    }
}

/// The common length of the columns (0 when there is none).
fn rows_of<'a>(mut lens: impl Iterator<Item = (&'a str, usize)>) -> Result<usize, TabularError> {
    let Some((_, rows)) = lens.next() else {
        return Ok(0);
    };
    for (name, len) in lens {
        if len != rows {
            return Err(TabularError::Length {
                column: name.to_string(),
                len,
                rows,
            });
        }
    }
    Ok(rows)
}

fn non_finite(column: &str, i: usize, value: f64) -> TabularError {
    TabularError::NonFinite {
        column: column.to_string(),
        row: i + 1,
        value,
    }
}

/// Training mean and scale of a numeric column, as stored (f32). The scale is the population
/// standard deviation, or 1 when the column is constant up to rounding error (scikit-learn's
/// `_is_constant_feature` bound) or has no value.
fn standard_scale(name: &str, cells: &[Cell]) -> Result<(f32, f32), TabularError> {
    let values: Vec<f64> = cells
        .iter()
        .filter_map(|c| match c {
            Cell::Number(x) => Some(*x),
            _ => None,
        })
        .collect();
    if values.is_empty() {
        return Ok((0.0, 1.0));
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let eps = f64::EPSILON;
    let constant = var <= n * eps * var + (n * mean * eps).powi(2);
    let (mean, std) = (mean as f32, if constant { 1.0 } else { var.sqrt() as f32 });
    if !mean.is_finite() || !std.is_finite() {
        return Err(TabularError::Param(format!(
            "side column {name:?} holds values too large for f32 statistics"
        )));
    }
    // A deviation below f32's range rounds to 0; such a column is constant for our purposes.
    Ok((mean, if std > 0.0 { std } else { 1.0 }))
}

/// A cell as a category: text as written, numbers in canonical decimal, missing → none.
fn category(cell: &Cell) -> Option<String> {
    match cell {
        Cell::Text(s) => Some(s.clone()),
        Cell::Number(x) if *x == 0.0 => Some("0".into()),
        Cell::Number(x) => Some(x.to_string()),
        Cell::Missing => None,
    }
}

impl Tabular {
    /// Rebuilds a fitted featuriser from [`Tabular::spec`] and [`Tabular::to_tensors`]' output,
    /// checking that they fit together: unique column names, sorted distinct non-empty category
    /// lists, and f32 tensors [`MEAN`] and [`STD`] of shape `[numeric columns]` with finite
    /// values (scales positive). Tensors of other names are ignored.
    pub fn from_parts(
        spec: TabularSpec,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<Self, TabularError> {
        let numeric = spec
            .columns
            .iter()
            .filter(|c| matches!(c, ColumnSpec::Numeric { .. }))
            .count();
        let get = |name: &str| -> Result<Vec<f32>, TabularError> {
            let t = tensors
                .get(name)
                .ok_or_else(|| TabularError::Stored(format!("tensor {name:?} is missing")))?;
            let data = t.as_f32().ok_or_else(|| {
                TabularError::Stored(format!("tensor {name:?} is {}, not F32", t.dtype_name()))
            })?;
            if t.shape != [numeric] || data.len() != numeric {
                return Err(TabularError::Stored(format!(
                    "tensor {name:?} has shape {:?} ({} values), expected [{numeric}] (one per \
                     numeric column)",
                    t.shape,
                    data.len()
                )));
            }
            Ok(data.to_vec())
        };
        let (mean, std) = (get(MEAN)?, get(STD)?);
        Self::build(spec, mean, std)
    }

    /// Checks the parts and builds the lookup tables.
    fn build(spec: TabularSpec, mean: Vec<f32>, std: Vec<f32>) -> Result<Self, TabularError> {
        let bad = |m: String| Err(TabularError::Stored(m));
        if spec.columns.is_empty() {
            return bad("no column".into());
        }
        if let Some(i) = mean.iter().position(|m| !m.is_finite()) {
            return bad(format!("mean {i} is {}", mean[i]));
        }
        if let Some(i) = std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return bad(format!("std {i} is {}, expected a positive number", std[i]));
        }
        let mut names = BTreeSet::new();
        let (mut layout, mut index) = (Vec::with_capacity(spec.columns.len()), HashMap::new());
        let (mut dim, mut stat) = (0, 0);
        for (c, column) in spec.columns.iter().enumerate() {
            if !names.insert(column.name()) {
                return bad(format!("column {:?} appears twice", column.name()));
            }
            layout.push((dim, stat));
            match column {
                ColumnSpec::Numeric { .. } => stat += 1,
                ColumnSpec::Categorical { name, categories } => {
                    if categories.is_empty() {
                        return bad(format!("categorical column {name:?} has no category"));
                    }
                    if let Some(w) = categories.windows(2).find(|w| w[0] >= w[1]) {
                        return bad(format!(
                            "categories of {name:?} are not sorted and distinct ({:?} before {:?})",
                            w[0], w[1]
                        ));
                    }
                    index.insert(
                        c,
                        categories
                            .iter()
                            .enumerate()
                            .map(|(i, k)| (k.clone(), i))
                            .collect(),
                    );
                }
            }
            dim += column.width();
        }
        if stat != mean.len() || stat != std.len() {
            return bad(format!(
                "{stat} numeric columns but {} means and {} scales",
                mean.len(),
                std.len()
            ));
        }
        Ok(Self {
            spec,
            mean,
            std,
            layout,
            index,
            dim,
        })
    }

    /// The column kinds and categories (the JSON part of the stored state).
    pub fn spec(&self) -> &TabularSpec {
        &self.spec
    }

    /// The training means and scales of the numeric columns, as tensors [`MEAN`] and [`STD`].
    pub fn to_tensors(&self) -> BTreeMap<String, Tensor> {
        let n = self.mean.len();
        BTreeMap::from([
            (MEAN.to_string(), Tensor::f32(vec![n], self.mean.clone())),
            (STD.to_string(), Tensor::f32(vec![n], self.std.clone())),
        ])
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The name of each feature: the column name for a numeric column, `column=category` for
    /// each category of a categorical one.
    pub fn feature_names(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.dim);
        for column in &self.spec.columns {
            match column {
                ColumnSpec::Numeric { name } => out.push(name.clone()),
                ColumnSpec::Categorical { name, categories } => {
                    out.extend(categories.iter().map(|k| format!("{name}={k}")))
                }
            }
        }
        out
    }

    /// The feature rows of `columns`, which must hold every training column by name, in any
    /// order (others are ignored), all of one length.
    pub fn transform(&self, columns: &[(String, Vec<Cell>)]) -> Result<DenseMatrix, TabularError> {
        let by_name: HashMap<&str, &[Cell]> = columns
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_slice()))
            .collect();
        let mut picked = Vec::with_capacity(self.spec.columns.len());
        for column in &self.spec.columns {
            let cells =
                by_name
                    .get(column.name())
                    .copied()
                    .ok_or_else(|| TabularError::MissingColumn {
                        column: column.name().to_string(),
                        available: columns
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
            picked.push(cells);
        }
        let rows = rows_of(
            self.spec
                .columns
                .iter()
                .zip(&picked)
                .map(|(c, cells)| (c.name(), cells.len())),
        )?;
        let mut data = vec![0f32; rows * self.dim];
        for (c, (column, cells)) in self.spec.columns.iter().zip(picked).enumerate() {
            let (offset, stat) = self.layout[c];
            let name = column.name();
            for (r, cell) in cells.iter().enumerate() {
                if let Cell::Number(x) = cell {
                    if !x.is_finite() {
                        return Err(non_finite(name, r, *x));
                    }
                }
                let out = &mut data[r * self.dim + offset..][..column.width()];
                match column {
                    ColumnSpec::Numeric { .. } => match cell {
                        Cell::Number(x) => {
                            let z = (x - f64::from(self.mean[stat])) / f64::from(self.std[stat]);
                            out[0] = z as f32;
                            if !out[0].is_finite() {
                                return Err(non_finite(name, r, z));
                            }
                        }
                        Cell::Missing => {}
                        Cell::Text(s) => {
                            return Err(TabularError::NotNumeric {
                                column: name.to_string(),
                                row: r + 1,
                                value: s.clone(),
                            })
                        }
                    },
                    ColumnSpec::Categorical { .. } => {
                        if let Some(k) = category(cell).and_then(|k| self.index[&c].get(&k)) {
                            out[*k] = 1.0;
                        }
                    }
                }
            }
        }
        Ok(DenseMatrix::new(rows, self.dim, data).expect("rows × dim values"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, cells: Vec<Cell>) -> (String, Vec<Cell>) {
        (name.to_string(), cells)
    }

    fn n(x: f64) -> Cell {
        Cell::Number(x)
    }

    fn t(s: &str) -> Cell {
        Cell::Text(s.into())
    }

    fn train() -> Vec<(String, Vec<Cell>)> {
        vec![
            col("age", vec![n(20.0), n(30.0), Cell::Missing, n(40.0)]),
            col("city", vec![t("Oslo"), n(3.0), t("Bergen"), Cell::Missing]),
            col("const", vec![n(0.1), n(0.1), n(0.1), n(0.1)]),
            col("empty", vec![Cell::Missing; 4]),
        ]
    }

    #[test]
    fn standardises_numbers_and_one_hot_encodes_categories() {
        let tab = TabularParams::default().fit(&train()).unwrap();
        assert_eq!(tab.dim(), 6);
        assert_eq!(
            tab.feature_names(),
            [
                "age",
                "city=3",
                "city=Bergen",
                "city=Oslo",
                "const",
                "empty"
            ]
        );
        // Mean 30 and population std sqrt(200/3) = 8.1649658 over the three ages.
        let x = tab.transform(&train()).unwrap();
        let sd = (200f64 / 3.0).sqrt();
        let want: [[f64; 6]; 4] = [
            [-10.0 / sd, 0.0, 0.0, 1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
            [10.0 / sd, 0.0, 0.0, 0.0, 0.0, 0.0],
        ];
        for (r, row) in want.iter().enumerate() {
            for (c, w) in row.iter().enumerate() {
                assert!(
                    (x.row(r)[c] as f64 - w).abs() < 1e-6,
                    "{r},{c}: {:?}",
                    x.row(r)
                );
            }
        }
        assert_eq!(tab.to_tensors()[STD].as_f32().unwrap()[1], 1.0);
    }

    #[test]
    fn transform_takes_columns_in_any_order_and_ignores_unknown_values() {
        let tab = TabularParams::default().fit(&train()).unwrap();
        let test = vec![
            col("extra", vec![t("x"), t("y")]),
            col("empty", vec![n(5.0), Cell::Missing]),
            col("const", vec![n(1.1), Cell::Missing]),
            col("city", vec![t("3"), t("Paris")]),
            col("age", vec![Cell::Missing, n(30.0)]),
        ];
        let x = tab.transform(&test).unwrap();
        assert_eq!(x.rows(), 2);
        assert_eq!(x.row(0), [0.0, 1.0, 0.0, 0.0, 1.0, 5.0]);
        assert_eq!(x.row(1), [0.0; 6]);
        let e = tab.transform(&test[1..3]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "side column \"age\" is missing (columns given: empty, const)"
        );
    }

    #[test]
    fn bad_input_is_named_by_column_and_row() {
        let p = TabularParams::default();
        let e = p
            .fit(&[col("a", vec![n(1.0), n(f64::NAN)])])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "side column \"a\", row 2: NaN is not a finite number");
        let e = p
            .fit(&[col("a", vec![t("x"), n(f64::INFINITY)])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"a\", row 2: inf"), "{e}");
        let tab = p.fit(&[col("a", vec![n(1.0), n(2.0)])]).unwrap();
        let e = tab
            .transform(&[col("a", vec![n(1.0), t("n/a")])])
            .unwrap_err();
        assert_eq!(
            e,
            TabularError::NotNumeric {
                column: "a".into(),
                row: 2,
                value: "n/a".into()
            }
        );
        let e = tab
            .transform(&[col("a", vec![n(f64::NEG_INFINITY)])])
            .unwrap_err();
        assert!(matches!(e, TabularError::NonFinite { row: 1, .. }), "{e}");
        let e = tab.transform(&[col("a", vec![n(1e300)])]).unwrap_err();
        assert!(matches!(e, TabularError::NonFinite { row: 1, .. }), "{e}");
        assert_eq!(p.fit(&[]).unwrap_err(), TabularError::Empty);
        assert_eq!(p.fit(&[col("a", vec![])]).unwrap_err(), TabularError::Empty);
        assert!(matches!(
            p.fit(&[col("a", vec![n(1.0)]), col("b", vec![])]),
            Err(TabularError::Length { .. })
        ));
        assert!(matches!(
            p.fit(&[col("a", vec![n(1.0)]), col("a", vec![n(1.0)])]),
            Err(TabularError::Duplicate { .. })
        ));
        let few = TabularParams { max_categories: 2 };
        let e = few
            .fit(&[col("id", vec![t("a"), t("b"), t("c"), t("a")])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 distinct values, more than the 2"), "{e}");
        assert!(TabularParams { max_categories: 0 }.fit(&train()).is_err());
    }

    #[test]
    fn numbers_render_canonically_as_categories() {
        assert_eq!(category(&n(3.0)).unwrap(), "3");
        assert_eq!(category(&n(-0.0)).unwrap(), "0");
        assert_eq!(category(&n(0.5)).unwrap(), "0.5");
        assert_eq!(category(&n(1e21)).unwrap(), "1000000000000000000000");
        assert_eq!(category(&Cell::Missing), None);
    }

    #[test]
    fn round_trips_through_json_and_tensors() {
        let tab = TabularParams::default().fit(&train()).unwrap();
        let json = serde_json::to_string(tab.spec()).unwrap();
        assert_eq!(
            json,
            r#"{"columns":[{"kind":"numeric","name":"age"},{"kind":"categorical","name":"city","categories":["3","Bergen","Oslo"]},{"kind":"numeric","name":"const"},{"kind":"numeric","name":"empty"}]}"#
        );
        let spec: TabularSpec = serde_json::from_str(&json).unwrap();
        let back = Tabular::from_parts(spec, &tab.to_tensors()).unwrap();
        assert_eq!(back, tab);
        assert_eq!(
            back.transform(&train()).unwrap(),
            tab.transform(&train()).unwrap()
        );
    }

    #[test]
    fn invalid_stored_state_is_rejected() {
        let tab = TabularParams::default().fit(&train()).unwrap();
        let tensors = tab.to_tensors();
        let check = |spec: TabularSpec, tensors: &BTreeMap<String, Tensor>, want: &str| {
            let e = Tabular::from_parts(spec, tensors).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want:?}");
        };
        let mut t = tensors.clone();
        t.remove(STD);
        check(tab.spec().clone(), &t, "tensor \"std\" is missing");
        let mut t = tensors.clone();
        t.insert(MEAN.into(), Tensor::f32(vec![2], vec![0.0, 1.0]));
        check(tab.spec().clone(), &t, "expected [3]");
        let mut t = tensors.clone();
        t.insert(STD.into(), Tensor::i32(vec![3], vec![1, 1, 1]));
        check(tab.spec().clone(), &t, "not F32");
        let mut t = tensors.clone();
        t.insert(STD.into(), Tensor::f32(vec![3], vec![1.0, 0.0, 1.0]));
        check(tab.spec().clone(), &t, "std 1 is 0");
        let mut t = tensors.clone();
        t.insert(MEAN.into(), Tensor::f32(vec![3], vec![f32::NAN, 0.0, 1.0]));
        check(tab.spec().clone(), &t, "mean 0 is NaN");
        let mut spec = tab.spec().clone();
        spec.columns[1] = ColumnSpec::Categorical {
            name: "city".into(),
            categories: vec!["b".into(), "a".into()],
        };
        check(spec, &tensors, "not sorted and distinct");
        let mut spec = tab.spec().clone();
        spec.columns[1] = ColumnSpec::Categorical {
            name: "city".into(),
            categories: vec![],
        };
        check(spec, &tensors, "no category");
        let mut spec = tab.spec().clone();
        spec.columns[2] = ColumnSpec::Numeric { name: "age".into() };
        check(spec, &tensors, "\"age\" appears twice");
        check(TabularSpec { columns: vec![] }, &tensors, "expected [0]");
    }
}
