//! `faq build`: the indexes, the learned parts, and the hand-over thresholds.

use super::engine::{
    outcomes, Faq, FaqCard, FaqEvalReport, FaqMode, Thresholds, ANSWERS_DIR, ENTRIES_DIR,
    QUESTIONS_DIR,
};
use super::signals::{CONFIDENCE_FEATURES, FAQ_FEATURES};
use super::train::{
    self, calibration_rows, fit_calibrator, fit_intent, fit_oos, fit_ranker,
    threshold_for_precision, training_signals, Calibrator, TrainingQuery, TrainingQuestions,
};
use crate::encoders::CacheSpec;
use crate::error::{PipelineError, Result};
use crate::observe::Observer;
use crate::ranker::{KindScore, RankerKind};
use crate::retrieval::{build_index_from, DenseSpec, IndexBuildSpec, Searcher};
use lmfuse_core::DenseMatrix;
use lmfuse_data::faq::{
    read_faq_table, read_judged_questions, FaqColumns, FaqEntry, JudgedQuestion,
};
use lmfuse_data::retrieval::{CorpusColumns, Document};
use lmfuse_data::Format;
use lmfuse_retrieval::{AnalyzerParams, Index, SearchMode};
use lmfuse_train::OosDetector;
use serde::Serialize;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `faq build` does.
#[derive(Debug, Clone)]
pub struct FaqBuildSpec {
    /// The question/answer table.
    pub table: PathBuf,
    /// Its format; `None`: from the extension.
    pub format: Option<Format>,
    /// Its columns.
    pub columns: FaqColumns,
    /// Judged questions (text, answer id; empty id: out of scope) the hand-over thresholds
    /// are chosen on; `None`: on the table's own questions, held out (no baseline
    /// thresholds then).
    pub dev: Option<PathBuf>,
    /// The dev file's text and answer-id columns.
    pub dev_columns: (String, String),
    /// The encoder and its prefixes.
    pub dense: DenseSpec,
    /// BM25's analysis.
    pub analyzer: AnalyzerParams,
    /// The embedding cache.
    pub cache: CacheSpec,
    /// Answered questions that must be right, on dev (0..1].
    pub target_precision: f64,
    /// Candidates per retriever.
    pub depth: usize,
    /// Folds (by entry) of the held-out scoring of the table's questions.
    pub folds: usize,
    /// Ranker kinds to try.
    pub kinds: Vec<RankerKind>,
    /// Seed of the folds and the trees.
    pub seed: u64,
}

impl FaqBuildSpec {
    /// Defaults for a table: dev none, target precision 0.9, depth 20, 5 folds, seed 13.
    pub fn new(table: PathBuf, columns: FaqColumns) -> Self {
        FaqBuildSpec {
            table,
            format: None,
            columns,
            dev: None,
            dev_columns: ("text".into(), "answer_id".into()),
            dense: DenseSpec::default(),
            analyzer: AnalyzerParams::default(),
            cache: CacheSpec::default(),
            target_precision: 0.9,
            depth: 20,
            folds: 5,
            kinds: RankerKind::defaults(13),
            seed: 13,
        }
    }

    fn check(&self) -> Result<()> {
        let ok = self.target_precision > 0.0
            && self.target_precision <= 1.0
            && self.depth > 0
            && self.folds >= 2
            && !self.kinds.is_empty();
        if !ok {
            return Err(PipelineError::Invalid(
                "faq build needs a target precision in (0, 1], a positive depth, at least 2 folds and a ranker kind".into(),
            ));
        }
        Ok(())
    }
}

/// What `faq build` did.
#[derive(Debug, Clone, Serialize)]
pub struct FaqBuildReport {
    /// The engine's folder.
    pub faq: PathBuf,
    /// Entries.
    pub entries: usize,
    /// Questions and paraphrases in the table.
    pub questions: usize,
    /// Categories.
    pub categories: usize,
    /// The intent classifier's C and its held-out accuracy on the table's questions.
    pub intent: Option<(f64, f64)>,
    /// Every ranker kind's cross-validated nDCG@10 on the table's questions.
    pub ranker_tried: Vec<KindScore>,
    /// The kind kept.
    pub ranker_kept: RankerKind,
    /// Table questions whose held-out first answer is right.
    pub held_out_top1: f64,
    /// Hand-over thresholds (fused; BM25 and dense when chosen on dev).
    pub thresholds: (f32, Option<f32>, Option<f32>),
    /// Where they were chosen.
    pub chosen_on: String,
    /// The engine's figures on dev at those thresholds.
    pub dev: Option<FaqEvalReport>,
    /// Wall time.
    pub seconds: f64,
}

