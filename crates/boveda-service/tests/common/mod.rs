//! What the service's integration tests share.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use boveda_service::{DaySpec, MonthlyRule, Retention, Weekday, WeeklyRule, YearlyRule};
use boveda_store::LocalStore;
use boveda_vault::{CreateOptions, Vault};

/// A new vault in `dir/vault` with 1 MiB packs and the fastest KDF.
pub fn new_vault(dir: &Path) -> Vault {
    let opts = CreateOptions::for_tests("sched");
    Vault::create(Arc::new(LocalStore::new(dir.join("vault"))), b"pw", opts).expect("create vault")
}

/// Daily 7 days, weekly (Sunday) 4 weeks, monthly (last day) 3 months,
/// yearly (December, last day) 2 years: the rules behind [`GFS_SURVIVORS`].
pub fn gfs_retention() -> Retention {
    Retention {
        daily_days: Some(7),
        weekly: Some(WeeklyRule { days: vec![Weekday::Sunday], weeks: 4 }),
        monthly: Some(MonthlyRule { on: DaySpec("last".into()), months: 3 }),
        yearly: Some(YearlyRule { month: 12, on: DaySpec("last".into()), years: 2 }),
    }
}

/// The local dates (Europe/Madrid) of the points that survive daily slots at
/// 02:00 from 2025-12-01 to 2027-01-10 under daily 7 days, weekly (Sunday)
/// 4 weeks, monthly (last day) 3 months and yearly (December, last day) 2
/// years, worked out by hand at 2027-01-10 02:00: daily keeps Jan 4-10
/// (Jan 3 + 7 days is now); weekly keeps the Sundays after Dec 13 (Dec 20,
/// 27, Jan 3; Jan 10 too); monthly keeps the month ends after Oct 10 (Oct
/// 31, Nov 30, Dec 31); yearly keeps Dec 31 2025 and 2026.
pub const GFS_SURVIVORS: [&str; 14] = [
    "2025-12-31",
    "2026-10-31",
    "2026-11-30",
    "2026-12-20",
    "2026-12-27",
    "2026-12-31",
    "2027-01-03",
    "2027-01-04",
    "2027-01-05",
    "2027-01-06",
    "2027-01-07",
    "2027-01-08",
    "2027-01-09",
    "2027-01-10",
];

/// Pseudo-random bytes (xorshift), fast enough for large test files.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Relative path -> BLAKE3 of the content, for every file below `root`.
pub fn digest(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("below root").display().to_string();
                out.insert(rel, blake3::hash(&std::fs::read(&p).expect("read")).to_hex().to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}
