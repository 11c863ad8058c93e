//! A trainable BERT encoder with a classification head: forward pass that keeps its
//! activations, and the matching backward pass.
//!
//! Why not candle: its BERT gives no gradients (its LayerNorm op has no backward pass), and a
//! training step measured 3.7 s against PyTorch's 0.8 s here. This network reuses the
//! inference encoder's packed layout (every batch's tokens in one matrix, no padding) and its
//! kernels, with hand-written backward kernels checked against finite differences.

use crate::lora::{Lora, LoraParams};
use crate::FinetuneError;
use lmfuse_core::{Pooling, SeededRng};
use lmfuse_encoder::{ops, BertConfig, NamedTensor, Span};
use rayon::prelude::*;
use std::collections::HashMap;
use std::ops::Range;

/// Where a tensor sits in the flat parameter vector, and how the optimiser treats it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Name in checkpoints.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// First value in the flat vector.
    pub offset: usize,
    /// Whether weight decay applies (not to biases and LayerNorm).
    pub decay: bool,
    /// 0 for the embeddings, `l + 1` for layer `l`, `layers + 1` for the head: the depth that
    /// layer-wise learning rates scale by.
    pub depth: usize,
    /// Frozen tensors get no gradient and no update.
    pub frozen: bool,
}

impl TensorSpec {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its values' range in the flat vector.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// All parameters in one flat vector, so that the optimiser, gradient clipping and
/// checkpoints work on one slice.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    /// The tensors, in storage order.
    pub specs: Vec<TensorSpec>,
    /// Every value.
    pub values: Vec<f32>,
}

impl ParamStore {
    fn push(
        &mut self,
        name: &str,
        shape: Vec<usize>,
        data: Vec<f32>,
        decay: bool,
        depth: usize,
    ) -> usize {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
        self.specs.push(TensorSpec {
            name: name.to_string(),
            shape,
            offset: self.values.len(),
            decay,
            depth,
            frozen: false,
        });
        self.values.extend_from_slice(&data);
        self.specs.len() - 1
    }

    /// The values of tensor `id`.
    pub fn get(&self, id: usize) -> &[f32] {
        &self.values[self.specs[id].range()]
    }

    /// The id of the tensor called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.name == name)
    }
}

#[derive(Debug, Clone, Copy)]
struct LayerIds {
    qkv_w: usize,
    qkv_b: usize,
    o_w: usize,
    o_b: usize,
    ln1_g: usize,
    ln1_b: usize,
    i_w: usize,
    i_b: usize,
    out_w: usize,
    out_b: usize,
    ln2_g: usize,
    ln2_b: usize,
}

#[derive(Debug, Clone)]
struct Ids {
    word: usize,
    position: usize,
    token_type: usize,
    ln0_g: usize,
    ln0_b: usize,
    layers: Vec<LayerIds>,
    head_w: usize,
    head_b: usize,
}

/// A packed batch: the tokens of every text one after the other.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Segment ids.
    pub types: Vec<u32>,
    /// Where each text's tokens are.
    pub spans: Vec<Span>,
}

impl Batch {
    /// Packs the given token sequences (ids, segment ids).
    pub fn pack<'a>(texts: impl IntoIterator<Item = (&'a [u32], &'a [u32])>) -> Self {
        let mut b = Batch::default();
        for (ids, types) in texts {
            b.spans.push(Span {
                start: b.tokens.len(),
                len: ids.len(),
            });
            b.tokens.extend_from_slice(ids);
            b.types.extend_from_slice(types);
        }
        b
    }
}

/// Dropout during a training forward pass: rate and the generator of its masks.
pub struct Dropout<'a> {
    /// Probability of zeroing a value.
    pub rate: f32,
    /// Source of the masks.
    pub rng: &'a mut SeededRng,
}

/// Applies dropout to `x` in place and returns the mask (0 or `1 / (1 - rate)` a value), or
/// `None` in evaluation mode or at rate 0.
fn dropout(x: &mut [f32], drop: &mut Option<Dropout<'_>>) -> Option<Vec<f32>> {
    let d = drop.as_mut()?;
    dropout_mask(x, d.rate, d.rng)
}

/// Dropout at `rate` with masks from `rng`; `None` at rate 0.
pub(crate) fn dropout_mask(x: &mut [f32], rate: f32, rng: &mut SeededRng) -> Option<Vec<f32>> {
    if rate <= 0.0 {
        return None;
    }
    let keep = 1.0 / (1.0 - rate);
    // 24-bit uniform draws, two per 64-bit number.
    let cut = (rate * (1u32 << 24) as f32) as u32;
    let mut mask = vec![0.0f32; x.len()];
    let mut chunks = mask.chunks_exact_mut(2);
    for pair in &mut chunks {
        let r = rng.next_u64();
        pair[0] = if ((r >> 40) as u32) < cut { 0.0 } else { keep };
        pair[1] = if (((r >> 8) & 0xFF_FFFF) as u32) < cut {
            0.0
        } else {
            keep
        };
    }
    for m in chunks.into_remainder() {
        let r = rng.next_u64();
        *m = if ((r >> 40) as u32) < cut { 0.0 } else { keep };
    }
    for (v, m) in x.iter_mut().zip(&mask) {
        *v *= m;
    }
    Some(mask)
}

