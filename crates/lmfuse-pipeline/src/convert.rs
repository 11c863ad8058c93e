//! Converting a classifier bundle to another encoder precision without retraining.

use crate::error::{Context, PipelineError, Result};
use crate::finetune::{read_bundle_files, BundleFile};
use crate::model::Model;
use lmfuse_core::Precision;
use serde::Serialize;
use sha2::Digest;
use std::collections::BTreeMap;
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
    /// Fine-tuned encoders inside the bundle whose weights were stored converted (int8).
    pub stored_converted: usize,
}

/// Writes a copy of the classifier bundle in `dir` to `out` whose encoders run in `precision`
/// unless told otherwise, as each encoder's fingerprint records it. Nothing is retrained: the
/// heads are those trained on the original vectors, as `predict --precision` runs the original
/// bundle. For int8, a fine-tuned encoder inside the bundle is stored converted (int8 linear
/// layers with their scales, as `lmfuse models convert` writes a folder), and its fingerprint
/// names the new weights. Every encoder is checked first to run in `precision` (one stored in
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
    let mut files = read_bundle_files(dir, &bundle.files)?;
    let mut new_weights = BTreeMap::new();
    if precision == Precision::Int8 {
        for encoder in &model.encoders {
            let Some(source) = encoder.files.as_ref().filter(|_| encoder.info.in_bundle) else {
                continue;
            };
            if source.stored_precision != Precision::Int8 {
                let sha = store_int8(dir, source, &mut files)?;
                new_weights.insert(source.weights_sha256.clone(), sha);
            }
        }
    }
    let mut encoders = record_precision(&mut bundle.manifest.model, precision, &new_weights);
    for value in bundle.json.values_mut() {
        encoders += record_precision(value, precision, &new_weights);
    }
    lmfuse_bundle::save_with_files(out, bundle.manifest, &bundle.tensors, &bundle.json, &files)?;
    Ok(ConvertedBundle {
        dir: out.to_path_buf(),
        precision,
        encoders,
        stored_converted: new_weights.len(),
    })
}

/// Replaces the bundle files of the fine-tuned encoder `source` (a folder inside the bundle
/// `dir`) with its int8 conversion; returns the sha256 of the new weights.
fn store_int8(
    dir: &Path,
    source: &lmfuse_encoder::ModelFiles,
    files: &mut Vec<BundleFile>,
) -> Result<String> {
    let (inner, outer) = (source.dir.canonicalize()?, dir.canonicalize()?);
    let folder = inner
        .strip_prefix(&outer)
        .ok()
        .and_then(|p| p.to_str())
        .with_context(|| format!("{} is not inside the bundle", source.dir.display()))?
        .to_string();
    let contents = lmfuse_encoder::int8_folder_contents(source)?;
    let (_, weights) = contents.last().expect("the weights come last");
    let sha = hex::encode(sha2::Sha256::digest(weights));
    files.retain(|(name, _)| !name.starts_with(&format!("{folder}/")));
    files.extend(
        contents
            .into_iter()
            .map(|(name, bytes)| (format!("{folder}/{name}"), bytes)),
    );
    Ok(sha)
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
/// does, and renames weights as `new_weights` maps them; returns how many there were.
fn record_precision(
    value: &mut serde_json::Value,
    precision: Precision,
    new_weights: &BTreeMap<String, String>,
) -> usize {
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
                        let sha = fp["weights_sha256"].as_str().unwrap_or_default();
                        if let Some(new) = new_weights.get(sha) {
                            fp.insert("weights_sha256".into(), new.clone().into());
                        }
                        count += 1;
                    }
                    _ => count += record_precision(child, precision, new_weights),
                }
            }
            count
        }
        serde_json::Value::Array(items) => items
            .iter_mut()
            .map(|v| record_precision(v, precision, new_weights))
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
        let renamed = BTreeMap::from([("cd".to_string(), "ef".to_string())]);
        assert_eq!(record_precision(&mut v, Precision::Int8, &renamed), 2);
        assert_eq!(v["encoder"]["fingerprint"]["precision"], "int8");
        let member = &v["members"][0]["card"]["encoder"]["fingerprint"];
        assert_eq!(member["precision"], "int8");
        assert_eq!(member["weights_sha256"], "ef");
        assert_eq!(v["encoder"]["fingerprint"]["weights_sha256"], "ab");
        assert_eq!(v["members"][1]["fingerprint"], "not an encoder's");
        assert_eq!(
            record_precision(&mut v, Precision::F32, &BTreeMap::new()),
            2
        );
        assert!(v["encoder"]["fingerprint"].get("precision").is_none());
    }
}
