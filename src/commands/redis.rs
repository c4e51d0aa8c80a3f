//! Redis commands: `backup redis` (an RDB, or selected keys with
//! `--keys`), `restore --redis-datadir` and `restore --redis-target`.

use crate::args::{Global, RedisArgs, RestoreArgs};
use crate::output::{rate, size};
use crate::progress_view::View;
use crate::repo_open;
use seawall_agent::engine::progress::Progress;
use seawall_agent::engine::redis::keys::{
    backup_redis_keys, restore_redis_keys, Conflict, KeySelection, KeysOptions, KeysRestoreOptions,
};
use seawall_agent::engine::redis::{
    backup_redis, restore_redis_datadir, RedisOptions, RedisRestoreOptions, Transfer,
};
use seawall_common::repo::snapshot::Snapshot;
use seawall_common::{Id, Repository};
use std::sync::Arc;

/// `seawall backup redis`.
pub async fn backup(g: &Global, a: RedisArgs) -> anyhow::Result<u8> {
    if !a.keys.is_empty() || a.keys_file.is_some() {
        return backup_keys(g, a).await;
    }
    let repo = repo_open::open(g).await?;
    let settings = super::stream_settings(g, a.store.compression_level, a.store.threads);
    let progress = Arc::new(Progress::default());
    let view = View::start(progress.clone(), "backup", !g.json && !g.quiet);
    let result = backup_redis(
        repo,
        RedisOptions {
            url: a.url,
            tls: a.tls.files(),
            transfer: if a.diskless {
                Transfer::Diskless
            } else if a.disk_transfer {
                Transfer::Disk
            } else {
                Transfer::Auto
            },
            tags: a.store.tag,
            settings,
        },
        progress,
    )
    .await;
    view.finish().await;
    let (id, snap) = result?;
    report(g, &id, &snap, |snap| {
        let s = &snap.summary;
        println!(
            "RDB of {} bytes (version {}, offset {}) read in {:.2}s ({}), added {} to the repository",
            s.bytes_read,
            snap.facts.get("rdb_version").cloned().unwrap_or_default(),
            snap.facts.get("replication_offset").cloned().unwrap_or_default(),
            s.duration_secs,
            rate(s.bytes_read, s.duration_secs),
            size(s.bytes_added)
        );
    })
}

/// Prints a Redis backup's outcome: JSON, or `human` and the snapshot id.
fn report(
    g: &Global,
    id: &Id,
    snap: &Snapshot,
    human: impl FnOnce(&Snapshot),
) -> anyhow::Result<u8> {
    if g.json {
        crate::output::json(&serde_json::json!({
            "snapshot": id,
            "facts": snap.facts,
            "summary": snap.summary,
        }))?;
    } else if !g.quiet {
        human(snap);
        println!("snapshot {} saved", id.short());
    }
    Ok(0)
}

/// `seawall backup redis --keys PATTERN...`.
async fn backup_keys(g: &Global, a: RedisArgs) -> anyhow::Result<u8> {
    let selection = KeySelection::from_args(&a.keys, a.keys_file.as_deref())?;
    let repo = repo_open::open(g).await?;
    let settings = super::stream_settings(g, a.store.compression_level, a.store.threads);
    let progress = Arc::new(Progress::default());
    let view = View::start(progress.clone(), "backup", !g.json && !g.quiet);
    let result = backup_redis_keys(
        repo,
        KeysOptions {
            url: a.url,
            tls: a.tls.files(),
            selection,
            tags: a.store.tag,
            settings,
        },
        progress,
    )
    .await;
    view.finish().await;
    let (id, snap) = result?;
    report(g, &id, &snap, |snap| {
        let s = &snap.summary;
        let fact = |k: &str| snap.facts.get(k).cloned().unwrap_or_default();
        println!(
            "{} keys captured ({} with an expiry, {} gone before they were read) in {:.2}s, added {} to the repository",
            fact("keys_captured"),
            fact("keys_with_expiry"),
            fact("keys_vanished"),
            s.duration_secs,
            size(s.bytes_added)
        );
        if let Some(per) = snap
            .facts
            .get("keys_per_pattern")
            .and_then(|v| v.as_object())
        {
            for (pattern, n) in per {
                println!("  {pattern:<30} {n}");
            }
        }
    })
}

/// The snapshot `spec` names, or the newest Redis snapshot of `mode` for `latest`.
async fn find(repo: &Repository, spec: &str, mode: &str) -> anyhow::Result<(Id, Snapshot)> {
    if spec != "latest" {
        return Ok(repo.find_snapshot(spec).await?);
    }
    repo.snapshots()
        .await?
        .into_iter()
        .rev()
        .find(|(_, s)| {
            s.source == "redis"
                && s.facts
                    .get("mode")
                    .and_then(|m| m.as_str())
                    .unwrap_or("rdb")
                    == mode
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the repository has no Redis {} snapshot",
                if mode == "keys" { "keys" } else { "RDB" }
            )
        })
}

/// `seawall restore --redis-target URL`.
pub async fn restore_keys(g: &Global, a: RestoreArgs) -> anyhow::Result<u8> {
    let Some(url) = a.redis_target.clone() else {
        anyhow::bail!("give --redis-target URL");
    };
    let rules = a
        .keys_file
        .as_deref()
        .map(KeySelection::read_file)
        .transpose()?;
    let repo = repo_open::open(g).await?;
    let (id, snap) = find(&repo, &a.snapshot, "keys").await?;
    let progress = Arc::new(Progress::default());
    let view = View::start(progress.clone(), "restore", !g.json && !g.quiet);
    let result = restore_redis_keys(
        repo,
        &snap,
        KeysRestoreOptions {
            url,
            tls: a.redis_tls.files(),
            conflict: if a.replace {
                Conflict::Replace
            } else {
                Conflict::Skip
            },
            rules,
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
            "restored {} keys into {} from snapshot {} in {:.2}s",
            report.restored,
            report.target,
            id.short(),
            report.duration_secs
        );
        println!(
            "  kept {} keys the target already held{}, left out {} expired keys, {} keys bounded by TTL rules",
            report.skipped_existing,
            if report.skipped_existing > 0 { " (--replace overwrites them)" } else { "" },
            report.skipped_expired,
            report.ttl_rule_applied
        );
    }
    Ok(0)
}

/// `seawall restore --redis-datadir DIR [--start]`.
pub async fn restore(g: &Global, a: RestoreArgs) -> anyhow::Result<u8> {
    let Some(dir) = a.redis_datadir.clone() else {
        anyhow::bail!("give --redis-datadir DIR");
    };
    let repo = repo_open::open(g).await?;
    let (id, snap) = find(&repo, &a.snapshot, "rdb").await?;
    let progress = Arc::new(Progress::default());
    let view = View::start(progress.clone(), "restore", !g.json && !g.quiet);
    let result = restore_redis_datadir(
        repo,
        &snap,
        RedisRestoreOptions {
            dir: dir.clone(),
            start_port: a.start.then_some(a.redis_port),
            server: seawall_agent::engine::redis::rdb::server_on_path(),
            access: Default::default(),
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
            println!(
                "redis-server loaded it and listens on {s}, with the password (requirepass) in {}, readable by you only",
                dir.join(seawall_agent::engine::redis::rdb::CONFIG_FILE).display()
            );
        }
    }
    Ok(0)
}
