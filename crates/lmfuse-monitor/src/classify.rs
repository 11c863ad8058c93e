//! What classifies events: anything that gives each text a label and its probability; a saved
//! lmfuse bundle through [`BundleClassifier`].

use lmfuse_server::Backend;
use std::path::Path;

/// A classifier of event texts.
pub trait Classify: Send + Sync {
    /// The labels it can give.
    fn labels(&self) -> Vec<String>;
    /// Each text's most probable label and that label's probability.
    fn classify(&self, texts: &[&str]) -> Result<Vec<(String, f32)>, String>;
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
        let predictions = self.backend.predict(texts).map_err(|e| e.to_string())?;
        Ok(predictions
            .into_iter()
            .map(|p| {
                let confidence = p.probabilities.get(&p.label).copied().unwrap_or(f32::NAN);
                (p.label, confidence)
            })
            .collect())
    }
}
