//! The learned ranker: a classical model over features of each (query, candidate) pair
//! ([`lmfuse_retrieval::features`]: both retrievers' scores and ranks, their fusion, query
//! coverage), trained on judged queries. This is lmfuse's fusion idea in ranking.
//!
//! Two kinds are tried and the better kept by k-fold cross-validation over the training
//! queries (mean nDCG@10 on the held-out folds): a linear model with a pairwise objective
//! (logistic regression on the differences of a relevant and an irrelevant candidate's
//! standardised features, RankNet's loss with a linear scorer) for each C of a grid, and
//! gradient-boosted trees with a pointwise log loss. The kept kind is refit on all training
//! queries and saved as a bundle in the index folder (`ranker/`).

use crate::error::{Context, PipelineError, Result};
use crate::observe::Observer;
use crate::{now_rfc3339, VERSION};
use lmfuse_classic::{GbdtParams, Head, HeadParams, LogisticRegressionParams, ProbaHead};
use lmfuse_core::{DenseMatrix, Features};
use lmfuse_metrics::ranking::{evaluate_run, Judgements, Run};
use lmfuse_retrieval::{Candidate, Index, FEATURE_NAMES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The bundle's task.
const TASK: &str = "ranker";
/// The ranker's folder inside an index.
pub const RANKER_DIR: &str = "ranker";
/// Irrelevant candidates paired with each relevant one (the best by RRF), at most.
const NEGATIVES_PER_POSITIVE: usize = 40;

/// A model kind to try.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RankerKind {
    /// Linear scorer, pairwise logistic loss, inverse regularisation `c`.
    PairwiseLinear {
        /// Logistic regression's C.
        c: f64,
    },
    /// Gradient-boosted trees, pointwise log loss.
    PointwiseTrees(GbdtParams),
}

impl RankerKind {
    /// The kinds tried by default.
    pub fn defaults(seed: u64) -> Vec<RankerKind> {
        let mut kinds: Vec<RankerKind> = [0.01, 0.1, 1.0]
            .into_iter()
            .map(|c| RankerKind::PairwiseLinear { c })
            .collect();
        kinds.push(RankerKind::PointwiseTrees(GbdtParams {
            max_rounds: 200,
            max_depth: 3,
            seed,
            ..GbdtParams::default()
        }));
        kinds
    }
}

/// What `search train-ranker` does.
#[derive(Debug, Clone, PartialEq)]
pub struct RankerSpec {
    /// Queries (id, text).
    pub queries: PathBuf,
    /// Training judgements.
    pub qrels: PathBuf,
    /// Candidates per retriever and query.
    pub depth: usize,
    /// Folds of the cross-validation over queries (≥ 2).
    pub folds: usize,
    /// Kinds to try.
    pub kinds: Vec<RankerKind>,
    /// Seed of the fold assignment and the trees.
    pub seed: u64,
}

impl RankerSpec {
    fn check(&self) -> Result<()> {
        if self.folds < 2 || self.depth == 0 || self.kinds.is_empty() {
            return Err(PipelineError::Invalid(
                "the ranker needs at least 2 folds, a positive depth and one kind to try".into(),
            ));
        }
        Ok(())
    }
}

/// One kind's cross-validated score.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KindScore {
    /// The kind.
    pub kind: RankerKind,
    /// Mean nDCG@10 over the held-out folds' queries.
    pub cv_ndcg: f64,
}

/// What training did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankerReport {
    /// Training queries (judged, with at least one relevant candidate or not).
    pub queries: usize,
    /// Candidate rows.
    pub candidates: usize,
    /// Relevant candidates.
    pub relevant: usize,
    /// Relevant documents the candidates missed (out of reach of any ranker).
    pub missed: usize,
    /// Every kind tried.
    pub tried: Vec<KindScore>,
    /// The kind kept.
    pub kept: RankerKind,
}

/// The bundle's card.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RankerCard {
    task: String,
    kind: RankerKind,
    head: HeadParams,
    features: Vec<String>,
    mean: Vec<f32>,
    scale: Vec<f32>,
    depth: usize,
    report: RankerReport,
}

