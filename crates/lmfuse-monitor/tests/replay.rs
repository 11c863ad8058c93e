//! A seeded 30-day stream replayed through the monitor with a keyword classifier: every
//! injected burst alerts within one window of its start, the steady parts raise at most one
//! alert, a restarted monitor fed the same events stores and alerts nothing twice, and a
//! shift of the stream's vocabulary raises drift past its threshold (and nothing before).
//! Every test runs on SQLite and on PostgreSQL (`LMFUSE_TEST_POSTGRES`).

use lmfuse_monitor::simulate::{simulate, Burst, StreamSpec};
use lmfuse_monitor::store::Database;
use lmfuse_monitor::testing::{postgres_server, scratch_postgres};
use lmfuse_monitor::{Classified, Classify, Event, Monitor, MonitorConfig};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// "negative" when the text says so; sure of texts in its vocabulary, unsure of others;
/// embeds a text as its counts of a few word buckets.
struct Keyword;

const KNOWN: [&str; 4] = ["awful", "fine", "service", "number"];

impl Classify for Keyword {
    fn labels(&self) -> Vec<String> {
        vec!["negative".into(), "positive".into()]
    }

    fn classify(&self, texts: &[&str]) -> Result<Vec<(String, f32)>, String> {
        Ok(texts
            .iter()
            .map(|t| {
                let label = if t.contains("awful") {
                    "negative"
                } else {
                    "positive"
                };
                let known = t
                    .split_whitespace()
                    .all(|w| KNOWN.contains(&w) || w.parse::<u32>().is_ok());
                (label.to_string(), if known { 0.9 } else { 0.6 })
            })
            .collect())
    }

    fn classify_embedded(&self, texts: &[&str]) -> Result<Classified, String> {
        let embeddings = texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; 8];
                for w in t.split_whitespace().filter(|w| w.parse::<u32>().is_err()) {
                    v[w.bytes().map(usize::from).sum::<usize>() % 8] += 1.0;
                }
                v
            })
            .collect();
        Ok(Classified {
            predictions: self.classify(texts)?,
            embeddings: Some(embeddings),
        })
    }
}

const CONFIG: &str = r#"
[monitor]
window = "1h"
batch = 500

[[model]]
name = "sentiment"
bundle = "unused"

[[rule]]
name = "negative-share"
kind = "share"
model = "sentiment"
label = "negative"
above = 0.6
min_count = 10
group_by = ["entity"]

[[rule]]
name = "volume"
kind = "ewma"
metric = "volume"
z = 5.0
min_count = 20
group_by = ["entity"]

[[rule]]
name = "negative-cusum"
kind = "cusum"
metric = "share"
model = "sentiment"
label = "negative"
min_count = 15
h = 6.0
group_by = ["entity"]
"#;

fn stream() -> (Vec<Event>, Vec<Burst>) {
    let negative: Vec<String> = (0..50)
        .map(|i| format!("awful service number {i}"))
        .collect();
    let other: Vec<String> = (0..50)
        .map(|i| format!("fine service number {i}"))
        .collect();
    simulate(&StreamSpec::default(), &negative, &other)
}

fn open(db: &Database) -> Monitor {
    open_with(CONFIG, db)
}

fn open_with(config: &str, db: &Database) -> Monitor {
    let config = MonitorConfig::parse(config, Path::new(".")).unwrap();
    let loader = Box::new(|_: &Path| Ok(Arc::new(Keyword) as Arc<dyn Classify>));
    Monitor::open(config, db.clone(), loader).unwrap()
}

fn replay(monitor: &Monitor, events: &[Event]) -> (usize, usize) {
    let (mut accepted, mut duplicates) = (0, 0);
    for chunk in events.chunks(500) {
        let inserted = monitor.ingest_events(chunk.to_vec()).unwrap();
        accepted += inserted.accepted;
        duplicates += inserted.duplicates;
        monitor.process_all().unwrap();
    }
    (accepted, duplicates)
}

fn window_of(alert: &Value) -> i64 {
    alert["window"].as_i64().unwrap()
}

