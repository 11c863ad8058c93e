//! The CRF: feature indexing, the training objective, Viterbi decoding and marginals.

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
    allowed: Vec<bool>,
    start_allowed: Vec<bool>,
    report: FitReport,
}

/// A sentence as attribute ids per token (CSR) and tag indices.
struct Encoded {
    ids: Vec<u32>,
    starts: Vec<u32>,
    gold: Vec<u32>,
}

impl Encoded {
    fn len(&self) -> usize {
        self.starts.len() - 1
    }
    fn token(&self, t: usize) -> &[u32] {
        &self.ids[self.starts[t] as usize..self.starts[t + 1] as usize]
    }
}

fn inside_of(tag: &str) -> Option<&str> {
    tag.strip_prefix("I-")
}

/// IOB2 constraints: `(allowed[i * L + j], start_allowed[j])`.
fn constraints(labels: &[String]) -> (Vec<bool>, Vec<bool>) {
    let l = labels.len();
    let mut allowed = vec![true; l * l];
    for (j, to) in labels.iter().enumerate() {
        if let Some(kind) = inside_of(to) {
            for (i, from) in labels.iter().enumerate() {
                let continues = from.strip_prefix("B-").or_else(|| inside_of(from)) == Some(kind);
                allowed[i * l + j] = continues;
            }
        }
    }
    let start = labels.iter().map(|t| inside_of(t).is_none()).collect();
    (allowed, start)
}

/// Attribute ids of a sentence's tokens, by the given lookup; unknown attributes are skipped.
fn encode_tokens<S: AsRef<str>>(
    tokens: &[S],
    params: &CrfParams,
    gazetteer: &Gazetteer,
    mut id: impl FnMut(&str) -> Option<u32>,
) -> (Vec<u32>, Vec<u32>) {
    let attrs = sentence_attributes(tokens, &params.features, gazetteer);
    let mut ids = Vec::new();
    let mut starts = vec![0u32];
    for token in &attrs {
        ids.extend(token.iter().filter_map(|a| id(a)));
        starts.push(ids.len() as u32);
    }
    (ids, starts)
}

