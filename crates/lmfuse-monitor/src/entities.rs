//! Entities named by a model for events that name none (neither the sender nor the
//! configuration's dictionary): an lmfuse NER bundle through [`NerEntities`].

use lmfuse_pipeline::ner::NerModel;
use std::collections::BTreeSet;
use std::path::Path;

/// Names the entities of event texts.
pub trait FindEntities: Send + Sync {
    /// Each text's entity names, sorted, without repeats.
    fn find(&self, texts: &[&str]) -> Result<Vec<Vec<String>>, String>;
}

/// A named-entity bundle: the texts of the entities of the configured types.
pub struct NerEntities {
    model: NerModel,
    types: Vec<String>,
}

impl NerEntities {
    /// Loads the NER bundle in `dir`; `types` (empty: all) must be types it tags.
    pub fn load(dir: &Path, types: &[String]) -> Result<NerEntities, String> {
        let model = NerModel::load(dir)
            .map_err(|e| format!("entity model {}: {}", dir.display(), e.chain_message()))?;
        if let Some(t) = types.iter().find(|t| !model.types().contains(t)) {
            return Err(format!(
                "entity model {}: no type {t:?} (its types: {})",
                dir.display(),
                model.types().join(", ")
            ));
        }
        Ok(NerEntities {
            model,
            types: types.to_vec(),
        })
    }
}

impl FindEntities for NerEntities {
    fn find(&self, texts: &[&str]) -> Result<Vec<Vec<String>>, String> {
        let owned: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let found = self.model.find(&owned).map_err(|e| e.chain_message())?;
        Ok(found
            .into_iter()
            .map(|entities| {
                entities
                    .into_iter()
                    .filter(|e| self.types.is_empty() || self.types.contains(&e.label))
                    .map(|e| e.text.trim().to_string())
                    .filter(|name| !name.is_empty())
                    .collect::<BTreeSet<String>>()
                    .into_iter()
                    .collect()
            })
            .collect())
    }
}
