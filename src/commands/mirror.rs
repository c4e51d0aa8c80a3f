//! `seawall mirror`: keeps another region's replica of a repository whole.

use crate::args::{Global, MirrorArgs};
use crate::output::size;
use crate::repo_open;
use seawall_agent::engine::mirror::{mirror, retire_keys, MirrorOptions};

/// Copies what the target lacks, or with `--check` names it.
pub async fn run(g: &Global, a: MirrorArgs) -> anyhow::Result<u8> {
    let mut source = repo_open::spec(g);
    if let Some(from) = &a.from {
        source.repo = from.clone();
    }
    let mut target = source.clone();
    target.repo = a.to.clone();
    if a.to_s3_endpoint.is_some() {
        target.s3_endpoint = a.to_s3_endpoint.clone();
    }
    if a.to_s3_region.is_some() {
        target.s3_region = a.to_s3_region.clone();
    }
    let opts = MirrorOptions {
        prune: a.prune,
        check_only: a.check,
        concurrency: a.concurrency,
    };
    let mut report = mirror(source.storage().await?, target.storage().await?, opts).await?;
    if !a.check {
        retire_keys(&target, &mut report).await?;
    }
    // What the gaps hurt: the target's own verify names the snapshots
    // (and files) whose data is missing there.
    let hurt = if a.check && !report.gaps.is_empty() {
        match target.open().await {
            Ok(repo) => Some(seawall_agent::engine::verify::verify(repo, false, 4).await?),
            Err(e) => {
                eprintln!("the target does not open, so the snapshots hurt are not named: {e}");
                None
            }
        }
    } else {
        None
    };
    if g.json {
        crate::output::json(&serde_json::json!({ "mirror": report, "target_verify": hurt }))?;
    } else if !g.quiet {
        if a.check {
            println!(
                "{} objects present in {}, {} missing or different",
                report.present,
                a.to,
                report.gaps.len()
            );
        } else {
            let copied: u64 = report.copied.values().sum();
            println!(
                "copied {copied} objects ({}) in {:.1}s; {} were present{}",
                size(report.bytes_copied),
                report.duration_secs,
                report.present,
                if a.prune {
                    format!("; {} deleted", report.pruned)
                } else {
                    String::new()
                }
            );
            for (dir, n) in &report.copied {
                println!("  {dir}: {n}");
            }
        }
        for gap in &report.gaps {
            eprintln!(
                "{}: {} {}",
                if a.check { "behind" } else { "replaced" },
                gap.object,
                gap.problem
            );
        }
        for gap in &report.skipped {
            eprintln!("skipped: {} {}", gap.object, gap.problem);
        }
        if let Some(line) = report.kept_keys() {
            eprintln!("{line}");
        }
        if let Some(v) = &hurt {
            for p in &v.problems {
                eprintln!("  so {} {}", p.object, p.problem);
                if !p.snapshots.is_empty() {
                    eprintln!("    snapshots hurt: {}", p.snapshots.join(", "));
                }
            }
        }
    }
    if let Some(failed) = report.not_mirrored() {
        anyhow::bail!("{failed}");
    }
    if a.check && !report.gaps.is_empty() {
        anyhow::bail!(
            "{} is behind its source by {} objects",
            a.to,
            report.gaps.len()
        );
    }
    Ok(0)
}
