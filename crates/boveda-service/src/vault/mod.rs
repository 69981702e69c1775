//! Vaults as a whole: creating, opening and updating them (`admin`), check
//! and repair (`verify`), prune.

pub(crate) mod admin;
pub(crate) mod prune;
pub(crate) mod verify;
