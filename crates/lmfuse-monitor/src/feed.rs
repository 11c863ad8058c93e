//! Events from a stream of NDJSON lines (a file, followed as it grows, or stdin), stored in
//! batches. A bad line is reported with its source and line number and skipped; the lines
//! around it are stored.

use crate::error::{MonitorError, Result};
use crate::event::{now_secs, parse_body};
use crate::monitor::Monitor;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What a feed did.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct FeedReport {
    /// Non-blank lines read.
    pub lines: usize,
    /// Events stored.
    pub accepted: usize,
    /// Events already stored.
    pub duplicates: usize,
    /// Lines refused (each reported).
    pub refused: usize,
}

/// How a feed reads.
pub struct Feed<'a> {
    /// Name of the source in messages (a path, `stdin`).
    pub source: &'a str,
    /// Lines per stored batch.
    pub batch: usize,
    /// Keep reading at the end of the input until this is set (a followed file); `None`:
    /// stop at the end.
    pub follow_until: Option<&'a AtomicBool>,
}

impl Feed<'_> {
    /// Reads `reader` to its end (or, following, until stopped), storing events in `monitor`;
    /// each refused line goes to `refused`.
    pub fn run(
        &self,
        monitor: &Monitor,
        mut reader: impl BufRead,
        refused: &dyn Fn(&MonitorError),
    ) -> Result<FeedReport> {
        let mut report = FeedReport::default();
        let mut events = Vec::new();
        let (mut line, mut number) = (String::new(), 0usize);
        loop {
            let read = reader
                .read_line(&mut line)
                .map_err(|source| MonitorError::Io {
                    path: self.source.into(),
                    source,
                })?;
            let at_end = read == 0 || !line.ends_with('\n');
            if at_end && self.following() {
                // A line still being written waits for its newline.
                self.flush(monitor, &mut events, &mut report, refused)?;
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            if read == 0 {
                break;
            }
            number += 1;
            if !line.trim().is_empty() {
                report.lines += 1;
                match parse_body(
                    line.as_bytes(),
                    now_secs(),
                    monitor.config().max_future_secs,
                ) {
                    Ok(mut parsed) => events.append(&mut parsed),
                    Err(e) => {
                        report.refused += 1;
                        refused(&at_line(e, self.source, number));
                    }
                }
            }
            line.clear();
            if events.len() >= self.batch {
                self.flush(monitor, &mut events, &mut report, refused)?;
            }
        }
        self.flush(monitor, &mut events, &mut report, refused)?;
        Ok(report)
    }

    fn following(&self) -> bool {
        self.follow_until
            .is_some_and(|stop| !stop.load(Ordering::SeqCst))
    }

    /// Stores the batch; when an id in it conflicts with a stored event, stores the events
    /// one by one and reports the conflicting ones.
    fn flush(
        &self,
        monitor: &Monitor,
        events: &mut Vec<crate::Event>,
        report: &mut FeedReport,
        refused: &dyn Fn(&MonitorError),
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(events);
        let mut add = |i: crate::store::Inserted| {
            report.accepted += i.accepted;
            report.duplicates += i.duplicates;
        };
        match monitor.ingest_events(batch.clone()) {
            Ok(inserted) => add(inserted),
            Err(MonitorError::Conflict { .. }) => {
                for event in batch {
                    match monitor.ingest_events(vec![event]) {
                        Ok(inserted) => add(inserted),
                        Err(e @ MonitorError::Conflict { .. }) => {
                            report.refused += 1;
                            refused(&MonitorError::Body(format!("{}: {e}", self.source)));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// `e` about one line of `source`.
fn at_line(e: MonitorError, source: &str, line: usize) -> MonitorError {
    match e {
        MonitorError::Event { field, message, .. } => MonitorError::Event {
            position: format!("{source} line {line}"),
            field,
            message,
        },
        other => MonitorError::Body(format!("{source} line {line}: {other}")),
    }
}
