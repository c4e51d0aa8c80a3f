//! The fences of the agent's store providers, against real servers: no
//! client undoes them (`BEGIN READ WRITE`, a `PGOPTIONS` override,
//! `CLIENT UNPAUSE`), a restart keeps them, and lifting one gives the
//! server back as it was.

use crate::fixtures::free_port;
use crate::pg_fixture::{pg_bin, psql_tried, PgCluster};
use crate::redis::RedisServer;
use seawall_agent::daemon::config::AgentConfig;
use seawall_agent::stores::{open, StoreControl};
use seawall_proto::v1::{FenceAction, RejoinAction};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An agent configuration with the two sources, as a host's agent.toml.
fn agent(dir: &std::path::Path, pg: &PgCluster, redis: &RedisServer) -> AgentConfig {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            r#"id = "a1"
region = "west"
coordinators = ["127.0.0.1:{}"]
state_dir = "{}"

[tls]
ca = "/nonexistent/ca.pem"
cert = "/nonexistent/a1.pem"
key = "/nonexistent/a1.key"

[repository]
repo = "{}"
password_file = "/nonexistent/password"

[[sources]]
name = "db"
kind = "postgres"
dsn = "{}"
pg_bin = "{}"

[[sources]]
name = "cache"
kind = "redis"
url = "redis://127.0.0.1:{}"
"#,
            free_port(),
            dir.join("state").display(),
            dir.join("repo").display(),
            pg.dsn("postgres"),
            pg_bin().display(),
            redis.port
        ),
    )
    .unwrap();
    AgentConfig::load(&path, None).unwrap()
}

fn psql(pg: &PgCluster, options: Option<&str>, sql: &str) -> (bool, String) {
    psql_tried(&pg.dsn("postgres"), options, sql)
}

/// Every way a client could try to write to a fenced PostgreSQL fails.
fn pg_refuses_every_write(pg: &PgCluster) {
    for (options, sql) in [
        (None, "INSERT INTO t VALUES (2)"),
        (None, "BEGIN READ WRITE; INSERT INTO t VALUES (3); COMMIT"),
        (
            Some("-c default_transaction_read_only=off"),
            "INSERT INTO t VALUES (4)",
        ),
        (
            None,
            "SET default_transaction_read_only = off; INSERT INTO t VALUES (5)",
        ),
    ] {
        let (ok, said) = psql(pg, options, sql);
        assert!(!ok, "{sql} (PGOPTIONS {options:?}) was taken: {said}");
        assert!(
            said.contains("read-only") || said.contains("during recovery"),
            "{sql}: {said}"
        );
    }
}

/// What redis-cli prints for `args`, an error reply included.
fn redis_says(r: &RedisServer, args: &[&str]) -> String {
    let out = Command::new(crate::fixtures::require("redis-cli"))
        .args(["-p", &r.port.to_string()])
        .args(args)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every way a client could try to write to a fenced Redis fails.
fn redis_refuses_every_write(r: &RedisServer) {
    let _ = redis_says(r, &["CLIENT", "UNPAUSE"]);
    for args in [
        &["SET", "k", "2"][..],
        &["EVAL", "return redis.call('SET', 'k', '3')", "0"],
        &["EVAL", "redis.call('MULTI') return 1", "0"],
    ] {
        let said = redis_says(r, args);
        assert!(
            said.contains("NOREPLICAS") || said.contains("not allowed"),
            "{args:?}: {said}"
        );
    }
}

#[test]
fn a_fence_holds_against_every_client_and_over_a_restart_and_lifts_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = PgCluster::start(&tmp.path().join("pg"), "listen_addresses = '127.0.0.1'");
    pg.sql(
        "postgres",
        "CREATE TABLE t (n int); INSERT INTO t VALUES (1)",
    );
    let mut redis = RedisServer::start(&tmp.path().join("redis"), &[]);
    redis.cli(&["SET", "k", "1"]);
    redis.cli(&["CONFIG", "SET", "min-replicas-max-lag", "0"]);
    let config = agent(tmp.path(), &pg, &redis);
    let db: Arc<dyn StoreControl> = open(&config, "db").unwrap();
    let cache: Arc<dyn StoreControl> = open(&config, "cache").unwrap();
    let rt = rt();

    let fence = FenceAction {
        stop_postgres: false,
    };
    let fenced = rt.block_on(db.fence(&fence, DEADLINE)).unwrap();
    assert!(fenced.detail.contains("standby.signal"), "{fenced:?}");
    assert!(fenced.position.is_some(), "{fenced:?}");
    let redis_fenced = rt.block_on(cache.fence(&fence, DEADLINE)).unwrap();
    assert!(
        redis_fenced.detail.contains("kept in its config file"),
        "{redis_fenced:?}"
    );
    // Twice is the same fence (a new leader repeats the step).
    assert!(rt.block_on(cache.fence(&fence, DEADLINE)).unwrap().already);

    // The demotion starts PostgreSQL again as a standby, for reads.
    let demoted = rt
        .block_on(db.demote(&RejoinAction::default(), DEADLINE))
        .unwrap();
    assert!(
        demoted.detail.contains("started as a standby"),
        "{demoted:?}"
    );
    assert_eq!(pg.sql("postgres", "SELECT count(*) FROM t"), "1");
    pg_refuses_every_write(&pg);
    redis_refuses_every_write(&redis);
    assert_eq!(redis.cli(&["GET", "k"]), "1");

    // A restart by anyone keeps both fences.
    pg.stop();
    pg.start_server();
    redis.restart();
    pg_refuses_every_write(&pg);
    redis_refuses_every_write(&redis);

    // Lifted (a failover that promoted nothing): both take writes again,
    // and Redis has its settings from before.
    let lifted = rt.block_on(db.unfence(DEADLINE)).unwrap();
    assert!(lifted.position.is_some(), "{lifted:?}");
    let (ok, said) = psql(&pg, None, "INSERT INTO t VALUES (6)");
    assert!(ok, "{said}");
    // An action opens its store afresh (the daemon does too).
    let cache = open(&config, "cache").unwrap();
    rt.block_on(cache.unfence(DEADLINE)).unwrap();
    assert_eq!(redis.cli(&["SET", "k", "7"]), "OK");
    redis.restart();
    assert_eq!(redis.cli(&["SET", "k", "8"]), "OK");
    for name in ["min-replicas-to-write", "min-replicas-max-lag"] {
        assert_eq!(
            redis.cli(&["CONFIG", "GET", name]),
            format!("{name}\n0"),
            "the settings from before the fence, kept over a restart"
        );
    }
}
