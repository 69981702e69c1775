//! Read models: the item list (`overview`), alerts with their state,
//! the dashboard, usage and backup reports (`backups`).

pub(crate) mod alerts;
pub(crate) mod backups;
pub(crate) mod dashboard;
pub(crate) mod overview;
pub(crate) mod usage;
