//! bf16 linear layers: weights rounded to bfloat16 once when loaded, each product's inputs
//! rounded to bfloat16 when it runs, and the products summed in f32 into the output (which
//! already holds the bias and the residual), as AVX512_BF16's `vdpbf16ps` computes them.
//!
//! Weights are packed in panels of [`PANEL`] output channels × pairs of inputs, the layout of
//! `vdpbf16ps` (one f32 lane per channel sums two products), so no kernel needs a horizontal
//! sum. Two kernels, chosen at run time ([`Bf16Kernel`]): AVX512_BF16, and a portable one,
//! the reference, that widens bf16 to f32 (compiled for AVX2+FMA where the CPU has it). A
//! product of two bf16 values is exact in f32, so the kernels differ only in the order of
//! their f32 sums.

use crate::cpu::{self, Kernel};

/// Output channels per packed panel (two 16-lane registers).
pub const PANEL: usize = 32;
/// Token rows per micro-kernel call: 8 rows × 2 registers keep 16 accumulators live.
const MR: usize = 8;

/// A bf16 micro-kernel, by the instructions it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// Plain Rust that widens bf16 to f32; the reference the other kernel is tested against.
    Portable,
    /// AVX512_BF16 (`vdpbf16ps` on 512-bit registers).
    Avx512Bf16,
}

/// The environment variable that forces a bf16 kernel (`portable`, `avx512-bf16`); unset,
/// the fastest the CPU has is used.
pub const BF16_KERNEL_ENV: &str = "LMFUSE_BF16_KERNEL";

impl Kernel for Bf16Kernel {
    /// Every kernel, slowest first.
    const ALL: &'static [Self] = &[Bf16Kernel::Portable, Bf16Kernel::Avx512Bf16];
    const ENV: &'static str = BF16_KERNEL_ENV;

    /// The name used by [`BF16_KERNEL_ENV`] and in reports.
    fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Portable => "portable",
            Bf16Kernel::Avx512Bf16 => "avx512-bf16",
        }
    }

    /// Whether this CPU can run the kernel.
    fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Bf16Kernel::Portable => true,
                Bf16Kernel::Avx512Bf16 => has!("avx512f") && has!("avx512bf16"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Bf16Kernel::Portable
        }
    }
}

/// `v` rounded to the nearest bfloat16 (ties to even), as its bits; a NaN stays a (quiet)
/// NaN. Branch-free, so loops over it vectorise.
#[inline(always)]
pub fn to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    let rounded = (bits + 0x7fff + ((bits >> 16) & 1)) >> 16;
    let nan = (bits >> 16) | 0x40;
    (if bits & 0x7fff_ffff > 0x7f80_0000 {
        nan
    } else {
        rounded
    }) as u16
}

/// The f32 a bfloat16's bits stand for (exact).
#[inline(always)]
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// A linear layer's weight matrix in bf16, packed for the micro-kernels.
#[derive(Debug, Clone)]
pub struct Bf16Linear {
    inputs: usize,
    outputs: usize,
    /// `ceil(inputs / 2)`.
    pairs: usize,
    /// `[panel][pair][channel of the panel][input of the pair]`, zero beyond the matrix.
    packed: Vec<u16>,
}

impl Bf16Linear {
    /// Rounds a weight stored `[outputs, inputs]` (PyTorch's Linear layout) to bf16.
    pub fn from_f32_rows(w: &[f32], inputs: usize, outputs: usize) -> Self {
        assert_eq!(w.len(), inputs * outputs, "weight size");
        let rows: Vec<u16> = w.iter().map(|&v| to_bf16(v)).collect();
        Self::from_rows(&rows, inputs, outputs)
    }

    /// A layer from its bf16 rows `[outputs, inputs]`.
    pub fn from_rows(rows: &[u16], inputs: usize, outputs: usize) -> Self {
        assert_eq!(rows.len(), inputs * outputs, "weight size");
        let pairs = inputs.div_ceil(2);
        let panels = outputs.div_ceil(PANEL);
        let mut packed = vec![0u16; panels * pairs * PANEL * 2];
        for o in 0..outputs {
            let (p, c) = (o / PANEL, o % PANEL);
            for (i, &w) in rows[o * inputs..(o + 1) * inputs].iter().enumerate() {
                packed[((p * pairs + i / 2) * PANEL + c) * 2 + i % 2] = w;
            }
        }
        Self {
            inputs,
            outputs,
            pairs,
            packed,
        }
    }

