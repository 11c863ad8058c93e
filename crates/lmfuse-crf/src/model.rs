//! The CRF: feature indexing, the training objective, Viterbi decoding and marginals.

use crate::chain::{Chain, Lattice};
use crate::features::{sentence_attributes, Gazetteer};
use crate::{CrfError, CrfParams};
use lmfuse_classic::{minimize_with, LbfgsOptions};
use lmfuse_core::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Sentences are split into this many fixed chunks for the parallel objective, so the sum of
/// their gradients (taken in chunk order) is the same whatever the thread count.
const CHUNKS: usize = 8;

/// A decoded sentence: its IOB2 tags and each tag's marginal probability.
pub type Tagged = (Vec<String>, Vec<f32>);

/// One sentence's tokens and tags, borrowed.
pub type TaggedTokens<'a> = (&'a [String], &'a [String]);

/// What training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// L-BFGS iterations run.
    pub iterations: usize,
    /// Objective (negative log-likelihood + penalty) at the end.
    pub objective: f64,
    /// Distinct attributes kept.
    pub attributes: usize,
    /// State weights (attribute, tag) plus transition weights.
    pub weights: usize,
}

/// A trained linear-chain CRF.
#[derive(Debug, Clone)]
pub struct Crf {
    params: CrfParams,
    gazetteer: Gazetteer,
    labels: Vec<String>,
    attributes: Vec<String>,
    index: HashMap<String, u32>,
    /// `offsets[a]..offsets[a + 1]` are attribute `a`'s entries in `state_labels`/`state_weights`.
    offsets: Vec<u32>,
    state_labels: Vec<u32>,
    state_weights: Vec<f32>,
    /// `transitions[i * L + j]`: from tag `i` to tag `j`.
    transitions: Vec<f32>,
    chain: Chain,
    dense: Option<Dense>,
    report: FitReport,
}

/// Real-valued token features (an encoder's word vectors): standardised by the training
/// tokens' mean and deviation, then weighted per tag.
#[derive(Debug, Clone)]
struct Dense {
    dim: usize,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    /// `weights[l * dim + d]`.
    weights: Vec<f32>,
}

impl Dense {
    /// Mean and 1/deviation of each dimension over every token of `vectors`.
    fn fit(vectors: &[&[f32]], dim: usize) -> Self {
        let mut sum = vec![0.0f64; dim];
        let mut sq = vec![0.0f64; dim];
        let mut n = 0usize;
        for row in vectors.iter().flat_map(|v| v.chunks_exact(dim)) {
            n += 1;
            for d in 0..dim {
                let x = f64::from(row[d]);
                sum[d] += x;
                sq[d] += x * x;
            }
        }
        let n = n.max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let inv_std = sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| 1.0 / (q / n - m * m).max(1e-12).sqrt() as f32)
            .collect();
        Self {
            dim,
            mean: mean.iter().map(|&m| m as f32).collect(),
            inv_std,
            weights: Vec::new(),
        }
    }

    /// One token's vector standardised into `out`.
    fn standardise_row(&self, x: &[f32], out: &mut [f32]) {
        for (((o, x), m), s) in out.iter_mut().zip(x).zip(&self.mean).zip(&self.inv_std) {
            *o = (x - m) * s;
        }
    }
}

/// A sentence as attribute ids per token (CSR) and tag indices, with its dense features
/// borrowed as given (standardised token by token when read, so training holds no second
/// copy of the vectors).
struct Encoded<'a> {
    ids: Vec<u32>,
    starts: Vec<u32>,
    gold: Vec<u32>,
    /// Raw dense features, tokens × dim (empty without them).
    dense: &'a [f32],
}

impl Encoded<'_> {
    fn len(&self) -> usize {
        self.starts.len() - 1
    }
    fn token(&self, t: usize) -> &[u32] {
        &self.ids[self.starts[t] as usize..self.starts[t + 1] as usize]
    }
}

/// Checks that each sentence has tokens × dim dense values.
fn check_dense(
    lengths: impl Iterator<Item = usize>,
    vectors: &[Vec<f32>],
    dim: usize,
) -> Result<(), CrfError> {
    let lengths: Vec<usize> = lengths.collect();
    if vectors.len() != lengths.len() || dim == 0 {
        return Err(CrfError::Stored(format!(
            "{} sentences but dense features for {} (dim {dim})",
            lengths.len(),
            vectors.len()
        )));
    }
    for (sentence, (n, v)) in lengths.iter().zip(vectors).enumerate() {
        if v.len() != n * dim || v.iter().any(|x| !x.is_finite()) {
            return Err(CrfError::Dense {
                sentence,
                tokens: *n,
                values: v.len(),
                dim,
            });
        }
    }
    Ok(())
}

