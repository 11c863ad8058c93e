//! Cross-encoders: a BERT that reads a query and a passage together and scores the pair, as
//! Hugging Face's `BertForSequenceClassification` does (the `[CLS]` state through the pooler's
//! dense layer and tanh, then the linear classifier). The MS MARCO MiniLM rerankers
//! (`cross-encoder/ms-marco-MiniLM-L6-v2`) ship in this form.

use crate::error::EncoderError;
use crate::weights::WeightFile;
use crate::{LoadOptions, ModelFiles, SentenceEncoder, TokenizedText};
use lmfuse_core::{LongText, Pooling};

/// A dense layer `y = W x + b`, `W` stored `out × in` (PyTorch's `Linear`).
struct Linear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

impl Linear {
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        self.weight
            .chunks_exact(self.inputs)
            .zip(&self.bias)
            .map(|(row, b)| row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>() + b)
            .collect()
    }
}

/// A loaded cross-encoder with one output (the pair's relevance logit).
pub struct CrossEncoder {
    encoder: SentenceEncoder,
    pooler: Linear,
    classifier: Linear,
}

impl CrossEncoder {
    /// Loads the model in `files`: BERT weights with `pooler.dense` and a one-label
    /// `classifier` beside them. `max_seq_length` caps a pair's tokens (default: the model's).
    pub fn load(files: &ModelFiles, max_seq_length: Option<usize>) -> Result<Self, EncoderError> {
        let options = LoadOptions {
            pooling: Some(Pooling::Cls),
            normalize: Some(false),
            max_seq_length,
            prefix: Some(String::new()),
            long_text: LongText::Truncate,
            ..LoadOptions::default()
        };
        let encoder = SentenceEncoder::load(files, &options)?;
        let h = files.config.hidden_size;
        let weights = WeightFile::open(&files.weights_path)?;
        let labels = match weights.stored_shape("classifier.weight")? {
            Some(shape) if shape.len() == 2 && shape[1] == h => shape[0],
            Some(shape) => {
                return Err(EncoderError::TensorShape {
                    name: "classifier.weight".into(),
                    path: files.weights_path.clone(),
                    expected: vec![1, h],
                    actual: shape,
                })
            }
            None => {
                return Err(EncoderError::Unsupported {
                    path: files.weights_path.clone(),
                    message: "no `classifier.weight`: not a cross-encoder (a Hugging Face \
                              BertForSequenceClassification checkpoint)"
                        .into(),
                })
            }
        };
        if labels != 1 {
            return Err(EncoderError::Unsupported {
                path: files.weights_path.clone(),
                message: format!(
                    "the classifier has {labels} labels: a reranker scores a pair with one"
                ),
            });
        }
        let pooler = Linear {
            weight: weights.tensor("pooler.dense.weight", &[h, h])?,
            bias: weights.tensor("pooler.dense.bias", &[h])?,
            inputs: h,
        };
        let classifier = Linear {
            weight: weights.head_tensor("classifier.weight", &[1, h])?,
            bias: weights.head_tensor("classifier.bias", &[1])?,
            inputs: h,
        };
        Ok(CrossEncoder {
            encoder,
            pooler,
            classifier,
        })
    }

    /// The model as the user named it.
    pub fn reference(&self) -> &str {
        self.encoder.reference()
    }

    /// Each pair's tokens as the model reads them.
    pub fn tokenize(&self, pairs: &[(&str, &str)]) -> Result<Vec<TokenizedText>, EncoderError> {
        self.encoder.tokenize_pairs(pairs)
    }

    /// The relevance logit of each (query, passage) pair, in input order (higher: more
    /// relevant; the sigmoid of it is the probability the model was trained to give).
    pub fn score(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>, EncoderError> {
        let tokenized = self.tokenize(pairs)?;
        let cls = self.encoder.encode_tokenized(&tokenized);
        Ok((0..pairs.len())
            .map(|i| {
                let pooled: Vec<f32> = self
                    .pooler
                    .apply(cls.row(i))
                    .into_iter()
                    .map(f32::tanh)
                    .collect();
                self.classifier.apply(&pooled)[0]
            })
            .collect())
    }
}
