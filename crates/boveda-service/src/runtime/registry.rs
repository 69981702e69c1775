//! The user's list of known vaults (name -> store URL). A cache of
//! convenience only: a vault is complete in its store (DESIGN principle 1).

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownVault {
    pub name: String,
    pub store: String,
    pub id: String,
    /// A geo-redundant vault's secondary store, kept here too so that it
    /// can be found while the primary is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Registry {
    #[serde(default)]
    pub vaults: Vec<KnownVault>,
    #[serde(skip)]
    path: PathBuf,
}

/// `$BOVEDA_CONFIG_DIR`, else `$XDG_CONFIG_HOME/boveda`, else `~/.config/boveda`.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BOVEDA_CONFIG_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(d).join("boveda");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".config").join("boveda")
}

/// Where local caches live: `$BOVEDA_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/boveda`, else `~/.cache/boveda`. Deleting it loses
/// nothing.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BOVEDA_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("boveda");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("boveda")
}

impl Registry {
    /// Loads the registry; a missing file is an empty registry.
    ///
    /// # Errors
    /// `Config` when the file exists but cannot be read or parsed.
    pub fn load() -> Result<Self> {
        let path = config_dir().join("vaults.json");
        let err = |reason: String| ServiceError::Config { path: path.display().to_string(), reason };
        let mut reg: Registry = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Registry::default(),
            Err(e) => return Err(err(e.to_string())),
        };
        reg.path = path;
        Ok(reg)
    }

    pub fn find(&self, name: &str) -> Option<&KnownVault> {
        self.vaults.iter().find(|v| v.name.eq_ignore_ascii_case(name))
    }

    /// Adds a vault; names are unique, ignoring case.
    ///
    /// # Errors
    /// `Conflict` when the name is taken; `Config` when the file cannot be written.
    pub fn add(&mut self, vault: KnownVault) -> Result<()> {
        self.change(|reg| {
            if reg.find(&vault.name).is_some() {
                return Err(ServiceError::Conflict(format!(
                    "a vault named {:?} is already known (vault names are unique among the vaults this user's configuration knows)",
                    vault.name
                )));
            }
            reg.vaults.push(vault.clone());
            Ok(())
        })
    }

    /// Records a vault's secondary store (after its redundancy changed).
    ///
    /// # Errors
    /// `Config` when the file cannot be written.
    pub fn set_secondary(&mut self, vault_id: &str, secondary: Option<String>) -> Result<()> {
        self.change(|reg| {
            for v in reg.vaults.iter_mut().filter(|v| v.id == vault_id) {
                v.secondary = secondary.clone();
            }
            Ok(())
        })
    }

    /// Changes the registry as it is on disk now, under an exclusive lock,
    /// so that two processes (or threads) changing it at once both keep
    /// their change; `self` becomes the registry written.
    fn change(&mut self, f: impl FnOnce(&mut Registry) -> Result<()>) -> Result<()> {
        let err = |reason: String| ServiceError::Config { path: self.path.display().to_string(), reason };
        let dir = self.path.parent().map(PathBuf::from).unwrap_or_default();
        fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
        let lock = fs::File::create(dir.join(".vaults.lock")).map_err(|e| err(e.to_string()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| err(e.to_string()))?;
        let mut current = Registry::load()?;
        current.path = self.path.clone();
        f(&mut current)?;
        current.save()?;
        *self = current;
        Ok(())
    }

    fn save(&self) -> Result<()> {
        let err = |reason: String| ServiceError::Config { path: self.path.display().to_string(), reason };
        let dir = self.path.parent().map(PathBuf::from).unwrap_or_default();
        fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
        // one writer at a time holds the lock; the name is unique anyway
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".vaults.json.{}.{n}", std::process::id()));
        let body = serde_json::to_vec_pretty(self).map_err(|e| err(e.to_string()))?;
        fs::write(&tmp, body).and_then(|()| fs::rename(&tmp, &self.path)).map_err(|e| err(e.to_string()))
    }
}
