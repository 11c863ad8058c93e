//! The store's tables for learning from the stream: corrected labels (feedback), model
//! versions, and the drift profiles of each version's windows and training data.

use super::db::args;
use super::Tx;
use crate::drift::Profile;
use crate::error::{MonitorError, Result};

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
        let Some(row) = self.row("SELECT seq FROM events WHERE id = ?1", args![id])? else {
            return Err(MonitorError::UnknownEvent(id.to_string()));
        };
        let seq = row.int(0)?;
        let replaced = self.exec(
            "DELETE FROM feedback WHERE seq = ?1 AND model = ?2",
            args![seq, model],
        )?;
        self.exec(
            "INSERT INTO feedback(seq, model, label, time) VALUES(?1, ?2, ?3, ?4)",
            args![seq, model, label, now],
        )?;
        Ok(replaced > 0)
    }

    /// Every corrected label for `model`, in arrival order of the events.
    pub fn feedback(&self, model: &str) -> Result<Vec<Feedback>> {
        let rows = self.rows(
            "SELECT e.id, e.text, f.label FROM feedback f JOIN events e ON e.seq = f.seq \
             WHERE f.model = ?1 ORDER BY f.seq",
            args![model],
        )?;
        rows.iter()
            .map(|r| {
                Ok(Feedback {
                    id: r.text(0)?,
                    text: r.text(1)?,
                    label: r.text(2)?,
                })
            })
            .collect()
    }

    /// Corrections for `model` stored at or after `since` (seconds since the epoch).
    pub fn feedback_since(&self, model: &str, since: i64) -> Result<usize> {
        let row = self.one(
            "SELECT COUNT(*) FROM feedback WHERE model = ?1 AND time >= ?2",
            args![model, since],
        )?;
        Ok(row.count(0)? as usize)
    }

    /// Drift alerts on `model` raised at or after `since` (seconds since the epoch).
    pub fn drift_alerts_since(&self, model: &str, since: i64) -> Result<usize> {
        // The model is read from each alert's body in Rust: the two databases spell JSON
        // access differently, and drift alerts are few.
        let rows = self.rows(
            "SELECT body FROM alerts WHERE rule = 'drift' AND created >= ?1",
            args![since],
        )?;
        let mut n = 0;
        for r in &rows {
            let body: serde_json::Value = serde_json::from_str(&r.text(0)?).unwrap_or_default();
            n += usize::from(body["model"] == model);
        }
        Ok(n)
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
        let version = self
            .one(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE model = ?1",
                args![model],
            )?
            .int(0)?;
        self.exec(
            "INSERT INTO model_versions(model, version, path, promoted, created, report) \
             VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
            args![model, version, path, promoted, now, &report.to_string()],
        )?;
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
        self.exec(
            "UPDATE model_versions SET path = ?3, promoted = ?4, report = ?5 \
             WHERE model = ?1 AND version = ?2",
            args![model, version, path, promoted, &report.to_string()],
        )?;
        Ok(())
    }

    /// Every version of `model`, oldest first.
    pub fn versions(&self, model: &str) -> Result<Vec<ModelVersion>> {
        let rows = self.rows(
            "SELECT version, path, promoted, created, report FROM model_versions \
             WHERE model = ?1 ORDER BY version",
            args![model],
        )?;
        rows.iter()
            .map(|r| {
                let created = r.int(3)?;
                Ok(ModelVersion {
                    model: model.to_string(),
                    version: r.int(0)?,
                    path: r.text(1)?,
                    promoted: r.int(2)? != 0,
                    created,
                    created_at: crate::event::rfc3339(created),
                    report: serde_json::from_str(&r.text(4)?).unwrap_or_default(),
                })
            })
            .collect()
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
        self.exec(
            "INSERT INTO drift(model, version, \"window\", profile) VALUES(?1, ?2, ?3, ?4) \
             ON CONFLICT(model, version, \"window\") DO UPDATE SET profile = excluded.profile",
            args![model, version, window, &json(&merged)],
        )?;
        Ok(())
    }

    /// The drift profile of `model`'s `version` in `window`.
    pub fn drift_profile(&self, model: &str, version: i64, window: i64) -> Result<Option<Profile>> {
        let row = self.row(
            "SELECT profile FROM drift WHERE model = ?1 AND version = ?2 AND \"window\" = ?3",
            args![model, version, window],
        )?;
        profile_of(row)
    }

    /// The newest `limit` drift windows of `model`: `(version, window, profile)`, newest first.
    pub fn drift_windows(&self, model: &str, limit: usize) -> Result<Vec<(i64, i64, Profile)>> {
        let rows = self.rows(
            "SELECT version, \"window\", profile FROM drift WHERE model = ?1 \
             ORDER BY \"window\" DESC, version DESC LIMIT ?2",
            args![model, limit as i64],
        )?;
        rows.iter()
            .map(|r| {
                let profile = serde_json::from_str(&r.text(2)?).unwrap_or_default();
                Ok((r.int(0)?, r.int(1)?, profile))
            })
            .collect()
    }

    /// The training-data profile of `model`'s `version`, once computed.
    pub fn reference(&self, model: &str, version: i64) -> Result<Option<Profile>> {
        let row = self.row(
            "SELECT profile FROM drift_reference WHERE model = ?1 AND version = ?2",
            args![model, version],
        )?;
        profile_of(row)
    }

    /// Records the training-data profile of `model`'s `version`.
    pub fn set_reference(&self, model: &str, version: i64, profile: &Profile) -> Result<()> {
        self.exec(
            "INSERT INTO drift_reference(model, version, profile) VALUES(?1, ?2, ?3) \
             ON CONFLICT(model, version) DO UPDATE SET profile = excluded.profile",
            args![model, version, &json(profile)],
        )?;
        Ok(())
    }
}

fn profile_of(row: Option<super::Row>) -> Result<Option<Profile>> {
    Ok(match row {
        Some(r) => serde_json::from_str(&r.text(0)?).ok(),
        None => None,
    })
}

fn json(profile: &Profile) -> String {
    serde_json::to_string(profile).expect("a profile serialises")
}
