//! A built answer engine: answering one question (alone or with a session's context), and
//! scoring it on judged questions.

use super::signals::{confidence_features, Parts, CONFIDENCE_FEATURES, FAQ_FEATURES};
use super::train::{Calibrator, Intent};
use crate::encoders::CacheSpec;
use crate::error::{Context, PipelineError, Result};
use crate::ranker::{head_params, logreg, Fitted, KindScore, RankerKind};
use crate::retrieval::{check_queries, Searcher};
use lmfuse_bundle::Tensor;
use lmfuse_classic::ProbaHead;
use lmfuse_core::{DenseMatrix, Features};
use lmfuse_data::faq::{FaqEntry, JudgedQuestion};
use lmfuse_retrieval::{Index, SearchMode};
use lmfuse_train::{OosCard, OosDetector};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::time::Instant;

const TASK: &str = "faq";
pub(crate) const MODEL_DIR: &str = "model";
pub(crate) const ANSWERS_DIR: &str = "answers";
pub(crate) const QUESTIONS_DIR: &str = "questions";
pub(crate) const ENTRIES_DIR: &str = "entries";
const ENTRIES_JSON: &str = "entries.json";

/// How the engine answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaqMode {
    /// The learned ranker over every signal, with the calibrated confidence.
    Fused,
    /// BM25 over each entry's questions and answer (a baseline); confidence: the top score.
    Bm25,
    /// Cosine with each entry's questions and answer (a baseline); confidence: the top score.
    Dense,
}

impl FaqMode {
    /// Every mode, the engine's first.
    pub const ALL: [FaqMode; 3] = [FaqMode::Fused, FaqMode::Bm25, FaqMode::Dense];
}

/// Hand-over thresholds per mode (`None`: that mode never hands over).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Thresholds {
    pub(crate) fused: f32,
    pub(crate) bm25: Option<f32>,
    pub(crate) dense: Option<f32>,
    pub(crate) target_precision: f64,
    /// `dev` or `held-out training questions`.
    pub(crate) chosen_on: String,
}

impl Thresholds {
    pub(crate) fn of(&self, mode: FaqMode) -> Option<f32> {
        match mode {
            FaqMode::Fused => Some(self.fused),
            FaqMode::Bm25 => self.bm25,
            FaqMode::Dense => self.dense,
        }
    }
}

/// The engine's card (the model bundle's `model`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FaqCard {
    pub(crate) task: String,
    pub(crate) categories: Vec<String>,
    pub(crate) entry_category: Vec<Option<usize>>,
    pub(crate) question_owner: Vec<usize>,
    pub(crate) depth: usize,
    pub(crate) intent_c: Option<f64>,
    pub(crate) ranker_kind: RankerKind,
    pub(crate) ranker_tried: Vec<KindScore>,
    pub(crate) ranker_mean: Vec<f32>,
    pub(crate) ranker_scale: Vec<f32>,
    pub(crate) calibrator_mean: Vec<f32>,
    pub(crate) calibrator_scale: Vec<f32>,
    pub(crate) oos: OosCard,
    pub(crate) thresholds: Thresholds,
    pub(crate) features: Vec<String>,
    pub(crate) confidence_features: Vec<String>,
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaqHit {
    /// 1 for the best.
    pub rank: usize,
    /// The entry's id.
    pub id: String,
    /// Its question (the first, empty for an answer-only entry).
    pub question: String,
    /// Its answer.
    pub answer: String,
    /// Its category.
    pub category: Option<String>,
    /// Its score under the mode.
    pub score: f32,
}

/// The intent the classifier reads in a question.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaqIntent {
    /// The category.
    pub category: String,
    /// Its probability.
    pub probability: f32,
}

/// The engine's reply to one question.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaqAnswer {
    /// The best entries, best first (given even when handing over, for the person taking it).
    pub answers: Vec<FaqHit>,
    /// The intent, when the table has categories (fused mode).
    pub intent: Option<FaqIntent>,
    /// Fused: the calibrated probability that the first answer is right; the baselines:
    /// their top score.
    pub confidence: f32,
    /// Whether the question goes to a person (confidence below the mode's threshold).
    pub hand_over: bool,
    /// Whether the question was searched with the session's previous turn.
    pub context_used: bool,
    /// The mode.
    pub mode: FaqMode,
}

