//! Monitoring of text streams: events come in (HTTP, a file, stdin), are stored durably, then
//! classified by lmfuse bundles, counted per time window × entity × topic × label, and watched
//! by alert rules (a level on a share, EWMA z-scores and CUSUM with a minimum count, warm-up
//! and cool-down) whose alerts go to webhooks, log files and stdout, each exactly once per
//! receiver.
//!
//! Everything lives in one database ([`store`]: a SQLite file, or PostgreSQL); every step is
//! one transaction, so a monitor killed at any point restarts where it was: acknowledged
//! events are processed once, and alerts are neither lost nor raised twice.

pub mod classify;
pub mod config;
pub mod detect;
pub mod drift;
pub mod duration;
pub mod entities;
mod error;
pub mod event;
pub mod feed;
pub mod http;
mod monitor;
pub mod retrain;
pub mod simulate;
pub mod sink;
pub mod store;
#[cfg(feature = "test-support")]
pub mod testing;
mod workers;

pub use classify::{bundle_loader, BundleClassifier, Classified, Classify, Loader};
pub use config::MonitorConfig;
pub use detect::{Alert, Series};
pub use error::{MonitorError, Result};
pub use event::Event;
pub use feed::{Feed, FeedReport};
pub use monitor::{AlertState, FeedbackReport, ModelStatus, Monitor, Status};
pub use workers::Workers;