/// The table's questions, flat: text and entry.
fn flat_questions(entries: &[FaqEntry]) -> (Vec<String>, Vec<usize>) {
    entries
        .iter()
        .enumerate()
        .flat_map(|(e, entry)| entry.questions.iter().map(move |q| (q.clone(), e)))
        .unzip()
}

/// Builds the three indexes of generation folder `gen`.
fn build_indexes(
    gen: &Path,
    entries: &[FaqEntry],
    questions: &[String],
    spec: &FaqBuildSpec,
    on: &dyn Observer,
) -> Result<()> {
    let index_spec = |dense: DenseSpec| IndexBuildSpec {
        corpus: PathBuf::new(),
        format: None,
        columns: CorpusColumns::default(),
        analyzer: spec.analyzer,
        dense: Some(dense),
        cache: spec.cache.clone(),
    };
    let doc = |id: String, title: String, text: String| Document { id, title, text };
    let answers = entries
        .iter()
        .map(|e| doc(e.id.clone(), String::new(), e.answer.clone()))
        .collect();
    build_index_from(
        &gen.join(ANSWERS_DIR),
        answers,
        &index_spec(spec.dense.clone()),
        on,
    )?;
    let whole = entries
        .iter()
        .map(|e| doc(e.id.clone(), e.questions.join(" | "), e.answer.clone()))
        .collect();
    build_index_from(
        &gen.join(ENTRIES_DIR),
        whole,
        &index_spec(spec.dense.clone()),
        on,
    )?;
    if !questions.is_empty() {
        // Questions are compared with questions: both sides take the query prefix.
        let mut dense = spec.dense.clone();
        dense.passage_prefix = dense.query_prefix.clone();
        let docs = questions
            .iter()
            .enumerate()
            .map(|(i, q)| doc(format!("q{i}"), String::new(), q.clone()))
            .collect();
        build_index_from(&gen.join(QUESTIONS_DIR), docs, &index_spec(dense), on)?;
    }
    Ok(())
}

/// Each entry's fold (entries shuffled by `seed`).
fn entry_folds(n: usize, folds: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    lmfuse_core::SeededRng::new(seed).shuffle(&mut order);
    let mut fold = vec![0; n];
    for (pos, &e) in order.iter().enumerate() {
        fold[e] = pos % folds;
    }
    fold
}

/// Reads and checks the table and the dev questions.
fn read_inputs(spec: &FaqBuildSpec) -> Result<(Vec<FaqEntry>, Option<Vec<JudgedQuestion>>)> {
    let entries = read_faq_table(&spec.table, spec.format, &spec.columns)?;
    let (questions, _) = flat_questions(&entries);
    if entries.len() < 2 || questions.len() < 2 * spec.folds {
        return Err(PipelineError::Invalid(format!(
            "{}: an answer engine needs at least 2 entries and {} questions or paraphrases ({} folds × 2); found {} and {}",
            spec.table.display(),
            2 * spec.folds,
            spec.folds,
            entries.len(),
            questions.len()
        )));
    }
    let known: HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let dev = match &spec.dev {
        Some(path) => {
            let cols = (spec.dev_columns.0.as_str(), spec.dev_columns.1.as_str());
            Some(read_judged_questions(path, None, cols, &known)?)
        }
        None => None,
    };
    Ok((entries, dev))
}

