//! The Redis source against real redis-server processes the tests start:
//! RDB over the replication protocol, restored and compared by DEBUG DIGEST.

use crate::fixtures::{free_port, one_error_line, require, Repo};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server on a free port, stopped on drop.
struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    fn start(dir: &Path, extra: &[&str]) -> RedisServer {
        let bin = require("redis-server");
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--enable-debug-command", "local", "--dir"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = RedisServer { port, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.try_cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(require("redis-cli"))
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {} failed", args.first().unwrap_or(&"")))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every data type, with and without expiry, across two databases.
fn populate(r: &RedisServer) {
    // One redis-cli reading 2000 commands from stdin.
    let script: String = (0..2000)
        .map(|i| format!("SET agent:{i} \"id={i} region=eu\"\n"))
        .collect();
    let mut child = Command::new(require("redis-cli"))
        .args(["-p", &r.port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    r.cli(&["SET", "session:a", "token", "PX", "3600000"]);
    r.cli(&["HSET", "task:1", "state", "pending", "agent", "7"]);
    r.cli(&["RPUSH", "queue", "a", "b", "c", "d"]);
    r.cli(&["SADD", "regions", "eu", "us", "ap"]);
    r.cli(&["ZADD", "scores", "1", "x", "2.5", "y"]);
    r.cli(&["XADD", "events", "*", "kind", "login", "user", "42"]);
    r.cli(&["EXPIRE", "task:1", "7200"]);
    r.cli(&["-n", "3", "SET", "other-db", "yes"]);
    // A 3 MB value (zero-filled, then a mark), without a 3 MB argument.
    r.cli(&["SETRANGE", "big", "2999999", "x"]);
}

#[test]
fn rdb_round_trip_gives_the_same_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let src = RedisServer::start(&tmp.path().join("src"), &[]);
    populate(&src);
    let digest = src.cli(&["DEBUG", "DIGEST"]);
    let repo = Repo::local(&tmp.path().join("repo"));
    repo.ok(&["init"]);
    let v = repo.json(&["backup", "redis", "--url", &src.url()]);
    assert_eq!(v["facts"]["keys"]["db0"], 2007);
    assert_eq!(v["facts"]["keys"]["db3"], 1);
    assert!(v["facts"]["rdb_version"].as_u64().unwrap() >= 9);
    // Written after the snapshot: must not come back.
    src.cli(&["SET", "after", "snapshot"]);

    let dir = tmp.path().join("restored");
    repo.ok(&[
        "restore",
        "latest",
        "--redis-datadir",
        &dir.display().to_string(),
    ]);
    let copy = RedisServer::start(&dir, &["--dbfilename", "dump.rdb"]);
    assert_eq!(copy.cli(&["DEBUG", "DIGEST"]), digest);
    assert_eq!(copy.cli(&["EXISTS", "after"]), "0");
    let ttl: i64 = copy.cli(&["PTTL", "session:a"]).parse().unwrap();
    assert!(ttl > 3_500_000, "expiry lost: {ttl}");

    // --start serves the restored RDB itself.
    let dir2 = tmp.path().join("started");
    let port = free_port();
    let out = repo.ok(&[
        "restore",
        "latest",
        "--redis-datadir",
        &dir2.display().to_string(),
        "--start",
        "--redis-port",
        &port.to_string(),
    ]);
    assert!(out.contains("listens on"), "{out}");
    let dbsize = Command::new(require("redis-cli"))
        .args(["-p", &port.to_string(), "DBSIZE"])
        .output()
        .unwrap();
    let _ = Command::new(require("redis-cli"))
        .args(["-p", &port.to_string(), "SHUTDOWN", "NOSAVE"])
        .output();
    assert_eq!(String::from_utf8_lossy(&dbsize.stdout).trim(), "2007");

    // A second backup of unchanged data, in the diskless (end-mark) form, adds little.
    src.cli(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    src.cli(&["DEL", "after"]);
    let v2 = repo.json(&["backup", "redis", "--url", &src.url(), "--diskless"]);
    assert_eq!(v2["facts"]["keys"]["db0"], 2007);
    let second = v2["snapshot"].as_str().unwrap();
    let dir3 = tmp.path().join("diskless");
    repo.ok(&[
        "restore",
        second,
        "--redis-datadir",
        &dir3.display().to_string(),
    ]);
    let copy3 = RedisServer::start(&dir3, &["--dbfilename", "dump.rdb"]);
    assert_eq!(copy3.cli(&["DEBUG", "DIGEST"]), digest);
    let added = v2["summary"]["bytes_added"].as_u64().unwrap();
    let total = v2["summary"]["bytes_total"].as_u64().unwrap();
    assert!(
        added * 4 < total,
        "unchanged RDB added {added} of {total} bytes"
    );
}

#[test]
fn an_acl_user_without_sync_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let src = RedisServer::start(&tmp.path().join("src"), &[]);
    src.cli(&[
        "ACL", "SETUSER", "nosync", "on", ">pw", "~*", "&*", "+@all", "-psync", "-sync",
    ]);
    let repo = Repo::local(&tmp.path().join("repo"));
    repo.ok(&["init"]);
    let url = format!("redis://nosync:pw@127.0.0.1:{}", src.port);
    let err = one_error_line(&repo.run(&["backup", "redis", "--url", &url]));
    assert!(err.contains("PSYNC") && err.contains("+psync"), "{err}");
    assert!(!err.contains(":pw@"), "the password leaked: {err}");
    let wrong = format!("redis://nosync:nope@127.0.0.1:{}", src.port);
    let err = one_error_line(&repo.run(&["backup", "redis", "--url", &wrong]));
    assert!(!err.contains("nope"), "the password leaked: {err}");
    assert_eq!(repo.json(&["snapshots"]).as_array().map(Vec::len), Some(0));
}
