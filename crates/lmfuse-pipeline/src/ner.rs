//! Named-entity recognition, beside [`classify`](crate::classify): train a tagger on tagged
//! sentences (CoNLL or JSON Lines spans), evaluate it with seqeval's strict entity scores, save
//! it as a bundle, and tag raw texts into character spans.
//!
//! The tagger is a linear-chain CRF ([`lmfuse_crf`]) over hand-made features, over the
//! encoder's contextual word vectors (first subword, frozen), or over both (the fusion); its L2
//! coefficient is chosen on the dev set when several are given. The encoder can also be
//! fine-tuned for tagging ([`NerFinetune`]: a softmax or CRF layer over each word's first
//! subword, trained end to end), and the tuned tagger's cross-fitted per-tag scores fused with
//! the hand-made features.

mod tune;

use crate::encoders::EncoderChoice;
use crate::{now_rfc3339, Context, Observer, PipelineError, Result, VERSION};
use lmfuse_crf::{Crf, Gazetteer, StoredCrf, Tagged};
use lmfuse_data::tagged::{join_tokens, read_tagged, text_spans, tokenize};
use lmfuse_encoder::SentenceEncoder;
use lmfuse_metrics::entity::{entities, evaluate_tags, Reading};
use lmfuse_train::EncoderInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use lmfuse_crf::{CrfParams, FeatureParams, FitReport};
pub use lmfuse_data::tagged::{from_sequences, TagOptions, TagScheme, TaggedSet};
pub use lmfuse_finetune::{FinetuneParams, TagHead};
pub use lmfuse_metrics::entity::EntityReport;
pub use tune::NerFinetune;
use tune::Projection;

use crate::finetune::BundleFile;

/// The bundle's `task` value for NER models.
pub const TASK: &str = "ner";
const ATTRIBUTES_FILE: &str = "crf_attributes.json";

/// What `train` does: data, how tags are read, the CRF's settings.
#[derive(Debug, Clone)]
pub struct NerTrainSpec {
    /// Training sentences.
    pub train: PathBuf,
    /// Dev sentences: scored after training, and used to choose `c2` among `c2_grid`.
    pub dev: Option<PathBuf>,
    /// How tags are read (scheme, repair).
    pub tags: TagOptions,
    /// CRF settings (its `c2` is replaced by the grid's choice when the grid has several).
    pub crf: CrfParams,
    /// L2 coefficients tried; the one with the best dev micro F1 is kept (needs `dev`).
    pub c2_grid: Vec<f64>,
    /// Gazetteer files: (entity type, file with one phrase per line).
    pub gazetteers: Vec<(String, PathBuf)>,
    /// The encoder whose word vectors the CRF reads beside (or, with `crf.hand_features`
    /// off, instead of) the hand-made features; `None`: hand-made features only.
    pub encoder: Option<EncoderChoice>,
    /// Fine-tune the encoder for tagging first: with `crf.hand_features` off the tuned tagger
    /// is the model; with them on, the CRF reads the hand-made features and the tuned
    /// tagger's cross-fitted per-tag scores (the fusion).
    pub finetune: Option<NerFinetune>,
}

impl NerTrainSpec {
    /// Checks the spec once, before any data is read.
    pub fn check(&self) -> Result<()> {
        self.crf
            .validate()
            .map_err(|e| PipelineError::Invalid(e.to_string()))?;
        if self.c2_grid.len() > 1 && self.dev.is_none() {
            return Err(PipelineError::Invalid(
                "several c2 values need --dev to choose among them".into(),
            ));
        }
        if !self.crf.hand_features && self.encoder.is_none() {
            return Err(PipelineError::Invalid(
                "without hand-made features the CRF needs an encoder's word vectors".into(),
            ));
        }
        if self.finetune.is_some() && (self.encoder.is_none() || self.dev.is_none()) {
            return Err(PipelineError::Invalid(
                "fine-tuning a tagger needs an encoder (--model) and --dev to choose its epoch"
                    .into(),
            ));
        }
        if let Some(ft) = &self.finetune {
            ft.params.check()?;
            if ft.resume && ft.run_dir.is_none() {
                return Err(PipelineError::Invalid("resuming needs --run-dir".into()));
            }
            if ft.folds < 2 {
                return Err(PipelineError::Invalid(format!(
                    "the fusion's cross-fitting needs at least 2 folds, not {}",
                    ft.folds
                )));
            }
        }
        if let Some(bad) = self.c2_grid.iter().find(|c| !(c.is_finite() && **c >= 0.0)) {
            return Err(PipelineError::Invalid(format!(
                "c2 value {bad} is not a finite number ≥ 0"
            )));
        }
        Ok(())
    }
}

