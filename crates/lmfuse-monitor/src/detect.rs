//! Detectors over windowed series: a fixed level on a share, an EWMA z-score and a one-sided
//! CUSUM against a baseline of the earlier windows, each with a minimum count, a warm-up and a
//! cool-down. The baseline of a series is folded window by window from the stored counts, so
//! a restarted monitor rebuilds the same state from its database.

use crate::config::{Detector, Metric, Rule};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One series: an entity and a topic, each a name or [`crate::store::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Series {
    /// Entity, or `*`.
    pub entity: String,
    /// Topic, or `*`.
    pub topic: String,
}

/// An alert as raised (its state lives in the store).
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// `rule/entity/topic/window`: one alert per rule, series and window, and the
    /// idempotency key its receivers see.
    pub id: String,
    /// The rule's name.
    pub rule: String,
    /// `volume` or `share`.
    pub metric: &'static str,
    /// The model and label of a share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The label of a share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Which series.
    pub series: Series,
    /// Window start, seconds since the epoch.
    pub window: i64,
    /// Window start, RFC 3339.
    pub window_start: String,
    /// Window end, RFC 3339.
    pub window_end: String,
    /// The window's value when the rule fired (a count or a share).
    pub value: f64,
    /// The baseline's mean, for the detectors that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// The statistic compared with the threshold (the share, the z-score, the CUSUM sum).
    pub score: f64,
    /// The threshold it passed.
    pub threshold: f64,
    /// Events in the window when it fired.
    pub count: u64,
    /// When it was raised, seconds since the epoch (wall clock).
    #[serde(skip)]
    pub created: i64,
    /// When it was raised, RFC 3339.
    pub created_at: String,
}

/// The variance of a share near `p` over `count` events (`p` kept off 0 and 1).
fn binomial(p: f64, count: u64) -> f64 {
    let p = p.clamp(0.01, 0.99);
    p * (1.0 - p) / count.max(1) as f64
}

/// Largest squared standardised residual one window adds to a share's dispersion: a window
/// of three events all of one label is not evidence of a noisy series.
const MAX_RESIDUAL: f64 = 9.0;

/// The state of one rule on one series: the windows folded so far.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// The first window not folded yet.
    pub next_window: i64,
    mean: f64,
    var: f64,
    /// Shares: exponentially weighted counts of hits and of events (the baseline share is
    /// their ratio, so a window weighs by its events) and the dispersion beyond binomial
    /// (the weighted mean squared standardised residual, at least 1).
    hits: f64,
    events: f64,
    dispersion: f64,
    seen: u32,
    cusum: f64,
    alerted: BTreeSet<i64>,
}

/// A rule's verdict on a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The window's value (a count or a share).
    pub value: f64,
    /// The statistic.
    pub score: f64,
    /// Its threshold.
    pub threshold: f64,
    /// The baseline mean, where there is one.
    pub baseline: Option<f64>,
}

impl Baseline {
    /// A series that starts at window `first`, with the windows it alerted in before.
    pub fn new(first: i64, alerted: impl IntoIterator<Item = i64>) -> Baseline {
        Baseline {
            next_window: first,
            mean: 0.0,
            var: 0.0,
            hits: 0.0,
            events: 0.0,
            dispersion: 1.0,
            seen: 0,
            cusum: 0.0,
            alerted: alerted.into_iter().collect(),
        }
    }

    /// Folds the windows from `next_window` up to `to` (excluded), `size` seconds apart, with
    /// their event counts `volumes` and (shares) counts of the rule's label `hits`.
    pub fn advance(
        &mut self,
        rule: &Rule,
        to: i64,
        size: i64,
        volumes: &BTreeMap<i64, u64>,
        hits: &BTreeMap<i64, u64>,
    ) {
        while self.next_window < to {
            let w = self.next_window;
            self.next_window += size;
            if self.alerted.contains(&w) {
                // An anomalous window teaches the baseline nothing; a CUSUM restarts after it.
                self.cusum = 0.0;
                continue;
            }
            let count = volumes.get(&w).copied().unwrap_or(0);
            let Some(value) = value_of(rule, count, hits.get(&w).copied().unwrap_or(0)) else {
                continue;
            };
            if let Detector::Cusum { k, .. } = rule.detector {
                if self.seen > 0 {
                    let z = (value - self.mean) / self.sd(rule, count);
                    self.cusum = (self.cusum + z - k).max(0.0);
                }
            }
            self.fold(rule, value, count);
        }
    }

    /// Folds one window's value (over `count` events) into the baseline. A count: the mean
    /// and variance of the counts. A share: the counts of hits and events, so that the
    /// baseline share weighs each window by its events, and the dispersion beyond binomial.
    fn fold(&mut self, rule: &Rule, value: f64, count: u64) {
        let alpha = match rule.detector {
            Detector::Ewma { alpha, .. } | Detector::Cusum { alpha, .. } => alpha,
            Detector::Above(_) => 1.0,
        };
        let n = count as f64;
        if self.seen == 0 {
            self.mean = value;
            self.var = 0.0;
            (self.hits, self.events, self.dispersion) = (value * n, n, 1.0);
        } else if rule.metric == Metric::Share {
            let residual = (value - self.mean).powi(2) / binomial(self.mean, count);
            self.dispersion += alpha * (residual.min(MAX_RESIDUAL) - self.dispersion);
            self.hits += alpha * (value * n - self.hits);
            self.events += alpha * (n - self.events);
            self.mean = self.hits / self.events.max(f64::MIN_POSITIVE);
        } else {
            let diff = value - self.mean;
            let step = alpha * diff;
            self.mean += step;
            self.var = (1.0 - alpha) * (self.var + diff * step);
        }
        self.seen = self.seen.saturating_add(1);
    }

    /// The baseline's spread for a window of `count` events: at least the Poisson spread of a
    /// count; for a share, the binomial spread over `count` events times the series'
    /// dispersion.
    fn sd(&self, rule: &Rule, count: u64) -> f64 {
        match rule.metric {
            Metric::Volume => self.var.max(self.mean).max(1.0).sqrt(),
            Metric::Share => (self.dispersion.max(1.0) * binomial(self.mean, count)).sqrt(),
        }
    }

    /// Whether `rule` fires on window `window` (`size` seconds) holding `count` events and
    /// `hits` of the rule's label, given the windows folded so far.
    pub fn judge(
        &self,
        rule: &Rule,
        window: i64,
        size: i64,
        count: u64,
        hits: u64,
    ) -> Option<Verdict> {
        if count < rule.min_count || self.seen < rule.warmup || self.alerted.contains(&window) {
            return None;
        }
        let last = self.alerted.range(..window).next_back();
        if last.is_some_and(|&a| window - a <= i64::from(rule.cooldown) * size) {
            return None;
        }
        let value = value_of(rule, count, hits)?;
        let z = || (value - self.mean) / self.sd(rule, count);
        let (score, threshold, baseline) = match rule.detector {
            Detector::Above(level) => (value, level, None),
            Detector::Ewma { z: level, .. } if self.seen > 0 => (z(), level, Some(self.mean)),
            Detector::Cusum { k, h, .. } if self.seen > 0 => {
                ((self.cusum + z() - k).max(0.0), h, Some(self.mean))
            }
            _ => return None,
        };
        let floor = rule.floor.is_none_or(|level| value > level);
        (score > threshold && floor).then_some(Verdict {
            value,
            score,
            threshold,
            baseline,
        })
    }

    /// Records that the rule fired in `window`.
    pub fn alerted_in(&mut self, window: i64) {
        self.alerted.insert(window);
    }
}

/// The rule's value of a window with `count` events, `hits` of them with its label: `None`
/// for a share of a window without events.
fn value_of(rule: &Rule, count: u64, hits: u64) -> Option<f64> {
    match rule.metric {
        Metric::Volume => Some(count as f64),
        // Every window with events teaches a share's baseline (weighed by its events);
        // `min_count` gates only the judgement.
        Metric::Share if count > 0 => Some(hits as f64 / count as f64),
        Metric::Share => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(metric: Metric, detector: Detector) -> Rule {
        Rule {
            name: "r".into(),
            metric,
            target: None,
            by_entity: true,
            by_topic: false,
            detector,
            min_count: 5,
            warmup: 4,
            cooldown: 2,
            floor: None,
        }
    }

    fn steady(n: i64, count: u64) -> BTreeMap<i64, u64> {
        (0..n).map(|w| (w, count)).collect()
    }

    #[test]
    fn a_volume_spike_fires_after_the_warm_up_and_not_in_the_cool_down() {
        let r = rule(Metric::Volume, Detector::Ewma { z: 4.0, alpha: 0.2 });
        let mut b = Baseline::new(0, []);
        b.advance(&r, 3, 1, &steady(3, 10), &BTreeMap::new());
        assert_eq!(b.judge(&r, 3, 1, 60, 0), None, "still warming up");
        b.advance(&r, 10, 1, &steady(10, 10), &BTreeMap::new());
        assert_eq!(b.judge(&r, 10, 1, 15, 0), None, "within the Poisson spread");
        let v = b.judge(&r, 10, 1, 60, 0).expect("a spike");
        assert!(v.score > 10.0 && v.baseline == Some(10.0), "{v:?}");
        b.alerted_in(10);
        assert_eq!(b.judge(&r, 12, 1, 60, 0), None, "cool-down");
        assert!(b.judge(&r, 13, 1, 60, 0).is_some(), "after the cool-down");
        assert_eq!(b.judge(&r, 10, 1, 4, 0), None, "under the minimum count");
    }

    #[test]
    fn a_share_needs_its_minimum_and_an_alerted_window_is_not_learned() {
        let r = rule(Metric::Share, Detector::Ewma { z: 3.0, alpha: 0.3 });
        let volumes = steady(8, 20);
        let hits: BTreeMap<i64, u64> = (0..8).map(|w| (w, if w == 5 { 18 } else { 4 })).collect();
        let mut b = Baseline::new(0, [5]);
        b.advance(&r, 8, 1, &volumes, &hits);
        assert!(
            (b.mean - 0.2).abs() < 1e-9,
            "the alerted window 5 is skipped: {}",
            b.mean
        );
        assert!(b.judge(&r, 8, 1, 20, 16).is_some());
        assert_eq!(b.judge(&r, 8, 1, 20, 6), None);
        let above = rule(Metric::Share, Detector::Above(0.4));
        let fresh = Baseline::new(0, []);
        let mut no_warmup = above.clone();
        no_warmup.warmup = 0;
        assert_eq!(
            fresh.judge(&above, 0, 1, 20, 18),
            None,
            "warm-up applies to levels too"
        );
        assert!(fresh.judge(&no_warmup, 0, 1, 20, 9).is_some());
        assert_eq!(
            fresh.judge(&no_warmup, 0, 1, 20, 8),
            None,
            "0.40 is not above 0.4"
        );
    }

    #[test]
    fn a_floor_keeps_an_unusual_but_small_share_quiet() {
        let mut r = rule(Metric::Share, Detector::Ewma { z: 3.0, alpha: 0.3 });
        let mut b = Baseline::new(0, []);
        b.advance(&r, 8, 1, &steady(8, 20), &(0..8).map(|w| (w, 1)).collect());
        assert!(b.judge(&r, 8, 1, 20, 8).is_some(), "0.05 → 0.40 is unusual");
        r.floor = Some(0.5);
        assert_eq!(b.judge(&r, 8, 1, 20, 8), None, "but not above 0.5");
        assert!(b.judge(&r, 8, 1, 20, 12).is_some(), "0.60 is both");
    }

    #[test]
    fn cusum_accumulates_a_sustained_small_shift() {
        let r = rule(
            Metric::Volume,
            Detector::Cusum {
                k: 0.5,
                h: 4.0,
                alpha: 0.05,
            },
        );
        let mut counts = steady(20, 100);
        for w in 20..24 {
            counts.insert(w, 120);
        }
        let mut b = Baseline::new(0, []);
        b.advance(&r, 21, 1, &counts, &BTreeMap::new());
        assert_eq!(
            b.judge(&r, 21, 1, 120, 0),
            None,
            "two windows of +2 sd are not enough"
        );
        b.advance(&r, 23, 1, &counts, &BTreeMap::new());
        assert!(b.judge(&r, 23, 1, 120, 0).is_some(), "four in a row are");
    }
}
