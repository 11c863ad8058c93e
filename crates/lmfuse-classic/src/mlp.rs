//! A small multilayer perceptron head that fuses a classical block (TF-IDF) with encoder
//! embeddings, in one of two topologies:
//!
//! - *deep fusion* (`projection == 0`): every input column, sparse or dense, feeds one ReLU
//!   hidden layer of `hidden` units (dropout), then a softmax over the classes;
//! - *shared hidden layer* (`projection > 0`): the leading `n_features - dense_tail` columns
//!   (the classical block) and the trailing `dense_tail` columns (the pooled embedding) are
//!   projected apart, each to `projection` units; both projections, concatenated, go through
//!   ReLU and dropout into the shared hidden layer, then the classes.
//!
//! [`MlpTrainer`] takes the shared topology's training steps one mini-batch at a time and
//! hands back the loss gradient with respect to the dense tail, for a caller that trains the
//! tail's source too (`lmfuse finetune --shared-head`: the encoder, end to end).
//!
//! Training minimises the mean cross-entropy of mini-batches with AdamW (decoupled weight
//! decay `alpha` on the weight matrices, none on biases) and stops early like scikit-learn's
//! `MLPClassifier(early_stopping=True)`: a seeded, stratified share of the training rows is
//! held out, scored after every epoch by accuracy (ties broken by log loss), and the best
//! epoch's weights are kept. Weights start He-uniform (ReLU layers) or Glorot-uniform (output
//! layer) from the seed, biases at zero; Adam uses β = (0.9, 0.999), ε = 1e-8.
//!
//! A first layer over sparse rows (TF-IDF can have 10⁵+ columns) multiplies the CSR rows by
//! its weights directly and gets gradient rows only for the columns the batch holds; Adam
//! updates those rows alone (lazy Adam, as TensorFlow's `LazyAdam`: the moments of a skipped
//! row do not decay meanwhile), while the decoupled decay of the rows a batch skips is applied
//! exactly when they are next touched (and at the end of each epoch), so the decay equals
//! dense AdamW's. Dense layers use `gemm` on one thread. Work
//! runs in parallel only where every value has one fixed summation order (rows of a batch,
//! columns of a gradient, elements of an update), so a seed gives the same weights on any
//! number of threads.

