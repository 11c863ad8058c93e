//! What classifies events: anything that gives each text a label and its probability; a saved
//! lmfuse bundle through [`BundleClassifier`].

use std::path::Path;
use std::sync::Arc;

/// A classifier of event texts.
pub trait Classify: Send + Sync {
    /// The labels it can give.
    fn labels(&self) -> Vec<String>;
    /// Each text's most probable label and that label's probability.
    fn classify(&self, texts: &[&str]) -> Result<Vec<(String, f32)>, String>;

    /// [`Classify::classify`] and, when the classifier embeds texts, each text's embedding
    /// (the centroid of drift is measured on them).
    fn classify_embedded(&self, texts: &[&str]) -> Result<Classified, String> {
        Ok(Classified {
            predictions: self.classify(texts)?,
            embeddings: None,
        })
    }
}

/// `classifier`'s [`Classify::classify_embedded`] of `texts`, checked to hold one
/// prediction (and embedding, when there are any) per text.
pub fn classify_checked(classifier: &dyn Classify, texts: &[&str]) -> Result<Classified, String> {
    let out = classifier.classify_embedded(texts)?;
    let n = out.predictions.len();
    let rows = out.embeddings.as_ref().map_or(n, Vec::len);
    if n != texts.len() || rows != texts.len() {
        return Err(format!(
            "{n} predictions and {rows} embeddings for {} texts",
            texts.len()
        ));
    }
    Ok(out)
}

/// Predictions of a batch and, when the classifier embeds, the embeddings (one row per text).
pub struct Classified {
    /// Each text's label and its probability.
    pub predictions: Vec<(String, f32)>,
    /// One embedding per text.
    pub embeddings: Option<Vec<Vec<f32>>>,
}

/// Loads the classifier of a bundle folder (a configured model's bundle or one of its
/// retrained versions).
pub type Loader = dyn Fn(&Path) -> Result<Arc<dyn Classify>, String> + Send + Sync;

/// The [`Loader`] of lmfuse bundles.
pub fn bundle_loader() -> Box<Loader> {
    Box::new(|dir: &Path| Ok(Arc::new(BundleClassifier::load(dir)?) as Arc<dyn Classify>))
}

/// A bundle, loaded once with its encoder (as `lmfuse serve` loads it).
pub struct BundleClassifier {
    backend: lmfuse_pipeline::serve::BundleBackend,
    labels: Vec<String>,
}

impl BundleClassifier {
    /// Loads the classifier bundle in `dir`.
    pub fn load(dir: &Path) -> Result<BundleClassifier, String> {
        let backend = lmfuse_pipeline::serve::BundleBackend::load(dir, None, None)
            .map_err(|e| e.chain_message())?;
        let labels = backend.labels();
        Ok(BundleClassifier { backend, labels })
    }
}

impl Classify for BundleClassifier {
    fn labels(&self) -> Vec<String> {
        self.labels.clone()
    }

    fn classify(&self, texts: &[&str]) -> Result<Vec<(String, f32)>, String> {
        Ok(self.classify_embedded(texts)?.predictions)
    }

    fn classify_embedded(&self, texts: &[&str]) -> Result<Classified, String> {
        let (predictions, embeddings) = self
            .backend
            .predict_with_embeddings(texts)
            .map_err(|e| e.to_string())?;
        let predictions = predictions
            .into_iter()
            .map(|p| {
                let confidence = p.probabilities.get(&p.label).copied().unwrap_or(f32::NAN);
                (p.label, confidence)
            })
            .collect();
        let embeddings = embeddings.map(|e| (0..texts.len()).map(|i| e.row(i).to_vec()).collect());
        Ok(Classified {
            predictions,
            embeddings,
        })
    }
}