/// A trained tagger, ready to tag, score and save.
pub struct NerModel {
    crf: Crf,
    scheme: TagScheme,
    types: Vec<String>,
    encoder: Option<WordEncoder>,
    /// The tuned encoder's model folder, saved inside the bundle (empty for a frozen one).
    encoder_files: Vec<BundleFile>,
    /// The tuned tagger's layer: the CRF reads its per-tag scores of the word vectors instead
    /// of the vectors (the fusion).
    projection: Option<Projection>,
}

impl std::fmt::Debug for NerModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NerModel")
            .field("scheme", &self.scheme)
            .field("types", &self.types)
            .field("encoder", &self.encoder().map(|e| &e.reference))
            .finish_non_exhaustive()
    }
}

/// The encoder whose word vectors a model reads, with its description for the bundle.
struct WordEncoder {
    info: EncoderInfo,
    encoder: SentenceEncoder,
}

impl WordEncoder {
    fn open(choice: &EncoderChoice) -> Result<Self> {
        let files = choice.resolve()?;
        let options = choice.load_options();
        let info = crate::classify::encoder_info(&files, &options)?;
        let encoder = SentenceEncoder::load(&files, &options).context("cannot load the encoder")?;
        Ok(Self { info, encoder })
    }

    /// The encoder a bundle records (or `encoder` in its place), found as classifiers' are
    /// (same weights or refused).
    fn reopen(dir: &Path, info: EncoderInfo, encoder: Option<&str>) -> Result<Self> {
        let files = crate::model::resolve_encoder(Some(dir), &info, encoder)?;
        let options = crate::model::recorded_options(&info);
        let encoder = SentenceEncoder::load(&files, &options).context("cannot load the encoder")?;
        Ok(Self { info, encoder })
    }

    fn vectors(&self, sentences: &[Vec<String>], observer: &dyn Observer) -> Result<Vec<Vec<f32>>> {
        let started = Instant::now();
        let vectors = self
            .encoder
            .encode_words(sentences)
            .context("cannot encode the words")?;
        let words: usize = sentences.iter().map(Vec::len).sum();
        observer.note(&format!(
            "encoded {words} words of {} sentences in {:.1} s",
            sentences.len(),
            started.elapsed().as_secs_f64()
        ));
        Ok(vectors)
    }
}

/// What training did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NerTrainReport {
    /// What the CRF reads: `hand`, `emb` or `hand+emb`.
    pub features: String,
    /// Training sentences.
    pub train_sentences: usize,
    /// Entity types.
    pub types: Vec<String>,
    /// The scheme the training file's tags were in.
    pub scheme: TagScheme,
    /// Dev micro F1 (strict) for each `c2` tried, in grid order.
    pub dev_f1_by_c2: Vec<(f64, f64)>,
    /// The `c2` kept.
    pub c2: f64,
    /// The CRF's fit.
    pub fit: FitReport,
    /// Seconds to fit the kept model (the grid's other fits not counted).
    pub fit_seconds: f64,
    /// Seconds for the whole job.
    pub total_seconds: f64,
    /// The kept model on the dev set.
    pub dev: Option<EntityReport>,
    /// The encoder's fine-tuning for tagging (evaluations, best epoch), when it was tuned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<serde_json::Value>,
}

/// One entity found in a text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundEntity {
    /// First character (Unicode scalar values of the text).
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// Type.
    pub label: String,
    /// The covered text.
    pub text: String,
    /// Mean marginal probability of the entity's tags.
    pub score: f32,
}

