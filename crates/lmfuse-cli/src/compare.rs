//! `lmfuse compare`: a leaderboard of single heads, feature fusion and ensembles on one data
//! set, ranked by k-fold cross-validation on train (never by test).

use crate::classify::{CacheArgs, DataArgs};
use crate::progress::Bars;
use crate::ModelArgs;
use anyhow::Context;
use clap::Args;
use lmfuse_pipeline::compare::{CompareSpec, ExperimentSpec, Leaderboard, OofMembers};
use lmfuse_pipeline::preset::{Preset, SelectRule};
use std::path::PathBuf;

/// Flags `lmfuse compare` and `lmfuse tune` share: the encoder, the data and its splits, the
/// cross-validation, the output.
#[derive(Args, Debug)]
pub struct ExperimentArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    #[command(flatten)]
    pub(crate) cache: CacheArgs,
    /// Training data: every candidate is scored by k-fold cross-validation on it.
    #[arg(long, required_unless_present = "config")]
    pub(crate) train: Option<PathBuf>,
    /// Dev data: compare chooses each model's hyperparameter on it, tune only reports it
    /// (default: a stratified 10% of --train).
    #[arg(long)]
    pub(crate) dev: Option<PathBuf>,
    /// Test data, reported only, never used to choose (default: a stratified 10% of --train).
    #[arg(long)]
    pub(crate) test: Option<PathBuf>,
    /// Cross-validation folds on train.
    #[arg(long, default_value_t = 5)]
    pub(crate) folds: usize,
    /// Seed of the splits, folds, draws and heads: same seed, same leaderboard.
    #[arg(long, default_value_t = 13)]
    pub(crate) seed: u64,
    /// Values of C of logreg and svm (compare: tried on dev by those members and by the
    /// stacking meta-learner and the adaptive gate; tune: the grid of grid search).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.01,0.03,0.1,0.3,1,3,10,30,100"
    )]
    pub(crate) c_grid: Vec<f64>,
    /// Save the winner's bundle here (an ensemble holds all its members; tune refits the
    /// winner on all of train, as `lmfuse train` does).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Words left out of the TF-IDF word n-grams: none, or zh (Chinese function words;
    /// negations, degree adverbs and contrast kept). Recorded in the bundle.
    #[arg(long, default_value = "none")]
    pub(crate) stop_words: lmfuse_pipeline::classify::StopWords,
    /// Print every candidate and the winner as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Experiment file (TOML, or JSON for `.json`) whose keys are the command's flag names
    /// with underscores (`folds = 5`, `train = "data/train.jsonl"`, `heads = ["logreg"]`;
    /// paths relative to the file's folder); flags on the command line override it.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
}

impl ExperimentArgs {
    /// The pipeline's spec, with what clap cannot check checked for `command`.
    pub(crate) fn spec(&self, command: &str) -> anyhow::Result<ExperimentSpec> {
        let train = self
            .train
            .clone()
            .context("--train is required (on the command line or in the --config file)")?;
        let spec = ExperimentSpec {
            model: self.model.choice(),
            data: self.data.spec(),
            cache: self.cache.spec(),
            train,
            dev: self.dev.clone(),
            test: self.test.clone(),
            folds: self.folds,
            seed: self.seed,
            c_grid: self.c_grid.clone(),
            out: self.out.clone(),
            stop_words: self.stop_words,
        };
        spec.check(command)?;
        Ok(spec)
    }
}

