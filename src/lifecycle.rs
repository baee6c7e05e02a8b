//! Graceful shutdown: once draining, no new step starts; the broker waits,
//! up to a bound, for the steps that run to finish and record progress.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    running_steps: AtomicUsize,
}

/// Counts a step as running while it lives.
pub struct StepGuard<'a>(&'a Lifecycle);

impl Drop for StepGuard<'_> {
    fn drop(&mut self) {
        self.0.running_steps.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Lifecycle {
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn step_started(&self) -> StepGuard<'_> {
        self.running_steps.fetch_add(1, Ordering::SeqCst);
        StepGuard(self)
    }

    pub fn running_steps(&self) -> usize {
        self.running_steps.load(Ordering::SeqCst)
    }

    /// Stops new steps and waits for running ones, at most `bound`.
    /// Returns how many were still running when it gave up.
    pub async fn drain(&self, bound: Duration) -> usize {
        self.draining.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + bound;
        while self.running_steps() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.running_steps()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn drain_waits_for_running_steps_up_to_its_bound() {
        let lifecycle = Arc::new(Lifecycle::default());
        let running = lifecycle.clone();
        let step = tokio::spawn(async move {
            let _guard = running.step_started();
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(lifecycle.running_steps(), 1);
        let started = Instant::now();
        assert_eq!(lifecycle.drain(Duration::from_secs(5)).await, 0);
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "drain did not wait"
        );
        assert!(lifecycle.draining());
        step.await.unwrap();

        let _stuck = lifecycle.step_started();
        let started = Instant::now();
        assert_eq!(lifecycle.drain(Duration::from_millis(100)).await, 1);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "drain ignored its bound"
        );
    }
}
