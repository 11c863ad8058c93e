//! lmfuse's pipelines: what turns data files into models and models into answers, for
//! every front end (the `lmfuse` CLI, `lmfuse serve`, the Python package).
//!
//! Each job takes data and a typed spec (validated once, by its `check`), reports progress
//! to an [`Observer`] and returns typed results; none prints. Tasks beyond classification
//! are added as siblings of [`classify`] (as [`ner`], [`relation`] and [`retrieval`] are) on the shared parts: [`data`] (splits),
//! [`encoders`] (encoder choice, cache, embedding), [`model`] (bundles ready to use).

pub mod active;
pub mod augment;
pub mod classify;
pub mod compare;
pub mod convert;
pub mod data;
pub mod encoders;
mod error;
pub mod faq;
pub mod finetune;
pub mod model;
pub mod ner;
mod observe;
pub mod preset;
pub mod ranker;
pub mod relation;
pub mod retrieval;
pub mod selftrain;
#[cfg(feature = "serve")]
pub mod serve;
pub mod tune;

pub use error::{Context, PipelineError, Result};
pub use observe::{Observer, Silent, Task};

/// The lmfuse version recorded in bundles.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Now as an RFC 3339 UTC timestamp (seconds), for bundle manifests.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    rfc3339(secs)
}

/// Seconds since the epoch as an RFC 3339 UTC timestamp.
fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_civil_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_796_083_199), "2026-11-30T23:59:59Z");
    }
}
