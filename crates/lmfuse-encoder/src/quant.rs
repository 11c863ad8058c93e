//! int8 linear layers: weights quantised symmetrically per output channel, inputs quantised
//! symmetrically per token row (in blocks of [`BLOCK`] features, each with its own scale) when
//! the product runs, products summed in i32 and scaled back
//! to f32 into the output (which already holds the bias and the residual).
//!
//! Weights are packed in panels of [`PANEL`] output channels × groups of [`GROUP`] inputs,
//! the layout of the integer dot-product instructions (one 32-bit lane per channel sums four
//! byte products), so no kernel needs a horizontal sum. One micro-kernel per instruction set,
//! chosen at run time ([`Int8Kernel`]): AVX-512 VNNI, AVX-VNNI, AVX2 without VNNI, and a
//! portable one that is the reference for the others. The VNNI instructions multiply unsigned
//! by signed bytes, so their inputs are stored as `x + 128` and `128 · Σw` is subtracted per
//! channel; AVX2
//! has no such instruction without saturation, so its kernel multiplies `|x|` by `w · sign(x)`
//! (`vpsignb`), whose pair sums stay within i16 because both sides are within ±127.

use crate::cpu::{self, Kernel};

/// Output channels per packed panel.
pub const PANEL: usize = 16;
/// Inputs per packed group (one 4-byte dot product per channel).
const GROUP: usize = 4;
/// Token rows per micro-kernel call.
const MR: usize = 4;
/// Panels the fused AVX-512 VNNI kernel works on at once (4 rows × 2 panels: eight
/// independent dot-product chains).
const PANES: usize = 2;
/// Groups per block of inputs that share one activation scale: a row's few outlier features
/// (LayerNorm outputs have some) then coarsen only their own block, not the whole row.
const BLOCK_GROUPS: usize = 16;
/// Inputs per activation-scale block.
const BLOCK: usize = BLOCK_GROUPS * GROUP;
/// Largest quantised magnitude: ±127 on both sides keeps AVX2's i16 pair sums exact.
const QMAX: f32 = 127.0;

/// An int8 micro-kernel, by the instructions it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// Plain Rust; the reference every other kernel is tested against.
    Portable,
    /// AVX2 (`vpmaddubsw` on `|x|` and `w · sign(x)`).
    Avx2,
    /// AVX-VNNI (`vpdpbusd` on 256-bit registers).
    AvxVnni,
    /// AVX-512 VNNI (`vpdpbusd` on 512-bit registers).
    Avx512Vnni,
}

/// The environment variable that forces a kernel (`portable`, `avx2`, `avx-vnni`,
/// `avx512-vnni`); unset, the fastest the CPU has is used.
pub const INT8_KERNEL_ENV: &str = "LMFUSE_INT8_KERNEL";

impl Int8Kernel {
    /// Whether the kernel reads its inputs as `x + 128` in unsigned bytes (the VNNI
    /// instructions multiply unsigned by signed bytes) and subtracts `128 · Σw` afterwards.
    fn offsets_inputs(self) -> bool {
        matches!(self, Int8Kernel::AvxVnni | Int8Kernel::Avx512Vnni)
    }
}

impl Kernel for Int8Kernel {
    /// Every kernel, slowest first.
    const ALL: &'static [Self] = &[
        Int8Kernel::Portable,
        Int8Kernel::Avx2,
        Int8Kernel::AvxVnni,
        Int8Kernel::Avx512Vnni,
    ];
    const ENV: &'static str = INT8_KERNEL_ENV;

    /// The name used by [`INT8_KERNEL_ENV`] and in reports.
    fn name(self) -> &'static str {
        match self {
            Int8Kernel::Portable => "portable",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::AvxVnni => "avx-vnni",
            Int8Kernel::Avx512Vnni => "avx512-vnni",
        }
    }

    /// Whether this CPU can run the kernel.
    fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Int8Kernel::Portable => true,
                Int8Kernel::Avx2 => has!("avx2"),
                Int8Kernel::AvxVnni => has!("avx2") && has!("avxvnni"),
                Int8Kernel::Avx512Vnni => has!("avx512f") && has!("avx512bw") && has!("avx512vnni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Int8Kernel::Portable
        }
    }
}

