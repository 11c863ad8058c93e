//! The monitor's configuration file (TOML): window, models, entity dictionary, alert rules and
//! sinks. Read and checked once ([`MonitorConfig::load`]); every error names the field.

use crate::duration::parse_seconds;
use crate::error::{MonitorError, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// The file it was read from (`(inline)` for text given directly).
    pub path: PathBuf,
    /// Length of an aggregation window, seconds.
    pub window_secs: i64,
    /// How far past the wall clock an event's time may be, seconds.
    pub max_future_secs: i64,
    /// Largest request body accepted by `POST /events`, bytes.
    pub max_body_bytes: usize,
    /// Events classified per batch.
    pub batch: usize,
    /// Recent texts whose predictions each model keeps, so a repeated text is classified
    /// once (0: none).
    pub cache_texts: usize,
    /// Where versions made by retraining are kept (`monitor.models_dir`; unset: beside a
    /// SQLite database, and required with PostgreSQL).
    pub models_dir: Option<PathBuf>,
    /// The classifiers, in file order.
    pub models: Vec<ModelConfig>,
    /// Entity name → lower-case aliases looked for in texts of events that name no entity.
    pub entities: BTreeMap<String, Vec<String>>,
    /// Alert rules.
    pub rules: Vec<Rule>,
    /// Where alerts go.
    pub sinks: Vec<SinkConfig>,
    /// How drift is measured and when it alerts.
    pub drift: DriftConfig,
    /// A NER bundle naming the entities of events that name none and match no dictionary
    /// entry.
    pub entity_model: Option<EntityModelConfig>,
}

/// The NER bundle that names entities.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityModelConfig {
    /// Its folder (relative paths are taken from the configuration file's folder).
    pub bundle: PathBuf,
    /// The entity types kept (empty: all).
    pub types: Vec<String>,
}

/// Drift against each model's training data: measured per drift window, alerting when a
/// figure passes its threshold once the window holds `min_count` events.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    /// Length of a drift window, seconds (default one day).
    pub window_secs: i64,
    /// Fewest events in a window before its figures are judged.
    pub min_count: u64,
    /// Population stability index of predicted labels or of confidence above which a
    /// window has drifted (0.25 is the usual "significant shift").
    pub psi: f64,
    /// Centroid distance ([`crate::drift::DriftFigures::centroid_distance`]: the squared
    /// move of the mean embedding over the training data's total variance) above which a
    /// window has drifted.
    pub centroid: f64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            window_secs: 86_400,
            min_count: 200,
            psi: 0.25,
            centroid: 0.1,
        }
    }
}

/// One classifier.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Its name in rules, counts and predictions.
    pub name: String,
    /// Its bundle folder (relative paths are taken from the configuration file's folder).
    pub bundle: PathBuf,
    /// Whether its label is the stream's topic (at most one model).
    pub topic: bool,
    /// Its labelled training data: the reference of drift, and what a retrain starts from.
    pub train: Option<PathBuf>,
    /// Its labelled test set, on which a retrain compares challenger and champion.
    pub test: Option<PathBuf>,
    /// When the running monitor retrains it by itself (none: only on demand).
    pub retrain: Option<RetrainSchedule>,
}

/// When a running monitor retrains a model by itself: once `min_feedback` corrections arrived
/// since its last version, and `every` has passed since that version or a drift alert on it
/// was raised since (with `on_drift`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetrainSchedule {
    /// Seconds between retrains (none: only on drift).
    pub every_secs: Option<i64>,
    /// Retrain after a drift alert.
    pub on_drift: bool,
    /// Corrections needed since the last version.
    pub min_feedback: usize,
}

/// What a rule watches in each window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// The number of events.
    Volume,
    /// The share of events with the rule's label.
    Share,
}

impl Metric {
    /// Its name in configuration files and alerts.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Volume => "volume",
            Metric::Share => "share",
        }
    }
}

/// How a rule decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Detector {
    /// The window's share of the label is above a fixed level.
    Above(f64),
    /// The window's value is `z` standard deviations above an exponentially weighted mean of
    /// the earlier windows (weight `alpha` on the newest).
    Ewma {
        /// Threshold in standard deviations.
        z: f64,
        /// Weight of the newest window in the mean and variance.
        alpha: f64,
    },
    /// A one-sided CUSUM of standardised values (slack `k`, decision level `h`, both in
    /// standard deviations), over the same baseline as [`Detector::Ewma`].
    Cusum {
        /// Slack.
        k: f64,
        /// Decision level.
        h: f64,
        /// Weight of the newest window in the baseline.
        alpha: f64,
    },
}

