//! The monitor's background threads: one classifies and judges stored events, one delivers
//! alerts (both sleep until woken by new work or a short timeout), and, when a model has a
//! retrain schedule, one retrains the models that are due.

use crate::error::MonitorError;
use crate::monitor::Monitor;
use crate::retrain::RetrainReport;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The running threads; [`Workers::stop`] ends them.
pub struct Workers {
    stop: Arc<AtomicBool>,
    monitor: Arc<Monitor>,
    handles: Vec<JoinHandle<()>>,
}

type OnError = Arc<dyn Fn(&MonitorError) + Send + Sync>;
/// What to do with the report of a scheduled retrain.
pub type OnRetrain = Arc<dyn Fn(&RetrainReport) + Send + Sync>;

/// How often the retrain thread asks whether a schedule is due.
const RETRAIN_CHECK: Duration = Duration::from_secs(5);

impl Workers {
    /// Starts the processing and delivery threads of `monitor` (and the retrain thread when a
    /// model has a schedule); errors (a failing classifier, a full disk) go to `on_error` and
    /// the work is tried again a second later; scheduled retrains report to `on_retrain`.
    pub fn spawn(monitor: Arc<Monitor>, on_error: OnError, on_retrain: OnRetrain) -> Workers {
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
        if monitor.config().models.iter().any(|m| m.retrain.is_some()) {
            // Not joined on stop: a training run is not cut short, nor waited for (a retrain
            // cut by the process's exit stays recorded as `training`).
            retrainer(&monitor, &stop, &on_error, on_retrain);
        }
        let handles = vec![process, deliver];
        Workers {
            stop,
            monitor,
            handles,
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
        let mut seen = 0;
        while !stop.load(Ordering::SeqCst) {
            match step(&monitor) {
                Ok(0) => monitor.wait(&mut seen, idle),
                Ok(_) => {}
                Err(e) => {
                    on_error(&e);
                    monitor.wait(&mut seen, Duration::from_secs(1));
                }
            }
        }
    })
}

fn retrainer(
    monitor: &Arc<Monitor>,
    stop: &Arc<AtomicBool>,
    on_error: &OnError,
    on_retrain: OnRetrain,
) -> JoinHandle<()> {
    let (monitor, stop, on_error) = (monitor.clone(), stop.clone(), on_error.clone());
    std::thread::spawn(move || {
        let mut checked: Option<Instant> = None;
        while !stop.load(Ordering::SeqCst) {
            if checked.is_none_or(|t| t.elapsed() >= RETRAIN_CHECK) {
                checked = Some(Instant::now());
                for outcome in monitor.retrain_due(&lmfuse_pipeline::Silent) {
                    match outcome {
                        Ok(report) => on_retrain(&report),
                        Err(e) => on_error(&e),
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}
