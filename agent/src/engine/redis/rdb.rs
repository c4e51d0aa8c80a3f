//! `backup redis`: one consistent RDB, taken over the replication protocol
//! and streamed through the chunker (an RDB is uncompressed key by key, so
//! unchanged keys deduplicate between backups), with the facts a restore
//! and an operator need: version, run id, replication offset, RDB version,
//! keys per database. Restore writes the RDB for a fresh server and can
//! start one on it.

use super::connect::Endpoint;
use super::sync::full_sync;
use super::tls::RedisTls;
use crate::engine::progress::Progress;
use crate::engine::stream::{
    save_stream, write_stream, BlockingReader, StreamBackup, StreamManifest, StreamSettings,
};
use seawall_common::repo::snapshot::Snapshot;
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Stream name of the RDB.
pub const RDB_STREAM: &str = "dump.rdb";

/// What `backup redis` reads.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis[s]://[user:password@]host:port[/db]`.
    pub url: String,
    /// TLS files for `rediss://`.
    pub tls: RedisTls,
    /// How the server sends the RDB.
    pub transfer: Transfer,
    /// Operator tags.
    pub tags: Vec<String>,
    /// Storage settings.
    pub settings: StreamSettings,
}

/// How the server sends the RDB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transfer {
    /// Diskless when it costs no wait (the server streams diskless copies
    /// and waits 0 s for other replicas), else through its disk.
    #[default]
    Auto,
    /// The server saves the RDB to its disk, then sends the file.
    Disk,
    /// The server streams the RDB without touching its disk, after waiting
    /// `repl-diskless-sync-delay` for other replicas.
    Diskless,
}

impl Transfer {
    /// Whether to ask for a diskless transfer. `Auto` asks the server's
    /// configuration; a server that refuses CONFIG GET gets the disk form,
    /// which never waits.
    async fn diskless(self, con: &mut redis::aio::MultiplexedConnection) -> bool {
        match self {
            Transfer::Disk => false,
            Transfer::Diskless => true,
            Transfer::Auto => {
                let get = |name: &'static str| {
                    let mut con = con.clone();
                    async move {
                        let pair: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
                            .arg("GET")
                            .arg(name)
                            .query_async(&mut con)
                            .await;
                        pair.ok().and_then(|p| p.get(1).cloned())
                    }
                };
                let on = get("repl-diskless-sync").await.as_deref() == Some("yes");
                let delay = get("repl-diskless-sync-delay").await;
                on && delay.as_deref() == Some("0")
            }
        }
    }
}

/// A section of INFO as key/value pairs.
pub(crate) fn info_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// INFO of every section, as key/value pairs.
pub(crate) async fn info(
    con: &mut redis::aio::MultiplexedConnection,
) -> Result<BTreeMap<String, String>> {
    let text: String = redis::cmd("INFO")
        .arg("everything")
        .query_async(con)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("Redis INFO failed: {e}")))?;
    Ok(info_map(&text))
}