pub(crate) fn apply_mask(x: &mut [f32], mask: &Option<Vec<f32>>) {
    if let Some(m) = mask {
        for (v, m) in x.iter_mut().zip(m) {
            *v *= m;
        }
    }
}

/// What one layer's backward pass needs.
struct LayerCache {
    x_in: Vec<f32>,
    qkv: Vec<f32>,
    probs: Vec<f32>,
    mask_probs: Option<Vec<f32>>,
    ctx: Vec<f32>,
    mask_attn: Option<Vec<f32>>,
    x1: Vec<f32>,
    xhat1: Vec<f32>,
    inv1: Vec<f32>,
    pre: Vec<f32>,
    act: Vec<f32>,
    mask_ffn: Option<Vec<f32>>,
    xhat2: Vec<f32>,
    inv2: Vec<f32>,
    lora: Vec<crate::lora::AdapterCache>,
}

/// The activations of a forward pass.
pub struct Forward {
    xhat0: Vec<f32>,
    inv0: Vec<f32>,
    mask0: Option<Vec<f32>>,
    layers: Vec<LayerCache>,
    /// The last layer's output, `tokens × hidden` (the batch's packed layout).
    pub hidden: Vec<f32>,
    /// Pooled text vectors, `texts × hidden`.
    pub pooled: Vec<f32>,
    head_in: Vec<f32>,
    mask_head: Option<Vec<f32>>,
    /// Class scores, `texts × classes`.
    pub logits: Vec<f32>,
}

/// Encoder + linear classification head over the pooled output.
pub struct Network {
    config: BertConfig,
    pooling: Pooling,
    n_classes: usize,
    /// The parameters.
    pub params: ParamStore,
    ids: Ids,
    lora: Option<Lora>,
}

/// Removes the tensor `name` from `map`, checking its shape.
fn take(
    map: &mut HashMap<String, NamedTensor>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, FinetuneError> {
    let t = map
        .remove(name)
        .ok_or_else(|| FinetuneError::Invalid(format!("encoder tensor {name} is missing")))?;
    if t.shape != shape {
        return Err(FinetuneError::Invalid(format!(
            "encoder tensor {name} has shape {:?}, expected {shape:?}",
            t.shape
        )));
    }
    Ok(t.data)
}

/// Row-major transpose of `rows × cols`.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

/// `n` values from N(0, std²) (Box-Muller).
pub(crate) fn normal(rng: &mut SeededRng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1 = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * std
        })
        .collect()
}

