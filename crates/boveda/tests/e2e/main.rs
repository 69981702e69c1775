//! boveda's end-to-end tests, in one test binary (one link, one harness):
//! each module drives the real `boveda` binary, a real server, real stores
//! (Azurite, an S3 server), QEMU and a browser, as its users would.
//! `cargo test -p boveda --test e2e MODULE::` runs one module's tests.

#[macro_use]
mod common;

mod attacks;
mod backup_restore;
mod bad_input;
mod cli_tasks;
mod concurrency;
mod consistency;
mod control_plane;
mod crash;
mod damage;
mod disk_files;
mod disks;
mod email;
mod flaky_store;
mod fleet;
mod fleet_discover;
mod fleet_grants;
mod fleet_limits;
mod fleet_silence;
mod fleet_vms;
mod guard;
mod immutable;
mod live_vms;
mod lost_data;
mod mount;
mod object_lock;
mod offline;
mod policies;
mod portal;
mod read_only_store;
mod regression;
mod replication;
mod serve;
mod stores;
mod suspicion;
mod verify;
mod vm_restore;
mod vms;
mod warnings;