/// Takes one RDB snapshot into the repository.
pub async fn backup_redis(
    repo: Arc<Repository>,
    opts: RedisOptions,
    progress: Arc<Progress>,
) -> Result<(Id, Snapshot)> {
    let endpoint = Endpoint::new(&opts.url, &opts.tls)?;
    let mut con = endpoint.connection().await?;
    let info = info(&mut con).await?;
    let diskless = opts.transfer.diskless(&mut con).await;
    drop(con);
    let (resync, mut payload) = full_sync(&endpoint, diskless).await?;
    let mut magic = [0u8; 9];
    payload.read_exact(&mut magic).await.map_err(|e| {
        Error::new(
            ErrorKind::Unreachable,
            format!("reading the RDB from Redis: {e}"),
        )
    })?;
    let rdb_version = std::str::from_utf8(&magic)
        .ok()
        .and_then(|m| m.strip_prefix("REDIS"))
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| {
            Error::corrupt("Redis sent a payload that does not start like an RDB file")
        })?;
    let backup = StreamBackup::begin(repo, opts.settings.clone(), progress).await?;
    let saver = backup.saver();
    let params = backup.params().fine();
    let prog = backup.progress().clone();
    let reader = std::io::Cursor::new(magic.to_vec());
    let stream_reader = BlockingReader::new(payload);
    let saved = match saver {
        Ok(saver) => tokio::task::spawn_blocking(move || {
            save_stream(
                RDB_STREAM,
                std::io::Read::chain(reader, stream_reader),
                &saver,
                params,
                &prog,
            )
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("RDB transfer stopped: {e}")))
        .and_then(|r| r),
        Err(e) => Err(e),
    };
    let outcome = saved.map(|stream| {
        let mut f = BTreeMap::new();
        let get = |k: &str| info.get(k).cloned().unwrap_or_default();
        f.insert("mode".into(), "rdb".into());
        f.insert("redis_version".into(), get("redis_version").into());
        f.insert("run_id".into(), get("run_id").into());
        f.insert("replication_id".into(), resync.replid.clone().into());
        f.insert("replication_offset".into(), resync.offset.into());
        f.insert("rdb_version".into(), rdb_version.into());
        f.insert(
            "transfer".into(),
            if diskless { "diskless" } else { "disk" }.into(),
        );
        let keys: BTreeMap<String, u64> = info
            .iter()
            .filter(|(k, _)| k.starts_with("db") && k[2..].chars().all(|c| c.is_ascii_digit()))
            .filter_map(|(k, v)| {
                let n = v
                    .split(',')
                    .find_map(|p| p.strip_prefix("keys="))?
                    .parse()
                    .ok()?;
                Some((k.clone(), n))
            })
            .collect();
        f.insert("keys".into(), serde_json::json!(keys));
        (
            vec![stream],
            StreamManifest {
                source: "redis".into(),
                paths: vec![endpoint.describe()],
                tags: opts.tags.clone(),
                facts: f,
            },
        )
    });
    backup.commit(outcome).await
}

/// The redis-server program on PATH (the bare name when there is none, so
/// starting it fails naming it).
pub fn server_on_path() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("redis-server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// How `restore --redis-datadir` runs.
#[derive(Debug, Clone)]
pub struct RedisRestoreOptions {
    /// Directory to write dump.rdb into (created; must not hold one).
    pub dir: PathBuf,
    /// Start redis-server on this port and wait until it has loaded.
    pub start_port: Option<u16>,
    /// The redis-server program.
    pub server: PathBuf,
    /// Who may reach the started server.
    pub access: Access,
}

/// Who may reach a started redis-server: clients on 127.0.0.1 that know a
/// random password kept in a config file in its directory (0700, the
/// server's user's only), so no other local user reads the restored keys.
/// A restored RDB carries none of its source's passwords or ACLs.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The unprivileged user the server runs as (a drill's scratch server:
    /// the agent runs as root); None: as ourselves.
    pub run_as: Option<String>,
}

/// What the restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RedisRestoreReport {
    /// The RDB written.
    pub rdb: PathBuf,
    /// Bytes written.
    pub bytes: u64,
    /// Address of the started server.
    pub started: Option<String>,
    /// The URL to reach the started server with, its password included:
    /// never shown.
    #[serde(skip)]
    pub connect_url: Option<String>,
    /// Seconds taken.
    pub duration_secs: f64,
}

