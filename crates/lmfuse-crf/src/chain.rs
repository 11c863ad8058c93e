//! The linear chain over per-token tag scores (emissions) and tag-to-tag transitions, with
//! IOB2 constraints: Viterbi decoding, marginals and the negative log-likelihood with its
//! gradient. The CRF of hand-made features ([`crate::Crf`]) and an encoder fine-tuned with a
//! CRF layer on top share it.

/// The tags of a chain and the IOB2 moves allowed between them.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    l: usize,
    /// `allowed[i * L + j]`: tag `j` may follow tag `i`.
    allowed: Vec<bool>,
    /// `start_allowed[j]`: tag `j` may open a sentence.
    start_allowed: Vec<bool>,
}

fn inside_of(tag: &str) -> Option<&str> {
    tag.strip_prefix("I-")
}

impl Chain {
    /// IOB2 constraints over `labels`: `I-X` only after `B-X` or `I-X`, never first.
    pub fn iob2(labels: &[String]) -> Self {
        let l = labels.len();
        let mut allowed = vec![true; l * l];
        for (j, to) in labels.iter().enumerate() {
            if let Some(kind) = inside_of(to) {
                for (i, from) in labels.iter().enumerate() {
                    let continues =
                        from.strip_prefix("B-").or_else(|| inside_of(from)) == Some(kind);
                    allowed[i * l + j] = continues;
                }
            }
        }
        let start_allowed = labels.iter().map(|t| inside_of(t).is_none()).collect();
        Self {
            l,
            allowed,
            start_allowed,
        }
    }

    /// Number of tags.
    pub fn tags(&self) -> usize {
        self.l
    }

    /// Whether tag `j` may follow tag `i`.
    pub fn allows(&self, i: usize, j: usize) -> bool {
        self.allowed[i * self.l + j]
    }

