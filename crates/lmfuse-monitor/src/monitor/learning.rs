//! The monitor's side of learning from the stream: model versions and their hot reload,
//! drift against each version's training data, and corrected labels (feedback).

use super::{Active, ModelOutput, Monitor};
use crate::classify::{classify_checked, Classify, Loader};
use crate::config::{ModelConfig, MonitorConfig};
use crate::detect::{Alert, Series};
use crate::drift::{DriftFigures, Profile};
use crate::error::{MonitorError, Result};
use crate::event::{id_of, now_secs, objects_of, rfc3339};
use crate::retrain::{retrain, RetrainReport, RetrainSpec};
use crate::store::{ModelVersion, Pending, Store, Tx, ALL};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The rule name of drift alerts (no configured rule may take it).
pub const DRIFT_RULE: &str = "drift";

/// What a `POST /feedback` stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct FeedbackReport {
    /// Corrections stored.
    pub stored: usize,
    /// Of those, corrections that replaced an earlier one for the same event and model.
    pub replaced: usize,
}

/// A configured model: the version serving and every version kept.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelStatus {
    /// Its name.
    pub name: String,
    /// The version serving.
    pub serving: i64,
    /// Its labels.
    pub labels: Vec<String>,
    /// Corrected labels stored for it.
    pub feedback: usize,
    /// Every version, oldest first.
    pub versions: Vec<ModelVersion>,
}

/// Records the configured bundle of `model` as a promoted version when the database has
/// none from this bundle folder yet (a changed configuration serves its new bundle); the
/// version serving now.
pub(super) fn register_configured(tx: &mut Tx<'_>, model: &ModelConfig) -> Result<ModelVersion> {
    let path = model.bundle.display().to_string();
    let versions = tx.versions(&model.name)?;
    let configured = versions
        .iter()
        .rev()
        .find(|v| v.report["source"] == "configuration");
    if configured.is_none_or(|v| v.path != path) {
        let report = json!({"source": "configuration"});
        tx.add_version(&model.name, &path, true, &report, now_secs())?;
    }
    Ok(tx
        .active_version(&model.name)?
        .expect("a promoted version was just recorded or existed"))
}

/// The serving version of `model`, loaded: the newest promoted one that loads. A retrained
/// version that fails to load is marked so (`load_error` in its report, no longer promoted)
/// and the version before it serves; the configured bundle failing is an error.
pub(super) fn load_serving(
    config: &MonitorConfig,
    store: &Mutex<Store>,
    loader: &Loader,
    model: &ModelConfig,
) -> Result<Active> {
    loop {
        let version = store
            .lock()
            .expect("store lock")
            .transaction(|tx| register_configured(tx, model))?;
        match activate(config, store, loader, version.clone()) {
            Ok(active) => return Ok(active),
            Err(e) if version.report["source"] == "configuration" => return Err(e),
            Err(e) => demote(store, &version, &e)?,
        }
    }
}

/// Records that `version` failed to load, so that it no longer serves.
fn demote(store: &Mutex<Store>, version: &ModelVersion, error: &MonitorError) -> Result<()> {
    let mut report = version.report.clone();
    report["load_error"] = error.to_string().into();
    store.lock().expect("store lock").transaction(|tx| {
        tx.finish_version(
            &version.model,
            version.version,
            &version.path,
            false,
            &report,
        )
    })
}

/// Loads `version` and its drift reference (computed from the model's training data once
/// per version, then read from the store). The store is locked only to read and write the
/// reference, so events are acknowledged while a model loads.
pub(super) fn activate(
    config: &MonitorConfig,
    store: &Mutex<Store>,
    loader: &Loader,
    version: ModelVersion,
) -> Result<Active> {
    let failed = |message: String| MonitorError::Classify {
        model: version.model.clone(),
        message,
    };
    let classifier = loader(Path::new(&version.path)).map_err(|m| {
        failed(format!(
            "version {} ({}): {m}",
            version.version, version.path
        ))
    })?;
    let model = config
        .models
        .iter()
        .find(|m| m.name == version.model)
        .expect("versions are of configured models");
    let lock = || store.lock().expect("store lock");
    let stored = lock().read(|tx| tx.reference(&model.name, version.version))?;
    let reference = match (stored, &model.train) {
        (Some(p), _) => Some(p),
        (None, None) => None,
        (None, Some(train)) => {
            let p = reference_profile(&*classifier, train, config.batch).map_err(failed)?;
            lock().transaction(|tx| tx.set_reference(&model.name, version.version, &p))?;
            Some(p)
        }
    };
    Ok(Active {
        name: version.model,
        version: version.version,
        classifier,
        reference,
        cache: Arc::new(Mutex::new(super::cache::TextCache::new(config.cache_texts))),
    })
}