fn gazetteer(files: &[(String, PathBuf)]) -> Result<Gazetteer> {
    let mut phrases = Vec::new();
    for (label, path) in files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the gazetteer {}", path.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let chars: Vec<char> = line.chars().collect();
            let tokens = tokenize(line, &[])
                .into_iter()
                .map(|(s, e)| chars[s..e].iter().collect::<String>().to_lowercase())
                .collect();
            phrases.push((label.clone(), tokens));
        }
    }
    Ok(Gazetteer { phrases })
}

/// Reads a tagged file, naming it in the error.
pub fn read_set(path: &Path, tags: TagOptions) -> Result<TaggedSet> {
    Ok(read_tagged(path, tags)?)
}

/// One sentence with the attributes the CRF sees for each token (what `lmfuse ner features`
/// writes, so another CRF toolkit can train on the very same features).
#[derive(Debug, Clone, Serialize)]
pub struct FeatureRow {
    /// Tokens.
    pub tokens: Vec<String>,
    /// IOB2 tags.
    pub tags: Vec<String>,
    /// Attribute strings per token.
    pub features: Vec<Vec<String>>,
}

/// The attributes of every sentence of `set`.
pub fn feature_rows(
    set: &TaggedSet,
    features: &FeatureParams,
    gazetteers: &[(String, PathBuf)],
) -> Result<Vec<FeatureRow>> {
    let gaz = gazetteer(gazetteers)?;
    Ok(set
        .sentences
        .iter()
        .map(|s| FeatureRow {
            features: lmfuse_crf::sentence_attributes(&s.tokens, features, &gaz),
            tokens: s.tokens.clone(),
            tags: s.tags.clone(),
        })
        .collect())
}

fn tokens_of(set: &TaggedSet) -> Vec<Vec<String>> {
    set.sentences.iter().map(|s| s.tokens.clone()).collect()
}

fn pairs(set: &TaggedSet) -> Vec<(&[String], &[String])> {
    set.sentences
        .iter()
        .map(|s| (s.tokens.as_slice(), s.tags.as_slice()))
        .collect()
}

/// The data a run fits on, read once: sets, gazetteer, and the encoder's word vectors when
/// an encoder is given.
struct Prepared {
    train: TaggedSet,
    dev: Option<TaggedSet>,
    gazetteer: Gazetteer,
    encoder: Option<WordEncoder>,
    train_vectors: Option<Vec<Vec<f32>>>,
    dev_vectors: Option<Vec<Vec<f32>>>,
    /// The encoder tuned for tagging and its bundle files; once set, the word vectors above
    /// are its (or its layer's tag scores, once cross-fitted).
    tuned: Option<(WordEncoder, Vec<BundleFile>)>,
    /// The tuned tagger's layer.
    tuned_head: Option<Projection>,
    /// Width of the word vectors above.
    dim: usize,
}

/// Which encoder a fitted model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    Nothing,
    Frozen,
    Tuned,
    /// The tuned encoder through the tuned layer.
    TunedScores,
}

impl Prepared {
    fn read(spec: &NerTrainSpec, skip_frozen: bool, observer: &dyn Observer) -> Result<Self> {
        let train = read_set(&spec.train, spec.tags)?;
        let dev = spec
            .dev
            .as_deref()
            .map(|p| read_set(p, spec.tags))
            .transpose()?;
        Self::from_sets(train, dev, spec, skip_frozen, observer)
    }

    /// The sets read, the gazetteer, the encoder and (unless `skip_frozen`) its frozen word
    /// vectors of train and dev.
    fn from_sets(
        train: TaggedSet,
        dev: Option<TaggedSet>,
        spec: &NerTrainSpec,
        skip_frozen: bool,
        observer: &dyn Observer,
    ) -> Result<Self> {
        let gazetteer = gazetteer(&spec.gazetteers)?;
        let encoder = spec.encoder.as_ref().map(WordEncoder::open).transpose()?;
        // A model that fine-tunes the encoder reads only the tuned vectors.
        let frozen = encoder.as_ref().filter(|_| !skip_frozen);
        let train_vectors = match frozen {
            Some(e) => Some(e.vectors(&tokens_of(&train), observer)?),
            None => None,
        };
        let dev_vectors = match (frozen, &dev) {
            (Some(e), Some(d)) => Some(e.vectors(&tokens_of(d), observer)?),
            _ => None,
        };
        Ok(Self {
            train,
            dev,
            gazetteer,
            dim: encoder.as_ref().map_or(0, |e| e.info.dim),
            encoder,
            train_vectors,
            dev_vectors,
            tuned: None,
            tuned_head: None,
        })
    }