fn every_burst_alerts_within_a_window_and_the_steady_parts_stay_quiet(dbs: &Databases) {
    let (events, bursts) = stream();
    let db = dbs.get("monitor");
    let monitor = open(&db);
    assert_eq!(replay(&monitor, &events), (events.len(), 0));
    let alerts = monitor.alerts(None, 10_000).unwrap();
    let mut false_alerts = Vec::new();
    for a in &alerts {
        let entity = a["series"]["entity"].as_str().unwrap();
        let w = window_of(a);
        let in_burst = bursts
            .iter()
            .any(|b| b.entity == entity && w + 3_600 > b.start && w < b.end);
        if !in_burst {
            false_alerts.push(a.clone());
        }
    }
    for b in &bursts {
        let first = alerts
            .iter()
            .filter(|a| a["series"]["entity"] == b.entity.as_str())
            .map(window_of)
            .filter(|&w| w + 3_600 > b.start)
            .min();
        let first = first.unwrap_or_else(|| panic!("burst {b:?} raised no alert"));
        assert!(
            first <= b.start + 3_600,
            "burst {b:?}: first alert in the window of {first}, more than one window late"
        );
    }
    assert!(false_alerts.len() <= 1, "false alerts: {false_alerts:#?}");
    let status = monitor.status().unwrap();
    assert_eq!(status.classified, events.len() as u64);

    // A restart on the same database, fed the whole stream again: nothing new.
    drop(monitor);
    let again = open(&db);
    assert_eq!(replay(&again, &events), (0, events.len()));
    assert_eq!(again.alerts(None, 10_000).unwrap().len(), alerts.len());
}

fn a_monitor_restarted_mid_stream_raises_the_alerts_of_an_uninterrupted_one(dbs: &Databases) {
    let (events, _) = stream();
    let whole = open(&dbs.get("whole"));
    replay(&whole, &events);
    let split_db = dbs.get("split");
    let half = events.len() / 2;
    {
        let first = open(&split_db);
        replay(&first, &events[..half]);
        // Stored, not yet processed when the monitor stops.
        first
            .ingest_events(events[half..half + 700].to_vec())
            .unwrap();
    }
    let second = open(&split_db);
    second.process_all().unwrap();
    replay(&second, &events[half..]);
    let ids = |m: &Monitor| -> Vec<String> {
        let mut v: Vec<String> = m
            .alerts(None, 10_000)
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&second), ids(&whole));
    assert_eq!(second.status().unwrap().classified, events.len() as u64);
}

fn a_conflicting_id_refuses_the_request_and_keeps_what_is_stored(dbs: &Databases) {
    let monitor = open(&dbs.get("m"));
    let body =
        r#"[{"id": "a", "time": 100, "text": "fine"}, {"id": "b", "time": 100, "text": "awful"}]"#;
    let first = monitor.ingest(body.as_bytes()).unwrap();
    assert_eq!((first.accepted, first.duplicates), (2, 0));
    let again = monitor.ingest(body.as_bytes()).unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 2));
    let changed =
        r#"[{"id": "c", "time": 100, "text": "new"}, {"id": "b", "time": 100, "text": "other"}]"#;
    let e = monitor.ingest(changed.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("\"b\"") && e.contains("text"), "{e}");
    assert_eq!(
        monitor.status().unwrap().events,
        2,
        "c was not stored either"
    );
}