/// A built answer engine, open.
pub struct Faq {
    pub(crate) card: FaqCard,
    pub(crate) entries: Vec<FaqEntry>,
    pub(crate) answers: Searcher,
    pub(crate) questions: Option<Index>,
    pub(crate) whole: Index,
    pub(crate) intent: Option<Intent>,
    pub(crate) oos: OosDetector,
    pub(crate) ranker: Fitted,
    pub(crate) calibrator: Calibrator,
    pub(crate) answer_words: Vec<usize>,
}

fn prefixed(
    prefix: &str,
    t: BTreeMap<String, Tensor>,
) -> impl Iterator<Item = (String, Tensor)> + '_ {
    t.into_iter()
        .map(move |(k, v)| (format!("{prefix}/{k}"), v))
}

fn unprefixed(prefix: &str, t: &BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    t.iter()
        .filter_map(|(k, v)| {
            Some((
                k.strip_prefix(prefix)?.strip_prefix('/')?.to_string(),
                v.clone(),
            ))
        })
        .collect()
}

impl Faq {
    pub(crate) fn parts(&self) -> Parts<'_> {
        Parts {
            answers: self.answers.index(),
            questions: self.questions.as_ref(),
            question_owner: &self.card.question_owner,
            entry_category: &self.card.entry_category,
            answer_words: &self.answer_words,
        }
    }

    /// Opens the engine in `dir`; questions are encoded through `cache`.
    pub fn open(dir: &Path, cache: &CacheSpec) -> Result<Self> {
        let gen = super::current_generation_dir(dir)?;
        let bundle = lmfuse_bundle::load(&gen.join(MODEL_DIR))
            .with_context(|| format!("cannot load the answer engine {}", dir.display()))?;
        let card: FaqCard = serde_json::from_value(bundle.manifest.model.clone())
            .with_context(|| format!("{}: damaged answer engine card", dir.display()))?;
        if card.task != TASK
            || card.features != FAQ_FEATURES
            || card.confidence_features != CONFIDENCE_FEATURES
        {
            return Err(PipelineError::Invalid(format!(
                "{}: not an answer engine of this lmfuse's features; rebuild it",
                dir.display()
            )));
        }
        let entries: Vec<FaqEntry> =
            serde_json::from_value(bundle.json.get(ENTRIES_JSON).cloned().unwrap_or_default())
                .with_context(|| format!("{}: damaged entries", dir.display()))?;
        let t = &bundle.tensors;
        let n_feat = FAQ_FEATURES.len();
        let ranker_head =
            head_params(&card.ranker_kind).restore(n_feat, 2, &unprefixed("ranker", t))?;
        let calibrator_head =
            logreg(1.0).restore(CONFIDENCE_FEATURES.len(), 2, &unprefixed("calibrator", t))?;
        let intent = match card.intent_c {
            Some(c) => {
                let dim = card.oos.dim;
                let head =
                    logreg(c).restore(dim, card.categories.len(), &unprefixed("intent", t))?;
                Some(Intent { head, c })
            }
            None => None,
        };
        let oos = OosDetector::restore(
            card.oos.clone(),
            &["in scope".to_string()],
            &unprefixed("oos", t),
        )?;
        let questions = match card.question_owner.is_empty() {
            true => None,
            false => Some(Index::open(&gen.join(QUESTIONS_DIR))?),
        };
        let faq = Faq {
            answers: Searcher::open(&gen.join(ANSWERS_DIR), cache)?,
            questions,
            whole: Index::open(&gen.join(ENTRIES_DIR))?,
            intent,
            oos,
            ranker: Fitted {
                head: ranker_head,
                mean: card.ranker_mean.clone(),
                scale: card.ranker_scale.clone(),
            },
            calibrator: Calibrator {
                head: calibrator_head,
                mean: card.calibrator_mean.clone(),
                scale: card.calibrator_scale.clone(),
            },
            answer_words: entries
                .iter()
                .map(|e| e.answer.split_whitespace().count())
                .collect(),
            card,
            entries,
        };
        faq.check(dir)?;
        Ok(faq)
    }

    fn check(&self, dir: &Path) -> Result<()> {
        let n = self.entries.len();
        let ids = |index: &Index| {
            index
                .documents()
                .iter()
                .map(|d| d.id.clone())
                .collect::<Vec<_>>()
        };
        let expected: Vec<String> = self.entries.iter().map(|e| e.id.clone()).collect();
        let questions = self.questions.as_ref().map_or(0, |q| q.documents().len());
        if ids(self.answers.index()) != expected
            || ids(&self.whole) != expected
            || self.card.entry_category.len() != n
            || questions != self.card.question_owner.len()
            || self.card.question_owner.iter().any(|&o| o >= n)
        {
            return Err(PipelineError::Invalid(format!(
                "{}: the engine's indexes do not match its entries; rebuild it",
                dir.display()
            )));
        }
        Ok(())
    }

    /// Saves the learned parts and entries as the model bundle of generation folder `gen`.
    pub(crate) fn save_model(&self, gen: &Path) -> Result<()> {
        let mut tensors = BTreeMap::new();
        tensors.extend(prefixed("ranker", self.ranker.head.to_tensors()));
        tensors.extend(prefixed("calibrator", self.calibrator.head.to_tensors()));
        tensors.extend(prefixed("oos", self.oos.to_tensors()));
        if let Some(i) = &self.intent {
            tensors.extend(prefixed("intent", i.head.to_tensors()));
        }
        let manifest = lmfuse_bundle::Manifest {
            format_version: lmfuse_bundle::PLAIN_VERSION,
            lmfuse_version: crate::VERSION.into(),
            created_at: crate::now_rfc3339(),
            model: serde_json::to_value(&self.card)?,
            files: BTreeMap::new(),
        };
        let json = BTreeMap::from([(
            ENTRIES_JSON.to_string(),
            serde_json::to_value(&self.entries)?,
        )]);
        let dir = gen.join(MODEL_DIR);
        lmfuse_bundle::save(&dir, manifest, &tensors, &json)
            .with_context(|| format!("cannot save the answer engine {}", dir.display()))
    }

    /// Reads judged questions (text and answer-id columns) against this engine's entries.
    pub fn read_judged(&self, path: &Path, columns: (&str, &str)) -> Result<Vec<JudgedQuestion>> {
        let known = self.entries.iter().map(|e| e.id.as_str()).collect();
        Ok(lmfuse_data::faq::read_judged_questions(
            path, None, columns, &known,
        )?)
    }

    /// The entries.
    pub fn entries(&self) -> &[FaqEntry] {
        &self.entries
    }

    /// The categories the intent classifier knows.
    pub fn categories(&self) -> &[String] {
        &self.card.categories
    }

    /// The vector of each question (checked: non-empty, within the length limit).
    pub(crate) fn vectors(&mut self, questions: &[String]) -> Result<Vec<Vec<f32>>> {
        check_queries(questions)?;
        let v = self
            .answers
            .query_vectors(questions, SearchMode::Dense, &crate::Silent)?;
        v.ok_or_else(|| PipelineError::Invalid("the engine's answers index has no vectors".into()))
    }

    /// Answers `question` in `mode` with the `k` best entries; `context` holds the session's
    /// earlier turns, oldest first: the question is also searched after the last of them
    /// (leaving out the entry that turn was answered with: a follow-up asks something new),
    /// and the reading the engine is surer of is kept.
    pub fn answer(
        &mut self,
        question: &str,
        context: &[FaqTurn],
        mode: FaqMode,
        k: usize,
    ) -> Result<FaqAnswer> {
        let vectors = self.vectors(&Self::readings(question, context))?;
        self.answer_encoded(question, context, &vectors, mode, k)
    }

    /// The texts [`Faq::answer`] searches for `question` after `context`: the question, and
    /// after a previous turn the question read after it. A caller that encodes them itself
    /// passes their vectors to [`Faq::answer_encoded`].
    pub fn readings(question: &str, context: &[FaqTurn]) -> Vec<String> {
        let mut texts = vec![question.to_string()];
        if let Some(last) = context.last() {
            texts.push(format!("{} {question}", last.question));
        }
        texts
    }

    /// [`Faq::answer`] with the vectors of [`Faq::readings`] given (encoded with the engine's
    /// model and query prefix).
    pub fn answer_encoded(
        &self,
        question: &str,
        context: &[FaqTurn],
        vectors: &[Vec<f32>],
        mode: FaqMode,
        k: usize,
    ) -> Result<FaqAnswer> {
        let texts = Self::readings(question, context);
        if vectors.len() != texts.len() {
            return Err(PipelineError::Invalid(format!(
                "{} vectors for {} readings of the question",
                vectors.len(),
                texts.len()
            )));
        }
        let skip = context
            .last()
            .and_then(|last| last.answer_id.as_ref())
            .and_then(|id| self.entries.iter().position(|e| &e.id == id));
        let mut best: Option<FaqAnswer> = None;
        for (i, (text, v)) in texts.iter().zip(vectors).enumerate() {
            let skip = if i > 0 { skip } else { None };
            let mut a = self.answer_one(text, v, (mode, skip), k)?;
            a.context_used = i > 0;
            if best.as_ref().is_none_or(|b| a.confidence > b.confidence) {
                best = Some(a);
            }
        }
        Ok(best.expect("at least the question itself"))
    }

    /// Answers one question whose vector is `v`, never with entry `skip`.
    pub(crate) fn answer_one(
        &self,
        question: &str,
        v: &[f32],
        (mode, skip): (FaqMode, Option<usize>),
        k: usize,
    ) -> Result<FaqAnswer> {
        let kept =
            |hits: Vec<(usize, f32)>| hits.into_iter().filter(|h| Some(h.0) != skip).collect();
        let (ranked, confidence, intent) = match mode {
            FaqMode::Fused => self.fused(question, v, skip)?,
            FaqMode::Bm25 => top_scored(kept(self.whole.bm25(question, k + 1)?)),
            FaqMode::Dense => top_scored(kept(self.whole.dense(v, k + 1)?)),
        };
        let hand_over = self
            .card
            .thresholds
            .of(mode)
            .is_some_and(|t| confidence < t);
        let answers = ranked
            .into_iter()
            .take(k)
            .enumerate()
            .map(|(r, (e, score))| {
                let entry = &self.entries[e];
                FaqHit {
                    rank: r + 1,
                    id: entry.id.clone(),
                    question: entry.questions.first().cloned().unwrap_or_default(),
                    answer: entry.answer.clone(),
                    category: entry.category.clone(),
                    score,
                }
            })
            .collect();
        Ok(FaqAnswer {
            answers,
            intent,
            confidence,
            hand_over,
            context_used: false,
            mode,
        })
    }

    /// The fused ranking, the calibrated confidence and the intent.
    fn fused(&self, question: &str, v: &[f32], skip: Option<usize>) -> Result<Reading<f32>> {
        let (ranked, row, intent) = self.fused_row(question, v, skip)?;
        Ok((ranked, self.calibrator.score_row(&row)?, intent))
    }

    /// The fused ranking (without entry `skip`), the confidence features and the intent.
    pub(crate) fn fused_row(
        &self,
        question: &str,
        v: &[f32],
        skip: Option<usize>,
    ) -> Result<Reading<Vec<f32>>> {
        let x = DenseMatrix::new(1, v.len(), v.to_vec())?;
        let proba = match &self.intent {
            Some(i) => i.head.predict_proba(&Features::Dense(x.clone()))?,
            None => Vec::new(),
        };
        let oos = self.oos.score(&x, &[], 1)[0];
        let signals = self.parts().signals(question, v, proba.clone(), None)?;
        let mut candidates = self.parts().candidates(&signals, self.card.depth);
        candidates.retain(|c| Some(c.doc) != skip);
        let scores = self.ranker.scores(&candidates)?;
        let row = confidence_features(&candidates, &scores, &signals, oos);
        let mut ranked: Vec<(usize, f32)> = candidates.iter().map(|c| c.doc).zip(scores).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let intent = (!proba.is_empty()).then(|| {
            let c = lmfuse_metrics::argmax(&proba);
            FaqIntent {
                category: self.card.categories[c].clone(),
                probability: proba[c],
            }
        });
        Ok((ranked, row, intent))
    }

    /// Replaces the calibrator (and its card entries).
    pub(crate) fn set_calibrator(&mut self, calibrator: Calibrator) {
        self.card.calibrator_mean = calibrator.mean.clone();
        self.card.calibrator_scale = calibrator.scale.clone();
        self.calibrator = calibrator;
    }
}