impl Network {
    /// Builds the network from encoder weights (as [`lmfuse_encoder::BertModel::export`] gives
    /// them) and a new head for `n_classes`, drawn from N(0, 0.02²) with `seed`.
    pub fn new(
        config: &BertConfig,
        encoder: Vec<NamedTensor>,
        pooling: Pooling,
        n_classes: usize,
        seed: u64,
    ) -> Result<Self, FinetuneError> {
        if !matches!(pooling, Pooling::Mean | Pooling::Cls | Pooling::MeanSqrtLen) {
            return Err(FinetuneError::Invalid(format!(
                "fine-tuning supports mean, cls and mean_sqrt_len pooling, not {pooling}"
            )));
        }
        if n_classes < 2 {
            return Err(FinetuneError::Invalid(format!(
                "need at least 2 classes, got {n_classes}"
            )));
        }
        let (h, inter) = (config.hidden_size, config.intermediate_size);
        let mut by_name: HashMap<String, NamedTensor> =
            encoder.into_iter().map(|t| (t.name.clone(), t)).collect();
        let mut p = ParamStore::default();
        let word = p.push(
            "embeddings.word_embeddings.weight",
            vec![config.vocab_size, h],
            take(
                &mut by_name,
                "embeddings.word_embeddings.weight",
                &[config.vocab_size, h],
            )?,
            true,
            0,
        );
        let position = p.push(
            "embeddings.position_embeddings.weight",
            vec![config.max_position_embeddings, h],
            take(
                &mut by_name,
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            true,
            0,
        );
        let token_type = p.push(
            "embeddings.token_type_embeddings.weight",
            vec![config.type_vocab_size, h],
            take(
                &mut by_name,
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?,
            true,
            0,
        );
        let ln0_g = p.push(
            "embeddings.LayerNorm.weight",
            vec![h],
            take(&mut by_name, "embeddings.LayerNorm.weight", &[h])?,
            false,
            0,
        );
        let ln0_b = p.push(
            "embeddings.LayerNorm.bias",
            vec![h],
            take(&mut by_name, "embeddings.LayerNorm.bias", &[h])?,
            false,
            0,
        );
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let depth = l + 1;
            let pre = format!("encoder.layer.{l}");
            // Linear weights are stored `[in, out]` for `x · W`.
            let linear = |p: &mut ParamStore,
                          by_name: &mut HashMap<String, NamedTensor>,
                          name: &str,
                          out: usize,
                          inp: usize|
             -> Result<(usize, usize), FinetuneError> {
                let w = take(by_name, &format!("{pre}.{name}.weight"), &[out, inp])?;
                let b = take(by_name, &format!("{pre}.{name}.bias"), &[out])?;
                let wi = p.push(
                    &format!("{pre}.{name}.weight"),
                    vec![inp, out],
                    transpose(&w, out, inp),
                    true,
                    depth,
                );
                let bi = p.push(&format!("{pre}.{name}.bias"), vec![out], b, false, depth);
                Ok((wi, bi))
            };
            // Q, K and V side by side: one product.
            let mut qkv_w = vec![0.0f32; h * 3 * h];
            let mut qkv_b = Vec::with_capacity(3 * h);
            for (part, name) in ["query", "key", "value"].iter().enumerate() {
                let w = take(
                    &mut by_name,
                    &format!("{pre}.attention.self.{name}.weight"),
                    &[h, h],
                )?;
                let wt = transpose(&w, h, h);
                for i in 0..h {
                    qkv_w[i * 3 * h + part * h..i * 3 * h + (part + 1) * h]
                        .copy_from_slice(&wt[i * h..(i + 1) * h]);
                }
                qkv_b.extend(take(
                    &mut by_name,
                    &format!("{pre}.attention.self.{name}.bias"),
                    &[h],
                )?);
            }
            let qkv_w_id = p.push(
                &format!("{pre}.attention.self.qkv.weight"),
                vec![h, 3 * h],
                qkv_w,
                true,
                depth,
            );
            let qkv_b_id = p.push(
                &format!("{pre}.attention.self.qkv.bias"),
                vec![3 * h],
                qkv_b,
                false,
                depth,
            );
            let (o_w, o_b) = linear(&mut p, &mut by_name, "attention.output.dense", h, h)?;
            let ln1_g = p.push(
                &format!("{pre}.attention.output.LayerNorm.weight"),
                vec![h],
                take(
                    &mut by_name,
                    &format!("{pre}.attention.output.LayerNorm.weight"),
                    &[h],
                )?,
                false,
                depth,
            );
            let ln1_b = p.push(
                &format!("{pre}.attention.output.LayerNorm.bias"),
                vec![h],
                take(
                    &mut by_name,
                    &format!("{pre}.attention.output.LayerNorm.bias"),
                    &[h],
                )?,
                false,
                depth,
            );
            let (i_w, i_b) = linear(&mut p, &mut by_name, "intermediate.dense", inter, h)?;
            let (out_w, out_b) = linear(&mut p, &mut by_name, "output.dense", h, inter)?;
            let ln2_g = p.push(
                &format!("{pre}.output.LayerNorm.weight"),
                vec![h],
                take(
                    &mut by_name,
                    &format!("{pre}.output.LayerNorm.weight"),
                    &[h],
                )?,
                false,
                depth,
            );
            let ln2_b = p.push(
                &format!("{pre}.output.LayerNorm.bias"),
                vec![h],
                take(&mut by_name, &format!("{pre}.output.LayerNorm.bias"), &[h])?,
                false,
                depth,
            );
            layers.push(LayerIds {
                qkv_w: qkv_w_id,
                qkv_b: qkv_b_id,
                o_w,
                o_b,
                ln1_g,
                ln1_b,
                i_w,
                i_b,
                out_w,
                out_b,
                ln2_g,
                ln2_b,
            });
        }
        let depth = config.num_hidden_layers + 1;
        let mut rng = SeededRng::new(seed);
        let head_w = p.push(
            "classifier.weight",
            vec![h, n_classes],
            normal(&mut rng, h * n_classes, 0.02),
            true,
            depth,
        );
        let head_b = p.push(
            "classifier.bias",
            vec![n_classes],
            vec![0.0; n_classes],
            false,
            depth,
        );
        Ok(Self {
            config: config.clone(),
            pooling,
            n_classes,
            params: p,
            ids: Ids {
                word,
                position,
                token_type,
                ln0_g,
                ln0_b,
                layers,
                head_w,
                head_b,
            },
            lora: None,
        })
    }

    /// The encoder's configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Number of classes of the head.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// The pooling of the head's input.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Freezes the embeddings (`embeddings`) and the lowest `layers` transformer layers.
    pub fn freeze(&mut self, embeddings: bool, layers: usize) {
        for s in &mut self.params.specs {
            if (s.depth == 0 && embeddings) || (s.depth >= 1 && s.depth <= layers) {
                s.frozen = true;
            }
        }
    }

    /// Adds LoRA adapters and freezes every encoder weight: only the adapters and the head
    /// train.
    pub fn add_lora(&mut self, params: &LoraParams, seed: u64) -> Result<(), FinetuneError> {
        params.check()?;
        let last = self.config.num_hidden_layers + 1;
        for s in &mut self.params.specs {
            if s.depth < last {
                s.frozen = true;
            }
        }
        let (h, inter) = (self.config.hidden_size, self.config.intermediate_size);
        self.lora = Some(Lora::new(
            &mut self.params,
            params,
            self.config.num_hidden_layers,
            h,
            inter,
            seed,
            |p, name, shape, data, depth| p.push(name, shape, data, true, depth),
        ));
        Ok(())
    }

    /// The LoRA adapters, if any.
    pub fn lora(&self) -> Option<&Lora> {
        self.lora.as_ref()
    }

    /// The flat id ranges of the head's tensors.
    pub fn head_tensors(&self) -> (&[f32], &[f32]) {
        (
            self.params.get(self.ids.head_w),
            self.params.get(self.ids.head_b),
        )
    }

    /// The ranges of the linear head's weight (`hidden × classes`) and bias in the flat vector.
    pub(crate) fn head_ranges(&self) -> (Range<usize>, Range<usize>) {
        (
            self.params.specs[self.ids.head_w].range(),
            self.params.specs[self.ids.head_b].range(),
        )
    }

    /// The range of the word-embedding matrix in the flat vector (for adversarial training).
    pub fn word_embeddings_range(&self) -> Range<usize> {
        self.params.specs[self.ids.word].range()
    }

    /// Runs the network; with `drop`, in training mode (dropout on the embeddings, after each
    /// attention and feed-forward block, and on the head's input).
    pub fn forward(&self, batch: &Batch, mut drop: Option<Dropout<'_>>, threads: usize) -> Forward {
        let c = &self.config;
        let (h, inter) = (c.hidden_size, c.intermediate_size);
        let heads = c.num_attention_heads;
        let eps = c.layer_norm_eps as f32;
        let t = batch.tokens.len();
        let p = &self.params;
        let ids = &self.ids;

        let mut x = vec![0.0f32; t * h];
        let (word, pos, ty) = (p.get(ids.word), p.get(ids.position), p.get(ids.token_type));
        let offset = c.position_offset();
        for span in &batch.spans {
            for i in 0..span.len {
                let row = span.start + i;
                let out = &mut x[row * h..(row + 1) * h];
                let w = &word[batch.tokens[row] as usize * h..][..h];
                let ps = &pos[(offset + i) * h..][..h];
                let tt = &ty[batch.types[row] as usize * h..][..h];
                for j in 0..h {
                    out[j] = w[j] + ps[j] + tt[j];
                }
            }
        }
        let mut xhat0 = vec![0.0; t * h];
        let mut inv0 = vec![0.0; t];
        ops::layer_norm_train(
            &mut x,
            &mut xhat0,
            &mut inv0,
            p.get(ids.ln0_g),
            p.get(ids.ln0_b),
            eps,
            threads,
        );
        let mask0 = dropout(&mut x, &mut drop);

        let prob_total: usize = batch.spans.iter().map(|s| heads * s.len * s.len).sum();

        let mut layers = Vec::with_capacity(ids.layers.len());
        for (l, li) in ids.layers.iter().enumerate() {
            let x_in = x.clone();
            let mut qkv = vec![0.0f32; t * 3 * h];
            crate::kernels_fill(&mut qkv, p.get(li.qkv_b));
            ops::matmul(
                &mut qkv,
                &x_in,
                p.get(li.qkv_w),
                (t, h, 3 * h),
                false,
                false,
                true,
                threads,
            );
            let mut lora_cache = Vec::new();
            if let Some(lora) = &self.lora {
                let rng = drop.as_mut().map(|d| &mut *d.rng);
                lora.forward_qkv(p, l, &x_in, &mut qkv, t, h, threads, rng, &mut lora_cache);
            }
            let mut ctx = vec![0.0f32; t * h];
            let mut probs = vec![0.0f32; prob_total];
            // Attention dropout: one mask over every sequence's probabilities.
            let mask_probs = match drop.as_mut() {
                Some(d) if d.rate > 0.0 => {
                    let mut ones = vec![1.0f32; prob_total];
                    dropout_mask(&mut ones, d.rate, d.rng)
                }
                _ => None,
            };
            {
                let mut pieces = Vec::with_capacity(batch.spans.len());
                let mut ctx_rest = ctx.as_mut_slice();
                let mut prob_rest = probs.as_mut_slice();
                let mut prob_at = 0;
                for s in &batch.spans {
                    let plen = heads * s.len * s.len;
                    let (c_piece, c_tail) = ctx_rest.split_at_mut(s.len * h);
                    let (p_piece, p_tail) = prob_rest.split_at_mut(plen);
                    ctx_rest = c_tail;
                    prob_rest = p_tail;
                    let m = mask_probs.as_ref().map(|m| &m[prob_at..prob_at + plen]);
                    prob_at += plen;
                    pieces.push((
                        &qkv[s.start * 3 * h..(s.start + s.len) * 3 * h],
                        c_piece,
                        p_piece,
                        m,
                        s.len,
                    ));
                }
                let max_len = batch.spans.iter().map(|s| s.len).max().unwrap_or(0);
                type Piece<'a> = (
                    &'a [f32],
                    &'a mut [f32],
                    &'a mut [f32],
                    Option<&'a [f32]>,
                    usize,
                );
                let run = |(q, c, pr, m, len): Piece<'_>, scratch: &mut Vec<f32>| {
                    ops::attention_train(q, c, pr, m, len, h, heads, scratch)
                };
                if threads > 1 {
                    pieces.into_par_iter().for_each_init(
                        || vec![0.0f32; max_len * max_len],
                        |sc, piece| run(piece, sc),
                    );
                } else {
                    let mut scratch = vec![0.0f32; max_len * max_len];
                    for piece in pieces {
                        run(piece, &mut scratch);
                    }
                }
            }
            let mut a = vec![0.0f32; t * h];
            crate::kernels_fill(&mut a, p.get(li.o_b));
            ops::matmul(
                &mut a,
                &ctx,
                p.get(li.o_w),
                (t, h, h),
                false,
                false,
                true,
                threads,
            );
            let mask_attn = dropout(&mut a, &mut drop);
            ops::add_into(&mut a, &x_in);
            let mut xhat1 = vec![0.0; t * h];
            let mut inv1 = vec![0.0; t];
            ops::layer_norm_train(
                &mut a,
                &mut xhat1,
                &mut inv1,
                p.get(li.ln1_g),
                p.get(li.ln1_b),
                eps,
                threads,
            );
            let x1 = a;

            let mut pre = vec![0.0f32; t * inter];
            crate::kernels_fill(&mut pre, p.get(li.i_b));
            ops::matmul(
                &mut pre,
                &x1,
                p.get(li.i_w),
                (t, h, inter),
                false,
                false,
                true,
                threads,
            );
            let mut act = pre.clone();
            ops::activate(c.hidden_act, &mut act, threads);
            let mut o = vec![0.0f32; t * h];
            crate::kernels_fill(&mut o, p.get(li.out_b));
            ops::matmul(
                &mut o,
                &act,
                p.get(li.out_w),
                (t, inter, h),
                false,
                false,
                true,
                threads,
            );
            let mask_ffn = dropout(&mut o, &mut drop);
            ops::add_into(&mut o, &x1);
            let mut xhat2 = vec![0.0; t * h];
            let mut inv2 = vec![0.0; t];
            ops::layer_norm_train(
                &mut o,
                &mut xhat2,
                &mut inv2,
                p.get(li.ln2_g),
                p.get(li.ln2_b),
                eps,
                threads,
            );
            x = o;
            layers.push(LayerCache {
                x_in,
                qkv,
                probs,
                mask_probs,
                ctx,
                mask_attn,
                x1,
                xhat1,
                inv1,
                pre,
                act,
                mask_ffn,
                xhat2,
                inv2,
                lora: lora_cache,
            });
        }