fn a_shift_of_vocabulary_raises_drift_and_the_steady_days_do_not(dbs: &Databases) {
    let (mut events, _) = stream();
    let start = StreamSpec::default().start;
    let shift = start + 20 * 86_400;
    for (i, e) in events.iter_mut().enumerate() {
        if e.time >= shift {
            e.text = format!("parcel arrived broken {}", i % 50);
        }
    }
    let train = dbs.dir().join("train.jsonl");
    let lines: String = (0..200)
        .map(|i| {
            let text = if i % 5 == 0 {
                "awful service number 1"
            } else {
                "fine service number 2"
            };
            format!("{}\n", serde_json::json!({"text": text, "label": "x"}))
        })
        .collect();
    std::fs::write(&train, lines).unwrap();
    let config = CONFIG.replace(
        "bundle = \"unused\"",
        &format!(
            "bundle = \"unused\"\ntrain = {:?}\n\n[drift]\nmin_count = 100",
            train.display().to_string()
        ),
    );
    let monitor = open_with(&config, &dbs.get("m"));
    replay(&monitor, &events);
    let drift: Vec<Value> = monitor
        .alerts(None, 10_000)
        .unwrap()
        .into_iter()
        .filter(|a| a["rule"] == "drift")
        .collect();
    let windows: std::collections::BTreeSet<i64> = drift.iter().map(window_of).collect();
    // Drift alerts its onset; the days after it stay drifted without new alerts.
    assert_eq!(windows, [shift].into(), "{drift:#?}");
    for metric in ["psi_labels", "psi_confidence", "centroid_distance"] {
        assert!(
            drift
                .iter()
                .any(|a| a["metric"] == metric && window_of(a) == shift),
            "no {metric} alert on the day of the shift: {drift:#?}"
        );
    }
    let figures = monitor.drift(40).unwrap();
    let days = figures["sentiment"]["windows"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    for day in days {
        let drifted = day["drifted"].as_bool().unwrap();
        assert_eq!(drifted, day["window"].as_i64().unwrap() >= shift, "{day}");
    }
}

fn feedback_is_checked_whole_and_stored_once_per_event_and_model(dbs: &Databases) {
    let monitor = open(&dbs.get("m"));
    let body =
        r#"[{"id": "a", "time": 100, "text": "fine"}, {"id": "b", "time": 100, "text": "awful"}]"#;
    monitor.ingest(body.as_bytes()).unwrap();
    let report = monitor
        .feedback(br#"[{"id": "a", "label": "negative"}, {"id": "b", "label": "negative", "model": "sentiment"}]"#)
        .unwrap();
    assert_eq!((report.stored, report.replaced), (2, 0));
    let again = monitor
        .feedback(br#"{"id": "a", "label": "positive"}"#)
        .unwrap();
    assert_eq!((again.stored, again.replaced), (1, 1));
    for (bad, named) in [
        (
            r#"[{"id": "a", "label": "positive"}, {"id": "zz", "label": "positive"}]"#,
            "zz",
        ),
        (r#"{"id": "a", "label": "neutral"}"#, "label"),
        (
            r#"{"id": "a", "label": "positive", "model": "topic"}"#,
            "model",
        ),
        (r#"{"id": "a"}"#, "label"),
        (r#"{"id": "a", "label": "positive", "score": 1}"#, "score"),
    ] {
        let e = monitor.feedback(bad.as_bytes()).unwrap_err().to_string();
        assert!(e.contains(named), "{bad}: {e}");
    }
    let models = monitor.models().unwrap();
    assert_eq!(models[0].feedback, 2, "the refused requests stored nothing");
    assert_eq!((models[0].serving, models[0].versions.len()), (1, 1));
}

/// [`Keyword`], counting the texts it is asked about.
struct Counting(std::sync::atomic::AtomicUsize);

impl Classify for Counting {
    fn labels(&self) -> Vec<String> {
        Keyword.labels()
    }

    fn classify(&self, texts: &[&str]) -> Result<Vec<(String, f32)>, String> {
        self.0
            .fetch_add(texts.len(), std::sync::atomic::Ordering::SeqCst);
        Keyword.classify(texts)
    }
}

fn a_repeated_text_is_classified_once_while_the_cache_holds_it(dbs: &Databases) {
    let (events, _) = stream();
    let counting = Arc::new(Counting(Default::default()));
    let shared = counting.clone();
    let config = MonitorConfig::parse(CONFIG, Path::new(".")).unwrap();
    let loader = Box::new(move |_: &Path| Ok(shared.clone() as Arc<dyn Classify>));
    let monitor = Monitor::open(config, dbs.get("m"), loader).unwrap();
    replay(&monitor, &events);
    // 100 distinct texts in the whole stream.
    assert_eq!(counting.0.load(std::sync::atomic::Ordering::SeqCst), 100);
    let uncached = CONFIG.replace("batch = 500", "batch = 500\ncache_texts = 0");
    let counting = Arc::new(Counting(Default::default()));
    let shared = counting.clone();
    let config = MonitorConfig::parse(&uncached, Path::new(".")).unwrap();
    let loader = Box::new(move |_: &Path| Ok(shared.clone() as Arc<dyn Classify>));
    let monitor = Monitor::open(config, dbs.get("n"), loader).unwrap();
    replay(&monitor, &events);
    let asked = counting.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        asked > 10 * 100,
        "{asked}: without a cache each batch asks its distinct texts"
    );
}

/// Capitalised words are entities.
struct Capitals;

impl lmfuse_monitor::entities::FindEntities for Capitals {
    fn find(&self, texts: &[&str]) -> Result<Vec<Vec<String>>, String> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut names: Vec<String> = t
                    .split_whitespace()
                    .filter(|w| w.starts_with(char::is_uppercase))
                    .map(String::from)
                    .collect();
                names.sort();
                names.dedup();
                names
            })
            .collect())
    }
}

fn events_that_name_no_entity_get_the_entity_model_s_and_are_counted_under_them(dbs: &Databases) {
    let config = CONFIG.replacen(
        "[[rule]]",
        "[entities]\n\"Initech\" = [\"initech\"]\n\n[[rule]]",
        1,
    );
    let mut monitor = {
        let config = MonitorConfig::parse(&config, Path::new(".")).unwrap();
        let loader = Box::new(|_: &Path| Ok(Arc::new(Keyword) as Arc<dyn Classify>));
        Monitor::open(config, dbs.get("m"), loader).unwrap()
    };
    monitor.set_entity_finder(Box::new(Capitals));
    let body = r#"[
        {"id": "1", "time": 100, "text": "awful service at Acme"},
        {"id": "2", "time": 100, "text": "Acme and Globex were fine"},
        {"id": "3", "time": 100, "text": "fine service", "entity": "Umbrella"},
        {"id": "4", "time": 100, "text": "Initech was awful"},
        {"id": "5", "time": 100, "text": "nobody named"}
    ]"#;
    monitor.ingest(body.as_bytes()).unwrap();
    monitor.process_all().unwrap();
    let entities: std::collections::BTreeMap<String, u64> =
        monitor.entities(10).unwrap().into_iter().collect();
    let expected = [("Acme", 2), ("Globex", 1), ("Initech", 1), ("Umbrella", 1)];
    assert_eq!(
        entities,
        expected.iter().map(|(e, n)| (e.to_string(), *n)).collect()
    );
    let events = monitor.latest_events(5).unwrap();
    let named: Vec<&Value> = events.iter().map(|e| &e["entities"]).collect();
    assert_eq!(named[4], &serde_json::json!(["Acme"]), "{events:#?}");
    assert_eq!(
        named[0],
        &serde_json::json!([]),
        "nothing found, nothing named"
    );
}

