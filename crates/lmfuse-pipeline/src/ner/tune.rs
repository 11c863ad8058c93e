//! The encoder fine-tuned for tagging ([`lmfuse_finetune::fit_tagger`]: a softmax or CRF over
//! each word's first subword), kept as a CRF bundle over the tuned encoder's word vectors, and
//! the tuned tagger's cross-fitted per-tag scores handed to the fusion CRF beside the
//! hand-made features.

use super::{tokens_of, NerModel, NerTrainReport, Prepared, WordEncoder};
use crate::encoders::EncoderChoice;
use crate::finetune::{load_tuned, named_progress, BundleFile, FinetuneBase};
use crate::{Observer, PipelineError, Result};
use lmfuse_crf::{Chain, Crf};
use lmfuse_data::tagged::TaggedSet;
use lmfuse_finetune::{fit_tagger, Decoded, FinetuneParams, TagHead, TagSet, TaggerFit};
use lmfuse_metrics::entity::{evaluate_tags, Reading};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How the encoder is fine-tuned for tagging.
#[derive(Debug, Clone)]
pub struct NerFinetune {
    /// Softmax per word or CRF over the sentence.
    pub head: TagHead,
    /// Epochs, rates, dropout, seed, ... (gradient accumulation, FGM, PGD and LoRA refused).
    pub params: FinetuneParams,
    /// Where the metrics log and the checkpoints of the run go (none: not written); the
    /// cross-fitting's taggers use `fold-K` folders inside it.
    pub run_dir: Option<PathBuf>,
    /// Continue a killed run from the checkpoints in `run_dir` (cross-fitting folds without a
    /// checkpoint start afresh).
    pub resume: bool,
    /// Folds of the cross-fitting that gives the fusion CRF its training scores (at least 2).
    pub folds: usize,
}

impl NerFinetune {
    /// The settings of cross-fitting fold `k`: its own run folder, resumed only where that
    /// folder holds a checkpoint.
    fn for_fold(&self, k: usize) -> NerFinetune {
        let run_dir = self
            .run_dir
            .as_ref()
            .map(|d| d.join(format!("fold-{}", k + 1)));
        let checkpointed = run_dir.as_ref().is_some_and(|d| {
            d.join(lmfuse_finetune::CHECKPOINT_DIR)
                .join("state.json")
                .is_file()
        });
        NerFinetune {
            run_dir,
            resume: self.resume && checkpointed,
            ..self.clone()
        }
    }
}

/// The training set's tags (and `O`), sorted, as the CRF lists them.
fn tag_list(set: &TaggedSet) -> Vec<String> {
    let tags: BTreeSet<&str> = set
        .sentences
        .iter()
        .flat_map(|s| s.tags.iter().map(String::as_str))
        .chain(["O"])
        .collect();
    tags.into_iter().map(String::from).collect()
}

/// Each sentence's tags as indices of `labels` (a tag the training set lacks reads as `O`).
fn tag_indices(set: &TaggedSet, labels: &[String]) -> Vec<Vec<usize>> {
    let index: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let outside = index["O"];
    set.sentences
        .iter()
        .map(|s| {
            s.tags
                .iter()
                .map(|t| index.get(t.as_str()).copied().unwrap_or(outside))
                .collect()
        })
        .collect()
}

/// The tuned encoder loaded as the bundle will record it.
fn tuned_encoder(
    net: &lmfuse_finetune::Network,
    base: &FinetuneBase,
) -> Result<(WordEncoder, Vec<BundleFile>)> {
    let (info, encoder, files) = load_tuned(net, base)?;
    Ok((WordEncoder { info, encoder }, files))
}