/// The profile of the texts of the file at `path` as `classifier` sees them.
pub fn reference_profile(
    classifier: &dyn Classify,
    path: &Path,
    batch: usize,
) -> std::result::Result<Profile, String> {
    let (texts, _) = lmfuse_pipeline::data::read_unlabelled(path, None, "text", &[])
        .map_err(|e| format!("training data {}: {}", path.display(), e.chain_message()))?;
    let mut profile = Profile::default();
    for chunk in texts.chunks(batch.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let out = classify_checked(classifier, &refs)?;
        for (i, (label, confidence)) in out.predictions.iter().enumerate() {
            let embedding = out.embeddings.as_ref().map(|e| e[i].as_slice());
            profile.add(label, *confidence, embedding);
        }
    }
    Ok(profile)
}

impl Monitor {
    /// Loads the models whose serving version changed (a retrain, perhaps by another
    /// process, promoted one); events keep being acknowledged meanwhile, and the next batch
    /// is classified by the new version. Whether any model changed.
    pub fn refresh_models(&self) -> Result<bool> {
        let serving: Vec<(String, i64)> = self
            .models
            .read()
            .expect("models lock")
            .iter()
            .map(|m| (m.name.clone(), m.version))
            .collect();
        let mut changed = false;
        for (i, (name, version)) in serving.into_iter().enumerate() {
            let newest = self
                .store
                .lock()
                .expect("store lock")
                .read(|tx| tx.active_version(&name))?;
            let Some(newest) = newest.filter(|n| n.version != version) else {
                continue;
            };
            // A version that fails to load is demoted (the one serving stays) and named once.
            let active = activate(&self.config, &self.store, &*self.loader, newest.clone())
                .or_else(|e| demote(&self.store, &newest, &e).and(Err(e)))?;
            self.models.write().expect("models lock")[i] = active;
            changed = true;
        }
        Ok(changed)
    }

    /// One batch's additions to the drift profiles: per model, version and drift window.
    pub(super) fn drift_deltas(
        &self,
        pending: &[Pending],
        outputs: &[ModelOutput],
    ) -> BTreeMap<(usize, i64), Profile> {
        let size = self.config.drift.window_secs;
        let mut deltas: BTreeMap<(usize, i64), Profile> = BTreeMap::new();
        for (m, out) in outputs.iter().enumerate() {
            for (i, p) in pending.iter().enumerate() {
                let window = p.time.div_euclid(size) * size;
                let (label, confidence) = &out.labels[i];
                let embedding = out.embeddings.as_ref().map(|e| e[i].as_slice());
                deltas
                    .entry((m, window))
                    .or_default()
                    .add(label, *confidence, embedding);
            }
        }
        deltas
    }

    /// Adds a batch's drift profiles and raises an alert for each figure of a touched window
    /// that passes its threshold when it did not in the window before (drift alerts its
    /// onset; the figures of every window stay in [`Monitor::drift`]).
    pub(super) fn judge_drift(
        &self,
        tx: &Tx<'_>,
        outputs: &[ModelOutput],
        deltas: &BTreeMap<(usize, i64), Profile>,
    ) -> Result<Vec<Alert>> {
        let mut alerts = Vec::new();
        for (&(m, window), delta) in deltas {
            let active = &outputs[m].active;
            tx.add_drift(&active.name, active.version, window, delta)?;
            let passed = self.passed_in(tx, active, window)?;
            if passed.is_empty() {
                continue;
            }
            let before = self.passed_in(tx, active, window - self.config.drift.window_secs)?;
            for (measure, value, threshold, n) in passed {
                if before.iter().all(|b| b.0 != measure) {
                    alerts.push(self.drift_alert(active, window, (measure, value, threshold), n));
                }
            }
        }
        Ok(alerts)
    }

