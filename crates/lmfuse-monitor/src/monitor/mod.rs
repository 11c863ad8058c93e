//! The monitor: durable ingest, then (in the background) classification, windowed counts,
//! rules and alert deliveries, each step one transaction of the store so that a kill at any
//! point leaves every acknowledged event to be processed exactly once.

use crate::classify::{classify_checked, Classify, Loader};
use crate::config::{MonitorConfig, Rule};
use crate::detect::{Alert, Baseline, Series};
use crate::drift::Profile;
use crate::entities::{FindEntities, NerEntities};
use crate::error::{MonitorError, Result};
use crate::event::{now_secs, parse_body, rfc3339, Event};
use crate::sink::{backoff_secs, Sink};
use crate::store::{CountKey, Database, Inserted, Pending, Store, Tx, ALL, VOLUME};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, RwLock};

mod cache;
mod learning;
pub use learning::{FeedbackReport, ModelStatus};

/// Detector states kept before those of idle series are dropped.
const MAX_BASELINES: usize = 100_000;
/// Windows without events after which a series' detector state may be dropped.
const IDLE_WINDOWS: i64 = 24 * 30;

/// A configured model as it serves now: its version, classifier and drift reference.
#[derive(Clone)]
struct Active {
    name: String,
    version: i64,
    classifier: Arc<dyn Classify>,
    /// The profile of its training data (none without `train` in the configuration).
    reference: Option<Profile>,
    /// Its recent predictions by text.
    cache: Arc<Mutex<cache::TextCache>>,
}

/// One batch's output of one model.
struct ModelOutput {
    active: Active,
    labels: Vec<(String, f32)>,
    embeddings: Option<Vec<Vec<f32>>>,
}

/// A running monitor over one database.
pub struct Monitor {
    config: MonitorConfig,
    store: Mutex<Store>,
    /// The configured models as they serve, in configuration order; swapped when a retrain
    /// promotes a version (see [`Monitor::refresh_models`]).
    models: RwLock<Vec<Active>>,
    loader: Box<Loader>,
    /// Names entities of events that name none (`entity_model` of the configuration).
    entity_finder: Option<Box<dyn FindEntities>>,
    sinks: Vec<Box<dyn Sink>>,
    baselines: Mutex<HashMap<(usize, Series), Baseline>>,
    /// A counter raised when events or alerts wait; the workers sleep on it, each waking
    /// when it moved past the value it last saw.
    wake: (Mutex<u64>, Condvar),
}

/// Counts of what the monitor holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// Events stored.
    pub events: u64,
    /// Events classified and counted.
    pub classified: u64,
    /// Per sink: alerts delivered and still owed.
    pub deliveries: BTreeMap<String, (u64, u64)>,
}

impl Monitor {
    /// Opens the monitor on the database `db`; `loader` loads each model's serving version
    /// (the configured bundle until a retrain promotes another). Every rule's label must be
    /// one its model gives, and a model retrained on a schedule needs a folder for its
    /// versions (see [`crate::retrain::versions_dir`]).
    pub fn open(
        config: MonitorConfig,
        db: impl Into<Database>,
        loader: Box<Loader>,
    ) -> Result<Monitor> {
        let db = db.into();
        for m in config.models.iter().filter(|m| m.retrain.is_some()) {
            crate::retrain::versions_dir(&config, &db, &m.name)?;
        }
        let sinks = config
            .sinks
            .iter()
            .map(crate::sink::sink_of)
            .collect::<Result<_>>()?;
        let store = Mutex::new(Store::open(db)?);
        let mut models = Vec::with_capacity(config.models.len());
        for m in &config.models {
            models.push(learning::load_serving(&config, &store, &*loader, m)?);
        }
        check_labels(&config, &models)?;
        let entity_finder =
            match &config.entity_model {
                None => None,
                Some(m) => Some(Box::new(NerEntities::load(&m.bundle, &m.types).map_err(
                    |message| MonitorError::Config {
                        path: config.path.clone(),
                        message: format!("entity_model.bundle: {message}"),
                    },
                )?) as Box<dyn FindEntities>),
            };
        Ok(Monitor {
            entity_finder,
            store,
            config,
            models: RwLock::new(models),
            loader,
            sinks,
            baselines: Mutex::new(HashMap::new()),
            wake: (Mutex::new(1), Condvar::new()),
        })
    }

