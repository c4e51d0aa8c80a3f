//! Exclude patterns, as restic users write them: a glob without a slash
//! matches a name anywhere; a glob with one matches the whole absolute path.

use globset::{Glob, GlobSet, GlobSetBuilder};
use seawall_common::{Error, ErrorKind, Result};
use std::path::Path;

/// Compiled exclude patterns.
#[derive(Debug, Clone)]
pub struct Excludes {
    by_name: GlobSet,
    by_path: GlobSet,
}

impl Excludes {
    /// Compiles patterns; a malformed one is an error naming it.
    pub fn new(patterns: &[String]) -> Result<Excludes> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        for p in patterns {
            let glob = Glob::new(p.trim_end_matches('/')).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("exclude pattern {p:?} is malformed: {e}"),
                )
            })?;
            if p.trim_end_matches('/').contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("exclude patterns: {e}")))
        };
        Ok(Excludes {
            by_name: build(by_name)?,
            by_path: build(by_path)?,
        })
    }

    /// Whether a path is excluded.
    pub fn excludes(&self, path: &Path) -> bool {
        path.file_name().is_some_and(|n| self.by_name.is_match(n)) || self.by_path.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let ex = Excludes::new(&["*.tmp".into(), "/srv/app/cache".into()]).unwrap();
        assert!(ex.excludes(Path::new("/a/b/x.tmp")));
        assert!(ex.excludes(Path::new("/srv/app/cache")));
        assert!(!ex.excludes(Path::new("/srv/app/cache2")));
        assert!(!ex.excludes(Path::new("/srv/app/data")));
        assert!(Excludes::new(&["a[".into()]).is_err());
    }
}
