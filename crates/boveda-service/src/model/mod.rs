//! Models: policies, schedules, time input, names and job records as
//! values. Pure: nothing here reads or writes a vault, and nothing here
//! imports from the rest of the crate but errors.

pub(crate) mod job_record;
pub(crate) mod names;
pub(crate) mod policy;
pub(crate) mod schedule;
pub(crate) mod time_input;
pub(crate) mod verify_settings;
