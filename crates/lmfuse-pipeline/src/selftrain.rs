//! Self-training on unlabelled texts: the classifier trained on the labelled rows labels the
//! unlabelled ones it is sure of (class-balanced: each class adds at most its share), a new
//! classifier is trained on both, and so on for a few rounds; with dev rows, rounds stop when
//! dev accuracy stops improving and the best round's classifier is kept.

use crate::classify::{train, TrainSpec, Trained};
use crate::data::Splits;
use crate::encoders::{CacheSpec, EncoderChoice};
use crate::ensure;
use crate::error::Result;
use crate::model::Model;
use crate::observe::Observer;
use serde::Serialize;
use std::collections::BTreeMap;

/// How self-training runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SelfTrainSpec {
    /// Most rounds of pseudo-labelling.
    pub rounds: usize,
    /// Lowest probability of a pseudo-label's class (0: none). Each class's own threshold is
    /// the probability of the last text its quota takes (see `growth`).
    pub threshold: f32,
    /// Pseudo-labels added per round, as a multiple of the labelled rows, split over the
    /// classes in their labelled shares (each class its most confident).
    pub growth: f64,
}

impl Default for SelfTrainSpec {
    fn default() -> Self {
        SelfTrainSpec {
            rounds: 3,
            threshold: 0.0,
            growth: 1.0,
        }
    }
}

impl SelfTrainSpec {
    /// Checks the numbers.
    pub fn check(&self) -> Result<()> {
        ensure!(self.rounds > 0, "--self-train-rounds must be positive");
        ensure!(
            (0.0..1.0).contains(&self.threshold),
            "--pseudo-threshold must be in [0, 1) (found {})",
            self.threshold
        );
        ensure!(
            self.growth.is_finite() && self.growth > 0.0,
            "--pseudo-growth must be a positive number"
        );
        Ok(())
    }
}

/// One round of self-training.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// 0 for the classifier of the labelled rows alone.
    pub round: usize,
    /// Pseudo-labels added this round, per class.
    pub added: BTreeMap<String, usize>,
    /// Pseudo-labelled rows trained on, in all.
    pub pseudo_labelled: usize,
    /// Dev accuracy of the round's classifier (without dev rows: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_accuracy: Option<f64>,
}

/// What self-training did.
#[derive(Debug, Clone, Serialize)]
pub struct SelfTrainReport {
    /// Its settings.
    pub spec: SelfTrainSpec,
    /// Unlabelled texts offered.
    pub unlabelled: usize,
    /// Every round run.
    pub rounds: Vec<Round>,
    /// The round whose classifier is kept.
    pub kept: usize,
    /// Why it stopped.
    pub stopped: String,
}

/// Self-trains a classifier of `splits` as `spec` says, with the `unlabelled` texts: the
/// classifier kept, its report's test figures its own and `self_training` what happened.
pub fn self_train(
    splits: &Splits,
    unlabelled: &[String],
    (spec, st): (&TrainSpec, &SelfTrainSpec),
    encoder: &EncoderChoice,
    cache: &CacheSpec,
    on: &dyn Observer,
) -> Result<Trained> {
    st.check()?;
    ensure!(!unlabelled.is_empty(), "the unlabelled file holds no text");
    ensure!(
        !spec.features.tab,
        "self-training reads texts only: the `tab` block's side columns are not supported"
    );
    let mut current = splits.clone();
    let mut best = train(&current, spec, encoder, cache, on)?;
    let mut report = SelfTrainReport {
        spec: *st,
        unlabelled: unlabelled.len(),
        rounds: vec![round_of(0, BTreeMap::new(), 0, &best)],
        kept: 0,
        stopped: format!("{} rounds run", st.rounds),
    };
    let mut left: Vec<usize> = (0..unlabelled.len()).collect();
    for round in 1..=st.rounds {
        let chosen = pseudo_labels(&best, splits, unlabelled, &left, st, (cache, on))?;
        if chosen.is_empty() {
            report.stopped = format!("no unlabelled text left above {}", st.threshold);
            break;
        }
        let mut added = BTreeMap::new();
        for &(i, class) in &chosen {
            *added
                .entry(splits.labels.name(class).to_string())
                .or_default() += 1;
            current.train.texts.push(unlabelled[i].clone());
            current
                .train
                .labels
                .push(splits.labels.name(class).to_string());
            current.train.lines.push(0);
            current.y_train.push(class);
        }
        let taken: std::collections::HashSet<usize> = chosen.iter().map(|&(i, _)| i).collect();
        left.retain(|i| !taken.contains(i));
        let trained = train(&current, spec, encoder, cache, on)?;
        let pseudo = current.y_train.len() - splits.y_train.len();
        report.rounds.push(round_of(round, added, pseudo, &trained));
        match (dev_accuracy(&trained), dev_accuracy(&best)) {
            // A tie keeps the newer classifier: it saw more texts.
            (Some(now), Some(before)) if now < before => {
                report.stopped = format!("dev accuracy fell at round {round}");
                break;
            }
            _ => {
                best = trained;
                report.kept = round;
            }
        }
    }
    best.report.self_training = Some(report);
    Ok(best)
}

fn dev_accuracy(t: &Trained) -> Option<f64> {
    t.report.dev.as_ref().map(|d| d.accuracy)
}

fn round_of(
    round: usize,
    added: BTreeMap<String, usize>,
    pseudo_labelled: usize,
    t: &Trained,
) -> Round {
    Round {
        round,
        added,
        pseudo_labelled,
        dev_accuracy: dev_accuracy(t),
    }
}

/// The `(unlabelled row, class)` pairs the teacher labels this round: per class, its most
/// confident rows of `left` above the threshold, up to the class's quota.
fn pseudo_labels(
    teacher: &Trained,
    splits: &Splits,
    unlabelled: &[String],
    left: &[usize],
    st: &SelfTrainSpec,
    (cache, on): (&CacheSpec, &dyn Observer),
) -> Result<Vec<(usize, usize)>> {
    let model = Model::from_classifier(teacher.classifier.clone(), None)?;
    let texts: Vec<String> = left.iter().map(|&i| unlabelled[i].clone()).collect();
    let (proba, _) = model.predict_proba(&texts, &[], cache.open()?.as_mut(), on)?;
    let k = splits.labels.len();
    let mut by_class: Vec<Vec<(f32, usize)>> = vec![Vec::new(); k];
    for (row, &i) in proba.chunks(k).zip(left) {
        let class = lmfuse_metrics::argmax(row);
        if row[class] >= st.threshold {
            by_class[class].push((row[class], i));
        }
    }
    let n = splits.y_train.len() as f64;
    let mut chosen = Vec::new();
    for (class, mut rows) in by_class.into_iter().enumerate() {
        let share = splits.y_train.iter().filter(|&&y| y == class).count() as f64 / n;
        let quota = (st.growth * n * share).ceil() as usize;
        rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        chosen.extend(rows.into_iter().take(quota).map(|(_, i)| (i, class)));
    }
    chosen.sort_unstable();
    Ok(chosen)
}
