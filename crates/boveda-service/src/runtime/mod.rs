//! What every feature runs on: the clock, job records and `run_job`,
//! the live progress of this process's jobs (`live`), alerts, the vault's control-plane settings (`control`: webhook, lag
//! threshold, shipping address), this host's facts (`host`) and the user's
//! registry of vaults.

pub(crate) mod alert;
pub(crate) mod clock;
pub(crate) mod control;
pub(crate) mod email;
pub(crate) mod host;
pub(crate) mod job;
pub(crate) mod job_ctx;
pub(crate) mod live;
pub(crate) mod registry;
