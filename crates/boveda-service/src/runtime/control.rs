//! The vault's control-plane settings: what only the service reads (where
//! alerts are posted, the replication lag that raises an alert, where the
//! drives of offline seeding are shipped). They are a catalog record of the
//! service's own (`catalog/control/`), sealed like every record, beside the
//! vault's own settings (name, redundancy, packs, compression, store
//! limits), which the vault and the engine read.
//!
//! Vaults made before this record kept these three in the vault's settings;
//! they are read from there until the record is first written, which takes
//! them over and clears them from the settings.

use boveda_vault::{RecordId, Vault};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};
use crate::runtime::email::{EmailSettings, EmailView};

const CONTROL: &str = "control";
const CONTROL_ID: RecordId = RecordId([0; 16]);

/// The vault's control-plane settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultControl {
    /// Where alerts are POSTed as JSON, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// A geo-redundant vault's secondary may lag this many minutes before an
    /// alert is raised (unset: [`VaultControl::DEFAULT_LAG_ALERT_MINS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_lag_alert_mins: Option<u32>,
    /// Where the drives of offline seeding are shipped (shown by diskprep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<String>,
    /// Where alerts are sent by e-mail, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSettings>,
}

impl VaultControl {
    pub const DEFAULT_LAG_ALERT_MINS: u32 = 60;
    pub const LAG_ALERT_MINS: std::ops::RangeInclusive<u32> = 1..=7 * 24 * 60;

    /// The lag, in minutes, that raises an alert.
    pub fn lag_alert_mins(&self) -> u32 {
        self.replication_lag_alert_mins.unwrap_or(Self::DEFAULT_LAG_ALERT_MINS)
    }

    /// What a vault made before the record kept in its settings.
    fn from_settings(vault: &Vault) -> Self {
        let s = vault.settings();
        VaultControl {
            webhook: s.webhook.clone(),
            replication_lag_alert_mins: s.replication_lag_alert_mins,
            shipping_address: s.shipping_address.clone(),
            email: None,
        }
    }
}

/// The vault's control-plane settings as they are in the store now.
///
/// # Errors
/// A store error or a damaged record.
pub fn vault_control(vault: &Vault) -> Result<VaultControl> {
    Ok(vault.catalog_get(CONTROL, &CONTROL_ID)?.unwrap_or_else(|| VaultControl::from_settings(vault)))
}

/// Changes the control-plane settings as they are in the store now (a
/// change another process made meanwhile is kept); the settings written.
///
/// # Errors
/// A store error or a damaged record.
pub(crate) fn change_control(vault: &Vault, change: impl Fn(&mut VaultControl)) -> Result<VaultControl> {
    let legacy = VaultControl::from_settings(vault);
    let written = vault.catalog_update(CONTROL, &CONTROL_ID, |current: Option<VaultControl>| {
        let mut control = current.unwrap_or_else(|| legacy.clone());
        change(&mut control);
        Ok(Some(control))
    })?;
    // taken over: the vault's settings keep them no longer
    if legacy != VaultControl::default() {
        vault.change_settings(|s| {
            s.webhook = None;
            s.replication_lag_alert_mins = None;
            s.shipping_address = None;
        })?;
    }
    Ok(written.unwrap_or_default())
}

/// The vault's e-mail settings as a client sees them, if any.
///
/// # Errors
/// A store error or a damaged record.
pub fn email_settings(vault: &Vault) -> Result<Option<EmailView>> {
    Ok(vault_control(vault)?.email.as_ref().map(EmailView::from))
}

/// Sets the vault's e-mail settings; a password left out keeps the one
/// stored only when nothing else of the connection changed (server, port,
/// security, user, CA).
///
/// # Errors
/// `Invalid` naming the field at fault; a store error.
pub fn set_email_settings(vault: &Vault, mut new: EmailSettings) -> Result<EmailView> {
    // the stored password goes only where it went before: to the same
    // server, port, security and CA, as the same user (else whoever may
    // change the settings could send it to a server of theirs)
    if new.password.is_none()
        && let Some(old) = vault_control(vault)?.email
        && (&old.server, old.port, old.security, &old.username, &old.ca_certificate)
            == (&new.server, new.port, new.security, &new.username, &new.ca_certificate)
    {
        new.password = old.password;
    }
    new.validate()?;
    let written = change_control(vault, |c| c.email = Some(new.clone()))?;
    Ok(written.email.as_ref().map(EmailView::from).unwrap_or_else(|| EmailView::from(&new)))
}

/// Stops e-mails.
///
/// # Errors
/// A store error.
pub fn clear_email_settings(vault: &Vault) -> Result<()> {
    change_control(vault, |c| c.email = None)?;
    Ok(())
}

/// Sends a test message with the vault's settings; the recipients.
///
/// # Errors
/// `Conflict` without settings; `Invalid` with what the server said.
pub fn send_test_email(vault: &Vault) -> Result<Vec<String>> {
    let Some(settings) = vault_control(vault)?.email else {
        return Err(ServiceError::Conflict("this vault sends no e-mail: set its SMTP settings first".into()));
    };
    let name = vault.settings().name.clone();
    settings
        .send(
            &format!("[boveda] Test message (vault {name})"),
            &format!(
                "This is a test of vault {name}'s e-mail notifications: alerts come like this, one message each.\n"
            ),
        )
        .map_err(ServiceError::Invalid)?;
    Ok(settings.to.clone())
}
