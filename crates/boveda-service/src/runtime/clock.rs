//! Where the control plane gets the time. The scheduler, retention and
//! soft delete read it through [`Clock`], so tests run a year in seconds.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;

use crate::error::{Result, ServiceError};

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
    /// Waits until `t` (a fake clock jumps there), returning early when
    /// `wake` becomes true.
    fn sleep_until(&self, t: Timestamp, wake: &AtomicBool);
    /// Whether time only moves when told to (tests).
    fn is_simulated(&self) -> bool {
        false
    }
}

/// The machine's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, t: Timestamp, wake: &AtomicBool) {
        while !wake.load(Ordering::Relaxed) {
            let left = t.duration_since(Timestamp::now());
            if left.is_negative() || left.is_zero() {
                return;
            }
            let step = Duration::try_from(left).unwrap_or_default().min(Duration::from_millis(200));
            std::thread::sleep(step);
        }
    }
}

/// A clock that moves only when told to, or when slept on.
pub struct FakeClock {
    now: Mutex<Timestamp>,
}

impl FakeClock {
    pub fn new(start: Timestamp) -> Self {
        Self { now: Mutex::new(start) }
    }

    pub fn set(&self, t: Timestamp) {
        if let Ok(mut now) = self.now.lock() {
            *now = t;
        }
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        self.now.lock().map(|t| *t).unwrap_or_else(|p| *p.into_inner())
    }

    fn sleep_until(&self, t: Timestamp, _wake: &AtomicBool) {
        if t > self.now() {
            self.set(t);
        }
    }

    fn is_simulated(&self) -> bool {
        true
    }
}

/// The clock of a command: the system's, or a fixed time from
/// `BOVEDA_FAKE_NOW` (RFC 3339), a test hook for retention and soft delete.
///
/// # Errors
/// `Invalid` when the variable is set but not a time.
pub fn clock_from_env() -> Result<std::sync::Arc<dyn Clock>> {
    match std::env::var("BOVEDA_FAKE_NOW") {
        Ok(s) => {
            let t: Timestamp =
                s.parse().map_err(|e| ServiceError::Invalid(format!("BOVEDA_FAKE_NOW={s:?} is not a time: {e}")))?;
            Ok(std::sync::Arc::new(FakeClock::new(t)))
        }
        Err(_) => Ok(std::sync::Arc::new(SystemClock)),
    }
}