/// The attributes of a sentence's tokens: the hand-made ones, or only a bias without them.
fn attributes<S: AsRef<str>>(
    tokens: &[S],
    params: &CrfParams,
    gazetteer: &Gazetteer,
) -> Vec<Vec<String>> {
    if params.hand_features {
        sentence_attributes(tokens, &params.features, gazetteer)
    } else {
        vec![vec!["bias".to_string()]; tokens.len()]
    }
}

/// Tag name → index.
fn label_index(labels: &[String]) -> HashMap<&str, u32> {
    labels
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect()
}

impl Crf {
    /// Trains on `(tokens, IOB2 tags)` sentences, with `dense` token vectors (tokens × dim
    /// per sentence) beside the hand-made features when given; `progress(iteration,
    /// objective)` is called after each L-BFGS step.
    pub fn fit(
        sentences: &[TaggedTokens<'_>],
        params: &CrfParams,
        gazetteer: Gazetteer,
        dense: Option<(&[Vec<f32>], usize)>,
        progress: impl FnMut(usize, f64),
    ) -> Result<Self, CrfError> {
        params.validate()?;
        if sentences.is_empty() {
            return Err(CrfError::Empty);
        }
        for (sentence, (tokens, tags)) in sentences.iter().enumerate() {
            if tokens.len() != tags.len() {
                return Err(CrfError::Lengths {
                    sentence,
                    tokens: tokens.len(),
                    tags: tags.len(),
                });
            }
        }
        if let Some((vectors, dim)) = dense {
            check_dense(sentences.iter().map(|s| s.0.len()), vectors, dim)?;
        }
        let (mut crf, attrs) = Self::index(sentences, params, gazetteer);
        crf.dense =
            dense.map(|(v, dim)| Dense::fit(&v.iter().map(Vec::as_slice).collect::<Vec<_>>(), dim));
        let encoded = crf.encode_all(attrs, sentences, dense.map(|d| d.0));
        crf.train(&encoded, progress);
        Ok(crf)
    }

    /// A CRF over dense token vectors alone: tag `l`'s score is `weights[l] · x + bias[l]`
    /// (`weights` is `L × dim`), with `transitions` (`L × L`). This is the head of an encoder
    /// fine-tuned for tagging (a softmax head has zero transitions), so that it decodes, scores
    /// and saves as any CRF does.
    pub fn from_emission_head(
        labels: Vec<String>,
        dim: usize,
        weights: Vec<f32>,
        bias: Vec<f32>,
        transitions: Vec<f32>,
    ) -> Result<Self, CrfError> {
        let l = labels.len();
        if l == 0 || dim == 0 || weights.len() != l * dim || bias.len() != l {
            return Err(CrfError::Stored(format!(
                "an emission head over {l} tags and {dim} dimensions needs {} weights and {l} \
                 biases, not {} and {}",
                l * dim,
                weights.len(),
                bias.len()
            )));
        }
        if transitions.len() != l * l {
            return Err(CrfError::Stored(format!(
                "{} transitions for {l} tags",
                transitions.len()
            )));
        }
        let attributes = vec!["bias".to_string()];
        Ok(Self {
            params: CrfParams {
                hand_features: false,
                ..CrfParams::default()
            },
            gazetteer: Gazetteer::default(),
            index: HashMap::from([("bias".to_string(), 0)]),
            attributes,
            offsets: vec![0, l as u32],
            state_labels: (0..l as u32).collect(),
            state_weights: bias,
            transitions,
            chain: Chain::iob2(&labels),
            labels,
            dense: Some(Dense {
                dim,
                mean: vec![0.0; dim],
                inv_std: vec![1.0; dim],
                weights,
            }),
            report: FitReport {
                iterations: 0,
                objective: 0.0,
                attributes: 1,
                weights: l + l * dim + l * l,
            },
        })
    }

    /// Labels, attributes (by frequency cut) and the (attribute, tag) pairs seen in training.
    /// Also returns each training sentence's attribute strings, for [`Crf::encode_all`].
    fn index(
        sentences: &[TaggedTokens<'_>],
        params: &CrfParams,
        gazetteer: Gazetteer,
    ) -> (Self, Vec<Vec<Vec<String>>>) {
        let tag_set: BTreeSet<&str> = sentences
            .iter()
            .flat_map(|(_, tags)| tags.iter().map(String::as_str))
            .chain(["O"])
            .collect();
        let labels: Vec<String> = tag_set.into_iter().map(String::from).collect();
        let label_index = label_index(&labels);
        let per_sentence: Vec<Vec<Vec<String>>> = sentences
            .par_iter()
            .map(|(tokens, _)| attributes(tokens, params, &gazetteer))
            .collect();
        let mut counts: HashMap<&str, (usize, BTreeSet<u32>)> = HashMap::new();
        for (attrs, (_, tags)) in per_sentence.iter().zip(sentences) {
            for (token, tag) in attrs.iter().zip(tags.iter()) {
                for a in token {
                    let entry = counts.entry(a.as_str()).or_default();
                    entry.0 += 1;
                    entry.1.insert(label_index[tag.as_str()]);
                }
            }
        }
        let mut kept: Vec<(&str, BTreeSet<u32>)> = counts
            .into_iter()
            .filter(|(_, (n, _))| *n >= params.min_freq)
            .map(|(a, (_, tags))| (a, tags))
            .collect();
        kept.sort_by(|a, b| a.0.cmp(b.0));
        let mut offsets = vec![0u32];
        let mut state_labels = Vec::new();
        for (_, tags) in &kept {
            state_labels.extend(tags.iter().copied());
            offsets.push(state_labels.len() as u32);
        }
        let attributes: Vec<String> = kept.into_iter().map(|(a, _)| a.to_string()).collect();
        let chain = Chain::iob2(&labels);
        let l = labels.len();
        let crf = Self {
            params: params.clone(),
            gazetteer,
            index: attributes
                .iter()
                .enumerate()
                .map(|(i, a)| (a.clone(), i as u32))
                .collect(),
            attributes,
            offsets,
            state_weights: vec![0.0; state_labels.len()],
            state_labels,
            transitions: vec![0.0; l * l],
            labels,
            chain,
            dense: None,
            report: FitReport {
                iterations: 0,
                objective: f64::NAN,
                attributes: 0,
                weights: 0,
            },
        };
        (crf, per_sentence)
    }

    /// The training sentences as attribute ids (from `attrs`, their attribute strings), gold
    /// tag indices and standardised dense vectors.
    fn encode_all<'a>(
        &self,
        attrs: Vec<Vec<Vec<String>>>,
        sentences: &[TaggedTokens<'_>],
        dense: Option<&'a [Vec<f32>]>,
    ) -> Vec<Encoded<'a>> {
        let label_index = label_index(&self.labels);
        attrs
            .into_par_iter()
            .zip(sentences)
            .enumerate()
            .map(|(i, (attrs, (_, tags)))| {
                let (ids, starts) = self.attribute_ids(&attrs);
                let gold = tags.iter().map(|t| label_index[t.as_str()]).collect();
                Encoded {
                    ids,
                    starts,
                    gold,
                    dense: dense.map_or(&[][..], |d| d[i].as_slice()),
                }
            })
            .collect()
    }

    /// Attribute ids of a sentence's tokens (all ids, then each token's start); attributes the
    /// model does not know are skipped.
    fn attribute_ids(&self, attrs: &[Vec<String>]) -> (Vec<u32>, Vec<u32>) {
        let mut ids = Vec::new();
        let mut starts = vec![0u32];
        for token in attrs {
            ids.extend(token.iter().filter_map(|a| self.index.get(a).copied()));
            starts.push(ids.len() as u32);
        }
        (ids, starts)
    }

    fn train(&mut self, encoded: &[Encoded], mut progress: impl FnMut(usize, f64)) {
        let (n_state, n_dense) = self.layout();
        let x0 = vec![0.0; n_state + n_dense + self.transitions.len()];
        let chunk = encoded.len().div_ceil(CHUNKS);
        let (period, delta) = (self.params.period, self.params.delta);
        let mut history: Vec<f64> = Vec::new();
        let c2 = self.params.c2;
        let objective = |w: &[f64], g: &mut [f64]| -> f64 {
            let parts: Vec<(f64, Vec<f64>)> = encoded
                .par_chunks(chunk.max(1))
                .map(|part| {
                    let mut grad = vec![0.0; w.len()];
                    let loss = part
                        .iter()
                        .map(|s| self.sentence_loss(w, s, &mut grad))
                        .sum();
                    (loss, grad)
                })
                .collect();
            g.fill(0.0);
            let mut loss = 0.0;
            for (part_loss, grad) in parts {
                loss += part_loss;
                g.iter_mut().zip(&grad).for_each(|(a, b)| *a += b);
            }
            for (gi, wi) in g.iter_mut().zip(w) {
                loss += c2 * wi * wi;
                *gi += 2.0 * c2 * wi;
            }
            loss
        };
        let stop = |iteration: usize, value: f64| {
            progress(iteration, value);
            history.push(value);
            history.len() > period && {
                let before = history[history.len() - 1 - period];
                (before - value) / value.abs().max(1e-12) < delta
            }
        };
        let options = LbfgsOptions {
            max_iter: self.params.max_iter,
            gtol: 1e-8,
            memory: 6,
        };
        let result = minimize_with(objective, x0, options, stop);
        for (w, x) in self.state_weights.iter_mut().zip(&result.x[..n_state]) {
            *w = *x as f32;
        }
        if let Some(dense) = &mut self.dense {
            dense.weights = result.x[n_state..n_state + n_dense]
                .iter()
                .map(|&x| x as f32)
                .collect();
        }
        for (w, x) in self
            .transitions
            .iter_mut()
            .zip(&result.x[n_state + n_dense..])
        {
            *w = *x as f32;
        }
        self.report = FitReport {
            iterations: result.iterations,
            objective: result.value,
            attributes: self.attributes.len(),
            weights: result.x.len(),
        };
    }

    /// Per-token tag scores from attribute ids: `scores[t * L + l]`.
    fn emissions(&self, w: &[f64], s: &Encoded) -> Vec<f64> {
        let l = self.labels.len();
        let mut scores = vec![0.0; s.len() * l];
        for t in 0..s.len() {
            for &a in s.token(t) {
                let range =
                    self.offsets[a as usize] as usize..self.offsets[a as usize + 1] as usize;
                for k in range {
                    scores[t * l + self.state_labels[k] as usize] += w[k];
                }
            }
        }
        if let Some(dense) = &self.dense {
            let (n_state, n_dense) = self.layout();
            let weights = &w[n_state..n_state + n_dense];
            let dim = dense.dim;
            let mut x = vec![0.0f32; dim];
            for (t, raw) in s.dense.chunks_exact(dim).enumerate() {
                dense.standardise_row(raw, &mut x);
                for (score, row) in scores[t * l..(t + 1) * l]
                    .iter_mut()
                    .zip(weights.chunks_exact(dim))
                {
                    *score += row
                        .iter()
                        .zip(&x)
                        .map(|(a, b)| a * f64::from(*b))
                        .sum::<f64>();
                }
            }
        }
        scores
    }

    /// Sizes of the state and dense blocks of the parameter vector (transitions follow).
    fn layout(&self) -> (usize, usize) {
        let dense = self.dense.as_ref().map_or(0, |d| d.dim * self.labels.len());
        (self.state_weights.len(), dense)
    }

    /// Adds one sentence's gradient of `log Z − score(gold)` to `grad`; returns that loss.
    fn sentence_loss(&self, w: &[f64], s: &Encoded, grad: &mut [f64]) -> f64 {
        let l = self.labels.len();
        let (n_state, n_dense) = self.layout();
        let emit = self.emissions(w, s);
        let trans = &w[n_state + n_dense..];
        let lattice = Lattice::new(&emit, trans, &self.chain, true);
        let mut marginals = vec![0.0; l];
        let mut x = vec![0.0f32; self.dense.as_ref().map_or(0, |d| d.dim)];
        let mut gold_score = 0.0;
        for t in 0..s.len() {
            let y = s.gold[t] as usize;
            gold_score += emit[t * l + y];
            if t > 0 {
                let prev = s.gold[t - 1] as usize;
                gold_score += trans[prev * l + y];
                grad[n_state + n_dense + prev * l + y] -= 1.0;
            }
            lattice.marginals_into(t, &mut marginals);
            for &a in s.token(t) {
                let range =
                    self.offsets[a as usize] as usize..self.offsets[a as usize + 1] as usize;
                for k in range {
                    let tag = self.state_labels[k] as usize;
                    grad[k] += marginals[tag] - f64::from(u8::from(tag == y));
                }
            }
            if let Some(dense) = &self.dense {
                let dim = dense.dim;
                dense.standardise_row(&s.dense[t * dim..(t + 1) * dim], &mut x);
                let block = &mut grad[n_state..n_state + n_dense];
                for (tag, row) in block.chunks_exact_mut(dim).enumerate() {
                    let coef = marginals[tag] - f64::from(u8::from(tag == y));
                    row.iter_mut()
                        .zip(&x)
                        .for_each(|(g, v)| *g += coef * f64::from(*v));
                }
            }
        }
        lattice.add_pair_marginals(&mut grad[n_state + n_dense..]);
        lattice.log_z - gold_score
    }

    /// The IOB2 tags of each sentence, decoded by Viterbi, and each tag's marginal probability.
    pub fn predict<S: AsRef<str> + Sync>(
        &self,
        sentences: &[Vec<S>],
        dense: Option<&[Vec<f32>]>,
    ) -> Result<Vec<Tagged>, CrfError> {
        match (&self.dense, dense) {
            (Some(d), Some(v)) => check_dense(sentences.iter().map(Vec::len), v, d.dim)?,
            (None, None) => {}
            (Some(_), None) => {
                return Err(CrfError::Stored(
                    "the model reads dense token features; none were given".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(CrfError::Stored(
                    "dense token features given to a model without them".into(),
                ))
            }
        }
        let w = self.parameters();
        Ok(sentences
            .par_iter()
            .enumerate()
            .map(|(i, tokens)| self.predict_one(&w, tokens, dense.map(|d| d[i].as_slice())))
            .collect())
    }

    /// The parameter vector in training layout: state, dense, transitions.
    fn parameters(&self) -> Vec<f64> {
        let dense = self.dense.as_ref().map_or(&[][..], |d| &d.weights[..]);
        self.state_weights
            .iter()
            .chain(dense)
            .chain(&self.transitions)
            .map(|&x| f64::from(x))
            .collect()
    }

    fn predict_one<S: AsRef<str>>(&self, w: &[f64], tokens: &[S], dense: Option<&[f32]>) -> Tagged {
        if tokens.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let (ids, starts) = self.attribute_ids(&attributes(tokens, &self.params, &self.gazetteer));
        let s = Encoded {
            ids,
            starts,
            gold: Vec::new(),
            dense: dense.unwrap_or(&[]),
        };
        let (n_state, n_dense) = self.layout();
        let trans = &w[n_state + n_dense..];
        let emit = self.emissions(w, &s);
        let path = self.chain.viterbi(&emit, trans, true);
        let lattice = Lattice::new(&emit, trans, &self.chain, true);
        let mut marginals = vec![0.0; self.labels.len()];
        let scores = path
            .iter()
            .enumerate()
            .map(|(t, &y)| {
                lattice.marginals_into(t, &mut marginals);
                marginals[y] as f32
            })
            .collect();
        (
            path.into_iter().map(|y| self.labels[y].clone()).collect(),
            scores,
        )
    }

    /// The tags, in index order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// What training did.
    pub fn report(&self) -> &FitReport {
        &self.report
    }

    /// The hyperparameters it was trained with.
    pub fn params(&self) -> &CrfParams {
        &self.params
    }
}

/// The bundle form of a CRF: tensors plus a JSON card (`labels`, `params`, `gazetteer`,
/// `report`) and the attribute strings.
pub struct StoredCrf {
    /// `crf.offsets` (i32, A+1), `crf.state_labels` (i32), `crf.state_weights` (f32),
    /// `crf.transitions` (f32, L×L).
    pub tensors: BTreeMap<String, Tensor>,
    /// Labels, parameters, gazetteer, report.
    pub card: serde_json::Value,
    /// Attribute strings, by id.
    pub attributes: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Card {
    labels: Vec<String>,
    params: CrfParams,
    gazetteer: Gazetteer,
    report: FitReport,
}

impl Crf {
    /// The model as tensors, a card and the attribute list.
    pub fn to_stored(&self) -> StoredCrf {
        let ints = |v: &[u32]| Tensor::i32(vec![v.len()], v.iter().map(|&x| x as i32).collect());
        let l = self.labels.len();
        let mut tensors = BTreeMap::from([
            ("crf.offsets".to_string(), ints(&self.offsets)),
            ("crf.state_labels".to_string(), ints(&self.state_labels)),
            (
                "crf.state_weights".to_string(),
                Tensor::f32(vec![self.state_weights.len()], self.state_weights.clone()),
            ),
            (
                "crf.transitions".to_string(),
                Tensor::f32(vec![l, l], self.transitions.clone()),
            ),
        ]);
        if let Some(d) = &self.dense {
            let f = |v: &[f32], shape: Vec<usize>| Tensor::f32(shape, v.to_vec());
            tensors.insert("crf.dense_mean".into(), f(&d.mean, vec![d.dim]));
            tensors.insert("crf.dense_inv_std".into(), f(&d.inv_std, vec![d.dim]));
            tensors.insert("crf.dense_weights".into(), f(&d.weights, vec![l, d.dim]));
        }
        let card = Card {
            labels: self.labels.clone(),
            params: self.params.clone(),
            gazetteer: self.gazetteer.clone(),
            report: self.report.clone(),
        };
        StoredCrf {
            tensors,
            card: serde_json::to_value(card).expect("a CRF card serialises"),
            attributes: self.attributes.clone(),
        }
    }

    /// Rebuilds a model from [`to_stored`](Self::to_stored)'s parts, checking every size.
    pub fn from_stored(stored: StoredCrf) -> Result<Self, CrfError> {
        let card: Card =
            serde_json::from_value(stored.card).map_err(|e| CrfError::Stored(e.to_string()))?;
        let get = |name: &str| {
            stored
                .tensors
                .get(name)
                .ok_or_else(|| CrfError::Stored(format!("tensor {name} is missing")))
        };
        let ints = |name: &str| -> Result<Vec<u32>, CrfError> {
            let t = get(name)?
                .as_i32()
                .ok_or_else(|| CrfError::Stored(format!("{name} is not i32")))?;
            t.iter()
                .map(|&x| {
                    u32::try_from(x).map_err(|_| CrfError::Stored(format!("{name} holds {x}")))
                })
                .collect()
        };
        let floats = |name: &str| -> Result<Vec<f32>, CrfError> {
            get(name)?
                .as_f32()
                .map(<[f32]>::to_vec)
                .ok_or_else(|| CrfError::Stored(format!("{name} is not f32")))
        };
        let offsets = ints("crf.offsets")?;
        let state_labels = ints("crf.state_labels")?;
        let state_weights = floats("crf.state_weights")?;
        let transitions = floats("crf.transitions")?;
        let l = card.labels.len();
        let consistent = offsets.len() == stored.attributes.len() + 1
            && offsets.windows(2).all(|w| w[0] <= w[1])
            && offsets.first() == Some(&0)
            && offsets.last().map(|&x| x as usize) == Some(state_labels.len())
            && state_weights.len() == state_labels.len()
            && state_labels.iter().all(|&x| (x as usize) < l)
            && transitions.len() == l * l;
        if !consistent {
            return Err(CrfError::Stored(
                "tensor sizes disagree with the labels and attributes".into(),
            ));
        }
        let dense = match stored.tensors.contains_key("crf.dense_weights") {
            false => None,
            true => {
                let mean = floats("crf.dense_mean")?;
                let dim = mean.len();
                let dense = Dense {
                    dim,
                    inv_std: floats("crf.dense_inv_std")?,
                    weights: floats("crf.dense_weights")?,
                    mean,
                };
                if dim == 0 || dense.inv_std.len() != dim || dense.weights.len() != l * dim {
                    return Err(CrfError::Stored("dense tensors disagree in size".into()));
                }
                Some(dense)
            }
        };
        let chain = Chain::iob2(&card.labels);
        Ok(Self {
            dense,
            params: card.params,
            gazetteer: card.gazetteer,
            index: stored
                .attributes
                .iter()
                .enumerate()
                .map(|(i, a)| (a.clone(), i as u32))
                .collect(),
            attributes: stored.attributes,
            offsets,
            state_labels,
            state_weights,
            transitions,
            labels: card.labels,
            chain,
            report: card.report,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Vec<(Vec<String>, Vec<String>)> {
        let raw = [
            ("Ann met Bob in Rome", "B-PER O B-PER O B-LOC"),
            ("Bob lives in New York", "B-PER O O B-LOC I-LOC"),
            ("we saw Ann Lee in Paris", "O O B-PER I-PER O B-LOC"),
            ("in Rome Ann smiled", "O B-LOC B-PER O"),
        ];
        raw.iter()
            .map(|(t, g)| {
                (
                    t.split(' ').map(String::from).collect(),
                    g.split(' ').map(String::from).collect(),
                )
            })
            .collect()
    }

    /// Three made-up real features per token.
    fn toy_dense(data: &[(Vec<String>, Vec<String>)]) -> Vec<Vec<f32>> {
        data.iter()
            .map(|(tokens, _)| {
                tokens
                    .iter()
                    .flat_map(|t| {
                        [
                            t.len() as f32,
                            f32::from(t.starts_with(char::is_uppercase)),
                            0.5,
                        ]
                    })
                    .collect()
            })
            .collect()
    }

    fn borrowed(data: &[(Vec<String>, Vec<String>)]) -> Vec<TaggedTokens<'_>> {
        data.iter()
            .map(|(t, g)| (t.as_slice(), g.as_slice()))
            .collect()
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let data = toy();
        let sentences = borrowed(&data);
        let dense = toy_dense(&data);
        let (mut crf, attrs) = Crf::index(&sentences, &CrfParams::default(), Gazetteer::default());
        let refs: Vec<&[f32]> = dense.iter().map(Vec::as_slice).collect();
        crf.dense = Some(Dense::fit(&refs, 3));
        let encoded = crf.encode_all(attrs, &sentences, Some(&dense));
        let (n_state, n_dense) = crf.layout();
        assert!(n_dense > 0);
        let n = n_state + n_dense + crf.transitions.len();
        let w: Vec<f64> = (0..n)
            .map(|i| ((i * 37 % 11) as f64 - 5.0) * 0.05)
            .collect();
        let loss = |w: &[f64]| -> f64 {
            let mut g = vec![0.0; n];
            encoded
                .iter()
                .map(|s| crf.sentence_loss(w, s, &mut g))
                .sum()
        };
        let mut grad = vec![0.0; n];
        for s in &encoded {
            crf.sentence_loss(&w, s, &mut grad);
        }
        for k in (0..n).step_by(7) {
            let (mut up, mut down) = (w.clone(), w.clone());
            up[k] += 1e-5;
            down[k] -= 1e-5;
            let numeric = (loss(&up) - loss(&down)) / 2e-5;
            assert!(
                (numeric - grad[k]).abs() < 1e-5 * (1.0 + numeric.abs()),
                "weight {k}: {numeric} vs {}",
                grad[k]
            );
        }
    }

    #[test]
    fn learns_the_toy_tags_and_decodes_well_formed_sequences() {
        let data = toy();
        let crf = Crf::fit(
            &borrowed(&data),
            &CrfParams::default(),
            Gazetteer::default(),
            None,
            |_, _| {},
        )
        .unwrap();
        let tokens: Vec<Vec<String>> = data.iter().map(|(t, _)| t.clone()).collect();
        for ((tags, scores), (_, gold)) in crf.predict(&tokens, None).unwrap().iter().zip(&data) {
            assert_eq!(tags, gold);
            assert!(
                scores.iter().all(|&p| p > 0.5 && p <= 1.0 + 1e-6),
                "{scores:?}"
            );
        }
        let odd = vec![vec!["York".to_string(), "York".into(), "Lee".into()]];
        let (tags, _) = &crf.predict(&odd, None).unwrap()[0];
        let chain = Chain::iob2(crf.labels());
        let idx = |t: &str| crf.labels().iter().position(|l| l == t).unwrap();
        assert!(!tags[0].starts_with("I-"), "{tags:?}");
        for pair in tags.windows(2) {
            assert!(chain.allows(idx(&pair[0]), idx(&pair[1])), "{tags:?}");
        }
    }

    #[test]
    fn an_emission_head_decodes_its_scores_and_round_trips() {
        let labels: Vec<String> = ["B-LOC", "I-LOC", "O"].map(String::from).to_vec();
        let (dim, l) = (2, 3);
        let weights = vec![1.0, 0.0, 0.0, 1.0, -1.0, -1.0];
        let bias = vec![0.0, 0.0, 0.5];
        let transitions = vec![0.0, 0.3, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0, 0.2];
        let crf = Crf::from_emission_head(
            labels.clone(),
            dim,
            weights.clone(),
            bias.clone(),
            transitions.clone(),
        )
        .unwrap();
        let x = vec![vec![2.0f32, 0.0, 0.2, 1.5, 0.0, 0.1, 0.1, 3.0]];
        let tokens = vec![vec!["a".to_string(); 4]];
        let emit: Vec<f64> = x[0]
            .chunks(dim)
            .flat_map(|v| {
                (0..l).map(|t| {
                    f64::from(bias[t])
                        + (0..dim)
                            .map(|d| f64::from(weights[t * dim + d] * v[d]))
                            .sum::<f64>()
                })
            })
            .collect();
        let trans: Vec<f64> = transitions.iter().map(|&t| f64::from(t)).collect();
        let path = Chain::iob2(&labels).viterbi(&emit, &trans, true);
        let (tags, _) = &crf.predict(&tokens, Some(&x)).unwrap()[0];
        let expected: Vec<String> = path.iter().map(|&t| labels[t].clone()).collect();
        assert_eq!(tags, &expected);
        // The last token's I-LOC scores highest alone but cannot follow O: Viterbi decides.
        assert!(!tags[0].starts_with("I-"));
        let back = Crf::from_stored(crf.to_stored()).unwrap();
        assert_eq!(
            back.predict(&tokens, Some(&x)).unwrap(),
            crf.predict(&tokens, Some(&x)).unwrap()
        );
        assert!(Crf::from_emission_head(labels, dim, weights, bias, vec![0.0; 4]).is_err());
    }

    #[test]
    fn the_stored_form_predicts_the_same_and_training_is_deterministic() {
        let data = toy();
        let params = CrfParams::default();
        let a = Crf::fit(
            &borrowed(&data),
            &params,
            Gazetteer::default(),
            None,
            |_, _| {},
        )
        .unwrap();
        let b = Crf::fit(
            &borrowed(&data),
            &params,
            Gazetteer::default(),
            None,
            |_, _| {},
        )
        .unwrap();
        assert_eq!(a.state_weights, b.state_weights);
        assert_eq!(a.transitions, b.transitions);
        let back = Crf::from_stored(a.to_stored()).unwrap();
        let tokens = vec![vec!["Lee".to_string(), "met".into(), "Ann".into()]];
        assert_eq!(
            a.predict(&tokens, None).unwrap(),
            back.predict(&tokens, None).unwrap()
        );
        let mut broken = a.to_stored();
        broken.attributes.pop();
        assert!(Crf::from_stored(broken).is_err());
    }

    #[test]
    fn bad_input_is_refused() {
        let tokens = vec!["a".to_string()];
        let tags: Vec<String> = Vec::new();
        let err = Crf::fit(
            &[(&tokens, &tags)],
            &CrfParams::default(),
            Gazetteer::default(),
            None,
            |_, _| {},
        );
        assert!(matches!(err, Err(CrfError::Lengths { sentence: 0, .. })));
        let params = CrfParams {
            c2: f64::NAN,
            ..CrfParams::default()
        };
        assert!(params.validate().is_err());
    }

    #[test]
    fn dense_features_train_alone_round_trip_and_are_checked() {
        let data = toy();
        let dense = toy_dense(&data);
        let params = CrfParams {
            hand_features: false,
            ..CrfParams::default()
        };
        let crf = Crf::fit(
            &borrowed(&data),
            &params,
            Gazetteer::default(),
            Some((&dense, 3)),
            |_, _| {},
        )
        .unwrap();
        assert_eq!(crf.attributes, vec!["bias"]);
        let tokens: Vec<Vec<String>> = data.iter().map(|(t, _)| t.clone()).collect();
        let tagged = crf.predict(&tokens, Some(&dense)).unwrap();
        let right = tagged
            .iter()
            .zip(&data)
            .flat_map(|((p, _), (_, g))| p.iter().zip(g))
            .filter(|(a, b)| a == b)
            .count();
        assert!(
            right >= 18,
            "capital letters mark entities: {right} of 21 tags right"
        );
        let back = Crf::from_stored(crf.to_stored()).unwrap();
        assert_eq!(back.predict(&tokens, Some(&dense)).unwrap(), tagged);
        assert!(
            crf.predict(&tokens, None).is_err(),
            "dense features are required"
        );
        let mut short = dense.clone();
        short[1].pop();
        let err = Crf::fit(
            &borrowed(&data),
            &params,
            Gazetteer::default(),
            Some((&short, 3)),
            |_, _| {},
        );
        assert!(
            matches!(err, Err(CrfError::Dense { sentence: 1, .. })),
            "{err:?}"
        );
    }
}
