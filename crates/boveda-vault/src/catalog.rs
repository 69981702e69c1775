//! Catalog records: items, settings and (later) policies, jobs and import
//! jobs, stored without a database and without ever overwriting.
//!
//! Each change writes a new sealed object
//! `catalog/<kind>/<entity id>/<revision>` where the revision is the time in
//! nanoseconds, zero-padded, plus a random suffix. Readers list an entity's
//! revisions and take the greatest name: newest wins, and two writers never
//! replace each other's objects. A record with no body is a tombstone.

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

/// The time a revision was written, from its name.
pub(crate) fn revision_time(name: &str) -> Option<Timestamp> {
    let (_, rev) = name.rsplit_once('/')?;
    let nanos: i128 = rev.split_once('-')?.0.parse().ok()?;
    Timestamp::from_nanosecond(nanos).ok()
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
