//! What keeps a recovery point from being deleted, in one place: the
//! vault's immutability (points held until their retention ends), soft
//! delete (a deleted item's points held until its window ends), and the
//! rules for changing either. [`Vault::remove`] asks [`Vault::point_held`]
//! before it deletes a point, and [`Vault::change_settings`] asks
//! [`check_settings_change`] before it writes settings, so no code path
//! above the vault crate can skip them (docs/SECURITY.md).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Result, VaultError};
use crate::ids::{PointId, RecordId};

use super::{Vault, VaultSettings};

/// Whether points may be deleted before their retention ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Immutability {
    /// Points may be deleted whenever retention or a user says so.
    #[default]
    Disabled,
    /// No point is deleted before its retention ends; may be disabled.
    Enabled,
    /// As enabled, and can never be disabled, by anyone.
    Locked,
}

impl Immutability {
    pub fn as_str(self) -> &'static str {
        match self {
            Immutability::Disabled => "disabled",
            Immutability::Enabled => "enabled",
            Immutability::Locked => "locked",
        }
    }

    pub fn is_disabled(&self) -> bool {
        *self == Immutability::Disabled
    }

    /// From its name (`disabled`, `enabled`, `locked`).
    ///
    /// # Errors
    /// `Invalid` for another word.
    pub fn parse(text: &str) -> Result<Immutability> {
        match text {
            "disabled" => Ok(Immutability::Disabled),
            "enabled" => Ok(Immutability::Enabled),
            "locked" => Ok(Immutability::Locked),
            other => Err(VaultError::Invalid(format!("immutability is disabled, enabled or locked, not {other:?}"))),
        }
    }
}

/// How long one point is held (a catalog record per point; each time only
/// ever moves later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointHold {
    pub point: PointId,
    /// The end of its retention as it was last evaluated: binding while
    /// the vault is immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_until: Option<Timestamp>,
    /// The end of the soft-delete window of its item's deleted data:
    /// always binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_delete_until: Option<Timestamp>,
    /// The suspicious point whose review keeps this one (the last point
    /// before a backup that looked like an attack): binding until an
    /// admin reviews it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_of: Option<PointId>,
}

impl PointHold {
    fn new(point: PointId) -> PointHold {
        PointHold { point, retention_until: None, soft_delete_until: None, review_of: None }
    }
}

/// What a hold is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Retention,
    SoftDelete,
}

pub(crate) const HOLDS_KIND: &str = "point-holds";

/// Refuses a change of the settings `old` to `new` that would weaken what
/// protects points: unlocking a locked vault, shortening soft delete or
/// turning off its always-on while it is always-on or the vault immutable,
/// and removing or changing the secondary of an immutable vault. Each
/// refusal names the setting that refuses it.
///
/// # Errors
/// `Invalid` naming the setting.
pub fn check_settings_change(old: &VaultSettings, new: &VaultSettings) -> Result<()> {
    let refuse = |why: String| Err(VaultError::Invalid(why));
    if old.immutability == Immutability::Locked && new.immutability != Immutability::Locked {
        return refuse(format!(
            "vault {}'s immutability is locked: it cannot be disabled or changed, by anyone, with any credential",
            old.name
        ));
    }
    if old.object_lock != new.object_lock {
        return refuse(format!("vault {}'s object lock is set when the vault is created and never changes", old.name));
    }
    let immutable = old.immutability != Immutability::Disabled;
    let by = if old.soft_delete_always_on {
        "soft delete is always-on".to_string()
    } else {
        format!("the vault's immutability is {}", old.immutability.as_str())
    };
    if (immutable || old.soft_delete_always_on) && new.soft_delete_days < old.soft_delete_days {
        return refuse(format!(
            "the soft-delete window of vault {} cannot be shortened from {} to {} days: {by}",
            old.name, old.soft_delete_days, new.soft_delete_days
        ));
    }
    if old.soft_delete_always_on && !new.soft_delete_always_on {
        return refuse(format!("soft delete of vault {} is always-on: it cannot be turned off", old.name));
    }
    if immutable && old.secondary.is_some() && new.secondary != old.secondary {
        return refuse(format!(
            "the secondary of vault {} cannot be removed or changed: the vault's immutability is {}",
            old.name,
            old.immutability.as_str()
        ));
    }
    Ok(())
}

