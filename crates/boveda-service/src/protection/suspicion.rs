//! A warning when a backup looks like an attack (docs/SECURITY.md).
//!
//! Every point records how much of it was new, how much of the new data
//! did not compress, and how many files were added, read again and
//! removed (`boveda_vault::PointStats`). A point whose share of existing
//! files changed or removed jumps far beyond the item's own history, with
//! much new data that does not compress (or with most files rewritten), is
//! **suspicious**: it is recorded for review, the last point before it is
//! held (retention and prune keep it) until an admin reviews, and its job
//! raises a Critical alert naming what jumped.

use boveda_vault::{PointId, RecordId, RecoveryPoint, Vault, VaultError};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};
use crate::items::Item;

/// What a backup job's details say of a suspicious point (the job's
/// alert is raised from it).
pub use crate::runtime::job::SUSPICIOUS;
const REVIEWS: &str = "point-reviews";
/// How many earlier points of the item make its history.
const HISTORY: usize = 30;
/// A share of existing files changed or removed at least this large...
const REWRITTEN_FLOOR: f64 = 0.2;
/// ...and this many times the largest of the history is a jump.
const REWRITTEN_JUMP: f64 = 3.0;
/// Fewer files changed or removed than this is never a jump: an item of a
/// handful of files rewrites all of them in an ordinary day.
const REWRITTEN_MIN_FILES: u64 = 10;
/// Rewritten past this share is suspicious whatever the data looks like.
const REWRITTEN_ALONE: f64 = 0.5;
/// New data that did not compress: at least this share...
const INCOMPRESSIBLE_FLOOR: f64 = 0.75;
/// ...of new data that is at least this share of the item.
const NEW_FLOOR: f64 = 0.1;

/// What an admin said of a suspicious point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// An ordinary change: the hold on the point before it ends.
    Clean,
    /// An attack: the point before it stays held; restore from it.
    Confirmed,
}

/// A suspicious point and its review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointReview {
    pub point: PointId,
    pub item: RecordId,
    pub item_name: String,
    pub flagged: Timestamp,
    /// What jumped, in words.
    pub reasons: Vec<String>,
    /// The last point before it, held until the review.
    pub held: Option<PointId>,
    pub verdict: Option<Verdict>,
    pub reviewed: Option<Timestamp>,
    pub reviewed_by: Option<String>,
}

/// One point's signals, as shares of the point before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signals {
    /// Files the point before had that were read again or are gone.
    pub rewritten: f64,
    /// How many those are.
    pub rewritten_files: u64,
    /// Of the new data, what did not compress.
    pub incompressible: f64,
    /// New data against the item's size.
    pub new: f64,
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

