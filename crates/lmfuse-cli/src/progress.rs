//! Progress bars: drawn on a terminal, hidden otherwise.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A bar of `len` steps, hidden when `quiet` or when stderr is not a terminal.
pub fn bar(len: u64, message: &'static str, quiet: bool) -> ProgressBar {
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
    bar.set_message(message);
    bar
}

/// Moves `bar` to optimiser step `step` of `total`, its message `what` and the last `loss`.
pub fn show_step(bar: &ProgressBar, what: &str, step: usize, total: usize, loss: f32) {
    bar.set_length(total as u64);
    bar.set_position(step as u64);
    bar.set_message(format!("{what}, loss {loss:.4}"));
}