impl Vault {
    /// How long `point` is held, if at all.
    ///
    /// # Errors
    /// A store error.
    pub fn point_hold(&self, point: &PointId) -> Result<Option<PointHold>> {
        self.catalog_get::<PointHold>(HOLDS_KIND, &RecordId(point.0))
    }

    /// Every point's hold.
    ///
    /// # Errors
    /// A store error.
    pub fn point_holds(&self) -> Result<Vec<PointHold>> {
        Ok(self.catalog_list::<PointHold>(HOLDS_KIND)?.into_iter().map(|(_, h)| h).collect())
    }

    /// Holds `point` until `until` for `why`; a hold only ever moves later
    /// (an earlier time leaves it as it is, and writes nothing).
    ///
    /// # Errors
    /// A store error.
    pub fn hold_point(&self, point: &PointId, why: Hold, until: Timestamp) -> Result<()> {
        let later = |held: Option<Timestamp>| held.is_none_or(|h| h < until);
        let current = self.point_hold(point)?.unwrap_or(PointHold::new(*point));
        let needed = match why {
            Hold::Retention => later(current.retention_until),
            Hold::SoftDelete => later(current.soft_delete_until),
        };
        if !needed {
            return Ok(());
        }
        self.catalog_update(HOLDS_KIND, &RecordId(point.0), |held: Option<PointHold>| {
            let mut hold = held.unwrap_or(PointHold::new(*point));
            let slot = match why {
                Hold::Retention => &mut hold.retention_until,
                Hold::SoftDelete => &mut hold.soft_delete_until,
            };
            *slot = Some(slot.map_or(until, |h| h.max(until)));
            Ok(Some(hold))
        })?;
        Ok(())
    }

    /// Holds `point` until the suspicious point `suspicious` is reviewed.
    ///
    /// # Errors
    /// A store error.
    pub fn hold_for_review(&self, point: &PointId, suspicious: &PointId) -> Result<()> {
        self.catalog_update(HOLDS_KIND, &RecordId(point.0), |held: Option<PointHold>| {
            let mut hold = held.unwrap_or(PointHold::new(*point));
            hold.review_of = Some(*suspicious);
            Ok(Some(hold))
        })?;
        Ok(())
    }

    /// Ends the hold that the review of `suspicious` put on `point` (the
    /// review is done); other holds stay.
    ///
    /// # Errors
    /// A store error.
    pub fn release_review_hold(&self, point: &PointId, suspicious: &PointId) -> Result<()> {
        if self.point_hold(point)?.is_none_or(|h| h.review_of != Some(*suspicious)) {
            return Ok(());
        }
        self.catalog_update(HOLDS_KIND, &RecordId(point.0), |held: Option<PointHold>| {
            let mut hold = held.unwrap_or(PointHold::new(*point));
            if hold.review_of == Some(*suspicious) {
                hold.review_of = None;
            }
            Ok(Some(hold))
        })?;
        Ok(())
    }

    /// Why `point` may not be deleted at `now`, if it may not: a review it
    /// waits for, its soft-delete window, or (while the vault is
    /// immutable) its retention.
    ///
    /// # Errors
    /// A store error.
    pub fn point_held(&self, point: &PointId, now: Timestamp) -> Result<Option<String>> {
        let Some(hold) = self.point_hold(point)? else { return Ok(None) };
        if let Some(suspicious) = hold.review_of {
            return Ok(Some(format!(
                "point {} is held until suspicious point {} is reviewed (boveda recoverypoint review)",
                point.short(),
                suspicious.short()
            )));
        }
        if let Some(until) = hold.soft_delete_until.filter(|u| *u > now) {
            return Ok(Some(format!(
                "point {} is held until {until} by soft delete (its item's deleted data stays recoverable until then)",
                point.short()
            )));
        }
        let Some(until) = hold.retention_until.filter(|u| *u > now) else { return Ok(None) };
        // made immutable by another process since this handle read its
        // settings: read them again before a delete goes through
        if self.settings().immutability.is_disabled() {
            self.refresh_settings()?;
        }
        let immutability = self.settings().immutability;
        if !immutability.is_disabled() {
            return Ok(Some(format!(
                "point {} is held until {until}, the end of its retention, by the vault's immutability ({})",
                point.short(),
                immutability.as_str()
            )));
        }
        Ok(None)
    }
}