/// Arguments of `lmfuse compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub(crate) exp: ExperimentArgs,
    /// The candidates: `fast` (embeddings and TF-IDF with logistic regression, alone and
    /// fused, and their five ensembles), `medium` (adds an SVM and boosted trees on TF-IDF +
    /// embeddings, an MLP, the shared hidden layer), `best` (adds the fine-tuned encoder with
    /// a linear head and with the shared layer, also as ensemble members). --singles,
    /// --members, --ensembles and the fine-tuning flags change what the preset sets.
    #[arg(long, value_enum, default_value_t = Preset::Fast)]
    preset: Preset,
    /// How the winner is picked: `best-cv`, the best CV score (the earlier candidate on
    /// ties); `one-se`, the simplest candidate (single, fusion, ensemble, fine-tuned) within
    /// one standard error of the best CV score.
    #[arg(long, value_enum, default_value_t = SelectRule::BestCv)]
    select: SelectRule,
    /// Time budget (`90s`, `20m`, `1.5h`; a bare number is seconds): no candidate starts once
    /// it is spent, a fine-tuned one only when its estimated cost fits what is left; the run
    /// returns the best of what it fit. Saving the winner comes on top.
    #[arg(long, value_parser = parse_duration)]
    time_limit: Option<f64>,
    /// Save the winner's probabilities as they come: by default they are scaled by a
    /// temperature fit on its out-of-fold probabilities on train (the predicted class never
    /// changes; the leaderboard's `calibration` shows the log loss and calibration error
    /// before and after).
    #[arg(long)]
    no_calibrate: bool,
    /// Single models as FEATURES:HEAD (features joined by `+`, e.g. `tfidf+emb:logreg` is
    /// feature fusion), comma-separated; empty for none (default: the preset's).
    #[arg(long, value_delimiter = ',')]
    pub(crate) singles: Option<Vec<String>>,
    /// The members the ensembles fuse, FEATURES:HEAD, comma-separated (default: the
    /// preset's).
    #[arg(long, value_delimiter = ',')]
    members: Option<Vec<String>>,
    /// Ensemble strategies, comma-separated (hard_vote, soft_vote, weighted, stacking,
    /// adaptive); empty for none (default: all five).
    #[arg(long, value_delimiter = ',')]
    ensembles: Option<Vec<String>>,
    /// Weights of the embedding block tried by feature-fusion models (tfidf+emb): like every
    /// member hyperparameter, chosen on dev (together with the head's C, k, ...; ties go to
    /// the weight nearest 1), then cross-validated on train. Off by default (`1`): chosen on
    /// dev it did not help (bench/results/compare.md); `lmfuse tune` chooses it by CV.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    emb_weights: Vec<f32>,
    /// What the members of the combiners that learn from out-of-fold probabilities
    /// (weighted, stacking, adaptive) predict with: `bagged` averages the k fold models that
    /// made those probabilities, so the combiner sees at prediction time the kind of input it
    /// learnt from (the bundle holds k models per member); `refit` uses each member refit on
    /// all of train, as the votes always do.
    #[arg(long, value_enum, default_value_t = OofMembers::Bagged)]
    oof_members: OofMembers,
    /// Also fine-tune the encoder with a linear head as a candidate, `finetuned` (the recipe of
    /// `lmfuse finetune`: AdamW, warm-up, dropout, early stopping on dev): once per fold for
    /// its CV score and once on all of train, so k + 1 runs, minutes to hours on a CPU. Its
    /// bundle holds the fine-tuned encoder.
    #[arg(long)]
    finetune: bool,
    /// Also train the shared hidden layer end to end with the encoder as a candidate,
    /// `finetuned_shared`: the fusion strategy of a shared layer over TF-IDF (fit on train)
    /// and the encoder's pooled output, trained jointly (the recipe of `lmfuse finetune
    /// --shared-head`). k + 1 runs, as with --finetune; its bundle holds the fine-tuned
    /// encoder.
    #[arg(long)]
    finetune_shared: bool,
    /// --finetune-shared: the head's decoupled weight decay (`lmfuse finetune
    /// --shared-head-alpha`). With several, comma-separated, each is trained on all of train
    /// and the best dev accuracy chooses (ties: the earlier), as it chooses the members' C;
    /// the folds then run with that one only (n + k runs for n values).
    #[arg(long, value_delimiter = ',')]
    finetune_shared_alpha: Option<Vec<f64>>,
    /// Also run every ensemble with each fine-tuned candidate (--finetune, --finetune-shared)
    /// as one more member: its out-of-fold probabilities come from its fold runs, and it
    /// predicts with its run on all of train (whose dev rows stopped it early: the combiner's
    /// C is chosen on them too). The bundle of such an ensemble holds the fine-tuned encoder
    /// beside the members' shared one.
    #[arg(long)]
    finetuned_members: bool,
    /// Save this candidate's bundle to --out instead of the winner's (its leaderboard name,
    /// e.g. `stacking(emb:logreg,tfidf:logreg)`): a faster or smaller model than the winner.
    #[arg(long, requires = "out")]
    save_candidate: Option<String>,
    /// Fine-tuning (--finetune, --finetune-shared): passes over the training rows (at most;
    /// early stopping may end sooner).
    #[arg(long)]
    finetune_epochs: Option<usize>,
    /// Fine-tuning (--finetune, --finetune-shared): peak learning rate of the encoder.
    #[arg(long)]
    finetune_lr: Option<f32>,
}

