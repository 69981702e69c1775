use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{EngineError, Result};

/// Exclude patterns. A pattern with a `/` matches the whole absolute path
/// (`/home/*/.cache`, `**/node_modules`); one without matches any entry's
/// name (`*.tmp`).
pub struct Excludes {
    by_path: GlobSet,
    by_name: GlobSet,
}

impl Excludes {
    /// # Errors
    /// `Exclude` naming the first invalid pattern.
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut by_path = GlobSetBuilder::new();
        let mut by_name = GlobSetBuilder::new();
        for p in patterns {
            // `*` stays within one path component; `**` crosses them
            let glob = GlobBuilder::new(p.trim_end_matches('/'))
                .literal_separator(true)
                .build()
                .map_err(|e| EngineError::Exclude { pattern: p.clone(), reason: e.kind().to_string() })?;
            if p.trim_end_matches('/').contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| EngineError::Exclude { pattern: patterns.join(" "), reason: e.to_string() })
        };
        Ok(Self { by_path: build(by_path)?, by_name: build(by_name)? })
    }

    pub fn is_excluded(&self, path: &Path, name: &[u8]) -> bool {
        self.by_name.is_match(Path::new(std::ffi::OsStr::from_bytes(name))) || self.by_path.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_path_patterns() {
        let ex = Excludes::new(&["*.tmp".into(), "/data/*/cache".into(), "**/node_modules".into()]).expect("ok");
        assert!(ex.is_excluded(Path::new("/x/a.tmp"), b"a.tmp"));
        assert!(ex.is_excluded(Path::new("/data/u/cache"), b"cache"));
        assert!(!ex.is_excluded(Path::new("/data/u/v/cache"), b"cache"));
        assert!(ex.is_excluded(Path::new("/a/b/node_modules"), b"node_modules"));
        assert!(!ex.is_excluded(Path::new("/a/b/keep.txt"), b"keep.txt"));
        assert!(Excludes::new(&["a[".into()]).is_err());
    }
}