        let n = batch.spans.len();
        let mut pooled = vec![0.0f32; n * h];
        for (s, out) in batch.spans.iter().zip(pooled.chunks_exact_mut(h)) {
            match self.pooling {
                Pooling::Cls => out.copy_from_slice(&x[s.start * h..(s.start + 1) * h]),
                _ => {
                    for row in x[s.start * h..(s.start + s.len) * h].chunks_exact(h) {
                        ops::add_into(out, row);
                    }
                    let div = self.pool_divisor(s.len);
                    for v in out.iter_mut() {
                        *v /= div;
                    }
                }
            }
        }
        let mut head_in = pooled.clone();
        let mask_head = dropout(&mut head_in, &mut drop);
        let k = self.n_classes;
        let mut logits = vec![0.0f32; n * k];
        crate::kernels_fill(&mut logits, p.get(ids.head_b));
        ops::matmul(
            &mut logits,
            &head_in,
            p.get(ids.head_w),
            (n, h, k),
            false,
            false,
            true,
            1,
        );
        Forward {
            xhat0,
            inv0,
            mask0,
            layers,
            hidden: x,
            pooled,
            head_in,
            mask_head,
            logits,
        }
    }

    fn pool_divisor(&self, len: usize) -> f32 {
        match self.pooling {
            Pooling::MeanSqrtLen => (len as f32).sqrt(),
            _ => len as f32,
        }
    }
}