/// One alert rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// What is measured.
    pub metric: Metric,
    /// The model and label of a share (`None` for volume).
    pub target: Option<(String, String)>,
    /// Series per entity.
    pub by_entity: bool,
    /// Series per topic.
    pub by_topic: bool,
    /// How it decides.
    pub detector: Detector,
    /// Fewest events in a window for the rule to fire.
    pub min_count: u64,
    /// Earlier windows of a series needed before the rule may fire.
    pub warmup: u32,
    /// Windows after an alert during which the same series does not alert again.
    pub cooldown: u32,
    /// An EWMA or CUSUM rule on a share fires only when the share is also above this level
    /// (`above` on such a rule): a rise that is unusual for the series and large in itself.
    pub floor: Option<f64>,
}

/// Where alerts are sent.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// HTTP POST of the alert as JSON, with an `Idempotency-Key` header.
    Webhook {
        /// The receiver.
        url: String,
        /// Request timeout, seconds.
        timeout_secs: u64,
    },
    /// One JSON line per alert appended to a file.
    Log(PathBuf),
    /// One JSON line per alert on standard output.
    Stdout,
}

/// One sink.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Unique name (default: kind and position, `webhook-1`).
    pub name: String,
    /// What it is.
    pub kind: SinkKind,
    /// Longest wait between two delivery attempts, seconds.
    pub max_backoff_secs: i64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    window: Option<String>,
    max_future: Option<String>,
    max_body_bytes: Option<usize>,
    batch: Option<usize>,
    cache_texts: Option<usize>,
    models_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    bundle: PathBuf,
    #[serde(default)]
    topic: bool,
    train: Option<PathBuf>,
    test: Option<PathBuf>,
    retrain_every: Option<String>,
    #[serde(default)]
    retrain_on_drift: bool,
    min_feedback: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntityModel {
    bundle: PathBuf,
    #[serde(default)]
    types: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDrift {
    window: Option<String>,
    min_count: Option<u64>,
    psi: Option<f64>,
    centroid: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    kind: String,
    metric: Option<String>,
    model: Option<String>,
    label: Option<String>,
    #[serde(default)]
    group_by: Vec<String>,
    above: Option<f64>,
    z: Option<f64>,
    alpha: Option<f64>,
    k: Option<f64>,
    h: Option<f64>,
    min_count: Option<u64>,
    warmup: Option<u32>,
    cooldown: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    kind: String,
    name: Option<String>,
    url: Option<String>,
    path: Option<PathBuf>,
    timeout: Option<String>,
    max_backoff: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    monitor: RawMonitor,
    #[serde(default)]
    model: Vec<RawModel>,
    #[serde(default)]
    entities: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    sink: Vec<RawSink>,
    #[serde(default)]
    drift: RawDrift,
    entity_model: Option<RawEntityModel>,
}

/// The default window: one hour.
pub const DEFAULT_WINDOW_SECS: i64 = 3_600;

impl MonitorConfig {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<MonitorConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| MonitorError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Self::parse(&text, base).map_err(|message| MonitorError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        config.path = path.to_path_buf();
        Ok(config)
    }

    /// Parses and checks configuration `text`; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<MonitorConfig, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let models = models_of(raw.model, base)?;
        let rules = raw
            .rule
            .into_iter()
            .enumerate()
            .map(|(i, r)| rule_of(r, &models).map_err(|m| format!("rule[{i}]: {m}")))
            .collect::<Result<Vec<_>, _>>()?;
        unique(rules.iter().map(|r| r.name.as_str()), "rule")?;
        let sinks = raw
            .sink
            .into_iter()
            .enumerate()
            .map(|(i, s)| sink_of(s, i, base).map_err(|m| format!("sink[{i}]: {m}")))
            .collect::<Result<Vec<_>, _>>()?;
        unique(sinks.iter().map(|s| s.name.as_str()), "sink")?;
        let batch = raw.monitor.batch.unwrap_or(256);
        let max_body_bytes = raw.monitor.max_body_bytes.unwrap_or(16 << 20);
        if batch == 0 || max_body_bytes == 0 {
            return Err("`monitor.batch` and `monitor.max_body_bytes` must be positive".into());
        }
        Ok(MonitorConfig {
            path: PathBuf::from("(inline)"),
            window_secs: seconds("monitor.window", &raw.monitor.window, DEFAULT_WINDOW_SECS)?,
            max_future_secs: seconds("monitor.max_future", &raw.monitor.max_future, 300)?,
            max_body_bytes,
            batch,
            cache_texts: raw.monitor.cache_texts.unwrap_or(20_000),
            models_dir: raw.monitor.models_dir.map(|p| base.join(p)),
            models,
            entities: entities_of(raw.entities)?,
            rules,
            sinks,
            drift: drift_of(raw.drift)?,
            entity_model: raw.entity_model.map(|m| EntityModelConfig {
                bundle: base.join(m.bundle),
                types: m.types,
            }),
        })
    }

    /// The model whose label is the topic, if one is.
    pub fn topic_model(&self) -> Option<&str> {
        self.models
            .iter()
            .find(|m| m.topic)
            .map(|m| m.name.as_str())
    }
}

