//! `seawall certs`: a private CA and the certificates every holder needs,
//! for a first install and for the tests. Keys are written 0600 and never
//! over an existing file unless `--force`.

use crate::args::{CertsArgs, CertsWhat, Global};
use anyhow::Context;
use seawall_common::tls::certinfo::pem_fingerprint;
use seawall_common::tls::issue::{days, issue, new_ca, Issued};
use seawall_common::tls::{check_label, Identity};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Writes `text` to `path` with `mode`, through a new temporary file in the
/// same directory: a replaced key (`--force`) gets the new file's mode, not
/// the old file's, and a reader never sees half a file.
fn write(path: &Path, text: &str, mode: u32, force: bool) -> anyhow::Result<()> {
    let exists = || {
        anyhow::anyhow!(
            "{} exists: give --force to replace it, or another --name",
            path.display()
        )
    };
    if !force && path.exists() {
        return Err(exists());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{:08x}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("new"),
        rand::random::<u32>()
    ));
    let written = (|| -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        if force {
            std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        } else {
            // A link fails if the name appeared meanwhile: never overwrite.
            std::fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    exists()
                } else {
                    anyhow::anyhow!("cannot write {}: {e}", path.display())
                }
            })?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    written
}

fn save(dir: &Path, stem: &str, issued: &Issued, force: bool) -> anyhow::Result<[PathBuf; 2]> {
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    // The key first: a certificate without its key is useless, the reverse is harmless.
    write(&key, &issued.key_pem, 0o600, force)?;
    write(&cert, &issued.cert_pem, 0o644, force)?;
    Ok([cert, key])
}

/// Runs `seawall certs`.
pub fn run(g: &Global, a: CertsArgs) -> anyhow::Result<u8> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let (identity, hosts) = match a.what {
        CertsWhat::Ca { name } => {
            let ca = new_ca(&name, validity(a.valid_for, a.days, 3650))?;
            let [cert, key] = save(&a.dir, "ca", &ca, a.force)?;
            if !g.quiet {
                println!("created the CA {} (key {})", cert.display(), key.display());
                println!("keep the CA key offline once every certificate is issued");
            }
            return Ok(0);
        }
        CertsWhat::Coordinator { name, hosts } => (Identity::Coordinator { name }, hosts),
        CertsWhat::Agent { name, region } => {
            check_label("region", &region)?;
            (Identity::Agent { region, name }, Vec::new())
        }
        CertsWhat::Operator { name } => (Identity::Operator { name }, Vec::new()),
    };
    check_label("name", identity.name())?;
    let read = |file: &str| {
        let path = a.dir.join(file);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}: create the CA first with `seawall certs --dir {} ca`",
                path.display(),
                a.dir.display()
            )
        })
    };
    let (ca_cert, ca_key) = (read("ca.pem")?, read("ca.key")?);
    let issued = issue(
        &ca_cert,
        &ca_key,
        &identity,
        &hosts,
        validity(a.valid_for, a.days, 365),
    )?;
    let fingerprint = pem_fingerprint(issued.cert_pem.as_bytes())?;
    let [cert, key] = save(&a.dir, identity.name(), &issued, a.force)?;
    if g.json {
        crate::output::json(&serde_json::json!({
            "identity": identity.uri(),
            "cert": cert,
            "key": key,
            "ca": a.dir.join("ca.pem"),
            "fingerprint": fingerprint,
        }))?;
    } else if !g.quiet {
        println!(
            "issued {} for {identity}: {} (key {})",
            identity.uri(),
            cert.display(),
            key.display()
        );
        println!("fingerprint (revoke it by this): {fingerprint}");
    }
    Ok(0)
}

/// The validity the flags ask for, `default_days` when neither is given.
fn validity(
    valid_for: Option<std::time::Duration>,
    d: Option<u32>,
    default_days: u32,
) -> std::time::Duration {
    valid_for.unwrap_or_else(|| days(d.unwrap_or(default_days)))
}