    /// The best tag path for `emit` (`n × L`) and `trans` (`L × L`); with `at_start`, the
    /// first token is a sentence's first (no `I-` tag there).
    pub fn viterbi(&self, emit: &[f64], trans: &[f64], at_start: bool) -> Vec<usize> {
        let l = self.l;
        let n = emit.len() / l;
        if n == 0 {
            return Vec::new();
        }
        let mut best: Vec<f64> = (0..l)
            .map(|j| {
                if !at_start || self.start_allowed[j] {
                    emit[j]
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        let mut back = vec![0usize; n * l];
        let mut next = vec![0.0; l];
        for t in 1..n {
            for j in 0..l {
                next[j] = f64::NEG_INFINITY;
                for i in 0..l {
                    let v = best[i] + trans[i * l + j];
                    if self.allowed[i * l + j] && v > next[j] {
                        next[j] = v;
                        back[t * l + j] = i;
                    }
                }
                next[j] += emit[t * l + j];
            }
            std::mem::swap(&mut best, &mut next);
        }
        let mut y = (0..l).fold(0, |b, j| if best[j] > best[b] { j } else { b });
        let mut path = vec![y; n];
        for t in (1..n).rev() {
            y = back[t * l + y];
            path[t - 1] = y;
        }
        path
    }

    /// `log Z − score(gold)` for one sequence; adds its gradient with respect to the
    /// emissions into `demit` (`n × L`) and to the transitions into `dtrans` (`L × L`).
    pub fn nll(
        &self,
        emit: &[f64],
        trans: &[f64],
        gold: &[usize],
        at_start: bool,
        (demit, dtrans): (&mut [f64], &mut [f64]),
    ) -> f64 {
        let l = self.l;
        if gold.is_empty() {
            return 0.0;
        }
        let lattice = Lattice::new(emit, trans, self, at_start);
        let mut gold_score = 0.0;
        let mut marginals = vec![0.0; l];
        for (t, &y) in gold.iter().enumerate() {
            gold_score += emit[t * l + y];
            if t > 0 {
                gold_score += trans[gold[t - 1] * l + y];
                dtrans[gold[t - 1] * l + y] -= 1.0;
            }
            lattice.marginals_into(t, &mut marginals);
            for (j, p) in marginals.iter().enumerate() {
                demit[t * l + j] += p - f64::from(u8::from(j == y));
            }
        }
        lattice.add_pair_marginals(dtrans);
        lattice.log_z - gold_score
    }
}

/// Scaled forward–backward over one sentence (crfsuite's way: each position's forward
/// scores are normalised to sum to 1 and the scale kept, so no logarithm per cell).
pub(crate) struct Lattice {
    l: usize,
    n: usize,
    /// `exp(emission − max of the position)`, zero where forbidden at the start.
    e: Vec<f64>,
    exp_trans: Vec<f64>,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    scale: Vec<f64>,
    pub(crate) log_z: f64,
}

impl Lattice {
    pub(crate) fn new(emit: &[f64], trans: &[f64], chain: &Chain, at_start: bool) -> Self {
        let l = chain.l;
        let n = emit.len() / l;
        let exp_trans: Vec<f64> = trans
            .iter()
            .zip(&chain.allowed)
            .map(|(&v, &ok)| if ok { v.exp() } else { 0.0 })
            .collect();
        let mut e = vec![0.0; n * l];
        let mut log_z = 0.0;
        for t in 0..n {
            let row = &emit[t * l..(t + 1) * l];
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            log_z += max;
            for j in 0..l {
                let ok = t > 0 || !at_start || chain.start_allowed[j];
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
        if n == 0 {
            return;
        }
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

    /// Writes P(tag at `t` = j) for each j into `out`.
    pub(crate) fn marginals_into(&self, t: usize, out: &mut [f64]) {
        let l = self.l;
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.alpha[t * l + j] * self.beta[t * l + j];
        }
    }

    /// Adds Σ_t P(tag t−1 = i, tag t = j) to `grad[i * L + j]`.
    pub(crate) fn add_pair_marginals(&self, grad: &mut [f64]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["B-LOC", "I-LOC", "O"].map(String::from).to_vec()
    }

    /// Every path's score, for brute-force checks on short sequences.
    fn all_paths(chain: &Chain, n: usize, at_start: bool) -> Vec<Vec<usize>> {
        let l = chain.tags();
        let mut out = vec![vec![]];
        for t in 0..n {
            out = out
                .into_iter()
                .flat_map(|p: Vec<usize>| (0..l).map(move |j| [p.clone(), vec![j]].concat()))
                .filter(|p| {
                    let j = p[t];
                    if t == 0 {
                        !at_start || chain.start_allowed[j]
                    } else {
                        chain.allows(p[t - 1], j)
                    }
                })
                .collect();
        }
        out
    }

    fn score(p: &[usize], emit: &[f64], trans: &[f64], l: usize) -> f64 {
        let mut s: f64 = p.iter().enumerate().map(|(t, &y)| emit[t * l + y]).sum();
        s += p.windows(2).map(|w| trans[w[0] * l + w[1]]).sum::<f64>();
        s
    }

    #[test]
    fn viterbi_and_the_likelihood_match_brute_force() {
        let chain = Chain::iob2(&labels());
        let l = chain.tags();
        let emit = [
            0.3, 1.2, -0.5, 0.9, 0.1, 0.4, -0.2, 0.8, 0.6, 0.0, 1.5, -1.0,
        ];
        let trans = [0.1, 0.7, -0.3, 0.2, 0.5, 0.0, -0.4, 0.3, 0.2];
        for at_start in [true, false] {
            let paths = all_paths(&chain, 4, at_start);
            let best = paths
                .iter()
                .max_by(|a, b| score(a, &emit, &trans, l).total_cmp(&score(b, &emit, &trans, l)))
                .unwrap();
            assert_eq!(&chain.viterbi(&emit, &trans, at_start), best);
            let log_z = paths
                .iter()
                .map(|p| score(p, &emit, &trans, l).exp())
                .sum::<f64>()
                .ln();
            let gold = [0, 1, 2, 0];
            let (mut de, mut dt) = (vec![0.0; emit.len()], vec![0.0; trans.len()]);
            let nll = chain.nll(&emit, &trans, &gold, at_start, (&mut de, &mut dt));
            assert!((nll - (log_z - score(&gold, &emit, &trans, l))).abs() < 1e-9);
        }
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let chain = Chain::iob2(&labels());
        let emit = vec![0.3, 1.2, -0.5, 0.9, 0.1, 0.4, -0.2, 0.8, 0.6];
        let trans = vec![0.1, 0.7, -0.3, 0.2, 0.5, 0.0, -0.4, 0.3, 0.2];
        let gold = [2, 0, 1];
        let (mut de, mut dt) = (vec![0.0; 9], vec![0.0; 9]);
        chain.nll(&emit, &trans, &gold, true, (&mut de, &mut dt));
        let f = |e: &[f64], t: &[f64]| chain.nll(e, t, &gold, true, (&mut [0.0; 9], &mut [0.0; 9]));
        let h = 1e-6;
        for k in 0..9 {
            let (mut up, mut down) = (emit.clone(), emit.clone());
            up[k] += h;
            down[k] -= h;
            let numeric = (f(&up, &trans) - f(&down, &trans)) / (2.0 * h);
            assert!((numeric - de[k]).abs() < 1e-5, "emission {k}");
            let (mut up, mut down) = (trans.clone(), trans.clone());
            up[k] += h;
            down[k] -= h;
            let numeric = (f(&emit, &up) - f(&emit, &down)) / (2.0 * h);
            // Forbidden moves carry no probability: their gradient is 0 − gold count.
            assert!((numeric - dt[k]).abs() < 1e-5, "transition {k}");
        }
    }
}