/// The seconds of the duration `value` of `field`, `default` when absent.
fn seconds(field: &str, value: &Option<String>, default: i64) -> Result<i64, String> {
    match value {
        None => Ok(default),
        Some(v) => parse_seconds(v).ok_or_else(|| {
            format!("`{field}` = {v:?} is not a duration like \"30s\", \"15m\", \"1h\", \"1d\"")
        }),
    }
}

fn unique<'a>(names: impl Iterator<Item = &'a str>, what: &str) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(format!("two {what}s are named {n:?}"));
        }
    }
    Ok(())
}

fn models_of(raw: Vec<RawModel>, base: &Path) -> Result<Vec<ModelConfig>, String> {
    if raw.is_empty() {
        return Err("no `[[model]]`: the monitor needs at least one classifier bundle".into());
    }
    let models: Vec<ModelConfig> = raw
        .into_iter()
        .enumerate()
        .map(|(i, m)| model_of(m, base).map_err(|e| format!("model[{i}]: {e}")))
        .collect::<Result<_, _>>()?;
    unique(models.iter().map(|m| m.name.as_str()), "model")?;
    if models.iter().filter(|m| m.topic).count() > 1 {
        return Err("more than one model has `topic = true`".into());
    }
    Ok(models)
}

fn model_of(m: RawModel, base: &Path) -> Result<ModelConfig, String> {
    if m.name.is_empty() {
        return Err("`name` is empty".into());
    }
    let every_secs = match &m.retrain_every {
        None => None,
        Some(_) => Some(seconds("retrain_every", &m.retrain_every, 0)?),
    };
    let retrain = (every_secs.is_some() || m.retrain_on_drift).then(|| RetrainSchedule {
        every_secs,
        on_drift: m.retrain_on_drift,
        min_feedback: m.min_feedback.unwrap_or(50),
    });
    if retrain.is_some() && (m.train.is_none() || m.test.is_none()) {
        return Err("`retrain_every` and `retrain_on_drift` need `train` and `test`".into());
    }
    if retrain
        .as_ref()
        .is_some_and(|r| r.min_feedback == 0 || r.every_secs == Some(0))
    {
        return Err("`min_feedback` and `retrain_every` must be positive".into());
    }
    Ok(ModelConfig {
        bundle: base.join(&m.bundle),
        name: m.name,
        topic: m.topic,
        train: m.train.map(|p| base.join(p)),
        test: m.test.map(|p| base.join(p)),
        retrain,
    })
}

fn drift_of(raw: RawDrift) -> Result<DriftConfig, String> {
    let d = DriftConfig::default();
    let drift = DriftConfig {
        window_secs: seconds("drift.window", &raw.window, d.window_secs)?,
        min_count: raw.min_count.unwrap_or(d.min_count),
        psi: raw.psi.unwrap_or(d.psi),
        centroid: raw.centroid.unwrap_or(d.centroid),
    };
    if drift.window_secs <= 0 || drift.min_count == 0 {
        return Err("`drift.window` and `drift.min_count` must be positive".into());
    }
    if !(drift.psi > 0.0 && drift.psi.is_finite()) {
        return Err(format!("`drift.psi` = {} must be positive", drift.psi));
    }
    if !(drift.centroid > 0.0 && drift.centroid.is_finite()) {
        return Err(format!(
            "`drift.centroid` = {} must be positive",
            drift.centroid
        ));
    }
    Ok(drift)
}