/// A linear layer's weight matrix in int8, packed for the micro-kernels.
#[derive(Debug, Clone)]
pub struct QuantLinear {
    inputs: usize,
    outputs: usize,
    /// `ceil(inputs / GROUP)`.
    groups: usize,
    /// `ceil(groups / BLOCK_GROUPS)`: activation-scale blocks per row.
    blocks: usize,
    /// `[panel][group][channel of the panel][input of the group]`, zero beyond the matrix.
    packed: Vec<i8>,
    /// Per output channel (padded to whole panels with 0): weight = value · scale.
    scales: Vec<f32>,
    /// Per panel, block and channel of the panel: the sum of the block's quantised weights,
    /// for the VNNI kernels' offset.
    sums: Vec<i32>,
}

/// Quantises `values` symmetrically into `out` (same length); returns the scale.
#[inline(always)]
fn quantize_into(values: &[f32], out: &mut [i8]) -> f32 {
    // The largest magnitude by the bits: non-negative floats order as their bits do, and an
    // integer maximum vectorises where `f32::max` (NaN rules) does not. A NaN's bits exceed
    // infinity's, so a NaN or infinite input gives a maximum that is not finite.
    let max_bits = values
        .iter()
        .fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
    let max = f32::from_bits(max_bits);
    if max == 0.0 || !max.is_finite() {
        out.fill(0);
        return if max == 0.0 { 0.0 } else { f32::NAN };
    }
    let inv = QMAX / max;
    for (o, &v) in out.iter_mut().zip(values) {
        // |v · inv| ≤ 127 up to rounding, which `round_small` takes back to 127.
        *o = round_small(v * inv) as i8;
    }
    max / QMAX
}

/// `v` rounded to the nearest integer (ties to even), for |v| < 2²²: adding 1.5 · 2²³ leaves
/// no fraction bits, and the sum's low mantissa bits are then the integer plus 2²². Integer
/// arithmetic on the bits, so the loop vectorises, where `f32::round` is a libm call and a
/// saturating `as i32` a compare per value.
#[inline(always)]
fn round_small(v: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
}

impl QuantLinear {
    /// Quantises a weight stored `[outputs, inputs]` (PyTorch's Linear layout), one scale per
    /// output channel.
    pub fn from_f32_rows(w: &[f32], inputs: usize, outputs: usize) -> Self {
        assert_eq!(w.len(), inputs * outputs, "weight size");
        let mut rows = vec![0i8; outputs * inputs];
        let mut scales = vec![0.0f32; outputs];
        for ((q, scale), row) in rows
            .chunks_exact_mut(inputs.max(1))
            .zip(scales.iter_mut())
            .zip(w.chunks_exact(inputs.max(1)))
        {
            *scale = quantize_into(row, q);
        }
        Self::from_rows(&rows, &scales, inputs, outputs)
    }

    /// A layer from its quantised rows `[outputs, inputs]` and per-channel scales, as stored.
    pub fn from_rows(rows: &[i8], scales: &[f32], inputs: usize, outputs: usize) -> Self {
        assert_eq!(rows.len(), inputs * outputs, "weight size");
        assert_eq!(scales.len(), outputs, "scale count");
        let groups = inputs.div_ceil(GROUP);
        let blocks = groups.div_ceil(BLOCK_GROUPS);
        let panels = outputs.div_ceil(PANEL);
        let mut packed = vec![0i8; panels * groups * PANEL * GROUP];
        let mut sums = vec![0i32; panels * blocks * PANEL];
        for o in 0..outputs {
            let (p, c) = (o / PANEL, o % PANEL);
            for (i, &q) in rows[o * inputs..(o + 1) * inputs].iter().enumerate() {
                let (g, j) = (i / GROUP, i % GROUP);
                packed[((p * groups + g) * PANEL + c) * GROUP + j] = q;
                sums[(p * blocks + i / BLOCK) * PANEL + c] += i32::from(q);
            }
        }
        let mut padded = scales.to_vec();
        padded.resize(panels * PANEL, 0.0);
        Self {
            inputs,
            outputs,
            groups,
            blocks,
            packed,
            scales: padded,
            sums,
        }
    }

    /// The quantised rows `[outputs, inputs]` and the scales, as [`QuantLinear::from_rows`]
    /// reads them back.
    pub fn to_rows(&self) -> (Vec<i8>, Vec<f32>) {
        let mut rows = vec![0i8; self.outputs * self.inputs];
        for o in 0..self.outputs {
            let (p, c) = (o / PANEL, o % PANEL);
            for i in 0..self.inputs {
                let (g, j) = (i / GROUP, i % GROUP);
                rows[o * self.inputs + i] =
                    self.packed[((p * self.groups + g) * PANEL + c) * GROUP + j];
            }
        }
        (rows, self.scales[..self.outputs].to_vec())
    }

