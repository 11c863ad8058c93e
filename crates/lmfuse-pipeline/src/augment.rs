//! Augmented copies of the training rows (never of dev or test), as `--augment` and
//! `--augment-cmd` ask, optionally checked by the classifier of the rows alone
//! (`--augment-filter`).

use crate::data::Splits;
use crate::encoders::CacheSpec;
use crate::ensure;
use crate::error::Result;
use crate::model::Model;
use crate::observe::Observer;
use lmfuse_augment::{paraphrase_with, AugmentSpec, Augmenter, Op, Thesaurus};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which copies to add, where synonyms and paraphrases come from, and which to drop.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentPlan {
    /// EDA copies per text and the operations' rates.
    pub spec: Option<AugmentSpec>,
    /// A MyThes or Cilin file (needed by synonym replacement and insertion).
    pub thesaurus: Option<PathBuf>,
    /// A command that paraphrases texts (stdin to stdout, a line each): one copy per text.
    pub command: Option<String>,
    /// Drop a copy that the classifier of the unaugmented rows gives another label with at
    /// least this probability.
    pub filter: Option<f32>,
}

/// One augmented copy of a training row.
#[derive(Debug, Clone, PartialEq)]
pub struct Copy {
    /// The row it copies.
    pub row: usize,
    /// The operation that made it.
    pub op: Op,
    /// Its text.
    pub text: String,
}

/// What augmentation added.
#[derive(Debug, Clone, Serialize)]
pub struct AugmentReport {
    /// The EDA settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<AugmentSpec>,
    /// The thesaurus file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thesaurus: Option<String>,
    /// The paraphrasing command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Training rows before augmentation.
    pub texts: usize,
    /// Copies added in all (a copy equal to its text is never made).
    pub added: usize,
    /// Copies added per operation.
    pub by_op: BTreeMap<Op, usize>,
    /// Copies the consistency filter dropped (with `filter`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filtered: Option<usize>,
}

impl AugmentPlan {
    /// Checks the settings.
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.spec.is_some() || self.command.is_some(),
            "--augment-filter and --thesaurus need --augment or --augment-cmd"
        );
        if let Some(f) = self.filter {
            ensure!(
                (0.0..=1.0).contains(&f),
                "--augment-filter must be in [0, 1] (found {f})"
            );
        }
        Ok(())
    }

    /// The copies of the training rows of `splits`: EDA's (seeded by `seed`), then the
    /// command's paraphrases.
    pub fn copies(&self, splits: &Splits, seed: u64) -> Result<Vec<Copy>> {
        self.check()?;
        let texts = &splits.train.texts;
        let mut copies = Vec::new();
        if let Some(spec) = self.spec {
            let thesaurus = match &self.thesaurus {
                Some(path) => Some(Thesaurus::load(path)?),
                None => None,
            };
            let augmenter = Augmenter::new(spec, thesaurus, seed)?;
            for (row, text) in texts.iter().enumerate() {
                copies.extend(augmenter.augment(text).into_iter().map(|(op, text)| Copy {
                    row,
                    op,
                    text,
                }));
            }
        }
        if let Some(command) = &self.command {
            for (row, answer) in paraphrase_with(command, texts)?.into_iter().enumerate() {
                if let Some(text) = answer.filter(|p| *p != texts[row]) {
                    copies.push(Copy {
                        row,
                        op: Op::Paraphrase,
                        text,
                    });
                }
            }
        }
        Ok(copies)
    }
}

/// `copies` without those `teacher` gives another label than their row's with probability at
/// least `threshold`; how many were dropped.
pub fn consistent(
    copies: Vec<Copy>,
    splits: &Splits,
    (teacher, threshold): (&Model, f32),
    (cache, on): (&CacheSpec, &dyn Observer),
) -> Result<(Vec<Copy>, usize)> {
    let texts: Vec<String> = copies.iter().map(|c| c.text.clone()).collect();
    let (proba, _) = teacher.predict_proba(&texts, &[], cache.open()?.as_mut(), on)?;
    let k = splits.labels.len();
    let before = copies.len();
    let kept: Vec<Copy> = copies
        .into_iter()
        .zip(proba.chunks(k))
        .filter(|(c, p)| {
            let predicted = lmfuse_metrics::argmax(p);
            predicted == splits.y_train[c.row] || p[predicted] < threshold
        })
        .map(|(c, _)| c)
        .collect();
    let dropped = before - kept.len();
    Ok((kept, dropped))
}

/// `splits` with `copies` after the training rows (each with its row's label, line and side
/// columns), and the report of what was added.
pub fn with_copies(
    splits: &Splits,
    copies: Vec<Copy>,
    plan: &AugmentPlan,
    filtered: Option<usize>,
) -> (Splits, AugmentReport) {
    let mut out = splits.clone();
    let mut by_op = BTreeMap::new();
    for c in copies {
        *by_op.entry(c.op).or_default() += 1;
        out.train.texts.push(c.text);
        out.train.labels.push(splits.train.labels[c.row].clone());
        out.train.lines.push(splits.train.lines[c.row]);
        out.y_train.push(splits.y_train[c.row]);
        for (i, (_, cells)) in out.train.columns.iter_mut().enumerate() {
            cells.push(splits.train.columns[i].1[c.row].clone());
        }
    }
    let report = AugmentReport {
        spec: plan.spec,
        thesaurus: plan.thesaurus.as_ref().map(|p| p.display().to_string()),
        command: plan.command.clone(),
        texts: splits.train.texts.len(),
        added: by_op.values().sum(),
        by_op,
        filtered,
    };
    (out, report)
}
