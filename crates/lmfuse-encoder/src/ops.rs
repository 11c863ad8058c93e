//! The numeric kernels of the forward pass, plus the backward kernels training needs, for the
//! fine-tuning crate. Each function documents its layout; rows are row-major and contiguous.
//! Work is split over the rayon pool when `threads > 1`, in a fixed partition so that results
//! do not depend on scheduling.

use crate::config::Activation;
use crate::kernels::{self, View};
use gemm::Parallelism;
use rayon::prelude::*;

/// Rows per parallel block of the element-wise kernels.
const BLOCK_ROWS: usize = 32;

fn parallelism(threads: usize) -> Parallelism {
    if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `dst (m×n) = [dst +] op(a) · op(b)`: `op(a)` is `a` stored `m×k`, or with `trans_a` the
/// transpose of `a` stored `k×m`; `op(b)` likewise from `k×n` or, with `trans_b`, `n×k`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
    threads: usize,
) {
    kernels::matmul_t(
        dst,
        a,
        b,
        (m, k, n),
        trans_a,
        trans_b,
        accumulate,
        parallelism(threads),
    );
}

/// Applies the activation in place.
pub fn activate(act: Activation, x: &mut [f32], threads: usize) {
    let f = |r: &mut [f32]| match act {
        Activation::Gelu => kernels::gelu(r),
        Activation::GeluTanh => kernels::gelu_tanh(r),
        Activation::Relu => kernels::relu(r),
    };
    if threads > 1 {
        x.par_chunks_mut(4096).for_each(f);
    } else {
        f(x);
    }
}

/// Multiplies `grad` by the activation's derivative at the pre-activation values `pre`.
pub fn activate_backward(act: Activation, pre: &[f32], grad: &mut [f32], threads: usize) {
    let f = |(p, g): (&[f32], &mut [f32])| match act {
        Activation::Gelu => kernels::gelu_backward(p, g),
        Activation::GeluTanh => kernels::gelu_tanh_backward(p, g),
        Activation::Relu => kernels::relu_backward(p, g),
    };
    if threads > 1 {
        pre.par_chunks(4096)
            .zip(grad.par_chunks_mut(4096))
            .for_each(f);
    } else {
        f((pre, grad));
    }
}

/// LayerNorm of each `gamma.len()`-wide row of `x` in place; keeps the normalised rows in
/// `xhat` (same shape as `x`) and each row's inverse standard deviation in `inv_std`.
pub fn layer_norm_train(
    x: &mut [f32],
    xhat: &mut [f32],
    inv_std: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    threads: usize,
) {
    let n = gamma.len();
    if threads > 1 {
        x.par_chunks_mut(n * BLOCK_ROWS)
            .zip(xhat.par_chunks_mut(n * BLOCK_ROWS))
            .zip(inv_std.par_chunks_mut(BLOCK_ROWS))
            .for_each(|((x, h), i)| kernels::layer_norm_train(x, h, i, gamma, beta, eps));
    } else {
        kernels::layer_norm_train(x, xhat, inv_std, gamma, beta, eps);
    }
}

/// LayerNorm backward: `dy` (output gradients) becomes the input gradients in place; the
/// gradients of `gamma` and `beta` are added into `dgamma` and `dbeta`.
pub fn layer_norm_backward(
    dy: &mut [f32],
    xhat: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    threads: usize,
) {
    let n = gamma.len();
    if threads > 1 {
        // Per-block partial sums, added in block order: the same result for any scheduling.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dy
            .par_chunks_mut(n * BLOCK_ROWS)
            .zip(xhat.par_chunks(n * BLOCK_ROWS))
            .zip(inv_std.par_chunks(BLOCK_ROWS))
            .map(|((d, h), i)| {
                let (mut dg, mut db) = (vec![0.0; n], vec![0.0; n]);
                kernels::layer_norm_backward(d, h, i, gamma, &mut dg, &mut db);
                (dg, db)
            })
            .collect();
        for (dg, db) in partials {
            add_into(dgamma, &dg);
            add_into(dbeta, &db);
        }
    } else {
        kernels::layer_norm_backward(dy, xhat, inv_std, gamma, dgamma, dbeta);
    }
}

/// The attention weights after dropout: `p ⊙ mask` written to `out`, or `p` itself without a
/// mask.
fn dropped_probs<'a>(p: &'a [f32], mask: Option<&[f32]>, out: &'a mut [f32]) -> &'a [f32] {
    match mask {
        Some(m) => {
            for ((o, a), b) in out.iter_mut().zip(p).zip(m) {
                *o = a * b;
            }
            out
        }
        None => p,
    }
}

