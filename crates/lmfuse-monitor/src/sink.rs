//! Where alerts go. A delivery is recorded in the store only after the sink took it, and is
//! tried again with a growing wait until it is; the webhook sends the alert id as
//! `Idempotency-Key` so that a receiver can drop a repeat, and the log sink skips ids the file
//! already holds, so neither sees an alert twice.

use crate::config::{SinkConfig, SinkKind};
use crate::error::{MonitorError, Result};
use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// A destination of alerts.
pub trait Sink: Send + Sync {
    /// Its name in the configuration.
    fn name(&self) -> &str;
    /// Delivers one alert (`id`, its JSON); an error is retried later.
    fn send(&self, id: &str, alert: &Value) -> std::result::Result<(), String>;
}

/// The sink a configuration entry describes.
pub fn sink_of(config: &SinkConfig) -> Result<Box<dyn Sink>> {
    Ok(match &config.kind {
        SinkKind::Webhook { url, timeout_secs } => Box::new(Webhook {
            name: config.name.clone(),
            url: url.clone(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(*timeout_secs))
                .build(),
        }),
        SinkKind::Log(path) => Box::new(LogFile::open(&config.name, path.clone())?),
        SinkKind::Stdout => Box::new(Stdout(config.name.clone())),
    })
}

/// HTTP POST of the alert as JSON.
struct Webhook {
    name: String,
    url: String,
    agent: ureq::Agent,
}

impl Sink for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&self, id: &str, alert: &Value) -> std::result::Result<(), String> {
        match self
            .agent
            .post(&self.url)
            .set("Idempotency-Key", id)
            .send_json(alert)
        {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, _)) => Err(format!("{} answered {code}", self.url)),
            Err(e) => Err(format!("{}: {e}", self.url)),
        }
    }
}

/// One JSON line per alert, appended and synced.
struct LogFile {
    name: String,
    path: PathBuf,
    /// Alert ids already in the file.
    written: Mutex<HashSet<String>>,
}

impl LogFile {
    fn open(name: &str, path: PathBuf) -> Result<LogFile> {
        let io = |source| MonitorError::Io {
            path: path.clone(),
            source,
        };
        let mut written = HashSet::new();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        // A line cut by a crash is dropped (its alert was not recorded as delivered, so it
        // is written again, whole).
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io)?;
            f.set_len(whole as u64).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        for line in bytes[..whole].lines() {
            let line = line.map_err(io)?;
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if let Some(id) = v.get("id").and_then(Value::as_str) {
                    written.insert(id.to_string());
                }
            }
        }
        Ok(LogFile {
            name: name.to_string(),
            path,
            written: Mutex::new(written),
        })
    }
}

impl Sink for LogFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&self, id: &str, alert: &Value) -> std::result::Result<(), String> {
        let mut written = self.written.lock().expect("log sink lock");
        if written.contains(id) {
            return Ok(());
        }
        let line = format!("{}\n", serde_json::to_string(alert).expect("JSON"));
        let fail = |e: std::io::Error| format!("{}: {e}", self.path.display());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(fail)?;
        f.write_all(line.as_bytes()).map_err(fail)?;
        f.sync_data().map_err(fail)?;
        written.insert(id.to_string());
        Ok(())
    }
}

/// One JSON line per alert on standard output.
struct Stdout(String);

impl Sink for Stdout {
    fn name(&self) -> &str {
        &self.0
    }

    fn send(&self, _: &str, alert: &Value) -> std::result::Result<(), String> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(alert).expect("JSON"))
            .and_then(|_| out.flush())
            .map_err(|e| format!("stdout: {e}"))
    }
}

/// Seconds to wait before attempt `attempts + 1` (doubling from one second, at most `max`).
pub fn backoff_secs(attempts: i64, max: i64) -> i64 {
    let doubled = 1_i64
        .checked_shl(attempts.clamp(0, 30) as u32)
        .unwrap_or(i64::MAX);
    doubled.min(max).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let waits: Vec<i64> = (0..8).map(|a| backoff_secs(a, 20)).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 20, 20, 20]);
        assert_eq!(backoff_secs(500, 60), 60);
    }

    #[test]
    fn the_log_sink_writes_each_alert_once_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.log");
        let config = SinkConfig {
            name: "log".into(),
            kind: SinkKind::Log(path.clone()),
            max_backoff_secs: 60,
        };
        let alert = |id: &str| serde_json::json!({"id": id, "rule": "r"});
        let sink = sink_of(&config).unwrap();
        sink.send("a", &alert("a")).unwrap();
        sink.send("a", &alert("a")).unwrap();
        // A restart after a crash that cut a line: the whole lines are known.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"id\": \"b\", \"ru")
            .unwrap();
        let again = sink_of(&config).unwrap();
        again.send("a", &alert("a")).unwrap();
        again.send("c", &alert("c")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("\"id\":\"a\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"id\":\"c\"").count(), 1, "{text}");
        assert!(!text.contains("\"b\""), "the cut line is dropped: {text}");
        assert_eq!(text.lines().count(), 2);
    }
}