/// Builds the answer engine in `dir` (an engine already there stays readable until the new
/// one replaces it).
pub fn build_faq(dir: &Path, spec: &FaqBuildSpec, on: &dyn Observer) -> Result<FaqBuildReport> {
    spec.check()?;
    let started = Instant::now();
    let (entries, dev) = read_inputs(spec)?;
    let (texts, owner) = flat_questions(&entries);
    let generation = super::next_generation(dir)?;
    let gen = super::generation_dir(dir, generation);
    build_indexes(&gen, &entries, &texts, spec, on)?;
    let mut answers = Searcher::open(&gen.join(ANSWERS_DIR), &spec.cache)?;
    let rows = answers
        .query_vectors(&texts, SearchMode::Dense, on)?
        .ok_or_else(|| PipelineError::Invalid("the answers index has no vectors".into()))?;
    let dim = rows[0].len();
    let vectors = DenseMatrix::new(rows.len(), dim, rows.concat())?;
    let mut rng = lmfuse_core::SeededRng::new(spec.seed);
    let reworded: Vec<String> = texts.iter().map(|t| train::reworded(t, &mut rng)).collect();
    let reworded_vectors = answers
        .query_vectors(&reworded, SearchMode::Dense, on)?
        .ok_or_else(|| PipelineError::Invalid("the answers index has no vectors".into()))?;
    let questions = Questions {
        texts: &texts,
        owner: &owner,
        vectors: &vectors,
        reworded: (&reworded, &reworded_vectors),
    };
    let (mut faq, mut report, held_out) = fit_engine(&gen, entries, answers, questions, spec, on)?;
    choose_thresholds(&mut faq, &mut report, dev.as_deref(), held_out, spec)?;
    faq.save_model(&gen)?;
    super::publish(dir, generation)?;
    report.faq = dir.to_path_buf();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The table's questions with their vectors, and each reworded with its vector.
struct Questions<'a> {
    texts: &'a [String],
    owner: &'a [usize],
    vectors: &'a DenseMatrix,
    reworded: (&'a [String], &'a [Vec<f32>]),
}

/// The ranker's and the calibrator's training queries: each table question with its own text
/// left out (fold-held-out intent and out-of-scope scores), and each reworded with its text
/// kept (the final detector's out-of-scope score, as a user's paraphrase would get).
fn training_queries(
    q: &Questions,
    fold: &[usize],
    intent: &[Vec<f32>],
    (oos, oos_scores): (&OosDetector, &[f32]),
) -> Result<Vec<TrainingQuery>> {
    let (texts, vectors) = q.reworded;
    let dim = q.vectors.cols();
    let reworded = DenseMatrix::new(vectors.len(), dim, vectors.concat())?;
    let reworded_oos = oos.score(&reworded, &[], 1);
    let mut out = Vec::with_capacity(2 * q.texts.len());
    for (i, text) in q.texts.iter().enumerate() {
        let query = |text: &str, vector: &[f32], exclude, oos| TrainingQuery {
            text: text.to_string(),
            vector: vector.to_vec(),
            entry: q.owner[i],
            fold: fold[i],
            exclude,
            intent: intent.get(i).cloned().unwrap_or_default(),
            oos,
        };
        out.push(query(text, q.vectors.row(i), Some(i), oos_scores[i]));
        out.push(query(&texts[i], &vectors[i], None, reworded_oos[i]));
    }
    Ok(out)
}

/// The sorted categories of the entries, and each entry's.
fn categories_of(entries: &[FaqEntry]) -> (Vec<String>, Vec<Option<usize>>) {
    let categories: Vec<String> = entries
        .iter()
        .filter_map(|e| e.category.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let entry_category = entries
        .iter()
        .map(|e| {
            e.category
                .as_ref()
                .and_then(|c| categories.binary_search(c).ok())
        })
        .collect();
    (categories, entry_category)
}

/// The build report before thresholds: entry, question and category counts, the intent
/// classifier, the ranker and the held-out first answers.
fn report_of(
    (entries, questions, categories): (usize, usize, usize),
    intent: Option<&train::IntentFit>,
    fit: &train::RankerFit,
    right: &[bool],
) -> FaqBuildReport {
    FaqBuildReport {
        faq: PathBuf::new(),
        entries,
        questions,
        categories,
        intent: intent.map(|i| (i.intent.c, i.held_out_accuracy)),
        ranker_tried: fit.tried.clone(),
        ranker_kept: fit.kept,
        held_out_top1: right.iter().filter(|&&r| r).count() as f64 / right.len().max(1) as f64,
        thresholds: (0.0, None, None),
        chosen_on: String::new(),
        dev: None,
        seconds: 0.0,
    }
}

/// The fitted parts a card describes.
struct Learned<'a> {
    intent_c: Option<f64>,
    ranker: &'a train::RankerFit,
    calibrator: &'a Calibrator,
    oos: &'a OosDetector,
}