    /// Fits one CRF per `c2` of the grid (with the word vectors when `dense`), keeping the best
    /// on dev (the first on ties). The model returned has no encoder attached yet.
    fn fit_grid(
        &self,
        crf: &CrfParams,
        grid: &[f64],
        dense: bool,
        observer: &dyn Observer,
    ) -> Result<(NerModel, NerTrainReport)> {
        let started = Instant::now();
        let dim = self.dim;
        let mut best: Option<(f64, NerModel, f64, Option<EntityReport>)> = None;
        let mut by_c2 = Vec::new();
        for &c2 in grid {
            let params = CrfParams { c2, ..crf.clone() };
            let task = observer.task(&format!("CRF c2={c2}"), params.max_iter as u64);
            let fit_started = Instant::now();
            let vectors = self
                .train_vectors
                .as_deref()
                .filter(|_| dense)
                .map(|v| (v, dim));
            let fitted = Crf::fit(
                &pairs(&self.train),
                &params,
                self.gazetteer.clone(),
                vectors,
                |_, _| task.inc(1),
            )
            .map_err(|e| PipelineError::Invalid(e.to_string()))?;
            task.finish();
            let seconds = fit_started.elapsed().as_secs_f64();
            let model = NerModel {
                crf: fitted,
                scheme: self.train.scheme,
                types: self.train.entity_types(),
                encoder: None,
                encoder_files: Vec::new(),
                projection: None,
            };
            let dev = match &self.dev {
                Some(d) => {
                    Some(model.evaluate_with(d, self.dev_vectors.as_deref().filter(|_| dense))?)
                }
                None => None,
            };
            let f1 = dev.as_ref().map_or(0.0, |r| r.micro.f1);
            observer.note(&format!(
                "{} c2={c2}: dev F1 {:.2}",
                features_name(&params, dense),
                100.0 * f1
            ));
            by_c2.push((c2, f1));
            if best.as_ref().is_none_or(|b| f1 > b.0) {
                best = Some((f1, model, seconds, dev));
            }
        }
        let (_, model, fit_seconds, dev) = best.expect("the grid has a value");
        let report = NerTrainReport {
            features: features_name(model.crf.params(), dense),
            train_sentences: self.train.sentences.len(),
            types: model.types.clone(),
            scheme: self.train.scheme,
            dev_f1_by_c2: by_c2,
            c2: model.crf.params().c2,
            fit: model.crf.report().clone(),
            fit_seconds,
            total_seconds: started.elapsed().as_secs_f64(),
            dev,
            finetune: None,
        };
        Ok((model, report))
    }

    /// Attaches the encoder a model reads.
    fn finish(&mut self, mut model: NerModel, reads: Reads) -> NerModel {
        match reads {
            Reads::Nothing => {}
            Reads::Frozen => model.encoder = self.encoder.take(),
            Reads::Tuned | Reads::TunedScores => {
                if let Some((encoder, files)) = self.tuned.take() {
                    model.encoder = Some(encoder);
                    model.encoder_files = files;
                }
                if reads == Reads::TunedScores {
                    model.projection = self.tuned_head.take();
                }
            }
        }
        model
    }

