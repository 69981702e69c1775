//! Paths inside a recovery point, and browsing them.

use boveda_vault::{ChunkId, ChunkIndex, Node, NodeKind, Vault};

use crate::error::{EngineError, Result};

/// Splits `/a/b/c` (or `a/b/c`) into components, refusing `.` and `..`.
///
/// # Errors
/// `BadPointPath` for `.` or `..` components.
pub fn split_point_path(path: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for part in path.split('/') {
        match part {
            "" => {}
            "." | ".." => return Err(EngineError::BadPointPath(path.to_string())),
            p => out.push(p.as_bytes().to_vec()),
        }
    }
    Ok(out)
}

/// Lists what `path` names inside a point: a directory's entries, or the
/// one entry when it names anything else.
///
/// # Errors
/// `NotInPoint` when the path does not exist there; vault errors.
pub fn list_point_path(vault: &Vault, index: &ChunkIndex, root: &ChunkId, path: &str) -> Result<Vec<Node>> {
    let parts = split_point_path(path)?;
    let mut tree = vault.load_tree(index, root)?;
    for (i, part) in parts.iter().enumerate() {
        let node = tree.find(part).cloned().ok_or_else(|| EngineError::NotInPoint(path.to_string()))?;
        match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(sub)) => tree = vault.load_tree(index, &sub)?,
            _ if i + 1 == parts.len() => return Ok(vec![node]),
            _ => return Err(EngineError::NotInPoint(path.to_string())),
        }
    }
    Ok(tree.nodes)
}
