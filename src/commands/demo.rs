//! `seawall demo`: on a machine with nothing else installed, shows the whole
//! files path: init, backup, change, incremental backup, verify, restore, and
//! proves the restored tree is identical, with timings; then a small fleet
//! (see `demo_fleet.rs`).

use crate::args::{DemoArgs, Global};
use crate::output::{rate, size};
use crate::sample;
use anyhow::{bail, Context, Result};
use seawall_agent::engine::files::{backup_files, BackupOptions};
use seawall_agent::engine::progress::Progress;
use seawall_common::storage::{LocalStorage, Storage};
use seawall_common::Repository;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Runs the demo.
pub async fn run(g: &Global, a: DemoArgs) -> Result<u8> {
    let (work, cleanup) = match a.dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("seawall-demo-{}", std::process::id())),
            true,
        ),
    };
    let result = demo(g, &work, a.size_mib, a.no_fleet).await;
    if cleanup {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

async fn demo(g: &Global, work: &Path, size_mib: u64, skip_fleet: bool) -> Result<u8> {
    let source = work.join("source/app-data");
    let repo_dir = work.join("repo");
    let restored = work.join("restored");
    if repo_dir.exists() {
        bail!(
            "{} already holds a repository; give an empty --dir",
            repo_dir.display()
        );
    }
    let say = |s: String| {
        if !g.json {
            println!("{s}");
        }
    };
    say(format!("seawall demo in {}", work.display()));
    let dump = size_mib * 1024 * 1024 * 3 / 4;
    let small = (size_mib * 8).max(200);
    let src = source.clone();
    tokio::task::spawn_blocking(move || sample::write_tree(&src, dump, small, 42)).await??;
    say(format!("1. generated a sample tree: a {} dump-like file and {small} small files, symlinks, an empty directory", size(dump)));

    let password = std::env::var("SEAWALL_PASSWORD").unwrap_or_else(|_| "seawall-demo".into());
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&repo_dir));
    let repo = Arc::new(Repository::init(storage, password.as_bytes()).await?);
    say(format!(
        "2. created an encrypted repository at {}",
        repo_dir.display()
    ));

    let opts = BackupOptions {
        paths: vec![source.clone()],
        ..BackupOptions::default()
    };
    let first = backup_files(repo.clone(), opts.clone(), Arc::new(Progress::default())).await?;
    let s1 = first.snapshot.summary.clone();
    say(format!(
        "3. first backup {}: read {} in {:.2}s ({}), stored {} after dedup and compression",
        first.id.short(),
        size(s1.bytes_read),
        s1.duration_secs,
        rate(s1.bytes_read, s1.duration_secs),
        size(s1.bytes_added)
    ));

    let src = source.clone();
    tokio::task::spawn_blocking(move || sample::mutate(&src, 1.0, 7)).await??;
    let second = backup_files(repo.clone(), opts, Arc::new(Progress::default())).await?;
    let s2 = second.snapshot.summary.clone();
    say(format!(
        "4. changed about 1% and backed up again {}: {} files unchanged (not read), {} changed; added {} ({:.2}% of the first)",
        second.id.short(),
        s2.files_unchanged,
        s2.files_changed,
        size(s2.bytes_added),
        100.0 * s2.bytes_added as f64 / s1.bytes_added.max(1) as f64
    ));

    let t = Instant::now();
    let report = seawall_agent::engine::verify::verify(repo.clone(), true, 4).await?;
    if !report.problems.is_empty() {
        bail!("verify found problems: {:?}", report.problems);
    }
    say(format!(
        "5. verified every pack and blob ({} packs, {}) in {:.2}s: no errors",
        report.packs_read,
        size(report.bytes_read),
        t.elapsed().as_secs_f64()
    ));

    let r = seawall_agent::engine::restore::restore(
        repo.clone(),
        &second.snapshot,
        seawall_agent::engine::restore::RestoreOptions {
            target: restored.clone(),
            include: vec![],
            threads: 4,
            fingerprint: false,
        },
        Arc::new(Progress::default()),
    )
    .await?;
    let restored_root = restored.join(source.strip_prefix("/").unwrap_or(&source));
    let src = source.clone();
    let rr = restored_root.clone();
    let compared = tokio::task::spawn_blocking(move || compare(&src, &rr)).await??;
    say(format!(
        "6. restored {} files ({}) in {:.2}s ({}); {compared} entries compared with the source: identical",
        r.files,
        size(r.bytes),
        r.duration_secs,
        rate(r.bytes, r.duration_secs)
    ));
    if !skip_fleet {
        let work = work.to_path_buf();
        let data = super::demo_fleet::data_dir(&work);
        let json = g.json;
        tokio::task::spawn_blocking(move || {
            let say = |s: String| {
                if !json {
                    println!("{s}");
                }
            };
            super::demo_fleet::run(&work, &data, &say)
        })
        .await??;
    }
    if g.json {
        crate::output::json(&serde_json::json!({
            "first_backup": s1,
            "second_backup": s2,
            "restore": r,
            "verified_packs": report.packs_read,
            "compared_entries": compared,
        }))?;
    }
    Ok(0)
}

/// Generates (or changes) the benchmark dataset.
pub async fn bench_data(a: crate::args::BenchDataArgs) -> Result<u8> {
    tokio::task::spawn_blocking(move || match a.mutate {
        Some(percent) => sample::mutate(&a.dir, percent, 1234),
        None => sample::write_tree(&a.dir, a.dump_mib * 1024 * 1024, a.small_files, 42),
    })
    .await??;
    Ok(0)
}

/// Compares two trees: content, modes, mtimes, symlink targets. Returns entries compared.
fn compare(a: &Path, b: &Path) -> Result<u64> {
    let mut count = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa)?,
            std::fs::symlink_metadata(&pb)
                .with_context(|| format!("{} missing after restore", pb.display()))?,
        );
        count += 1;
        if ma.file_type().is_symlink() {
            if std::fs::read_link(&pa)? != std::fs::read_link(&pb)? {
                bail!("symlink {} differs", rel.display());
            }
            continue;
        }
        if ma.mode() != mb.mode() || (!ma.is_dir() && ma.mtime() != mb.mtime()) {
            bail!("metadata of {} differs", rel.display());
        }
        if ma.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&pa)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()?;
            let nb = std::fs::read_dir(&pb)?.count();
            if names.len() != nb {
                bail!(
                    "directory {} has {} entries, restored {nb}",
                    rel.display(),
                    names.len()
                );
            }
            names.sort();
            stack.extend(names.into_iter().map(|n| rel.join(n)));
        } else if std::fs::read(&pa)? != std::fs::read(&pb)? {
            bail!("content of {} differs", rel.display());
        }
    }
    Ok(count)
}
