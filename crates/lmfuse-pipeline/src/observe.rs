//! How a pipeline tells its caller what it is doing: progress of long tasks and notes (an
//! evaluation during fine-tuning, a candidate scored). Pipelines never print; the CLI draws
//! bars, the Python package stays silent, a server logs.

/// Receives a pipeline's progress. Every method has a silent default.
pub trait Observer: Sync {
    /// A task of `total` steps (0: unknown yet) begins; it reports to the handle returned.
    fn task(&self, name: &str, total: u64) -> Box<dyn Task + '_> {
        let _ = (name, total);
        Box::new(Silent)
    }

    /// Something a person watching would want to know (one line, no trailing newline).
    fn note(&self, message: &str) {
        let _ = message;
    }
}

/// One task's progress.
pub trait Task {
    /// `n` more steps are done.
    fn inc(&self, n: u64) {
        let _ = n;
    }

    /// Optimiser step `step` of `total` is done, with the last training `loss`; `what` names
    /// the phase.
    fn step(&self, what: &str, step: usize, total: usize, loss: f32) {
        let _ = (what, step, total, loss);
    }

    /// The task is over.
    fn finish(&self) {}
}

/// An observer (and task) that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {}
impl Task for Silent {}