/// Runs LayerNorm backward on `dx` in place and adds the parameter gradients into `grads`
/// where those tensors train.
#[allow(clippy::too_many_arguments)]
fn layer_norm_back(
    params: &ParamStore,
    grads: &mut [f32],
    (g_id, b_id): (usize, usize),
    dx: &mut [f32],
    xhat: &[f32],
    inv: &[f32],
    threads: usize,
) {
    let gamma = params.get(g_id);
    let n = gamma.len();
    let (mut dg, mut db) = (vec![0.0f32; n], vec![0.0f32; n]);
    ops::layer_norm_backward(dx, xhat, inv, gamma, &mut dg, &mut db, threads);
    let (g_spec, b_spec) = (&params.specs[g_id], &params.specs[b_id]);
    if !g_spec.frozen {
        ops::add_into(&mut grads[g_spec.range()], &dg);
    }
    if !b_spec.frozen {
        ops::add_into(&mut grads[b_spec.range()], &db);
    }
}

impl Network {
    /// Backward pass from `dlogits`, the loss gradient with respect to the logits
    /// (`texts × classes`): adds the gradient of every trainable tensor into `grads` (laid out
    /// as the parameters). Frozen tensors get nothing, and the pass stops below the lowest
    /// trainable tensor. Returns the gradient with respect to the pooled vectors.
    pub fn backward(
        &self,
        batch: &Batch,
        fwd: &Forward,
        dlogits: &[f32],
        grads: &mut [f32],
        threads: usize,
    ) -> Vec<f32> {
        let c = &self.config;
        let (h, inter, heads) = (c.hidden_size, c.intermediate_size, c.num_attention_heads);
        let p = &self.params;
        let ids = &self.ids;
        let n = batch.spans.len();
        let k = self.n_classes;
        let t = batch.tokens.len();
        let spec = |id: usize| &p.specs[id];

        if !spec(ids.head_w).frozen {
            ops::matmul(
                &mut grads[spec(ids.head_w).range()],
                &fwd.head_in,
                dlogits,
                (h, n, k),
                true,
                false,
                true,
                1,
            );
        }
        if !spec(ids.head_b).frozen {
            ops::sum_rows_into(dlogits, &mut grads[spec(ids.head_b).range()]);
        }
        let mut dpooled = vec![0.0f32; n * h];
        ops::matmul(
            &mut dpooled,
            dlogits,
            p.get(ids.head_w),
            (n, k, h),
            false,
            true,
            false,
            1,
        );
        apply_mask(&mut dpooled, &fwd.mask_head);
        self.backward_from_pooled(batch, fwd, &dpooled, grads, threads);
        let _ = (inter, heads, t);
        dpooled
    }