/// A fitted ranker.
pub struct Ranker {
    card: RankerCard,
    head: Head,
}

/// One training query's candidates and labels.
pub(crate) struct Group {
    /// The query's id.
    pub(crate) id: String,
    /// Its candidates with their features.
    pub(crate) candidates: Vec<Candidate>,
    /// Which candidates are relevant.
    pub(crate) relevant: Vec<bool>,
    /// Its cross-validation fold.
    pub(crate) fold: usize,
}

/// The features a ranker reads: their names, and the one that orders the irrelevant
/// candidates paired with a relevant one (a fused prior such as RRF: the hardest first).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FeatureSet<'a> {
    /// Names, in order.
    pub(crate) names: &'a [&'a str],
    /// Position of the prior among them.
    pub(crate) prior: usize,
}

/// The search index's feature set.
fn index_features() -> FeatureSet<'static> {
    FeatureSet {
        names: &FEATURE_NAMES,
        prior: FEATURE_NAMES
            .iter()
            .position(|&n| n == "rrf")
            .expect("rrf is a feature"),
    }
}

/// Candidates of every judged query, with the query ids the index returns them for.
fn groups(
    index: &Index,
    ids: &[String],
    texts: &[String],
    vectors: &[Vec<f32>],
    qrels: &Judgements,
    depth: usize,
    on: &dyn Observer,
) -> Result<(Vec<Group>, usize)> {
    let task = on.task("candidates", ids.len() as u64);
    let mut out = Vec::with_capacity(ids.len());
    let mut missed = 0;
    for ((id, text), vector) in ids.iter().zip(texts).zip(vectors) {
        let candidates = index.candidates(text, vector, depth)?;
        let judged = &qrels[id];
        let docs = index.documents();
        let relevant: Vec<bool> = candidates
            .iter()
            .map(|c| judged.get(&docs[c.doc].id).is_some_and(|&g| g >= 1))
            .collect();
        let wanted = judged.values().filter(|&&g| g >= 1).count();
        missed += wanted - relevant.iter().filter(|&&r| r).count();
        out.push(Group {
            id: id.clone(),
            candidates,
            relevant,
            fold: 0,
        });
        task.inc(1);
    }
    task.finish();
    Ok((out, missed))
}

/// Per-feature mean and scale (standard deviation, 1 where it is 0) over `rows`.
fn standardiser(rows: &[&[f32]], n_feat: usize) -> (Vec<f32>, Vec<f32>) {
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0.0f64; n_feat];
    for r in rows {
        for (m, &x) in mean.iter_mut().zip(r.iter()) {
            *m += f64::from(x) / n;
        }
    }
    let mut var = vec![0.0f64; n_feat];
    for r in rows {
        for ((v, &x), m) in var.iter_mut().zip(r.iter()).zip(&mean) {
            *v += (f64::from(x) - m).powi(2) / n;
        }
    }
    let scale = var
        .iter()
        .map(|v| if *v > 1e-12 { v.sqrt() as f32 } else { 1.0 })
        .collect();
    (mean.iter().map(|&m| m as f32).collect(), scale)
}

/// `x` standardised by per-feature `mean` and `scale`.
pub(crate) fn standardise(x: &[f32], mean: &[f32], scale: &[f32]) -> Vec<f32> {
    x.iter()
        .zip(mean)
        .zip(scale)
        .map(|((x, m), s)| (x - m) / s)
        .collect()
}

