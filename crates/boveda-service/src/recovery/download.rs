//! A download of a recovery point: chosen files and folders of it (or all
//! of it) as one tar stream, as Azure's file recovery lets files be copied
//! out. Nothing is written on the server: the archive goes to `out` (the
//! HTTP response) as it is made, so a download of any size holds a few
//! chunks in memory.

use std::io::Write;

use boveda_engine::TarStats;
use boveda_vault::Vault;

use crate::error::{Result, ServiceError};
use crate::items::{Item, ItemSource};

/// Writes `paths` of `item`'s point `selector` (every file when empty) to
/// `out` as a tar archive, each path below the archive's root as it is in
/// the point.
///
/// # Errors
/// `NotFound` for no such point; `Invalid` for a path the point does not
/// hold or a path with a NUL byte (before any byte is written); the
/// vault's and `out`'s errors.
pub fn download_point(
    vault: &Vault,
    item: &Item,
    selector: &str,
    paths: &[String],
    out: impl Write,
) -> Result<TarStats> {
    for p in paths {
        if p.as_bytes().contains(&0) {
            return Err(ServiceError::field_error("path", "a path cannot hold a NUL byte"));
        }
    }
    if !paths.is_empty() && !matches!(item.source, ItemSource::Files { .. }) {
        return Err(ServiceError::field_error(
            "path",
            "only a file tree's files can be picked for a download; a disk or VM downloads whole (its files: Restore)",
        ));
    }
    let point = super::find_point(vault, item, selector)?;
    // every path is looked up before the first byte, so a wrong one is a
    // clear refusal, not an archive cut short
    for p in paths {
        let trimmed = p.trim_end_matches('/');
        let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
        let parent = if parent.is_empty() { "/" } else { parent };
        let found = super::browse(vault, &point, parent)
            .map(|nodes| nodes.iter().any(|n| !name.is_empty() && n.name == name.as_bytes()))
            .unwrap_or(false);
        if !found {
            return Err(ServiceError::field_error("path", format!("{p} is not in the point of {}", point.time)));
        }
    }
    let index = vault.load_index()?;
    Ok(boveda_engine::write_point_tar(vault, &index, &point.tree, paths, out)?)
}
