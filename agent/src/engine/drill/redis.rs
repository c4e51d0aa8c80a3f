//! Redis drilled. An RDB snapshot is loaded by a scratch redis-server on a
//! free port; captured keys are restored into an empty one. Either way the
//! keys found are checked against the counts the snapshot recorded.

use super::phases::{evidence, Phases};
use super::scratch::{free_port, Scratch};
use super::Context;
use crate::engine::redis::keys::{restore_redis_keys, Conflict, KeysRestoreOptions};
use crate::engine::redis::rdb::{info_map, start_server, Access};
use crate::engine::redis::{restore_redis_datadir, RedisRestoreOptions};
use crate::engine::restore::running_as_root;
use seawall_common::{Error, ErrorKind, Result};
use std::collections::BTreeMap;

/// Keys per database (`db0` → count) the server at `url` (the scratch
/// server's, its password in it) holds now.
async fn keyspace(url: &str, port: u16) -> Result<BTreeMap<String, u64>> {
    let unreachable = |e: redis::RedisError| {
        Error::new(
            ErrorKind::Unreachable,
            format!("the scratch redis-server on port {port} does not answer: {e}"),
        )
    };
    let client = redis::Client::open(url).map_err(unreachable)?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .map_err(unreachable)?;
    let text: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut con)
        .await
        .map_err(unreachable)?;
    Ok(info_map(&text)
        .into_iter()
        .filter_map(|(db, v)| {
            let n = v
                .split(',')
                .find_map(|p| p.strip_prefix("keys="))?
                .parse()
                .ok()?;
            Some((db, n))
        })
        .collect())
}

/// Whether `found` keys stand for `recorded`: the snapshot's counts are
/// read from INFO just before the server forks its RDB, so writes in
/// between (and keys that expire) may move them by a little.
fn close_enough(recorded: u64, found: u64) -> bool {
    let slack = (recorded / 100).max(2);
    found.abs_diff(recorded) <= slack
}

fn server(ctx: &Context<'_>, dir: std::path::PathBuf, port: u16) -> RedisRestoreOptions {
    RedisRestoreOptions {
        dir,
        start_port: Some(port),
        server: ctx.req.redis_server.clone(),
        access: Access { run_as: run_as() },
    }
}

/// The unprivileged user a scratch redis-server runs as when the agent
/// runs as root: `redis` where the package made one, else `nobody`.
fn run_as() -> Option<String> {
    running_as_root().then(|| {
        let redis = nix::unistd::User::from_name("redis").ok().flatten();
        if redis.is_some() { "redis" } else { "nobody" }.to_string()
    })
}

/// An RDB loaded by a scratch server, its key counts checked.
pub async fn rdb(ctx: &Context<'_>, scratch: &mut Scratch, phases: &mut Phases) -> Option<i64> {
    let dir = scratch.redis_dir();
    let port = match free_port() {
        Ok(p) => p,
        Err(e) => {
            phases.failed_now("restore", &e);
            return None;
        }
    };
    scratch.started_redis(port);
    let url = phases
        .run("restore", async {
            let r = restore_redis_datadir(
                ctx.repo.clone(),
                ctx.snap,
                server(ctx, dir.clone(), port),
                ctx.progress.clone(),
            )
            .await?;
            let url = r.connect_url.clone().unwrap_or_default();
            Ok((
                url,
                format!(
                    "dump.rdb ({} bytes) loaded by redis-server on port {port}",
                    r.bytes
                ),
                evidence([
                    ("rdb_bytes", r.bytes.to_string()),
                    ("port", port.to_string()),
                ]),
            ))
        })
        .await?;
    phases
        .run("check", async {
            let recorded: BTreeMap<String, u64> = ctx
                .snap
                .facts
                .get("keys")
                .and_then(|k| serde_json::from_value(k.clone()).ok())
                .unwrap_or_default();
            let found = keyspace(&url, port).await?;
            let mut ev = BTreeMap::new();
            let mut wrong = Vec::new();
            let dbs: std::collections::BTreeSet<&String> =
                recorded.keys().chain(found.keys()).collect();
            for db in dbs {
                let r = recorded.get(db).copied().unwrap_or(0);
                let f = found.get(db).copied().unwrap_or(0);
                ev.insert(format!("keys {db}"), format!("{f} (recorded {r})"));
                if !close_enough(r, f) {
                    wrong.push(format!("{db}: {f} keys loaded, the snapshot recorded {r}"));
                }
            }
            if !wrong.is_empty() {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "the restored keys do not match the snapshot: {}",
                        wrong.join("; ")
                    ),
                ));
            }
            let total: u64 = found.values().sum();
            ev.insert("keys".into(), total.to_string());
            Ok(((), format!("{total} keys, as the snapshot recorded"), ev))
        })
        .await?;
    None
}

/// Captured keys restored into an empty scratch server, counted.
pub async fn keys(ctx: &Context<'_>, scratch: &mut Scratch, phases: &mut Phases) -> Option<i64> {
    let dir = scratch.redis_dir();
    let port = match free_port() {
        Ok(p) => p,
        Err(e) => {
            phases.failed_now("scratch server", &e);
            return None;
        }
    };
    scratch.started_redis(port);
    let url = phases
        .run("scratch server", async {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
            let url = start_server(&server(ctx, dir.clone(), port), port).await?;
            Ok((
                url,
                format!("an empty redis-server on port {port}"),
                evidence([("port", port.to_string())]),
            ))
        })
        .await?;
    let db = ctx
        .snap
        .facts
        .get("db")
        .and_then(|d| d.as_u64())
        .unwrap_or(0);
    let restored = phases
        .run("restore", async {
            let r = restore_redis_keys(
                ctx.repo.clone(),
                ctx.snap,
                KeysRestoreOptions {
                    url: format!("{url}/{db}"),
                    tls: Default::default(),
                    conflict: Conflict::Replace,
                    rules: None,
                },
                ctx.progress.clone(),
            )
            .await?;
            Ok((
                r.clone(),
                format!(
                    "{} keys restored ({} had expired)",
                    r.restored, r.skipped_expired
                ),
                evidence([
                    ("restored", r.restored.to_string()),
                    ("skipped_expired", r.skipped_expired.to_string()),
                ]),
            ))
        })
        .await?;
    phases
        .run("check", async {
            let captured = ctx
                .snap
                .facts
                .get("keys_captured")
                .and_then(|k| k.as_u64())
                .unwrap_or(0);
            let found = keyspace(&url, port).await?.get(&format!("db{db}")).copied().unwrap_or(0);
            let accounted = restored.restored + restored.skipped_expired;
            if accounted != captured || !close_enough(restored.restored, found) {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "the snapshot recorded {captured} captured keys; {} were restored, {} had expired, and the server holds {found}",
                        restored.restored, restored.skipped_expired
                    ),
                ));
            }
            Ok((
                (),
                format!("{found} keys in db{db}, as the snapshot recorded"),
                evidence([("keys", found.to_string()), ("keys_captured", captured.to_string())]),
            ))
        })
        .await?;
    None
}