/// The signals of `point` against the point before it.
pub fn signals(point: &RecoveryPoint, before: &RecoveryPoint) -> Signals {
    let s = &point.stats;
    Signals {
        rewritten: share(s.files_changed + s.files_removed, before.stats.files).min(1.0),
        rewritten_files: s.files_changed + s.files_removed,
        incompressible: share(s.bytes_new_incompressible, s.bytes_new),
        new: share(s.bytes_new, s.bytes.max(before.stats.bytes)),
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// Whether `now` jumps out of `history` (the signals of earlier points,
/// oldest first), and why; `compressing` says whether the vault
/// compresses at all (without, every chunk looks incompressible).
pub fn jumps(now: &Signals, history: &[Signals], compressing: bool) -> Option<Vec<String>> {
    let most = history.iter().map(|s| s.rewritten).fold(0.0, f64::max);
    let mut usual: Vec<f64> = history.iter().map(|s| s.incompressible).collect();
    usual.sort_by(f64::total_cmp);
    let median = usual.get(usual.len() / 2).copied().unwrap_or(0.0);
    let rewritten = now.rewritten_files >= REWRITTEN_MIN_FILES
        && now.rewritten >= REWRITTEN_FLOOR
        && now.rewritten >= REWRITTEN_JUMP * most;
    let incompressible = compressing && now.incompressible >= INCOMPRESSIBLE_FLOOR && now.new >= NEW_FLOOR;
    if !(rewritten && (incompressible || now.rewritten >= REWRITTEN_ALONE)) {
        return None;
    }
    let mut why = vec![format!(
        "files changed or removed: {} of the point before (at most {} in the {} before it)",
        pct(now.rewritten),
        pct(most),
        history.len()
    )];
    if incompressible {
        why.push(format!("new data that did not compress: {} (usually {})", pct(now.incompressible), pct(median)));
    }
    why.push(format!("new data: {} of the item", pct(now.new)));
    Some(why)
}

/// Judges a new point of `item` against the item's history; a suspicious
/// one is recorded and the point before it held until reviewed. The
/// reasons, for the job's details.
///
/// # Errors
/// A store error.
pub fn judge(vault: &Vault, item: &Item, point: &RecoveryPoint, now: Timestamp) -> Result<Option<String>> {
    if point.parent.is_none() {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let judged = judge_against_history(vault, item, point, now);
    // for bench/suspicion.sh: what the check costs next to the backup
    if std::env::var_os("BOVEDA_TIMINGS").is_some() {
        eprintln!("timing: suspicion check {} us", started.elapsed().as_micros());
    }
    judged
}

fn judge_against_history(vault: &Vault, item: &Item, point: &RecoveryPoint, now: Timestamp) -> Result<Option<String>> {
    let mut mine: Vec<RecoveryPoint> =
        vault.list_item_points(&item.id)?.into_iter().filter(|p| p.time < point.time).collect();
    mine.sort_by_key(|p| p.time);
    let Some(before) = mine.last() else { return Ok(None) };
    let from = mine.len().saturating_sub(HISTORY + 1);
    let history: Vec<Signals> =
        mine[from..].windows(2).filter(|w| w[1].parent.is_some()).map(|w| signals(&w[1], &w[0])).collect();
    let compressing = vault.settings().compression_level > 0;
    let Some(reasons) = jumps(&signals(point, before), &history, compressing) else { return Ok(None) };
    vault.hold_for_review(&before.id, &point.id)?;
    let review = PointReview {
        point: point.id,
        item: item.id,
        item_name: item.name.clone(),
        flagged: now,
        reasons: reasons.clone(),
        held: Some(before.id),
        verdict: None,
        reviewed: None,
        reviewed_by: None,
    };
    vault.catalog_put(REVIEWS, &RecordId(point.id.0), Some(&review))?;
    Ok(Some(format!(
        "{}; point {} before it is held until this one is reviewed (boveda recoverypoint review {} --point {})",
        reasons.join("; "),
        before.id.short(),
        item.name,
        point.id.short()
    )))
}

/// Every suspicious point of the vault, with its review.
///
/// # Errors
/// A store error.
pub fn reviews(vault: &Vault) -> Result<Vec<PointReview>> {
    let mut all: Vec<PointReview> = vault.catalog_list(REVIEWS)?.into_iter().map(|(_, r)| r).collect();
    all.sort_by_key(|r| r.flagged);
    Ok(all)
}

/// An admin's review of suspicious point `prefix` (its id or the start of
/// it; the point itself may be gone) of `item`: `Clean` ends the hold on
/// the point before it (on a guarded vault, with the guard's approval);
/// `Confirmed` keeps it.
///
/// # Errors
/// `NotFound` for a point never flagged; `NeedsApproval`; a store error.
pub fn review(
    vault: &Vault,
    item: &Item,
    prefix: &str,
    verdict: Verdict,
    by: &str,
    clock: &dyn crate::runtime::clock::Clock,
) -> Result<PointReview> {
    let flagged = reviews(vault)?;
    let wanted = prefix.to_lowercase();
    let mine: Vec<&PointReview> = flagged
        .iter()
        .filter(|r| r.item == item.id && !wanted.is_empty() && r.point.to_hex().starts_with(&wanted))
        .collect();
    let found = match mine.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(ServiceError::NotFound(format!(
                "no point {prefix:?} of item {} was flagged suspicious (see boveda recoverypoint review {})",
                item.name, item.name
            )));
        }
        _ => return Err(ServiceError::Invalid(format!("point {prefix:?} matches several flagged points"))),
    };
    let point = &found.point;
    let id = RecordId(point.0);
    if verdict == Verdict::Clean
        && let Some(held) = found.held
    {
        let op = boveda_vault::GuardedOp::new(
            "release the hold of a suspicious point's review",
            format!("item {}", item.name),
            format!("point {} held for point {}", held.to_hex(), point.to_hex()),
        );
        crate::guard::authorize(vault, &op, by, clock)?;
        vault.release_review_hold(&held, point)?;
    }
    let now = clock.now();
    let written = vault.catalog_update(REVIEWS, &id, |current: Option<PointReview>| {
        let mut r = current.ok_or_else(|| VaultError::NotFound(format!("review of point {}", point.short())))?;
        r.verdict = Some(verdict);
        r.reviewed = Some(now);
        r.reviewed_by = Some(by.to_string());
        Ok(Some(r))
    })?;
    written.ok_or_else(|| ServiceError::NotFound(format!("review of point {}", point.short())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rewritten: f64, incompressible: f64) -> Signals {
        Signals { rewritten, rewritten_files: 1000, incompressible, new: 0.1 }
    }

    #[test]
    fn an_encrypted_third_jumps_and_ordinary_change_does_not() {
        let usual: Vec<Signals> = (0..30).map(|i| s(0.02 + f64::from(i % 3) * 0.01, 0.6)).collect();
        assert!(jumps(&s(0.33, 0.99), &usual, true).is_some());
        assert!(jumps(&s(0.04, 0.99), &usual, true).is_none(), "ordinary change");
        assert!(jumps(&s(0.0, 0.1), &usual, true).is_none(), "a large addition rewrites nothing");
        // without compression, only a rewrite of most files counts
        assert!(jumps(&s(0.33, 1.0), &usual, false).is_none());
        assert!(jumps(&s(0.6, 1.0), &usual, false).is_some());
        // little new data (tags edited in media files): no jump
        assert!(
            jumps(&Signals { rewritten: 0.33, rewritten_files: 1000, incompressible: 0.99, new: 0.01 }, &usual, true)
                .is_none()
        );
        // a handful of files, all rewritten: an ordinary day of a small item
        assert!(
            jumps(&Signals { rewritten: 1.0, rewritten_files: 3, incompressible: 1.0, new: 1.0 }, &usual, true)
                .is_none()
        );
        // an item whose new data never compressed: the rewrite still jumps
        let media: Vec<Signals> = (0..30).map(|_| s(0.02, 0.95)).collect();
        assert!(jumps(&s(0.33, 0.99), &media, true).is_some());
        // an item that always rewrites much: a third is no jump
        let busy: Vec<Signals> = (0..5).map(|_| s(0.3, 0.9)).collect();
        assert!(jumps(&s(0.33, 0.99), &busy, true).is_none());
        // no history but the first point: a jump from nothing
        assert!(jumps(&s(0.33, 0.99), &[], true).is_some());
    }
}
