//! The prune lease on every kind of store (a local folder, Azurite, the S3
//! server started by scripts/test.sh): one holder at a time, an ended lease
//! taken over by exactly one of several racers, a lost lease never renewed.

mod common;

use std::sync::Arc;

use boveda_vault::VaultError;
use common::{remote, vault_in};
use jiff::{SignedDuration, Timestamp};

fn one_holder_at_a_time(url: &str) {
    let vault = Arc::new(vault_in(url));
    let t0 = Timestamp::now();
    let mut a = vault.take_prune_lease("machine a", t0, SignedDuration::from_secs(60)).expect("a takes it");
    let refused = vault.take_prune_lease("machine b", t0, SignedDuration::from_secs(60)).expect_err("held");
    assert!(matches!(&refused, VaultError::Busy(m) if m.contains("machine a")), "{refused}");
    vault.renew_prune_lease(&mut a, t0 + SignedDuration::from_secs(120)).expect("renew");
    vault.release_prune_lease(a).expect("release");
    let b = vault.take_prune_lease("machine b", t0, SignedDuration::from_secs(1)).expect("b after release");

    // b's lease ends; eight machines race to take it over: exactly one does
    let later = t0 + SignedDuration::from_secs(5);
    let winners: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let vault = vault.clone();
                s.spawn(move || {
                    vault.take_prune_lease(&format!("racer {n}"), later, SignedDuration::from_secs(60)).is_ok()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("join")).collect()
    });
    assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
    // b no longer holds it: it can neither renew nor release someone else's
    let mut b = b;
    let lost = vault.renew_prune_lease(&mut b, later + SignedDuration::from_secs(60)).expect_err("taken over");
    assert!(matches!(lost, VaultError::Busy(_)), "{lost}");
    let still =
        vault.take_prune_lease("machine c", later, SignedDuration::from_secs(60)).expect_err("a racer holds it");
    assert!(matches!(&still, VaultError::Busy(m) if m.contains("racer")), "{still}");
}

#[test]
fn one_prune_holds_the_lease_in_a_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    one_holder_at_a_time(&dir.path().join("vault").display().to_string());
}

#[test]
fn one_prune_holds_the_lease_in_azurite() {
    one_holder_at_a_time(&remote("azblob", "BOVEDA_TEST_AZURITE"));
}

#[test]
fn one_prune_holds_the_lease_in_s3() {
    one_holder_at_a_time(&remote("s3", "BOVEDA_TEST_S3"));
}