    /// Names the entities of events that name none with `finder` (instead of the configured
    /// `entity_model`).
    pub fn set_entity_finder(&mut self, finder: Box<dyn FindEntities>) {
        self.entity_finder = Some(finder);
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// Parses a request body and stores its events (see [`Monitor::ingest_events`]).
    pub fn ingest(&self, body: &[u8]) -> Result<Inserted> {
        let events = parse_body(body, now_secs(), self.config.max_future_secs)?;
        self.ingest_events(events)
    }

    /// Stores `events` durably (all or none), naming entities from the dictionary for those
    /// that name none; returns once they are on disk.
    pub fn ingest_events(&self, mut events: Vec<Event>) -> Result<Inserted> {
        for e in &mut events {
            if e.entities.is_empty() {
                e.entities = dictionary_entities(&self.config.entities, &e.text);
            }
        }
        let inserted = self
            .store
            .lock()
            .expect("store lock")
            .insert_events(&events)?;
        if inserted.accepted > 0 {
            self.notify();
        }
        Ok(inserted)
    }

    /// Wakes the workers.
    pub fn notify(&self) {
        *self.wake.0.lock().expect("wake lock") += 1;
        self.wake.1.notify_all();
    }

    /// Waits until [`Monitor::notify`] was called since the caller last saw `seen` (updated
    /// to the current count), or `timeout`.
    pub fn wait(&self, seen: &mut u64, timeout: std::time::Duration) {
        let guard = self.wake.0.lock().expect("wake lock");
        let (now, _) = self
            .wake
            .1
            .wait_timeout_while(guard, timeout, |count| *count == *seen)
            .expect("wake lock");
        *seen = *now;
    }

    /// Classifies, counts and judges one batch of stored events (with the models' serving
    /// versions, reloaded first when a retrain promoted one); how many it processed.
    pub fn process_batch(&self) -> Result<usize> {
        self.refresh_models()?;
        let mut pending = self
            .store
            .lock()
            .expect("store lock")
            .pending(self.config.batch)?;
        if pending.is_empty() {
            return Ok(0);
        }
        let named = self.name_entities(&mut pending)?;
        let outputs = self.classify(&pending)?;
        let deltas = self.count_deltas(&pending, &outputs);
        let drift = self.drift_deltas(&pending, &outputs);
        let sink_names: Vec<String> = self.sinks.iter().map(|s| s.name().to_string()).collect();
        let committed = self.store.lock().expect("store lock").transaction(|tx| {
            for o in &outputs {
                let rows: Vec<(i64, String, f32)> = pending
                    .iter()
                    .zip(&o.labels)
                    .map(|(p, (l, c))| (p.seq, l.clone(), *c))
                    .collect();
                tx.add_predictions(&o.active.name, &rows)?;
            }
            tx.add_counts(&deltas)?;
            for &i in &named {
                tx.set_entities(pending[i].seq, &pending[i].entities)?;
            }
            tx.mark_classified(&pending.iter().map(|p| p.seq).collect::<Vec<_>>())?;
            let mut alerts = self.judge(tx, &deltas)?;
            alerts.extend(self.judge_drift(tx, &outputs, &drift)?);
            let mut raised = 0;
            for alert in alerts {
                raised += usize::from(tx.add_alert(&alert, &sink_names)?);
            }
            Ok(raised)
        });
        // The detectors' state moved on inside the transaction: when it did not commit, it is
        // rebuilt from the stored counts and alerts before the batch is tried again.
        let raised =
            committed.inspect_err(|_| self.baselines.lock().expect("baselines lock").clear())?;
        if raised > 0 {
            self.notify();
        }
        Ok(pending.len())
    }

    /// Names the entities of the events of `pending` that name none, with the entity model;
    /// the positions of the events that got entities.
    fn name_entities(&self, pending: &mut [Pending]) -> Result<Vec<usize>> {
        let Some(finder) = &self.entity_finder else {
            return Ok(Vec::new());
        };
        let unnamed: Vec<usize> = (0..pending.len())
            .filter(|&i| pending[i].entities.is_empty())
            .collect();
        if unnamed.is_empty() {
            return Ok(Vec::new());
        }
        let texts: Vec<&str> = unnamed.iter().map(|&i| pending[i].text.as_str()).collect();
        let found = finder
            .find(&texts)
            .map_err(|message| MonitorError::Classify {
                model: "entity_model".into(),
                message,
            })?;
        let mut named = Vec::new();
        for (&i, entities) in unnamed.iter().zip(found) {
            if !entities.is_empty() {
                pending[i].entities = entities;
                named.push(i);
            }
        }
        Ok(named)
    }

    /// Each serving model's labels (and embeddings) of `pending`; each distinct text of the
    /// batch is classified once, and not at all when the model's cache holds it.
    fn classify(&self, pending: &[Pending]) -> Result<Vec<ModelOutput>> {
        let all: Vec<&str> = pending.iter().map(|p| p.text.as_str()).collect();
        // A stream repeats texts (shares, retweets, templates): each distinct text of the
        // batch is classified once, as `lmfuse predict` does.
        let (texts, slot) = lmfuse_pipeline::encoders::dedup(&all);
        let models = self.models.read().expect("models lock").clone();
        let mut outputs = Vec::with_capacity(models.len());
        for active in models {
            let known = self.predict_cached(&active, &texts)?;
            let embeddings = match known.iter().all(|k| k.embedding.is_some()) {
                true => Some(
                    slot.iter()
                        .map(|&i| known[i].embedding.clone().unwrap_or_default())
                        .collect(),
                ),
                false => None,
            };
            outputs.push(ModelOutput {
                labels: slot
                    .iter()
                    .map(|&i| (known[i].label.clone(), known[i].confidence))
                    .collect(),
                embeddings,
                active,
            });
        }
        Ok(outputs)
    }

    /// `active`'s prediction of each of `texts`: from its cache, or classified (and cached).
    fn predict_cached(&self, active: &Active, texts: &[&str]) -> Result<Vec<cache::Cached>> {
        let failed = |message: String| MonitorError::Classify {
            model: active.name.clone(),
            message,
        };
        let mut known: Vec<Option<cache::Cached>> = {
            let c = active.cache.lock().expect("cache lock");
            texts.iter().map(|t| c.get(t).cloned()).collect()
        };
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| known[i].is_none()).collect();
        if !missing.is_empty() {
            let asked: Vec<&str> = missing.iter().map(|&i| texts[i]).collect();
            let out = classify_checked(&*active.classifier, &asked).map_err(failed)?;
            let mut c = active.cache.lock().expect("cache lock");
            for (k, ((label, confidence), &i)) in
                out.predictions.into_iter().zip(&missing).enumerate()
            {
                let cached = cache::Cached {
                    label,
                    confidence,
                    embedding: out.embeddings.as_ref().map(|e| e[k].clone()),
                };
                c.insert(texts[i], cached.clone());
                known[i] = Some(cached);
            }
        }
        Ok(known
            .into_iter()
            .map(|k| k.expect("every text known"))
            .collect())
    }