    /// The figures of `active`'s `window` past their thresholds, `(name, value, threshold,
    /// events)`; none without a reference or below `drift.min_count` events.
    fn passed_in(
        &self,
        tx: &Tx<'_>,
        active: &Active,
        window: i64,
    ) -> Result<Vec<(&'static str, f64, f64, u64)>> {
        let Some(reference) = &active.reference else {
            return Ok(Vec::new());
        };
        let Some(profile) = tx.drift_profile(&active.name, active.version, window)? else {
            return Ok(Vec::new());
        };
        if profile.n < self.config.drift.min_count {
            return Ok(Vec::new());
        }
        let figures = profile.against(reference);
        Ok(self
            .passed(&figures)
            .into_iter()
            .map(|(name, value, threshold)| (name, value, threshold, profile.n))
            .collect())
    }

    /// The figures past their thresholds: `(name, value, threshold)`.
    fn passed(&self, f: &DriftFigures) -> Vec<(&'static str, f64, f64)> {
        let d = &self.config.drift;
        [
            ("psi_labels", Some(f.psi_labels), d.psi),
            ("psi_confidence", Some(f.psi_confidence), d.psi),
            ("centroid_distance", f.centroid_distance, d.centroid),
        ]
        .into_iter()
        .filter_map(|(name, value, threshold)| Some((name, value?, threshold)))
        .filter(|(_, value, threshold)| value > threshold)
        .collect()
    }