fn entities_of(
    raw: BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, Vec<String>>, String> {
    raw.into_iter()
        .map(|(name, aliases)| {
            let aliases: Vec<String> = aliases.iter().map(|a| a.trim().to_lowercase()).collect();
            if name.trim().is_empty() || aliases.is_empty() || aliases.iter().any(String::is_empty)
            {
                return Err(format!(
                    "entities.{name:?}: an entity needs a name and non-empty aliases"
                ));
            }
            Ok((name, aliases))
        })
        .collect()
}

fn rule_of(r: RawRule, models: &[ModelConfig]) -> Result<Rule, String> {
    if r.name.is_empty() {
        return Err("`name` is empty".into());
    }
    if r.name == "drift" {
        return Err("`name` \"drift\" is the name of drift alerts; choose another".into());
    }
    let metric = match (r.kind.as_str(), r.metric.as_deref()) {
        ("share", None | Some("share")) => Metric::Share,
        ("share", Some(m)) => return Err(format!("`metric` {m:?}: a share rule measures a share")),
        (_, Some("volume")) => Metric::Volume,
        (_, Some("share")) => Metric::Share,
        (_, other) => {
            return Err(format!(
                "`metric` must be \"volume\" or \"share\" (found {other:?})"
            ))
        }
    };
    let target = target_of(metric, r.model, r.label, models)?;
    let positive = |field: &str, v: Option<f64>, default: f64| {
        let v = v.unwrap_or(default);
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(format!("`{field}` must be a positive number (found {v})"))
        }
    };
    let alpha = positive("alpha", r.alpha, 0.1)?;
    if alpha >= 1.0 {
        return Err(format!("`alpha` must be below 1 (found {alpha})"));
    }
    let detector = match r.kind.as_str() {
        "share" => {
            let above = r
                .above
                .ok_or("a share rule needs `above` (a share, 0..1)")?;
            if !(0.0..1.0).contains(&above) {
                return Err(format!("`above` must be in [0, 1) (found {above})"));
            }
            Detector::Above(above)
        }
        "ewma" => Detector::Ewma {
            z: positive("z", r.z, 4.0)?,
            alpha,
        },
        "cusum" => Detector::Cusum {
            k: positive("k", r.k, 0.5)?,
            h: positive("h", r.h, 5.0)?,
            alpha,
        },
        k => {
            return Err(format!(
                "`kind` {k:?} is not one of \"share\", \"ewma\", \"cusum\""
            ))
        }
    };
    let floor = match (&detector, r.above) {
        (Detector::Above(_), _) | (_, None) => None,
        (_, Some(_)) if metric == Metric::Volume => {
            return Err("`above` is a share; a volume rule takes none".into())
        }
        (_, Some(level)) if !(0.0..1.0).contains(&level) => {
            return Err(format!("`above` must be in [0, 1) (found {level})"))
        }
        (_, level) => level,
    };
    let (by_entity, by_topic) = group_of(&r.group_by, models)?;
    Ok(Rule {
        floor,
        name: r.name,
        metric,
        target,
        by_entity,
        by_topic,
        detector,
        min_count: r.min_count.unwrap_or(10),
        warmup: r
            .warmup
            .unwrap_or(if matches!(detector, Detector::Above(_)) {
                0
            } else {
                24
            }),
        cooldown: r.cooldown.unwrap_or(3),
    })
}

fn target_of(
    metric: Metric,
    model: Option<String>,
    label: Option<String>,
    models: &[ModelConfig],
) -> Result<Option<(String, String)>, String> {
    match (metric, model, label) {
        (Metric::Volume, None, None) => Ok(None),
        (Metric::Volume, _, _) => Err("a volume rule takes no `model` or `label`".into()),
        (Metric::Share, Some(m), Some(l)) => {
            if !models.iter().any(|x| x.name == m) {
                return Err(format!("`model` {m:?} is not a `[[model]]` name"));
            }
            Ok(Some((m, l)))
        }
        (Metric::Share, _, _) => Err("a share needs `model` and `label`".into()),
    }
}

fn group_of(group_by: &[String], models: &[ModelConfig]) -> Result<(bool, bool), String> {
    let (mut entity, mut topic) = (false, false);
    for g in group_by {
        match g.as_str() {
            "entity" => entity = true,
            "topic" if models.iter().any(|m| m.topic) => topic = true,
            "topic" => return Err("`group_by` \"topic\" needs a model with `topic = true`".into()),
            other => {
                return Err(format!(
                    "`group_by` {other:?} is not \"entity\" or \"topic\""
                ))
            }
        }
    }
    Ok((entity, topic))
}