/// The training rows of `kind`: pairwise differences or pointwise candidates.
fn training_rows(
    kind: &RankerKind,
    groups: &[&Group],
    prior: usize,
    (mean, scale): (&[f32], &[f32]),
) -> (Vec<f32>, Vec<usize>) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for g in groups {
        let z: Vec<Vec<f32>> = g
            .candidates
            .iter()
            .map(|c| standardise(&c.features, mean, scale))
            .collect();
        match kind {
            RankerKind::PointwiseTrees(_) => {
                for (row, &rel) in z.iter().zip(&g.relevant) {
                    x.extend_from_slice(row);
                    y.push(usize::from(rel));
                }
            }
            RankerKind::PairwiseLinear { .. } => {
                let mut negatives: Vec<usize> = (0..z.len()).filter(|&i| !g.relevant[i]).collect();
                negatives.sort_by(|&a, &b| {
                    g.candidates[b].features[prior].total_cmp(&g.candidates[a].features[prior])
                });
                negatives.truncate(NEGATIVES_PER_POSITIVE);
                for p in (0..z.len()).filter(|&i| g.relevant[i]) {
                    for &n in &negatives {
                        let d: Vec<f32> = z[p].iter().zip(&z[n]).map(|(a, b)| a - b).collect();
                        x.extend(d.iter().map(|v| -v));
                        y.push(0);
                        x.extend(d);
                        y.push(1);
                    }
                }
            }
        }
    }
    (x, y)
}

/// Logistic regression with inverse regularisation `c`, the other settings default.
pub(crate) fn logreg(c: f64) -> HeadParams {
    HeadParams::Logreg(LogisticRegressionParams {
        c,
        ..LogisticRegressionParams::default()
    })
}

/// The model of a ranker kind.
pub(crate) fn head_params(kind: &RankerKind) -> HeadParams {
    match kind {
        RankerKind::PairwiseLinear { c } => logreg(*c),
        RankerKind::PointwiseTrees(p) => HeadParams::Gbdt(*p),
    }
}

/// A fitted model with its standardisation.
pub(crate) struct Fitted {
    /// The model over standardised features.
    pub(crate) head: Head,
    /// Each feature's mean.
    pub(crate) mean: Vec<f32>,
    /// Each feature's scale.
    pub(crate) scale: Vec<f32>,
}

/// Fits `kind` on `groups`; `None` when they hold no relevant candidate.
fn fit_kind(kind: &RankerKind, groups: &[&Group], features: FeatureSet) -> Result<Option<Fitted>> {
    let n_feat = features.names.len();
    let rows: Vec<&[f32]> = groups
        .iter()
        .flat_map(|g| g.candidates.iter().map(|c| c.features.as_slice()))
        .collect();
    let (mean, scale) = standardiser(&rows, n_feat);
    let (x, y) = training_rows(kind, groups, features.prior, (&mean, &scale));
    if !y.contains(&1) || !y.contains(&0) {
        return Ok(None);
    }
    let rows = Features::Dense(DenseMatrix::new(y.len(), n_feat, x)?);
    let head = head_params(kind).fit(&rows, &y, 2)?;
    Ok(Some(Fitted { head, mean, scale }))
}

/// Scores of candidates under a head over standardised features (higher is better).
fn score_rows(
    head: &Head,
    standardisation: (&[f32], &[f32]),
    candidates: &[Candidate],
) -> Result<Vec<f32>> {
    let rows: Vec<&[f32]> = candidates.iter().map(|c| c.features.as_slice()).collect();
    positive_proba(head, standardisation, &rows)
}

/// The positive class's probability of each row under a two-class head over standardised
/// features.
fn positive_proba(
    head: &Head,
    (mean, scale): (&[f32], &[f32]),
    rows: &[&[f32]],
) -> Result<Vec<f32>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let x: Vec<f32> = rows
        .iter()
        .flat_map(|r| standardise(r, mean, scale))
        .collect();
    let features = Features::Dense(DenseMatrix::new(rows.len(), mean.len(), x)?);
    let proba = head.predict_proba(&features)?;
    Ok(proba.chunks_exact(2).map(|p| p[1]).collect())
}

impl Fitted {
    /// Scores of candidates (higher is better).
    pub(crate) fn scores(&self, candidates: &[Candidate]) -> Result<Vec<f32>> {
        score_rows(&self.head, (&self.mean, &self.scale), candidates)
    }