    /// Fine-tunes the encoder for tagging (`spec.finetune`), then keeps the tuned tagger, or
    /// with hand-made features the fusion CRF over them and the tagger's cross-fitted scores;
    /// the name of what the model reads says which.
    fn fit_tuned(
        &mut self,
        spec: &NerTrainSpec,
        crf: &CrfParams,
        ft: &NerFinetune,
        observer: &dyn Observer,
    ) -> Result<(NerModel, NerTrainReport)> {
        let choice = spec
            .encoder
            .as_ref()
            .expect("checked: fine-tuning has an encoder");
        let (tagger, tagger_report) = self.finetune(choice, ft, observer)?;
        if !crf.hand_features {
            return Ok((tagger, tagger_report));
        }
        let (model, mut report) = self.fit_fusion(spec, crf, ft, observer)?;
        report.finetune = tagger_report.finetune;
        Ok((model, report))
    }

    /// The fusion (after [`Prepared::finetune`]): the CRF over the hand-made features and the
    /// tuned tagger's cross-fitted scores, `c2` chosen on dev over `spec`'s grid.
    fn fit_fusion(
        &mut self,
        spec: &NerTrainSpec,
        crf: &CrfParams,
        ft: &NerFinetune,
        observer: &dyn Observer,
    ) -> Result<(NerModel, NerTrainReport)> {
        let choice = spec
            .encoder
            .as_ref()
            .expect("checked: fine-tuning has an encoder");
        self.cross_fit(choice, ft, observer)?;
        let hand = CrfParams {
            hand_features: true,
            ..crf.clone()
        };
        let (model, mut report) = self.fit_grid(&hand, &grid_of(spec), true, observer)?;
        report.features = format!("hand+ft-{}", ft.head);
        Ok((model, report))
    }
}

/// `hand`, `emb` or `hand+emb`: what a CRF reads.
fn features_name(params: &CrfParams, dense: bool) -> String {
    match (params.hand_features, dense) {
        (true, true) => "hand+emb",
        (true, false) => "hand",
        (false, _) => "emb",
    }
    .to_string()
}

fn grid_of(spec: &NerTrainSpec) -> Vec<f64> {
    if spec.c2_grid.is_empty() {
        vec![spec.crf.c2]
    } else {
        spec.c2_grid.clone()
    }
}

/// Trains a CRF tagger (choosing `c2` on dev when the grid has several values).
pub fn train(spec: &NerTrainSpec, observer: &dyn Observer) -> Result<(NerModel, NerTrainReport)> {
    spec.check()?;
    let started = Instant::now();
    let prepared = Prepared::read(spec, spec.finetune.is_some(), observer)?;
    let (model, mut report) = fit_prepared(prepared, spec, observer)?;
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok((model, report))
}

/// [`train`] on sentences already read (the Python package's `fit`); `spec`'s `train` and
/// `dev` paths are not read, and `dev` is needed exactly when the grid has several values.
pub fn train_sets(
    train: TaggedSet,
    dev: Option<TaggedSet>,
    spec: &NerTrainSpec,
    observer: &dyn Observer,
) -> Result<(NerModel, NerTrainReport)> {
    let check = NerTrainSpec {
        dev: dev.as_ref().map(|_| PathBuf::from("dev")),
        ..spec.clone()
    };
    check.check()?;
    let started = Instant::now();
    let prepared = Prepared::from_sets(train, dev, spec, spec.finetune.is_some(), observer)?;
    let (model, mut report) = fit_prepared(prepared, spec, observer)?;
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok((model, report))
}

fn fit_prepared(
    mut prepared: Prepared,
    spec: &NerTrainSpec,
    observer: &dyn Observer,
) -> Result<(NerModel, NerTrainReport)> {
    if let Some(ft) = &spec.finetune {
        let (model, report) = prepared.fit_tuned(spec, &spec.crf, ft, observer)?;
        let reads = if spec.crf.hand_features {
            Reads::TunedScores
        } else {
            Reads::Tuned
        };
        return Ok((prepared.finish(model, reads), report));
    }
    let dense = prepared.encoder.is_some();
    let (model, report) = prepared.fit_grid(&spec.crf, &grid_of(spec), dense, observer)?;
    let reads = if dense { Reads::Frozen } else { Reads::Nothing };
    Ok((prepared.finish(model, reads), report))
}