use crate::forest::stream_rng;
use crate::gbdt::holdout;
use crate::{check_input, check_training_data, stored_f32, ClassicError, FitHead, ProbaHead};
use gemm::Parallelism;
use lmfuse_core::{CsrMatrix, Features, SeededRng, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Hyperparameters of [`Mlp`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MlpParams {
    /// Units of the shared ReLU hidden layer (≥ 1).
    pub hidden: usize,
    /// Units each input block is projected to before the hidden layer; 0 is deep fusion (all
    /// columns straight into the hidden layer), > 0 the shared hidden layer topology.
    pub projection: usize,
    /// With `projection > 0`: how many trailing columns form the dense block (the encoder's
    /// embedding) projected on its own; the columns before it form the classical block. Must
    /// be 0 when `projection == 0`; checked against the feature width at fit.
    pub dense_tail: usize,
    /// Decoupled (AdamW) weight decay of the weight matrices, ≥ 0: every step multiplies them
    /// by `1 - lr · alpha`. Large by AdamW standards (default 3, so 1e-3 a step at the default
    /// `lr`): without it a first layer over 10⁵ TF-IDF columns memorises the training rows in
    /// an epoch or two. The hyperparameter model selection varies.
    pub alpha: f64,
    /// Adam learning rate (> 0).
    pub lr: f64,
    /// Epochs at most (≥ 1); early stopping usually ends training sooner.
    pub epochs: usize,
    /// Rows a mini-batch (≥ 1).
    pub batch_size: usize,
    /// Dropout rate on the projections and the hidden layer, in `[0, 1)`.
    pub dropout: f64,
    /// Stop after this many epochs (≥ 1) without a better holdout score.
    pub patience: usize,
    /// Share of each class's training rows held out for early stopping, in `[0, 1)`; 0 trains
    /// all `epochs` on every row and keeps the last epoch.
    pub validation_fraction: f64,
    /// Seed of the holdout split, the initial weights, the batch order and the dropout masks.
    pub seed: u64,
}

impl Default for MlpParams {
    fn default() -> Self {
        Self {
            hidden: 256,
            projection: 0,
            dense_tail: 0,
            alpha: 3.0,
            lr: 3e-4,
            epochs: 40,
            batch_size: 32,
            dropout: 0.2,
            patience: 5,
            validation_fraction: 0.1,
            seed: 0,
        }
    }
}

/// Most weights one layer may hold (16 GiB of f32 with its Adam moments).
const MAX_LAYER_WEIGHTS: usize = 1 << 30;
/// Rows a prediction chunk: fixed, so a row's probabilities never depend on the thread count.
/// They may differ in the last bits with the number of rows asked for (`gemm` picks its kernel
/// by the matrix shape, and a last chunk is shorter).
const CHUNK: usize = 256;
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPS: f32 = 1e-8;

/// A linear map `x·W + b`, `W` being `inputs × outputs` row-major.
#[derive(Debug, Clone, PartialEq)]
struct Linear {
    inputs: usize,
    outputs: usize,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Linear {
    /// Weights uniform in `±limit`, biases zero.
    fn uniform(inputs: usize, outputs: usize, limit: f32, rng: &mut SeededRng) -> Self {
        let w = (0..inputs * outputs)
            .map(|_| limit * (2.0 * unit(rng) - 1.0))
            .collect();
        Self {
            inputs,
            outputs,
            w,
            b: vec![0.0; outputs],
        }
    }
}

/// A uniform draw in `[0, 1)` with 24 random bits.
fn unit(rng: &mut SeededRng) -> f32 {
    (rng.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// The layers: input layers over consecutive column ranges (deep fusion: one over every
/// column; shared: the classical block, then the dense tail), their outputs side by side
/// through ReLU and dropout, the shared hidden layer (shared topology only), the output layer.
#[derive(Debug, Clone, PartialEq)]
struct Net {
    inputs: Vec<Linear>,
    hidden: Option<Linear>,
    out: Linear,
}

/// Activations of one forward pass, kept for the backward pass.
#[derive(Debug, Default)]
struct Tape {
    /// Per input layer read densely: its gathered rows (`rows × inputs`); empty otherwise.
    gathered: Vec<Vec<f32>>,
    /// Input layers' outputs side by side after ReLU and dropout (`rows × concat`).
    z: Vec<f32>,
    /// `∂z/∂pre-activation`: 0 where ReLU or dropout cut, else the dropout scale (or 1).
    gate0: Vec<f32>,
    /// Hidden layer after ReLU and dropout (shared topology).
    h: Vec<f32>,
    gate1: Vec<f32>,
    logits: Vec<f32>,
    /// Class probabilities.
    p: Vec<f32>,
    /// `log Σ exp(logits)` of each row, from the softmax (the loss needs it).
    lse: Vec<f64>,
}

/// The gradient of one weight matrix.
#[derive(Debug, Clone, PartialEq)]
enum WeightGrad {
    /// Every row.
    Dense(Vec<f32>),
    /// Only the rows a batch touched.
    Sparse(SparseGrad),
}

/// The gradient of the weight rows a batch touched in a sparse-read layer, kept as the
/// batch's entries of each touched input column and the gradient of the layer's outputs: the
/// optimiser computes each row where it updates it, so no gradient matrix is stored.
#[derive(Debug, Clone, PartialEq)]
struct SparseGrad {
    /// The touched weight rows (input columns), in order of first appearance in the batch.
    rows: Vec<u32>,
    /// Row `rows[s]`'s entries are `entries[starts[s]..starts[s + 1]]`.
    starts: Vec<usize>,
    /// (batch row, input value), in batch-row order within each column.
    entries: Vec<(u32, f32)>,
    /// Gradient of the layer's outputs, `batch × width`.
    d: Vec<f32>,
    width: usize,
}

impl SparseGrad {
    /// The gradient of weight row `rows[s]`: `Σ value · d[batch row]`, in batch-row order.
    fn row(&self, s: usize, out: &mut [f32]) {
        out.fill(0.0);
        for &(j, v) in &self.entries[self.starts[s]..self.starts[s + 1]] {
            let j = j as usize;
            for (a, &dv) in out
                .iter_mut()
                .zip(&self.d[j * self.width..(j + 1) * self.width])
            {
                *a += v * dv;
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct LayerGrad {
    w: WeightGrad,
    b: Vec<f32>,
}

/// Gradients in the order of [`Net::layers_mut`].
#[derive(Debug, Clone, PartialEq)]
struct Grads(Vec<LayerGrad>);

/// Reused buffer of the sparse gradient.
#[derive(Debug, Default)]
struct SparseScratch {
    /// Per weight row: its position among the batch's touched rows, `u32::MAX` if untouched.
    slot: Vec<u32>,
}

/// A strided read-only matrix view: element `(i, j)` at `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols)
    }

    fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst (a.rows × b.cols, row stride dst_rs) = [dst +] a · b`, on one thread (fixed order).
fn matmul(dst: &mut [f32], dst_rs: usize, a: View, b: View, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions");
    assert!(a.fits() && b.fits(), "operand out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_rs + n <= dst.len(),
        "destination out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the asserts above keep every element gemm reads or writes inside its slice;
    // dst is borrowed mutably, so it cannot alias a or b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// Sums the rows of a `rows × width` block with row stride `rs` into `out`.
fn column_sums(data: &[f32], rows: usize, width: usize, rs: usize, out: &mut [f32]) {
    out.fill(0.0);
    for r in 0..rows {
        for (o, v) in out.iter_mut().zip(&data[r * rs..r * rs + width]) {
            *o += v;
        }
    }
}

/// Columns `lo..hi` of the listed rows as a dense `rows × (hi - lo)` matrix.
fn gather(x: &Features, rows: &[usize], lo: usize, hi: usize) -> Vec<f32> {
    let w = hi - lo;
    let mut out = vec![0.0; rows.len() * w];
    match x {
        Features::Dense(m) => {
            for (o, &r) in out.chunks_exact_mut(w).zip(rows) {
                o.copy_from_slice(&m.row(r)[lo..hi]);
            }
        }
        Features::Sparse(m) => {
            for (o, &r) in out.chunks_exact_mut(w).zip(rows) {
                let (cols, vals) = m.row(r);
                for (&c, &v) in cols.iter().zip(vals) {
                    let c = c as usize;
                    if (lo..hi).contains(&c) {
                        o[c - lo] += v;
                    }
                }
            }
        }
    }
    out
}

/// ReLU then inverted dropout (`rate > 0` with a generator): `gate` gets each unit's
/// derivative, `post` the activation.
fn activate(
    pre: &[f32],
    gate: &mut Vec<f32>,
    post: &mut Vec<f32>,
    dropout: Option<(f32, &mut SeededRng)>,
) {
    gate.clear();
    match dropout {
        None => gate.extend(pre.iter().map(|&v| if v > 0.0 { 1.0 } else { 0.0 })),
        Some((rate, rng)) => {
            let scale = 1.0 / (1.0 - rate);
            gate.extend(pre.iter().map(|&v| {
                let keep = unit(rng) >= rate;
                if keep && v > 0.0 {
                    scale
                } else {
                    0.0
                }
            }));
        }
    }
    post.clear();
    post.extend(pre.iter().zip(gate.iter()).map(|(v, g)| v * g));
}

/// The dropout setting again, for the next layer.
fn reborrow<'a>(d: &'a mut Option<(f32, &mut SeededRng)>) -> Option<(f32, &'a mut SeededRng)> {
    d.as_mut().map(|(rate, rng)| (*rate, &mut **rng))
}

/// Softmax of one row (in f64); returns `log Σ exp(logits)`.
fn softmax_row(logits: &[f32], p: &mut [f32]) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    for (pi, &l) in p.iter_mut().zip(logits) {
        *pi = ((l as f64 - max).exp() / sum) as f32;
    }
    max + sum.ln()
}

impl Net {
    fn init(
        input_widths: &[(usize, usize)],
        hidden: Option<usize>,
        n_classes: usize,
        seed: u64,
    ) -> Self {
        let he = |fan_in: usize| (6.0 / fan_in as f64).sqrt() as f32;
        let inputs: Vec<Linear> = input_widths
            .iter()
            .enumerate()
            .map(|(i, &(d, m))| Linear::uniform(d, m, he(d), &mut stream_rng(seed, i as u64)))
            .collect();
        let concat: usize = input_widths.iter().map(|w| w.1).sum();
        let hidden =
            hidden.map(|h| Linear::uniform(concat, h, he(concat), &mut stream_rng(seed, 100)));
        let top = hidden.as_ref().map_or(concat, |h| h.outputs);
        let glorot = (6.0 / (top + n_classes) as f64).sqrt() as f32;
        let out = Linear::uniform(top, n_classes, glorot, &mut stream_rng(seed, 101));
        Self {
            inputs,
            hidden,
            out,
        }
    }

    fn n_features(&self) -> usize {
        self.inputs.iter().map(|l| l.inputs).sum()
    }

    fn concat(&self) -> usize {
        self.inputs.iter().map(|l| l.outputs).sum()
    }

    fn n_classes(&self) -> usize {
        self.out.outputs
    }

    /// Every layer: the input layers, the hidden layer, the output layer.
    fn layers(&self) -> Vec<&Linear> {
        let mut v: Vec<&Linear> = self.inputs.iter().collect();
        v.extend(self.hidden.as_ref());
        v.push(&self.out);
        v
    }

    fn layers_mut(&mut self) -> Vec<&mut Linear> {
        let mut v: Vec<&mut Linear> = self.inputs.iter_mut().collect();
        v.extend(self.hidden.as_mut());
        v.push(&mut self.out);
        v
    }

    /// Whether input layer `i` reads `x` as sparse rows (the first layer over CSR input);
    /// otherwise it gathers its columns densely.
    fn reads_sparse(i: usize, x: &Features) -> bool {
        i == 0 && matches!(x, Features::Sparse(_))
    }

    /// The forward pass over the listed rows of `x`, with dropout when a rate and a generator
    /// are given.
    fn forward(
        &self,
        x: &Features,
        rows: &[usize],
        mut dropout: Option<(f32, &mut SeededRng)>,
        t: &mut Tape,
    ) {
        let (b, s, k) = (rows.len(), self.concat(), self.n_classes());
        let mut pre = vec![0.0f32; b * s];
        t.gathered.clear();
        let (mut lo, mut off) = (0, 0);
        for (i, layer) in self.inputs.iter().enumerate() {
            let hi = lo + layer.inputs;
            let width = layer.outputs;
            for row in pre.chunks_exact_mut(s) {
                row[off..off + width].copy_from_slice(&layer.b);
            }
            match x {
                Features::Sparse(m) if Self::reads_sparse(i, x) => {
                    sparse_forward(m, rows, hi, layer, &mut pre, s, off);
                    t.gathered.push(Vec::new());
                }
                _ => {
                    let xb = gather(x, rows, lo, hi);
                    matmul(
                        &mut pre[off..],
                        s,
                        View::rows(&xb, b, layer.inputs),
                        View::rows(&layer.w, layer.inputs, width),
                        true,
                    );
                    t.gathered.push(xb);
                }
            }
            lo = hi;
            off += width;
        }
        activate(&pre, &mut t.gate0, &mut t.z, reborrow(&mut dropout));
        let top = match &self.hidden {
            Some(hl) => {
                let mut pre1 = vec![0.0f32; b * hl.outputs];
                for row in pre1.chunks_exact_mut(hl.outputs) {
                    row.copy_from_slice(&hl.b);
                }
                matmul(
                    &mut pre1,
                    hl.outputs,
                    View::rows(&t.z, b, s),
                    View::rows(&hl.w, s, hl.outputs),
                    true,
                );
                activate(&pre1, &mut t.gate1, &mut t.h, reborrow(&mut dropout));
                &t.h
            }
            None => &t.z,
        };
        let top_w = self.out.inputs;
        t.logits.clear();
        t.logits.resize(b * k, 0.0);
        for row in t.logits.chunks_exact_mut(k) {
            row.copy_from_slice(&self.out.b);
        }
        matmul(
            &mut t.logits,
            k,
            View::rows(top, b, top_w),
            View::rows(&self.out.w, top_w, k),
            true,
        );
        t.p.clear();
        t.p.resize(b * k, 0.0);
        t.lse.clear();
        for (l, p) in t.logits.chunks_exact(k).zip(t.p.chunks_exact_mut(k)) {
            t.lse.push(softmax_row(l, p));
        }
    }

    /// The mean cross-entropy of the listed rows after [`Net::forward`] and its gradient;
    /// with `tail_grad` (shared topology), also its gradient with respect to the dense tail's
    /// input columns (`rows × dense_tail`, row-major).
    fn backward(
        &self,
        x: &Features,
        rows: &[usize],
        y: &[usize],
        t: &Tape,
        scratch: &mut SparseScratch,
        tail_grad: bool,
    ) -> (f64, Grads, Option<Vec<f32>>) {
        let (b, s, k) = (rows.len(), self.concat(), self.n_classes());
        let inv = 1.0 / b as f32;
        let mut loss = 0.0f64;
        let mut dlogits = t.p.clone();
        for (r, &c) in y.iter().enumerate() {
            let l = &t.logits[r * k..(r + 1) * k];
            loss += t.lse[r] - l[c] as f64;
            dlogits[r * k + c] -= 1.0;
        }
        dlogits.iter_mut().for_each(|v| *v *= inv);
        loss /= b as f64;

        let mut grads = Vec::with_capacity(self.inputs.len() + 2);
        let (top, top_w) = match &self.hidden {
            Some(hl) => (&t.h, hl.outputs),
            None => (&t.z, s),
        };
        // Output layer.
        let mut gw = vec![0.0f32; top_w * k];
        matmul(
            &mut gw,
            k,
            View::rows(top, b, top_w).t(),
            View::rows(&dlogits, b, k),
            false,
        );
        let mut gb = vec![0.0f32; k];
        column_sums(&dlogits, b, k, k, &mut gb);
        let out_grad = LayerGrad {
            w: WeightGrad::Dense(gw),
            b: gb,
        };
        let mut dtop = vec![0.0f32; b * top_w];
        matmul(
            &mut dtop,
            top_w,
            View::rows(&dlogits, b, k),
            View::rows(&self.out.w, top_w, k).t(),
            false,
        );
        // Hidden layer.
        let (dz, hidden_grad) = match &self.hidden {
            Some(hl) => {
                let h = hl.outputs;
                for (d, g) in dtop.iter_mut().zip(&t.gate1) {
                    *d *= g;
                }
                let mut gw = vec![0.0f32; s * h];
                matmul(
                    &mut gw,
                    h,
                    View::rows(&t.z, b, s).t(),
                    View::rows(&dtop, b, h),
                    false,
                );
                let mut gb = vec![0.0f32; h];
                column_sums(&dtop, b, h, h, &mut gb);
                let mut dz = vec![0.0f32; b * s];
                matmul(
                    &mut dz,
                    s,
                    View::rows(&dtop, b, h),
                    View::rows(&hl.w, s, h).t(),
                    false,
                );
                (
                    dz,
                    Some(LayerGrad {
                        w: WeightGrad::Dense(gw),
                        b: gb,
                    }),
                )
            }
            None => (dtop, None),
        };
        let mut dpre = dz;
        for (d, g) in dpre.iter_mut().zip(&t.gate0) {
            *d *= g;
        }
        // Input layers.
        let (mut lo, mut off) = (0, 0);
        let mut dtail = None;
        for (i, layer) in self.inputs.iter().enumerate() {
            let hi = lo + layer.inputs;
            let width = layer.outputs;
            if tail_grad && self.hidden.is_some() && i + 1 == self.inputs.len() {
                // The tail is never read sparse (only input layer 0 is), so its layer's input
                // is a dense block: ∂loss/∂x = ∂loss/∂pre · Wᵀ.
                let mut dx = vec![0.0f32; b * layer.inputs];
                matmul(
                    &mut dx,
                    layer.inputs,
                    View::strided(&dpre[off..], b, width, s),
                    View::rows(&layer.w, layer.inputs, width).t(),
                    false,
                );
                dtail = Some(dx);
            }
            let mut gb = vec![0.0f32; width];
            column_sums(&dpre[off..], b, width, s, &mut gb);
            let w = match x {
                Features::Sparse(m) if Self::reads_sparse(i, x) => {
                    let mut d = Vec::with_capacity(b * width);
                    for r in 0..b {
                        d.extend_from_slice(&dpre[r * s + off..r * s + off + width]);
                    }
                    WeightGrad::Sparse(sparse_grad(m, rows, hi, d, width, scratch))
                }
                _ => {
                    let mut gw = vec![0.0f32; layer.inputs * width];
                    matmul(
                        &mut gw,
                        width,
                        View::rows(&t.gathered[i], b, layer.inputs).t(),
                        View::strided(&dpre[off..], b, width, s),
                        false,
                    );
                    WeightGrad::Dense(gw)
                }
            };
            grads.push(LayerGrad { w, b: gb });
            lo = hi;
            off += width;
        }
        grads.extend(hidden_grad);
        grads.push(out_grad);
        (loss, Grads(grads), dtail)
    }

    /// Class probabilities of the listed rows, in fixed chunks of [`CHUNK`] rows.
    fn predict_rows(&self, x: &Features, rows: &[usize]) -> Vec<f32> {
        rows.par_chunks(CHUNK)
            .map(|chunk| {
                let mut t = Tape::default();
                self.forward(x, chunk, None, &mut t);
                t.p
            })
            .collect::<Vec<_>>()
            .concat()
    }

    /// Accuracy and mean log loss of the listed rows.
    fn score(&self, x: &Features, rows: &[usize], y: &[usize]) -> (f64, f64) {
        let k = self.n_classes();
        let p = self.predict_rows(x, rows);
        let (mut hits, mut loss) = (0usize, 0.0f64);
        for (pr, &r) in p.chunks_exact(k).zip(rows) {
            let best = (0..k).fold(0, |b, c| if pr[c] > pr[b] { c } else { b });
            hits += usize::from(best == y[r]);
            loss -= (pr[y[r]] as f64).max(1e-15).ln();
        }
        let n = rows.len().max(1) as f64;
        (hits as f64 / n, loss / n)
    }
}

/// `out[r, off..off + outputs] += Σ x[row r, c] · W[c]` over the columns `c < hi` of the
/// listed CSR rows (one fixed order a row; rows in parallel).
fn sparse_forward(
    m: &CsrMatrix,
    rows: &[usize],
    hi: usize,
    layer: &Linear,
    out: &mut [f32],
    stride: usize,
    off: usize,
) {
    let width = layer.outputs;
    out.par_chunks_mut(stride)
        .zip(rows.par_iter())
        .with_min_len(4)
        .for_each(|(o, &r)| {
            let o = &mut o[off..off + width];
            let (cols, vals) = m.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                let c = c as usize;
                if c < hi {
                    for (a, &w) in o.iter_mut().zip(&layer.w[c * width..(c + 1) * width]) {
                        *a += v * w;
                    }
                }
            }
        });
}

/// The gradient of a sparse-read layer whose outputs have gradient `d` (`rows × width`): the
/// entries of every column `c < hi` that some listed row holds, grouped by column.
fn sparse_grad(
    m: &CsrMatrix,
    rows: &[usize],
    hi: usize,
    d: Vec<f32>,
    width: usize,
    sc: &mut SparseScratch,
) -> SparseGrad {
    if sc.slot.len() < hi {
        sc.slot.resize(hi, u32::MAX);
    }
    let (mut touched, mut starts) = (Vec::new(), Vec::new());
    // Count the entries of each touched column (first-appearance order).
    for &r in rows {
        let (cols, _) = m.row(r);
        for &c in cols {
            if (c as usize) < hi {
                let s = &mut sc.slot[c as usize];
                if *s == u32::MAX {
                    *s = touched.len() as u32;
                    touched.push(c);
                    starts.push(0);
                }
                starts[*s as usize] += 1;
            }
        }
    }
    // Counts to offsets, then the entries of each column in batch-row order.
    let mut total = 0;
    for s in starts.iter_mut() {
        let n = *s;
        *s = total;
        total += n;
    }
    starts.push(total);
    let mut entries = vec![(0u32, 0.0f32); total];
    let mut cursor = starts.clone();
    for (j, &r) in rows.iter().enumerate() {
        let (cols, vals) = m.row(r);
        for (&c, &v) in cols.iter().zip(vals) {
            if (c as usize) < hi {
                let s = sc.slot[c as usize] as usize;
                entries[cursor[s]] = (j as u32, v);
                cursor[s] += 1;
            }
        }
    }
    for &c in &touched {
        sc.slot[c as usize] = u32::MAX;
    }
    SparseGrad {
        rows: touched,
        starts,
        entries,
        d,
        width,
    }
}

/// Adam's per-step constants.
#[derive(Clone, Copy)]
struct Step {
    /// `lr / (1 - β1^t)`.
    size: f32,
    /// `1 / (1 - β2^t)`.
    bc2: f32,
}

#[inline]
fn adam(w: &mut f32, m: &mut f32, v: &mut f32, g: f32, decay: f32, s: Step) {
    *m = BETA1 * *m + (1.0 - BETA1) * g;
    *v = BETA2 * *v + (1.0 - BETA2) * g * g;
    *w = *w * decay - s.size * *m / ((*v * s.bc2).sqrt() + EPS);
}

/// Dense AdamW over whole arrays (in parallel for large ones; every element is independent).
fn adam_dense(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], decay: f32, s: Step) {
    const PAR: usize = 1 << 16;
    let run = |w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]| {
        for (((w, m), v), &g) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            adam(w, m, v, g, decay, s);
        }
    };
    if w.len() >= PAR {
        w.par_chunks_mut(4096)
            .zip(m.par_chunks_mut(4096))
            .zip(v.par_chunks_mut(4096))
            .zip(g.par_chunks(4096))
            .for_each(|(((w, m), v), g)| run(w, m, v, g));
    } else {
        run(w, m, v, g);
    }
}

/// Adam moments of one layer; `last` (sparse-read layers) holds, per weight row, the step up
/// to which its weight decay has been applied.
#[derive(Debug)]
struct LayerState {
    mw: Vec<f32>,
    vw: Vec<f32>,
    mb: Vec<f32>,
    vb: Vec<f32>,
    last: Option<Vec<u32>>,
    /// Per weight row: its position in the current sparse gradient, `u32::MAX` if absent.
    slot: Vec<u32>,
}

/// AdamW over a [`Net`], lazy for sparse-read layers.
#[derive(Debug)]
struct Adam {
    layers: Vec<LayerState>,
    t: u32,
    lr: f32,
    /// Decay factor of one step, `1 - lr · alpha`.
    decay: f32,
}

impl Adam {
    /// Moments for `net`, whose first layer reads sparse rows when `sparse_input`.
    fn new(net: &Net, sparse_input: bool, lr: f64, alpha: f64) -> Self {
        let lazy: Vec<bool> = (0..net.layers().len())
            .map(|i| i == 0 && sparse_input)
            .collect();
        let layers = net
            .layers()
            .iter()
            .zip(lazy)
            .map(|(l, lazy)| LayerState {
                mw: vec![0.0; l.w.len()],
                vw: vec![0.0; l.w.len()],
                mb: vec![0.0; l.b.len()],
                vb: vec![0.0; l.b.len()],
                last: lazy.then(|| vec![0; l.inputs]),
                slot: if lazy {
                    vec![u32::MAX; l.inputs]
                } else {
                    Vec::new()
                },
            })
            .collect();
        Self {
            layers,
            t: 0,
            lr: lr as f32,
            decay: (1.0 - lr * alpha) as f32,
        }
    }

    fn step(&mut self, net: &mut Net, grads: &Grads) {
        self.t += 1;
        let t = self.t as i32;
        let s = Step {
            size: (self.lr as f64 / (1.0 - (BETA1 as f64).powi(t))) as f32,
            bc2: (1.0 / (1.0 - (BETA2 as f64).powi(t))) as f32,
        };
        let (decay, now) = (self.decay, self.t);
        for ((layer, st), g) in net
            .layers_mut()
            .into_iter()
            .zip(&mut self.layers)
            .zip(&grads.0)
        {
            adam_dense(&mut layer.b, &mut st.mb, &mut st.vb, &g.b, 1.0, s);
            match &g.w {
                WeightGrad::Dense(gw) => {
                    adam_dense(&mut layer.w, &mut st.mw, &mut st.vw, gw, decay, s);
                }
                WeightGrad::Sparse(sg) => {
                    let width = layer.outputs;
                    let last = st
                        .last
                        .as_mut()
                        .expect("sparse gradients only for lazy layers");
                    for (i, &r) in sg.rows.iter().enumerate() {
                        st.slot[r as usize] = i as u32;
                    }
                    let slot = &st.slot;
                    layer
                        .w
                        .par_chunks_mut(width)
                        .zip(st.mw.par_chunks_mut(width))
                        .zip(st.vw.par_chunks_mut(width))
                        .zip(last.par_iter_mut())
                        .zip(slot.par_iter())
                        .with_min_len(1024)
                        .for_each_init(
                            || vec![0.0f32; width],
                            |gr, ((((w, m), v), last), &pos)| {
                                if pos == u32::MAX {
                                    return;
                                }
                                sg.row(pos as usize, gr);
                                // The decay of the steps this row sat out, then this step's.
                                let catch_up = decay.powi((now - 1 - *last) as i32);
                                for (((w, m), v), &g) in
                                    w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(&*gr)
                                {
                                    *w *= catch_up;
                                    adam(w, m, v, g, decay, s);
                                }
                                *last = now;
                            },
                        );
                    for &r in &sg.rows {
                        st.slot[r as usize] = u32::MAX;
                    }
                }
            }
        }
    }

    /// Brings the decay of every lazily updated row up to the current step.
    fn flush(&mut self, net: &mut Net) {
        let (decay, now) = (self.decay, self.t);
        for (layer, st) in net.layers_mut().into_iter().zip(&mut self.layers) {
            let Some(last) = st.last.as_mut() else {
                continue;
            };
            let width = layer.outputs;
            layer
                .w
                .par_chunks_mut(width)
                .zip(last.par_iter_mut())
                .with_min_len(1024)
                .for_each(|(w, last)| {
                    if *last != now {
                        let f = decay.powi((now - *last) as i32);
                        w.iter_mut().for_each(|v| *v *= f);
                        *last = now;
                    }
                });
        }
    }
}

/// The input layers' `(inputs, outputs)` and the hidden layer's width (shared topology).
type Layout = (Vec<(usize, usize)>, Option<usize>);

/// A fitted multilayer perceptron.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    net: Net,
    epochs_run: usize,
    best_epoch: usize,
    best_validation: Option<(f64, f64)>,
}

impl MlpParams {
    /// Validates the hyperparameters.
    pub fn check(&self) -> Result<(), ClassicError> {
        let bad = |name, value: String, reason| {
            Err(ClassicError::InvalidParam {
                name,
                value,
                reason,
            })
        };
        for (name, v) in [
            ("hidden", self.hidden),
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("patience", self.patience),
        ] {
            if v == 0 {
                return bad(name, "0".into(), "must be at least 1");
            }
        }
        if self.projection == 0 && self.dense_tail != 0 {
            return bad(
                "dense_tail",
                self.dense_tail.to_string(),
                "is only used by the shared hidden layer (projection > 0); set it to 0",
            );
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return bad(
                "alpha",
                self.alpha.to_string(),
                "must be finite and at least 0",
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", self.lr.to_string(), "must be positive and finite");
        }
        if self.lr * self.alpha >= 1.0 {
            return bad(
                "alpha",
                self.alpha.to_string(),
                "lr · alpha must stay below 1 (the per-step decay factor is 1 - lr · alpha)",
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", self.dropout.to_string(), "must lie in [0, 1)");
        }
        let vf = self.validation_fraction;
        if !(0.0..1.0).contains(&vf) {
            return bad("validation_fraction", vf.to_string(), "must lie in [0, 1)");
        }
        Ok(())
    }

    /// The input layers' `(inputs, outputs)` and the hidden layer's width (shared topology)
    /// for `d` feature columns.
    fn layout(&self, d: usize) -> Result<Layout, ClassicError> {
        if d == 0 {
            return Err(ClassicError::InvalidParam {
                name: "n_features",
                value: "0".into(),
                reason: "the mlp head needs at least one feature column",
            });
        }
        let layout = if self.projection == 0 {
            (vec![(d, self.hidden)], None)
        } else {
            let t = self.dense_tail;
            if t == 0 || t >= d {
                return Err(ClassicError::InvalidParam {
                    name: "dense_tail",
                    value: format!("{t} (of {d} feature columns)"),
                    reason: "the shared hidden layer (projection > 0) needs 0 < dense_tail < \
                             n_features: the trailing dense block (the embedding) after a \
                             leading classical block (TF-IDF)",
                });
            }
            (
                vec![(d - t, self.projection), (t, self.projection)],
                Some(self.hidden),
            )
        };
        let (inputs, hidden) = &layout;
        let concat: usize = inputs.iter().map(|w| w.1).sum();
        let sizes = inputs
            .iter()
            .map(|&(a, b)| a.checked_mul(b))
            .chain([hidden.map_or(Some(0), |h| h.checked_mul(concat))]);
        for size in sizes {
            if size.is_none_or(|s| s > MAX_LAYER_WEIGHTS) {
                return Err(ClassicError::InvalidParam {
                    name: "hidden",
                    value: format!("{} (with {d} feature columns)", self.hidden),
                    reason: "a layer would hold more than 2^30 weights",
                });
            }
        }
        Ok(layout)
    }

    /// Fits on features `x` with class indices `y` in `0..n_classes`.
    pub fn fit(&self, x: &Features, y: &[usize], n_classes: usize) -> Result<Mlp, ClassicError> {
        self.check()?;
        check_training_data(x, y, n_classes)?;
        let (inputs, hidden) = self.layout(x.cols())?;
        let (train, val) = holdout(y, n_classes, self.validation_fraction, self.seed);
        let mut net = Net::init(&inputs, hidden, n_classes, self.seed);
        let mut opt = Adam::new(&net, matches!(x, Features::Sparse(_)), self.lr, self.alpha);
        let mut order = train;
        let mut shuffle = stream_rng(self.seed, 200);
        let mut drop_rng = stream_rng(self.seed, 201);
        let rate = self.dropout as f32;
        let (mut tape, mut scratch) = (Tape::default(), SparseScratch::default());
        let mut yb = Vec::with_capacity(self.batch_size);
        let mut best: Option<(f64, f64, Net)> = None;
        let (mut best_epoch, mut epochs_run) = (0, 0);
        for epoch in 1..=self.epochs {
            shuffle.shuffle(&mut order);
            for batch in order.chunks(self.batch_size) {
                yb.clear();
                yb.extend(batch.iter().map(|&r| y[r]));
                let dropout = (rate > 0.0).then_some((rate, &mut drop_rng));
                net.forward(x, batch, dropout, &mut tape);
                let (_, grads, _) = net.backward(x, batch, &yb, &tape, &mut scratch, false);
                opt.step(&mut net, &grads);
            }
            opt.flush(&mut net);
            epochs_run = epoch;
            if val.is_empty() {
                best_epoch = epoch;
                continue;
            }
            let (acc, loss) = net.score(x, &val, y);
            let better = best
                .as_ref()
                .is_none_or(|b| acc > b.0 || (acc == b.0 && loss < b.1));
            if better {
                best = Some((acc, loss, net.clone()));
                best_epoch = epoch;
            } else if epoch - best_epoch >= self.patience {
                break;
            }
        }
        let best_validation = match best {
            Some((acc, loss, best_net)) => {
                net = best_net;
                Some((acc, loss))
            }
            None => None,
        };
        // A diverged net scores like any other on the holdout (its NaN probabilities lose
        // every comparison) but could never be stored and loaded again: refuse it here.
        if !net
            .layers()
            .iter()
            .flat_map(|l| l.w.iter().chain(&l.b))
            .all(|v| v.is_finite())
        {
            return Err(ClassicError::Diverged { head: "mlp" });
        }
        Ok(Mlp {
            net,
            epochs_run,
            best_epoch,
            best_validation,
        })
    }
}

impl Mlp {
    /// Epochs trained before stopping.
    pub fn epochs_run(&self) -> usize {
        self.epochs_run
    }

    /// The epoch whose weights the model holds (1-based; 0 for a restored model).
    pub fn best_epoch(&self) -> usize {
        self.best_epoch
    }

    /// Accuracy and mean log loss of the kept epoch on the early-stopping holdout; `None`
    /// without a holdout or for a restored model.
    pub fn best_validation(&self) -> Option<(f64, f64)> {
        self.best_validation
    }
}

/// The shared-hidden-layer MLP (`projection > 0`) trained one mini-batch at a time by a caller
/// that also trains what produces its dense tail: each [`MlpTrainer::step`] returns the loss
/// gradient with respect to the tail columns, so an encoder whose pooled vectors form the tail
/// can be fine-tuned end to end with the head.
///
/// A step is one of [`MlpParams::fit`]'s: the same initial weights for a seed, the same
/// forward pass with dropout, the same (lazy, for a sparse classical block) AdamW with
/// decoupled decay `alpha`. What `fit` does around the steps (holdout, epochs, batch order,
/// early stopping) is the caller's.
#[derive(Debug)]
pub struct MlpTrainer {
    net: Net,
    opt: Adam,
    sparse: bool,
    dropout: f32,
    drop_rng: SeededRng,
    tape: Tape,
    scratch: SparseScratch,
    dense_tail: usize,
}

/// `"sparse"` or `"dense"`: the storage of `x`.
fn storage(x: &Features) -> &'static str {
    match x {
        Features::Sparse(_) => "sparse",
        Features::Dense(_) => "dense",
    }
}

impl MlpParams {
    /// A step-wise trainer of the shared topology over `n_features` columns (the last
    /// `dense_tail` of them the tail) and `n_classes` classes, for rows stored sparse
    /// (`sparse_input`: the classical block's layer then updates lazily) or dense. `epochs`,
    /// `batch_size`, `patience` and `validation_fraction` are the caller's business.
    pub fn trainer(
        &self,
        n_features: usize,
        n_classes: usize,
        sparse_input: bool,
    ) -> Result<MlpTrainer, ClassicError> {
        self.check()?;
        if self.projection == 0 {
            return Err(ClassicError::InvalidParam {
                name: "projection",
                value: "0".into(),
                reason: "step-wise training returns the gradient of the dense tail: it needs \
                         the shared hidden layer (projection > 0)",
            });
        }
        if n_classes < 2 {
            return Err(ClassicError::TooFewClasses { present: n_classes });
        }
        let (inputs, hidden) = self.layout(n_features)?;
        let net = Net::init(&inputs, hidden, n_classes, self.seed);
        let opt = Adam::new(&net, sparse_input, self.lr, self.alpha);
        Ok(MlpTrainer {
            net,
            opt,
            sparse: sparse_input,
            dropout: self.dropout as f32,
            drop_rng: stream_rng(self.seed, 201),
            tape: Tape::default(),
            scratch: SparseScratch::default(),
            dense_tail: self.dense_tail,
        })
    }
}

impl MlpTrainer {
    /// One AdamW step on the mean cross-entropy of the rows of `x` (a mini-batch, dropout
    /// on) with class indices `y`. Returns that loss and its gradient with respect to the
    /// trailing `dense_tail` columns of `x` (`rows × dense_tail`, row-major), taken at the
    /// weights before the step.
    pub fn step(&mut self, x: &Features, y: &[usize]) -> Result<(f64, Vec<f32>), ClassicError> {
        let k = self.net.n_classes();
        if storage(x) != if self.sparse { "sparse" } else { "dense" } {
            return Err(ClassicError::InputKind {
                expected: if self.sparse { "sparse" } else { "dense" },
                got: storage(x),
            });
        }
        check_input(x, self.net.n_features())?;
        if x.rows() != y.len() {
            return Err(ClassicError::LengthMismatch {
                rows: x.rows(),
                labels: y.len(),
            });
        }
        if y.is_empty() {
            return Err(ClassicError::Empty);
        }
        if let Some((row, &label)) = y.iter().enumerate().find(|(_, &c)| c >= k) {
            return Err(ClassicError::LabelOutOfRange {
                row,
                label,
                classes: k,
            });
        }
        let rows: Vec<usize> = (0..x.rows()).collect();
        let dropout = (self.dropout > 0.0).then_some((self.dropout, &mut self.drop_rng));
        self.net.forward(x, &rows, dropout, &mut self.tape);
        let (loss, grads, dtail) =
            self.net
                .backward(x, &rows, y, &self.tape, &mut self.scratch, true);
        self.opt.step(&mut self.net, &grads);
        let dtail = dtail.expect("the shared topology has a dense tail");
        debug_assert_eq!(dtail.len(), rows.len() * self.dense_tail);
        Ok((loss, dtail))
    }

    /// Steps taken.
    pub fn steps(&self) -> usize {
        self.opt.t as usize
    }

    /// Class probabilities of the rows of `x` at the current weights (no dropout).
    pub fn predict_proba(&mut self, x: &Features) -> Result<Vec<f32>, ClassicError> {
        check_input(x, self.net.n_features())?;
        self.opt.flush(&mut self.net);
        let rows: Vec<usize> = (0..x.rows()).collect();
        Ok(self.net.predict_rows(x, &rows))
    }

    /// The model at the current weights, as [`MlpParams::fit`] would return it (its epoch
    /// counters 0 and no holdout score, as a restored model); NaN or infinite weights are
    /// [`ClassicError::Diverged`].
    pub fn model(&mut self) -> Result<Mlp, ClassicError> {
        // The lazily skipped decay is due now; applying it early changes nothing later (each
        // row remembers the step its decay has reached).
        self.opt.flush(&mut self.net);
        if !self
            .net
            .layers()
            .iter()
            .flat_map(|l| l.w.iter().chain(&l.b))
            .all(|v| v.is_finite())
        {
            return Err(ClassicError::Diverged { head: "mlp" });
        }
        Ok(Mlp {
            net: self.net.clone(),
            epochs_run: 0,
            best_epoch: 0,
            best_validation: None,
        })
    }
}

impl ProbaHead for Mlp {
    fn n_features(&self) -> usize {
        self.net.n_features()
    }

    fn n_classes(&self) -> usize {
        self.net.n_classes()
    }

    fn predict_proba(&self, x: &Features) -> Result<Vec<f32>, ClassicError> {
        check_input(x, self.n_features())?;
        let rows: Vec<usize> = (0..x.rows()).collect();
        Ok(self.net.predict_rows(x, &rows))
    }

    fn to_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        let mut put = |name: String, l: &Linear| {
            out.insert(
                format!("{name}.weight"),
                Tensor::f32(vec![l.inputs, l.outputs], l.w.clone()),
            );
            out.insert(
                format!("{name}.bias"),
                Tensor::f32(vec![l.outputs], l.b.clone()),
            );
        };
        for (i, l) in self.net.inputs.iter().enumerate() {
            put(format!("in{i}"), l);
        }
        if let Some(h) = &self.net.hidden {
            put("hidden".into(), h);
        }
        put("out".into(), &self.net.out);
        out
    }
}

impl FitHead for MlpParams {
    type Model = Mlp;

    fn check(&self) -> Result<(), ClassicError> {
        MlpParams::check(self)
    }

    fn fit(&self, x: &Features, y: &[usize], n_classes: usize) -> Result<Mlp, ClassicError> {
        MlpParams::fit(self, x, y, n_classes)
    }

    fn restore(
        &self,
        n_features: usize,
        n_classes: usize,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<Mlp, ClassicError> {
        self.check()?;
        if n_classes < 2 {
            return Err(ClassicError::TooFewClasses { present: n_classes });
        }
        let (inputs, hidden) = self.layout(n_features)?;
        let get = |name: &str, inputs: usize, outputs: usize| -> Result<Linear, ClassicError> {
            let w = stored_f32(tensors, &format!("{name}.weight"), Some(&[inputs, outputs]))?;
            let b = stored_f32(tensors, &format!("{name}.bias"), Some(&[outputs]))?;
            Ok(Linear {
                inputs,
                outputs,
                w: w.to_vec(),
                b: b.to_vec(),
            })
        };
        let ins = inputs
            .iter()
            .enumerate()
            .map(|(i, &(d, m))| get(&format!("in{i}"), d, m))
            .collect::<Result<Vec<_>, _>>()?;
        let concat: usize = inputs.iter().map(|w| w.1).sum();
        let hidden = hidden.map(|h| get("hidden", concat, h)).transpose()?;
        let top = hidden.as_ref().map_or(concat, |h| h.outputs);
        let out = get("out", top, n_classes)?;
        let topology = if hidden.is_some() { "shared" } else { "deep" };
        let n_layers = ins.len() + usize::from(hidden.is_some()) + 1;
        let known = |name: &str| {
            let layer = name
                .strip_suffix(".weight")
                .or_else(|| name.strip_suffix(".bias"));
            layer.is_some_and(|l| {
                l == "out"
                    || (l == "hidden" && hidden.is_some())
                    || (0..ins.len()).any(|i| l == format!("in{i}"))
            })
        };
        if let Some(extra) = tensors.keys().find(|k| !known(k)) {
            return Err(ClassicError::Stored {
                tensor: extra.clone(),
                reason: format!("not a tensor of the {topology} topology ({n_layers} layers)"),
            });
        }
        Ok(Mlp {
            net: Net {
                inputs: ins,
                hidden,
                out,
            },
            epochs_run: 0,
            best_epoch: 0,
            best_validation: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::{accuracy, blobs, to_sparse};
    use crate::{HeadParams, LogisticRegressionParams};
    use lmfuse_core::DenseMatrix;

    /// `n × d` values uniform in `[-1, 1)`, a few exact zeros, column `zero_col` all zero.
    fn random_rows(n: usize, d: usize, zero_col: usize, seed: u64) -> DenseMatrix {
        let mut rng = SeededRng::new(seed);
        let data = (0..n * d)
            .map(|i| {
                let v = 2.0 * unit(&mut rng) - 1.0;
                if i % d == zero_col || i % 7 == 3 {
                    0.0
                } else {
                    v
                }
            })
            .collect();
        DenseMatrix::new(n, d, data).unwrap()
    }

    fn loss_and_grads(net: &Net, x: &Features, y: &[usize], dropout: f32) -> (f64, Grads) {
        let rows: Vec<usize> = (0..x.rows()).collect();
        let mut rng = SeededRng::new(42);
        let mut t = Tape::default();
        net.forward(
            x,
            &rows,
            (dropout > 0.0).then_some((dropout, &mut rng)),
            &mut t,
        );
        let (loss, grads, _) = net.backward(x, &rows, y, &t, &mut SparseScratch::default(), false);
        (loss, grads)
    }

    fn dense_grad(w: &WeightGrad, inputs: usize, outputs: usize) -> Vec<f32> {
        match w {
            WeightGrad::Dense(g) => g.clone(),
            WeightGrad::Sparse(sg) => {
                let mut out = vec![0.0; inputs * outputs];
                for (i, &r) in sg.rows.iter().enumerate() {
                    let r = r as usize;
                    sg.row(i, &mut out[r * outputs..(r + 1) * outputs]);
                }
                out
            }
        }
    }

    /// Central differences of the loss against the backward pass, every weight and bias.
    fn check_gradients(net: &Net, x: &Features, y: &[usize], dropout: f32) {
        let (_, grads) = loss_and_grads(net, x, y, dropout);
        let eps = 1e-3f32;
        let mut checked = 0;
        for (li, g) in grads.0.iter().enumerate() {
            let layer = net.layers()[li];
            let gw = dense_grad(&g.w, layer.inputs, layer.outputs);
            for (is_bias, analytic) in [(false, &gw), (true, &g.b)] {
                for (j, &a) in analytic.iter().enumerate() {
                    let at = |delta: f32| {
                        let mut n2 = net.clone();
                        let l = &mut n2.layers_mut()[li];
                        if is_bias {
                            l.b[j] += delta;
                        } else {
                            l.w[j] += delta;
                        }
                        loss_and_grads(&n2, x, y, dropout).0
                    };
                    let fd = ((at(eps) - at(-eps)) / (2.0 * eps as f64)) as f32;
                    assert!(
                        (fd - a).abs() <= 5e-4 + 1e-2 * fd.abs().max(a.abs()),
                        "layer {li} {} {j}: numeric {fd}, backward {a}",
                        if is_bias { "bias" } else { "weight" }
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 40);
    }

    #[test]
    fn backward_matches_finite_differences_for_both_topologies_and_inputs() {
        let dense = random_rows(7, 6, 4, 3);
        let y = [0, 1, 2, 0, 1, 2, 1];
        for (inputs, hidden) in [(vec![(6, 5)], None), (vec![(4, 3), (2, 3)], Some(4))] {
            let mut net = Net::init(&inputs, hidden, 3, 11);
            // Non-zero biases, so that every unit's bias gradient is exercised.
            for l in net.layers_mut() {
                for (i, b) in l.b.iter_mut().enumerate() {
                    *b = 0.1 * (i as f32 % 3.0) - 0.05;
                }
            }
            for x in [
                Features::Dense(dense.clone()),
                Features::Sparse(CsrMatrix::from_dense(&dense)),
            ] {
                for dropout in [0.0, 0.3] {
                    check_gradients(&net, &x, &y, dropout);
                }
            }
        }
    }

    /// The loss of `x` with dropout seeded as in [`loss_and_grads`], and its gradient with
    /// respect to the dense tail.
    fn loss_and_tail_grad(net: &Net, x: &Features, y: &[usize], dropout: f32) -> (f64, Vec<f32>) {
        let rows: Vec<usize> = (0..x.rows()).collect();
        let mut rng = SeededRng::new(42);
        let mut t = Tape::default();
        net.forward(
            x,
            &rows,
            (dropout > 0.0).then_some((dropout, &mut rng)),
            &mut t,
        );
        let (loss, _, dtail) = net.backward(x, &rows, y, &t, &mut SparseScratch::default(), true);
        (loss, dtail.expect("shared topology"))
    }

    #[test]
    fn tail_gradient_matches_finite_differences_of_the_input() {
        // 4 classical columns then a tail of 3 (as TF-IDF then the pooled vector); the tail's
        // gradient is what end-to-end training sends into the encoder.
        let (n, d, tail) = (6, 7, 3);
        let dense = random_rows(n, d, 1, 5);
        let y = [0, 1, 2, 0, 1, 2];
        let mut net = Net::init(&[(d - tail, 4), (tail, 4)], Some(5), 3, 9);
        for l in net.layers_mut() {
            for (i, b) in l.b.iter_mut().enumerate() {
                *b = 0.1 * (i as f32 % 3.0) - 0.05;
            }
        }
        let as_sparse = |m: &DenseMatrix| Features::Sparse(CsrMatrix::from_dense(m));
        for sparse in [false, true] {
            for dropout in [0.0, 0.3] {
                let wrap = |m: &DenseMatrix| {
                    if sparse {
                        as_sparse(m)
                    } else {
                        Features::Dense(m.clone())
                    }
                };
                let (_, g) = loss_and_tail_grad(&net, &wrap(&dense), &y, dropout);
                assert_eq!(g.len(), n * tail);
                let eps = 1e-3f32;
                for r in 0..n {
                    for j in 0..tail {
                        let at = |delta: f32| {
                            let mut data = dense.as_slice().to_vec();
                            data[r * d + d - tail + j] += delta;
                            let m = DenseMatrix::new(n, d, data).unwrap();
                            loss_and_tail_grad(&net, &wrap(&m), &y, dropout).0
                        };
                        let fd = ((at(eps) - at(-eps)) / (2.0 * eps as f64)) as f32;
                        let a = g[r * tail + j];
                        assert!(
                            (fd - a).abs() <= 5e-4 + 1e-2 * fd.abs().max(a.abs()),
                            "sparse {sparse} dropout {dropout} row {r} tail {j}: numeric {fd}, \
                             backward {a}"
                        );
                    }
                }
                // Zero entries of the tail are skipped by CSR storage but still get a
                // gradient (they are inputs like any other).
                assert!(g.iter().filter(|v| v.abs() > 1e-6).count() > n * tail / 2);
            }
        }
    }

    #[test]
    fn trainer_steps_reproduce_fit_and_hand_back_the_tail_gradient() {
        let (x, y) = sparse_text_like(120, 300, 12, 4);
        // The sparse rows with a dense 5-column tail appended, as TF-IDF then an embedding.
        let Features::Sparse(m) = &x else {
            unreachable!()
        };
        let tail = 5;
        let mut rng = SeededRng::new(8);
        let (mut indptr, mut idx, mut val) = (vec![0], Vec::new(), Vec::new());
        for (r, &label) in y.iter().enumerate() {
            let (cols, vals) = m.row(r);
            idx.extend_from_slice(cols);
            val.extend_from_slice(vals);
            for j in 0..tail {
                idx.push((m.cols() + j) as u32);
                val.push(2.0 * unit(&mut rng) - 1.0 + if label == j % 3 { 0.5 } else { 0.0 });
            }
            indptr.push(idx.len());
        }
        let xs =
            Features::Sparse(CsrMatrix::new(m.rows(), m.cols() + tail, indptr, idx, val).unwrap());
        let params = MlpParams {
            hidden: 16,
            projection: 8,
            dense_tail: tail,
            epochs: 10,
            lr: 1e-2,
            alpha: 0.5,
            validation_fraction: 0.0,
            ..Default::default()
        };
        let fitted = params.fit(&xs, &y, 3).unwrap();
        // The same batches as fit: its shuffle stream, epoch after epoch.
        let mut trainer = params.trainer(xs.cols(), 3, true).unwrap();
        let mut order: Vec<usize> = (0..y.len()).collect();
        let mut shuffle = stream_rng(params.seed, 200);
        let mut losses = Vec::new();
        for _ in 0..params.epochs {
            shuffle.shuffle(&mut order);
            for batch in order.chunks(params.batch_size) {
                let xb = xs.select_rows(batch);
                let yb: Vec<usize> = batch.iter().map(|&r| y[r]).collect();
                let (loss, dtail) = trainer.step(&xb, &yb).unwrap();
                assert_eq!(dtail.len(), batch.len() * tail);
                assert!(dtail.iter().all(|v| v.is_finite()) && dtail.iter().any(|&v| v != 0.0));
                losses.push(loss);
            }
            // fit brings the lazy decay up to date at the end of each epoch; so does model().
            trainer.model().unwrap();
        }
        assert_eq!(trainer.steps(), losses.len());
        assert!(losses[losses.len() - 1] < losses[0], "{losses:?}");
        let stepped = trainer.model().unwrap();
        let (a, b) = (stepped.to_tensors(), fitted.to_tensors());
        for (name, t) in &a {
            for (u, v) in t.as_f32().unwrap().iter().zip(b[name].as_f32().unwrap()) {
                assert!(
                    (u - v).abs() <= 1e-5 * (1.0 + u.abs()),
                    "{name}: {u} vs {v}"
                );
            }
        }
        let p = trainer.predict_proba(&xs).unwrap();
        assert_eq!(p, stepped.predict_proba(&xs).unwrap());
        let acc = accuracy(&p, &y, 3);
        assert!(acc > 0.8, "training accuracy {acc}");
    }

    #[test]
    fn trainer_refuses_what_it_cannot_train() {
        let d = MlpParams {
            projection: 4,
            dense_tail: 2,
            ..Default::default()
        };
        let name_of = |r: Result<MlpTrainer, ClassicError>| match r {
            Err(ClassicError::InvalidParam { name, .. }) => name,
            other => panic!("{other:?}"),
        };
        let deep = MlpParams {
            projection: 0,
            dense_tail: 0,
            ..d
        };
        assert_eq!(name_of(deep.trainer(6, 3, true)), "projection");
        assert_eq!(name_of(d.trainer(2, 3, true)), "dense_tail");
        assert!(matches!(
            d.trainer(6, 1, true),
            Err(ClassicError::TooFewClasses { present: 1 })
        ));
        let mut t = d.trainer(4, 3, true).unwrap();
        let dense = random_rows(3, 4, 0, 1);
        assert_eq!(
            t.step(&Features::Dense(dense.clone()), &[0, 1, 2])
                .unwrap_err(),
            ClassicError::InputKind {
                expected: "sparse",
                got: "dense"
            }
        );
        let x = to_sparse(&Features::Dense(dense));
        assert!(matches!(
            t.step(&x, &[0, 1]),
            Err(ClassicError::LengthMismatch { .. })
        ));
        assert!(matches!(
            t.step(&x, &[0, 1, 3]),
            Err(ClassicError::LabelOutOfRange { label: 3, .. })
        ));
        let nan =
            Features::Sparse(CsrMatrix::new(1, 4, vec![0, 1], vec![3], vec![f32::NAN]).unwrap());
        assert_eq!(
            t.step(&nan, &[0]).unwrap_err(),
            ClassicError::NotFinite { row: 0, col: 3 }
        );
        assert_eq!(t.steps(), 0, "a refused step changes nothing");
        // A single-class batch is a valid step (mini-batches often are).
        assert!(t.step(&x.select_rows(&[0]), &[2]).is_ok());
    }

    #[test]
    fn sparse_reads_skip_absent_columns_and_never_touch_the_tail_rows() {
        let dense = random_rows(5, 6, 1, 8);
        let x = Features::Sparse(CsrMatrix::from_dense(&dense));
        let net = Net::init(&[(4, 3), (2, 3)], Some(4), 2, 1);
        let (_, grads) = loss_and_grads(&net, &x, &[0, 1, 0, 1, 1], 0.0);
        let WeightGrad::Sparse(sg) = &grads.0[0].w else {
            panic!("the classical block is read sparse");
        };
        let mut rows = sg.rows.clone();
        rows.sort_unstable();
        assert_eq!(
            rows,
            vec![0, 2, 3],
            "column 1 is all zero, 4 and 5 form the tail"
        );
        assert!(matches!(grads.0[1].w, WeightGrad::Dense(_)));
    }

    #[test]
    fn lazy_adam_applies_the_skipped_decay_when_a_row_returns() {
        let mut net = Net::init(&[(2, 1)], None, 2, 0);
        let w0 = net.inputs[0].w.clone();
        let (lr, alpha) = (0.1f64, 0.5f64);
        // The first layer reads sparse rows: its rows update lazily.
        let mut opt = Adam::new(&net, true, lr, alpha);
        // One batch row of value 1 in each touched column: the row gradients are `g`.
        let grads = |rows: Vec<u32>, g: Vec<f32>| {
            let sg = SparseGrad {
                starts: (0..=rows.len()).collect(),
                entries: (0..rows.len() as u32).map(|j| (j, 1.0)).collect(),
                rows,
                d: g,
                width: 1,
            };
            Grads(vec![
                LayerGrad {
                    w: WeightGrad::Sparse(sg),
                    b: vec![0.0],
                },
                LayerGrad {
                    w: WeightGrad::Dense(vec![0.0; 2]),
                    b: vec![0.0; 2],
                },
            ])
        };
        // Row 0 is touched at steps 1 and 4, row 1 never.
        let (g1, g4) = (0.5f32, -2.0f32);
        opt.step(&mut net, &grads(vec![0], vec![g1]));
        opt.step(&mut net, &grads(vec![], vec![]));
        opt.step(&mut net, &grads(vec![], vec![]));
        opt.step(&mut net, &grads(vec![0], vec![g4]));
        opt.flush(&mut net);
        let d = 1.0 - lr * alpha;
        let upd = |t: i32, m: f64, v: f64| {
            lr / (1.0 - 0.9f64.powi(t)) * m / ((v / (1.0 - 0.999f64.powi(t))).sqrt() + 1e-8)
        };
        let (m1, v1) = (0.1 * g1 as f64, 0.001 * (g1 as f64).powi(2));
        let w1 = w0[0] as f64 * d - upd(1, m1, v1);
        let (m4, v4) = (
            0.9 * m1 + 0.1 * g4 as f64,
            0.999 * v1 + 0.001 * (g4 as f64).powi(2),
        );
        let w4 = w1 * d.powi(3) - upd(4, m4, v4);
        let got = &net.inputs[0].w;
        assert!((got[0] as f64 - w4).abs() < 1e-6, "{} vs {w4}", got[0]);
        let untouched = w0[1] as f64 * d.powi(4);
        assert!(
            (got[1] as f64 - untouched).abs() < 1e-6,
            "{} vs {untouched}",
            got[1]
        );
    }

    /// Two classes by radius: inside 1, or on a ring of radius 1.6 to 2.4.
    fn circles(n: usize, seed: u64) -> (Features, Vec<usize>) {
        let mut rng = SeededRng::new(seed);
        let (mut data, mut y) = (Vec::new(), Vec::new());
        for i in 0..n {
            let c = i % 2;
            let a = unit(&mut rng) * std::f32::consts::TAU;
            let r = if c == 0 {
                unit(&mut rng)
            } else {
                1.6 + 0.8 * unit(&mut rng)
            };
            data.extend([r * a.cos(), r * a.sin()]);
            y.push(c);
        }
        (Features::Dense(DenseMatrix::new(n, 2, data).unwrap()), y)
    }

    #[test]
    fn learns_concentric_circles_that_logistic_regression_cannot_separate() {
        let (x, y) = circles(400, 5);
        let (xt, yt) = circles(400, 6);
        let mlp = MlpParams {
            hidden: 32,
            lr: 1e-2,
            epochs: 100,
            dropout: 0.0,
            ..Default::default()
        }
        .fit(&x, &y, 2)
        .unwrap();
        let lr = LogisticRegressionParams::default().fit(&x, &y, 2).unwrap();
        let acc_mlp = accuracy(&mlp.predict_proba(&xt).unwrap(), &yt, 2);
        let acc_lr = accuracy(&lr.predict_proba(&xt).unwrap(), &yt, 2);
        assert!(acc_mlp > 0.95, "mlp {acc_mlp}");
        assert!(acc_lr < 0.75, "logreg {acc_lr}");
        for r in mlp.predict_proba(&xt).unwrap().chunks(2) {
            assert!((r[0] + r[1] - 1.0).abs() < 1e-5);
        }
    }

    /// `n` sparse rows of `d` columns, about `nnz` entries each; the class is which of three
    /// column ranges holds most of its entries.
    fn sparse_text_like(n: usize, d: usize, nnz: usize, seed: u64) -> (Features, Vec<usize>) {
        let mut rng = SeededRng::new(seed);
        let (mut indptr, mut idx, mut val, mut y) = (vec![0], Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let c = i % 3;
            let mut cols: Vec<u32> = (0..nnz)
                .map(|j| {
                    let third = if j % 3 == 0 { c } else { rng.below(3) };
                    (third * d / 3 + rng.below(d / 3)) as u32
                })
                .collect();
            cols.sort_unstable();
            cols.dedup();
            for c in cols {
                idx.push(c);
                val.push(0.2 + unit(&mut rng));
            }
            indptr.push(idx.len());
            y.push(c);
        }
        let m = CsrMatrix::new(n, d, indptr, idx, val).unwrap();
        (Features::Sparse(m), y)
    }

    #[test]
    fn a_seed_fixes_the_model_on_any_number_of_threads() {
        let (x, y) = sparse_text_like(300, 5000, 20, 2);
        let params = MlpParams {
            hidden: 32,
            epochs: 4,
            lr: 1e-3,
            alpha: 0.1,
            ..Default::default()
        };
        let fit_on = |threads: usize, p: MlpParams| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| p.fit(&x, &y, 3).unwrap())
        };
        let a = fit_on(1, params);
        let b = fit_on(3, params);
        assert_eq!(a.to_tensors(), b.to_tensors());
        assert_eq!(a.predict_proba(&x).unwrap(), b.predict_proba(&x).unwrap());
        assert_eq!(a, params.fit(&x, &y, 3).unwrap());
        let shared = MlpParams {
            projection: 8,
            dense_tail: 100,
            ..params
        };
        assert_eq!(
            fit_on(1, shared).to_tensors(),
            fit_on(2, shared).to_tensors()
        );
        let other = params.fit(&x, &y, 3).unwrap();
        let reseeded = MlpParams { seed: 1, ..params }.fit(&x, &y, 3).unwrap();
        assert_eq!(other.to_tensors(), a.to_tensors());
        assert_ne!(
            reseeded.to_tensors()["in0.weight"],
            a.to_tensors()["in0.weight"]
        );
        assert!(accuracy(&a.predict_proba(&x).unwrap(), &y, 3) > 0.8);
    }

    #[test]
    fn sparse_and_dense_input_give_the_same_model() {
        // Every column but 3 is non-zero in every row, so lazy and dense Adam touch the same
        // rows; column 3 is never touched and only decays, on both paths.
        let mut rng = SeededRng::new(4);
        let (n, d) = (90, 6);
        let mut data = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let c = i % 3;
            for j in 0..d {
                let v = 0.1 + unit(&mut rng) + if j == c { 0.8 } else { 0.0 };
                data.push(if j == 3 { 0.0 } else { v });
            }
            y.push(c);
        }
        let dense = Features::Dense(DenseMatrix::new(n, d, data).unwrap());
        let sparse = to_sparse(&dense);
        let deep = MlpParams {
            hidden: 16,
            alpha: 0.1,
            lr: 1e-2,
            epochs: 8,
            dropout: 0.0,
            validation_fraction: 0.0,
            ..Default::default()
        };
        let shared = MlpParams {
            projection: 6,
            dense_tail: 2,
            ..deep
        };
        for params in [deep, shared] {
            let a = params.fit(&dense, &y, 3).unwrap();
            let b = params.fit(&sparse, &y, 3).unwrap();
            let (ta, tb) = (a.to_tensors(), b.to_tensors());
            for (name, t) in &ta {
                for (u, v) in t.as_f32().unwrap().iter().zip(tb[name].as_f32().unwrap()) {
                    assert!(
                        (u - v).abs() <= 1e-4 * (1.0 + u.abs()),
                        "{name}: {u} vs {v}"
                    );
                }
            }
            // The untouched row decayed by (1 - lr·alpha)^steps from its initial value.
            let (inputs, hidden) = params.layout(d).unwrap();
            let init = Net::init(&inputs, hidden, 3, params.seed);
            let steps = 8 * n.div_ceil(32);
            let w = init.inputs[0].outputs;
            let decayed = ta["in0.weight"].as_f32().unwrap()[3 * w];
            let expected = init.inputs[0].w[3 * w] * (1.0f32 - 1e-3).powi(steps as i32);
            assert!((decayed - expected).abs() < 1e-6, "{decayed} vs {expected}");
            for x in [&dense, &sparse] {
                let (pa, pb) = (a.predict_proba(x).unwrap(), b.predict_proba(x).unwrap());
                for (u, v) in pa.iter().zip(&pb) {
                    assert!((u - v).abs() < 1e-4, "{u} vs {v}");
                }
            }
        }
    }

    #[test]
    fn tensors_round_trip_and_stored_faults_are_named() {
        let (x, y) = blobs(90, 3, 0.8, 3);
        let deep = MlpParams {
            hidden: 8,
            epochs: 5,
            ..Default::default()
        };
        let shared = MlpParams {
            projection: 4,
            dense_tail: 1,
            ..deep
        };
        for params in [deep, shared] {
            let m = params.fit(&x, &y, 3).unwrap();
            let tensors = m.to_tensors();
            let back = params.restore(2, 3, &tensors).unwrap();
            assert_eq!(
                back.predict_proba(&x).unwrap(),
                m.predict_proba(&x).unwrap()
            );
            assert_eq!(back.to_tensors(), tensors);
            let mut missing = tensors.clone();
            missing.remove("out.bias");
            assert!(matches!(
                params.restore(2, 3, &missing),
                Err(ClassicError::Stored { tensor, .. }) if tensor == "out.bias"
            ));
            let mut extra = tensors.clone();
            extra.insert("in7.weight".into(), Tensor::f32(vec![1], vec![0.0]));
            assert!(matches!(
                params.restore(2, 3, &extra),
                Err(ClassicError::Stored { tensor, .. }) if tensor == "in7.weight"
            ));
            assert!(matches!(
                params.restore(2, 4, &tensors),
                Err(ClassicError::Stored { .. })
            ));
        }
        // The deep topology's tensors do not load as the shared one.
        let deep_tensors = deep.fit(&x, &y, 3).unwrap().to_tensors();
        assert!(shared.restore(2, 3, &deep_tensors).is_err());
    }

    #[test]
    fn params_serialise_with_defaults_for_absent_fields() {
        let p: HeadParams = serde_json::from_str(
            r#"{"kind": "mlp", "params": {"alpha": 0.001, "projection": 128, "dense_tail": 384}}"#,
        )
        .unwrap();
        assert_eq!(
            p,
            HeadParams::Mlp(MlpParams {
                alpha: 0.001,
                projection: 128,
                dense_tail: 384,
                ..Default::default()
            })
        );
        assert_eq!(p.tuned(), ("alpha", 0.001));
        let back: HeadParams = serde_json::from_value(serde_json::to_value(p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn bad_params_and_inputs_get_clear_errors() {
        let (x, y) = blobs(60, 2, 0.5, 1);
        let fit = |p: MlpParams| p.fit(&x, &y, 2).map(|_| ());
        let name_of = |r: Result<(), ClassicError>| match r {
            Err(ClassicError::InvalidParam { name, .. }) => name,
            other => panic!("{other:?}"),
        };
        let d = MlpParams::default();
        assert_eq!(name_of(fit(MlpParams { hidden: 0, ..d })), "hidden");
        assert_eq!(name_of(fit(MlpParams { lr: 0.0, ..d })), "lr");
        assert_eq!(name_of(fit(MlpParams { lr: f64::NAN, ..d })), "lr");
        assert_eq!(name_of(fit(MlpParams { alpha: -1.0, ..d })), "alpha");
        assert_eq!(name_of(fit(MlpParams { alpha: 1e4, ..d })), "alpha");
        assert_eq!(name_of(fit(MlpParams { dropout: 1.0, ..d })), "dropout");
        assert_eq!(name_of(fit(MlpParams { batch_size: 0, ..d })), "batch_size");
        assert_eq!(name_of(fit(MlpParams { epochs: 0, ..d })), "epochs");
        assert_eq!(
            name_of(fit(MlpParams {
                validation_fraction: 1.0,
                ..d
            })),
            "validation_fraction"
        );
        // dense_tail: only with a projection, and strictly inside the feature width.
        assert_eq!(name_of(fit(MlpParams { dense_tail: 1, ..d })), "dense_tail");
        for tail in [0, 2, 3] {
            let e = MlpParams {
                projection: 4,
                dense_tail: tail,
                ..d
            }
            .fit(&x, &y, 2)
            .unwrap_err();
            assert!(
                matches!(&e, ClassicError::InvalidParam { name: "dense_tail", value, .. }
                    if value.contains("of 2 feature columns")),
                "{e:?}"
            );
            assert!(e.to_string().contains("0 < dense_tail < n_features"), "{e}");
        }
        // NaN at fit and at prediction, as every head.
        let nan = Features::Dense(DenseMatrix::new(2, 2, vec![0.0, 1.0, f32::NAN, 1.0]).unwrap());
        assert_eq!(
            d.fit(&nan, &[0, 1], 2).unwrap_err(),
            ClassicError::NotFinite { row: 1, col: 0 }
        );
        let m = MlpParams { epochs: 2, ..d }.fit(&x, &y, 2).unwrap();
        assert_eq!(
            m.predict_proba(&to_sparse(&nan)).unwrap_err(),
            ClassicError::NotFinite { row: 1, col: 0 }
        );
        let narrow = Features::Dense(DenseMatrix::new(1, 1, vec![0.0]).unwrap());
        assert_eq!(
            m.predict_proba(&narrow).unwrap_err(),
            ClassicError::Width {
                expected: 2,
                got: 1
            }
        );
        assert!(matches!(
            d.fit(&x, &y[..5], 2),
            Err(ClassicError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn early_stopping_keeps_the_best_holdout_epoch() {
        // Heavily overlapping classes: the holdout score peaks early, then training overfits.
        let (x, y) = blobs(300, 3, 4.0, 12);
        let params = MlpParams {
            hidden: 64,
            lr: 2e-2,
            epochs: 300,
            dropout: 0.0,
            patience: 4,
            validation_fraction: 0.2,
            seed: 3,
            ..Default::default()
        };
        let m = params.fit(&x, &y, 3).unwrap();
        assert!(m.epochs_run() < params.epochs, "{} epochs", m.epochs_run());
        assert!(m.best_epoch() >= 1 && m.best_epoch() + params.patience == m.epochs_run());
        let (_, val) = holdout(&y, 3, params.validation_fraction, params.seed);
        let (acc, loss) = m.best_validation().unwrap();
        assert_eq!(m.net.score(&x, &val, &y), (acc, loss));
        let yv: Vec<usize> = val.iter().map(|&i| y[i]).collect();
        let p = m.predict_proba(&x.select_rows(&val)).unwrap();
        assert_eq!(accuracy(&p, &yv, 3), acc);
        // Without a holdout, every epoch runs and the last one is kept.
        let all = MlpParams {
            validation_fraction: 0.0,
            epochs: 7,
            ..params
        }
        .fit(&x, &y, 3)
        .unwrap();
        assert_eq!((all.epochs_run(), all.best_epoch()), (7, 7));
        assert_eq!(all.best_validation(), None);
    }
}
