//! The store's tables for learning from the stream: corrected labels (feedback), model
//! versions, and the drift profiles of each version's windows and training data.

use super::{sql, Tx};
use crate::drift::Profile;
use crate::error::{MonitorError, Result};
use rusqlite::{params, OptionalExtension};

/// A corrected label of one event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Feedback {
    /// The event's id.
    pub id: String,
    /// The event's text.
    pub text: String,
    /// The label it should have.
    pub label: String,
}

/// One version of a configured model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelVersion {
    /// The model's name in the configuration.
    pub model: String,
    /// 1 for the configured bundle, then one more per retrain.
    pub version: i64,
    /// Its bundle folder.
    pub path: String,
    /// Whether it was promoted (the newest promoted version serves).
    pub promoted: bool,
    /// When it was made, seconds since the epoch.
    #[serde(skip)]
    pub created: i64,
    /// When it was made, RFC 3339.
    pub created_at: String,
    /// Its metrics and why it was (or was not) promoted.
    pub report: serde_json::Value,
}

impl Tx<'_> {
    /// Stores `label` as the corrected label of event `id` for `model` (replacing an earlier
    /// correction); whether one was replaced.
    pub fn add_feedback(&self, id: &str, model: &str, label: &str, now: i64) -> Result<bool> {
        let seq: Option<i64> = self
            .tx
            .query_row("SELECT seq FROM events WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(sql(self.path))?;
        let Some(seq) = seq else {
            return Err(MonitorError::UnknownEvent(id.to_string()));
        };
        let replaced = self
            .tx
            .execute(
                "DELETE FROM feedback WHERE seq = ?1 AND model = ?2",
                params![seq, model],
            )
            .map_err(sql(self.path))?;
        self.tx
            .execute(
                "INSERT INTO feedback(seq, model, label, time) VALUES(?1, ?2, ?3, ?4)",
                params![seq, model, label, now],
            )
            .map_err(sql(self.path))?;
        Ok(replaced > 0)
    }

    /// Every corrected label for `model`, in arrival order of the events.
    pub fn feedback(&self, model: &str) -> Result<Vec<Feedback>> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT e.id, e.text, f.label FROM feedback f JOIN events e ON e.seq = f.seq \
                 WHERE f.model = ?1 ORDER BY f.seq",
            )
            .map_err(sql(self.path))?;
        let rows = stmt
            .query_map([model], |r| {
                Ok(Feedback {
                    id: r.get(0)?,
                    text: r.get(1)?,
                    label: r.get(2)?,
                })
            })
            .map_err(sql(self.path))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sql(self.path))
    }

    /// Corrections for `model` stored at or after `since` (seconds since the epoch).
    pub fn feedback_since(&self, model: &str, since: i64) -> Result<usize> {
        self.tx
            .query_row(
                "SELECT COUNT(*) FROM feedback WHERE model = ?1 AND time >= ?2",
                params![model, since],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(sql(self.path))
    }

    /// Drift alerts on `model` raised at or after `since` (seconds since the epoch).
    pub fn drift_alerts_since(&self, model: &str, since: i64) -> Result<usize> {
        self.tx
            .query_row(
                "SELECT COUNT(*) FROM alerts WHERE rule = 'drift' AND created >= ?2 \
                 AND json_extract(body, '$.model') = ?1",
                params![model, since],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(sql(self.path))
    }

    /// Records a new version of `model`; its number.
    pub fn add_version(
        &self,
        model: &str,
        path: &str,
        promoted: bool,
        report: &serde_json::Value,
        now: i64,
    ) -> Result<i64> {
        let version: i64 = self
            .tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE model = ?1",
                [model],
                |r| r.get(0),
            )
            .map_err(sql(self.path))?;
        self.tx
            .execute(
                "INSERT INTO model_versions(model, version, path, promoted, created, report) \
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                params![model, version, path, promoted, now, report.to_string()],
            )
            .map_err(sql(self.path))?;
        Ok(version)
    }

    /// Completes the record of a version added while it was being made.
    pub fn finish_version(
        &self,
        model: &str,
        version: i64,
        path: &str,
        promoted: bool,
        report: &serde_json::Value,
    ) -> Result<()> {
        self.tx
            .execute(
                "UPDATE model_versions SET path = ?3, promoted = ?4, report = ?5 \
                 WHERE model = ?1 AND version = ?2",
                params![model, version, path, promoted, report.to_string()],
            )
            .map_err(sql(self.path))?;
        Ok(())
    }

    /// Every version of `model`, oldest first.
    pub fn versions(&self, model: &str) -> Result<Vec<ModelVersion>> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT version, path, promoted, created, report FROM model_versions \
                 WHERE model = ?1 ORDER BY version",
            )
            .map_err(sql(self.path))?;
        let rows = stmt
            .query_map([model], |r| {
                let report: String = r.get(4)?;
                let created: i64 = r.get(3)?;
                Ok(ModelVersion {
                    model: model.to_string(),
                    version: r.get(0)?,
                    path: r.get(1)?,
                    promoted: r.get(2)?,
                    created,
                    created_at: crate::event::rfc3339(created),
                    report: serde_json::from_str(&report).unwrap_or_default(),
                })
            })
            .map_err(sql(self.path))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sql(self.path))
    }

    /// The newest promoted version of `model`, if any.
    pub fn active_version(&self, model: &str) -> Result<Option<ModelVersion>> {
        Ok(self.versions(model)?.into_iter().rev().find(|v| v.promoted))
    }

    /// Adds `profile` to the drift profile of `model`'s `version` in `window`.
    pub fn add_drift(
        &self,
        model: &str,
        version: i64,
        window: i64,
        profile: &Profile,
    ) -> Result<()> {
        let mut merged = self
            .drift_profile(model, version, window)?
            .unwrap_or_default();
        merged.merge(profile);
        self.tx
            .execute(
                "INSERT OR REPLACE INTO drift(model, version, window, profile) \
                 VALUES(?1, ?2, ?3, ?4)",
                params![model, version, window, json(&merged)],
            )
            .map_err(sql(self.path))?;
        Ok(())
    }

    /// The drift profile of `model`'s `version` in `window`.
    pub fn drift_profile(&self, model: &str, version: i64, window: i64) -> Result<Option<Profile>> {
        let text: Option<String> = self
            .tx
            .query_row(
                "SELECT profile FROM drift WHERE model = ?1 AND version = ?2 AND window = ?3",
                params![model, version, window],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(self.path))?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// The newest `limit` drift windows of `model`: `(version, window, profile)`, newest first.
    pub fn drift_windows(&self, model: &str, limit: usize) -> Result<Vec<(i64, i64, Profile)>> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT version, window, profile FROM drift WHERE model = ?1 \
                 ORDER BY window DESC, version DESC LIMIT ?2",
            )
            .map_err(sql(self.path))?;
        let rows = stmt
            .query_map(params![model, limit as i64], |r| {
                let profile: String = r.get(2)?;
                Ok((r.get(0)?, r.get(1)?, profile))
            })
            .map_err(sql(self.path))?;
        rows.map(|row| {
            let (version, window, profile) = row.map_err(sql(self.path))?;
            Ok((
                version,
                window,
                serde_json::from_str(&profile).unwrap_or_default(),
            ))
        })
        .collect()
    }

    /// The training-data profile of `model`'s `version`, once computed.
    pub fn reference(&self, model: &str, version: i64) -> Result<Option<Profile>> {
        let text: Option<String> = self
            .tx
            .query_row(
                "SELECT profile FROM drift_reference WHERE model = ?1 AND version = ?2",
                params![model, version],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(self.path))?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Records the training-data profile of `model`'s `version`.
    pub fn set_reference(&self, model: &str, version: i64, profile: &Profile) -> Result<()> {
        self.tx
            .execute(
                "INSERT OR REPLACE INTO drift_reference(model, version, profile) \
                 VALUES(?1, ?2, ?3)",
                params![model, version, json(profile)],
            )
            .map_err(sql(self.path))?;
        Ok(())
    }
}

fn json(profile: &Profile) -> String {
    serde_json::to_string(profile).expect("a profile serialises")
}