/// Trains the three taggers (hand-made features, the encoder's word vectors, both) on the same
/// data, the vectors computed once, each with `c2` chosen on dev, and with `spec.finetune`
/// also the tuned tagger and the fusion over its cross-fitted scores; returns the best on dev (the
/// simpler on ties, in that order) and every report, best first.
pub fn compare(
    spec: &NerTrainSpec,
    observer: &dyn Observer,
) -> Result<(NerModel, Vec<NerTrainReport>)> {
    spec.check()?;
    if spec.dev.is_none() || spec.encoder.is_none() {
        return Err(PipelineError::Invalid(
            "ner compare ranks on dev: it needs --dev, and an encoder for the emb models".into(),
        ));
    }
    let mut prepared = Prepared::read(spec, false, observer)?;
    let grid = grid_of(spec);
    let mut fitted = Vec::new();
    for (hand, dense) in [(true, false), (false, true), (true, true)] {
        let params = CrfParams {
            hand_features: hand,
            ..spec.crf.clone()
        };
        let reads = if dense { Reads::Frozen } else { Reads::Nothing };
        fitted.push((prepared.fit_grid(&params, &grid, dense, observer)?, reads));
    }
    if let Some(ft) = &spec.finetune {
        let choice = spec.encoder.as_ref().expect("checked above");
        fitted.push((prepared.finetune(choice, ft, observer)?, Reads::Tuned));
        let fusion = prepared.fit_fusion(spec, &spec.crf, ft, observer)?;
        fitted.push((fusion, Reads::TunedScores));
    }
    let f1 = |r: &NerTrainReport| r.dev.as_ref().map_or(0.0, |d| d.micro.f1);
    // Stable: equal dev F1 keeps the simpler model first.
    fitted.sort_by(|a, b| f1(&b.0 .1).total_cmp(&f1(&a.0 .1)));
    let reports = fitted.iter().map(|((_, r), _)| r.clone()).collect();
    let ((best, _), reads) = fitted.swap_remove(0);
    Ok((prepared.finish(best, reads), reports))
}

impl NerModel {
    /// Entity types the model knows.
    pub fn types(&self) -> &[String] {
        &self.types
    }

    /// IOB2 tags and their marginal probabilities, for each tokenised sentence.
    pub fn tag(&self, sentences: &[Vec<String>]) -> Result<Vec<Tagged>> {
        let vectors = self.word_vectors(sentences)?;
        self.tag_with(sentences, vectors.as_deref())
    }

    /// The encoder's word vectors of `sentences`, when the model reads them.
    fn word_vectors(&self, sentences: &[Vec<String>]) -> Result<Option<Vec<Vec<f32>>>> {
        let Some(encoder) = &self.encoder else {
            return Ok(None);
        };
        let vectors = encoder.vectors(sentences, &crate::Silent)?;
        Ok(Some(match &self.projection {
            Some(p) => vectors.iter().map(|v| p.apply(v)).collect(),
            None => vectors,
        }))
    }

    fn tag_with(
        &self,
        sentences: &[Vec<String>],
        vectors: Option<&[Vec<f32>]>,
    ) -> Result<Vec<Tagged>> {
        self.crf
            .predict(sentences, vectors)
            .map_err(|e| PipelineError::Invalid(e.to_string()))
    }

    /// The encoder the model reads, if any.
    pub fn encoder(&self) -> Option<&EncoderInfo> {
        self.encoder.as_ref().map(|e| &e.info)
    }

    /// Strict entity scores on a tagged set.
    pub fn evaluate(&self, set: &TaggedSet) -> Result<EntityReport> {
        let vectors = self.word_vectors(&tokens_of(set))?;
        self.evaluate_with(set, vectors.as_deref())
    }

    /// [`evaluate`](Self::evaluate) with the word vectors already computed.
    fn evaluate_with(&self, set: &TaggedSet, vectors: Option<&[Vec<f32>]>) -> Result<EntityReport> {
        let tokens = tokens_of(set);
        let predicted: Vec<Vec<String>> = self
            .tag_with(&tokens, vectors)?
            .into_iter()
            .map(|p| p.0)
            .collect();
        let truth: Vec<Vec<String>> = set.sentences.iter().map(|s| s.tags.clone()).collect();
        Ok(evaluate_tags(&truth, &predicted, Reading::Strict)?)
    }

