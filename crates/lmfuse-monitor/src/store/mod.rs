//! The monitor's database: a SQLite file in WAL mode with `synchronous = FULL`, or a
//! PostgreSQL database (same tables), so a request is acknowledged only after its events are
//! durable. Events, their predictions, the windowed counts, alerts and their deliveries live in
//! one database, and every step that changes several of them does so in one transaction.

use crate::error::{MonitorError, Result};
use crate::event::Event;
use db::{args, Arg, Bulk, Column, Conn, Row, Session};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;

/// The schema this build writes (SQLite: `PRAGMA user_version`; PostgreSQL: the table
/// `lmfuse_schema`).
pub const SCHEMA_VERSION: i64 = 2;

mod db;
mod learning;
pub use db::Database;
pub use learning::{Feedback, ModelVersion};

/// The key of the windowed counts that hold the number of events (no model, no label).
pub const VOLUME: &str = "";
/// How far back from the newest window [`Tx::entities`] counts.
const ENTITY_HORIZON_SECS: i64 = 30 * 86_400;

/// Entity or topic of counts over all entities or topics.
pub const ALL: &str = "*";

/// The tables, in SQL that SQLite and PostgreSQL both accept (`"window"` is quoted: PostgreSQL
/// reserves the word); `{seq}` is each one's auto-numbered key.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events(
    seq {seq},
    id TEXT NOT NULL UNIQUE,
    time BIGINT NOT NULL,
    text TEXT NOT NULL,
    entities TEXT NOT NULL,
    meta TEXT NOT NULL,
    classified BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS events_pending ON events(seq) WHERE classified = 0;
CREATE TABLE IF NOT EXISTS predictions(
    seq BIGINT NOT NULL,
    model TEXT NOT NULL,
    label TEXT NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    PRIMARY KEY(seq, model));
CREATE TABLE IF NOT EXISTS counts(
    "window" BIGINT NOT NULL,
    entity TEXT NOT NULL,
    topic TEXT NOT NULL,
    model TEXT NOT NULL,
    label TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY(entity, topic, model, label, "window"));
