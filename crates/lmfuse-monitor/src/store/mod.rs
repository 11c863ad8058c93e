//! The monitor's database: one SQLite file in WAL mode with `synchronous = FULL`, so a request
//! is acknowledged only after its events are on disk. Events, their predictions, the windowed
//! counts, alerts and their deliveries live in one file, and every step that changes several
//! of them does so in one transaction.

use crate::error::{MonitorError, Result};
use crate::event::Event;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The schema this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

mod learning;
pub use learning::{Feedback, ModelVersion};

/// The key of the windowed counts that hold the number of events (no model, no label).
pub const VOLUME: &str = "";
/// How far back from the newest window [`Tx::entities`] counts.
const ENTITY_HORIZON_SECS: i64 = 30 * 86_400;

/// Entity or topic of counts over all entities or topics.
pub const ALL: &str = "*";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    time INTEGER NOT NULL,
    text TEXT NOT NULL,
    entities TEXT NOT NULL,
    meta TEXT NOT NULL,
    classified INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS events_pending ON events(seq) WHERE classified = 0;
CREATE TABLE IF NOT EXISTS predictions(
    seq INTEGER NOT NULL,
    model TEXT NOT NULL,
    label TEXT NOT NULL,
    confidence REAL NOT NULL,
    PRIMARY KEY(seq, model));
CREATE TABLE IF NOT EXISTS counts(
    window INTEGER NOT NULL,
    entity TEXT NOT NULL,
    topic TEXT NOT NULL,
    model TEXT NOT NULL,
    label TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY(entity, topic, model, label, window));
CREATE TABLE IF NOT EXISTS alerts(
    id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    entity TEXT NOT NULL,
    topic TEXT NOT NULL,
    window INTEGER NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries(
    alert_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL DEFAULT 0,
    delivered_at INTEGER,
    last_error TEXT,
    PRIMARY KEY(alert_id, sink));
CREATE TABLE IF NOT EXISTS feedback(
    seq INTEGER NOT NULL,
    model TEXT NOT NULL,
    label TEXT NOT NULL,
    time INTEGER NOT NULL,
    PRIMARY KEY(seq, model));
CREATE TABLE IF NOT EXISTS model_versions(
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    path TEXT NOT NULL,
    promoted INTEGER NOT NULL,
    created INTEGER NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY(model, version));
CREATE TABLE IF NOT EXISTS drift(
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    window INTEGER NOT NULL,
    profile TEXT NOT NULL,
    PRIMARY KEY(model, version, window));
CREATE TABLE IF NOT EXISTS drift_reference(
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    profile TEXT NOT NULL,
    PRIMARY KEY(model, version));
";

/// The error of a failed database call on the file at `path`.
fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> MonitorError + Copy + '_ {
    move |e| MonitorError::Store {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Inserted {
    /// Events stored now.
    pub accepted: usize,
    /// Events already stored (same id, time and text): acknowledged again, stored once.
    pub duplicates: usize,
}

/// A stored event not yet classified.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its place in arrival order.
    pub seq: i64,
    /// Seconds since the epoch.
    pub time: i64,
    /// Its text.
    pub text: String,
    /// Its entities.
    pub entities: Vec<String>,
}

/// One key of the windowed counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountKey {
    /// Window start, seconds since the epoch.
    pub window: i64,
    /// Entity, or [`ALL`].
    pub entity: String,
    /// Topic, or [`ALL`].
    pub topic: String,
    /// Model, or [`VOLUME`].
    pub model: String,
    /// Label, or [`VOLUME`].
    pub label: String,
}

/// One alert delivery that is due.
#[derive(Debug, Clone)]
pub struct Due {
    /// The alert's id.
    pub alert_id: String,
    /// The alert as JSON (with its current state).
    pub body: serde_json::Value,
    /// The sink's name.
    pub sink: String,
    /// Attempts made so far.
    pub attempts: i64,
}