    /// The entities of raw texts, as character spans ([`tokenize`] cuts the texts).
    pub fn find(&self, texts: &[String]) -> Result<Vec<Vec<FoundEntity>>> {
        let offsets: Vec<Vec<(usize, usize)>> = texts.iter().map(|t| tokenize(t, &[])).collect();
        let tokens: Vec<Vec<String>> = texts
            .iter()
            .zip(&offsets)
            .map(|(text, offs)| {
                let chars: Vec<char> = text.chars().collect();
                offs.iter()
                    .map(|&(s, e)| chars[s..e].iter().collect())
                    .collect()
            })
            .collect();
        let tagged = self.tag(&tokens)?;
        Ok(texts
            .iter()
            .zip(&offsets)
            .zip(tagged)
            .map(|((text, offs), (tags, scores))| found(text, offs, &tags, &scores))
            .collect())
    }

    /// The entities of tokenised sentences, with the text the tokens make when joined
    /// ([`join_tokens`]: no space between CJK characters).
    pub fn find_in_tokens(
        &self,
        sentences: &[Vec<String>],
    ) -> Result<Vec<(String, Vec<FoundEntity>)>> {
        let tagged = self.tag(sentences)?;
        Ok(sentences
            .iter()
            .zip(tagged)
            .map(|(tokens, (tags, scores))| {
                let (text, offs) = join_tokens(tokens);
                let ents = found(&text, &offs, &tags, &scores);
                (text, ents)
            })
            .collect())
    }
}

fn found(
    text: &str,
    offsets: &[(usize, usize)],
    tags: &[String],
    scores: &[f32],
) -> Vec<FoundEntity> {
    let chars: Vec<char> = text.chars().collect();
    let ents = entities(tags, Reading::Strict);
    let spans = text_spans(&ents, offsets);
    ents.iter()
        .zip(spans)
        .map(|(e, span)| FoundEntity {
            text: chars[span.start..span.end].iter().collect(),
            start: span.start,
            end: span.end,
            label: span.label,
            score: scores[e.start..e.end].iter().sum::<f32>() / (e.end - e.start) as f32,
        })
        .collect()
}

#[derive(Serialize, Deserialize)]
struct NerCard {
    task: String,
    kind: String,
    scheme: TagScheme,
    types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encoder: Option<EncoderInfo>,
    crf: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    report: Option<serde_json::Value>,
}

impl NerModel {
    /// Writes the model as a bundle in `dir` (atomically), with the training report.
    pub fn save(&self, dir: &Path, report: Option<&NerTrainReport>) -> Result<()> {
        let mut stored = self.crf.to_stored();
        if let Some(p) = &self.projection {
            stored.tensors.extend(p.tensors());
        }
        let card = NerCard {
            task: TASK.into(),
            kind: "crf".into(),
            scheme: self.scheme,
            types: self.types.clone(),
            encoder: self.encoder().cloned(),
            crf: stored.card,
            report: report.map(serde_json::to_value).transpose()?,
        };
        let manifest = lmfuse_bundle::Manifest {
            format_version: lmfuse_bundle::PLAIN_VERSION,
            lmfuse_version: VERSION.into(),
            created_at: now_rfc3339(),
            model: serde_json::to_value(card)?,
            files: BTreeMap::new(),
        };
        let json = BTreeMap::from([(
            ATTRIBUTES_FILE.to_string(),
            serde_json::to_value(&stored.attributes)?,
        )]);
        lmfuse_bundle::save_with_files(dir, manifest, &stored.tensors, &json, &self.encoder_files)
            .with_context(|| format!("cannot save the bundle {}", dir.display()))
    }

