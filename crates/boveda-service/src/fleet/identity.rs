//! A registered host's identity: where its server is, the fingerprint of
//! the server's certificate, its token and its keys (no passphrase, no
//! store credential). One file, `host.json`, readable by its owner alone,
//! in `/etc/boveda/` for root or the user's config folder otherwise
//! (`BOVEDA_HOST_DIR` overrides both). Beside it, `cache/` keeps what its
//! next backups need (the trees it wrote, in the clear: the folder is the
//! owner's alone too).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use boveda_vault::{HostKeys, RecordId};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};

const IDENTITY_FILE: &str = "host.json";
const IDENTITY_FORMAT: &str = "boveda host identity 1";

/// What a host keeps once registered.
#[derive(Clone, Serialize, Deserialize)]
pub struct HostIdentity {
    pub format: String,
    pub server: String,
    pub fingerprint: String,
    pub vault: String,
    pub host: RecordId,
    pub name: String,
    pub token: String,
    pub keys: HostKeys,
}

impl std::fmt::Debug for HostIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostIdentity")
            .field("server", &self.server)
            .field("vault", &self.vault)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The folder of this host's identity.
pub fn identity_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BOVEDA_HOST_DIR") {
        return PathBuf::from(dir);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/etc/boveda");
    }
    crate::runtime::registry::config_dir().join("host")
}

fn io(path: &Path, source: std::io::Error) -> ServiceError {
    ServiceError::Io { path: path.to_path_buf(), source }
}

impl HostIdentity {
    pub fn new(
        creds: &crate::fleet::HostCredentials,
        registered: &crate::fleet::Registered,
        fingerprint: String,
    ) -> HostIdentity {
        HostIdentity {
            format: IDENTITY_FORMAT.into(),
            server: creds.server.clone(),
            fingerprint,
            vault: creds.vault.clone(),
            host: registered.host.id,
            name: registered.host.name.clone(),
            token: registered.token.clone(),
            keys: registered.keys.clone(),
        }
    }

    /// Writes it into `dir` (made the owner's alone), refusing to replace
    /// an identity there: a host registers once.
    ///
    /// # Errors
    /// `Conflict` when `dir` holds an identity; an I/O error.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| io(dir, e))?;
        let path = dir.join(IDENTITY_FILE);
        let body = serde_json::to_vec_pretty(self).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let mut f = match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ServiceError::Conflict(format!(
                    "this machine is registered already ({}): `boveda host unregister` it on the server and remove the file first",
                    path.display()
                )));
            }
            Err(e) => return Err(io(&path, e)),
        };
        f.write_all(&body).and_then(|()| f.sync_all()).map_err(|e| io(&path, e))?;
        Ok(path)
    }

    /// Reads the identity in `dir`.
    ///
    /// # Errors
    /// `NotFound` with what to do when this machine is not registered;
    /// `Invalid` for a file that is not an identity.
    pub fn load(dir: &Path) -> Result<HostIdentity> {
        let path = dir.join(IDENTITY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ServiceError::NotFound(format!(
                    "this machine is not registered with a vault ({} does not exist): `boveda host register --credentials FILE`",
                    path.display()
                )));
            }
            Err(e) => return Err(io(&path, e)),
        };
        let identity: HostIdentity = serde_json::from_str(&text)
            .map_err(|e| ServiceError::Invalid(format!("{} is not a host identity: {e}", path.display())))?;
        if identity.format != IDENTITY_FORMAT {
            return Err(ServiceError::Invalid(format!("{} is not a host identity this boveda reads", path.display())));
        }
        Ok(identity)
    }

    /// Where this host keeps what its next backups need.
    pub fn cache_dir(dir: &Path) -> PathBuf {
        dir.join("cache")
    }
}