    /// The weight in f32, `[inputs, outputs]`, as the quantised values stand for it.
    pub fn dequantize_input_major(&self) -> Vec<f32> {
        let (rows, scales) = self.to_rows();
        let mut w = vec![0.0f32; self.inputs * self.outputs];
        for (o, row) in rows.chunks_exact(self.inputs.max(1)).enumerate() {
            for (i, &q) in row.iter().enumerate() {
                w[i * self.outputs + o] = f32::from(q) * scales[o];
            }
        }
        w
    }

    /// Input width.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Output width.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// `out += x · W` for `rows` rows of `x` (`[rows, inputs]`) into `out` (`[rows, outputs]`),
    /// split over the rayon pool when `parallel`.
    pub fn matmul_acc(
        &self,
        out: &mut [f32],
        x: &[f32],
        rows: usize,
        kernel: Int8Kernel,
        parallel: bool,
    ) {
        let shape = (self.inputs, self.outputs);
        cpu::for_row_blocks(out, x, rows, shape, kernel, MR, parallel, |o, x, k| {
            self.block_acc(o, x, k)
        });
    }

    /// [`QuantLinear::matmul_acc`] on one block of rows, on the calling thread.
    fn block_acc(&self, out: &mut [f32], x: &[f32], kernel: Int8Kernel) {
        thread_local! {
            /// The quantised rows and their scales, reused: a fresh multi-megabyte buffer per
            /// product is mapped, faulted in and unmapped each time, which serialises threads.
            static SCRATCH: std::cell::RefCell<(Vec<i8>, Vec<f32>)> = Default::default();
        }
        SCRATCH.with_borrow_mut(|(qx, x_scales)| {
            let rows = x.len() / self.inputs;
            // Whole micro-kernel blocks. What the padding rows and columns hold does not
            // matter: padding rows' results are dropped, and padding columns meet zero weights.
            let len = rows.next_multiple_of(MR) * self.groups * GROUP;
            if qx.len() < len {
                qx.resize(len, 0);
            }
            // Padding rows' scales too: the fused kernel reads whole micro-kernel blocks.
            let scales_len = rows.next_multiple_of(MR) * self.blocks;
            if x_scales.len() < scales_len {
                x_scales.resize(scales_len, 0.0);
            }
            #[cfg(target_arch = "x86_64")]
            if kernel != Int8Kernel::Portable {
                // SAFETY: every x86 kernel but the portable one needs AVX2, which
                // `matmul_acc` checked through `kernel.supported()`.
                return unsafe { self.block_acc_avx2(out, x, kernel, qx, x_scales) };
            }
            self.block_acc_in(out, x, kernel, qx, x_scales);
        });
    }