    /// Loads an NER bundle, refusing a classifier's with a hint.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with_encoder(dir, None)
    }

    /// [`load`](Self::load) with `encoder` (a folder or hub id, same weights) in place of the
    /// encoder the bundle records; ignored when the tagger reads no encoder.
    pub fn load_with_encoder(dir: &Path, encoder: Option<&str>) -> Result<Self> {
        let bundle = lmfuse_bundle::load(dir)
            .with_context(|| format!("cannot load the bundle {}", dir.display()))?;
        if bundle.manifest.model.get("task").and_then(|t| t.as_str()) != Some(TASK) {
            return Err(PipelineError::Invalid(format!(
                "{} is not an NER bundle (a classifier's? use `lmfuse predict`)",
                dir.display()
            )));
        }
        let card: NerCard = serde_json::from_value(bundle.manifest.model.clone())
            .with_context(|| format!("cannot read the NER card of {}", dir.display()))?;
        let attributes: Vec<String> = bundle
            .json
            .get(ATTRIBUTES_FILE)
            .map(|v| serde_json::from_value(v.clone()))
            .transpose()?
            .ok_or_else(|| {
                PipelineError::Invalid(format!("{}: {ATTRIBUTES_FILE} is missing", dir.display()))
            })?;
        let projection = Projection::from_tensors(&bundle.tensors)
            .map_err(|e| PipelineError::Invalid(format!("{}: {e}", dir.display())))?;
        let crf = Crf::from_stored(StoredCrf {
            tensors: bundle.tensors,
            card: card.crf,
            attributes,
        })
        .map_err(|e| PipelineError::Invalid(format!("{}: {e}", dir.display())))?;
        let encoder = card
            .encoder
            .map(|info| WordEncoder::reopen(dir, info, encoder))
            .transpose()?;
        // A tuned encoder travels with the model, so that saving it again keeps it.
        let encoder_files = crate::finetune::read_bundle_files(dir, &bundle.files)?;
        Ok(Self {
            crf,
            scheme: card.scheme,
            types: card.types,
            encoder,
            encoder_files,
            projection,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Silent;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const TRAIN: &str = "Ann\tB-PER\nmet\tO\nBob\tB-PER\nin\tO\nRome\tB-LOC\n.\tO\n\nBob\tB-PER\nlives\tO\nin\tO\nNew\tB-LOC\nYork\tI-LOC\n.\tO\n\nwe\tO\nsaw\tO\nAnn\tB-PER\nLee\tI-PER\nin\tO\nParis\tB-LOC\n";

    #[test]
    fn trains_saves_loads_and_finds_character_spans() {
        let dir = tempfile::tempdir().unwrap();
        let train_path = write(dir.path(), "train.conll", TRAIN);
        let spec = NerTrainSpec {
            train: train_path.clone(),
            dev: Some(train_path),
            tags: TagOptions::default(),
            crf: CrfParams::default(),
            c2_grid: vec![0.01, 1.0],
            gazetteers: Vec::new(),
            encoder: None,
            finetune: None,
        };
        let (model, report) = train(&spec, &Silent).unwrap();
        assert_eq!(report.types, vec!["LOC", "PER"]);
        assert_eq!(report.dev_f1_by_c2.len(), 2);
        let bundle = dir.path().join("ner");
        model.save(&bundle, Some(&report)).unwrap();
        let back = NerModel::load(&bundle).unwrap();
        let found = back
            .find(&["Yesterday Ann met Bob in Rome.".to_string()])
            .unwrap();
        let spans: Vec<(usize, usize, &str, &str)> = found[0]
            .iter()
            .map(|e| (e.start, e.end, e.label.as_str(), e.text.as_str()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (10, 13, "PER", "Ann"),
                (18, 21, "PER", "Bob"),
                (25, 29, "LOC", "Rome")
            ]
        );
    }

    #[test]
    fn a_grid_without_dev_is_refused_before_reading() {
        let spec = NerTrainSpec {
            train: PathBuf::from("/nonexistent"),
            dev: None,
            tags: TagOptions::default(),
            crf: CrfParams::default(),
            c2_grid: vec![0.1, 1.0],
            gazetteers: Vec::new(),
            encoder: None,
            finetune: None,
        };
        let err = train(&spec, &Silent).unwrap_err().to_string();
        assert!(err.contains("need --dev"), "{err}");
    }
}
