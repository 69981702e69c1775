//! What keeps a point from being deleted, enforced in the vault itself: a
//! held point's manifest is not deleted (by `delete_point` or any other
//! way the crate deletes), a hold never moves earlier, an immutable
//! vault's retention holds bind only while it is immutable, soft delete
//! always binds, and settings that protect points are not weakened.

mod common;

use boveda_vault::{ChunkId, Hold, Immutability, RecordId, VaultSettings, check_settings_change};
use jiff::{SignedDuration, Timestamp};

#[test]
fn a_held_point_is_not_deleted_and_a_hold_never_moves_earlier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = common::vault_in(dir.path().join("v").to_str().expect("utf8"));
    let item = RecordId::random();
    let point = common::a_point(&vault, item, "docs", ChunkId([7; 32]), 1_700_000_000);
    vault.save_point(&point).expect("save");
    let now = Timestamp::now();
    let day = SignedDuration::from_hours(24);

    // a retention hold binds only an immutable vault
    vault.hold_point(&point.id, Hold::Retention, now + day * 10).expect("hold");
    vault.hold_point(&point.id, Hold::Retention, now + day).expect("an earlier hold");
    let hold = vault.point_hold(&point.id).expect("read").expect("held");
    assert_eq!(hold.retention_until, Some(now + day * 10), "a hold never moves earlier");
    assert_eq!(vault.point_held(&point.id, now).expect("held?"), None, "not immutable: not binding");
    vault.change_settings(|s| s.immutability = Immutability::Enabled).expect("immutable");
    let err = vault.delete_point(&point.id, now).expect_err("held");
    assert!(err.to_string().contains("by the vault's immutability (enabled)"), "{err}");
    assert!(vault.load_point(&point.id).is_ok(), "the point is still there");
    // past its end: deleted
    vault.delete_point(&point.id, now + day * 11).expect("deleted once its retention ended");
    assert!(vault.load_point(&point.id).is_err());

    // a soft-delete hold binds whatever the immutability
    vault.change_settings(|s| s.immutability = Immutability::Disabled).expect("back to mutable");
    let other = common::a_point(&vault, item, "docs", ChunkId([8; 32]), 1_700_000_100);
    vault.save_point(&other).expect("save");
    vault.hold_point(&other.id, Hold::SoftDelete, now + day * 14).expect("hold");
    let err = vault.delete_point(&other.id, now).expect_err("held");
    assert!(err.to_string().contains("by soft delete"), "{err}");
}

#[test]
fn settings_that_protect_points_are_not_weakened() {
    let base = boveda_vault::CreateOptions::for_tests("v").settings;
    let with = |f: &dyn Fn(&mut VaultSettings)| {
        let mut s = base.clone();
        f(&mut s);
        s
    };
    let locked = with(&|s| s.immutability = Immutability::Locked);
    let enabled = with(&|s| s.immutability = Immutability::Enabled);
    let err = check_settings_change(&locked, &enabled).expect_err("unlock");
    assert!(err.to_string().contains("immutability is locked"), "{err}");
    assert!(check_settings_change(&enabled, &base).is_ok(), "enabled may be disabled");
    let shorter = with(&|s| {
        s.immutability = Immutability::Enabled;
        s.soft_delete_days = 14;
    });
    let longer = with(&|s| {
        s.immutability = Immutability::Enabled;
        s.soft_delete_days = 30;
    });
    let err = check_settings_change(&longer, &shorter).expect_err("shorter");
    assert!(err.to_string().contains("cannot be shortened from 30 to 14 days"), "{err}");
    let always = with(&|s| s.soft_delete_always_on = true);
    let err = check_settings_change(&always, &base).expect_err("off");
    assert!(err.to_string().contains("always-on: it cannot be turned off"), "{err}");
    let grs = with(&|s| {
        s.immutability = Immutability::Enabled;
        s.secondary = Some("/elsewhere".into());
    });
    let err = check_settings_change(&grs, &enabled).expect_err("secondary removed");
    assert!(err.to_string().contains("secondary") && err.to_string().contains("immutability is enabled"), "{err}");
}