    /// Backward pass from the gradient with respect to the pooled vectors (`texts × hidden`)
    /// through the encoder; adds into `grads` as [`Network::backward`] does.
    pub fn backward_from_pooled(
        &self,
        batch: &Batch,
        fwd: &Forward,
        dpooled: &[f32],
        grads: &mut [f32],
        threads: usize,
    ) {
        let h = self.config.hidden_size;
        let mut dx = vec![0.0f32; batch.tokens.len() * h];
        for (s, dp) in batch.spans.iter().zip(dpooled.chunks_exact(h)) {
            match self.pooling {
                Pooling::Cls => dx[s.start * h..(s.start + 1) * h].copy_from_slice(dp),
                _ => {
                    let div = self.pool_divisor(s.len);
                    for row in dx[s.start * h..(s.start + s.len) * h].chunks_exact_mut(h) {
                        for (d, g) in row.iter_mut().zip(dp) {
                            *d = g / div;
                        }
                    }
                }
            }
        }
        self.backward_from_hidden(batch, fwd, dx, grads, threads);
    }

    /// Backward pass from `dx`, the gradient with respect to the last layer's output
    /// (`tokens × hidden`, as [`Forward::hidden`]) through the encoder; adds into `grads` as
    /// [`Network::backward`] does.
    pub fn backward_from_hidden(
        &self,
        batch: &Batch,
        fwd: &Forward,
        mut dx: Vec<f32>,
        grads: &mut [f32],
        threads: usize,
    ) {
        let c = &self.config;
        let (h, inter, heads) = (c.hidden_size, c.intermediate_size, c.num_attention_heads);
        let p = &self.params;
        let ids = &self.ids;
        let t = batch.tokens.len();
        let spec = |id: usize| &p.specs[id];
        let n_layers = ids.layers.len();
        let Some(lowest) = p.specs.iter().filter(|s| !s.frozen).map(|s| s.depth).min() else {
            return;
        };
        if lowest > n_layers {
            return;
        }
        let mut dact = vec![0.0f32; t * inter];
        let mut dctx = vec![0.0f32; t * h];
        let mut dqkv = vec![0.0f32; t * 3 * h];
        for l in (0..n_layers).rev() {
            let li = ids.layers[l];
            let lc = &fwd.layers[l];
            // x2 = LN(x1 + drop(act · Wout + bout))
            layer_norm_back(
                p,
                grads,
                (li.ln2_g, li.ln2_b),
                &mut dx,
                &lc.xhat2,
                &lc.inv2,
                threads,
            );
            let mut dout = dx.clone();
            apply_mask(&mut dout, &lc.mask_ffn);
            if !spec(li.out_w).frozen {
                ops::matmul(
                    &mut grads[spec(li.out_w).range()],
                    &lc.act,
                    &dout,
                    (inter, t, h),
                    true,
                    false,
                    true,
                    threads,
                );
            }
            if !spec(li.out_b).frozen {
                ops::sum_rows_into(&dout, &mut grads[spec(li.out_b).range()]);
            }
            ops::matmul(
                &mut dact,
                &dout,
                p.get(li.out_w),
                (t, h, inter),
                false,
                true,
                false,
                threads,
            );
            ops::activate_backward(c.hidden_act, &lc.pre, &mut dact, threads);
            if !spec(li.i_w).frozen {
                ops::matmul(
                    &mut grads[spec(li.i_w).range()],
                    &lc.x1,
                    &dact,
                    (h, t, inter),
                    true,
                    false,
                    true,
                    threads,
                );
            }
            if !spec(li.i_b).frozen {
                ops::sum_rows_into(&dact, &mut grads[spec(li.i_b).range()]);
            }
            ops::matmul(
                &mut dx,
                &dact,
                p.get(li.i_w),
                (t, inter, h),
                false,
                true,
                true,
                threads,
            );

            // x1 = LN(x_in + drop(ctx · Wo + bo))
            layer_norm_back(
                p,
                grads,
                (li.ln1_g, li.ln1_b),
                &mut dx,
                &lc.xhat1,
                &lc.inv1,
                threads,
            );
            let mut da = dx.clone();
            apply_mask(&mut da, &lc.mask_attn);
            if !spec(li.o_w).frozen {
                ops::matmul(
                    &mut grads[spec(li.o_w).range()],
                    &lc.ctx,
                    &da,
                    (h, t, h),
                    true,
                    false,
                    true,
                    threads,
                );
            }
            if !spec(li.o_b).frozen {
                ops::sum_rows_into(&da, &mut grads[spec(li.o_b).range()]);
            }
            ops::matmul(
                &mut dctx,
                &da,
                p.get(li.o_w),
                (t, h, h),
                false,
                true,
                false,
                threads,
            );

            // Attention, one sequence at a time.
            {
                let mut pieces = Vec::with_capacity(batch.spans.len());
                let mut rest = dqkv.as_mut_slice();
                let mut prob_at = 0;
                for s in &batch.spans {
                    let (piece, tail) = rest.split_at_mut(s.len * 3 * h);
                    rest = tail;
                    let plen = heads * s.len * s.len;
                    pieces.push((
                        &lc.qkv[s.start * 3 * h..(s.start + s.len) * 3 * h],
                        &lc.probs[prob_at..prob_at + plen],
                        lc.mask_probs.as_ref().map(|m| &m[prob_at..prob_at + plen]),
                        &dctx[s.start * h..(s.start + s.len) * h],
                        piece,
                        s.len,
                    ));
                    prob_at += plen;
                }
                let max_len = batch.spans.iter().map(|s| s.len).max().unwrap_or(0);
                type Piece<'a> = (
                    &'a [f32],
                    &'a [f32],
                    Option<&'a [f32]>,
                    &'a [f32],
                    &'a mut [f32],
                    usize,
                );
                let run = |(q, pr, m, dc, dq, len): Piece<'_>, scratch: &mut Vec<f32>| {
                    ops::attention_backward(q, pr, m, dc, dq, len, h, heads, scratch)
                };
                if threads > 1 {
                    pieces.into_par_iter().for_each_init(
                        || vec![0.0f32; 2 * max_len * max_len],
                        |s, piece| run(piece, s),
                    );
                } else {
                    let mut scratch = vec![0.0f32; 2 * max_len * max_len];
                    for piece in pieces {
                        run(piece, &mut scratch);
                    }
                }
            }
            if let Some(lora) = &self.lora {
                lora.backward_qkv(
                    p, l, &lc.x_in, &dqkv, &lc.lora, &mut dx, grads, t, h, threads,
                );
            }
            if !spec(li.qkv_w).frozen {
                ops::matmul(
                    &mut grads[spec(li.qkv_w).range()],
                    &lc.x_in,
                    &dqkv,
                    (h, t, 3 * h),
                    true,
                    false,
                    true,
                    threads,
                );
            }
            if !spec(li.qkv_b).frozen {
                ops::sum_rows_into(&dqkv, &mut grads[spec(li.qkv_b).range()]);
            }
            if lowest > l {
                // Nothing below this layer trains.
                return;
            }
            ops::matmul(
                &mut dx,
                &dqkv,
                p.get(li.qkv_w),
                (t, 3 * h, h),
                false,
                true,
                true,
                threads,
            );
        }

        // Embeddings.
        apply_mask(&mut dx, &fwd.mask0);
        layer_norm_back(
            p,
            grads,
            (ids.ln0_g, ids.ln0_b),
            &mut dx,
            &fwd.xhat0,
            &fwd.inv0,
            threads,
        );
        let offset = self.config.position_offset();
        for (id, index_of) in [(ids.word, 0usize), (ids.position, 1), (ids.token_type, 2)] {
            if spec(id).frozen {
                continue;
            }
            let g = &mut grads[spec(id).range()];
            for s in &batch.spans {
                for i in 0..s.len {
                    let row = s.start + i;
                    let at = match index_of {
                        0 => batch.tokens[row] as usize,
                        1 => offset + i,
                        _ => batch.types[row] as usize,
                    };
                    ops::add_into(&mut g[at * h..(at + 1) * h], &dx[row * h..(row + 1) * h]);
                }
            }
        }
    }

    /// The encoder's weights under their Hugging Face names in PyTorch layout, LoRA adapters
    /// merged in: what [`lmfuse_encoder::BertModel::load`] reads.
    pub fn export_encoder(&self) -> Vec<NamedTensor> {
        let c = &self.config;
        let (h, inter) = (c.hidden_size, c.intermediate_size);
        let p = &self.params;
        let ids = &self.ids;
        let mut out = Vec::new();
        let plain = |out: &mut Vec<NamedTensor>, id: usize| {
            let s = &p.specs[id];
            out.push(NamedTensor::new(
                &s.name,
                s.shape.clone(),
                p.get(id).to_vec(),
            ));
        };
        for id in [ids.word, ids.position, ids.token_type, ids.ln0_g, ids.ln0_b] {
            plain(&mut out, id);
        }
        for (l, li) in ids.layers.iter().enumerate() {
            let pre = format!("encoder.layer.{l}");
            let mut qkv = p.get(li.qkv_w).to_vec();
            if let Some(lora) = &self.lora {
                lora.merge_qkv(p, l, &mut qkv, h);
            }
            let qkv_b = p.get(li.qkv_b);
            for (part, name) in ["query", "key", "value"].iter().enumerate() {
                let w: Vec<f32> = (0..h)
                    .flat_map(|i| {
                        qkv[i * 3 * h + part * h..i * 3 * h + (part + 1) * h]
                            .iter()
                            .copied()
                    })
                    .collect();
                out.push(NamedTensor::new(
                    &format!("{pre}.attention.self.{name}.weight"),
                    vec![h, h],
                    transpose(&w, h, h),
                ));
                out.push(NamedTensor::new(
                    &format!("{pre}.attention.self.{name}.bias"),
                    vec![h],
                    qkv_b[part * h..(part + 1) * h].to_vec(),
                ));
            }
            for (w_id, b_id, name, inp, o) in [
                (li.o_w, li.o_b, "attention.output.dense", h, h),
                (li.i_w, li.i_b, "intermediate.dense", h, inter),
                (li.out_w, li.out_b, "output.dense", inter, h),
            ] {
                out.push(NamedTensor::new(
                    &format!("{pre}.{name}.weight"),
                    vec![o, inp],
                    transpose(p.get(w_id), inp, o),
                ));
                out.push(NamedTensor::new(
                    &format!("{pre}.{name}.bias"),
                    vec![o],
                    p.get(b_id).to_vec(),
                ));
            }
            for id in [li.ln1_g, li.ln1_b, li.ln2_g, li.ln2_b] {
                plain(&mut out, id);
            }
        }
        out
    }
}