fn a_promoted_version_that_fails_to_load_is_demoted_and_the_serving_one_stays(dbs: &Databases) {
    let db = dbs.get("m");
    let config = MonitorConfig::parse(CONFIG, Path::new(".")).unwrap();
    let loader = Box::new(|path: &Path| match path == Path::new("broken") {
        true => Err("weights.safetensors is truncated".to_string()),
        false => Ok(Arc::new(Keyword) as Arc<dyn Classify>),
    });
    let monitor = Monitor::open(config, &db, loader).unwrap();
    let mut other = lmfuse_monitor::store::Store::open(db.clone()).unwrap();
    let report = serde_json::json!({"reason": "made by hand"});
    other
        .transaction(|tx| tx.add_version("sentiment", "broken", true, &report, 1))
        .unwrap();
    let e = monitor.process_batch().unwrap_err().to_string();
    assert!(e.contains("version 2") && e.contains("truncated"), "{e}");
    assert_eq!(
        monitor.process_batch().unwrap(),
        0,
        "named once, then the old version serves"
    );
    let models = monitor.models().unwrap();
    assert_eq!(models[0].serving, 1);
    assert!(!models[0].versions[1].promoted);
    assert!(models[0].versions[1].report["load_error"]
        .as_str()
        .unwrap()
        .contains("truncated"));
}

/// The databases of one test: SQLite files in a scratch folder, or scratch PostgreSQL
/// databases named after the test.
struct Databases {
    dir: tempfile::TempDir,
    postgres: Option<(String, &'static str)>,
}

impl Databases {
    fn sqlite() -> Databases {
        Databases {
            dir: tempfile::tempdir().unwrap(),
            postgres: None,
        }
    }

    fn postgres(test: &'static str) -> Option<Databases> {
        Some(Databases {
            dir: tempfile::tempdir().unwrap(),
            postgres: Some((postgres_server()?, test)),
        })
    }

    /// The database `name` of this test.
    fn get(&self, name: &str) -> Database {
        match &self.postgres {
            None => Database::Sqlite(self.dir.path().join(format!("{name}.db"))),
            Some((server, test)) => scratch_postgres(server, &format!("replay_{test}_{name}")),
        }
    }

    /// A scratch folder for other files.
    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $test() {
                super::$test(&super::Databases::sqlite());
            })*
        }
        mod postgres {
            $(#[test]
            fn $test() {
                if let Some(dbs) = super::Databases::postgres(stringify!($test)) {
                    super::$test(&dbs);
                }
            })*
        }
    };
}

on_both_databases!(
    every_burst_alerts_within_a_window_and_the_steady_parts_stay_quiet,
    a_monitor_restarted_mid_stream_raises_the_alerts_of_an_uninterrupted_one,
    a_conflicting_id_refuses_the_request_and_keeps_what_is_stored,
    a_shift_of_vocabulary_raises_drift_and_the_steady_days_do_not,
    feedback_is_checked_whole_and_stored_once_per_event_and_model,
    a_repeated_text_is_classified_once_while_the_cache_holds_it,
    events_that_name_no_entity_get_the_entity_model_s_and_are_counted_under_them,
    a_promoted_version_that_fails_to_load_is_demoted_and_the_serving_one_stays,
);
