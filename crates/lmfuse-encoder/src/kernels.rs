//! Element-wise and small dense kernels of the forward pass.
//!
//! Each kernel is written as plain loops over slices that LLVM vectorises, and compiled twice:
//! for the baseline target and with AVX2 + FMA, chosen at run time. This keeps one portable
//! binary while using the full width of the machines lmfuse targets. Large matrix products go
//! to the `gemm` crate, which has its own run-time dispatch.

use gemm::Parallelism;

/// Defines `pub(crate) fn $name` that runs `$body` compiled for AVX2+FMA when the CPU has it.
macro_rules! dispatch {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports the features `fast` is compiled for.
                    return unsafe { fast($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

const LANES: usize = 8;

#[inline(always)]
fn sum_body(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ac, ar) = a.split_at(a.len() / LANES * LANES);
    for x in ac.chunks_exact(LANES) {
        for l in 0..LANES {
            acc[l] += x[l];
        }
    }
    acc.iter().sum::<f32>() + ar.iter().sum::<f32>()
}

/// `e^x` for `x` in about [-87, 88], relative error about 2e-7; branch-free so it vectorises.
/// Cephes' range reduction and polynomial.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 5e-1);
    let y = (p * r).mul_add(r, r) + 1.0;
    y * pow2i(n)
}

/// `2^n` for an integer-valued `n` in [-126, 127], built from its exponent bits. The integer
/// comes from the bits of `n + 127 + 1.5 · 2²³` (whose low mantissa bits then hold it), as a
/// saturating `as i32` would cost a compare per value and stop the loop vectorising.
#[inline(always)]
fn pow2i(n: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let biased = ((n + 127.0) + MAGIC)
        .to_bits()
        .wrapping_sub(MAGIC.to_bits());
    f32::from_bits(biased << 23)
}

/// `erf(x)`, max abs error about 2e-7: Abramowitz & Stegun 7.1.26 with the vectorisable
/// [`exp_approx`], branch-free.
#[inline(always)]
fn erf_approx(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let mut p = 1.061_405_4f32;
    p = p.mul_add(t, -1.453_152_1);
    p = p.mul_add(t, 1.421_413_8);
    p = p.mul_add(t, -0.284_496_74);
    p = p.mul_add(t, 0.254_829_6);
    let y = 1.0 - p * t * exp_approx(-a * a);
    y.copysign(x)
}

dispatch! {
    /// Exact GELU in place: `x·½(1 + erf(x/√2))`.
    fn gelu(x: &mut [f32]) {
        for v in x.iter_mut() {
            let a = *v;
            *v = 0.5 * a * (1.0 + erf_approx(a * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

dispatch! {
    /// GELU with the tanh approximation in place.
    fn gelu_tanh(x: &mut [f32]) {
        const C: f32 = 0.797_884_6; // sqrt(2/pi)
        for v in x.iter_mut() {
            let a = *v;
            let u = C * a.mul_add(0.044_715 * a * a, a);
            // tanh(u) = 1 - 2 / (e^{2u} + 1)
            let t = 1.0 - 2.0 / (exp_approx(2.0 * u) + 1.0);
            *v = 0.5 * a * (1.0 + t);
        }
    }
}

dispatch! {
    /// Multiplies `grad` by the derivative of exact GELU at `pre`.
    fn gelu_backward(pre: &[f32], grad: &mut [f32]) {
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        for (g, &x) in grad.iter_mut().zip(pre) {
            let cdf = 0.5 * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = INV_SQRT_2PI * exp_approx(-0.5 * x * x);
            *g *= x.mul_add(pdf, cdf);
        }
    }
}

dispatch! {
    /// Multiplies `grad` by the derivative of tanh-approximated GELU at `pre`.
    fn gelu_tanh_backward(pre: &[f32], grad: &mut [f32]) {
        const C: f32 = 0.797_884_6;
        for (g, &x) in grad.iter_mut().zip(pre) {
            let u = C * x.mul_add(0.044_715 * x * x, x);
            let t = 1.0 - 2.0 / (exp_approx(2.0 * u) + 1.0);
            let du = C * (3.0 * 0.044_715 * x).mul_add(x, 1.0);
            *g *= 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du;
        }
    }
}

/// Multiplies `grad` by the derivative of ReLU at `pre`.
pub(crate) fn relu_backward(pre: &[f32], grad: &mut [f32]) {
    for (g, &x) in grad.iter_mut().zip(pre) {
        if x <= 0.0 {
            *g = 0.0;
        }
    }
}

dispatch! {
    /// ReLU in place.
    fn relu(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

dispatch! {
    /// LayerNorm of each `gamma.len()`-wide row of `x`, in place.
    fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let n = gamma.len();
        for row in x.chunks_exact_mut(n) {
            let mean = sum_body(row) / n as f32;
            let mut acc = [0.0f32; LANES];
            let (rc, rr) = row.split_at(n / LANES * LANES);
            for c in rc.chunks_exact(LANES) {
                for l in 0..LANES {
                    let d = c[l] - mean;
                    acc[l] = d.mul_add(d, acc[l]);
                }
            }
            let var = (acc.iter().sum::<f32>() + rr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>())
                / n as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = ((*v - mean) * inv).mul_add(*g, *b);
            }
        }
    }
}

dispatch! {
    /// LayerNorm of each row of `x` in place, keeping what the backward pass needs: the
    /// normalised rows in `xhat` and each row's inverse standard deviation in `inv_std`.
    fn layer_norm_train(x: &mut [f32], xhat: &mut [f32], inv_std: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let n = gamma.len();
        for ((row, hat), inv_out) in x.chunks_exact_mut(n).zip(xhat.chunks_exact_mut(n)).zip(inv_std.iter_mut()) {
            let mean = sum_body(row) / n as f32;
            let mut var = 0.0f32;
            for v in row.iter() {
                let d = v - mean;
                var = d.mul_add(d, var);
            }
            let inv = 1.0 / (var / n as f32 + eps).sqrt();
            *inv_out = inv;
            for (((v, h), g), b) in row.iter_mut().zip(hat.iter_mut()).zip(gamma).zip(beta) {
                *h = (*v - mean) * inv;
                *v = h.mul_add(*g, *b);
            }
        }
    }
}

dispatch! {
    /// LayerNorm backward: turns the output gradients in `dy` into input gradients in place and
    /// adds the gradients of `gamma` and `beta` into `dgamma` and `dbeta`.
    fn layer_norm_backward(dy: &mut [f32], xhat: &[f32], inv_std: &[f32], gamma: &[f32], dgamma: &mut [f32], dbeta: &mut [f32]) {
        let n = gamma.len();
        let nf = n as f32;
        for ((row, hat), &inv) in dy.chunks_exact_mut(n).zip(xhat.chunks_exact(n)).zip(inv_std) {
            let mut sum_g = 0.0f32;
            let mut sum_gx = 0.0f32;
            for ((((d, h), g), dg), db) in row.iter().zip(hat).zip(gamma).zip(dgamma.iter_mut()).zip(dbeta.iter_mut()) {
                *dg = d.mul_add(*h, *dg);
                *db += d;
                let gd = d * g;
                sum_g += gd;
                sum_gx = gd.mul_add(*h, sum_gx);
            }
            let (mg, mgx) = (sum_g / nf, sum_gx / nf);
            for ((d, h), g) in row.iter_mut().zip(hat).zip(gamma) {
                *d = inv * ((*d * g - mg) - h * mgx);
            }
        }
    }
}

/// Query rows scored together by the attention kernel.
const QUERY_BLOCK: usize = 4;

/// Scratch floats [`attention`] needs for a sequence of `len` tokens and heads of width `d`.
pub(crate) fn attention_scratch_len(len: usize, d: usize) -> usize {
    let (rows, cols) = (
        len.div_ceil(QUERY_BLOCK) * QUERY_BLOCK,
        len.div_ceil(LANES) * LANES,
    );
    rows * d + d * cols + rows * cols + len * d.next_multiple_of(LANES)
}

dispatch! {
    /// Self-attention of one sequence for every head.
    ///
    /// `qkv` holds `len` rows of `[q | k | v]` (each `hidden` wide, heads side by side);
    /// writes `len` rows of `hidden` context values to `ctx`. `scratch` holds at least
    /// [`attention_scratch_len`] values.
    ///
    /// Scores are computed as a small matrix product with a register-blocked 4×8 kernel over
    /// the scaled queries and the transposed keys (zero-padded to whole blocks); a dot product
    /// per (query, key) pair spends most of its time in horizontal sums instead. The context
    /// rows are the same kind of product, of the probabilities and the values (copied into
    /// rows padded to whole blocks of lanes), summed in registers rather than in `ctx`.
    fn attention(qkv: &[f32], ctx: &mut [f32], len: usize, hidden: usize, heads: usize, scratch: &mut [f32]) {
        let d = hidden / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let row = 3 * hidden;
        if len >= LONG_ATTENTION {
            return long_attention(qkv, ctx, (len, hidden, heads), &mut scratch[..len * len]);
        }
        let rows = len.div_ceil(QUERY_BLOCK) * QUERY_BLOCK;
        let cols = len.div_ceil(LANES) * LANES;
        let (q, rest) = scratch.split_at_mut(rows * d);
        let (kt, rest) = rest.split_at_mut(d * cols);
        let (scores, rest) = rest.split_at_mut(rows * cols);
        let d_pad = d.next_multiple_of(LANES);
        let values = &mut rest[..len * d_pad];
        for h in 0..heads {
            let (qo, ko, vo) = (h * d, hidden + h * d, 2 * hidden + h * d);
            q.fill(0.0);
            kt.fill(0.0);
            for j in 0..len {
                let src = &qkv[j * row + qo..j * row + qo + d];
                for (dst, v) in q[j * d..(j + 1) * d].iter_mut().zip(src) {
                    *dst = v * scale;
                }
            }
            // Gather (strided loads, contiguous stores): measured faster than scattering
            // each key row into the transposed layout.
            for (c, kt_row) in kt.chunks_exact_mut(cols).enumerate() {
                for (j, dst) in kt_row[..len].iter_mut().enumerate() {
                    *dst = qkv[j * row + ko + c];
                }
            }
            for ib in (0..rows).step_by(QUERY_BLOCK) {
                let qb = &q[ib * d..(ib + QUERY_BLOCK) * d];
                for jb in (0..cols).step_by(LANES) {
                    let mut acc = [[0.0f32; LANES]; QUERY_BLOCK];
                    for c in 0..d {
                        let kv: &[f32; LANES] = kt[c * cols + jb..c * cols + jb + LANES]
                            .try_into()
                            .expect("block inside the padded keys");
                        for (r, a) in acc.iter_mut().enumerate() {
                            let qv = qb[r * d + c];
                            for l in 0..LANES {
                                a[l] = qv.mul_add(kv[l], a[l]);
                            }
                        }
                    }
                    for (r, a) in acc.iter().enumerate() {
                        scores[(ib + r) * cols + jb..(ib + r) * cols + jb + LANES].copy_from_slice(a);
                    }
                }
            }
            for i in 0..len {
                let live = &mut scores[i * cols..i * cols + len];
                let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for s in live.iter_mut() {
                    *s = exp_approx(*s - max);
                }
                let inv = 1.0 / sum_body(live);
                for s in live.iter_mut() {
                    *s *= inv;
                }
            }
            for (j, dst) in values.chunks_exact_mut(d_pad).enumerate() {
                dst[..d].copy_from_slice(&qkv[j * row + vo..j * row + vo + d]);
                dst[d..].fill(0.0);
            }
            for ib in (0..len).step_by(QUERY_BLOCK) {
                let live_rows = QUERY_BLOCK.min(len - ib);
                for c0 in (0..d_pad).step_by(LANES) {
                    let mut acc = [[0.0f32; LANES]; QUERY_BLOCK];
                    for (j, v) in values.chunks_exact(d_pad).enumerate() {
                        let v: &[f32; LANES] = v[c0..c0 + LANES]
                            .try_into()
                            .expect("block inside the padded values");
                        for (r, a) in acc.iter_mut().enumerate() {
                            let p = scores[(ib + r) * cols + j];
                            for l in 0..LANES {
                                a[l] = p.mul_add(v[l], a[l]);
                            }
                        }
                    }
                    let width = LANES.min(d - c0);
                    for (r, a) in acc.iter().enumerate().take(live_rows) {
                        let at = (ib + r) * hidden + h * d + c0;
                        ctx[at..at + width].copy_from_slice(&a[..width]);
                    }
                }
            }
        }
    }
}

/// Sequences from this length on go to [`long_attention`] (measured faster from 16 tokens on,
/// 1.4× at 512); shorter ones stay on the small kernel, where packing for `gemm` costs more
/// than it saves.
const LONG_ATTENTION: usize = 16;

/// [`attention`] for long sequences: the two products of each head on `gemm`, reading the
/// queries, keys and values where they lie in `qkv` (strided views, no copies), with the
/// `len × len` probabilities in `scores`.
fn long_attention(
    qkv: &[f32],
    ctx: &mut [f32],
    (len, hidden, heads): (usize, usize, usize),
    scores: &mut [f32],
) {
    let d = hidden / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let row = 3 * hidden;
    for h in 0..heads {
        let (qo, ko, vo) = (h * d, hidden + h * d, 2 * hidden + h * d);
        let (q, k_t) = (View::new(qkv, qo, row, 1), View::new(qkv, ko, 1, row));
        matmul_strided(scores, 0, len, q, k_t, (len, d, len), scale, false);
        softmax_rows(scores, len);
        let (p, v) = (View::new(scores, 0, len, 1), View::new(qkv, vo, row, 1));
        matmul_strided(ctx, h * d, hidden, p, v, (len, len, d), 1.0, false);
    }
}

/// Fills each `bias.len()`-wide row of `dst` with `bias`.
pub(crate) fn fill_rows(dst: &mut [f32], bias: &[f32]) {
    for row in dst.chunks_exact_mut(bias.len()) {
        row.copy_from_slice(bias);
    }
}

/// Adds `bias` to each `bias.len()`-wide row of `dst`.
pub(crate) fn add_rows(dst: &mut [f32], bias: &[f32]) {
    for row in dst.chunks_exact_mut(bias.len()) {
        for (d, b) in row.iter_mut().zip(bias) {
            *d += b;
        }
    }
}

/// `dst (m×n) = [dst +] op(a) · op(b)`, where `op(a)` is `a` (`m×k`, row-major) or, with
/// `trans_a`, the transpose of `a` stored as `k×m`; likewise `op(b)` from `k×n` or `n×k`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_t(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
    parallelism: Parallelism,
) {
    assert!(dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // (column stride, row stride) of each operand as gemm sees it.
    let (a_cs, a_rs) = if trans_a { (m, 1) } else { (1, k) };
    let (b_cs, b_rs) = if trans_b { (k, 1) } else { (1, n) };
    // SAFETY: the asserts above keep every access in bounds for these strides.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A matrix view for [`matmul_strided`]: a slice, the offset of element (0, 0), and the
/// strides between rows and between columns.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// The view of `data` whose element (r, c) is `data[offset + r·row_stride + c·col_stride]`.
    pub(crate) fn new(
        data: &'a [f32],
        offset: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        Self {
            data,
            offset,
            row_stride,
            col_stride,
        }
    }
}

/// `dst = [dst +] scale · a (m×k) · b (k×n)` on strided views, single-threaded. `dst` starts
/// at `dst_offset` with rows `dst_row_stride` apart and contiguous columns.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_strided(
    dst: &mut [f32],
    dst_offset: usize,
    dst_row_stride: usize,
    a: View<'_>,
    b: View<'_>,
    (m, k, n): (usize, usize, usize),
    scale: f32,
    accumulate: bool,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let last = |v: &View<'_>, rows: usize, cols: usize| {
        v.offset + (rows - 1) * v.row_stride + (cols - 1) * v.col_stride
    };
    assert!(last(&a, m, k) < a.data.len() && last(&b, k, n) < b.data.len());
    assert!(dst_offset + (m - 1) * dst_row_stride + n - 1 < dst.len());
    // SAFETY: the asserts above bound every element each view addresses.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(dst_offset),
            1,
            dst_row_stride as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr().add(b.offset),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0f32,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

dispatch! {
    /// Softmax of each `width`-wide row of `x` in place.
    fn softmax_rows(x: &mut [f32], width: usize) {
        for row in x.chunks_exact_mut(width) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for v in row.iter_mut() {
                *v = exp_approx(*v - max);
            }
            let inv = 1.0 / sum_body(row);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

dispatch! {
    /// Softmax backward in place: `dp` (gradients of the probabilities `p`, rows of `width`)
    /// becomes `scale · p ⊙ (dp − Σ p·dp)`, the gradients of the scores.
    fn softmax_rows_backward(p: &[f32], dp: &mut [f32], width: usize, scale: f32) {
        for (pr, dr) in p.chunks_exact(width).zip(dp.chunks_exact_mut(width)) {
            let mut dot = 0.0f32;
            for (a, b) in pr.iter().zip(dr.iter()) {
                dot = a.mul_add(*b, dot);
            }
            for (a, b) in pr.iter().zip(dr.iter_mut()) {
                *b = a * (*b - dot) * scale;
            }
        }
    }
}

/// `dst (m×n) += a (m×k) · b (k×n)`, all row-major and contiguous.
pub(crate) fn matmul_acc(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    parallelism: Parallelism,
) {
    assert!(dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    // SAFETY: the asserts above keep every access in bounds for the given row-major strides.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0f32, 0.0f64),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (-1.5, -0.966_105_146_475_310_7),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
            (9.0, 1.0),
        ] {
            assert!(
                (erf_approx(x) as f64 - want).abs() < 3e-7,
                "erf({x}) = {} want {want}",
                erf_approx(x)
            );
        }
    }

    #[test]
    fn exp_matches_std() {
        let mut x = -30.0f32;
        while x < 30.0 {
            let rel = ((exp_approx(x) - x.exp()) / x.exp()).abs();
            assert!(rel < 1e-6, "exp({x}) rel err {rel}");
            x += 0.173;
        }
        assert!(exp_approx(-200.0) < 1e-37);
    }

    #[test]
    fn gelu_tanh_matches_formula() {
        let xs: Vec<f32> = (-40..40).map(|i| i as f32 * 0.2).collect();
        let mut y = xs.clone();
        gelu_tanh(&mut y);
        for (x, y) in xs.iter().zip(&y) {
            let want = 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh());
            assert!((y - want).abs() < 1e-5, "gelu_tanh({x}) = {y} want {want}");
        }
    }

    #[test]
    fn layer_norm_normalises_rows() {
        let mut x: Vec<f32> = (0..20).map(|i| (i * i) as f32 * 0.3 - 2.0).collect();
        let gamma = vec![1.0; 10];
        let beta = vec![0.0; 10];
        layer_norm(&mut x, &gamma, &beta, 1e-12);
        for row in x.chunks(10) {
            let mean: f32 = row.iter().sum::<f32>() / 10.0;
            let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 10.0;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn matmul_matches_naive() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut c = vec![1.0f32; m * n];
        matmul_acc(&mut c, &a, &b, m, k, n, Parallelism::None);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum::<f32>();
                assert!((c[i * n + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn attention_matches_naive_softmax() {
        // Both paths: the small kernel and the long sequences' gemm.
        for len in [11, LONG_ATTENTION + 5] {
            attention_matches_naive_softmax_at(len);
        }
    }

    fn attention_matches_naive_softmax_at(len: usize) {
        let (hidden, heads) = (8, 2);
        let d = hidden / heads;
        let qkv: Vec<f32> = (0..len * 3 * hidden)
            .map(|i| (i as f32 * 0.731).sin())
            .collect();
        let mut ctx = vec![0.0; len * hidden];
        let mut scratch = vec![0.0; attention_scratch_len(len, d)];
        attention(&qkv, &mut ctx, len, hidden, heads, &mut scratch);
        let at = |r: usize, c: usize| qkv[r * 3 * hidden + c];
        for h in 0..heads {
            for i in 0..len {
                let s: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..d)
                            .map(|c| at(i, h * d + c) as f64 * at(j, hidden + h * d + c) as f64)
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..d {
                    let want: f64 = (0..len)
                        .map(|j| e[j] / z * at(j, 2 * hidden + h * d + c) as f64)
                        .sum();
                    let got = ctx[i * hidden + h * d + c] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "len {len} head {h} row {i} col {c}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn attention_of_one_token_copies_its_value() {
        // One token: softmax over one score is 1, so the context is v.
        let hidden = 4;
        let qkv: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let mut ctx = vec![0.0; 4];
        let mut scratch = vec![0.0; attention_scratch_len(1, 2)];
        attention(&qkv, &mut ctx, 1, hidden, 2, &mut scratch);
        assert_eq!(ctx, vec![8.0, 9.0, 10.0, 11.0]);
    }
}