/// Writes a Redis snapshot's RDB into a data directory, optionally serving it.
pub async fn restore_redis_datadir(
    repo: Arc<Repository>,
    snap: &Snapshot,
    opts: RedisRestoreOptions,
    progress: Arc<Progress>,
) -> Result<RedisRestoreReport> {
    let started = Instant::now();
    if snap.source != "redis" {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "--redis-datadir restores Redis snapshots; this one is not",
        ));
    }
    if snap.facts.get("mode").and_then(|m| m.as_str()) == Some("keys") {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "this Redis snapshot holds captured keys, not an RDB: restore it into a running server with --redis-target URL",
        ));
    }
    let stream = snap
        .streams
        .iter()
        .find(|s| s.name == RDB_STREAM)
        .ok_or_else(|| Error::corrupt("Redis snapshot has no dump.rdb stream"))?;
    repo.load_index().await?;
    std::fs::create_dir_all(&opts.dir).map_err(|e| Error::io(opts.dir.display(), e))?;
    let rdb = opts.dir.join("dump.rdb");
    let tmp = opts.dir.join(".seawall-dump.rdb");
    if rdb.exists() {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{} already exists: restore into an empty directory",
                rdb.display()
            ),
        ));
    }
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| Error::io(tmp.display(), e))?;
    let bytes = match write_stream(repo, stream, &mut file, &progress).await {
        Ok(b) => b,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    file.sync_all()
        .await
        .map_err(|e| Error::io(tmp.display(), e))?;
    drop(file);
    tokio::fs::rename(&tmp, &rdb)
        .await
        .map_err(|e| Error::io(rdb.display(), e))?;
    let mut report = RedisRestoreReport {
        rdb: rdb.clone(),
        bytes,
        started: None,
        connect_url: None,
        duration_secs: 0.0,
    };
    if let Some(port) = opts.start_port {
        report.connect_url = Some(start_server(&opts, port).await?);
        report.started = Some(format!("redis://127.0.0.1:{port}"));
    }
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The started server's config file in its directory: its password.
pub const CONFIG_FILE: &str = "seawall-redis.conf";

/// Makes `dir` the server's own (0700, owned by `run_as`) and writes its
/// password into `seawall-redis.conf` there (0600): on no command line, so
/// `ps` does not show it.
async fn private_config(dir: &Path, password: &str, run_as: Option<&str>) -> Result<PathBuf> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(dir.display(), e))?;
    let conf = dir.join(CONFIG_FILE);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&conf)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, format!("requirepass {password}\n").as_bytes())
        })
        .map_err(|e| Error::io(conf.display(), e))?;
    crate::engine::postgres::recovery::chown_to(run_as, dir).await?;
    Ok(conf)
}

/// Starts redis-server on `dir` and `port` and waits until it has loaded;
/// returns the URL to reach it with (with its password, when it has one:
/// never to be shown).
pub(crate) async fn start_server(opts: &RedisRestoreOptions, port: u16) -> Result<String> {
    let dir = std::path::absolute(&opts.dir).map_err(|e| Error::io(opts.dir.display(), e))?;
    let log = dir.join("redis.log");
    let run_as = opts.access.run_as.as_deref();
    let password = hex::encode(rand::random::<[u8; 24]>());
    let conf = private_config(&dir, &password, run_as).await?;
    let mut cmd = crate::engine::postgres::recovery::as_user(opts.server.clone(), run_as);
    // The config file comes first: redis-server reads its path there.
    cmd.arg(conf);
    let url = format!("redis://:{password}@127.0.0.1:{port}");
    cmd.arg("--dir")
        .arg(&dir)
        .args(["--dbfilename", "dump.rdb", "--bind", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--logfile",
        ])
        .arg(&log)
        .arg("--pidfile")
        .arg(dir.join("redis.pid"));
    super::super::postgres::tools::output(cmd, "redis-server").await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(client) = redis::Client::open(url.as_str()) {
            if let Ok(mut con) = client.get_multiplexed_async_connection().await {
                let text: redis::RedisResult<String> = redis::cmd("INFO")
                    .arg("persistence")
                    .query_async(&mut con)
                    .await;
                if let Ok(text) = text {
                    if info_map(&text).get("loading").map(String::as_str) == Some("0") {
                        return Ok(url);
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "redis-server on port {port} did not finish loading; its log ({}) ends with: {}",
                    log.display(),
                    super::super::postgres::tools::tail(&std::fs::read_to_string(&log).unwrap_or_default())
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