impl CompareArgs {
    /// The fine-tuning flags given, into `spec`; refused when nothing is fine-tuned.
    fn finetune_settings(&self, spec: &mut CompareSpec) -> anyhow::Result<()> {
        let given = [
            ("--finetune-epochs", self.finetune_epochs.is_some()),
            ("--finetune-lr", self.finetune_lr.is_some()),
            (
                "--finetune-shared-alpha",
                self.finetune_shared_alpha.is_some(),
            ),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            anyhow::ensure!(
                spec.finetune || spec.finetune_shared,
                "{flag} sets fine-tuned candidates, and this run has none: add --finetune, \
                 --finetune-shared or --preset best"
            );
        }
        if let Some(alpha) = &self.finetune_shared_alpha {
            anyhow::ensure!(
                spec.finetune_shared,
                "--finetune-shared-alpha sets the shared head of --finetune-shared, which this \
                 run does not train"
            );
            spec.finetune_shared_alpha = alpha.clone();
        }
        spec.finetune_epochs = self.finetune_epochs.unwrap_or(spec.finetune_epochs);
        spec.finetune_lr = self.finetune_lr.unwrap_or(spec.finetune_lr);
        Ok(())
    }

    /// The preset's candidates, changed by the flags given.
    fn spec(&self) -> anyhow::Result<CompareSpec> {
        let mut spec = CompareSpec::new(self.exp.spec("compare")?, self.preset);
        let given = |v: &Option<Vec<String>>, preset: &mut Vec<String>| {
            if let Some(v) = v {
                *preset = v.clone();
            }
        };
        given(&self.singles, &mut spec.singles);
        given(&self.members, &mut spec.members);
        given(&self.ensembles, &mut spec.ensembles);
        spec.preset_candidates = self.singles.is_none() && self.members.is_none();
        spec.finetune |= self.finetune;
        spec.finetune_shared |= self.finetune_shared;
        spec.finetuned_members |= self.finetuned_members;
        spec.emb_weights = self.emb_weights.clone();
        spec.oof_members = self.oof_members;
        spec.save_candidate = self.save_candidate.clone();
        self.finetune_settings(&mut spec)?;
        spec.select = self.select;
        spec.time_limit = self.time_limit;
        spec.calibrate = !self.no_calibrate;
        Ok(spec)
    }
}

/// Runs `lmfuse compare`.
pub fn run(args: &CompareArgs, quiet: bool) -> anyhow::Result<()> {
    let spec = args.spec()?;
    let board = lmfuse_pipeline::compare::compare(&spec, &Bars::new(quiet || args.exp.json))?;
    if args.exp.json {
        outln!("{}", serde_json::to_string(&board)?)?;
    } else {
        print_leaderboard(&board);
    }
    Ok(())
}

fn print_leaderboard(board: &Leaderboard) {
    eprintln!(
        "{:<44} {:>16} {:>7} {:>7} {:>8} {:>9}",
        "candidate", "cv acc (± std)", "dev", "test", "fit s", "predict s"
    );
    for (i, e) in board.candidates.iter().enumerate() {
        let name = match e.selected.as_ref().and_then(|s| s.get("emb_weight")) {
            Some(w) => format!("{} (emb ×{w})", e.name),
            None => e.name.clone(),
        };
        eprintln!(
            "{:<44} {:>8.2} ± {:<5.2} {:>7.2} {:>7.2} {:>8.1} {:>9.3}{}",
            name,
            100.0 * e.cv_accuracy,
            100.0 * e.cv_std,
            100.0 * e.dev.accuracy,
            100.0 * e.test.accuracy,
            e.fit_seconds,
            e.predict_seconds,
            if i == board.winner_index {
                "  ← winner"
            } else {
                ""
            }
        );
    }
    for s in &board.skipped {
        eprintln!("{:<44} skipped: {}", s.name, s.reason);
    }
    eprintln!("winner: {}: {}", board.winner.name, board.reason);
    if let Some(c) = &board.calibration {
        eprintln!(
            "calibrated {} with temperature {:.3}: test expected calibration error {:.4} → {:.4}",
            c.candidate, c.temperature, c.test_ece_uncalibrated, c.test.ece
        );
    }
}

/// Seconds from `90`, `90s`, `20m` or `1.5h`.
fn parse_duration(s: &str) -> Result<f64, String> {
    let (number, unit) = match s.trim().char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s.trim()[..i], c),
        _ => (s.trim(), 's'),
    };
    let scale = match unit {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        other => return Err(format!("unknown unit {other:?}: use s, m or h (e.g. 20m)")),
    };
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v * scale),
        _ => Err(format!(
            "{s:?} is not a positive duration (e.g. 90s, 20m, 1.5h)"
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_take_seconds_minutes_and_hours() {
        assert_eq!(super::parse_duration("90"), Ok(90.0));
        assert_eq!(super::parse_duration("20m"), Ok(1200.0));
        assert_eq!(super::parse_duration("1.5h"), Ok(5400.0));
        assert!(super::parse_duration("0").is_err());
        assert!(super::parse_duration("5d").is_err());
        assert!(super::parse_duration("m").is_err());
    }
}
