//! Secrets stay off command lines: while an agent backs up PostgreSQL and
//! Redis sources whose DSN and URL carry passwords, no process on the
//! machine shows either password in `/proc/<pid>/cmdline` (readable by
//! every local user), however briefly it runs.

use crate::fleet_fixture::{backup_now, eventually, op_json, start_agent_with, start_replica, Pki};
use crate::pg_fixture::PgCluster;
use crate::redis::RedisServer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const PG_PASSWORD: &str = "pg-Secret-4711";
const REDIS_PASSWORD: &str = "redis-Secret-0815";
/// A string put on a command line on purpose: the watcher must see it.
const CANARY: &str = "canary-on-a-command-line";

/// Every command line, right now, that contains one of `needles`.
fn command_lines_with(needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Ok(raw) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&raw).replace('\0', " ");
        if needles.iter().any(|n| text.contains(n)) {
            found.push(format!("{}: {text}", p.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
fn no_password_is_on_a_command_line_while_database_backups_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pg = PgCluster::start(&dir.join("pg"), "listen_addresses = '127.0.0.1'\n");
    pg.tool("pgbench", &["-i", "-s", "2", "-q", &pg.dsn("postgres")]);
    pg.require_password(PG_PASSWORD);
    let redis = RedisServer::start(&dir.join("redis"), &[]);
    redis.cli(&["DEBUG", "POPULATE", "200000", "key", "64"]);
    redis.cli(&["CONFIG", "SET", "requirepass", REDIS_PASSWORD]);

    let pki = Pki::new(&dir.join("pki"));
    let store = format!("[dev]\nstate = \"{}\"\n", dir.join("state.redb").display());
    let c = start_replica(&pki, dir, "c1", &store, "", true);
    let addr = c.address();
    let sources = format!(
        "[[sources]]\nname = \"db\"\nkind = \"postgres\"\ndsn = \"host=127.0.0.1 port={} user=postgres password={PG_PASSWORD} dbname=postgres\"\n\n[[sources]]\nname = \"cache\"\nkind = \"redis\"\nurl = \"redis://:{REDIS_PASSWORD}@127.0.0.1:{}\"\n",
        pg.port, redis.port
    );
    let _agent = start_agent_with(
        &pki,
        dir,
        "eu-1",
        "eu-west-1",
        std::slice::from_ref(&addr),
        &sources,
    );
    eventually(20, "the agent to connect", || {
        let a = op_json(&pki, &addr, &["agents"]);
        (a.as_array().map(Vec::len) == Some(1)).then_some(())
    });

    // Watch every process while both backups run.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut scans = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let hits = command_lines_with(&[PG_PASSWORD, REDIS_PASSWORD, CANARY]);
                seen.lock().unwrap().extend(hits);
                scans += 1;
            }
            scans
        })
    };
    // The watcher sees a short process's command line.
    let canary = std::process::Command::new("sh")
        .args(["-c", "sleep 0.3", CANARY])
        .status()
        .unwrap();
    assert!(canary.success());
    for source in ["db", "cache"] {
        backup_now(&pki, &addr, "eu-west-1", source);
    }
    stop.store(true, Ordering::Relaxed);
    let scans = watcher.join().unwrap();
    assert!(scans > 10, "only {scans} scans of /proc");
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().any(|l| l.contains(CANARY)),
        "the watcher missed the canary process"
    );
    let leaks: Vec<&String> = seen.iter().filter(|l| !l.contains(CANARY)).collect();
    assert!(leaks.is_empty(), "passwords on command lines: {leaks:#?}");
}