fn sink_of(s: RawSink, i: usize, base: &Path) -> Result<SinkConfig, String> {
    let secs = |field: &str, v: &Option<String>, default: i64| match v {
        None => Ok(default),
        Some(t) => parse_seconds(t).ok_or_else(|| format!("`{field}` = {t:?} is not a duration")),
    };
    let kind = match (s.kind.as_str(), s.url, s.path) {
        ("webhook", Some(url), None) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("`url` {url:?} is not an http(s) URL"));
            }
            SinkKind::Webhook {
                url,
                timeout_secs: secs("timeout", &s.timeout, 10)? as u64,
            }
        }
        ("log", None, Some(path)) => SinkKind::Log(base.join(path)),
        ("stdout", None, None) => SinkKind::Stdout,
        ("webhook", ..) => return Err("a webhook sink needs `url` (and no `path`)".into()),
        ("log", ..) => return Err("a log sink needs `path` (and no `url`)".into()),
        ("stdout", ..) => return Err("a stdout sink takes no `url` or `path`".into()),
        (k, ..) => {
            return Err(format!(
                "`kind` {k:?} is not one of \"webhook\", \"log\", \"stdout\""
            ))
        }
    };
    Ok(SinkConfig {
        name: s.name.unwrap_or_else(|| format!("{}-{}", s.kind, i + 1)),
        kind,
        max_backoff_secs: secs("max_backoff", &s.max_backoff, 60)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[monitor]
window = "1h"

[[model]]
name = "sentiment"
bundle = "bundles/sentiment"

[entities]
"Acme" = ["acme", "ACME Corp"]

[[rule]]
name = "negative-share"
kind = "share"
model = "sentiment"
label = "negative"
above = 0.4
min_count = 20
group_by = ["entity"]

[[rule]]
name = "volume"
kind = "ewma"
metric = "volume"

[[sink]]
kind = "webhook"
url = "http://127.0.0.1:9/alerts"

[[sink]]
kind = "log"
path = "alerts.log"
"#;

    #[test]
    fn a_good_file_is_read_with_its_defaults() {
        let c = MonitorConfig::parse(GOOD, Path::new("/etc/m")).unwrap();
        assert_eq!(c.window_secs, 3_600);
        assert_eq!(c.models[0].bundle, Path::new("/etc/m/bundles/sentiment"));
        assert_eq!(c.entities["Acme"], vec!["acme", "acme corp"]);
        assert_eq!(c.rules[0].detector, Detector::Above(0.4));
        assert!(c.rules[0].by_entity && !c.rules[1].by_entity);
        assert_eq!(c.rules[1].detector, Detector::Ewma { z: 4.0, alpha: 0.1 });
        assert_eq!(c.rules[1].warmup, 24);
        assert_eq!(c.sinks[0].name, "webhook-1");
        assert_eq!(c.sinks[1].kind, SinkKind::Log("/etc/m/alerts.log".into()));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            ("window = \"1h\"", "window = \"1 hour\"", "monitor.window"),
            ("above = 0.4", "above = 1.4", "rule[0]: `above`"),
            ("kind = \"ewma\"", "kind = \"zscore\"", "rule[1]: `kind`"),
            (
                "metric = \"volume\"",
                "metric = \"volume\"\nabove = 0.5",
                "rule[1]: `above` is a share",
            ),
            (
                "model = \"sentiment\"",
                "model = \"topic\"",
                "rule[0]: `model` \"topic\"",
            ),
            (
                "metric = \"volume\"",
                "metric = \"speed\"",
                "rule[1]: `metric`",
            ),
            (
                "group_by = [\"entity\"]",
                "group_by = [\"topic\"]",
                "topic = true",
            ),
            (
                "url = \"http://127.0.0.1:9/alerts\"",
                "url = \"ftp://x\"",
                "sink[0]: `url`",
            ),
            (
                "min_count = 20",
                "min_count = 20\nthreshold = 3",
                "unknown field `threshold`",
            ),
            (
                "name = \"volume\"",
                "name = \"negative-share\"",
                "two rules",
            ),
            (
                "bundle = \"bundles/sentiment\"",
                "",
                "missing field `bundle`",
            ),
        ];
        for (from, to, needle) in cases {
            assert!(GOOD.contains(from), "{from}");
            let err =
                MonitorConfig::parse(&GOOD.replacen(from, to, 1), Path::new(".")).unwrap_err();
            assert!(err.contains(needle), "{to:?}: {err}");
        }
        let err = MonitorConfig::parse("", Path::new(".")).unwrap_err();
        assert!(err.contains("at least one classifier"), "{err}");
    }
}
