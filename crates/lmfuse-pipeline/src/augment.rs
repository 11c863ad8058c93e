//! Augmented copies of the training rows (never of dev or test), as `--augment` asks.

use crate::data::Splits;
use crate::error::Result;
use lmfuse_augment::{AugmentSpec, Augmenter, Op, Thesaurus};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which copies to add and where synonyms come from.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentPlan {
    /// Copies per text and the operations' rates.
    pub spec: AugmentSpec,
    /// A MyThes or Cilin file (needed by synonym replacement and insertion).
    pub thesaurus: Option<PathBuf>,
}

/// What augmentation added.
#[derive(Debug, Clone, Serialize)]
pub struct AugmentReport {
    /// Its settings.
    pub spec: AugmentSpec,
    /// The thesaurus file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thesaurus: Option<String>,
    /// Training rows before augmentation.
    pub texts: usize,
    /// Copies added, in all and per operation (a copy equal to its text is not added).
    pub added: usize,
    /// Copies added per operation.
    pub by_op: BTreeMap<Op, usize>,
}

impl AugmentPlan {
    /// Reads the thesaurus and makes the augmenter of `seed`.
    pub fn augmenter(&self, seed: u64) -> Result<Augmenter> {
        let thesaurus = match &self.thesaurus {
            Some(path) => Some(Thesaurus::load(path)?),
            None => None,
        };
        Ok(Augmenter::new(self.spec, thesaurus, seed)?)
    }
}

/// `splits` with the augmented copies of each training row after the rows (same label, line
/// and side columns as their text).
pub fn augment_train(
    splits: &Splits,
    plan: &AugmentPlan,
    seed: u64,
) -> Result<(Splits, AugmentReport)> {
    let augmenter = plan.augmenter(seed)?;
    let mut out = splits.clone();
    let mut by_op = BTreeMap::new();
    for (i, text) in splits.train.texts.iter().enumerate() {
        for (op, copy) in augmenter.augment(text) {
            *by_op.entry(op).or_default() += 1;
            out.train.texts.push(copy);
            out.train.labels.push(splits.train.labels[i].clone());
            out.train.lines.push(splits.train.lines[i]);
            out.y_train.push(splits.y_train[i]);
            for (c, (_, cells)) in out.train.columns.iter_mut().enumerate() {
                cells.push(splits.train.columns[c].1[i].clone());
            }
        }
    }
    let report = AugmentReport {
        spec: plan.spec,
        thesaurus: plan.thesaurus.as_ref().map(|p| p.display().to_string()),
        texts: splits.train.texts.len(),
        added: by_op.values().sum(),
        by_op,
    };
    Ok((out, report))
}