    /// Fits `params` as a model of `positive` over the standardised `rows`.
    pub(crate) fn fit_binary(
        params: &HeadParams,
        rows: &[Vec<f32>],
        positive: &[bool],
    ) -> Result<Self> {
        let n_feat = rows.first().map_or(0, Vec::len);
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let (mean, scale) = standardiser(&refs, n_feat);
        let x: Vec<f32> = rows
            .iter()
            .flat_map(|r| standardise(r, &mean, &scale))
            .collect();
        let y: Vec<usize> = positive.iter().map(|&p| usize::from(p)).collect();
        let features = Features::Dense(DenseMatrix::new(rows.len(), n_feat, x)?);
        let head = params.fit(&features, &y, 2)?;
        Ok(Fitted { head, mean, scale })
    }

    /// The positive class's probability of one row.
    pub(crate) fn score_row(&self, row: &[f32]) -> Result<f32> {
        Ok(positive_proba(&self.head, (&self.mean, &self.scale), &[row])?[0])
    }
}

/// Each group's candidate scores from a model fitted without the group's fold (`folds`
/// folds); `None` for the groups of a fold whose training part holds no relevant candidate.
pub(crate) fn held_out_scores(
    kind: &RankerKind,
    groups: &[Group],
    folds: usize,
    features: FeatureSet,
) -> Result<Vec<Option<Vec<f32>>>> {
    let mut out: Vec<Option<Vec<f32>>> = (0..groups.len()).map(|_| None).collect();
    for fold in 0..folds {
        let train: Vec<&Group> = groups.iter().filter(|g| g.fold != fold).collect();
        let Some(fitted) = fit_kind(kind, &train, features)? else {
            continue;
        };
        for (i, g) in groups.iter().enumerate().filter(|(_, g)| g.fold == fold) {
            out[i] = Some(fitted.scores(&g.candidates)?);
        }
    }
    Ok(out)
}

/// Mean nDCG@10 of `kind` over `folds` held-out query folds; `key` names a candidate as the
/// judgements do.
fn cross_validate(
    kind: &RankerKind,
    groups: &[Group],
    (folds, features): (usize, FeatureSet),
    key: &dyn Fn(&Candidate) -> String,
    qrels: &Judgements,
) -> Result<f64> {
    let mut run = Run::new();
    let held_out = held_out_scores(kind, groups, folds, features)?;
    for (g, s) in groups.iter().zip(held_out) {
        let Some(s) = s else { continue };
        run.insert(
            g.id.clone(),
            g.candidates
                .iter()
                .zip(s)
                .map(|(c, s)| (key(c), f64::from(s)))
                .collect(),
        );
    }
    let held_out: Judgements = qrels
        .iter()
        .filter(|(q, _)| run.contains_key(*q))
        .map(|(q, j)| (q.clone(), j.clone()))
        .collect();
    Ok(evaluate_run(&held_out, &run, 10, 100).0.ndcg)
}

/// Trains a ranker for `index` on judged queries (their vectors given), choosing the kind by
/// cross-validation; queries are shuffled into folds by `spec.seed`.
#[allow(clippy::too_many_arguments)]
pub fn train_ranker(
    index: &Index,
    ids: &[String],
    texts: &[String],
    vectors: &[Vec<f32>],
    qrels: &Judgements,
    spec: &RankerSpec,
    on: &dyn Observer,
) -> Result<Ranker> {
    spec.check()?;
    let (mut groups, missed) = groups(index, ids, texts, vectors, qrels, spec.depth, on)?;
    lmfuse_core::SeededRng::new(spec.seed).shuffle(&mut groups);
    for (i, g) in groups.iter_mut().enumerate() {
        g.fold = i % spec.folds;
    }
    let key = |c: &Candidate| index.documents()[c.doc].id.clone();
    let (kept, tried, fitted) = select_and_fit(
        &groups,
        (&spec.kinds, spec.folds),
        index_features(),
        &key,
        qrels,
        on,
    )?;
    let report = RankerReport {
        queries: groups.len(),
        candidates: groups.iter().map(|g| g.candidates.len()).sum(),
        relevant: groups
            .iter()
            .map(|g| g.relevant.iter().filter(|&&r| r).count())
            .sum(),
        missed,
        tried,
        kept,
    };
    let card = RankerCard {
        task: TASK.into(),
        kind: kept,
        head: head_params(&kept),
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        mean: fitted.mean,
        scale: fitted.scale,
        depth: spec.depth,
        report,
    };
    Ok(Ranker {
        card,
        head: fitted.head,
    })
}

