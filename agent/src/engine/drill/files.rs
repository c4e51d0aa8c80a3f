//! A files source drilled: the snapshot restored into the scratch
//! directory, then every file read back and hashed against the snapshot.

use super::phases::{evidence, Phases};
use super::scratch::Scratch;
use super::Context;
use crate::engine::restore::check::check_restored;
use crate::engine::restore::{restore, RestoreOptions};
use seawall_common::{Error, ErrorKind};

/// Restores and checks; the recovery point is the snapshot's own time.
pub async fn drill(ctx: &Context<'_>, scratch: &mut Scratch, phases: &mut Phases) -> Option<i64> {
    let target = scratch.path("files");
    let restored = phases
        .run("restore", async {
            let s = restore(
                ctx.repo.clone(),
                ctx.snap,
                RestoreOptions {
                    target: target.clone(),
                    include: Vec::new(),
                    threads: 8,
                    fingerprint: true,
                },
                ctx.progress.clone(),
            )
            .await?;
            if !s.failed.is_empty() {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{} file(s) could not be restored, the first: {}",
                        s.failed.len(),
                        s.failed[0]
                    ),
                ));
            }
            let summary = format!("{} files, {} bytes", s.files, s.bytes);
            Ok((
                s.check_basis,
                summary,
                evidence([
                    ("files", s.files.to_string()),
                    ("dirs", s.dirs.to_string()),
                    ("symlinks", s.symlinks.to_string()),
                    ("bytes", s.bytes.to_string()),
                ]),
            ))
        })
        .await;
    let basis = restored?;
    phases
        .run("check", async {
            let c = check_restored(ctx.repo.clone(), ctx.snap, &target, basis).await?;
            if c.problem_count > 0 {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{} restored file(s) differ from the snapshot, the first: {}",
                        c.problem_count,
                        c.problems.first().map(String::as_str).unwrap_or("")
                    ),
                ));
            }
            Ok((
                (),
                format!(
                    "every file's content matches the snapshot ({} files, {} bytes hashed)",
                    c.files, c.bytes
                ),
                evidence([
                    ("files_checked", c.files.to_string()),
                    ("bytes_hashed", c.bytes.to_string()),
                    ("symlinks_checked", c.symlinks.to_string()),
                ]),
            ))
        })
        .await?;
    None
}
