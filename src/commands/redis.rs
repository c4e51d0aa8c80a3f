//! Redis commands: `backup redis` and `restore --redis-datadir`.

use crate::args::{Global, RedisArgs, RestoreArgs};
use crate::output::{rate, size};
use crate::progress_view::View;
use crate::repo_open;
use seawall_agent::progress::Progress;
use seawall_agent::redis::{
    backup_redis, restore_redis_datadir, RedisOptions, RedisRestoreOptions,
};
use std::path::PathBuf;
use std::sync::Arc;

/// `seawall backup redis`.
pub async fn backup(g: &Global, a: RedisArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    let settings = super::stream_settings(g, a.store.compression_level, a.store.threads);
    let progress = Arc::new(Progress::default());
    let view = View::start(progress.clone(), "backup", !g.json && !g.quiet);
    let result = backup_redis(
        repo,
        RedisOptions {
            url: a.url,
            diskless: a.diskless,
            tags: a.store.tag,
            settings,
        },
        progress,
    )
    .await;
    view.finish().await;
    let (id, snap) = result?;
    let s = &snap.summary;
    if g.json {
        crate::output::json(&serde_json::json!({
            "snapshot": id,
            "facts": snap.facts,
            "summary": s,
        }))?;
    } else if !g.quiet {
        println!(
            "RDB of {} bytes (version {}, offset {}) read in {:.2}s ({}), added {} to the repository",
            s.bytes_read,
            snap.facts.get("rdb_version").cloned().unwrap_or_default(),
            snap.facts.get("replication_offset").cloned().unwrap_or_default(),
            s.duration_secs,
            rate(s.bytes_read, s.duration_secs),
            size(s.bytes_added)
        );
        println!("snapshot {} saved", id.short());
    }
    Ok(0)
}

fn redis_server() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("redis-server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// `seawall restore --redis-datadir DIR [--start]`.
pub async fn restore(g: &Global, a: RestoreArgs) -> anyhow::Result<u8> {
    let Some(dir) = a.redis_datadir.clone() else {
        anyhow::bail!("give --redis-datadir DIR");
    };
    let repo = repo_open::open(g).await?;
    let (id, snap) = if a.snapshot == "latest" {
        repo.snapshots()
            .await?
            .into_iter()
            .rev()
            .find(|(_, s)| s.source == "redis")
            .ok_or_else(|| anyhow::anyhow!("the repository has no Redis snapshot"))?
    } else {
        repo.find_snapshot(&a.snapshot).await?
    };
    let progress = Arc::new(Progress::default());
    let view = View::start(progress.clone(), "restore", !g.json && !g.quiet);
    let result = restore_redis_datadir(
        repo,
        &snap,
        RedisRestoreOptions {
            dir,
            start_port: a.start.then_some(a.redis_port),
            server: redis_server(),
        },
        progress,
    )
    .await;
    view.finish().await;
    let report = result?;
    if g.json {
        crate::output::json(&serde_json::json!({"snapshot": id, "restore": report}))?;
    } else if !g.quiet {
        println!(
            "wrote {} ({}) from snapshot {} in {:.2}s",
            report.rdb.display(),
            size(report.bytes),
            id.short(),
            report.duration_secs
        );
        if let Some(s) = &report.started {
            println!("redis-server loaded it and listens on {s}");
        }
    }
    Ok(0)
}