/// Cross-validates each of `spec.kinds` over `groups` (in their folds) and refits the best
/// on all of them: the kept kind, every kind's score, the fitted model.
pub(crate) fn select_and_fit(
    groups: &[Group],
    (kinds, folds): (&[RankerKind], usize),
    features: FeatureSet,
    key: &dyn Fn(&Candidate) -> String,
    qrels: &Judgements,
    on: &dyn Observer,
) -> Result<(RankerKind, Vec<KindScore>, Fitted)> {
    let mut tried = Vec::new();
    let task = on.task("cross-validating rankers", kinds.len() as u64);
    for kind in kinds {
        let cv_ndcg = cross_validate(kind, groups, (folds, features), key, qrels)?;
        tried.push(KindScore {
            kind: *kind,
            cv_ndcg,
        });
        task.inc(1);
    }
    task.finish();
    let best = tried
        .iter()
        .max_by(|a, b| a.cv_ndcg.total_cmp(&b.cv_ndcg))
        .expect("kinds checked non-empty");
    let kept = best.kind;
    let all: Vec<&Group> = groups.iter().collect();
    let fitted = fit_kind(&kept, &all, features)?.ok_or_else(|| {
        PipelineError::Invalid(
            "no judged query has a relevant document among its candidates".into(),
        )
    })?;
    Ok((kept, tried, fitted))
}

impl Ranker {
    /// What training did.
    pub fn report(&self) -> &RankerReport {
        &self.card.report
    }

    /// Candidates per retriever the ranker was trained with.
    pub fn depth(&self) -> usize {
        self.card.depth
    }

    /// The `k` best documents for a query: its candidates ranked by the model.
    pub fn rank(
        &self,
        index: &Index,
        query: &str,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<(usize, f32)>> {
        let candidates = index.candidates(query, vector, self.card.depth.max(k))?;
        let s = self.scores(&candidates)?;
        let mut ranked: Vec<(usize, f32)> =
            candidates.iter().zip(s).map(|(c, s)| (c.doc, s)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        Ok(ranked)
    }

    /// Scores of candidates (higher is better).
    fn scores(&self, candidates: &[Candidate]) -> Result<Vec<f32>> {
        score_rows(&self.head, (&self.card.mean, &self.card.scale), candidates)
    }

    /// Saves the ranker as a bundle in `dir` (atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let manifest = lmfuse_bundle::Manifest {
            format_version: lmfuse_bundle::PLAIN_VERSION,
            lmfuse_version: VERSION.into(),
            created_at: now_rfc3339(),
            model: serde_json::to_value(&self.card)?,
            files: BTreeMap::new(),
        };
        lmfuse_bundle::save(dir, manifest, &self.head.to_tensors(), &BTreeMap::new())
            .with_context(|| format!("cannot save the ranker {}", dir.display()))
    }

    /// Loads a ranker bundle, refusing any other kind of bundle.
    pub fn load(dir: &Path) -> Result<Self> {
        let bundle = lmfuse_bundle::load(dir)
            .with_context(|| format!("cannot load the ranker {}", dir.display()))?;
        let task = bundle.manifest.model.get("task").and_then(|t| t.as_str());
        if task != Some(TASK) {
            return Err(PipelineError::Invalid(format!(
                "{} is not a ranker bundle",
                dir.display()
            )));
        }
        let card: RankerCard = serde_json::from_value(bundle.manifest.model.clone())
            .with_context(|| format!("{}: damaged ranker card", dir.display()))?;
        let n = FEATURE_NAMES.len();
        if card.features != FEATURE_NAMES || card.mean.len() != n || card.scale.len() != n {
            return Err(PipelineError::Invalid(format!(
                "{}: the ranker's features differ from this lmfuse's ({}); retrain it",
                dir.display(),
                FEATURE_NAMES.join(", ")
            )));
        }
        let head = card.head.restore(n, 2, &bundle.tensors)?;
        Ok(Ranker { card, head })
    }
}
