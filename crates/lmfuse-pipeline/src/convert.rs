//! Converting a classifier bundle to another encoder precision without retraining.

use crate::error::{Context, PipelineError, Result};
use crate::model::Model;
use lmfuse_core::Precision;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What [`convert_bundle`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertedBundle {
    /// The new bundle's folder.
    pub dir: PathBuf,
    /// The precision its encoders now run in by default.
    pub precision: Precision,
    /// How many encoder records were changed (a classifier's, each ensemble member's).
    pub encoders: usize,
}

/// Writes a copy of the classifier bundle in `dir` to `out` whose encoders run in `precision`
/// unless told otherwise, as each encoder's fingerprint records it. Nothing is retrained: the
/// heads are those trained on the original vectors, exactly as `predict --precision` runs the
/// original bundle. Every encoder is checked first to run in `precision` (an encoder stored in
/// int8 runs in int8 only); `out` must be another folder, and is written atomically.
pub fn convert_bundle(dir: &Path, out: &Path, precision: Precision) -> Result<ConvertedBundle> {
    if same_folder(dir, out) {
        return Err(PipelineError::Invalid(format!(
            "{}: write the converted bundle to another folder (the original stays as it is)",
            out.display()
        )));
    }
    let model = Model::load_in(dir, None, Some(precision))?;
    for encoder in &model.encoders {
        if let Some(files) = &encoder.files {
            files.run_precision(Some(precision))?;
        }
    }
    let mut bundle = lmfuse_bundle::load(dir)
        .with_context(|| format!("cannot load the bundle {}", dir.display()))?;
    let mut encoders = record_precision(&mut bundle.manifest.model, precision);
    for value in bundle.json.values_mut() {
        encoders += record_precision(value, precision);
    }
    let files = bundle
        .files
        .iter()
        .map(|name| {
            let path = dir.join(name);
            std::fs::read(&path)
                .with_context(|| format!("cannot read {}", path.display()))
                .map(|bytes| (name.clone(), bytes))
        })
        .collect::<Result<Vec<_>>>()?;
    lmfuse_bundle::save_with_files(out, bundle.manifest, &bundle.tensors, &bundle.json, &files)?;
    Ok(ConvertedBundle {
        dir: out.to_path_buf(),
        precision,
        encoders,
    })
}

/// Whether `a` and `b` name the same existing folder.
fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Sets the precision of every encoder fingerprint in `value` (an object under a
/// `fingerprint` key that names weights), left out for f32 as the fingerprint's serde form
/// does; returns how many there were.
fn record_precision(value: &mut serde_json::Value, precision: Precision) -> usize {
    match value {
        serde_json::Value::Object(map) => {
            let mut count = 0;
            for (key, child) in map.iter_mut() {
                match child {
                    serde_json::Value::Object(fp)
                        if key == "fingerprint" && fp.contains_key("weights_sha256") =>
                    {
                        match precision {
                            Precision::F32 => fp.remove("precision"),
                            other => fp.insert("precision".into(), other.as_str().into()),
                        };
                        count += 1;
                    }
                    _ => count += record_precision(child, precision),
                }
            }
            count
        }
        serde_json::Value::Array(items) => items
            .iter_mut()
            .map(|v| record_precision(v, precision))
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fingerprint_is_found_and_f32_is_left_out() {
        let mut v = serde_json::json!({
            "encoder": {"fingerprint": {"weights_sha256": "ab", "pooling": "mean"}},
            "members": [
                {"card": {"encoder": {"fingerprint": {"weights_sha256": "cd"}}}},
                {"fingerprint": "not an encoder's"}
            ]
        });
        assert_eq!(record_precision(&mut v, Precision::Int8), 2);
        assert_eq!(v["encoder"]["fingerprint"]["precision"], "int8");
        assert_eq!(
            v["members"][0]["card"]["encoder"]["fingerprint"]["precision"],
            "int8"
        );
        assert_eq!(v["members"][1]["fingerprint"], "not an encoder's");
        assert_eq!(record_precision(&mut v, Precision::F32), 2);
        assert!(v["encoder"]["fingerprint"].get("precision").is_none());
    }
}
