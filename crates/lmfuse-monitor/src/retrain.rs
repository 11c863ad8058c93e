//! Champion/challenger retraining on corrected labels: a challenger is trained with the
//! pipeline library on the model's training data plus part of the feedback, compared with the
//! serving version (the champion) on the rest of the feedback and on the original test set,
//! and promoted only when it is better. Every version is kept with its figures; a running
//! monitor loads a promoted one before its next batch.

use crate::config::{ModelConfig, MonitorConfig};
use crate::error::{MonitorError, Result};
use crate::event::now_secs;
use crate::store::{Database, Feedback, ModelVersion, Store};
use lmfuse_data::LabelledTexts;
use lmfuse_pipeline::classify::{evaluate_rows, train, FeatureSet, TrainSpec};
use lmfuse_pipeline::data::{read_labelled, splits_from_rows, DataSpec, SplitPlan};
use lmfuse_pipeline::encoders::{CacheSpec, EncoderChoice};
use lmfuse_pipeline::model::Model;
use lmfuse_pipeline::Observer;
use lmfuse_train::{HeadKind, Predictor};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What a retrain does; [`RetrainSpec::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct RetrainSpec {
    /// The configured model to retrain.
    pub model: String,
    /// Training data instead of the model's `train`.
    pub train: Option<PathBuf>,
    /// Test set instead of the model's `test`.
    pub test: Option<PathBuf>,
    /// Feature blocks instead of the champion's.
    pub features: Option<FeatureSet>,
    /// Head instead of the champion's.
    pub head: Option<HeadKind>,
    /// Share of the corrected labels held out for the comparison (chosen by a seeded hash
    /// of the event id, so an event stays on its side across retrains).
    pub holdout: f64,
    /// Seed of the hold-out, the dev slice and the head.
    pub seed: u64,
    /// Accuracy the challenger must gain over the champion on hold-out + test together.
    pub min_gain: f64,
    /// Most accuracy the challenger may lose on the original test set alone.
    pub max_test_drop: f64,
    /// The embeddings cache.
    pub cache: CacheSpec,
}

impl RetrainSpec {
    /// Retrains `model` with the champion's features and head: a third of the feedback held
    /// out, any gain promotes, at most one point lost on the test set.
    pub fn new(model: impl Into<String>) -> RetrainSpec {
        RetrainSpec {
            model: model.into(),
            train: None,
            test: None,
            features: None,
            head: None,
            holdout: 1.0 / 3.0,
            seed: 13,
            min_gain: 0.0,
            max_test_drop: 0.01,
            cache: CacheSpec::default(),
        }
    }
}

/// Accuracy of one model on the comparison sets.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scores {
    /// On the held-out corrected labels (absent when none are held out).
    pub feedback: Option<f64>,
    /// On the original test set.
    pub test: f64,
    /// On both together.
    pub combined: f64,
}

/// What a retrain did.
#[derive(Debug, Clone, Serialize)]
pub struct RetrainReport {
    /// The model.
    pub model: String,
    /// The version serving before.
    pub champion_version: i64,
    /// The new version.
    pub challenger_version: i64,
    /// Its bundle folder.
    pub challenger_bundle: String,
    /// Whether it now serves.
    pub promoted: bool,
    /// Why (or why not).
    pub reason: String,
    /// Corrected labels used for training and held out.
    pub feedback_train: usize,
    /// Corrected labels held out.
    pub feedback_holdout: usize,
    /// The champion's accuracy.
    pub champion: Scores,
    /// The challenger's accuracy.
    pub challenger: Scores,
    /// Head and features of the challenger.
    pub head: String,
    /// Its feature blocks.
    pub features: Vec<String>,
}

/// Trains, compares and records a challenger for `spec.model` of the monitor whose
/// configuration is `config` and database `db`.
pub fn retrain(
    config: &MonitorConfig,
    db: &Database,
    spec: &RetrainSpec,
    on: &dyn Observer,
) -> Result<RetrainReport> {
    let fail = |message: String| MonitorError::Retrain {
        model: spec.model.clone(),
        message,
    };
    let model = config
        .models
        .iter()
        .find(|m| m.name == spec.model)
        .ok_or_else(|| fail("no model of the configuration has this name".into()))?;
    if !(0.0..1.0).contains(&spec.holdout) {
        return Err(fail(format!("holdout {} must be in [0, 1)", spec.holdout)));
    }
    let (train_path, test_path) = data_paths(model, spec).map_err(fail)?;
    let versions = versions_dir(config, db, &model.name)?;
    let mut store = Store::open(db.clone())?;
    let (champion, feedback) = store.read(|tx| {
        let champion = tx.active_version(&model.name)?;
        Ok((champion, tx.feedback(&model.name)?))
    })?;
    let champion = champion.ok_or_else(|| {
        fail("the database has no version of it yet: run the monitor once".into())
    })?;
    // The version's number is taken first, in a transaction, so that two retrains at once
    // write two folders; a failed one stays recorded as failed.
    let training = serde_json::json!({"state": "training", "champion": champion.version});
    let version =
        store.transaction(|tx| tx.add_version(&model.name, "", false, &training, now_secs()))?;
    let dir = versions.join(format!("v{version}"));
    let job = Job {
        champion: &champion,
        feedback: split_feedback(&feedback, spec.holdout, spec.seed),
        train_path,
        test_path,
        dir: &dir,
    };
    let mut outcome = challenge(&job, spec, on).map_err(fail);
    if let Ok(report) = &mut outcome {
        report.challenger_version = version;
    }
    let (promoted, recorded) = match &outcome {
        Ok(report) => (
            report.promoted,
            serde_json::to_value(report).expect("a report serialises"),
        ),
        Err(e) => (
            false,
            serde_json::json!({"state": "failed", "error": e.to_string()}),
        ),
    };
    let path = dir.display().to_string();
    store.transaction(|tx| tx.finish_version(&model.name, version, &path, promoted, &recorded))?;
    outcome
}

/// What one retrain works on.
struct Job<'a> {
    champion: &'a ModelVersion,
    /// Corrected labels to train on, and held out.
    feedback: (Vec<Feedback>, Vec<Feedback>),
    train_path: PathBuf,
    test_path: PathBuf,
    /// The challenger's bundle folder.
    dir: &'a Path,
}

/// Trains the challenger of `job`, saves it, and compares it with the champion.
fn challenge(
    job: &Job<'_>,
    spec: &RetrainSpec,
    on: &dyn Observer,
) -> std::result::Result<RetrainReport, String> {
    let (fb_train, fb_holdout) = &job.feedback;
    let champion_model = load_model(Path::new(&job.champion.path))?;
    let train_spec = challenger_spec(&champion_model, spec)?;
    let encoder = EncoderChoice::named(champion_model.main_encoder().info.reference.clone());
    let data = DataSpec::default();
    let mut rows = read_labelled(&job.train_path, &data, &[]).map_err(|e| e.chain_message())?;
    append(&mut rows, fb_train);
    let plan = SplitPlan {
        train: job.train_path.clone(),
        dev: None,
        test: Some(job.test_path.clone()),
        seed: spec.seed,
        carve_dev: true,
        carve_test: false,
    };
    let splits = splits_from_rows(rows, &plan, &data).map_err(|e| e.chain_message())?;
    let mut trained =
        train(&splits, &train_spec, &encoder, &spec.cache, on).map_err(|e| e.chain_message())?;
    trained.save(job.dir).map_err(|e| e.chain_message())?;
    let challenger_model = load_model(job.dir)?;
    let holdout = labelled(fb_holdout);
    let score = |m: &Model| scores(m, &holdout, &splits.test, &spec.cache, on);
    let (champion, challenger) = (score(&champion_model)?, score(&challenger_model)?);
    let (promoted, reason) = decide(&champion, &challenger, spec);
    Ok(RetrainReport {
        model: spec.model.clone(),
        champion_version: job.champion.version,
        challenger_version: 0,
        challenger_bundle: job.dir.display().to_string(),
        promoted,
        reason,
        feedback_train: fb_train.len(),
        feedback_holdout: fb_holdout.len(),
        champion,
        challenger,
        head: trained.report.head.to_string(),
        features: trained.report.features.clone(),
    })
}

/// Where the versions of `model` made by retraining are kept: `monitor.models_dir`, or
/// beside a SQLite database; with PostgreSQL, `monitor.models_dir` must be set.
pub fn versions_dir(config: &MonitorConfig, db: &Database, model: &str) -> Result<PathBuf> {
    let dir = match (&config.models_dir, db) {
        (Some(dir), _) => dir.clone(),
        (None, Database::Sqlite(path)) => {
            let name = path
                .file_name()
                .map_or("monitor".into(), |n| n.to_string_lossy().into_owned());
            path.with_file_name(format!("{name}.models"))
        }
        (None, Database::Postgres(_)) => {
            return Err(MonitorError::Config {
                path: config.path.clone(),
                message: "monitor.models_dir: required with a PostgreSQL database (retrained \
                          versions of the models are written there)"
                    .into(),
            })
        }
    };
    Ok(dir.join(model))
}

fn data_paths(
    model: &ModelConfig,
    spec: &RetrainSpec,
) -> std::result::Result<(PathBuf, PathBuf), String> {
    let train = spec.train.clone().or_else(|| model.train.clone()).ok_or(
        "no training data: set `train` of the model in the configuration (or pass --train)",
    )?;
    let test = spec
        .test
        .clone()
        .or_else(|| model.test.clone())
        .ok_or("no test set: set `test` of the model in the configuration (or pass --test)")?;
    Ok((train, test))
}

fn load_model(dir: &Path) -> std::result::Result<Model, String> {
    Model::load(dir, None).map_err(|e| e.chain_message())
}

/// The champion's head and feature blocks, unless `spec` overrides them.
fn challenger_spec(champion: &Model, spec: &RetrainSpec) -> std::result::Result<TrainSpec, String> {
    let Predictor::Single(classifier) = &champion.predictor else {
        return Err(
            "the serving version is an ensemble: retraining takes a bundle made by \
                    `lmfuse train`"
                .into(),
        );
    };
    let card = &classifier.card;
    let features = match spec.features {
        Some(f) => f,
        None => FeatureSet {
            emb: card.features.iter().any(|f| f == "emb"),
            tfidf: card.features.iter().any(|f| f.starts_with("tfidf")),
            tab: false,
        },
    };
    if card.features.iter().any(|f| f == "tab") {
        return Err("the serving version reads side columns, which events do not carry".into());
    }
    let head = match spec.head {
        Some(h) => h,
        None => serde_json::from_value(serde_json::json!(card.head.params.name()))
            .map_err(|e| format!("the champion's head {:?}: {e}", card.head.params.name()))?,
    };
    let train_spec = TrainSpec {
        head,
        features,
        seed: spec.seed,
        ..TrainSpec::default()
    };
    train_spec
        .check(&DataSpec::default())
        .map_err(|e| e.chain_message())?;
    Ok(train_spec)
}

/// Corrected labels split into training and held-out parts by a seeded hash of each text
/// (streams repeat texts: a text is on one side only, so the hold-out does not leak).
fn split_feedback(
    feedback: &[Feedback],
    holdout: f64,
    seed: u64,
) -> (Vec<Feedback>, Vec<Feedback>) {
    feedback
        .iter()
        .cloned()
        .partition(|f| unit_hash(f.text.trim(), seed) >= holdout)
}

/// FNV-1a of `seed` and `key`, mixed by SplitMix64's finaliser (FNV's high bits are poorly
/// spread on short ids), mapped to [0, 1).
fn unit_hash(key: &str, seed: u64) -> f64 {
    let mut h = lmfuse_core::fnv1a(seed.to_le_bytes().into_iter().chain(key.bytes()));
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn labelled(feedback: &[Feedback]) -> LabelledTexts {
    let mut rows = LabelledTexts::default();
    append(&mut rows, feedback);
    rows
}

fn append(rows: &mut LabelledTexts, feedback: &[Feedback]) {
    for f in feedback {
        rows.texts.push(f.text.clone());
        rows.labels.push(f.label.clone());
        rows.lines.push(0);
    }
}

fn scores(
    model: &Model,
    holdout: &LabelledTexts,
    test: &LabelledTexts,
    cache: &CacheSpec,
    on: &dyn Observer,
) -> std::result::Result<Scores, String> {
    let accuracy = |rows: &LabelledTexts, name: &str| {
        evaluate_rows(model, rows, name, cache, on)
            .map(|r| r.test.accuracy)
            .map_err(|e| e.chain_message())
    };
    let test_acc = accuracy(test, "the test set")?;
    if holdout.texts.is_empty() {
        return Ok(Scores {
            feedback: None,
            test: test_acc,
            combined: test_acc,
        });
    }
    let fb = accuracy(holdout, "the held-out feedback")?;
    let (nf, nt) = (holdout.texts.len() as f64, test.texts.len() as f64);
    Ok(Scores {
        feedback: Some(fb),
        test: test_acc,
        combined: (fb * nf + test_acc * nt) / (nf + nt),
    })
}

/// Promote only when the challenger gains more than `min_gain` on hold-out + test, does not
/// lose on the held-out feedback, and loses at most `max_test_drop` on the test set.
fn decide(champion: &Scores, challenger: &Scores, spec: &RetrainSpec) -> (bool, String) {
    let gain = challenger.combined - champion.combined;
    if gain <= spec.min_gain {
        return (
            false,
            format!(
                "accuracy on held-out feedback + test {:.4} vs the champion's {:.4}: a gain of \
             {gain:+.4}, not above {}",
                challenger.combined, champion.combined, spec.min_gain
            ),
        );
    }
    if let (Some(c), Some(n)) = (champion.feedback, challenger.feedback) {
        if n < c {
            return (
                false,
                format!("worse on the held-out feedback ({n:.4} vs {c:.4})"),
            );
        }
    }
    let drop = champion.test - challenger.test;
    // Accuracies are ratios of counts: a drop equal to the allowance is allowed, whatever
    // the rounding of the subtraction.
    if drop > spec.max_test_drop + 1e-9 {
        return (
            false,
            format!(
                "loses {drop:.4} of accuracy on the test set (at most {} allowed)",
                spec.max_test_drop
            ),
        );
    }
    (
        true,
        format!(
            "accuracy on held-out feedback + test {:.4} vs the champion's {:.4} ({gain:+.4})",
            challenger.combined, champion.combined
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_go_beside_a_file_or_to_models_dir_which_postgres_needs() {
        let text = "[[model]]\nname = \"m\"\nbundle = \"b\"\n";
        let mut config = MonitorConfig::parse(text, Path::new(".")).unwrap();
        let file = Database::parse("/data/mon.db");
        assert_eq!(
            versions_dir(&config, &file, "m").unwrap(),
            Path::new("/data/mon.db.models/m")
        );
        let server = Database::parse("postgres://u:pw@h/mon");
        let e = versions_dir(&config, &server, "m").unwrap_err().to_string();
        assert!(e.contains("monitor.models_dir"), "{e}");
        config.models_dir = Some("/versions".into());
        assert_eq!(
            versions_dir(&config, &server, "m").unwrap(),
            Path::new("/versions/m")
        );
    }

    #[test]
    fn the_holdout_is_stable_and_near_its_share() {
        let feedback: Vec<Feedback> = (0..3000)
            .map(|i| Feedback {
                id: format!("e{i}"),
                text: format!("text {}", i % 1500),
                label: String::new(),
            })
            .collect();
        let (train, held) = split_feedback(&feedback, 0.3, 5);
        assert_eq!(train.len() + held.len(), 3000);
        assert!(
            (held.len() as f64 / 3000.0 - 0.3).abs() < 0.03,
            "{}",
            held.len()
        );
        assert_eq!(split_feedback(&feedback, 0.3, 5).1, held);
        assert_ne!(split_feedback(&feedback, 0.3, 6).1, held);
    }

    #[test]
    fn only_a_better_challenger_is_promoted() {
        let s = |feedback, test, combined| Scores {
            feedback: Some(feedback),
            test,
            combined,
        };
        let spec = RetrainSpec::new("m");
        assert!(decide(&s(0.6, 0.8, 0.75), &s(0.9, 0.8, 0.82), &spec).0);
        assert!(!decide(&s(0.6, 0.8, 0.75), &s(0.6, 0.8, 0.75), &spec).0);
        // Exactly the allowed loss on the test set (0.9 - 0.89 is 0.01000000000000001).
        assert!(decide(&s(0.5, 0.9, 0.7), &s(1.0, 0.89, 0.9), &spec).0);
        // Better overall but far worse on the original test set.
        assert!(!decide(&s(0.2, 0.9, 0.6), &s(1.0, 0.7, 0.8), &spec).0);
        // Better overall but worse on the feedback.
        assert!(!decide(&s(0.9, 0.7, 0.75), &s(0.8, 0.9, 0.85), &spec).0);
    }
}
