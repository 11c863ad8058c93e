//! Progress bars for the pipelines' [`Observer`]: drawn on a terminal, hidden otherwise.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lmfuse_pipeline::{Observer, Task};
use std::io::IsTerminal;

/// A bar of `len` steps, hidden when `quiet` or when stderr is not a terminal.
pub fn bar(len: u64, message: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("static template"),
    );
    bar.set_message(message.to_string());
    bar
}

/// Draws the pipelines' tasks as bars on stderr and prints their notes there, unless quiet.
#[derive(Debug, Clone, Copy)]
pub struct Bars {
    quiet: bool,
}

impl Bars {
    /// Bars and notes on stderr; nothing when `quiet`.
    pub fn new(quiet: bool) -> Self {
        Bars { quiet }
    }
}

impl Observer for Bars {
    fn task(&self, name: &str, total: u64) -> Box<dyn Task + '_> {
        Box::new(BarTask(bar(total, name, self.quiet)))
    }

    fn note(&self, message: &str) {
        if !self.quiet {
            eprintln!("{message}");
        }
    }
}

struct BarTask(ProgressBar);

impl Task for BarTask {
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    fn step(&self, what: &str, step: usize, total: usize, loss: f32) {
        self.0.set_length(total as u64);
        self.0.set_position(step as u64);
        self.0.set_message(format!("{what}, loss {loss:.4}"));
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
