//! Background work with progress, cancel and latest-wins coalescing.
//!
//! Every heavy job runs on its own thread; the UI polls it once per frame and never blocks.
//! The worker calls the `notify` callback (the GUI passes `Context::request_repaint`) when it
//! reports progress or finishes, so the UI does not have to repaint continuously while waiting.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Called by workers to wake the UI.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// The error a job returns when it noticed it was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// Shared between a job and whoever started it.
pub struct JobControl {
    cancelled: AtomicBool,
    /// Fraction done in `[0, 1]`, stored as f64 bits.
    progress: AtomicU64,
    message: Mutex<String>,
    notify: Option<Notify>,
    started: Instant,
}

impl JobControl {
    pub fn new(notify: Option<Notify>) -> Arc<Self> {
        Arc::new(Self {
            cancelled: AtomicBool::new(false),
            progress: AtomicU64::new(0f64.to_bits()),
            message: Mutex::new(String::new()),
            notify,
            started: Instant::now(),
        })
    }

    /// A control nobody watches (CLI and tests).
    pub fn detached() -> Arc<Self> {
        Self::new(None)
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Returns `Err(Cancelled)` once cancel was requested: call it between units of work.
    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }

    pub fn set_progress(&self, fraction: f64, message: impl Into<String>) {
        self.progress
            .store(fraction.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
        if let Ok(mut m) = self.message.lock() {
            *m = message.into();
        }
        self.wake();
    }

    pub fn progress(&self) -> f64 {
        f64::from_bits(self.progress.load(Ordering::Relaxed))
    }

    pub fn message(&self) -> String {
        self.message.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Remaining time extrapolated from progress so far.
    pub fn eta(&self) -> Option<Duration> {
        let p = self.progress();
        if p <= 0.01 || p >= 1.0 {
            return None;
        }
        let el = self.elapsed().as_secs_f64();
        Some(Duration::from_secs_f64(el * (1.0 - p) / p))
    }

    fn wake(&self) {
        if let Some(n) = &self.notify {
            n();
        }
    }
}

/// A job running on a background thread.
pub struct Job<T: Send + 'static> {
    pub name: String,
    control: Arc<JobControl>,
    promise: poll_promise::Promise<anyhow::Result<T>>,
}

impl<T: Send + 'static> Job<T> {
    pub fn spawn(
        name: impl Into<String>,
        notify: Option<Notify>,
        work: impl FnOnce(&JobControl) -> anyhow::Result<T> + Send + 'static,
    ) -> Self {
        let name = name.into();
        let control = JobControl::new(notify);
        let c2 = control.clone();
        let promise = poll_promise::Promise::spawn_thread(name.clone(), move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&c2)))
                .unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    Err(anyhow::anyhow!("internal error: {msg}"))
                });
            c2.wake();
            r
        });
        Self {
            name,
            control,
            promise,
        }
    }

    pub fn control(&self) -> &Arc<JobControl> {
        &self.control
    }

    pub fn cancel(&self) {
        self.control.cancel();
    }

    pub fn is_done(&self) -> bool {
        self.promise.ready().is_some()
    }

    /// The result, once ready.
    pub fn poll(&self) -> Option<&anyhow::Result<T>> {
        self.promise.ready()
    }

    /// Takes the finished result, or gives the job back if it is still running.
    pub fn try_take(self) -> Result<anyhow::Result<T>, Self> {
        let Self {
            name,
            control,
            promise,
        } = self;
        match promise.try_take() {
            Ok(r) => Ok(r),
            Err(promise) => Err(Self {
                name,
                control,
                promise,
            }),
        }
    }

    /// Blocks until done (CLI and tests only).
    pub fn block(self) -> anyhow::Result<T> {
        self.promise.block_and_take()
    }
}

/// True when an error is a cancellation rather than a failure.
pub fn is_cancelled(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Cancelled>().is_some()
}

type Work<T> = Box<dyn FnOnce(&JobControl) -> anyhow::Result<T> + Send>;

/// Latest-wins runner for previews: at most one job runs; a new request made while one runs
/// replaces any older pending request and starts as soon as the running one ends (which is
/// asked to cancel). Results of superseded requests are dropped.
pub struct Latest<T: Send + 'static> {
    name: String,
    notify: Option<Notify>,
    running: Option<(u64, Job<T>)>,
    pending: Option<(u64, Work<T>)>,
    next_id: u64,
    latest_requested: u64,
}

impl<T: Send + 'static> Latest<T> {
    pub fn new(name: impl Into<String>, notify: Option<Notify>) -> Self {
        Self {
            name: name.into(),
            notify,
            running: None,
            pending: None,
            next_id: 1,
            latest_requested: 0,
        }
    }

    pub fn request(
        &mut self,
        work: impl FnOnce(&JobControl) -> anyhow::Result<T> + Send + 'static,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        self.latest_requested = id;
        if let Some((_, job)) = &self.running {
            job.cancel();
            self.pending = Some((id, Box::new(work)));
        } else {
            self.start(id, Box::new(work));
        }
    }

    fn start(&mut self, id: u64, work: Work<T>) {
        self.running = Some((id, Job::spawn(self.name.clone(), self.notify.clone(), work)));
    }

    pub fn is_busy(&self) -> bool {
        self.running.is_some() || self.pending.is_some()
    }

    /// Call every frame. Returns the result of the newest finished request, if one just ended;
    /// cancelled and superseded results are swallowed.
    pub fn poll(&mut self) -> Option<anyhow::Result<T>> {
        let (id, job) = self.running.take()?;
        match job.try_take() {
            Err(job) => {
                self.running = Some((id, job));
                None
            }
            Ok(result) => {
                if let Some((pid, work)) = self.pending.take() {
                    self.start(pid, work);
                }
                if id != self.latest_requested {
                    return None;
                }
                match result {
                    Err(e) if is_cancelled(&e) => None,
                    r => Some(r),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn job_reports_progress_and_result() {
        let job = Job::spawn("t", None, |c| {
            c.set_progress(0.5, "half");
            Ok(42)
        });
        assert_eq!(job.block().unwrap(), 42);
    }

    #[test]
    fn cancel_stops_a_job() {
        let job: Job<()> = Job::spawn("t", None, |c| {
            loop {
                c.check()?;
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        job.cancel();
        let e = job.block().unwrap_err();
        assert!(is_cancelled(&e));
    }

    #[test]
    fn panics_become_errors() {
        let job: Job<()> = Job::spawn("t", None, |_| panic!("boom"));
        let e = job.block().unwrap_err();
        assert!(e.to_string().contains("boom"));
    }

    #[test]
    fn latest_wins_delivers_only_the_newest() {
        let runs = Arc::new(AtomicUsize::new(0));
        let mut l: Latest<u32> = Latest::new("preview", None);
        for i in 0..20u32 {
            let runs = runs.clone();
            l.request(move |c| {
                runs.fetch_add(1, Ordering::SeqCst);
                for _ in 0..5 {
                    c.check()?;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(i)
            });
        }
        let mut got = Vec::new();
        let t0 = Instant::now();
        while l.is_busy() && t0.elapsed() < Duration::from_secs(10) {
            if let Some(r) = l.poll() {
                got.push(r.unwrap());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got, vec![19]);
        // Intermediate requests were coalesced: far fewer than 20 ran.
        assert!(
            runs.load(Ordering::SeqCst) <= 3,
            "{}",
            runs.load(Ordering::SeqCst)
        );
    }
}