    /// The weight in f32, `[inputs, outputs]`, as the bf16 values stand for it.
    pub fn to_f32_input_major(&self) -> Vec<f32> {
        let mut w = vec![0.0f32; self.inputs * self.outputs];
        for o in 0..self.outputs {
            let (p, c) = (o / PANEL, o % PANEL);
            for i in 0..self.inputs {
                let b = self.packed[((p * self.pairs + i / 2) * PANEL + c) * 2 + i % 2];
                w[i * self.outputs + o] = from_bf16(b);
            }
        }
        w
    }

    /// `out += x · W` for `rows` rows of `x` (`[rows, inputs]`) into `out` (`[rows, outputs]`),
    /// split over the rayon pool when `parallel`.
    pub fn matmul_acc(
        &self,
        out: &mut [f32],
        x: &[f32],
        rows: usize,
        kernel: Bf16Kernel,
        parallel: bool,
    ) {
        let shape = (self.inputs, self.outputs);
        cpu::for_row_blocks(out, x, rows, shape, kernel, MR, parallel, |o, x, k| {
            self.block_acc(o, x, k)
        });
    }

    /// [`Bf16Linear::matmul_acc`] on one block of rows, on the calling thread.
    fn block_acc(&self, out: &mut [f32], x: &[f32], kernel: Bf16Kernel) {
        thread_local! {
            /// The rows in bf16, reused across products (see `QuantLinear`'s scratch).
            static SCRATCH: std::cell::RefCell<Vec<u16>> = Default::default();
        }
        SCRATCH.with_borrow_mut(|bx| {
            let rows = x.len() / self.inputs;
            // Whole micro-kernel blocks: padding rows' results are dropped, and the padding
            // input of an odd width meets zero weights.
            let len = rows.next_multiple_of(MR) * self.pairs * 2;
            if bx.len() < len {
                bx.resize(len, 0);
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has AVX2 and FMA.
                return unsafe { self.block_acc_avx2(out, x, kernel, bx) };
            }
            self.block_acc_in(out, x, kernel, bx);
        });
    }

    /// [`Bf16Linear::block_acc_in`] compiled for AVX2+FMA, so that rounding the inputs, the
    /// portable kernel and adding the sums use the full vector width.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_acc_avx2(
        &self,
        out: &mut [f32],
        x: &[f32],
        kernel: Bf16Kernel,
        bx: &mut [u16],
    ) {
        self.block_acc_in(out, x, kernel, bx);
    }

    /// [`Bf16Linear::block_acc`] with a scratch buffer that is large enough.
    #[inline(always)]
    fn block_acc_in(&self, out: &mut [f32], x: &[f32], kernel: Bf16Kernel, bx: &mut [u16]) {
        let rows = x.len() / self.inputs;
        let stride = self.pairs * 2;
        for (row, b) in x.chunks_exact(self.inputs).zip(bx.chunks_exact_mut(stride)) {
            for (b, &v) in b.iter_mut().zip(row) {
                *b = to_bf16(v);
            }
            b[self.inputs..].fill(0);
        }
        let panel_len = self.pairs * PANEL * 2;
        for (p, panel) in self.packed.chunks_exact(panel_len).enumerate() {
            let columns = p * PANEL..(p * PANEL + PANEL).min(self.outputs);
            for r0 in (0..rows).step_by(MR) {
                let live = MR.min(rows - r0);
                let out = &mut out[r0 * self.outputs..(r0 + live) * self.outputs];
                let tile = Tile {
                    a: &bx[r0 * stride..],
                    stride,
                    panel,
                    pairs: self.pairs,
                    columns: columns.clone(),
                    outputs: self.outputs,
                };
                run_kernel(kernel, tile, out);
            }
        }
    }
}

/// What a micro-kernel reads: [`MR`] rows of bf16 inputs against one packed panel, and which
/// output columns the panel's channels add to.
struct Tile<'a> {
    /// `MR` rows, `stride` apart.
    a: &'a [u16],
    stride: usize,
    panel: &'a [u16],
    pairs: usize,
    /// The panel's live output columns (at most [`PANEL`]).
    columns: std::ops::Range<usize>,
    /// Output row width.
    outputs: usize,
}

