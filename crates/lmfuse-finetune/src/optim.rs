//! AdamW with decoupled weight decay, fused into one in-place pass over the flat parameters,
//! and the learning-rate schedule.

use crate::network::ParamStore;
use rayon::prelude::*;

/// Linear warm-up from 0 to 1 over `warmup` steps, then linear decay to 0 at `total`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Warm-up steps.
    pub warmup: usize,
    /// Total optimiser steps.
    pub total: usize,
}

impl Schedule {
    /// The learning-rate factor for optimiser step `step` (0-based).
    pub fn factor(&self, step: usize) -> f32 {
        let s = step as f32 + 1.0;
        if step < self.warmup {
            s / self.warmup as f32
        } else {
            let rest = (self.total.saturating_sub(self.warmup)).max(1) as f32;
            ((self.total as f32 - step as f32) / rest).clamp(0.0, 1.0)
        }
    }
}

/// AdamW state: first and second moments for every parameter value.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// First moments.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
    /// Steps taken.
    pub steps: usize,
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
}

/// Values per parallel chunk of the update.
const CHUNK: usize = 1 << 15;

impl AdamW {
    /// Zero moments for `n` values, PyTorch's defaults (β = 0.9, 0.999; ε = 1e-8).
    pub fn new(n: usize) -> Self {
        Self {
            m: vec![0.0; n],
            v: vec![0.0; n],
            steps: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// One step over every trainable tensor: `lr_of(spec)` is that tensor's learning rate;
    /// weight decay applies where `spec.decay`. Frozen tensors are left alone.
    pub fn step(
        &mut self,
        store: &mut ParamStore,
        grads: &[f32],
        lr_of: impl Fn(&crate::TensorSpec) -> f32,
        weight_decay: f32,
    ) {
        self.steps += 1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let bc1 = 1.0 - b1.powi(self.steps as i32);
        let bc2_sqrt = (1.0 - b2.powi(self.steps as i32)).sqrt();
        let specs = store.specs.clone();
        for spec in specs.iter().filter(|s| !s.frozen) {
            let lr = lr_of(spec);
            let decay = if spec.decay {
                1.0 - lr * weight_decay
            } else {
                1.0
            };
            let step_size = lr / bc1;
            let r = spec.range();
            store.values[r.clone()]
                .par_chunks_mut(CHUNK)
                .zip(self.m[r.clone()].par_chunks_mut(CHUNK))
                .zip(self.v[r.clone()].par_chunks_mut(CHUNK))
                .zip(grads[r].par_chunks(CHUNK))
                .for_each(|(((p, m), v), g)| {
                    for i in 0..p.len() {
                        let gi = g[i];
                        m[i] = b1 * m[i] + (1.0 - b1) * gi;
                        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                        let denom = v[i].sqrt() / bc2_sqrt + eps;
                        p[i] = p[i] * decay - step_size * m[i] / denom;
                    }
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let s = Schedule {
            warmup: 4,
            total: 10,
        };
        let f: Vec<f32> = (0..10).map(|i| s.factor(i)).collect();
        assert_eq!(f[0], 0.25);
        assert_eq!(f[3], 1.0);
        assert!(f[4] > f[5] && f[5] > f[9]);
        assert!(f[9] > 0.0 && s.factor(10) == 0.0);
    }

    #[test]
    fn adamw_matches_the_pytorch_formula() {
        // One value, two steps, by hand: torch.optim.AdamW(lr=0.1, weight_decay=0.5).
        let mut store = ParamStore::default();
        store.specs.push(crate::TensorSpec {
            name: "w".into(),
            shape: vec![1],
            offset: 0,
            decay: true,
            depth: 0,
            frozen: false,
        });
        store.values.push(1.0);
        let mut opt = AdamW::new(1);
        let (lr, wd) = (0.1f32, 0.5f32);
        let (mut p, mut m, mut v) = (1.0f64, 0.0f64, 0.0f64);
        for (t, g) in [(1, 0.5f64), (2, -0.25)] {
            opt.step(&mut store, &[g as f32], |_| lr, wd);
            p *= 1.0 - lr as f64 * wd as f64;
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            let mhat = m / (1.0 - 0.9f64.powi(t));
            let vhat = v / (1.0 - 0.999f64.powi(t));
            p -= lr as f64 * mhat / (vhat.sqrt() + 1e-8);
            assert!((store.values[0] as f64 - p).abs() < 1e-6, "step {t}");
        }
    }
}