impl Prepared {
    /// Fine-tunes `choice`'s encoder for tagging on the training set (choosing the epoch by
    /// dev F1); returns the tuned tagger (its encoder attached by `finish`) and its report.
    /// The tuned encoder, its layer and its dev vectors take the frozen ones' place for the
    /// fusion that may follow ([`Prepared::cross_fit`] gives it its training scores).
    pub(super) fn finetune(
        &mut self,
        choice: &EncoderChoice,
        ft: &NerFinetune,
        observer: &dyn Observer,
    ) -> Result<(NerModel, NerTrainReport)> {
        let started = Instant::now();
        let dev = self.dev.as_ref().ok_or_else(|| {
            PipelineError::Invalid("fine-tuning a tagger needs --dev to choose its epoch".into())
        })?;
        let base = FinetuneBase::load(choice)?;
        let labels = tag_list(&self.train);
        let (net, fit) = tune_on(&base, &labels, (&self.train, dev), ft, observer)?;
        let (encoder, files) = tuned_encoder(&net, &base)?;
        let head = Projection::of(&net);
        let crf = head_crf(&head, labels, ft.head, fit.transitions)?;
        self.tuned_head = Some(head);
        let model = NerModel {
            crf,
            scheme: self.train.scheme,
            types: self.train.entity_types(),
            encoder: None,
            encoder_files: Vec::new(),
            projection: None,
        };
        // The training sentences' scores come from cross-fitting; the tuned encoder's own
        // vectors of them would only be thrown away.
        self.train_vectors = None;
        self.dev_vectors = Some(encoder.vectors(&tokens_of(dev), observer)?);
        let dev_report = model.evaluate_with(dev, self.dev_vectors.as_deref())?;
        self.tuned = Some((encoder, files));
        let report = NerTrainReport {
            features: format!("ft-{}", ft.head),
            train_sentences: self.train.sentences.len(),
            types: model.types.clone(),
            scheme: self.train.scheme,
            dev_f1_by_c2: Vec::new(),
            c2: 0.0,
            fit: model.crf.report().clone(),
            fit_seconds: fit.summary.seconds,
            total_seconds: started.elapsed().as_secs_f64(),
            dev: Some(dev_report),
            finetune: Some(serde_json::to_value(&fit.summary)?),
        };
        Ok((model, report))
    }
}

/// [`fit_tagger`] with its steps shown on a bar and its evaluations as notes.
fn run_tagger(
    net: &mut lmfuse_finetune::Network,
    (ft, chain): (&NerFinetune, &Chain),
    sets: (TagSet<'_>, TagSet<'_>),
    dev_score: &mut dyn FnMut(&[Decoded]) -> f64,
    observer: &dyn Observer,
) -> Result<TaggerFit> {
    let task = observer.task("fine-tuning", 0);
    let names = ("dev token accuracy", "entity F1");
    let mut events = named_progress(task.as_ref(), "fine-tuning", observer, Path::new(""), names);
    let fit = fit_tagger(
        net,
        ft.head,
        chain,
        &ft.params,
        sets,
        dev_score,
        (ft.run_dir.as_deref(), ft.resume),
        &mut events,
    )?;
    task.finish();
    Ok(fit)
}

/// The tuned layer (and transitions) as a CRF over the tuned word vectors.
fn head_crf(
    head: &Projection,
    labels: Vec<String>,
    kind: TagHead,
    transitions: Vec<f32>,
) -> Result<Crf> {
    let l = labels.len();
    let transitions = match kind {
        TagHead::Crf => transitions,
        TagHead::Softmax => vec![0.0; l * l],
    };
    Crf::from_emission_head(
        labels,
        head.dim,
        head.weights.clone(),
        head.bias.clone(),
        transitions,
    )
    .map_err(|e| PipelineError::Invalid(e.to_string()))
}

/// A tuned tagger's linear layer: each word's tag scores from its vector.
#[derive(Debug, Clone)]
pub(super) struct Projection {
    dim: usize,
    /// `tags × dim`.
    weights: Vec<f32>,
    bias: Vec<f32>,
}

const PROJECTION_WEIGHT: &str = "emission.weight";
const PROJECTION_BIAS: &str = "emission.bias";

impl Projection {
    /// The network's layer (its weight is hidden × tags; this one's tags × hidden).
    fn of(net: &lmfuse_finetune::Network) -> Self {
        let (w, b) = net.head_tensors();
        let (h, l) = (net.config().hidden_size, b.len());
        let mut weights = vec![0.0f32; l * h];
        for d in 0..h {
            for t in 0..l {
                weights[t * h + d] = w[d * l + t];
            }
        }
        Self {
            dim: h,
            weights,
            bias: b.to_vec(),
        }
    }

    /// The tag scores of a sentence's word vectors (`words × dim` → `words × tags`).
    pub(super) fn apply(&self, vectors: &[f32]) -> Vec<f32> {
        vectors
            .chunks_exact(self.dim)
            .flat_map(|x| {
                self.weights
                    .chunks_exact(self.dim)
                    .zip(&self.bias)
                    .map(move |(w, b)| b + w.iter().zip(x).map(|(a, v)| a * v).sum::<f32>())
            })
            .collect()
    }

    /// The layer as bundle tensors.
    pub(super) fn tensors(&self) -> Vec<(String, lmfuse_core::Tensor)> {
        let l = self.bias.len();
        vec![
            (
                PROJECTION_WEIGHT.to_string(),
                lmfuse_core::Tensor::f32(vec![l, self.dim], self.weights.clone()),
            ),
            (
                PROJECTION_BIAS.to_string(),
                lmfuse_core::Tensor::f32(vec![l], self.bias.clone()),
            ),
        ]
    }

