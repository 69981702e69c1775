//! How an item's points are verified (`crate::recovery::verify`): a value
//! kept on the item.

use std::path::PathBuf;

use boveda_engine::boot_check::{BootLimits, Probe};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};

/// How an item's points are verified; kept on the item (`--save`) for the
/// verifications its policy schedules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifySettings {
    /// VMs: CPUs, memory and the time the guest has to answer.
    #[serde(default)]
    pub limits: BootLimits,
    /// VMs without a guest agent: text on the serial console that says
    /// the guest is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
    /// VMs: what must answer once the guest is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    /// VMs: `kvm` or `tcg`; none: KVM when `/dev/kvm` can be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// Files: restore this share of the point's files (1 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_percent: Option<u8>,
    /// Where drills restore to (a scratch folder is made inside and
    /// removed); none: the system's temporary folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<PathBuf>,
}

impl VerifySettings {
    /// Refuses settings that cannot work.
    ///
    /// # Errors
    /// `Invalid` naming the setting.
    pub fn check(&self) -> Result<()> {
        let l = &self.limits;
        if !(1..=64).contains(&l.max_cpus)
            || !(64..=1 << 20).contains(&l.max_memory_mib)
            || !(1..=86_400).contains(&l.time_limit_secs)
        {
            return Err(ServiceError::field_error(
                "limits",
                "give 1 to 64 CPUs, 64 MiB to 1 TiB of memory and 1 second to a day to answer",
            ));
        }
        if self.marker.as_deref().is_some_and(|m| m.is_empty() || m.len() > 256) {
            return Err(ServiceError::field_error("marker", "a console marker is 1 to 256 characters"));
        }
        if let Some(a) = &self.accel
            && a != "kvm"
            && a != "tcg"
        {
            return Err(ServiceError::field_error("accel", format!("{a:?} is not kvm or tcg")));
        }
        if self.sample_percent.is_some_and(|p| !(1..=100).contains(&p)) {
            return Err(ServiceError::field_error("sample_percent", "a sample is 1 to 100 percent"));
        }
        if let Some(Probe::Command(argv)) = &self.probe
            && argv.first().is_none_or(String::is_empty)
        {
            return Err(ServiceError::field_error("probe", "give the command to run in the guest"));
        }
        Ok(())
    }
}