CREATE TABLE IF NOT EXISTS alerts(
    id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    entity TEXT NOT NULL,
    topic TEXT NOT NULL,
    "window" BIGINT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries(
    alert_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL DEFAULT 0,
    delivered_at BIGINT,
    last_error TEXT,
    PRIMARY KEY(alert_id, sink));
CREATE TABLE IF NOT EXISTS feedback(
    seq BIGINT NOT NULL,
    model TEXT NOT NULL,
    label TEXT NOT NULL,
    time BIGINT NOT NULL,
    PRIMARY KEY(seq, model));
CREATE TABLE IF NOT EXISTS model_versions(
    model TEXT NOT NULL,
    version BIGINT NOT NULL,
    path TEXT NOT NULL,
    promoted BIGINT NOT NULL,
    created BIGINT NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY(model, version));
CREATE TABLE IF NOT EXISTS drift(
    model TEXT NOT NULL,
    version BIGINT NOT NULL,
    "window" BIGINT NOT NULL,
    profile TEXT NOT NULL,
    PRIMARY KEY(model, version, "window"));
CREATE TABLE IF NOT EXISTS drift_reference(
    model TEXT NOT NULL,
    version BIGINT NOT NULL,
    profile TEXT NOT NULL,
    PRIMARY KEY(model, version));
"#;

/// The open database.
pub struct Store {
    conn: Conn,
    db: Database,
    name: Arc<str>,
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
    /// Opens the database `db` (a SQLite file is created when absent), creating its tables.
    pub fn open(db: impl Into<Database>) -> Result<Store> {
        let db = db.into();
        let conn = Conn::open(&db, SCHEMA, SCHEMA_VERSION)?;
        Ok(Store {
            conn,
            name: db.to_string().into(),
            db,
        })
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Stores `events` in one transaction: all of them or, on a conflict (an id stored with
    /// another time or text), none.
    pub fn insert_events(&mut self, events: &[Event]) -> Result<Inserted> {
        self.transaction(|tx| {
            let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            let mut known: HashMap<String, (i64, String)> = HashMap::new();
            for row in tx.query_bulk(FIND_EVENTS, &[Column::Text(ids)])? {
                known.insert(row.text(0)?, (row.int(1)?, row.text(2)?));
            }
            let mut out = Inserted::default();
            let mut new = Vec::new();
            for e in events {
                match known.get(&e.id) {
                    Some((time, _)) if *time != e.time => return Err(conflict(&e.id, "time")),
                    Some((_, text)) if *text != e.text => return Err(conflict(&e.id, "text")),
                    Some(_) => out.duplicates += 1,
                    None => {
                        known.insert(e.id.clone(), (e.time, e.text.clone()));
                        new.push(e);
                    }
                }
            }
            out.accepted = new.len();
            tx.insert_new_events(&new)?;
            Ok(out)
        })
    }

    /// Up to `limit` events not yet classified, in arrival order.
    pub fn pending(&mut self, limit: usize) -> Result<Vec<Pending>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT seq, time, text, entities FROM events WHERE classified = 0 \
                 ORDER BY seq LIMIT ?1",
                args![limit as i64],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(Pending {
                        seq: r.int(0)?,
                        time: r.int(1)?,
                        text: r.text(2)?,
                        entities: serde_json::from_str(&r.text(3)?).unwrap_or_default(),
                    })
                })
                .collect()
        })
    }

    /// Runs `f` in one transaction, committed when `f` succeeds.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let mut tx = self.begin(false)?;
        let out = f(&mut tx)?;
        let Tx { session, db } = tx;
        session.commit().map_err(|message| MonitorError::Store {
            db: db.to_string(),
            message,
        })?;
        Ok(out)
    }

    /// A read-only view through the same calls as in a transaction; reads see one snapshot.
    pub fn read<T>(&mut self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        // A transaction that is never committed.
        f(&mut self.begin(true)?)
    }

    fn begin(&mut self, read_only: bool) -> Result<Tx<'_>> {
        let name = self.name.clone();
        match self.conn.begin(read_only) {
            Ok(session) => Ok(Tx { session, db: name }),
            Err(message) => Err(MonitorError::Store {
                db: name.to_string(),
                message,
            }),
        }
    }

    /// Number of events stored, and of those classified.
    pub fn event_counts(&mut self) -> Result<(u64, u64)> {
        self.read(|tx| {
            let row = tx.one(
                "SELECT COUNT(*), CAST(COALESCE(SUM(classified), 0) AS BIGINT) FROM events",
                args![],
            )?;
            Ok((row.count(0)?, row.count(1)?))
        })
    }
}

const FIND_EVENTS: Bulk = Bulk {
    sqlite: "SELECT id, time, text FROM events WHERE id = ?1",
    postgres: "SELECT id, time, text FROM events WHERE id = ANY($1)",
};

/// Rows inserted in the order given, so that `seq` is their order of arrival.
const INSERT_EVENTS: Bulk = Bulk {
    sqlite: "INSERT INTO events(id, time, text, entities, meta) VALUES(?1, ?2, ?3, ?4, ?5)",
    postgres: "INSERT INTO events(id, time, text, entities, meta) \
               SELECT id, time, text, entities, meta FROM UNNEST($1::text[], $2::bigint[], \
               $3::text[], $4::text[], $5::text[]) WITH ORDINALITY \
               AS u(id, time, text, entities, meta, n) ORDER BY n",
};

const ADD_PREDICTIONS: Bulk = Bulk {
    sqlite: "INSERT INTO predictions(seq, model, label, confidence) VALUES(?1, ?2, ?3, ?4) \
             ON CONFLICT(seq, model) DO UPDATE SET label = excluded.label, \
             confidence = excluded.confidence",
    postgres: "INSERT INTO predictions(seq, model, label, confidence) \
               SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::float8[]) \
               ON CONFLICT(seq, model) DO UPDATE SET label = excluded.label, \
               confidence = excluded.confidence",
};

