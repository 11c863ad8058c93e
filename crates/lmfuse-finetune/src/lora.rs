//! LoRA adapters on the attention projections: `W x + (alpha / rank) · B A x`, with `A`
//! drawn small and `B` zero, so training starts from the pretrained function exactly.

use crate::network::{apply_mask, dropout_mask, normal, ParamStore};
use crate::FinetuneError;
use lmfuse_core::SeededRng;
use lmfuse_encoder::ops;
use serde::{Deserialize, Serialize};

/// Which attention projection an adapter sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraTarget {
    /// The query projection.
    Query,
    /// The key projection.
    Key,
    /// The value projection.
    Value,
}

impl LoraTarget {
    fn part(self) -> usize {
        match self {
            LoraTarget::Query => 0,
            LoraTarget::Key => 1,
            LoraTarget::Value => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            LoraTarget::Query => "query",
            LoraTarget::Key => "key",
            LoraTarget::Value => "value",
        }
    }
}

/// LoRA hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraParams {
    /// Rank of the update.
    pub rank: usize,
    /// Scale numerator: the update is multiplied by `alpha / rank`.
    pub alpha: f32,
    /// Dropout on the adapter's input.
    pub dropout: f32,
    /// Projections that get an adapter (PEFT's default for BERT: query and value).
    pub targets: Vec<LoraTarget>,
}

impl Default for LoraParams {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.1,
            targets: vec![LoraTarget::Query, LoraTarget::Value],
        }
    }
}

