//! The monitor's errors: each names the file, field, event or id it is about.

use std::path::PathBuf;

/// What can go wrong in the monitor.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is invalid.
    #[error("{path}: {message}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong, naming the field (`rule[2].above`).
        message: String,
    },
    /// An event of a request is invalid; nothing of the request was stored.
    #[error("event {position}: field `{field}`: {message}")]
    Event {
        /// Where the event is: `#3` in a JSON array, `line 3` in NDJSON.
        position: String,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The request body is not JSON, a JSON array or NDJSON of event objects.
    #[error("{0}")]
    Body(String),
    /// An event id is already stored with another time or text.
    #[error("event id {id:?} is already stored with a different {field}; ids must name one event")]
    Conflict {
        /// The id.
        id: String,
        /// The field that differs.
        field: &'static str,
    },
    /// No event has this id.
    #[error("no event has the id {0:?}")]
    UnknownEvent(String),
    /// A corrected label is not one its model gives, or names no configured model.
    #[error("feedback {position}: field `{field}`: {message}")]
    Feedback {
        /// Where it is in the request (`#3`, `line 3`).
        position: String,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Retraining could not run (missing data, a failed fit).
    #[error("retrain of {model:?}: {message}")]
    Retrain {
        /// The model's name.
        model: String,
        /// Why.
        message: String,
    },
    /// No alert has this id.
    #[error("no alert has the id {0:?}")]
    UnknownAlert(String),
    /// The database failed.
    #[error("monitor database {db}: {message}")]
    Store {
        /// The database: its file, or its URL without the password.
        db: String,
        /// The database's message.
        message: String,
    },
    /// A classifier failed.
    #[error("classifier {model:?}: {message}")]
    Classify {
        /// The model's name in the configuration.
        model: String,
        /// Why.
        message: String,
    },
}

/// The monitor's result type.
pub type Result<T, E = MonitorError> = std::result::Result<T, E>;