/// The engine's card (thresholds still to choose).
fn card_of(
    spec: &FaqBuildSpec,
    (categories, entry_category): (Vec<String>, Vec<Option<usize>>),
    owner: &[usize],
    l: Learned,
) -> FaqCard {
    FaqCard {
        task: "faq".into(),
        categories,
        entry_category,
        question_owner: owner.to_vec(),
        depth: spec.depth,
        intent_c: l.intent_c,
        ranker_kind: l.ranker.kept,
        ranker_tried: l.ranker.tried.clone(),
        ranker_mean: l.ranker.fitted.mean.clone(),
        ranker_scale: l.ranker.fitted.scale.clone(),
        calibrator_mean: l.calibrator.mean.clone(),
        calibrator_scale: l.calibrator.scale.clone(),
        oos: l.oos.card.clone(),
        thresholds: Thresholds {
            fused: 0.0,
            bm25: None,
            dense: None,
            target_precision: spec.target_precision,
            chosen_on: String::new(),
        },
        features: FAQ_FEATURES.iter().map(|s| s.to_string()).collect(),
        confidence_features: CONFIDENCE_FEATURES.iter().map(|s| s.to_string()).collect(),
    }
}

/// Fits the learned parts on the table's questions.
fn fit_engine(
    gen: &Path,
    entries: Vec<FaqEntry>,
    answers: Searcher,
    questions: Questions,
    spec: &FaqBuildSpec,
    on: &dyn Observer,
) -> Result<(Faq, FaqBuildReport, Calibration)> {
    let (texts, owner, vectors) = (questions.texts, questions.owner, questions.vectors);
    let (categories, entry_category) = categories_of(&entries);
    let entry_fold = entry_folds(entries.len(), spec.folds, spec.seed);
    let fold: Vec<usize> = owner.iter().map(|&e| entry_fold[e]).collect();
    let t = TrainingQuestions {
        vectors,
        entry: owner,
        fold: &fold,
        folds: spec.folds,
    };
    let y: Vec<Option<usize>> = owner.iter().map(|&e| entry_category[e]).collect();
    let intent = fit_intent(&t, &y, categories.len())?;
    let intent_proba = intent
        .as_ref()
        .map(|i| i.held_out.clone())
        .unwrap_or_default();
    let (oos, oos_scores) = fit_oos(&t)?;
    let question_index = (!texts.is_empty())
        .then(|| Index::open(&gen.join(QUESTIONS_DIR)))
        .transpose()?;
    let whole = Index::open(&gen.join(ENTRIES_DIR))?;
    let answer_words: Vec<usize> = entries
        .iter()
        .map(|e| e.answer.split_whitespace().count())
        .collect();
    let parts = super::signals::Parts {
        answers: answers.index(),
        questions: question_index.as_ref(),
        question_owner: owner,
        entry_category: &entry_category,
        answer_words: &answer_words,
    };
    let queries = training_queries(&questions, &fold, &intent_proba, (&oos, &oos_scores))?;
    let signals = training_signals(&parts, &queries, on)?;
    let fit = fit_ranker(
        &parts,
        &queries,
        &signals,
        (spec.depth, &spec.kinds, spec.folds),
        on,
    )?;
    let (rows, right) = calibration_rows(&fit, &signals, &queries);
    let calibrator = fit_calibrator(&rows, &right)?;
    let counts = (entries.len(), texts.len(), categories.len());
    let report = report_of(counts, intent.as_ref(), &fit, &right);
    let learned = Learned {
        intent_c: intent.as_ref().map(|i| i.intent.c),
        ranker: &fit,
        calibrator: &calibrator,
        oos: &oos,
    };
    let card = card_of(spec, (categories, entry_category), owner, learned);
    let faq = Faq {
        card,
        entries,
        answers,
        questions: question_index,
        whole,
        intent: intent.map(|i| i.intent),
        oos,
        ranker: fit.fitted,
        calibrator,
        answer_words,
    };
    Ok((faq, report, (rows, right)))
}

/// The calibrator's training rows (confidence features) and whether each first answer was
/// right.
type Calibration = (Vec<Vec<f32>>, Vec<bool>);

