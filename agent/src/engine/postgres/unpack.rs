//! Lays a base backup's tar down and proves it as it goes: each file's
//! CRC-32C is computed while it is written, and checked against the
//! `backup_manifest` PostgreSQL put at the end of the tar, the way
//! `pg_verifybackup` would, but without reading the files a second time.

use seawall_common::{Error, ErrorKind, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The files of a manifest we check.
#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(rename = "Files")]
    files: Vec<ManifestFile>,
}

#[derive(Debug, Deserialize)]
struct ManifestFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Checksum-Algorithm")]
    algorithm: Option<String>,
    #[serde(rename = "Checksum")]
    checksum: Option<String>,
}

/// What unpacking found.
#[derive(Debug, Clone, Default)]
pub struct Unpacked {
    /// Regular files written.
    pub files: u64,
    /// Whether the files were checked against a manifest.
    pub verified: bool,
}

/// Paths pg_verifybackup does not expect in the manifest.
fn ignored(rel: &str) -> bool {
    rel == "backup_manifest" || rel == "pg_wal" || rel.starts_with("pg_wal/")
}

/// A relative path inside the target, or an error for anything that would leave it.
fn safe_relative(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(Error::corrupt(format!(
                    "base backup entry {} leaves the data directory; refusing it",
                    p.display()
                )))
            }
        }
    }
    Ok(out)
}

/// Refuses an entry whose way into `dir` passes through a symlink: an
/// earlier entry `x -> /elsewhere` must not let a later `x/f` write outside
/// the data directory.
fn refuse_symlinked_parents(dir: &Path, rel: &Path) -> Result<()> {
    let mut at = dir.to_path_buf();
    let parents = rel.parent().map(|p| p.components().count()).unwrap_or(0);
    for c in rel.components().take(parents) {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::corrupt(format!(
                    "base backup entry {} goes through the symlink {}; refusing it (nothing is written outside {})",
                    rel.display(),
                    at.display(),
                    dir.display()
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(at.display(), e)),
        }
    }
    Ok(())
}

/// Creates the directory entry `rel` (unless there) and gives it `mode`,
/// without following a link: an earlier entry `x -> /elsewhere` and a
/// directory entry `x` must not change the mode of `/elsewhere`.
fn set_directory_mode(dir: &Path, rel: &Path, dest: &Path, mode: u32) -> Result<()> {
    let io = |e: std::io::Error| Error::io(format!("unpacking {}", dest.display()), e);
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::corrupt(format!(
                "base backup directory entry {} is already a symlink; refusing it (nothing outside {} is changed)",
                rel.display(),
                dir.display()
            )))
        }
        Ok(m) if !m.is_dir() => {
            return Err(Error::corrupt(format!(
                "base backup directory entry {} is already a file; refusing it",
                rel.display()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dest)
                .map_err(io)?;
        }
        Err(e) => return Err(io(e)),
    }
    // The mode is changed through a descriptor opened without following
    // links, so a link swapped in since the check is refused too.
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(dest)
        .map_err(io)?;
    handle
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)
}

/// Unpacks `reader` (a pg_basebackup tar) into `dir` and verifies it.
pub fn unpack_and_verify<R: Read>(reader: R, dir: &Path) -> Result<Unpacked> {
    let mut archive = tar::Archive::new(reader);
    let mut sums: HashMap<String, (u64, u32)> = HashMap::new();
    let mut manifest: Option<Vec<u8>> = None;
    let mut out = Unpacked::default();
    let io = |what: &Path, e: std::io::Error| Error::io(format!("unpacking {}", what.display()), e);
    let entries = archive
        .entries()
        .map_err(|e| Error::corrupt(format!("the base backup is not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| Error::corrupt(format!("reading the base backup tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| Error::corrupt(format!("bad path in the base backup tar: {e}")))?
            .into_owned();
        let rel = safe_relative(&path)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        refuse_symlinked_parents(dir, &rel)?;
        let dest = dir.join(&rel);
        let mode = entry.header().mode().unwrap_or(0o600) & 0o7777;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(dest.parent().unwrap_or(dir)).map_err(|e| io(&dest, e))?;
                set_directory_mode(dir, &rel, &dest, mode)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
                }
                let key = rel.to_string_lossy().into_owned();
                if key == "backup_manifest" {
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data).map_err(|e| io(&dest, e))?;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&dest)
                        .and_then(|mut f| f.write_all(&data))
                        .map_err(|e| io(&dest, e))?;
                    manifest = Some(data);
                    continue;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dest)
                    .map_err(|e| io(&dest, e))?;
                let mut crc = 0u32;
                let mut size = 0u64;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = entry.read(&mut buf).map_err(|e| io(&dest, e))?;
                    if n == 0 {
                        break;
                    }
                    crc = crc32c::crc32c_append(crc, &buf[..n]);
                    size += n as u64;
                    file.write_all(&buf[..n]).map_err(|e| io(&dest, e))?;
                }
                out.files += 1;
                sums.insert(key, (size, crc));
            }
            tar::EntryType::Symlink => {
                // Tablespace links are the only links a data directory has
                // (pg_basebackup to stdout writes none); anywhere else a link
                // could aim a later entry, or a mode change, outside.
                if rel.parent() != Some(Path::new("pg_tblspc")) {
                    return Err(Error::corrupt(format!(
                        "base backup entry {} is a symlink outside pg_tblspc; refusing it (nothing is written outside {})",
                        rel.display(),
                        dir.display()
                    )));
                }
                std::fs::create_dir_all(dir.join("pg_tblspc")).map_err(|e| io(&dest, e))?;
                if let Ok(Some(target)) = entry.link_name() {
                    std::os::unix::fs::symlink(target.as_ref(), &dest).map_err(|e| io(&dest, e))?;
                }
            }
            other => {
                return Err(Error::corrupt(format!(
                    "base backup entry {} has unexpected type {other:?}",
                    path.display()
                )))
            }
        }
    }
    if let Some(m) = manifest {
        check(&m, &sums)?;
        out.verified = true;
    }
    Ok(out)
}

