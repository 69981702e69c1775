//! What this host is, and how it reaches a vault's store: facts the vault
//! and replication rooms both need, kept here so neither imports the other.

use boveda_store::RetryPolicy;
use boveda_vault::StoreSettings;

use crate::error::{Result, ServiceError};

/// This host's name, as jobs and records name it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Local paths are made absolute so the registry works from any folder.
pub(crate) fn normalize_store(url: &str) -> Result<String> {
    if url.contains("://") {
        return Ok(url.to_string());
    }
    let p = std::path::Path::new(url);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| ServiceError::Invalid(format!("cannot resolve {url}: {e}")))?.join(p)
    };
    // drop `.` components; `..` is kept as given (it may cross a symlink)
    let clean: std::path::PathBuf = abs.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect();
    Ok(clean.display().to_string())
}

/// The retry policy a vault's settings ask for.
pub fn retry_policy(settings: &StoreSettings) -> RetryPolicy {
    let default = RetryPolicy::default();
    RetryPolicy {
        attempts: settings.retries.unwrap_or(default.attempts),
        max_delay: settings
            .retry_max_wait_secs
            .map_or(default.max_delay, |s| std::time::Duration::from_secs(u64::from(s))),
        ..default
    }
}