    /// The layer a bundle holds, if any.
    pub(super) fn from_tensors(
        tensors: &std::collections::BTreeMap<String, lmfuse_core::Tensor>,
    ) -> std::result::Result<Option<Self>, String> {
        let (Some(w), Some(b)) = (tensors.get(PROJECTION_WEIGHT), tensors.get(PROJECTION_BIAS))
        else {
            return Ok(None);
        };
        let (Some(weights), Some(bias)) = (w.as_f32(), b.as_f32()) else {
            return Err("the emission tensors are not f32".into());
        };
        let dim = weights.len() / bias.len().max(1);
        if bias.is_empty() || dim == 0 || weights.len() != dim * bias.len() {
            return Err("the emission tensors disagree in size".into());
        }
        Ok(Some(Self {
            dim,
            weights: weights.to_vec(),
            bias: bias.to_vec(),
        }))
    }
}

/// Fine-tunes a network for `labels` on `train`, choosing the epoch by strict F1 on `dev`.
fn tune_on(
    base: &FinetuneBase,
    labels: &[String],
    (train, dev): (&TaggedSet, &TaggedSet),
    ft: &NerFinetune,
    observer: &dyn Observer,
) -> Result<(lmfuse_finetune::Network, TaggerFit)> {
    let chain = Chain::iob2(labels);
    let read = |set: &TaggedSet| base.encoder.word_windows(&tokens_of(set));
    let (train_windows, dev_windows) = (read(train)?, read(dev)?);
    let (train_tags, dev_tags) = (tag_indices(train, labels), tag_indices(dev, labels));
    let truth: Vec<Vec<String>> = dev.sentences.iter().map(|s| s.tags.clone()).collect();
    let mut dev_score = |decoded: &[Decoded]| {
        let mut predicted: Vec<Vec<String>> = truth
            .iter()
            .map(|t| vec!["O".to_string(); t.len()])
            .collect();
        for (w, words) in dev_windows.iter().zip(decoded) {
            for &(word, tag) in words {
                predicted[w.sentence][word] = labels[tag].clone();
            }
        }
        evaluate_tags(&truth, &predicted, Reading::Strict).map_or(0.0, |r| r.micro.f1)
    };
    let mut net = base.network(labels.len(), ft.params.seed)?;
    let sets = (
        TagSet {
            windows: &train_windows,
            tags: &train_tags,
        },
        TagSet {
            windows: &dev_windows,
            tags: &dev_tags,
        },
    );
    let fit = run_tagger(&mut net, (ft, &chain), sets, &mut dev_score, observer)?;
    Ok((net, fit))
}

impl Prepared {
    /// Cross-fitting for the fusion (after [`Prepared::finetune`]): the training sentences
    /// cut into `ft.folds` folds, each fold's tag scores come from a tagger tuned on the other
    /// folds, so the fusion CRF learns from scores of sentences their tagger never saw (as
    /// every test sentence is); dev's come from the tagger tuned on all. The scores replace
    /// the word vectors.
    pub(super) fn cross_fit(
        &mut self,
        choice: &EncoderChoice,
        ft: &NerFinetune,
        observer: &dyn Observer,
    ) -> Result<()> {
        let (Some(dev), Some(head)) = (self.dev.as_ref(), self.tuned_head.as_ref()) else {
            return Err(PipelineError::Invalid(
                "cross-fitting needs dev and the tuned tagger".into(),
            ));
        };
        let folds = ft.folds;
        let base = FinetuneBase::load(choice)?;
        let labels = tag_list(&self.train);
        let mut scores: Vec<Vec<f32>> = vec![Vec::new(); self.train.sentences.len()];
        for fold in 0..folds {
            let (held, kept): (Vec<usize>, Vec<usize>) =
                (0..scores.len()).partition(|i| i % folds == fold);
            let subset = TaggedSet {
                sentences: kept
                    .iter()
                    .map(|&i| self.train.sentences[i].clone())
                    .collect(),
                scheme: self.train.scheme,
            };
            observer.note(&format!("cross-fitting: fold {} of {folds}", fold + 1));
            let (net, _) = tune_on(&base, &labels, (&subset, dev), &ft.for_fold(fold), observer)?;
            let (encoder, _) = tuned_encoder(&net, &base)?;
            let held_tokens: Vec<Vec<String>> = held
                .iter()
                .map(|&i| self.train.sentences[i].tokens.clone())
                .collect();
            let projection = Projection::of(&net);
            for (&i, v) in held.iter().zip(encoder.vectors(&held_tokens, observer)?) {
                scores[i] = projection.apply(&v);
            }
        }
        let dev_vectors = self.dev_vectors.take().unwrap_or_default();
        self.dev_vectors = Some(dev_vectors.iter().map(|v| head.apply(v)).collect());
        self.train_vectors = Some(scores);
        self.dim = head.bias.len();
        Ok(())
    }
}
