//! Prometheus metrics, kept with atomics and rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// A histogram with fixed upper bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of observations, in millionths.
    sum_micro: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micro
            .fetch_add((v.max(0.0) * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

const SECONDS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
const TOKENS: &[f64] = &[
    16.0, 64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 65536.0,
];

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Time from admission to the start of the batch that ran the request.
    pub queue_seconds: Histogram,
    /// Time of one merged batch in the model.
    pub inference_seconds: Histogram,
    /// Time from the start of the request to the response, for the model routes.
    pub request_seconds: Histogram,
    /// Texts per merged batch.
    pub batch_size: Histogram,
    /// Tokens per merged batch.
    pub batch_tokens: Histogram,
    /// Requests waiting in the queue.
    pub queue_depth: AtomicI64,
    /// Requests dropped before running because their client went away or timed out.
    pub dropped: AtomicU64,
    /// Texts run through the model.
    pub texts: AtomicU64,
    /// Successful reloads.
    pub reloads_ok: AtomicU64,
    /// Failed reloads.
    pub reloads_failed: AtomicU64,
    /// 1 when the model is loaded and warmed.
    pub ready: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            failures: Mutex::default(),
            queue_seconds: Histogram::new(SECONDS),
            inference_seconds: Histogram::new(SECONDS),
            request_seconds: Histogram::new(SECONDS),
            batch_size: Histogram::new(SIZES),
            batch_tokens: Histogram::new(TOKENS),
            queue_depth: AtomicI64::new(0),
            dropped: AtomicU64::new(0),
            texts: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            ready: AtomicI64::new(0),
        }
    }
}

impl Metrics {
    /// Counts a finished request on `route` with `status`.
    pub fn request(&self, route: &'static str, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route, status))
            .or_default() += 1;
    }

    /// Counts a failed request by reason (the error `type`).
    pub fn failure(&self, reason: &'static str) {
        *self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Failures of `reason` so far.
    pub fn failures(&self, reason: &str) -> u64 {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP lmfuse_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE lmfuse_requests_total counter\n");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "lmfuse_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP lmfuse_request_failures_total Failed requests by reason (the error type).\n",
        );
        out.push_str("# TYPE lmfuse_request_failures_total counter\n");
        for (reason, n) in self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "lmfuse_request_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        self.queue_seconds.render(
            &mut out,
            "lmfuse_queue_seconds",
            "Time requests wait in the queue before their batch runs.",
        );
        self.inference_seconds.render(
            &mut out,
            "lmfuse_inference_seconds",
            "Time of one merged batch in the model.",
        );
        self.request_seconds.render(
            &mut out,
            "lmfuse_request_seconds",
            "End-to-end time of successful model requests.",
        );
        self.batch_size
            .render(&mut out, "lmfuse_batch_size", "Texts per merged batch.");
        self.batch_tokens
            .render(&mut out, "lmfuse_batch_tokens", "Tokens per merged batch.");
        let gauges = [
            (
                "lmfuse_queue_depth",
                "gauge",
                "Requests waiting in the queue.",
                self.queue_depth.load(Ordering::Relaxed),
            ),
            (
                "lmfuse_ready",
                "gauge",
                "1 when the model is loaded and warmed.",
                self.ready.load(Ordering::Relaxed),
            ),
            (
                "lmfuse_dropped_total",
                "counter",
                "Queued requests dropped before running (client gone or timed out).",
                self.dropped.load(Ordering::Relaxed) as i64,
            ),
            (
                "lmfuse_texts_total",
                "counter",
                "Texts run through the model.",
                self.texts.load(Ordering::Relaxed) as i64,
            ),
        ];
        for (name, kind, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        out.push_str("# HELP lmfuse_reloads_total Model reloads by result.\n");
        out.push_str("# TYPE lmfuse_reloads_total counter\n");
        let _ = writeln!(
            out,
            "lmfuse_reloads_total{{result=\"ok\"}} {}\nlmfuse_reloads_total{{result=\"failed\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_render() {
        let m = Metrics::default();
        for v in [0.0005, 0.003, 0.003, 100.0] {
            m.queue_seconds.observe(v);
        }
        m.request("/predict", 200);
        m.request("/predict", 200);
        m.failure("overloaded");
        let text = m.render();
        assert!(
            text.contains("lmfuse_queue_seconds_bucket{le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lmfuse_queue_seconds_bucket{le=\"0.005\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("lmfuse_queue_seconds_bucket{le=\"30\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("lmfuse_queue_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("lmfuse_queue_seconds_count 4\n"), "{text}");
        assert!(text.contains("lmfuse_requests_total{route=\"/predict\",status=\"200\"} 2\n"));
        assert!(text.contains("lmfuse_request_failures_total{reason=\"overloaded\"} 1\n"));
        assert_eq!(m.failures("overloaded"), 1);
        assert_eq!(m.failures("timeout"), 0);
        // Every metric has HELP and TYPE lines.
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
    }
}