const ADD_COUNTS: Bulk = Bulk {
    sqlite: "INSERT INTO counts(\"window\", entity, topic, model, label, n) \
             VALUES(?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT(entity, topic, model, label, \"window\") \
             DO UPDATE SET n = counts.n + excluded.n",
    postgres: "INSERT INTO counts(\"window\", entity, topic, model, label, n) \
               SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], \
               $5::text[], $6::bigint[]) \
               ON CONFLICT(entity, topic, model, label, \"window\") \
               DO UPDATE SET n = counts.n + excluded.n",
};

const SERIES_MANY: Bulk = Bulk {
    sqlite: "SELECT entity, topic, model, label, \"window\", n FROM counts WHERE entity = ?1 \
             AND topic = ?2 AND model = ?3 AND label = ?4 AND \"window\" >= ?5 \
             AND \"window\" < ?6",
    postgres: "SELECT c.entity, c.topic, c.model, c.label, c.\"window\", c.n \
               FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
               $6::bigint[]) AS s(entity, topic, model, label, lo, hi) \
               JOIN counts c ON c.entity = s.entity AND c.topic = s.topic \
               AND c.model = s.model AND c.label = s.label \
               AND c.\"window\" >= s.lo AND c.\"window\" < s.hi",
};

const MARK_CLASSIFIED: Bulk = Bulk {
    sqlite: "UPDATE events SET classified = 1 WHERE seq = ?1",
    postgres: "UPDATE events SET classified = 1 WHERE seq = ANY($1)",
};

fn conflict(id: &str, field: &'static str) -> MonitorError {
    MonitorError::Conflict {
        id: id.to_string(),
        field,
    }
}

/// One transaction (or read snapshot) of the store.
pub struct Tx<'a> {
    session: Session<'a>,
    db: Arc<str>,
}