/// A ranking (entry, score), the confidence or its features, and the intent.
pub(crate) type Reading<C> = (Vec<(usize, f32)>, C, Option<FaqIntent>);

fn top_scored(hits: Vec<(usize, f32)>) -> Reading<f32> {
    let confidence = hits.first().map_or(0.0, |h| h.1);
    (hits, confidence, None)
}

/// One turn of a conversation: the question and the entry it was answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaqTurn {
    /// The question.
    pub question: String,
    /// The first answer's entry id (`None`: handed over or nothing found).
    pub answer_id: Option<String>,
}

/// The last turns of each conversation, by session id (the oldest session forgotten first
/// beyond a limit).
#[derive(Debug, Default)]
pub struct FaqSessions {
    turns: HashMap<String, VecDeque<FaqTurn>>,
    order: VecDeque<String>,
}

impl FaqSessions {
    /// Turns kept per session.
    pub const TURNS: usize = 3;
    /// Sessions kept.
    pub const SESSIONS: usize = 10_000;

    /// The earlier turns of `session`, oldest first.
    pub fn context(&self, session: &str) -> Vec<FaqTurn> {
        self.turns
            .get(session)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Records a turn of `session`: the question and the engine's reply to it.
    pub fn record(&mut self, session: &str, question: &str, reply: &FaqAnswer) {
        if !self.turns.contains_key(session) {
            if self.order.len() >= Self::SESSIONS {
                if let Some(old) = self.order.pop_front() {
                    self.turns.remove(&old);
                }
            }
            self.order.push_back(session.to_string());
        }
        let turns = self.turns.entry(session.to_string()).or_default();
        let answer_id = match reply.hand_over {
            true => None,
            false => reply.answers.first().map(|h| h.id.clone()),
        };
        turns.push_back(FaqTurn {
            question: question.to_string(),
            answer_id,
        });
        while turns.len() > Self::TURNS {
            turns.pop_front();
        }
    }
}

/// One mode's figures on judged questions.
#[derive(Debug, Clone, Serialize)]
pub struct ModeFigures {
    /// The mode.
    pub mode: FaqMode,
    /// In-scope questions whose first answer is right.
    pub top1_accuracy: f64,
    /// Mean reciprocal rank of the right entry in the first 10 (in-scope questions).
    pub mrr_at_10: f64,
    /// Share of all questions answered (not handed over).
    pub coverage: f64,
    /// Answered questions whose first answer is right (out-of-scope ones never are).
    pub answered_precision: f64,
    /// Handed-over questions that should have been (out of scope, or first answer wrong).
    pub hand_over_precision: f64,
    /// Questions that should have been handed over that were.
    pub hand_over_recall: f64,
    /// Out-of-scope questions handed over.
    pub out_of_scope_recall: f64,
    /// Expected calibration error of the confidence (10 bins; fused mode only).
    pub calibration_error: Option<f64>,
    /// In-scope questions whose entry's category the intent classifier names (fused mode,
    /// tables with categories).
    pub intent_accuracy: Option<f64>,
    /// Median time per question, the encoder pass included, in milliseconds.
    pub p50_ms: f64,
}

/// What `faq eval` reports.
#[derive(Debug, Clone, Serialize)]
pub struct FaqEvalReport {
    /// Questions scored.
    pub questions: usize,
    /// Of which in scope.
    pub in_scope: usize,
    /// Of which out of scope.
    pub out_of_scope: usize,
    /// Each mode's figures.
    pub modes: Vec<ModeFigures>,
}

/// One question's outcome in one mode.
pub(crate) struct Outcome {
    pub(crate) rank: Option<usize>,
    pub(crate) confidence: f32,
    pub(crate) hand_over: bool,
    pub(crate) in_scope: bool,
    pub(crate) intent_right: Option<bool>,
    pub(crate) ms: f64,
}

impl Outcome {
    pub(crate) fn right(&self) -> bool {
        self.rank == Some(1)
    }
}

/// Each question's outcome in `mode`; `vectors` are the questions' ([`Faq::vectors`]).
pub(crate) fn outcomes(
    faq: &Faq,
    questions: &[JudgedQuestion],
    vectors: &[Vec<f32>],
    mode: FaqMode,
) -> Result<Vec<Outcome>> {
    let mut out = Vec::with_capacity(questions.len());
    for (q, v) in questions.iter().zip(vectors) {
        let started = Instant::now();
        let a = faq.answer_one(&q.text, v, (mode, None), 10)?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let rank = q
            .answer_id
            .as_ref()
            .and_then(|id| a.answers.iter().position(|h| &h.id == id))
            .map(|p| p + 1);
        let category = q
            .answer_id
            .as_ref()
            .and_then(|id| faq.entries.iter().find(|e| &e.id == id)?.category.clone());
        let intent_right = match (&a.intent, category) {
            (Some(i), Some(c)) => Some(i.category == c),
            _ => None,
        };
        out.push(Outcome {
            rank,
            confidence: a.confidence,
            hand_over: a.hand_over,
            in_scope: q.answer_id.is_some(),
            intent_right,
            ms,
        });
    }
    Ok(out)
}

/// The figures of outcomes (the encoder pass timed apart is added to each question's time).
pub(crate) fn figures(mode: FaqMode, o: &[Outcome], encode_ms: f64) -> ModeFigures {
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let in_scope: Vec<&Outcome> = o.iter().filter(|x| x.in_scope).collect();
    let answered: Vec<&Outcome> = o.iter().filter(|x| !x.hand_over).collect();
    let should = |x: &Outcome| !x.right();
    let handed = o.iter().filter(|x| x.hand_over).count();
    let handed_right = o.iter().filter(|x| x.hand_over && should(x)).count();
    let oos: Vec<&Outcome> = o.iter().filter(|x| !x.in_scope).collect();
    let intents: Vec<bool> = in_scope.iter().filter_map(|x| x.intent_right).collect();
    let mut ms: Vec<f64> = o.iter().map(|x| x.ms + encode_ms).collect();
    ms.sort_by(f64::total_cmp);
    ModeFigures {
        mode,
        top1_accuracy: ratio(
            in_scope.iter().filter(|x| x.right()).count(),
            in_scope.len(),
        ),
        mrr_at_10: in_scope
            .iter()
            .filter_map(|x| x.rank)
            .map(|r| 1.0 / r as f64)
            .sum::<f64>()
            / in_scope.len().max(1) as f64,
        coverage: ratio(answered.len(), o.len()),
        answered_precision: ratio(
            answered.iter().filter(|x| x.right()).count(),
            answered.len(),
        ),
        hand_over_precision: ratio(handed_right, handed),
        hand_over_recall: ratio(handed_right, o.iter().filter(|x| should(x)).count()),
        out_of_scope_recall: ratio(oos.iter().filter(|x| x.hand_over).count(), oos.len()),
        calibration_error: (mode == FaqMode::Fused).then(|| calibration_error(o)),
        intent_accuracy: (!intents.is_empty())
            .then(|| ratio(intents.iter().filter(|&&r| r).count(), intents.len())),
        p50_ms: ms.get(ms.len() / 2).copied().unwrap_or(0.0),
    }
}

/// Expected calibration error over 10 equal-width confidence bins.
fn calibration_error(o: &[Outcome]) -> f64 {
    let mut bins = [(0.0f64, 0.0f64, 0usize); 10];
    for x in o {
        let b = ((x.confidence.clamp(0.0, 1.0) * 10.0) as usize).min(9);
        bins[b].0 += f64::from(x.confidence);
        bins[b].1 += f64::from(u8::from(x.right()));
        bins[b].2 += 1;
    }
    let n = o.len().max(1) as f64;
    bins.iter()
        .filter(|b| b.2 > 0)
        .map(|b| (b.0 - b.1).abs() / n)
        .sum()
}

/// Scores the engine on judged questions in each of `modes`.
pub fn evaluate_faq(
    faq: &mut Faq,
    questions: &[JudgedQuestion],
    modes: &[FaqMode],
) -> Result<FaqEvalReport> {
    let texts: Vec<String> = questions.iter().map(|q| q.text.clone()).collect();
    let started = Instant::now();
    let vectors = faq.vectors(&texts)?;
    let encode_ms = started.elapsed().as_secs_f64() * 1000.0 / texts.len().max(1) as f64;
    let mut out = Vec::new();
    for &mode in modes {
        let o = outcomes(faq, questions, &vectors, mode)?;
        out.push(figures(
            mode,
            &o,
            if mode == FaqMode::Bm25 {
                0.0
            } else {
                encode_ms
            },
        ));
    }
    let in_scope = questions.iter().filter(|q| q.answer_id.is_some()).count();
    Ok(FaqEvalReport {
        questions: questions.len(),
        in_scope,
        out_of_scope: questions.len() - in_scope,
        modes: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: &str, hand_over: bool) -> FaqAnswer {
        FaqAnswer {
            answers: vec![FaqHit {
                rank: 1,
                id: id.into(),
                question: String::new(),
                answer: String::new(),
                category: None,
                score: 1.0,
            }],
            intent: None,
            confidence: 0.5,
            hand_over,
            context_used: false,
            mode: FaqMode::Fused,
        }
    }

    #[test]
    fn sessions_keep_the_last_turns_and_their_answers() {
        let mut s = FaqSessions::default();
        for i in 0..5 {
            s.record("a", &format!("q{i}"), &reply(&format!("e{i}"), i == 4));
        }
        let turns = s.context("a");
        assert_eq!(turns.len(), FaqSessions::TURNS);
        assert_eq!(turns[0].question, "q2");
        assert_eq!(turns[1].answer_id.as_deref(), Some("e3"));
        assert_eq!(
            turns[2].answer_id, None,
            "a handed-over turn gave no answer"
        );
        assert!(s.context("b").is_empty());
    }
}
