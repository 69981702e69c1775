//! Vaults as a whole: creating, opening and updating them (`admin`), the
//! control-plane settings the service keeps of its own (`control`), check
//! and repair (`verify`), prune.

pub(crate) mod admin;
pub(crate) mod control;
pub(crate) mod prune;
pub(crate) mod verify;
