//! Catalog records: items, settings and (later) policies, jobs and import
//! jobs, stored without a database and without ever overwriting.
//!
//! Each change writes a new sealed object
//! `catalog/<kind>/<entity id>/<revision>` where the revision is the time in
//! nanoseconds, zero-padded, plus a random suffix. Readers list an entity's
//! revisions and take the greatest name: newest wins, and two writers never
//! replace each other's objects. A record with no body is a tombstone.
//!
//! A change that depends on the record's current state (an item's
//! protection, the settings, a policy) is a compare-and-swap instead: the
//! new revision is named after the one it was computed from (its number
//! plus one, no suffix), written create-only, so of two writers that read
//! the same revision exactly one succeeds and the other reads again.

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::RecordId;

/// Where catalog records live.
pub const CATALOG_FOLDER: &str = "catalog";
/// The kind of the items' records: check matches points to their item.
pub const ITEMS_KIND: &str = "items";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogRecord<T> {
    pub id: RecordId,
    pub revision: Timestamp,
    pub body: Option<T>,
}

pub(crate) fn revision_name(kind: &str, id: &RecordId, at: Timestamp) -> String {
    let nanos = at.as_nanosecond().max(0);
    let suffix: [u8; 4] = crate::ids::random_bytes();
    format!("catalog/{kind}/{}/{nanos:024}-{}", id.to_hex(), hex::encode(suffix))
}

/// The time a revision was written, from its name (for a revision that
/// followed another, that one's time and a nanosecond per step).
pub(crate) fn revision_time(name: &str) -> Option<Timestamp> {
    Timestamp::from_nanosecond(revision_number(name)?).ok()
}

fn revision_number(name: &str) -> Option<i128> {
    let (_, rev) = name.rsplit_once('/')?;
    rev.split('-').next()?.parse().ok()
}

/// The name of the revision that follows `name` in a compare-and-swap: the
/// same for every writer that read `name`, so a create-only put lets one
/// of them through. It sorts after `name` and after every revision
/// written before it.
pub(crate) fn next_revision_name(name: &str) -> Option<String> {
    let (entity, _) = name.rsplit_once('/')?;
    Some(format!("{entity}/{:024}", revision_number(name)? + 1))
}

/// Groups listed names by entity and keeps each entity's newest revision.
pub(crate) fn newest_revisions(kind: &str, names: impl IntoIterator<Item = String>) -> Vec<(RecordId, String)> {
    let prefix = format!("catalog/{kind}/");
    let mut newest: std::collections::BTreeMap<RecordId, String> = Default::default();
    for name in names {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some((id_hex, _rev)) = rest.split_once('/') else {
            continue;
        };
        let Some(id) = RecordId::from_hex(id_hex) else {
            continue;
        };
        let slot = newest.entry(id).or_default();
        if name > *slot {
            *slot = name;
        }
    }
    newest.into_iter().collect()
}

pub(crate) fn is_live<T: DeserializeOwned>(rec: &CatalogRecord<T>) -> bool {
    rec.body.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_following_revision_sorts_after_the_one_it_follows() {
        let a = RecordId([1; 16]);
        let first = revision_name("items", &a, Timestamp::from_second(1_000).expect("ts"));
        let second = next_revision_name(&first).expect("next");
        let third = next_revision_name(&second).expect("next");
        assert!(first < second && second < third);
        assert_eq!(revision_time(&third), Some(Timestamp::from_nanosecond(1_000_000_000_002).expect("ts")));
        let names = vec![first, third.clone(), second];
        assert_eq!(newest_revisions("items", names)[0].1, third);
    }

    #[test]
    fn newest_revision_wins_per_entity() {
        let a = RecordId([1; 16]);
        let b = RecordId([2; 16]);
        let t1 = Timestamp::from_second(1_000).expect("ts");
        let t2 = Timestamp::from_second(2_000).expect("ts");
        let names = vec![
            revision_name("items", &a, t2),
            revision_name("items", &a, t1),
            revision_name("items", &b, t1),
            "catalog/other/x/y".to_string(),
        ];
        let newest = newest_revisions("items", names.clone());
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[0], (a, names[0].clone()));
        assert_eq!(newest[1], (b, names[2].clone()));
    }
}