/// Compares what was written with the manifest.
fn check(manifest: &[u8], sums: &HashMap<String, (u64, u32)>) -> Result<()> {
    let m: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| Error::corrupt(format!("backup_manifest is not valid: {e}")))?;
    let mut listed = 0usize;
    for f in &m.files {
        let Some(path) = &f.path else { continue };
        if ignored(path) {
            continue;
        }
        listed += 1;
        let Some((size, crc)) = sums.get(path) else {
            return Err(Error::corrupt(format!(
                "{path} is in the backup's manifest but not in the backup"
            )));
        };
        if *size != f.size {
            return Err(Error::corrupt(format!(
                "{path} has {size} bytes, the backup's manifest says {}",
                f.size
            )));
        }
        if f.algorithm.as_deref() == Some("CRC32C") {
            let want = f.checksum.as_deref().unwrap_or_default();
            let got = hex::encode(crc.to_le_bytes());
            if !got.eq_ignore_ascii_case(want) {
                return Err(Error::corrupt(format!(
                    "{path} has CRC-32C {got}, the backup's manifest says {want}"
                )));
            }
        }
    }
    let extra = sums.keys().filter(|k| !ignored(k)).count();
    if extra != listed {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("the backup holds {extra} files but its manifest lists {listed}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar header for a symlink entry.
    fn symlink_header() -> tar::Header {
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_mode(0o777);
        link
    }

    #[test]
    fn a_symlink_in_the_tar_cannot_carry_a_later_entry_outside() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut link = symlink_header();
        b.append_link(&mut link, "pg_tblspc/x", outside.path())
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "pg_tblspc/x/f", &b"evil"[..])
            .unwrap();
        let tar = b.into_inner().unwrap();
        let err = unpack_and_verify(&tar[..], &data).unwrap_err();
        assert!(
            err.to_string().contains("goes through the symlink"),
            "{err}"
        );
        assert!(
            !outside.path().join("f").exists(),
            "written outside the target"
        );
    }

    #[test]
    fn a_directory_entry_over_a_symlink_leaves_the_links_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // The tar itself may not carry a link outside pg_tblspc ...
        let mut b = tar::Builder::new(Vec::new());
        let mut link = symlink_header();
        b.append_link(&mut link, "x", outside.path()).unwrap();
        let mut d = tar::Header::new_gnu();
        d.set_entry_type(tar::EntryType::Directory);
        d.set_size(0);
        d.set_mode(0o777);
        b.append_data(&mut d, "x", &b""[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let err = unpack_and_verify(&tar[..], &data).unwrap_err();
        assert!(
            err.to_string().contains("symlink outside pg_tblspc"),
            "{err}"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(outside.path()), 0o700);
        // ... and a link already in the target is not followed either.
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut d, "y", &b""[..]).unwrap();
        let tar = b.into_inner().unwrap();
        std::os::unix::fs::symlink(outside.path(), data.join("y")).unwrap();
        let err = unpack_and_verify(&tar[..], &data).unwrap_err();
        assert!(err.to_string().contains("already a symlink"), "{err}");
        assert_eq!(mode(outside.path()), 0o700);
        // A tablespace link is still laid down.
        let mut b = tar::Builder::new(Vec::new());
        b.append_link(&mut link, "pg_tblspc/16384", outside.path())
            .unwrap();
        let tar = b.into_inner().unwrap();
        let clean = dir.path().join("clean");
        std::fs::create_dir(&clean).unwrap();
        unpack_and_verify(&tar[..], &clean).unwrap();
        assert!(std::fs::symlink_metadata(clean.join("pg_tblspc/16384"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn manifest(files: &[(&str, &[u8])]) -> Vec<u8> {
        let list: Vec<_> = files
            .iter()
            .map(|(n, d)| serde_json::json!({"Path": n, "Size": d.len(), "Checksum-Algorithm": "CRC32C", "Checksum": hex::encode(crc32c::crc32c(d).to_le_bytes())}))
            .collect();
        serde_json::to_vec(
            &serde_json::json!({"PostgreSQL-Backup-Manifest-Version": 1, "Files": list}),
        )
        .unwrap()
    }

    #[test]
    fn verifies_against_the_manifest_and_names_a_bad_file() {
        let files: &[(&str, &[u8])] = &[("PG_VERSION", b"15\n"), ("base/1/1259", b"pages")];
        let m = manifest(files);
        let mut all = files.to_vec();
        all.push(("backup_manifest", &m));
        let dir = tempfile::tempdir().unwrap();
        let u = unpack_and_verify(&tar_of(&all)[..], dir.path()).unwrap();
        assert!(u.verified);
        assert_eq!(
            std::fs::read(dir.path().join("base/1/1259")).unwrap(),
            b"pages"
        );

        let mut bad = all.clone();
        bad[1] = ("base/1/1259", b"pagez");
        let dir = tempfile::tempdir().unwrap();
        let err = unpack_and_verify(&tar_of(&bad)[..], dir.path()).unwrap_err();
        assert!(err.to_string().contains("base/1/1259"), "{err}");
    }
}
