//! A registered host's own record of what it backed up: the trees it
//! wrote, in the clear, in a folder of its own (`trees/<id>`). A host
//! cannot read the vault (see `boveda_vault::host_keys`), so its next
//! backup reads its parent's trees from here to skip unchanged files. A
//! tree is checked against its id (the host's keyed hash) when read, so a
//! tree altered or cut short on disk is refused and the files below it are
//! read again; losing the folder costs one full read, never data.

use std::path::{Path, PathBuf};

use boveda_vault::{ChunkId, HostKeys, Tree, TreeSink, VaultError};

use crate::error::{EngineError, Result};
use crate::file_backup::ParentTrees;

/// The trees a host wrote (see the module's notes).
pub struct HostCache {
    trees: PathBuf,
    keys: HostKeys,
}

impl HostCache {
    /// The cache in `dir` (made if missing), for the host `keys` name.
    ///
    /// # Errors
    /// `Io` when the folder cannot be made.
    pub fn open(dir: &Path, keys: HostKeys) -> Result<Self> {
        let trees = dir.join("trees");
        std::fs::create_dir_all(&trees).map_err(|e| EngineError::io(&trees, e))?;
        Ok(HostCache { trees, keys })
    }

    fn path(&self, id: &ChunkId) -> PathBuf {
        self.trees.join(id.to_hex())
    }

    /// What a host's writer is given: every tree it adds is kept here (a
    /// tree that cannot be written only costs reading its files again).
    pub fn tree_sink(&self) -> TreeSink {
        let trees = self.trees.clone();
        Box::new(move |id: &ChunkId, plaintext: &[u8]| {
            let path = trees.join(id.to_hex());
            if !path.exists() {
                let tmp = trees.join(format!("{}.tmp-{}", id.to_hex(), std::process::id()));
                if std::fs::write(&tmp, plaintext).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
        })
    }
}

impl ParentTrees for HostCache {
    fn load_tree(&self, id: &ChunkId) -> std::result::Result<Tree, VaultError> {
        let path = self.path(id);
        let bytes = std::fs::read(&path).map_err(|e| VaultError::NotFound(format!("{} ({e})", path.display())))?;
        if self.keys.chunk_id(&bytes) != *id {
            return Err(VaultError::Damaged {
                object: path.display().to_string(),
                reason: "the cached tree is not the tree its name says".into(),
            });
        }
        Tree::decode(id, &bytes)
    }
}