/// Self-attention of one sequence (`len` rows of `[q | k | v]`, each `hidden` wide) for
/// training: writes the context rows to `ctx` and keeps the probabilities,
/// `heads × len × len`, in `probs` (before dropout). With `mask` (same shape: 0 or the
/// inverse keep rate), attention dropout multiplies the probabilities by it before they weigh
/// the values. `scratch` holds at least `len²` values. Each product is a strided matrix
/// product.
#[allow(clippy::too_many_arguments)]
pub fn attention_train(
    qkv: &[f32],
    ctx: &mut [f32],
    probs: &mut [f32],
    mask: Option<&[f32]>,
    len: usize,
    hidden: usize,
    heads: usize,
    scratch: &mut [f32],
) {
    let d = hidden / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let row = 3 * hidden;
    let dropped = &mut scratch[..len * len];
    for h in 0..heads {
        let (qo, ko, vo) = (h * d, hidden + h * d, 2 * hidden + h * d);
        let hp = h * len * len..(h + 1) * len * len;
        let p = &mut probs[hp.clone()];
        // S = scale · Q Kᵀ
        kernels::matmul_strided(
            p,
            0,
            len,
            View::new(qkv, qo, row, 1),
            View::new(qkv, ko, 1, row),
            (len, d, len),
            scale,
            false,
        );
        kernels::softmax_rows(p, len);
        // ctx = drop(P) V
        let weights = dropped_probs(p, mask.map(|m| &m[hp]), dropped);
        kernels::matmul_strided(
            ctx,
            h * d,
            hidden,
            View::new(weights, 0, len, 1),
            View::new(qkv, vo, row, 1),
            (len, len, d),
            1.0,
            false,
        );
    }
}

/// Attention backward of one sequence: from `dctx` (`len × hidden`), the kept `probs` and the
/// dropout `mask` used in the forward pass, overwrites `dqkv` (`len × 3·hidden`) with the
/// gradients of the queries, keys and values. `scratch` holds at least `2·len²` values.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    qkv: &[f32],
    probs: &[f32],
    mask: Option<&[f32]>,
    dctx: &[f32],
    dqkv: &mut [f32],
    len: usize,
    hidden: usize,
    heads: usize,
    scratch: &mut [f32],
) {
    let d = hidden / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let row = 3 * hidden;
    let (ds, dropped) = scratch[..2 * len * len].split_at_mut(len * len);
    for h in 0..heads {
        let (qo, ko, vo) = (h * d, hidden + h * d, 2 * hidden + h * d);
        let hp = h * len * len..(h + 1) * len * len;
        let p = &probs[hp.clone()];
        let weights = dropped_probs(p, mask.map(|m| &m[hp.clone()]), dropped);
        // dV = drop(P)ᵀ dctx
        kernels::matmul_strided(
            dqkv,
            vo,
            row,
            View::new(weights, 0, 1, len),
            View::new(dctx, h * d, hidden, 1),
            (len, len, d),
            1.0,
            false,
        );
        // d drop(P) = dctx Vᵀ; dP = mask ⊙ that; dS = scale · P ⊙ (dP − Σ P·dP)
        kernels::matmul_strided(
            ds,
            0,
            len,
            View::new(dctx, h * d, hidden, 1),
            View::new(qkv, vo, 1, row),
            (len, d, len),
            1.0,
            false,
        );
        if let Some(m) = mask {
            for (g, b) in ds.iter_mut().zip(&m[hp]) {
                *g *= b;
            }
        }
        kernels::softmax_rows_backward(p, ds, len, scale);
        // dQ = dS K, dK = dSᵀ Q
        kernels::matmul_strided(
            dqkv,
            qo,
            row,
            View::new(ds, 0, len, 1),
            View::new(qkv, ko, row, 1),
            (len, len, d),
            1.0,
            false,
        );
        kernels::matmul_strided(
            dqkv,
            ko,
            row,
            View::new(ds, 0, 1, len),
            View::new(qkv, qo, row, 1),
            (len, len, d),
            1.0,
            false,
        );
    }
}

/// Adds each `bias.len()`-wide row of `rows` into `bias_grad` (the gradient of a bias added
/// to every row).
pub fn sum_rows_into(rows: &[f32], bias_grad: &mut [f32]) {
    for row in rows.chunks_exact(bias_grad.len()) {
        add_into(bias_grad, row);
    }
}

/// Adds `bias` to each `bias.len()`-wide row of `rows`.
pub fn add_bias(rows: &mut [f32], bias: &[f32]) {
    kernels::add_rows(rows, bias);
}