impl Tx<'_> {
    fn failed(&self, message: String) -> MonitorError {
        MonitorError::Store {
            db: self.db.to_string(),
            message,
        }
    }

    /// Runs a statement; the number of rows it changed.
    fn exec(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<usize> {
        self.session.exec(sql, args).map_err(|m| self.failed(m))
    }

    /// Runs a query; its rows.
    fn rows(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<Row>> {
        self.session
            .query(sql, args, &self.db)
            .map_err(|m| self.failed(m))
    }

    /// Runs a query; its first row, if any.
    fn row(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<Option<Row>> {
        Ok(self.rows(sql, args)?.into_iter().next())
    }

    /// Runs a query that gives one row (an aggregate).
    fn one(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<Row> {
        self.row(sql, args)?
            .ok_or_else(|| self.failed(format!("no row from {sql}")))
    }

    /// Runs `bulk` over the rows of `columns`; the number of rows changed.
    fn exec_bulk(&self, bulk: Bulk, columns: &[Column<'_>]) -> Result<usize> {
        self.session
            .exec_bulk(bulk, columns)
            .map_err(|m| self.failed(m))
    }

    /// Runs the query `bulk` over the rows of `columns`; the rows of all.
    fn query_bulk(&self, bulk: Bulk, columns: &[Column<'_>]) -> Result<Vec<Row>> {
        self.session
            .query_bulk(bulk, columns, &self.db)
            .map_err(|m| self.failed(m))
    }

    /// Inserts events known to be new, in their order.
    fn insert_new_events(&self, new: &[&Event]) -> Result<()> {
        let entities: Vec<String> = new
            .iter()
            .map(|e| serde_json::to_string(&e.entities).expect("strings"))
            .collect();
        let meta: Vec<String> = new
            .iter()
            .map(|e| serde_json::to_string(&e.meta).expect("JSON values"))
            .collect();
        self.exec_bulk(
            INSERT_EVENTS,
            &[
                Column::Text(new.iter().map(|e| e.id.as_str()).collect()),
                Column::Int(new.iter().map(|e| e.time).collect()),
                Column::Text(new.iter().map(|e| e.text.as_str()).collect()),
                Column::Text(entities.iter().map(String::as_str).collect()),
                Column::Text(meta.iter().map(String::as_str).collect()),
            ],
        )?;
        Ok(())
    }

    /// Records each event's prediction by `model` (`(seq, label, confidence)`).
    pub fn add_predictions(&self, model: &str, rows: &[(i64, String, f32)]) -> Result<()> {
        self.exec_bulk(
            ADD_PREDICTIONS,
            &[
                Column::Int(rows.iter().map(|r| r.0).collect()),
                Column::Text(vec![model; rows.len()]),
                Column::Text(rows.iter().map(|r| r.1.as_str()).collect()),
                Column::Real(rows.iter().map(|r| f64::from(r.2)).collect()),
            ],
        )?;
        Ok(())
    }

    /// Adds `deltas` to the windowed counts.
    pub fn add_counts(&self, deltas: &BTreeMap<CountKey, u64>) -> Result<()> {
        let keys: Vec<&CountKey> = deltas.keys().collect();
        self.exec_bulk(
            ADD_COUNTS,
            &[
                Column::Int(keys.iter().map(|k| k.window).collect()),
                Column::Text(keys.iter().map(|k| k.entity.as_str()).collect()),
                Column::Text(keys.iter().map(|k| k.topic.as_str()).collect()),
                Column::Text(keys.iter().map(|k| k.model.as_str()).collect()),
                Column::Text(keys.iter().map(|k| k.label.as_str()).collect()),
                Column::Int(deltas.values().map(|&n| n as i64).collect()),
            ],
        )?;
        Ok(())
    }

    /// Marks the events `seqs` as classified.
    pub fn mark_classified(&self, seqs: &[i64]) -> Result<()> {
        self.exec_bulk(MARK_CLASSIFIED, &[Column::Int(seqs.to_vec())])?;
        Ok(())
    }

    /// Records the entities a model named for event `seq`.
    pub fn set_entities(&self, seq: i64, entities: &[String]) -> Result<()> {
        let json = serde_json::to_string(entities).expect("strings");
        self.exec(
            "UPDATE events SET entities = ?2 WHERE seq = ?1",
            args![seq, &json],
        )?;
        Ok(())
    }

    /// The counts of several series, each in its windows `from..to` (`wanted`: the series'
    /// key, window ignored, and its range), by window; windows without events are absent.
    pub fn series_many(
        &self,
        wanted: &HashMap<CountKey, (i64, i64)>,
    ) -> Result<HashMap<CountKey, BTreeMap<i64, u64>>> {
        let keys: Vec<(&CountKey, &(i64, i64))> = wanted.iter().collect();
        let text = |f: fn(&CountKey) -> &str| Column::Text(keys.iter().map(|k| f(k.0)).collect());
        let rows = self.query_bulk(
            SERIES_MANY,
            &[
                text(|k| &k.entity),
                text(|k| &k.topic),
                text(|k| &k.model),
                text(|k| &k.label),
                Column::Int(keys.iter().map(|k| k.1 .0).collect()),
                Column::Int(keys.iter().map(|k| k.1 .1).collect()),
            ],
        )?;
        let mut out: HashMap<CountKey, BTreeMap<i64, u64>> = HashMap::new();
        for r in rows {
            let key = CountKey {
                window: 0,
                entity: r.text(0)?,
                topic: r.text(1)?,
                model: r.text(2)?,
                label: r.text(3)?,
            };
            out.entry(key).or_default().insert(r.int(4)?, r.count(5)?);
        }
        Ok(out)
    }

    /// The first window with events of `entity` × `topic`.
    pub fn first_window(&self, entity: &str, topic: &str) -> Result<Option<i64>> {
        self.one(
            "SELECT MIN(\"window\") FROM counts WHERE entity = ?1 AND topic = ?2 AND model = ''",
            args![entity, topic],
        )?
        .maybe_int(0)
    }

    /// Windows in which `rule` alerted for `entity` × `topic`, in order.
    pub fn alert_windows(&self, rule: &str, entity: &str, topic: &str) -> Result<Vec<i64>> {
        let rows = self.rows(
            "SELECT \"window\" FROM alerts WHERE rule = ?1 AND entity = ?2 AND topic = ?3 \
             ORDER BY \"window\"",
            args![rule, entity, topic],
        )?;
        rows.iter().map(|r| r.int(0)).collect()
    }

    /// Stores an alert (state `open`) and one pending delivery per sink, unless an alert with
    /// its id is stored already; whether it was new.
    pub fn add_alert(&self, alert: &crate::Alert, sinks: &[String]) -> Result<bool> {
        let body = serde_json::to_string(alert).expect("an alert serialises");
        let added = self.exec(
            "INSERT INTO alerts(id, rule, entity, topic, \"window\", body, state, created, \
             updated) VALUES(?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7, ?7) ON CONFLICT DO NOTHING",
            args![
                &alert.id,
                &alert.rule,
                &alert.series.entity,
                &alert.series.topic,
                alert.window,
                &body,
                alert.created
            ],
        )?;
        if added == 1 {
            for s in sinks {
                self.exec(
                    "INSERT INTO deliveries(alert_id, sink) VALUES(?1, ?2)",
                    args![&alert.id, s],
                )?;
            }
        }
        Ok(added == 1)
    }

    /// Alerts, newest first, with their state (`state`: only those in it).
    pub fn alerts(&self, state: Option<&str>, limit: usize) -> Result<Vec<serde_json::Value>> {
        let rows = self.rows(
            "SELECT body, state, updated FROM alerts \
             WHERE CAST(?1 AS TEXT) IS NULL OR state = ?1 \
             ORDER BY \"window\" DESC, id LIMIT ?2",
            args![state, limit as i64],
        )?;
        rows.iter()
            .map(|r| Ok(with_state(&r.text(0)?, &r.text(1)?, r.int(2)?)))
            .collect()
    }

    /// Sets an alert's state; the alert as it is now.
    pub fn set_alert_state(&self, id: &str, state: &str, now: i64) -> Result<serde_json::Value> {
        let changed = self.exec(
            "UPDATE alerts SET state = ?2, updated = ?3 WHERE id = ?1",
            args![id, state, now],
        )?;
        if changed == 0 {
            return Err(MonitorError::UnknownAlert(id.to_string()));
        }
        let body = self
            .one("SELECT body FROM alerts WHERE id = ?1", args![id])?
            .text(0)?;
        Ok(with_state(&body, state, now))
    }

    /// Deliveries not yet made whose next attempt is due at `now`, oldest alert first.
    pub fn due(&self, now: i64, limit: usize) -> Result<Vec<Due>> {
        let rows = self.rows(
            "SELECT d.alert_id, a.body, a.state, a.updated, d.sink, d.attempts \
             FROM deliveries d JOIN alerts a ON a.id = d.alert_id \
             WHERE d.delivered_at IS NULL AND d.next_at <= ?1 \
             ORDER BY a.created, a.\"window\", d.alert_id LIMIT ?2",
            args![now, limit as i64],
        )?;
        rows.iter()
            .map(|r| {
                Ok(Due {
                    alert_id: r.text(0)?,
                    body: with_state(&r.text(1)?, &r.text(2)?, r.int(3)?),
                    sink: r.text(4)?,
                    attempts: r.int(5)?,
                })
            })
            .collect()
    }

    /// Records the outcome of a delivery attempt: delivered at `now`, or failed with `error`
    /// and tried again at `retry_at`.
    pub fn delivery_attempt(
        &self,
        due: &Due,
        now: i64,
        outcome: std::result::Result<(), (String, i64)>,
    ) -> Result<()> {
        let (delivered, error, next) = match &outcome {
            Ok(()) => (Some(now), None, now),
            Err((error, retry_at)) => (None, Some(error.as_str()), *retry_at),
        };
        self.exec(
            "UPDATE deliveries SET attempts = attempts + 1, delivered_at = ?3, \
             last_error = ?4, next_at = ?5 WHERE alert_id = ?1 AND sink = ?2",
            args![&due.alert_id, &due.sink, delivered, error, next],
        )?;
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
        let rows = self.rows(
            "SELECT \"window\", model, label, n FROM counts WHERE entity = ?1 AND topic = ?2 \
             AND \"window\" >= ?3 AND \"window\" < ?4 ORDER BY \"window\"",
            args![entity, topic, from, to],
        )?;
        rows.iter()
            .map(|r| Ok((r.int(0)?, r.text(1)?, r.text(2)?, r.count(3)?)))
            .collect()
    }

    /// The newest window with events, if any.
    pub fn last_window(&self) -> Result<Option<i64>> {
        self.one(
            "SELECT MAX(\"window\") FROM counts WHERE entity = '*' AND topic = '*' AND model = ''",
            args![],
        )?
        .maybe_int(0)
    }

    /// The `limit` entities with the most events over the 30 days up to the newest window,
    /// with their counts, most first.
    pub fn entities(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        let rows = self.rows(
            "SELECT entity, CAST(SUM(n) AS BIGINT) FROM counts WHERE topic = '*' AND model = '' \
             AND entity != '*' AND \"window\" >= (SELECT MAX(\"window\") FROM counts \
             WHERE entity = '*' AND topic = '*' AND model = '') - ?2 \
             GROUP BY entity ORDER BY 2 DESC, 1 LIMIT ?1",
            args![limit as i64, ENTITY_HORIZON_SECS],
        )?;
        rows.iter().map(|r| Ok((r.text(0)?, r.count(1)?))).collect()
    }

    /// The newest `limit` events, newest first, each with its predictions (`{model: {label,
    /// confidence}}`, empty until classified).
    pub fn latest_events(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        let rows = self.rows(
            "SELECT seq, id, time, text, entities FROM events ORDER BY seq DESC LIMIT ?1",
            args![limit as i64],
        )?;
        let Some(oldest) = rows.last().map(|r| r.int(0)).transpose()? else {
            return Ok(Vec::new());
        };
        // The newest events are all those from the oldest of them on: one query finds their
        // predictions.
        let mut predictions: BTreeMap<i64, serde_json::Map<String, serde_json::Value>> =
            BTreeMap::new();
        for p in self.rows(
            "SELECT seq, model, label, confidence FROM predictions WHERE seq >= ?1",
            args![oldest],
        )? {
            predictions.entry(p.int(0)?).or_default().insert(
                p.text(1)?,
                serde_json::json!({"label": p.text(2)?, "confidence": p.real(3)?}),
            );
        }
        rows.iter()
            .map(|r| {
                let seq = r.int(0)?;
                Ok(serde_json::json!({
                    "id": r.text(1)?,
                    "time": crate::event::rfc3339(r.int(2)?),
                    "text": r.text(3)?,
                    "entities": serde_json::from_str::<serde_json::Value>(&r.text(4)?)
                        .unwrap_or_default(),
                    "predictions": predictions.remove(&seq).unwrap_or_default(),
                }))
            })
            .collect()
    }

    /// Deliveries made and still owed, per sink.
    pub fn delivery_counts(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        let rows = self.rows(
            "SELECT sink, COUNT(delivered_at), COUNT(*) - COUNT(delivered_at) \
             FROM deliveries GROUP BY sink",
            args![],
        )?;
        rows.iter()
            .map(|r| Ok((r.text(0)?, (r.count(1)?, r.count(2)?))))
            .collect()
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
