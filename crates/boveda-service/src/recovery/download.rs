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
    // each path once, and none below another picked: an archive no larger
    // than the point (repeats would multiply what is streamed)
    let paths = distinct_tops(paths);
    let point = super::find_point(vault, item, selector)?;
    // every path is looked up before the first byte, so a wrong one is a
    // clear refusal, not an archive cut short
    for p in &paths {
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
    Ok(boveda_engine::write_point_tar(vault, &index, &point.tree, &paths, out)?)
}

/// `paths` without repeats and without any below another of them.
fn distinct_tops(paths: &[String]) -> Vec<String> {
    let mut sorted: Vec<String> =
        paths.iter().map(|p| if p.len() > 1 { p.trim_end_matches('/').to_string() } else { p.clone() }).collect();
    sorted.sort_by_key(|p| p.len());
    let mut kept: Vec<String> = Vec::new();
    for p in sorted {
        let below = |k: &String| p == *k || k == "/" || p.starts_with(&format!("{k}/"));
        if !kept.iter().any(below) {
            kept.push(p);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::distinct_tops;

    #[test]
    fn repeated_and_nested_paths_are_taken_once() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(distinct_tops(&v(&["/a/b", "/a/b", "/a/b/"])), v(&["/a/b"]));
        assert_eq!(distinct_tops(&v(&["/a/b/c", "/a", "/ab"])), v(&["/a", "/ab"]));
        assert_eq!(distinct_tops(&v(&["/x", "/"])), v(&["/"]));
    }
}
