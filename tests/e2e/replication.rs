//! Replication state read from real servers: a PostgreSQL primary with a
//! streaming standby made by `pg_basebackup -R`, and a Redis master with a
//! replica. The figures must agree with what the servers themselves say.

use crate::fixtures::bin;
use crate::fleet_fixture::eventually;
use crate::pg_fixture::{as_pg, pg_bin, pg_dir, psql_at, stop_datadir, PgCluster};
use crate::redis::RedisServer;
use std::path::PathBuf;
use std::process::Command;

/// Stops a data directory's server when dropped, also on failure.
struct Running(PathBuf);

impl Drop for Running {
    fn drop(&mut self) {
        stop_datadir(&self.0);
    }
}

/// A streaming standby of a primary, made with `pg_basebackup -R` and
/// started on a free port; stopped when dropped, also on failure.
pub struct Standby {
    /// Its directory (the socket lives here).
    pub root: PathBuf,
    /// Its port.
    pub port: u16,
    /// Its DSN.
    pub dsn: String,
    _running: Running,
}

impl Standby {
    /// Clones `primary` into `root` and starts the standby.
    pub fn start(root: &std::path::Path, primary: &PgCluster) -> Standby {
        Standby::start_from(root, &primary.dsn("postgres"), "127.0.0.1")
    }

    /// A standby of the primary at `primary_dsn` (its replication
    /// connection made the same way).
    pub fn start_from(root: &std::path::Path, primary_dsn: &str, listen: &str) -> Standby {
        pg_dir(root);
        let data = root.join("data");
        let port = crate::fixtures::free_port();
        clone_and_start(root, primary_dsn, port, listen);
        Standby {
            root: root.to_path_buf(),
            port,
            dsn: format!(
                "host={} port={port} user=postgres dbname=postgres",
                root.display()
            ),
            _running: Running(data),
        }
    }

    /// Runs SQL on the standby.
    pub fn sql(&self, sql: &str) -> String {
        psql_at(&self.root, self.port, sql)
    }
}

/// A `pg_basebackup -R` of the primary at `primary_dsn` into `root/data`,
/// started on `port` and `listen` with its socket in `root`: a standby.
pub fn clone_and_start(root: &std::path::Path, primary_dsn: &str, port: u16, listen: &str) {
    let data = root.join("data");
    let made = as_pg(&pg_bin().join("pg_basebackup"))
        .arg("-D")
        .arg(&data)
        .args(["-R", "-X", "stream", "-d", primary_dsn])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let conf = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "\nport = {port}\nunix_socket_directories = '{}'\nlisten_addresses = '{listen}'\n",
        root.display()
    ));
    std::fs::write(&conf, text).unwrap();
    let started = as_pg(&pg_bin().join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(root.join("server.log"))
        .args(["-w", "start"])
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
}

fn state(args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new(bin())
        .args(["--json", "check", "replication"])
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn postgres_replay_lag_matches_the_standbys_own_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = PgCluster::start(&tmp.path().join("primary"), "");
    let standby = Standby::start(&tmp.path().join("standby"), &primary);
    let (root, port, standby_dsn) = (standby.root.clone(), standby.port, standby.dsn.clone());

    // Both sides, as each sees itself.
    let p = eventually(30, "the standby to stream", || {
        let p = state(&["--dsn", &primary.dsn("postgres")])?;
        (p["standbys"][0]["state"] == "streaming").then_some(p)
    });
    assert_eq!(p["role"], "primary", "{p}");
    let s = state(&["--dsn", &standby_dsn]).unwrap();
    assert_eq!(s["role"], "standby", "{s}");
    assert_eq!(s["receiver"], "streaming", "{s}");

    // Replay paused while the primary writes: the lag grows and equals
    // what the standby itself computes.
    psql_at(&root, port, "SELECT pg_wal_replay_pause()");
    primary.sql(
        "postgres",
        "CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g",
    );
    let lagging = eventually(30, "the replay lag to show and settle", || {
        let a = state(&["--dsn", &standby_dsn])?;
        let own = psql_at(
            &root,
            port,
            "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::int8",
        );
        let lag = a["replay_lag_bytes"].as_i64()?;
        (lag > 1_000_000 && own.parse::<i64>().ok()? == lag).then_some(a)
    });
    assert_eq!(lagging["replay_paused"], true, "{lagging}");
    let seen_by_primary = state(&["--dsn", &primary.dsn("postgres")]).unwrap();
    assert!(
        seen_by_primary["standbys"][0]["replay_lag_bytes"]
            .as_i64()
            .unwrap()
            > 1_000_000,
        "{seen_by_primary}"
    );

    // Resumed: it catches up.
    psql_at(&root, port, "SELECT pg_wal_replay_resume()");
    eventually(30, "the standby to catch up", || {
        let a = state(&["--dsn", &standby_dsn])?;
        (a["replay_lag_bytes"] == 0 && a["replay_paused"] == false).then_some(())
    });
}

#[test]
fn a_redis_replicas_link_and_lag_are_read_from_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let master = RedisServer::start(&tmp.path().join("master"), &[]);
    let master_port = master.port.to_string();
    let replica = RedisServer::start(
        &tmp.path().join("replica"),
        &["--replicaof", "127.0.0.1", &master_port],
    );
    let replica_url = format!("redis://127.0.0.1:{}", replica.port);
    let master_url = format!("redis://127.0.0.1:{}", master.port);
    eventually(30, "the replica's link to come up", || {
        let r = state(&["--url", &replica_url])?;
        (r["role"] == "replica" && r["link"] == "up").then_some(())
    });
    master.cli(&["DEBUG", "POPULATE", "10000", "key", "64"]);
    let m = eventually(
        30,
        "the master to see its replica online and caught up",
        || {
            let m = state(&["--url", &master_url])?;
            let r = &m["replicas"][0];
            (r["state"] == "online" && r["lag_bytes"] == 0).then_some(m)
        },
    );
    assert_eq!(m["role"], "master", "{m}");
    // The master gone: the replica says its link is down.
    drop(master);
    eventually(30, "the replica to report its link down", || {
        let r = state(&["--url", &replica_url])?;
        (r["link"] == "down").then_some(())
    });
    // An unreachable server is an error, never "no lag".
    assert!(state(&["--url", &master_url]).is_none());
}