impl Crf {
    /// Trains on `(tokens, IOB2 tags)` sentences; `progress(iteration, objective)` is called
    /// after each L-BFGS step.
    pub fn fit(
        sentences: &[TaggedTokens<'_>],
        params: &CrfParams,
        gazetteer: Gazetteer,
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
        let mut crf = Self::index(sentences, params, gazetteer);
        let encoded = crf.encode_all(sentences);
        crf.train(&encoded, progress);
        Ok(crf)
    }

    /// Labels, attributes (by frequency cut) and the (attribute, tag) pairs seen in training.
    fn index(sentences: &[TaggedTokens<'_>], params: &CrfParams, gazetteer: Gazetteer) -> Self {
        let tag_set: BTreeSet<&str> = sentences
            .iter()
            .flat_map(|(_, tags)| tags.iter().map(String::as_str))
            .chain(["O"])
            .collect();
        let labels: Vec<String> = tag_set.into_iter().map(String::from).collect();
        let label_index: HashMap<&str, u32> = labels
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        let per_sentence: Vec<Vec<Vec<String>>> = sentences
            .par_iter()
            .map(|(tokens, _)| sentence_attributes(tokens, &params.features, &gazetteer))
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
        let (allowed, start_allowed) = constraints(&labels);
        let l = labels.len();
        Self {
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
            allowed,
            start_allowed,
            report: FitReport {
                iterations: 0,
                objective: f64::NAN,
                attributes: 0,
                weights: 0,
            },
        }
    }

    fn encode_all(&self, sentences: &[TaggedTokens<'_>]) -> Vec<Encoded> {
        let label_index: HashMap<&str, u32> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        sentences
            .par_iter()
            .map(|(tokens, tags)| {
                let (ids, starts) = encode_tokens(tokens, &self.params, &self.gazetteer, |a| {
                    self.index.get(a).copied()
                });
                let gold = tags.iter().map(|t| label_index[t.as_str()]).collect();
                Encoded { ids, starts, gold }
            })
            .collect()
    }

    fn train(&mut self, encoded: &[Encoded], mut progress: impl FnMut(usize, f64)) {
        let n_state = self.state_weights.len();
        let x0 = vec![0.0; n_state + self.transitions.len()];
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
        for (w, x) in self.transitions.iter_mut().zip(&result.x[n_state..]) {
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
        scores
    }

    /// Adds one sentence's gradient of `log Z − score(gold)` to `grad`; returns that loss.
    fn sentence_loss(&self, w: &[f64], s: &Encoded, grad: &mut [f64]) -> f64 {
        let l = self.labels.len();
        let n_state = self.state_weights.len();
        let emit = self.emissions(w, s);
        let trans = &w[n_state..];
        let lattice = Lattice::new(&emit, trans, &self.allowed, &self.start_allowed, l);
        let mut gold_score = 0.0;
        for t in 0..s.len() {
            let y = s.gold[t] as usize;
            gold_score += emit[t * l + y];
            if t > 0 {
                let prev = s.gold[t - 1] as usize;
                gold_score += trans[prev * l + y];
                grad[n_state + prev * l + y] -= 1.0;
            }
            let marginals = lattice.marginals(t);
            for &a in s.token(t) {
                let range =
                    self.offsets[a as usize] as usize..self.offsets[a as usize + 1] as usize;
                for k in range {
                    let tag = self.state_labels[k] as usize;
                    grad[k] += marginals[tag] - f64::from(u8::from(tag == y));
                }
            }
        }
        lattice.add_pair_marginals(&mut grad[n_state..]);
        lattice.log_z - gold_score
    }

    /// The IOB2 tags of each sentence, decoded by Viterbi, and each tag's marginal probability.
    pub fn predict<S: AsRef<str> + Sync>(
        &self,
        sentences: &[Vec<S>],
    ) -> Vec<(Vec<String>, Vec<f32>)> {
        sentences
            .par_iter()
            .map(|tokens| self.predict_one(tokens))
            .collect()
    }

    fn predict_one<S: AsRef<str>>(&self, tokens: &[S]) -> (Vec<String>, Vec<f32>) {
        if tokens.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let (ids, starts) = encode_tokens(tokens, &self.params, &self.gazetteer, |a| {
            self.index.get(a).copied()
        });
        let s = Encoded {
            ids,
            starts,
            gold: Vec::new(),
        };
        let w: Vec<f64> = self.state_weights.iter().map(|&x| f64::from(x)).collect();
        let trans: Vec<f64> = self.transitions.iter().map(|&x| f64::from(x)).collect();
        let emit = self.emissions(&w, &s);
        let path = self.viterbi(&emit, &trans, s.len());
        let l = self.labels.len();
        let lattice = Lattice::new(&emit, &trans, &self.allowed, &self.start_allowed, l);
        let scores = path
            .iter()
            .enumerate()
            .map(|(t, &y)| lattice.marginals(t)[y] as f32)
            .collect();
        (
            path.into_iter().map(|y| self.labels[y].clone()).collect(),
            scores,
        )
    }

    fn viterbi(&self, emit: &[f64], trans: &[f64], n: usize) -> Vec<usize> {
        let l = self.labels.len();
        let mut best: Vec<f64> = (0..l)
            .map(|j| {
                if self.start_allowed[j] {
                    emit[j]
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        let mut back = vec![0usize; n * l];
        for t in 1..n {
            let mut next = vec![f64::NEG_INFINITY; l];
            for j in 0..l {
                for i in 0..l {
                    let v = best[i] + trans[i * l + j];
                    if self.allowed[i * l + j] && v > next[j] {
                        next[j] = v;
                        back[t * l + j] = i;
                    }
                }
                next[j] += emit[t * l + j];
            }
            best = next;
        }
        let mut y = (0..l).fold(0, |b, j| if best[j] > best[b] { j } else { b });
        let mut path = vec![y; n];
        for t in (1..n).rev() {
            y = back[t * l + y];
            path[t - 1] = y;
        }
        path
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

/// Scaled forward–backward over one sentence (crfsuite's way: each position's forward
/// scores are normalised to sum to 1 and the scale kept, so no logarithm per cell).
struct Lattice {
    l: usize,
    n: usize,
    /// `exp(emission − max of the position)`, zero where forbidden at the start.
    e: Vec<f64>,
    exp_trans: Vec<f64>,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    scale: Vec<f64>,
    log_z: f64,
}

impl Lattice {
    fn new(emit: &[f64], trans: &[f64], allowed: &[bool], start: &[bool], l: usize) -> Self {
        let n = emit.len() / l;
        let exp_trans: Vec<f64> = trans
            .iter()
            .zip(allowed)
            .map(|(&v, &ok)| if ok { v.exp() } else { 0.0 })
            .collect();
        let mut e = vec![0.0; n * l];
        let mut log_z = 0.0;
        for t in 0..n {
            let row = &emit[t * l..(t + 1) * l];
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            log_z += max;
            for j in 0..l {
                let ok = t > 0 || start[j];
                e[t * l + j] = if ok { (row[j] - max).exp() } else { 0.0 };
            }
        }
        let mut lattice = Self {
            l,
            n,
            e,
            exp_trans,
            alpha: vec![0.0; n * l],
            beta: vec![0.0; n * l],
            scale: vec![0.0; n],
            log_z,
        };
        lattice.forward();
        lattice.backward();
        lattice
    }

    fn forward(&mut self) {
        let l = self.l;
        for t in 0..self.n {
            for j in 0..l {
                let into = if t == 0 {
                    1.0
                } else {
                    (0..l)
                        .map(|i| self.alpha[(t - 1) * l + i] * self.exp_trans[i * l + j])
                        .sum()
                };
                self.alpha[t * l + j] = into * self.e[t * l + j];
            }
            let sum: f64 = self.alpha[t * l..(t + 1) * l].iter().sum();
            self.scale[t] = sum;
            self.alpha[t * l..(t + 1) * l]
                .iter_mut()
                .for_each(|a| *a /= sum);
            self.log_z += sum.ln();
        }
    }

    fn backward(&mut self) {
        let l = self.l;
        let n = self.n;
        self.beta[(n - 1) * l..].fill(1.0);
        for t in (0..n - 1).rev() {
            for i in 0..l {
                self.beta[t * l + i] = (0..l)
                    .map(|j| {
                        self.exp_trans[i * l + j]
                            * self.e[(t + 1) * l + j]
                            * self.beta[(t + 1) * l + j]
                    })
                    .sum::<f64>()
                    / self.scale[t + 1];
            }
        }
    }

    /// P(tag at `t` = j) for each j.
    fn marginals(&self, t: usize) -> Vec<f64> {
        let l = self.l;
        (0..l)
            .map(|j| self.alpha[t * l + j] * self.beta[t * l + j])
            .collect()
    }

    /// Adds Σ_t P(tag t−1 = i, tag t = j) to `grad[i * L + j]`.
    fn add_pair_marginals(&self, grad: &mut [f64]) {
        let l = self.l;
        for t in 1..self.n {
            for i in 0..l {
                let a = self.alpha[(t - 1) * l + i];
                for j in 0..l {
                    let p =
                        a * self.exp_trans[i * l + j] * self.e[t * l + j] * self.beta[t * l + j]
                            / self.scale[t];
                    grad[i * l + j] += p;
                }
            }
        }
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
        let tensors = BTreeMap::from([
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
        let (allowed, start_allowed) = constraints(&card.labels);
        Ok(Self {
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
            allowed,
            start_allowed,
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

    fn borrowed(data: &[(Vec<String>, Vec<String>)]) -> Vec<TaggedTokens<'_>> {
        data.iter()
            .map(|(t, g)| (t.as_slice(), g.as_slice()))
            .collect()
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let data = toy();
        let sentences = borrowed(&data);
        let crf = Crf::index(&sentences, &CrfParams::default(), Gazetteer::default());
        let encoded = crf.encode_all(&sentences);
        let n = crf.state_weights.len() + crf.transitions.len();
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
            |_, _| {},
        )
        .unwrap();
        let tokens: Vec<Vec<String>> = data.iter().map(|(t, _)| t.clone()).collect();
        for ((tags, scores), (_, gold)) in crf.predict(&tokens).iter().zip(&data) {
            assert_eq!(tags, gold);
            assert!(
                scores.iter().all(|&p| p > 0.5 && p <= 1.0 + 1e-6),
                "{scores:?}"
            );
        }
        let odd = vec![vec!["York".to_string(), "York".into(), "Lee".into()]];
        let (tags, _) = &crf.predict(&odd)[0];
        let (allowed, start) = constraints(crf.labels());
        let idx = |t: &str| crf.labels().iter().position(|l| l == t).unwrap();
        assert!(start[idx(&tags[0])]);
        for pair in tags.windows(2) {
            assert!(
                allowed[idx(&pair[0]) * crf.labels().len() + idx(&pair[1])],
                "{tags:?}"
            );
        }
    }

    #[test]
    fn the_stored_form_predicts_the_same_and_training_is_deterministic() {
        let data = toy();
        let params = CrfParams::default();
        let a = Crf::fit(&borrowed(&data), &params, Gazetteer::default(), |_, _| {}).unwrap();
        let b = Crf::fit(&borrowed(&data), &params, Gazetteer::default(), |_, _| {}).unwrap();
        assert_eq!(a.state_weights, b.state_weights);
        assert_eq!(a.transitions, b.transitions);
        let back = Crf::from_stored(a.to_stored()).unwrap();
        let tokens = vec![vec!["Lee".to_string(), "met".into(), "Ann".into()]];
        assert_eq!(a.predict(&tokens), back.predict(&tokens));
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
            |_, _| {},
        );
        assert!(matches!(err, Err(CrfError::Lengths { sentence: 0, .. })));
        let params = CrfParams {
            c2: f64::NAN,
            ..CrfParams::default()
        };
        assert!(params.validate().is_err());
    }
}
