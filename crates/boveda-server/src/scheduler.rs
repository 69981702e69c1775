//! The scheduler of `boveda serve`: the agent's loop, one thread per
//! served vault.

use std::sync::Arc;
use std::time::Duration;

use boveda_service::Vault;

/// The scheduler of `boveda agent`, run for each served vault on a thread
/// of its own (a vault created through the API gets one at once).
pub struct Scheduler {
    pub clock: Arc<dyn boveda_service::Clock>,
    pub max_jobs: usize,
    pub heartbeat: Duration,
    pub safety_margin: jiff::SignedDuration,
    pub poll: Duration,
    pub stop: &'static std::sync::atomic::AtomicBool,
}

impl Scheduler {
    /// Starts the scheduler of one vault; it runs until `stop` is set.
    pub fn start(self: &Arc<Self>, vault: Arc<Vault>) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || {
            let name = vault.settings().name.clone();
            let opts = boveda_service::AgentOptions {
                max_jobs: me.max_jobs,
                heartbeat: me.heartbeat,
                safety_margin: me.safety_margin,
                until: None,
                poll: me.poll,
                hostname: boveda_service::hostname(),
            };
            let log = |line: &str| eprintln!("{} {line}", jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S"));
            if let Err(e) = boveda_service::run_agent(&[vault], me.clock.as_ref(), &opts, me.stop, &log) {
                eprintln!("the scheduler of vault {name} stopped: {e}");
            }
        })
    }
}