impl Store {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let failed = sql(path);
        let conn = Connection::open(path).map_err(failed)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(failed)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(failed)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(failed)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(failed)?;
        if version > SCHEMA_VERSION {
            return Err(MonitorError::Store {
                path: path.to_path_buf(),
                message: format!(
                    "schema version {version}; this lmfuse reads version {SCHEMA_VERSION}"
                ),
            });
        }
        conn.execute_batch(&format!("{SCHEMA} PRAGMA user_version = {SCHEMA_VERSION};"))
            .map_err(failed)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `events` in one transaction: all of them or, on a conflict (an id stored with
    /// another time or text), none.
    pub fn insert_events(&mut self, events: &[Event]) -> Result<Inserted> {
        let failed = sql(&self.path);
        let tx = self.conn.transaction().map_err(failed)?;
        let mut out = Inserted::default();
        {
            let mut find = tx
                .prepare_cached("SELECT time, text FROM events WHERE id = ?1")
                .map_err(failed)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events(id, time, text, entities, meta) VALUES(?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(failed)?;
            for e in events {
                let stored: Option<(i64, String)> = find
                    .query_row([&e.id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(failed)?;
                match stored {
                    Some((time, _)) if time != e.time => {
                        return Err(conflict(&e.id, "time"));
                    }
                    Some((_, text)) if text != e.text => return Err(conflict(&e.id, "text")),
                    Some(_) => out.duplicates += 1,
                    None => {
                        let entities = serde_json::to_string(&e.entities).expect("strings");
                        let meta = serde_json::to_string(&e.meta).expect("JSON values");
                        insert
                            .execute(params![e.id, e.time, e.text, entities, meta])
                            .map_err(failed)?;
                        out.accepted += 1;
                    }
                }
            }
        }
        tx.commit().map_err(failed)?;
        Ok(out)
    }

    /// Up to `limit` events not yet classified, in arrival order.
    pub fn pending(&self, limit: usize) -> Result<Vec<Pending>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, time, text, entities FROM events WHERE classified = 0 \
                 ORDER BY seq LIMIT ?1",
            )
            .map_err(sql(&self.path))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                let entities: String = r.get(3)?;
                Ok(Pending {
                    seq: r.get(0)?,
                    time: r.get(1)?,
                    text: r.get(2)?,
                    entities: serde_json::from_str(&entities).unwrap_or_default(),
                })
            })
            .map_err(sql(&self.path))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sql(&self.path))
    }

    /// Runs `f` in one transaction, committed when `f` succeeds.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction().map_err(sql(&self.path))?;
        let mut wrapped = Tx {
            tx,
            path: &self.path,
        };
        let out = f(&mut wrapped)?;
        wrapped.tx.commit().map_err(sql(&self.path))?;
        Ok(out)
    }

    /// A read-only view through the same calls as in a transaction.
    pub fn read<T>(&mut self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        // A transaction that is never committed: reads see one snapshot.
        let tx = self.conn.transaction().map_err(sql(&self.path))?;
        f(&mut Tx {
            tx,
            path: &self.path,
        })
    }

    /// Number of events stored, and of those classified.
    pub fn event_counts(&self) -> Result<(u64, u64)> {
        self.conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(classified), 0) FROM events",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(sql(&self.path))
    }
}

fn conflict(id: &str, field: &'static str) -> MonitorError {
    MonitorError::Conflict {
        id: id.to_string(),
        field,
    }
}

/// One transaction (or read snapshot) of the store.
pub struct Tx<'a> {
    tx: Transaction<'a>,
    path: &'a Path,
}