impl LoraParams {
    /// Checks the values.
    pub fn check(&self) -> Result<(), FinetuneError> {
        if self.rank == 0 {
            return Err(FinetuneError::Invalid(
                "LoRA rank must be at least 1".into(),
            ));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(FinetuneError::Invalid(format!(
                "LoRA alpha must be positive, got {}",
                self.alpha
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(FinetuneError::Invalid(format!(
                "LoRA dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        if self.targets.is_empty() {
            return Err(FinetuneError::Invalid(
                "LoRA needs at least one target".into(),
            ));
        }
        Ok(())
    }
}

/// The adapters of a network: for each layer and target, the ids of `A` (`hidden × rank`)
/// and `B` (`rank × hidden`) in the parameter store.
#[derive(Debug, Clone)]
pub struct Lora {
    params: LoraParams,
    scale: f32,
    ids: Vec<Vec<(LoraTarget, usize, usize)>>,
}

/// What one adapter's backward pass needs: its dropout mask (if any) and `x A`.
pub(crate) type AdapterCache = (Option<Vec<f32>>, Vec<f32>);

impl Lora {
    /// Adds the adapters' tensors to `store` through `push` (name, shape, values, depth).
    pub(crate) fn new(
        store: &mut ParamStore,
        params: &LoraParams,
        layers: usize,
        hidden: usize,
        _intermediate: usize,
        seed: u64,
        push: impl Fn(&mut ParamStore, &str, Vec<usize>, Vec<f32>, usize) -> usize,
    ) -> Self {
        let mut rng = SeededRng::new(seed ^ 0x4C6F_5241);
        let r = params.rank;
        let mut ids = Vec::with_capacity(layers);
        for l in 0..layers {
            let mut per = Vec::new();
            for &target in &params.targets {
                let pre = format!("encoder.layer.{l}.attention.self.{}.lora", target.name());
                // A ~ N(0, 1/hidden): unit-variance x A at the start; B = 0.
                let a = push(
                    store,
                    &format!("{pre}_A"),
                    vec![hidden, r],
                    normal(&mut rng, hidden * r, 1.0 / (hidden as f32).sqrt()),
                    l + 1,
                );
                let b = push(
                    store,
                    &format!("{pre}_B"),
                    vec![r, hidden],
                    vec![0.0; r * hidden],
                    l + 1,
                );
                per.push((target, a, b));
            }
            ids.push(per);
        }
        Self {
            scale: params.alpha / r as f32,
            params: params.clone(),
            ids,
        }
    }

    /// The hyperparameters.
    pub fn params(&self) -> &LoraParams {
        &self.params
    }

    /// Number of adapter values.
    pub fn n_values(&self, store: &ParamStore) -> usize {
        self.ids
            .iter()
            .flatten()
            .map(|&(_, a, b)| store.specs[a].len() + store.specs[b].len())
            .sum()
    }

    /// Adds layer `l`'s adapter outputs into the `[q | k | v]` rows of `qkv` (`t × 3·hidden`);
    /// keeps what the backward pass needs in `cache`. With `rng` (training), the adapters'
    /// input is dropped out at the LoRA dropout rate.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_qkv(
        &self,
        store: &ParamStore,
        l: usize,
        x: &[f32],
        qkv: &mut [f32],
        t: usize,
        h: usize,
        threads: usize,
        rng: Option<&mut SeededRng>,
        cache: &mut Vec<AdapterCache>,
    ) {
        let r = self.params.rank;
        let mut rng = rng;
        for &(target, a, b) in &self.ids[l] {
            let mut input = x.to_vec();
            let mask = match rng.as_deref_mut() {
                Some(g) => dropout_mask(&mut input, self.params.dropout, g),
                None => None,
            };
            let mut xa = vec![0.0f32; t * r];
            ops::matmul(
                &mut xa,
                &input,
                store.get(a),
                (t, h, r),
                false,
                false,
                false,
                threads,
            );
            let mut delta = vec![0.0f32; t * h];
            ops::matmul(
                &mut delta,
                &xa,
                store.get(b),
                (t, r, h),
                false,
                false,
                false,
                threads,
            );
            let off = target.part() * h;
            for (row, d) in qkv.chunks_exact_mut(3 * h).zip(delta.chunks_exact(h)) {
                for (q, v) in row[off..off + h].iter_mut().zip(d) {
                    *q += self.scale * v;
                }
            }
            cache.push((mask, xa));
        }
    }

    /// Backward of layer `l`'s adapters: adds the gradients of `A` and `B` into `grads` and the
    /// input gradient into `dx`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_qkv(
        &self,
        store: &ParamStore,
        l: usize,
        x: &[f32],
        dqkv: &[f32],
        cache: &[AdapterCache],
        dx: &mut [f32],
        grads: &mut [f32],
        t: usize,
        h: usize,
        threads: usize,
    ) {
        let r = self.params.rank;
        for (&(target, a, b), (mask, xa)) in self.ids[l].iter().zip(cache) {
            let off = target.part() * h;
            // The gradient of this projection's output, scaled as the update was.
            let dy: Vec<f32> = dqkv
                .chunks_exact(3 * h)
                .flat_map(|row| row[off..off + h].iter().map(|v| v * self.scale))
                .collect();
            ops::matmul(
                &mut grads[store.specs[b].range()],
                xa,
                &dy,
                (r, t, h),
                true,
                false,
                true,
                threads,
            );
            let mut dxa = vec![0.0f32; t * r];
            ops::matmul(
                &mut dxa,
                &dy,
                store.get(b),
                (t, h, r),
                false,
                true,
                false,
                threads,
            );
            let mut input = x.to_vec();
            apply_mask(&mut input, mask);
            ops::matmul(
                &mut grads[store.specs[a].range()],
                &input,
                &dxa,
                (h, t, r),
                true,
                false,
                true,
                threads,
            );
            let mut dinput = vec![0.0f32; t * h];
            ops::matmul(
                &mut dinput,
                &dxa,
                store.get(a),
                (t, r, h),
                false,
                true,
                false,
                threads,
            );
            apply_mask(&mut dinput, mask);
            ops::add_into(dx, &dinput);
        }
    }

    /// Adds layer `l`'s updates `scale · A B` into the fused `[q | k | v]` weight
    /// (`hidden × 3·hidden`).
    pub(crate) fn merge_qkv(&self, store: &ParamStore, l: usize, qkv_w: &mut [f32], h: usize) {
        let r = self.params.rank;
        for &(target, a, b) in &self.ids[l] {
            let mut ab = vec![0.0f32; h * h];
            ops::matmul(
                &mut ab,
                store.get(a),
                store.get(b),
                (h, r, h),
                false,
                false,
                false,
                1,
            );
            let off = target.part() * h;
            for (row, d) in qkv_w.chunks_exact_mut(3 * h).zip(ab.chunks_exact(h)) {
                for (w, v) in row[off..off + h].iter_mut().zip(d) {
                    *w += self.scale * v;
                }
            }
        }
    }
}
