//! A seeded stream for replays: events of ~20 entities over some simulated days, drawn from
//! labelled texts (negative and other), with injected negative bursts whose times are known,
//! so that a test or a bench can check which bursts alerted and what else did.

use crate::event::Event;
use lmfuse_core::SeededRng;
use serde::Serialize;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// First instant, seconds since the epoch.
    pub start: i64,
    /// Simulated days.
    pub days: u32,
    /// Number of entities.
    pub entities: usize,
    /// Mean events per hour of an entity (each entity's own rate is 0.5× to 1.5× this).
    pub events_per_hour: f64,
    /// Share of negative texts in steady periods.
    pub negative_share: f64,
    /// Number of bursts.
    pub bursts: usize,
    /// Length of a burst, hours.
    pub burst_hours: u32,
    /// Extra events per hour during a burst.
    pub burst_events_per_hour: f64,
    /// Share of negative texts among a burst's extra events.
    pub burst_negative_share: f64,
    /// Seed of every draw.
    pub seed: u64,
}

impl Default for StreamSpec {
    fn default() -> Self {
        StreamSpec {
            start: 1_793_491_200, // 2026-11-01T00:00:00Z
            days: 30,
            entities: 20,
            events_per_hour: 3.0,
            negative_share: 0.2,
            bursts: 3,
            burst_hours: 3,
            burst_events_per_hour: 20.0,
            burst_negative_share: 0.9,
            seed: 7,
        }
    }
}

/// An injected burst: what a detector should find.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Burst {
    /// The entity.
    pub entity: String,
    /// First second, since the epoch.
    pub start: i64,
    /// Last second (excluded).
    pub end: i64,
}

/// The name of entity `i`.
pub fn entity_name(i: usize) -> String {
    format!("company-{:02}", i + 1)
}

/// A stream per `spec`, texts drawn from `negative` and `other`, in time order (ids
/// `ev-000001`, ... in that order), and its bursts.
pub fn simulate(
    spec: &StreamSpec,
    negative: &[String],
    other: &[String],
) -> (Vec<Event>, Vec<Burst>) {
    assert!(
        !negative.is_empty() && !other.is_empty(),
        "texts of both kinds are needed"
    );
    let mut rng = SeededRng::new(spec.seed);
    let end = spec.start + i64::from(spec.days) * 86_400;
    let bursts = burst_schedule(spec, &mut rng);
    let mut drawn: Vec<(i64, usize, bool)> = Vec::new();
    for e in 0..spec.entities {
        let rate = spec.events_per_hour * (0.5 + uniform(&mut rng));
        for t in arrivals(&mut rng, spec.start, end, rate) {
            drawn.push((t, e, uniform(&mut rng) < spec.negative_share));
        }
    }
    for (e, b) in &bursts {
        for t in arrivals(&mut rng, b.start, b.end, spec.burst_events_per_hour) {
            drawn.push((t, *e, uniform(&mut rng) < spec.burst_negative_share));
        }
    }
    drawn.sort_by_key(|&(t, e, _)| (t, e));
    let events = drawn
        .into_iter()
        .enumerate()
        .map(|(i, (time, e, neg))| {
            let pool = if neg { negative } else { other };
            Event {
                id: format!("ev-{:06}", i + 1),
                time,
                text: pool[rng.below(pool.len())].clone(),
                entities: vec![entity_name(e)],
                meta: serde_json::Map::new(),
            }
        })
        .collect();
    (events, bursts.into_iter().map(|(_, b)| b).collect())
}

/// Bursts spread over the period after a two-day warm-up: burst `i` starts at a random hour
/// within the `i`-th equal part, on a random entity.
fn burst_schedule(spec: &StreamSpec, rng: &mut SeededRng) -> Vec<(usize, Burst)> {
    let warm = 2 * 86_400;
    let span = i64::from(spec.days) * 86_400 - warm - i64::from(spec.burst_hours) * 3_600;
    if spec.bursts == 0 || span <= 0 {
        return Vec::new();
    }
    let part = span / spec.bursts as i64;
    (0..spec.bursts)
        .map(|i| {
            let hour = rng.below((part / 3_600).max(1) as usize) as i64;
            let start =
                spec.start + warm + i as i64 * part + hour * 3_600 + rng.below(3_600) as i64;
            let e = rng.below(spec.entities);
            let burst = Burst {
                entity: entity_name(e),
                start,
                end: start + i64::from(spec.burst_hours) * 3_600,
            };
            (e, burst)
        })
        .collect()
}

/// A uniform draw in [0, 1).
fn uniform(rng: &mut SeededRng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Arrival seconds of a Poisson process of `per_hour` events per hour in `start..end`.
fn arrivals(rng: &mut SeededRng, start: i64, end: i64, per_hour: f64) -> Vec<i64> {
    let mut out = Vec::new();
    if per_hour <= 0.0 {
        return out;
    }
    let mean_gap = 3_600.0 / per_hour;
    let mut t = start as f64;
    loop {
        t += -(1.0 - uniform(rng)).ln() * mean_gap;
        if t >= end as f64 {
            return out;
        }
        out.push(t as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_stream_with_its_bursts_inside() {
        let neg = vec!["bad".to_string()];
        let other = vec!["good".to_string(), "fine".to_string()];
        let spec = StreamSpec {
            days: 10,
            ..StreamSpec::default()
        };
        let (a, bursts) = simulate(&spec, &neg, &other);
        let (b, _) = simulate(&spec, &neg, &other);
        assert_eq!(a, b);
        assert_eq!(bursts.len(), 3);
        assert!(a.windows(2).all(|w| w[0].time <= w[1].time));
        let expected = 10.0 * 24.0 * 20.0 * 3.0 + 3.0 * 3.0 * 20.0;
        assert!(
            (a.len() as f64 - expected).abs() < 0.1 * expected,
            "{}",
            a.len()
        );
        for burst in &bursts {
            assert!(
                burst.start >= spec.start + 2 * 86_400 && burst.end <= spec.start + 10 * 86_400
            );
            let inside = a
                .iter()
                .filter(|e| {
                    e.entities[0] == burst.entity && (burst.start..burst.end).contains(&e.time)
                })
                .filter(|e| e.text == "bad")
                .count();
            assert!(inside > 30, "{burst:?}: {inside} negative events");
        }
        let other_seed = simulate(&StreamSpec { seed: 8, ..spec }, &neg, &other).0;
        assert_ne!(a, other_seed);
    }
}
