//! Redis' fence: every write refused, by a setting no data command lifts
//! and a restart keeps. `min-replicas-to-write` is set out of reach (no
//! server has 2^31-1 replicas), so a write (alone, in MULTI, in a script)
//! is refused with NOREPLICAS, while the stream to the replicas goes on:
//! the catch-up needs it. `CONFIG REWRITE` keeps the setting in the
//! server's config file; `CLIENT UNPAUSE` lifts nothing. What the settings
//! were before is kept in the agent's state directory and put back when the
//! fence is lifted (an unfence, or a promotion of this server later).

use seawall_common::{Error, ErrorKind, Result};
use std::path::Path;

type Con = redis::aio::MultiplexedConnection;

/// The fenced value of `min-replicas-to-write`.
pub const OUT_OF_REACH: i64 = i32::MAX as i64;
/// `min-replicas-max-lag` while fenced: the check is off when it is 0.
const FENCED_LAG: i64 = 10;

/// The settings before the fence.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Before {
    min_replicas_to_write: i64,
    min_replicas_max_lag: i64,
}

impl Default for Before {
    /// Redis' own defaults.
    fn default() -> Self {
        Before {
            min_replicas_to_write: 0,
            min_replicas_max_lag: 10,
        }
    }
}

fn redis_error(what: &str, e: redis::RedisError) -> Error {
    Error::new(ErrorKind::Unreachable, format!("{what}: {e}"))
}

async fn get(con: &mut Con, name: &str) -> Result<i64> {
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(con)
        .await
        .map_err(|e| redis_error(&format!("reading {name} (CONFIG GET)"), e))?;
    pair.get(1).and_then(|v| v.parse().ok()).ok_or_else(|| {
        Error::new(
            ErrorKind::Corrupt,
            format!("CONFIG GET {name} answered {pair:?}, not a number"),
        )
    })
}

async fn set(con: &mut Con, name: &str, value: i64) -> Result<()> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async::<()>(con)
        .await
        .map_err(|e| redis_error(&format!("setting {name} (CONFIG SET)"), e))
}

/// Writes the running settings to the config file; a note when the server
/// has none (a restart would then forget them).
pub async fn persist(con: &mut Con) -> String {
    match redis::cmd("CONFIG")
        .arg("REWRITE")
        .query_async::<()>(con)
        .await
    {
        Ok(()) => "kept in its config file (CONFIG REWRITE)".into(),
        Err(e) => {
            tracing::warn!(error = %e, "CONFIG REWRITE failed: a restart of this Redis forgets its fence");
            format!("NOT kept over a restart: CONFIG REWRITE failed ({e}); run Redis with a config file")
        }
    }
}

/// Whether the server is fenced.
pub async fn is_fenced(con: &mut Con) -> Result<bool> {
    Ok(get(con, "min-replicas-to-write").await? >= OUT_OF_REACH)
}

/// Refuses every write from now on; says how it was kept.
pub async fn fence(con: &mut Con, memory: &Path) -> Result<(bool, String)> {
    if is_fenced(con).await? {
        return Ok((true, "every write refused already (NOREPLICAS)".into()));
    }
    let before = Before {
        min_replicas_to_write: get(con, "min-replicas-to-write").await?,
        min_replicas_max_lag: get(con, "min-replicas-max-lag").await?,
    };
    remember(memory, &before)?;
    if before.min_replicas_max_lag <= 0 {
        set(con, "min-replicas-max-lag", FENCED_LAG).await?;
    }
    set(con, "min-replicas-to-write", OUT_OF_REACH).await?;
    let kept = persist(con).await;
    Ok((
        false,
        format!("every write refused (min-replicas-to-write {OUT_OF_REACH}: NOREPLICAS), {kept}"),
    ))
}

/// Takes writes again with the settings from before the fence; None when
/// it was not fenced.
pub async fn lift(con: &mut Con, memory: &Path) -> Result<Option<String>> {
    if !is_fenced(con).await? {
        return Ok(None);
    }
    let before = recall(memory).unwrap_or_default();
    set(con, "min-replicas-to-write", before.min_replicas_to_write).await?;
    set(con, "min-replicas-max-lag", before.min_replicas_max_lag).await?;
    let kept = persist(con).await;
    let _ = std::fs::remove_file(memory);
    Ok(Some(format!(
        "fence lifted (min-replicas-to-write {} again), {kept}",
        before.min_replicas_to_write
    )))
}

fn remember(path: &Path, before: &Before) -> Result<()> {
    let bytes = serde_json::to_vec(before).map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
    }
    std::fs::write(path, bytes).map_err(|e| {
        Error::io(
            format!("{} (the settings the fence replaces)", path.display()),
            e,
        )
    })
}

fn recall(path: &Path) -> Option<Before> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The file under the agent's state directory that keeps what `source`'s
/// fence replaced.
pub fn memory_path(state_dir: &Path, source: &str) -> std::path::PathBuf {
    state_dir.join(format!("redis-fence-{source}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_before_a_fence_are_kept_and_default_to_redis_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = memory_path(dir.path(), "cache");
        assert_eq!(recall(&path), None);
        let before = Before {
            min_replicas_to_write: 1,
            min_replicas_max_lag: 0,
        };
        remember(&path, &before).unwrap();
        assert_eq!(recall(&path), Some(before));
        assert_eq!(Before::default().min_replicas_to_write, 0);
    }
}