/// `out[r][c] += Σ_k a[r][k] · w[c][k]` for the rows `out` holds (`[rows, outputs]`, at most
/// [`MR`]) and the tile's columns, on `kernel`'s instructions: the sum in f32, then one add.
#[inline(always)]
fn run_kernel(kernel: Bf16Kernel, tile: Tile<'_>, out: &mut [f32]) {
    let Tile { a, stride, .. } = tile;
    assert!(a.len() >= (MR - 1) * stride + tile.pairs * 2 && stride >= tile.pairs * 2);
    assert!(tile.panel.len() >= tile.pairs * PANEL * 2);
    assert!(tile.columns.len() <= PANEL && tile.columns.end <= tile.outputs);
    assert!(out.len().is_multiple_of(tile.outputs) && out.len() / tile.outputs <= MR);
    match kernel {
        Bf16Kernel::Portable => portable(tile, out),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul_acc` checked that the CPU has the kernel's instructions; the
        // asserts above keep every load and store inside `a`, the panel and `out`.
        Bf16Kernel::Avx512Bf16 => unsafe { x86::avx512_bf16(tile, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("only the portable kernel is supported off x86-64"),
    }
}

/// The reference micro-kernel.
#[inline(always)]
fn portable(tile: Tile<'_>, out: &mut [f32]) {
    let mut acc = [0.0f32; PANEL];
    for (r, out) in out.chunks_exact_mut(tile.outputs).enumerate() {
        acc.fill(0.0);
        let row = &tile.a[r * tile.stride..][..tile.pairs * 2];
        for (k, x) in row.chunks_exact(2).enumerate() {
            let (x0, x1) = (from_bf16(x[0]), from_bf16(x[1]));
            let w = &tile.panel[k * PANEL * 2..][..PANEL * 2];
            for (s, w) in acc.iter_mut().zip(w.chunks_exact(2)) {
                *s += x0 * from_bf16(w[0]) + x1 * from_bf16(w[1]);
            }
        }
        for (o, &a) in out[tile.columns.clone()].iter_mut().zip(&acc) {
            *o += a;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86-64 micro-kernel. The caller checks the CPU features and the slice lengths
    //! ([`super::run_kernel`]).
    use super::{Tile, MR, PANEL};
    use std::arch::x86_64::*;

    /// The same 64 bytes as 32 bf16 lanes.
    #[inline(always)]
    fn as_bf16(v: __m512i) -> __m512bh {
        // SAFETY: both are plain 64-byte vectors; every bit pattern is valid in each.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn avx512_bf16(tile: Tile<'_>, out: &mut [f32]) {
        let Tile {
            a,
            stride,
            panel,
            pairs,
            ..
        } = tile;
        let mut sum = [[_mm512_setzero_ps(); 2]; MR];
        for k in 0..pairs {
            // SAFETY: the caller keeps the panel's `pairs * 64` values in range.
            let w = unsafe { panel.as_ptr().add(k * PANEL * 2) };
            // SAFETY: as above.
            let (w0, w1) = unsafe {
                (
                    as_bf16(_mm512_loadu_si512(w.cast())),
                    as_bf16(_mm512_loadu_si512(w.add(PANEL).cast())),
                )
            };
            for (r, s) in sum.iter_mut().enumerate() {
                // SAFETY: the caller keeps `r * stride + 2k + 2` within `a`; the pair's two
                // bf16 values, broadcast as one 32-bit lane.
                let pair = unsafe { a.as_ptr().add(r * stride + 2 * k).cast::<i32>() };
                let x = as_bf16(_mm512_set1_epi32(unsafe { pair.read_unaligned() }));
                s[0] = _mm512_dpbf16_ps(s[0], x, w0);
                s[1] = _mm512_dpbf16_ps(s[1], x, w1);
            }
        }
        let live = tile.columns.len();
        let masks: [__mmask16; 2] = [
            ((1u32 << live.min(16)) - 1) as u16,
            ((1u32 << live.saturating_sub(16)) - 1) as u16,
        ];
        for (row, s) in out.chunks_exact_mut(tile.outputs).zip(&sum) {
            for (half, (&s, &mask)) in s.iter().zip(&masks).enumerate() {
                // SAFETY: the masked lanes are the panel's live columns, which the caller
                // keeps within the row.
                unsafe {
                    let o = row.as_mut_ptr().add(tile.columns.start + half * 16);
                    let v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, o), s);
                    _mm512_mask_storeu_ps(o, mask, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// `x · W` in f64 from f32 `x` (`[rows, inputs]`) and `W` (`[inputs, outputs]`).
    fn product(x: &[f32], w: &[f32], rows: usize, inputs: usize, outputs: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; rows * outputs];
        for r in 0..rows {
            for o in 0..outputs {
                out[r * outputs + o] = (0..inputs)
                    .map(|i| f64::from(x[r * inputs + i]) * f64::from(w[i * outputs + o]))
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut t = vec![0.0f32; w.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = w[r * cols + c];
            }
        }
        t
    }

    #[test]
    fn rounding_is_to_nearest_even_and_keeps_nan_and_infinity() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: ties to the even 1.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2⁻⁸ lies halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶: up to the even.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
        assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert!(from_bf16(to_bf16(f32::from_bits(0x7f80_0001))).is_nan());
        for v in matrix(1000, 3) {
            let back = from_bf16(to_bf16(v * 100.0));
            assert!((back - v * 100.0).abs() <= (v * 100.0).abs() / 256.0, "{v}");
        }
    }

    #[test]
    fn rows_pack_and_unpack_to_the_rounded_weights() {
        let (inputs, outputs) = (7, 37);
        let w = matrix(inputs * outputs, 5);
        let layer = Bf16Linear::from_f32_rows(&w, inputs, outputs);
        let rounded: Vec<f32> = w.iter().map(|&v| from_bf16(to_bf16(v))).collect();
        assert_eq!(
            layer.to_f32_input_major(),
            transpose(&rounded, outputs, inputs)
        );
    }

    #[test]
    fn every_kernel_here_gives_the_exact_product_of_the_rounded_values() {
        // Odd widths, a partial panel and a partial row block, serial and parallel.
        for (rows, inputs, outputs) in [(1, 1, 1), (13, 37, 45), (70, 384, 96), (9, 129, 33)] {
            let w = matrix(inputs * outputs, 1);
            let x = matrix(rows * inputs, 2);
            let layer = Bf16Linear::from_f32_rows(&w, inputs, outputs);
            let round = |v: &[f32]| v.iter().map(|&v| from_bf16(to_bf16(v))).collect::<Vec<_>>();
            let expected = product(
                &round(&x),
                &layer.to_f32_input_major(),
                rows,
                inputs,
                outputs,
            );
            for kernel in Bf16Kernel::available() {
                for parallel in [false, true] {
                    let mut out = vec![0.5f32; rows * outputs];
                    layer.matmul_acc(&mut out, &x, rows, kernel, parallel);
                    for (i, (&o, &e)) in out.iter().zip(&expected).enumerate() {
                        // Sums of exact products, in f32 in another order: a few ulps of
                        // the sum of magnitudes.
                        let tol = 1e-5 * (inputs as f32).sqrt() + 1e-6;
                        assert!(
                            (o - 0.5 - e).abs() <= tol,
                            "{} rows {rows} × {inputs} → {outputs} at {i}: {o} vs {}",
                            kernel.name(),
                            e + 0.5
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_bf16_product_is_close_to_the_f32_one() {
        let (rows, inputs, outputs) = (16, 384, 64);
        let w = matrix(inputs * outputs, 7);
        let x = matrix(rows * inputs, 8);
        let layer = Bf16Linear::from_f32_rows(&w, inputs, outputs);
        let mut out = vec![0.0f32; rows * outputs];
        layer.matmul_acc(&mut out, &x, rows, Bf16Kernel::select().unwrap(), true);
        let exact = product(&x, &transpose(&w, outputs, inputs), rows, inputs, outputs);
        let (dot, nx, ny) = out
            .iter()
            .zip(&exact)
            .fold((0.0, 0.0, 0.0), |(d, a, b), (&x, &y)| {
                (
                    d + f64::from(x * y),
                    a + f64::from(x * x),
                    b + f64::from(y * y),
                )
            });
        assert!(dot / (nx * ny).sqrt() > 0.9999);
    }

    #[test]
    fn a_forced_kernel_is_used_and_a_wrong_name_is_refused_naming_the_choices() {
        assert_eq!(
            Bf16Kernel::choose(Some("portable")).unwrap(),
            Bf16Kernel::Portable
        );
        let best = *Bf16Kernel::available().last().unwrap();
        assert_eq!(Bf16Kernel::choose(None).unwrap(), best);
        let err = Bf16Kernel::choose(Some("amx")).unwrap_err().to_string();
        assert!(
            err.contains(BF16_KERNEL_ENV) && err.contains("avx512-bf16") && err.contains("amx"),
            "{err}"
        );
        if !Bf16Kernel::Avx512Bf16.supported() {
            let err = Bf16Kernel::choose(Some("avx512-bf16"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("lacks"), "{err}");
        }
    }
}