/// Sets each mode's hand-over threshold for the target precision. With dev: the calibrator
/// is refitted on the table's held-out rows and dev's (dev brings the out-of-scope questions
/// the table lacks), the fused threshold chosen on dev's confidences from calibrators fitted
/// without their half of dev, and the baselines' thresholds on their dev scores. Without dev:
/// the fused threshold on the table's held-out rows (no out-of-scope question among them),
/// and the baselines never hand over.
fn choose_thresholds(
    faq: &mut Faq,
    report: &mut FaqBuildReport,
    dev: Option<&[JudgedQuestion]>,
    (rows, right): Calibration,
    spec: &FaqBuildSpec,
) -> Result<()> {
    let target = spec.target_precision;
    let Some(dev) = dev else {
        let conf = rows
            .iter()
            .map(|r| faq.calibrator.score_row(r))
            .collect::<Result<Vec<f32>>>()?;
        let t = threshold_for_precision(&conf, &right, target).0;
        faq.card.thresholds.fused = t;
        faq.card.thresholds.chosen_on = "held-out training questions".into();
        report.thresholds = (t, None, None);
        report.chosen_on = faq.card.thresholds.chosen_on.clone();
        return Ok(());
    };
    let texts: Vec<String> = dev.iter().map(|q| q.text.clone()).collect();
    let vectors = faq.vectors(&texts)?;
    let fused = dev_calibration(faq, (dev, &vectors), (rows, right), spec)?;
    let mut chosen = vec![fused];
    for mode in [FaqMode::Bm25, FaqMode::Dense] {
        let o = outcomes(faq, dev, &vectors, mode)?;
        let conf: Vec<f32> = o.iter().map(|x| x.confidence).collect();
        let right: Vec<bool> = o.iter().map(|x| x.right()).collect();
        chosen.push(threshold_for_precision(&conf, &right, target).0);
    }
    let th = &mut faq.card.thresholds;
    th.fused = chosen[0];
    th.bm25 = Some(chosen[1]);
    th.dense = Some(chosen[2]);
    th.chosen_on = "dev".into();
    report.thresholds = (chosen[0], Some(chosen[1]), Some(chosen[2]));
    report.chosen_on = "dev".into();
    report.dev = Some(super::evaluate_faq(faq, dev, &FaqMode::ALL)?);
    Ok(())
}

/// Halves of dev for its cross-fitted confidences.
const DEV_FOLDS: usize = 2;

/// Refits the calibrator on dev's rows (dev holds the out-of-scope questions and the mix of
/// questions the engine will meet; the table's held-out rows are added where dev alone has no
/// right or no wrong first answer), and returns the fused threshold chosen on dev's
/// confidences from calibrators fitted without their half of dev.
fn dev_calibration(
    faq: &mut Faq,
    (dev, vectors): (&[JudgedQuestion], &[Vec<f32>]),
    table: Calibration,
    spec: &FaqBuildSpec,
) -> Result<f32> {
    let (mut dev_rows, mut dev_right) = (Vec::new(), Vec::new());
    for (q, v) in dev.iter().zip(vectors) {
        let (ranked, row, _) = faq.fused_row(&q.text, v, None)?;
        let top = ranked.first().map(|&(e, _)| faq.entries()[e].id.as_str());
        dev_right.push(q.answer_id.is_some() && top == q.answer_id.as_deref());
        dev_rows.push(row);
    }
    let mut order: Vec<usize> = (0..dev.len()).collect();
    lmfuse_core::SeededRng::new(spec.seed).shuffle(&mut order);
    let mut conf = vec![0.0f32; dev.len()];
    for fold in 0..DEV_FOLDS {
        let others: Vec<usize> = order
            .iter()
            .enumerate()
            .filter(|(p, _)| p % DEV_FOLDS != fold)
            .map(|(_, &i)| i)
            .collect();
        let x: Vec<Vec<f32>> = others.iter().map(|&i| dev_rows[i].clone()).collect();
        let y: Vec<bool> = others.iter().map(|&i| dev_right[i]).collect();
        let calibrator = fit_on_dev((x, y), &table)?;
        for &i in order.iter().skip(fold).step_by(DEV_FOLDS) {
            conf[i] = calibrator.score_row(&dev_rows[i])?;
        }
    }
    let threshold = threshold_for_precision(&conf, &dev_right, spec.target_precision).0;
    faq.set_calibrator(fit_on_dev((dev_rows, dev_right), &table)?);
    Ok(threshold)
}

/// A calibrator fitted on dev rows, with the table's rows added when the dev rows alone have
/// no right or no wrong first answer.
fn fit_on_dev((mut x, mut y): Calibration, table: &Calibration) -> Result<Calibrator> {
    if !(y.contains(&true) && y.contains(&false)) {
        x.extend(table.0.iter().cloned());
        y.extend(table.1.iter().copied());
    }
    fit_calibrator(&x, &y)
}