    /// Processes every stored event not yet processed; how many.
    pub fn process_all(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self.process_batch()?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// The additions to the windowed counts of one batch: per entity (and all) × topic (and
    /// all), the volume and each model's label.
    fn count_deltas(
        &self,
        pending: &[Pending],
        outputs: &[ModelOutput],
    ) -> BTreeMap<CountKey, u64> {
        let size = self.config.window_secs;
        let topic_index = self.config.models.iter().position(|m| m.topic);
        let mut deltas = BTreeMap::new();
        for (i, p) in pending.iter().enumerate() {
            let window = p.time.div_euclid(size) * size;
            let entities = p.entities.iter().map(String::as_str).chain([ALL]);
            let mut topics = vec![ALL];
            if let Some(t) = topic_index {
                topics.push(outputs[t].labels[i].0.as_str());
            }
            for entity in entities {
                for &topic in &topics {
                    let key = |model: &str, label: &str| CountKey {
                        window,
                        entity: entity.to_string(),
                        topic: topic.to_string(),
                        model: model.to_string(),
                        label: label.to_string(),
                    };
                    *deltas.entry(key(VOLUME, VOLUME)).or_insert(0) += 1;
                    for o in outputs {
                        *deltas
                            .entry(key(&o.active.name, &o.labels[i].0))
                            .or_insert(0) += 1;
                    }
                }
            }
        }
        deltas
    }

    /// The alerts the rules raise on the windows and series a batch touched.
    fn judge(&self, tx: &Tx<'_>, deltas: &BTreeMap<CountKey, u64>) -> Result<Vec<Alert>> {
        let touched: BTreeSet<(i64, Series)> = deltas
            .keys()
            .filter(|k| k.model == VOLUME)
            .map(|k| {
                (
                    k.window,
                    Series {
                        entity: k.entity.clone(),
                        topic: k.topic.clone(),
                    },
                )
            })
            .collect();
        let touched_max = touched.iter().map(|(w, _)| *w).max().unwrap_or(0);
        let mut jobs = Vec::new();
        for (window, series) in touched {
            for (r, rule) in self.config.rules.iter().enumerate() {
                if rule.by_entity == (series.entity != ALL)
                    && rule.by_topic == (series.topic != ALL)
                {
                    jobs.push((window, series.clone(), r));
                }
            }
        }
        let mut baselines = self.baselines.lock().expect("baselines lock");
        self.add_missing_baselines(tx, &mut baselines, &jobs)?;
        let counts = tx.series_many(&self.counts_wanted(&baselines, &jobs))?;
        let mut alerts = Vec::new();
        for (window, series, r) in jobs {
            let rule = &self.config.rules[r];
            let state = baselines
                .get_mut(&(r, series.clone()))
                .expect("added above");
            if let Some(alert) = self.judge_one(&counts, rule, &series, window, state) {
                state.alerted_in(window);
                alerts.push(alert);
            }
        }
        // Series come and go (entities named by a model have no bound): the state of those
        // not touched for a month of windows is dropped, to be rebuilt from the store when
        // they come back.
        if baselines.len() > MAX_BASELINES {
            let horizon = touched_max - IDLE_WINDOWS * self.config.window_secs;
            baselines.retain(|_, b| b.next_window >= horizon);
        }
        Ok(alerts)
    }

    /// Builds from the store the state of each rule × series of `jobs` not yet in memory.
    fn add_missing_baselines(
        &self,
        tx: &Tx<'_>,
        baselines: &mut HashMap<(usize, Series), Baseline>,
        jobs: &[(i64, Series, usize)],
    ) -> Result<()> {
        for (window, series, r) in jobs {
            let key = (*r, series.clone());
            if baselines.contains_key(&key) {
                continue;
            }
            let rule = &self.config.rules[*r];
            let first = tx.first_window(&series.entity, &series.topic)?;
            let alerted = tx.alert_windows(&rule.name, &series.entity, &series.topic)?;
            baselines.insert(key, Baseline::new(first.unwrap_or(*window), alerted));
        }
        Ok(())
    }

    /// The windows of each series of counts that judging `jobs` reads: from where its baseline
    /// stands to the newest window judged.
    fn counts_wanted(
        &self,
        baselines: &HashMap<(usize, Series), Baseline>,
        jobs: &[(i64, Series, usize)],
    ) -> HashMap<CountKey, (i64, i64)> {
        let mut wanted: HashMap<CountKey, (i64, i64)> = HashMap::new();
        for (window, series, r) in jobs {
            let rule = &self.config.rules[*r];
            let from = baselines[&(*r, series.clone())].next_window.min(*window);
            let to = window + self.config.window_secs;
            let mut want = |model: &str, label: &str| {
                let range = wanted
                    .entry(series_key(series, model, label))
                    .or_insert((from, to));
                *range = (range.0.min(from), range.1.max(to));
            };
            want(VOLUME, VOLUME);
            if let Some((model, label)) = &rule.target {
                want(model, label);
            }
        }
        wanted
    }

    /// Folds `state` up to `window` and asks `rule` about `window`, given the `counts` of its
    /// series.
    fn judge_one(
        &self,
        counts: &HashMap<CountKey, BTreeMap<i64, u64>>,
        rule: &Rule,
        series: &Series,
        window: i64,
        state: &mut Baseline,
    ) -> Option<Alert> {
        let size = self.config.window_secs;
        let empty = BTreeMap::new();
        let volumes = counts
            .get(&series_key(series, VOLUME, VOLUME))
            .unwrap_or(&empty);
        let hits = match &rule.target {
            Some((model, label)) => counts
                .get(&series_key(series, model, label))
                .unwrap_or(&empty),
            None => &empty,
        };
        state.advance(rule, window, size, volumes, hits);
        let count = volumes.get(&window).copied().unwrap_or(0);
        let hit = hits.get(&window).copied().unwrap_or(0);
        let verdict = state.judge(rule, window, size, count, hit)?;
        let now = now_secs();
        Some(Alert {
            id: format!(
                "{}/{}/{}/{}",
                rule.name, series.entity, series.topic, window
            ),
            rule: rule.name.clone(),
            metric: rule.metric.name(),
            model: rule.target.as_ref().map(|t| t.0.clone()),
            label: rule.target.as_ref().map(|t| t.1.clone()),
            series: series.clone(),
            window,
            window_start: rfc3339(window),
            window_end: rfc3339(window + size),
            value: verdict.value,
            baseline: verdict.baseline,
            score: verdict.score,
            threshold: verdict.threshold,
            count,
            created: now,
            created_at: rfc3339(now),
        })
    }

    /// Sends the alert deliveries that are due; how many succeeded.
    pub fn deliver_due(&self) -> Result<usize> {
        let due = self
            .store
            .lock()
            .expect("store lock")
            .read(|tx| tx.due(now_secs(), 256))?;
        let mut delivered = 0;
        for d in due {
            let Some((sink, max_backoff)) = self.sink_named(&d.sink) else {
                continue;
            };
            let outcome = sink.send(&d.alert_id, &d.body);
            let now = now_secs();
            let outcome = outcome.map_err(|e| (e, now + backoff_secs(d.attempts, max_backoff)));
            delivered += usize::from(outcome.is_ok());
            self.store
                .lock()
                .expect("store lock")
                .transaction(|tx| tx.delivery_attempt(&d, now, outcome))?;
        }
        Ok(delivered)
    }

    fn sink_named(&self, name: &str) -> Option<(&dyn Sink, i64)> {
        self.sinks
            .iter()
            .zip(&self.config.sinks)
            .find(|(s, _)| s.name() == name)
            .map(|(s, c)| (s.as_ref(), c.max_backoff_secs))
    }

    /// Alerts, newest window first (only those in `state` when given).
    pub fn alerts(&self, state: Option<&str>, limit: usize) -> Result<Vec<serde_json::Value>> {
        self.store
            .lock()
            .expect("store lock")
            .read(|tx| tx.alerts(state, limit))
    }

    /// The windows of series `entity` × `topic` (`*` for all) over the `windows` windows
    /// that end with the newest one: per window the volume and each model's label counts.
    pub fn series(&self, entity: &str, topic: &str, windows: i64) -> Result<serde_json::Value> {
        let size = self.config.window_secs;
        let mut store = self.store.lock().expect("store lock");
        let (last, counts) = store.read(|tx| {
            let Some(last) = tx.last_window()? else {
                return Ok((None, Vec::new()));
            };
            let from = last - (windows - 1) * size;
            Ok((
                Some(last),
                tx.window_counts(entity, topic, from, last + size)?,
            ))
        })?;
        let mut by_window: BTreeMap<i64, serde_json::Value> = BTreeMap::new();
        for (window, model, label, n) in counts {
            let w = by_window.entry(window).or_insert_with(
                || serde_json::json!({"window": window, "volume": 0, "labels": {}}),
            );
            if model == VOLUME {
                w["volume"] = n.into();
            } else {
                w["labels"][model][label] = n.into();
            }
        }
        Ok(serde_json::json!({
            "entity": entity, "topic": topic, "window_secs": size,
            "from": last.map(|l| l - (windows - 1) * size), "to": last.map(|l| l + size),
            "windows": by_window.into_values().collect::<Vec<_>>(),
        }))
    }

    /// The `limit` entities with the most events and their counts.
    pub fn entities(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        self.store
            .lock()
            .expect("store lock")
            .read(|tx| tx.entities(limit))
    }

    /// The newest `limit` events with their predictions, newest first.
    pub fn latest_events(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        self.store
            .lock()
            .expect("store lock")
            .read(|tx| tx.latest_events(limit))
    }

    /// Moves an alert to `acknowledged` or `resolved`; the alert as it is now.
    pub fn set_alert_state(&self, id: &str, state: AlertState) -> Result<serde_json::Value> {
        let name = match state {
            AlertState::Open => "open",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        };
        self.store
            .lock()
            .expect("store lock")
            .transaction(|tx| tx.set_alert_state(id, name, now_secs()))
    }

    /// What the monitor holds.
    pub fn status(&self) -> Result<Status> {
        let mut store = self.store.lock().expect("store lock");
        let (events, classified) = store.event_counts()?;
        let deliveries = store.read(|tx| tx.delivery_counts())?;
        Ok(Status {
            events,
            classified,
            deliveries,
        })
    }
}

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AlertState {
    /// Raised, nobody has looked.
    Open,
    /// Someone is on it.
    Acknowledged,
    /// Over.
    Resolved,
}

fn check_labels(config: &MonitorConfig, models: &[Active]) -> Result<()> {
    for (i, rule) in config.rules.iter().enumerate() {
        let Some((model, label)) = &rule.target else {
            continue;
        };
        let labels = models
            .iter()
            .find(|m| &m.name == model)
            .map(|m| m.classifier.labels())
            .unwrap_or_default();
        if !labels.contains(label) {
            return Err(MonitorError::Config {
                path: config.path.clone(),
                message: format!(
                    "rule[{i}] ({:?}): model {model:?} has no label {label:?} (its labels: {})",
                    rule.name,
                    labels.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// The dictionary's entities whose aliases occur in `text` (lower-cased), sorted.
fn dictionary_entities(dictionary: &BTreeMap<String, Vec<String>>, text: &str) -> Vec<String> {
    if dictionary.is_empty() {
        return Vec::new();
    }
    let lower = text.to_lowercase();
    dictionary
        .iter()
        .filter(|(_, aliases)| aliases.iter().any(|a| lower.contains(a.as_str())))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The key of the counts of `series` by `model` and `label` (window 0: all windows).
fn series_key(series: &Series, model: &str, label: &str) -> CountKey {
    CountKey {
        window: 0,
        entity: series.entity.clone(),
        topic: series.topic.clone(),
        model: model.to_string(),
        label: label.to_string(),
    }
}
