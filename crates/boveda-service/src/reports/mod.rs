//! Read models: the item list (`overview`), the dashboard and usage.

pub(crate) mod dashboard;
pub(crate) mod overview;
pub(crate) mod usage;