    fn drift_alert(
        &self,
        active: &Active,
        window: i64,
        (measure, value, threshold): (&'static str, f64, f64),
        count: u64,
    ) -> Alert {
        let now = now_secs();
        Alert {
            id: format!(
                "{DRIFT_RULE}/{}/v{}/{measure}/{window}",
                active.name, active.version
            ),
            rule: DRIFT_RULE.to_string(),
            metric: measure,
            model: Some(active.name.clone()),
            label: None,
            series: Series {
                entity: ALL.to_string(),
                topic: ALL.to_string(),
            },
            window,
            window_start: rfc3339(window),
            window_end: rfc3339(window + self.config.drift.window_secs),
            value,
            baseline: None,
            score: value,
            threshold,
            count,
            created: now,
            created_at: rfc3339(now),
        }
    }

    /// Drift per model: the newest `limit` windows' figures against the serving version's
    /// training data, newest first.
    pub fn drift(&self, limit: usize) -> Result<Value> {
        let models = self.models.read().expect("models lock").clone();
        let mut store = self.store.lock().expect("store lock");
        let mut out = serde_json::Map::new();
        for m in models {
            let windows = store.read(|tx| tx.drift_windows(&m.name, limit))?;
            let rows: Vec<Value> = windows
                .into_iter()
                .map(|(version, window, profile)| {
                    let figures = m
                        .reference
                        .as_ref()
                        .filter(|_| version == m.version)
                        .map(|r| profile.against(r));
                    let drifted = figures.as_ref().map(|f| {
                        profile.n >= self.config.drift.min_count && !self.passed(f).is_empty()
                    });
                    json!({"version": version, "window": window,
                           "window_start": rfc3339(window), "n": profile.n,
                           "labels": profile.labels, "figures": figures,
                           "drifted": drifted})
                })
                .collect();
            out.insert(
                m.name.clone(),
                json!({"serving": m.version, "has_reference": m.reference.is_some(),
                       "thresholds": {"psi": self.config.drift.psi,
                                      "centroid": self.config.drift.centroid,
                                      "min_count": self.config.drift.min_count},
                       "windows": rows}),
            );
        }
        Ok(Value::Object(out))
    }

    /// Stores the corrected labels of a request body: `{"id", "label", "model"?}` objects
    /// (`model` may be left out when one model is configured). All are checked first; one bad
    /// correction (an unknown event, model or label) refuses the request.
    pub fn feedback(&self, body: &[u8]) -> Result<FeedbackReport> {
        let mut checked = Vec::new();
        for (position, value) in objects_of(body, "corrections")? {
            let correction = self.correction(&position, value)?;
            checked.push((position, correction));
        }
        let now = now_secs();
        self.store.lock().expect("store lock").transaction(|tx| {
            let mut report = FeedbackReport::default();
            for (position, (id, model, label)) in &checked {
                let replaced = tx
                    .add_feedback(id, model, label, now)
                    .map_err(|e| match e {
                        MonitorError::UnknownEvent(_) => MonitorError::Feedback {
                            position: position.clone(),
                            field: "id".into(),
                            message: format!("no event has the id {id:?}"),
                        },
                        other => other,
                    })?;
                report.stored += 1;
                report.replaced += usize::from(replaced);
            }
            Ok(report)
        })
    }

    /// One correction, checked: `(event id, model, label)`.
    fn correction(&self, position: &str, value: Value) -> Result<(String, String, String)> {
        let bad = |field: &str, message: String| MonitorError::Feedback {
            position: position.to_string(),
            field: field.to_string(),
            message,
        };
        let Value::Object(o) = value else {
            return Err(bad("(correction)", "must be a JSON object".into()));
        };
        if let Some(k) = o
            .keys()
            .find(|k| !["id", "label", "model"].contains(&k.as_str()))
        {
            return Err(bad(k, "unknown field (expected id, label, model)".into()));
        }
        let id = id_of(o.get("id").cloned()).map_err(|(field, message)| bad(field, message))?;
        let models = self.models.read().expect("models lock");
        let model = match (o.get("model"), models.as_slice()) {
            (Some(Value::String(name)), _) => models.iter().find(|m| &m.name == name),
            (None, [only]) => Some(only),
            (None, _) => return Err(bad("model", "missing (more than one model)".into())),
            (Some(_), _) => return Err(bad("model", "must be a string".into())),
        }
        .ok_or_else(|| bad("model", format!("no model is named {:?}", o["model"])))?;
        let labels = model.classifier.labels();
        let label = match o.get("label") {
            Some(Value::String(l)) if labels.contains(l) => l.clone(),
            Some(Value::String(l)) => {
                let known = labels.join(", ");
                return Err(bad(
                    "label",
                    format!("{l:?} is not a label of {:?} ({known})", model.name),
                ));
            }
            _ => return Err(bad("label", "missing or not a string".into())),
        };
        Ok((id, model.name.clone(), label))
    }

    /// The models whose retrain schedule is due now: enough corrections since their newest
    /// version, and its period passed or a drift alert raised since.
    pub fn retrains_due(&self) -> Result<Vec<String>> {
        let now = now_secs();
        let mut due = Vec::new();
        let mut store = self.store.lock().expect("store lock");
        for m in &self.config.models {
            let Some(schedule) = &m.retrain else {
                continue;
            };
            let is_due = store.read(|tx| {
                let versions = tx.versions(&m.name)?;
                let since = versions.last().map_or(0, |v| v.created);
                if tx.feedback_since(&m.name, since)? < schedule.min_feedback {
                    return Ok(false);
                }
                let period = schedule
                    .every_secs
                    .is_some_and(|every| now - since >= every);
                // Drift alerts its onset once per serving version: after a refused
                // challenger, the drift of the version still serving counts.
                let serving = versions
                    .iter()
                    .rev()
                    .find(|v| v.promoted)
                    .map_or(0, |v| v.created);
                Ok(period || (schedule.on_drift && tx.drift_alerts_since(&m.name, serving)? > 0))
            })?;
            if is_due {
                due.push(m.name.clone());
            }
        }
        Ok(due)
    }

    /// Retrains the models whose schedule is due (see [`Monitor::retrains_due`]), one after
    /// the other, each with the defaults of `lmfuse monitor retrain`; a promoted version
    /// serves from the next batch. Each retrain's report or error.
    pub fn retrain_due(&self, on: &dyn lmfuse_pipeline::Observer) -> Vec<Result<RetrainReport>> {
        let db = self.store.lock().expect("store lock").database().clone();
        let due = match self.retrains_due() {
            Ok(due) => due,
            Err(e) => return vec![Err(e)],
        };
        due.into_iter()
            .map(|model| {
                let outcome = retrain(&self.config, &db, &RetrainSpec::new(model), on);
                self.notify();
                outcome
            })
            .collect()
    }

    /// Every configured model: the version serving, its labels and all its versions.
    pub fn models(&self) -> Result<Vec<ModelStatus>> {
        let models = self.models.read().expect("models lock").clone();
        let mut store = self.store.lock().expect("store lock");
        models
            .into_iter()
            .map(|m| {
                let (versions, feedback) =
                    store.read(|tx| Ok((tx.versions(&m.name)?, tx.feedback_since(&m.name, 0)?)))?;
                Ok(ModelStatus {
                    labels: m.classifier.labels(),
                    name: m.name,
                    serving: m.version,
                    feedback,
                    versions,
                })
            })
            .collect()
    }
}
