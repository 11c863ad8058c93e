//! The monitor's background threads: one classifies and judges stored events, one delivers
//! alerts; both sleep until woken by new work or a short timeout.

use crate::error::MonitorError;
use crate::monitor::Monitor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The running threads; [`Workers::stop`] ends them.
pub struct Workers {
    stop: Arc<AtomicBool>,
    monitor: Arc<Monitor>,
    handles: Vec<JoinHandle<()>>,
}

type OnError = Arc<dyn Fn(&MonitorError) + Send + Sync>;

impl Workers {
    /// Starts the processing and delivery threads of `monitor`; errors (a failing classifier,
    /// a full disk) go to `on_error` and the work is tried again a second later.
    pub fn spawn(monitor: Arc<Monitor>, on_error: OnError) -> Workers {
        let stop = Arc::new(AtomicBool::new(false));
        let process = worker(
            &monitor,
            &stop,
            &on_error,
            Duration::from_millis(500),
            |m| m.process_batch(),
        );
        let deliver = worker(
            &monitor,
            &stop,
            &on_error,
            Duration::from_millis(250),
            |m| m.deliver_due(),
        );
        Workers {
            stop,
            monitor,
            handles: vec![process, deliver],
        }
    }

    /// Stops the threads after their current step.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.monitor.notify();
        for h in self.handles {
            let _ = h.join();
        }
    }
}

fn worker(
    monitor: &Arc<Monitor>,
    stop: &Arc<AtomicBool>,
    on_error: &OnError,
    idle: Duration,
    step: fn(&Monitor) -> crate::Result<usize>,
) -> JoinHandle<()> {
    let (monitor, stop, on_error) = (monitor.clone(), stop.clone(), on_error.clone());
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match step(&monitor) {
                Ok(0) => monitor.wait(idle),
                Ok(_) => {}
                Err(e) => {
                    on_error(&e);
                    monitor.wait(Duration::from_secs(1));
                }
            }
        }
    })
}
