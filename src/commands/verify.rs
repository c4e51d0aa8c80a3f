//! `seawall verify`.

use crate::args::{Global, VerifyArgs};
use crate::output::size;
use crate::repo_open;

/// Checks the repository; exits non-zero when anything is damaged.
pub async fn run(g: &Global, a: VerifyArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    use seawall_agent::engine::verify::ReadData;
    let read = match a.read_data_subset {
        Some(subset) => ReadData::Subset(subset),
        None => ReadData::from(a.read_data),
    };
    let report = seawall_agent::engine::verify::verify(repo, read, a.threads).await?;
    if g.json {
        crate::output::json(&report)?;
    } else {
        println!(
            "checked {} snapshots, {} packs, {} blobs{}",
            report.snapshots,
            report.packs,
            report.blobs,
            if read != ReadData::No {
                format!(
                    "; read {} packs ({})",
                    report.packs_read,
                    size(report.bytes_read)
                )
            } else {
                String::new()
            }
        );
        if report.wal_files > 0 {
            println!(
                "{} archived WAL files{}",
                report.wal_files,
                if read == ReadData::All {
                    format!(", {} read", report.wal_files_read)
                } else {
                    String::new()
                }
            );
        }
        if report.unindexed_packs > 0 {
            println!(
                "{} packs are not in any index (left by an interrupted backup); `seawall prune` removes them",
                report.unindexed_packs
            );
        }
        match report.head_generation {
            None => println!(
                "no head yet: the next backup records which snapshots the repository holds"
            ),
            Some(_) if !report.unrecorded_snapshots.is_empty() => println!(
                "{} snapshots are not recorded in the head (saved while another backup recorded its own, or put here from outside): {}",
                report.unrecorded_snapshots.len(),
                report
                    .unrecorded_snapshots
                    .iter()
                    .map(|s| &s[..8])
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(_) => {}
        }
        for p in &report.problems {
            eprintln!("damaged: {} {}", p.object, p.problem);
            if !p.snapshots.is_empty() {
                eprintln!("  affects snapshots: {}", p.snapshots.join(", "));
            }
            for f in &p.files {
                eprintln!("  affects file {f}");
            }
        }
    }
    if report.problems.is_empty() {
        if !g.json {
            println!("no errors found");
        }
        Ok(0)
    } else {
        anyhow::bail!(
            "verify found {} problems in the repository",
            report.problems.len()
        )
    }
}