impl Tx<'_> {
    /// Records each event's prediction by `model` (`(seq, label, confidence)`).
    pub fn add_predictions(&self, model: &str, rows: &[(i64, String, f32)]) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT OR REPLACE INTO predictions(seq, model, label, confidence) \
                 VALUES(?1, ?2, ?3, ?4)",
            )
            .map_err(sql(self.path))?;
        for (seq, label, confidence) in rows {
            stmt.execute(params![seq, model, label, *confidence as f64])
                .map_err(sql(self.path))?;
        }
        Ok(())
    }

    /// Adds `deltas` to the windowed counts.
    pub fn add_counts(&self, deltas: &BTreeMap<CountKey, u64>) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT INTO counts(window, entity, topic, model, label, n) \
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(entity, topic, model, label, window) DO UPDATE SET n = n + ?6",
            )
            .map_err(sql(self.path))?;
        for (k, n) in deltas {
            stmt.execute(params![
                k.window, k.entity, k.topic, k.model, k.label, *n as i64
            ])
            .map_err(sql(self.path))?;
        }
        Ok(())
    }

    /// Marks the events `seqs` as classified.
    pub fn mark_classified(&self, seqs: &[i64]) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached("UPDATE events SET classified = 1 WHERE seq = ?1")
            .map_err(sql(self.path))?;
        for s in seqs {
            stmt.execute([s]).map_err(sql(self.path))?;
        }
        Ok(())
    }

    /// Records the entities a model named for event `seq`.
    pub fn set_entities(&self, seq: i64, entities: &[String]) -> Result<()> {
        let json = serde_json::to_string(entities).expect("strings");
        self.tx
            .execute(
                "UPDATE events SET entities = ?2 WHERE seq = ?1",
                params![seq, json],
            )
            .map_err(sql(self.path))?;
        Ok(())
    }

    /// The counts of one series (`entity`, `topic`, `model`, `label`) in the windows
    /// `from..to` (start included, end excluded), by window; windows without events are absent.
    pub fn series(&self, key: &CountKey, from: i64, to: i64) -> Result<BTreeMap<i64, u64>> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT window, n FROM counts WHERE entity = ?1 AND topic = ?2 AND model = ?3 \
                 AND label = ?4 AND window >= ?5 AND window < ?6",
            )
            .map_err(sql(self.path))?;
        let rows = stmt
            .query_map(
                params![key.entity, key.topic, key.model, key.label, from, to],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(sql(self.path))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sql(self.path))
    }

    /// The first window with events of `entity` × `topic`.
    pub fn first_window(&self, entity: &str, topic: &str) -> Result<Option<i64>> {
        self.tx
            .query_row(
                "SELECT MIN(window) FROM counts WHERE entity = ?1 AND topic = ?2 AND model = ''",
                params![entity, topic],
                |r| r.get(0),
            )
            .map_err(sql(self.path))
    }

    /// Windows in which `rule` alerted for `entity` × `topic`, in order.
    pub fn alert_windows(&self, rule: &str, entity: &str, topic: &str) -> Result<Vec<i64>> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT window FROM alerts WHERE rule = ?1 AND entity = ?2 AND topic = ?3 \
                 ORDER BY window",
            )
            .map_err(sql(self.path))?;
        let rows = stmt
            .query_map(params![rule, entity, topic], |r| r.get(0))
            .map_err(sql(self.path))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sql(self.path))
    }

    /// Stores an alert (state `open`) and one pending delivery per sink, unless an alert with
    /// its id is stored already; whether it was new.
    pub fn add_alert(&self, alert: &crate::Alert, sinks: &[String]) -> Result<bool> {
        let body = serde_json::to_string(alert).expect("an alert serialises");
        let added = self
            .tx
            .execute(
                "INSERT OR IGNORE INTO alerts(id, rule, entity, topic, window, body, state, \
                 created, updated) VALUES(?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7, ?7)",
                params![
                    alert.id,
                    alert.rule,
                    alert.series.entity,
                    alert.series.topic,
                    alert.window,
                    body,
                    alert.created
                ],
            )
            .map_err(sql(self.path))?;
        if added == 1 {
            for s in sinks {
                self.tx
                    .execute(
                        "INSERT INTO deliveries(alert_id, sink) VALUES(?1, ?2)",
                        params![alert.id, s],
                    )
                    .map_err(sql(self.path))?;
            }
        }
        Ok(added == 1)
    }

    /// Alerts, newest first, with their state (`state`: only those in it).
    pub fn alerts(&self, state: Option<&str>, limit: usize) -> Result<Vec<serde_json::Value>> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT body, state, updated FROM alerts WHERE ?1 IS NULL OR state = ?1 \
                 ORDER BY window DESC, id LIMIT ?2",
            )
            .map_err(sql(self.path))?;
        let rows = stmt
            .query_map(params![state, limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(sql(self.path))?;
        rows.map(|row| {
            let (body, state, updated) = row.map_err(sql(self.path))?;
            Ok(with_state(&body, &state, updated))
        })
        .collect()
    }

    /// Sets an alert's state; the alert as it is now.
    pub fn set_alert_state(&self, id: &str, state: &str, now: i64) -> Result<serde_json::Value> {
        let changed = self
            .tx
            .execute(
                "UPDATE alerts SET state = ?2, updated = ?3 WHERE id = ?1",
                params![id, state, now],
            )
            .map_err(sql(self.path))?;
        if changed == 0 {
            return Err(MonitorError::UnknownAlert(id.to_string()));
        }
        let body: String = self
            .tx
            .query_row("SELECT body FROM alerts WHERE id = ?1", [id], |r| r.get(0))
            .map_err(sql(self.path))?;
        Ok(with_state(&body, state, now))
    }

    /// Deliveries not yet made whose next attempt is due at `now`, oldest alert first.
    pub fn due(&self, now: i64, limit: usize) -> Result<Vec<Due>> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT d.alert_id, a.body, a.state, a.updated, d.sink, d.attempts \
                 FROM deliveries d JOIN alerts a ON a.id = d.alert_id \
                 WHERE d.delivered_at IS NULL AND d.next_at <= ?1 \
                 ORDER BY a.created, a.window, d.alert_id LIMIT ?2",
            )
            .map_err(sql(self.path))?;
        let rows = stmt
            .query_map(params![now, limit as i64], |r| {
                let body: String = r.get(1)?;
                let state: String = r.get(2)?;
                Ok(Due {
                    alert_id: r.get(0)?,
                    body: with_state(&body, &state, r.get(3)?),
                    sink: r.get(4)?,
                    attempts: r.get(5)?,
                })
            })
            .map_err(sql(self.path))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sql(self.path))
    }

    /// Records the outcome of a delivery attempt: delivered at `now`, or failed with `error`
    /// and tried again at `retry_at`.
    pub fn delivery_attempt(
        &self,
        due: &Due,
        now: i64,
        outcome: std::result::Result<(), (String, i64)>,
    ) -> Result<()> {
        let (delivered, error, next) = match outcome {
            Ok(()) => (Some(now), None, now),
            Err((error, retry_at)) => (None, Some(error), retry_at),
        };
        self.tx
            .execute(
                "UPDATE deliveries SET attempts = attempts + 1, delivered_at = ?3, \
                 last_error = ?4, next_at = ?5 WHERE alert_id = ?1 AND sink = ?2",
                params![due.alert_id, due.sink, delivered, error, next],
            )
            .map_err(sql(self.path))?;
        Ok(())
    }

    /// Every count of the series `entity` × `topic` in the windows `from..to`: `(window,
    /// model, label, n)` in window order (the volume has model and label [`VOLUME`]).
    pub fn window_counts(
        &self,
        entity: &str,
        topic: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String, String, u64)>> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT window, model, label, n FROM counts WHERE entity = ?1 AND topic = ?2 \
                 AND window >= ?3 AND window < ?4 ORDER BY window",
            )
            .map_err(sql(self.path))?;
        let rows = stmt
            .query_map(params![entity, topic, from, to], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? as u64))
            })
            .map_err(sql(self.path))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sql(self.path))
    }

    /// The newest window with events, if any.
    pub fn last_window(&self) -> Result<Option<i64>> {
        self.tx
            .query_row(
                "SELECT MAX(window) FROM counts WHERE entity = '*' AND topic = '*' AND model = ''",
                [],
                |r| r.get(0),
            )
            .map_err(sql(self.path))
    }

    /// The `limit` entities with the most events over the 30 days up to the newest window,
    /// with their counts, most first.
    pub fn entities(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT entity, SUM(n) FROM counts WHERE topic = '*' AND model = '' \
                 AND entity != '*' AND window >= (SELECT MAX(window) FROM counts \
                 WHERE entity = '*' AND topic = '*' AND model = '') - ?2 \
                 GROUP BY entity ORDER BY 2 DESC, 1 LIMIT ?1",
            )
            .map_err(sql(self.path))?;
        let rows = stmt
            .query_map(params![limit as i64, ENTITY_HORIZON_SECS], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(sql(self.path))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sql(self.path))
    }

    /// The newest `limit` events, newest first, each with its predictions (`{model: {label,
    /// confidence}}`, empty until classified).
    pub fn latest_events(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT e.id, e.time, e.text, e.entities, \
                 (SELECT json_group_object(p.model, json_object('label', p.label, \
                 'confidence', p.confidence)) FROM predictions p WHERE p.seq = e.seq) \
                 FROM events e ORDER BY e.seq DESC LIMIT ?1",
            )
            .map_err(sql(self.path))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                let entities: String = r.get(3)?;
                let predictions: Option<String> = r.get(4)?;
                let time: i64 = r.get(1)?;
                Ok(serde_json::json!({
                    "id": r.get::<_, String>(0)?,
                    "time": crate::event::rfc3339(time),
                    "text": r.get::<_, String>(2)?,
                    "entities": serde_json::from_str::<serde_json::Value>(&entities)
                        .unwrap_or_default(),
                    "predictions": predictions
                        .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
                        .unwrap_or_else(|| serde_json::json!({})),
                }))
            })
            .map_err(sql(self.path))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sql(self.path))
    }

    /// Deliveries made and still owed, per sink.
    pub fn delivery_counts(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT sink, SUM(delivered_at IS NOT NULL), SUM(delivered_at IS NULL) \
                 FROM deliveries GROUP BY sink",
            )
            .map_err(sql(self.path))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    (r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64),
                ))
            })
            .map_err(sql(self.path))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sql(self.path))
    }
}

fn with_state(body: &str, state: &str, updated: i64) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if let serde_json::Value::Object(o) = &mut v {
        o.insert("state".into(), state.into());
        o.insert("updated_at".into(), crate::event::rfc3339(updated).into());
    }
    v
}