    /// [`QuantLinear::block_acc_in`] compiled for AVX2, so that quantising the inputs and
    /// scaling the sums back use the full vector width.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn block_acc_avx2(
        &self,
        out: &mut [f32],
        x: &[f32],
        kernel: Int8Kernel,
        qx: &mut [i8],
        x_scales: &mut [f32],
    ) {
        self.block_acc_in(out, x, kernel, qx, x_scales);
    }

    /// [`QuantLinear::block_acc`] with scratch buffers that are large enough.
    #[inline(always)]
    fn block_acc_in(
        &self,
        out: &mut [f32],
        x: &[f32],
        kernel: Int8Kernel,
        qx: &mut [i8],
        x_scales: &mut [f32],
    ) {
        let rows = x.len() / self.inputs;
        let stride = self.groups * GROUP;
        for r in 0..rows {
            let row = &x[r * self.inputs..(r + 1) * self.inputs];
            let q = &mut qx[r * stride..][..self.inputs];
            for ((x, q), scale) in row
                .chunks(BLOCK)
                .zip(q.chunks_mut(BLOCK))
                .zip(&mut x_scales[r * self.blocks..(r + 1) * self.blocks])
            {
                *scale = quantize_into(x, q);
            }
            if kernel.offsets_inputs() {
                // The VNNI kernels read `x + 128` as unsigned bytes: flipping the sign bit
                // once here spares them an instruction per broadcast.
                for v in q.iter_mut() {
                    *v ^= i8::MIN;
                }
            }
        }
        let panels = self.outputs.div_ceil(PANEL);
        for p0 in (0..panels).step_by(PANES) {
            let pane = p0..(p0 + PANES).min(panels);
            for r0 in (0..rows).step_by(MR) {
                let a = &qx[r0 * stride..(r0 + MR) * stride];
                let a_scales = &x_scales[r0 * self.blocks..(r0 + MR) * self.blocks];
                let live = MR.min(rows - r0);
                let out = &mut out[r0 * self.outputs..(r0 + live) * self.outputs];
                self.tile_acc(kernel, a, a_scales, pane.clone(), out);
            }
        }
    }

    /// For [`MR`] quantised rows `a` (with their per-block scales `a_scales`) and the panels
    /// `pane`: `out[r][c] += w_scale[c] · Σ_b a_scale[r][b] · Σ_{k in b} a[r][k] · w[c][k]`
    /// for the rows `out` holds (`[rows, outputs]`, at most `MR`), in f32, each block's
    /// integer sum scaled and added in block order, so every kernel gives the same floats.
    #[inline(always)]
    fn tile_acc(
        &self,
        kernel: Int8Kernel,
        a: &[i8],
        a_scales: &[f32],
        pane: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let stride = self.groups * GROUP;
        let panel_len = self.groups * PANEL * GROUP;
        let channels = |p: usize| PANEL.min(self.outputs - p * PANEL);
        #[cfg(target_arch = "x86_64")]
        if kernel == Int8Kernel::Avx512Vnni {
            // Missing panels at the end read the last one again and are not written.
            let p: [usize; PANES] = std::array::from_fn(|q| (pane.start + q).min(pane.end - 1));
            let tile = x86::Tile {
                a,
                stride,
                a_scales,
                blocks: self.blocks,
                groups: self.groups,
                panels: p.map(|p| &self.packed[p * panel_len..(p + 1) * panel_len]),
                offsets: p.map(|p| &self.sums[p * self.blocks * PANEL..][..self.blocks * PANEL]),
                w_scales: p.map(|p| &self.scales[p * PANEL..][..PANEL]),
                channels: std::array::from_fn(|q| match q < pane.len() {
                    true => channels(pane.start + q),
                    false => 0,
                }),
                first: pane.start * PANEL,
                outputs: self.outputs,
            };
            // SAFETY: `matmul_acc` checked that the CPU has AVX-512 VNNI; `Tile::check`
            // keeps every load and store in range.
            return unsafe { tile.check(out).avx512_vnni(out) };
        }
        let mut acc = [[0i32; PANEL]; MR];
        let mut sum = [[0.0f32; PANEL]; MR];
        for p in pane {
            let panel = &self.packed[p * panel_len..(p + 1) * panel_len];
            sum.iter_mut().for_each(|s| s.fill(0.0));
            for b in 0..self.blocks {
                let g0 = b * BLOCK_GROUPS;
                let groups = BLOCK_GROUPS.min(self.groups - g0);
                let w = &panel[g0 * PANEL * GROUP..];
                let offsets = &self.sums[(p * self.blocks + b) * PANEL..][..PANEL];
                run_kernel(
                    kernel,
                    &a[g0 * GROUP..],
                    stride,
                    w,
                    groups,
                    offsets,
                    &mut acc,
                );
                for (r, (s, acc)) in sum.iter_mut().zip(&acc).enumerate() {
                    let a_scale = a_scales[r * self.blocks + b];
                    for (s, &a) in s.iter_mut().zip(acc) {
                        *s += a as f32 * a_scale;
                    }
                }
            }
            let w_scales = &self.scales[p * PANEL..][..PANEL];
            for (o, s) in out.chunks_exact_mut(self.outputs).zip(&sum) {
                let o = &mut o[p * PANEL..][..channels(p)];
                for ((o, &s), &w_scale) in o.iter_mut().zip(s).zip(w_scales) {
                    *o += s * w_scale;
                }
            }
        }
    }
}