/// `dst[i] += src[i]`.
pub fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_grad(f: &dyn Fn(&[f32]) -> f64, x: &[f32], i: usize) -> f64 {
        let h = 1e-2f32;
        let mut xp = x.to_vec();
        xp[i] += h;
        let mut xm = x.to_vec();
        xm[i] -= h;
        (f(&xp) - f(&xm)) / (2.0 * h as f64)
    }

    fn wave(n: usize, a: f32, b: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32) * a + b).sin()).collect()
    }

    #[test]
    fn matmul_transposes_agree_with_plain_loops() {
        let (m, k, n) = (5, 7, 3);
        let a = wave(m * k, 0.7, 0.1);
        let b = wave(k * n, 0.3, 0.5);
        let mut want = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|c| a[i * k + c] * b[c * n + j]).sum();
            }
        }
        let at: Vec<f32> = (0..k * m).map(|p| a[(p % m) * k + p / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|p| b[(p % k) * n + p / k]).collect();
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut got = vec![1.0f32; m * n];
            let aa = if ta { &at } else { &a };
            let bb = if tb { &bt } else { &b };
            matmul(&mut got, aa, bb, (m, k, n), ta, tb, true, 1);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - 1.0 - w).abs() < 1e-5, "{ta} {tb}");
            }
        }
    }

    #[test]
    fn layer_norm_backward_matches_finite_differences() {
        let n = 6;
        let x = wave(2 * n, 1.3, 0.2);
        let gamma = wave(n, 0.9, 1.0);
        let beta = wave(n, 0.4, 0.3);
        let w = wave(2 * n, 2.1, 0.7);
        let loss = |x: &[f32]| -> f64 {
            let mut y = x.to_vec();
            let (mut h, mut i) = (vec![0.0; 2 * n], vec![0.0; 2]);
            layer_norm_train(&mut y, &mut h, &mut i, &gamma, &beta, 1e-5, 1);
            y.iter().zip(&w).map(|(a, b)| (a * b) as f64).sum()
        };
        let mut y = x.clone();
        let (mut h, mut i) = (vec![0.0; 2 * n], vec![0.0; 2]);
        layer_norm_train(&mut y, &mut h, &mut i, &gamma, &beta, 1e-5, 1);
        let mut d = w.clone();
        let (mut dg, mut db) = (vec![0.0; n], vec![0.0; n]);
        layer_norm_backward(&mut d, &h, &i, &gamma, &mut dg, &mut db, 1);
        for (j, dj) in d.iter().enumerate() {
            let num = numeric_grad(&loss, &x, j);
            assert!((num - *dj as f64).abs() < 2e-3, "dx[{j}] {num} vs {dj}");
        }
    }

    #[test]
    fn attention_backward_matches_finite_differences() {
        let (len, hidden, heads) = (3, 4, 2);
        let qkv = wave(len * 3 * hidden, 0.77, 0.3);
        let w = wave(len * hidden, 1.7, 0.9);
        // Without and with an attention-dropout mask (zeros and 1/(1 - 0.25) values).
        let masked: Vec<f32> = (0..heads * len * len)
            .map(|i| if i % 4 == 1 { 0.0 } else { 1.0 / 0.75 })
            .collect();
        for mask in [None, Some(masked)] {
            let loss = |qkv: &[f32]| -> f64 {
                let mut ctx = vec![0.0; len * hidden];
                let mut probs = vec![0.0; heads * len * len];
                let mut scratch = vec![0.0; len * len];
                attention_train(
                    qkv,
                    &mut ctx,
                    &mut probs,
                    mask.as_deref(),
                    len,
                    hidden,
                    heads,
                    &mut scratch,
                );
                ctx.iter().zip(&w).map(|(a, b)| (a * b) as f64).sum()
            };
            let mut ctx = vec![0.0; len * hidden];
            let mut probs = vec![0.0; heads * len * len];
            let mut scratch = vec![0.0; 2 * len * len];
            attention_train(
                &qkv,
                &mut ctx,
                &mut probs,
                mask.as_deref(),
                len,
                hidden,
                heads,
                &mut scratch,
            );
            let mut dqkv = vec![0.0; len * 3 * hidden];
            attention_backward(
                &qkv,
                &probs,
                mask.as_deref(),
                &w,
                &mut dqkv,
                len,
                hidden,
                heads,
                &mut scratch,
            );
            for (j, dj) in dqkv.iter().enumerate() {
                let num = numeric_grad(&loss, &qkv, j);
                assert!(
                    (num - *dj as f64).abs() < 2e-3,
                    "dqkv[{j}] {num} vs {dj} (mask {})",
                    mask.is_some()
                );
            }
        }
    }

    #[test]
    fn activation_derivatives_match_finite_differences() {
        let xs = wave(40, 0.37, -0.2)
            .iter()
            .map(|v| v * 3.0)
            .collect::<Vec<_>>();
        for act in [Activation::Gelu, Activation::GeluTanh, Activation::Relu] {
            let mut g = vec![1.0f32; xs.len()];
            activate_backward(act, &xs, &mut g, 1);
            for (i, &x) in xs.iter().enumerate() {
                if act == Activation::Relu && x.abs() < 1e-2 {
                    continue;
                }
                let f = |v: f32| {
                    let mut a = [v];
                    activate(act, &mut a, 1);
                    a[0] as f64
                };
                let num = (f(x + 1e-2) - f(x - 1e-2)) / 2e-2;
                assert!(
                    (num - g[i] as f64).abs() < 2e-3,
                    "{act:?} at {x}: {num} vs {}",
                    g[i]
                );
            }
        }
    }
}
