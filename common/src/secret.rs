//! Secrets kept in files (repository passwords, S3 secret keys, the
//! operator token): read only when no one but the owner can read them.

use crate::{Error, ErrorKind, Result};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Reads a secret from a file that only its owner (or, when root owns it,
/// its group: PostgreSQL's rule) may read; one trailing newline is dropped.
pub fn read_secret_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("{what} file {}", path.display()), e))?;
    let mode = meta.permissions().mode();
    let too_open = if meta.uid() == 0 {
        mode & 0o007
    } else {
        mode & 0o077
    };
    if too_open != 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{what} file {} may be read by others (mode {:o}): run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            ),
        ));
    }
    let text = std::fs::read(path)
        .map_err(|e| Error::io(format!("reading {what} file {}", path.display()), e))?;
    Ok(text.strip_suffix(b"\n").unwrap_or(&text).to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_file_others_may_read_is_refused_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        std::fs::write(&path, "secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_file(&path, "password").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&path, "password").unwrap(), b"secret");
    }
}