/// `acc[r][c] = Σ_k a[r][k] · w[c][k]` for [`MR`] rows of `a` (`stride` apart) and one packed
/// panel, on `kernel`'s instructions.
fn run_kernel(
    kernel: Int8Kernel,
    a: &[i8],
    stride: usize,
    panel: &[i8],
    groups: usize,
    sums: &[i32],
    acc: &mut [[i32; PANEL]; MR],
) {
    assert!(a.len() >= (MR - 1) * stride + groups * GROUP && stride >= groups * GROUP);
    assert!(groups > 0);
    assert!(panel.len() >= groups * PANEL * GROUP && sums.len() >= PANEL);
    match kernel {
        Int8Kernel::Portable => portable(a, stride, panel, groups, acc),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul_acc` checked that the CPU has the kernel's instructions; the
        // asserts above keep every load inside `a`, `panel` and `sums`.
        Int8Kernel::Avx2 => unsafe { x86::avx2(a, stride, panel, groups, acc) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Int8Kernel::AvxVnni => unsafe { x86::avx_vnni(a, stride, panel, groups, sums, acc) },
        Int8Kernel::Avx512Vnni => unreachable!("the AVX-512 VNNI kernel is fused (x86::Tile)"),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("only the portable kernel is supported off x86-64"),
    }
}

/// The reference micro-kernel.
fn portable(a: &[i8], stride: usize, panel: &[i8], groups: usize, acc: &mut [[i32; PANEL]; MR]) {
    for (r, acc_row) in acc.iter_mut().enumerate() {
        acc_row.fill(0);
        let row = &a[r * stride..];
        for g in 0..groups {
            let x = &row[g * GROUP..][..GROUP];
            let w = &panel[g * PANEL * GROUP..][..PANEL * GROUP];
            for (c, s) in acc_row.iter_mut().enumerate() {
                let wc = &w[c * GROUP..][..GROUP];
                *s += x
                    .iter()
                    .zip(wc)
                    .map(|(&x, &w)| i32::from(x) * i32::from(w))
                    .sum::<i32>();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86-64 micro-kernels. Callers check the CPU features and the slice lengths
    //! ([`super::run_kernel`], [`Tile::check`]).
    use super::{BLOCK_GROUPS, GROUP, MR, PANEL, PANES};
    use std::arch::x86_64::*;

    /// What the fused AVX-512 VNNI kernel reads: [`MR`] quantised rows and their block
    /// scales, against [`PANES`] panels (the last one again when fewer are left), and
    /// where it adds the results.
    pub(super) struct Tile<'a> {
        /// `MR` rows, `stride` apart, already offset to `x + 128`.
        pub a: &'a [i8],
        pub stride: usize,
        /// `[row][block]`.
        pub a_scales: &'a [f32],
        pub blocks: usize,
        pub groups: usize,
        pub panels: [&'a [i8]; PANES],
        /// Per panel: `[block][channel]` sums of the quantised weights.
        pub offsets: [&'a [i32]; PANES],
        /// Per panel: its 16 channels' weight scales.
        pub w_scales: [&'a [f32]; PANES],
        /// Per panel: the channels written (0 for a panel read twice).
        pub channels: [usize; PANES],
        /// The first panel's first output column.
        pub first: usize,
        /// Output row width.
        pub outputs: usize,
    }

    impl Tile<'_> {
        /// Asserts that every load and store [`Tile::avx512_vnni`] makes is in range, with
        /// `out` the output rows (`[rows, outputs]`, at most `MR`).
        pub fn check(self, out: &[f32]) -> Self {
            assert!(self.stride >= self.groups * GROUP);
            assert!(self.a.len() >= (MR - 1) * self.stride + self.groups * GROUP);
            assert!(self.a_scales.len() >= MR * self.blocks);
            assert!(self.blocks * BLOCK_GROUPS >= self.groups);
            assert!(out.len().is_multiple_of(self.outputs) && out.len() / self.outputs <= MR);
            for q in 0..PANES {
                assert!(self.panels[q].len() >= self.groups * PANEL * GROUP);
                assert!(self.offsets[q].len() >= self.blocks * PANEL);
                assert!(self.w_scales[q].len() >= PANEL && self.channels[q] <= PANEL);
                let written = self.channels[q];
                assert!(written == 0 || self.first + q * PANEL + written <= self.outputs);
            }
            self
        }

        /// `super::QuantLinear::tile_acc` for every pane at once: per block, `MR × PANES`
        /// independent `vpdpbusd` chains, then each chain's integers less `128 · Σw`,
        /// converted, scaled by the row's block scale and added to f32 sums in registers;
        /// at the end the sums times the weight scales are added to `out` (each a multiply
        /// then an add, as the portable path rounds).
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        pub unsafe fn avx512_vnni(&self, out: &mut [f32]) {
            let mut total = [[_mm512_setzero_ps(); PANES]; MR];
            for b in 0..self.blocks {
                let g0 = b * BLOCK_GROUPS;
                let g1 = (g0 + BLOCK_GROUPS).min(self.groups);
                let mut acc = [[_mm512_setzero_si512(); PANES]; MR];
                for g in g0..g1 {
                    // SAFETY: `check` keeps each panel's `groups * 64` bytes in range.
                    let w = self.panels.map(|panel| unsafe {
                        _mm512_loadu_si512(panel.as_ptr().add(g * PANEL * GROUP).cast())
                    });
                    for (r, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: `check` keeps row `r`'s group `g` within `a`.
                        let x =
                            _mm512_set1_epi32(unsafe { group_bytes(self.a, r, self.stride, g) });
                        for (acc, &w) in acc.iter_mut().zip(&w) {
                            *acc = _mm512_dpbusd_epi32(*acc, x, w);
                        }
                    }
                }
                // SAFETY: `check` keeps each panel's `blocks * 16` offsets in range.
                let offset = self.offsets.map(|o| unsafe {
                    _mm512_slli_epi32(_mm512_loadu_si512(o.as_ptr().add(b * PANEL).cast()), 7)
                });
                for (r, (total, acc)) in total.iter_mut().zip(&acc).enumerate() {
                    let scale = _mm512_set1_ps(self.a_scales[r * self.blocks + b]);
                    for ((total, &acc), &offset) in total.iter_mut().zip(acc).zip(&offset) {
                        let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, offset));
                        *total = _mm512_add_ps(*total, _mm512_mul_ps(v, scale));
                    }
                }
            }
            // SAFETY: `check` keeps each panel's 16 scales in range.
            let w_scale = self
                .w_scales
                .map(|s| unsafe { _mm512_loadu_ps(s.as_ptr()) });
            for (row, total) in out.chunks_exact_mut(self.outputs).zip(&total) {
                for q in 0..PANES {
                    let mask: __mmask16 = ((1u32 << self.channels[q]) - 1) as u16;
                    // SAFETY: `check` keeps the masked lanes, the panel's live channels,
                    // within the row.
                    unsafe {
                        let o = row.as_mut_ptr().add(self.first + q * PANEL);
                        let sum = _mm512_mul_ps(total[q], w_scale[q]);
                        let v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, o), sum);
                        _mm512_mask_storeu_ps(o, mask, v);
                    }
                }
            }
        }
    }

    /// The 4 bytes of group `g` of row `r`, as one i32 to broadcast.
    #[inline(always)]
    unsafe fn group_bytes(a: &[i8], r: usize, stride: usize, g: usize) -> i32 {
        // SAFETY: the caller keeps `r * stride + g * GROUP + 4` within `a`.
        unsafe {
            a.as_ptr()
                .add(r * stride + g * GROUP)
                .cast::<i32>()
                .read_unaligned()
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn avx2(
        a: &[i8],
        stride: usize,
        panel: &[i8],
        groups: usize,
        acc: &mut [[i32; PANEL]; MR],
    ) {
        let ones = _mm256_set1_epi16(1);
        let mut sum = [[_mm256_setzero_si256(); 2]; MR];
        for g in 0..groups {
            // SAFETY: the caller keeps the panel's `groups * 64` bytes in range.
            let w = unsafe { panel.as_ptr().add(g * PANEL * GROUP) };
            let w0 = unsafe { _mm256_loadu_si256(w.cast()) };
            let w1 = unsafe { _mm256_loadu_si256(w.add(32).cast()) };
            for (r, s) in sum.iter_mut().enumerate() {
                let x = _mm256_set1_epi32(unsafe { group_bytes(a, r, stride, g) });
                let x_abs = _mm256_sign_epi8(x, x);
                let p0 = _mm256_maddubs_epi16(x_abs, _mm256_sign_epi8(w0, x));
                let p1 = _mm256_maddubs_epi16(x_abs, _mm256_sign_epi8(w1, x));
                s[0] = _mm256_add_epi32(s[0], _mm256_madd_epi16(p0, ones));
                s[1] = _mm256_add_epi32(s[1], _mm256_madd_epi16(p1, ones));
            }
        }
        for (s, out) in sum.iter().zip(acc.iter_mut()) {
            // SAFETY: each half is 8 i32s of a 16-i32 row.
            unsafe {
                _mm256_storeu_si256(out.as_mut_ptr().cast(), s[0]);
                _mm256_storeu_si256(out.as_mut_ptr().add(8).cast(), s[1]);
            }
        }
    }

    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) unsafe fn avx_vnni(
        a: &[i8],
        stride: usize,
        panel: &[i8],
        groups: usize,
        sums: &[i32],
        acc: &mut [[i32; PANEL]; MR],
    ) {
        let mut sum = [[_mm256_setzero_si256(); 2]; MR];
        for g in 0..groups {
            // SAFETY: as in `avx2`.
            let w = unsafe { panel.as_ptr().add(g * PANEL * GROUP) };
            let w0 = unsafe { _mm256_loadu_si256(w.cast()) };
            let w1 = unsafe { _mm256_loadu_si256(w.add(32).cast()) };
            for (r, s) in sum.iter_mut().enumerate() {
                // Already x + 128 as unsigned bytes.
                let x = _mm256_set1_epi32(unsafe { group_bytes(a, r, stride, g) });
                s[0] = _mm256_dpbusd_avx_epi32(s[0], x, w0);
                s[1] = _mm256_dpbusd_avx_epi32(s[1], x, w1);
            }
        }
        // SAFETY: `sums` holds the panel's 16 channels.
        let offset0 = _mm256_slli_epi32(unsafe { _mm256_loadu_si256(sums.as_ptr().cast()) }, 7);
        let offset1 = _mm256_slli_epi32(
            unsafe { _mm256_loadu_si256(sums.as_ptr().add(8).cast()) },
            7,
        );
        for (s, out) in sum.iter().zip(acc.iter_mut()) {
            // SAFETY: as in `avx2`.
            unsafe {
                _mm256_storeu_si256(out.as_mut_ptr().cast(), _mm256_sub_epi32(s[0], offset0));
                _mm256_storeu_si256(
                    out.as_mut_ptr().add(8).cast(),
                    _mm256_sub_epi32(s[1], offset1),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random matrix in [-1, 1) with a few large entries, as real
    /// activations have.
    fn matrix(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                if i % 97 == 0 {
                    v * 8.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// `w`, stored `[inputs, outputs]` as the f32 forward pass keeps it, quantised per output
    /// channel.
    fn from_input_major(w: &[f32], inputs: usize, outputs: usize) -> QuantLinear {
        let rows: Vec<f32> = (0..outputs)
            .flat_map(|o| (0..inputs).map(move |i| (i, o)))
            .map(|(i, o)| w[i * outputs + o])
            .collect();
        QuantLinear::from_f32_rows(&rows, inputs, outputs)
    }

    fn f32_product(x: &[f32], w: &[f32], rows: usize, inputs: usize, outputs: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; rows * outputs];
        for r in 0..rows {
            for i in 0..inputs {
                let xv = x[r * inputs + i];
                for o in 0..outputs {
                    out[r * outputs + o] += xv * w[i * outputs + o];
                }
            }
        }
        out
    }

    #[test]
    fn every_kernel_here_gives_the_portable_kernels_exact_integers() {
        // Odd sizes: padding of inputs (to 4), outputs (to 16) and rows (to 4) all exercised.
        for (rows, inputs, outputs) in [(1, 3, 5), (7, 37, 19), (33, 384, 48), (9, 130, 33)] {
            let w = matrix(inputs * outputs, 1);
            let x = matrix(rows * inputs, 2);
            let layer = from_input_major(&w, inputs, outputs);
            let mut reference = vec![0.5f32; rows * outputs];
            layer.matmul_acc(&mut reference, &x, rows, Int8Kernel::Portable, false);
            for kernel in Int8Kernel::available() {
                for parallel in [false, true] {
                    let mut out = vec![0.5f32; rows * outputs];
                    layer.matmul_acc(&mut out, &x, rows, kernel, parallel);
                    assert_eq!(
                        out,
                        reference,
                        "{} {rows}x{inputs}x{outputs}",
                        kernel.name()
                    );
                }
            }
        }
    }

    /// What the VNNI kernels compute, in scalar code: inputs offset by 128 as unsigned
    /// bytes, products with the signed weights, `128 · Σw` of the block subtracted. Checks the
    /// offset and the per-block sums on machines without VNNI.
    #[test]
    fn the_vnni_arithmetic_with_offset_inputs_gives_the_portable_integers() {
        let (inputs, outputs) = (100, 20);
        let layer = from_input_major(&matrix(inputs * outputs, 8), inputs, outputs);
        let stride = layer.groups * GROUP;
        let mut a = vec![0i8; MR * stride];
        for (r, row) in a.chunks_mut(stride).enumerate() {
            let x = matrix(inputs, 9 + r as u64);
            quantize_into(&x, &mut row[..inputs]);
        }
        let panel_len = layer.groups * PANEL * GROUP;
        for (p, panel) in layer.packed.chunks_exact(panel_len).enumerate() {
            for b in 0..layer.blocks {
                let g0 = b * BLOCK_GROUPS;
                let groups = BLOCK_GROUPS.min(layer.groups - g0);
                let block_a = &a[g0 * GROUP..];
                let w = &panel[g0 * PANEL * GROUP..];
                let mut want = [[0i32; PANEL]; MR];
                portable(block_a, stride, w, groups, &mut want);
                let sums = &layer.sums[(p * layer.blocks + b) * PANEL..][..PANEL];
                for (r, want) in want.iter().enumerate() {
                    for (c, &want) in want.iter().enumerate() {
                        let mut got = 0i32;
                        for g in 0..groups {
                            for j in 0..GROUP {
                                let x = (block_a[r * stride + g * GROUP + j] ^ i8::MIN) as u8;
                                let w = w[(g * PANEL + c) * GROUP + j];
                                got += i32::from(x) * i32::from(w);
                            }
                        }
                        assert_eq!(
                            got - 128 * sums[c],
                            want,
                            "panel {p} block {b} row {r} ch {c}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_int8_product_is_close_to_the_f32_one() {
        let (rows, inputs, outputs) = (21, 384, 64);
        let w = matrix(inputs * outputs, 3);
        let x = matrix(rows * inputs, 4);
        let exact = f32_product(&x, &w, rows, inputs, outputs);
        let layer = from_input_major(&w, inputs, outputs);
        let mut out = vec![0.0f32; rows * outputs];
        layer.matmul_acc(&mut out, &x, rows, Int8Kernel::select().unwrap(), false);
        for r in 0..rows {
            let e = &exact[r * outputs..(r + 1) * outputs];
            let q = &out[r * outputs..(r + 1) * outputs];
            let dot: f32 = e.iter().zip(q).map(|(a, b)| a * b).sum();
            let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
            let cosine = dot / (norm(e) * norm(q));
            assert!(cosine > 0.999, "row {r}: cosine {cosine}");
        }
    }

    #[test]
    fn rows_round_trip_and_dequantise_to_within_half_a_step() {
        let (inputs, outputs) = (37, 21);
        let w = matrix(inputs * outputs, 5);
        let layer = from_input_major(&w, inputs, outputs);
        let (rows, scales) = layer.to_rows();
        let again = QuantLinear::from_rows(&rows, &scales, inputs, outputs);
        assert_eq!(again.packed, layer.packed);
        assert_eq!(again.sums, layer.sums);
        let back = layer.dequantize_input_major();
        for i in 0..inputs {
            for o in 0..outputs {
                let step = scales[o];
                let err = (back[i * outputs + o] - w[i * outputs + o]).abs();
                assert!(
                    err <= step * 0.5 + 1e-6,
                    "w[{i}][{o}] off by {err} (step {step})"
                );
            }
        }
    }

    #[test]
    fn a_zero_row_or_channel_stays_zero() {
        let (inputs, outputs) = (8, 16);
        let mut w = matrix(inputs * outputs, 6);
        for i in 0..inputs {
            w[i * outputs + 3] = 0.0;
        }
        let layer = from_input_major(&w, inputs, outputs);
        let mut x = matrix(2 * inputs, 7);
        x[inputs..].fill(0.0);
        let mut out = vec![0.0f32; 2 * outputs];
        layer.matmul_acc(&mut out, &x, 2, Int8Kernel::Portable, false);
        assert_eq!(out[3], 0.0);
        assert!(out[outputs..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn a_forced_kernel_is_used_and_a_wrong_name_is_refused_naming_the_choices() {
        assert_eq!(
            Int8Kernel::choose(Some("portable")).unwrap(),
            Int8Kernel::Portable
        );
        let best = *Int8Kernel::available().last().unwrap();
        assert_eq!(Int8Kernel::choose(None).unwrap(), best);
        assert_eq!(Int8Kernel::choose(Some("")).unwrap(), best);
        let err = Int8Kernel::choose(Some("avx9")).unwrap_err().to_string();
        assert!(
            err.contains("LMFUSE_INT8_KERNEL") && err.contains("\"avx9\""),
            "{err}"
        );
        assert!(err.contains("this CPU runs: portable"), "{err}");
        if let Some(missing) = Int8Kernel::ALL.iter().copied().find(|k| !k.supported()) {
            let err = Int8Kernel::choose(Some(missing.name()))
                .unwrap_err()
                .to_string();
            assert!(err.contains("lacks its instructions"), "{err}");
        }
    }
}
