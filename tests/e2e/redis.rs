//! The Redis source against real redis-server processes the tests start:
//! RDB over the replication protocol, restored and compared by DEBUG DIGEST.

use crate::fixtures::{free_port, one_error_line, require, Repo};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server on a free port, stopped on drop. It runs with a config
/// file (`redis.conf` in its directory, empty at first) as a service
/// manager runs it, so `CONFIG REWRITE` keeps settings over a restart.
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    child: Child,
    /// The address it is bound to.
    pub(crate) host: String,
    dir: std::path::PathBuf,
    prefix: Vec<String>,
}

impl RedisServer {
    pub(crate) fn start(dir: &Path, extra: &[&str]) -> RedisServer {
        Self::start_on(dir, free_port(), extra)
    }

    /// [`RedisServer::start`] on a given port.
    fn start_on(dir: &Path, port: u16, extra: &[&str]) -> RedisServer {
        Self::start_in(dir, port, &[], "127.0.0.1", extra)
    }

    /// A server run after `prefix` (such as `ip netns exec NAME`), bound
    /// to `host`.
    pub(crate) fn start_in(
        dir: &Path,
        port: u16,
        prefix: &[String],
        host: &str,
        extra: &[&str],
    ) -> RedisServer {
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("redis.conf");
        if !conf.exists() {
            std::fs::write(&conf, "").unwrap();
        }
        let child = Self::command(prefix)
            .arg(&conf)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                host,
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
        let s = RedisServer {
            port,
            child,
            host: host.to_string(),
            dir: dir.to_path_buf(),
            prefix: prefix.to_vec(),
        };
        s.wait_started();
        s
    }

    fn command(prefix: &[String]) -> Command {
        let bin = require("redis-server");
        match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        }
    }

    fn wait_started(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.try_cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server and starts it again from its config file (what
    /// `CONFIG REWRITE` kept), on the same port and address.
    pub(crate) fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::command(&self.prefix)
            .arg(self.dir.join("redis.conf"))
            .args(["--port", &self.port.to_string(), "--bind", &self.host])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.wait_started();
    }

    pub(crate) fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(require("redis-cli"))
            .args(["-h", &self.host, "-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub(crate) fn cli(&self, args: &[&str]) -> String {
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
    // The server waits 5 s before a diskless copy: the default goes
    // through its disk instead.
    assert_eq!(v["facts"]["transfer"], "disk");
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
    // The RDB brought no password along: the server has one of its own,
    // in a file only its owner reads, and answers no one without it.
    let cli = |password: Option<&str>, args: &[&str]| {
        let mut c = Command::new(require("redis-cli"));
        if let Some(p) = password {
            c.env("REDISCLI_AUTH", p);
        }
        let out = c
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let conf = dir2.join("seawall-redis.conf");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&dir2), mode(&conf)), (0o700, 0o600));
    assert!(out.contains("seawall-redis.conf"), "{out}");
    let password = std::fs::read_to_string(&conf)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("requirepass ").map(str::to_string))
        .expect("a requirepass line");
    assert!(!out.contains(&password), "the password was printed: {out}");
    let anonymous = cli(None, &["DBSIZE"]);
    let dbsize = cli(Some(&password), &["DBSIZE"]);
    cli(Some(&password), &["SHUTDOWN", "NOSAVE"]);
    assert!(anonymous.contains("NOAUTH"), "{anonymous}");
    assert_eq!(dbsize, "2007");

    // A second backup of unchanged data, in the diskless (end-mark) form, adds little.
    src.cli(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    src.cli(&["DEL", "after"]);
    let v2 = repo.json(&["backup", "redis", "--url", &src.url()]);
    assert_eq!(v2["facts"]["keys"]["db0"], 2007);
    // With no wait, the default is the diskless form.
    assert_eq!(v2["facts"]["transfer"], "diskless");
    let forced = repo.json(&["backup", "redis", "--url", &src.url(), "--disk-transfer"]);
    assert_eq!(forced["facts"]["transfer"], "disk");
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

/// Application state under the runbook's key patterns, plus keys no pattern takes.
fn populate_app(r: &RedisServer) {
    let mut script = String::new();
    for i in 0..500 {
        script.push_str(&format!("HSET agent:{i} id {i} region eu state active\n"));
    }
    for i in 0..100 {
        script.push_str(&format!(
            "SET task:pending:{i} \"{{\\\"id\\\":{i}}}\" EX 86400\n"
        ));
    }
    script.push_str("SET task:done:1 finished\nSET unrelated kept-out\n");
    script.push_str("SET session:a user-a PX 3600000\nSET session:b user-b\n");
    script.push_str("SET session:c user-c PX 600000\nSET session:soon gone PX 1500\n");
    script.push_str("RPUSH neural:model:1 w1 w2 w3\nSADD neural:model:2 a b c\n");
    script.push_str("ZADD neural:model:3 1 x 2 y\nXADD neural:model:4 * layer 1 size 42\n");
    script.push_str("PEXPIRE neural:model:4 7200000\n");
    let mut child = Command::new(require("redis-cli"))
        .args(["-p", &r.port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    r.cli(&["SETRANGE", "agent:big", "2999999", "x"]);
}

const APP_PATTERNS: [&str; 4] = ["agent:*", "task:pending:*", "neural:model:*", "session:*"];

/// Every captured key, its value digest and absolute expiry (ms, -1 none).
fn app_state(r: &RedisServer) -> Vec<(String, String, i64)> {
    let mut keys: Vec<String> = APP_PATTERNS
        .iter()
        .flat_map(|p| {
            r.cli(&["--scan", "--pattern", p])
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    keys.sort();
    // One redis-cli for every key: a value digest and an expiry line each.
    let script: String = keys
        .iter()
        .map(|k| format!("DEBUG DIGEST-VALUE {k}\nPEXPIRETIME {k}\n"))
        .collect();
    let mut child = Command::new(require("redis-cli"))
        .args(["-p", &r.port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        std::io::Write::write_all(&mut stdin, script.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 * keys.len(), "{text}");
    keys.into_iter()
        .zip(lines.chunks(2))
        .map(|(k, l)| (k, l[0].to_string(), l[1].parse().unwrap()))
        .collect()
}

#[test]
fn keys_round_trip_keeps_values_and_absolute_expiries() {
    let tmp = tempfile::tempdir().unwrap();
    let src = RedisServer::start(&tmp.path().join("src"), &[]);
    populate_app(&src);
    let repo = Repo::local(&tmp.path().join("repo"));
    repo.ok(&["init"]);
    let mut args = vec!["backup", "redis", "--url"];
    let url = src.url();
    args.push(&url);
    for p in APP_PATTERNS {
        args.extend(["--keys", p]);
    }
    let v = repo.json(&args);
    let facts = &v["facts"];
    assert_eq!(facts["mode"], "keys");
    // 500 agents + the big one, 100 pending tasks, 4 models, 4 sessions.
    assert_eq!(facts["keys_captured"], 609, "{facts}");
    assert_eq!(facts["keys_per_pattern"]["agent:*"], 501);
    assert_eq!(facts["keys_per_pattern"]["session:*"], 4);
    let snapshot_state = app_state(&src);

    // After the snapshot: a new key, and session:soon expires.
    src.cli(&["SET", "agent:after", "snapshot"]);
    std::thread::sleep(Duration::from_millis(1600));

    // The target holds its own agent:1; by default it is kept.
    let dst = RedisServer::start(&tmp.path().join("dst"), &[]);
    dst.cli(&["SET", "agent:1", "local"]);
    let r = repo.json(&["restore", "latest", "--redis-target", &dst.url()]);
    assert_eq!(r["restore"]["skipped_existing"], 1, "{r}");
    assert_eq!(r["restore"]["skipped_expired"], 1, "{r}");
    assert_eq!(r["restore"]["restored"], 607, "{r}");
    assert_eq!(dst.cli(&["GET", "agent:1"]), "local");
    assert_eq!(dst.cli(&["EXISTS", "agent:after"]), "0");
    assert_eq!(
        dst.cli(&["EXISTS", "session:soon"]),
        "0",
        "expired key resurrected"
    );
    assert_eq!(dst.cli(&["EXISTS", "task:done:1"]), "0");
    assert_eq!(dst.cli(&["EXISTS", "unrelated"]), "0");
    let restored = app_state(&dst);
    let expected: Vec<_> = snapshot_state
        .iter()
        .filter(|(k, _, _)| k != "agent:1" && k != "session:soon")
        .collect();
    let got: Vec<_> = restored.iter().filter(|(k, _, _)| k != "agent:1").collect();
    assert_eq!(got.len(), expected.len());
    for ((k, d, at), (k2, d2, at2)) in expected.iter().zip(&got) {
        assert_eq!((k, d), (k2, d2), "value of {k} differs");
        assert!(
            (*at == -1 && *at2 == -1) || (at - at2).abs() <= 1000,
            "expiry of {k}: source {at}, restored {at2}"
        );
    }

    // --replace overwrites; TTL rules from a keys file bound sessions to 30 min.
    let rules = tmp.path().join("keys.toml");
    std::fs::write(
        &rules,
        "[[keys]]\npattern = \"session:*\"\nrestore_ttl = \"30m\"\n",
    )
    .unwrap();
    let r = repo.json(&[
        "restore",
        "latest",
        "--redis-target",
        &dst.url(),
        "--replace",
        "--keys-file",
        &rules.display().to_string(),
    ]);
    assert_eq!(r["restore"]["skipped_existing"], 0, "{r}");
    assert_eq!(r["restore"]["restored"], 608, "{r}");
    assert_eq!(r["restore"]["ttl_rule_applied"], 2, "{r}");
    assert_eq!(
        dst.cli(&["DEBUG", "DIGEST-VALUE", "agent:1"]),
        src.cli(&["DEBUG", "DIGEST-VALUE", "agent:1"])
    );
    let ttl = |k: &str| -> i64 { dst.cli(&["PTTL", k]).parse().unwrap() };
    let half_hour = 1_800_000;
    assert!(
        (half_hour - 5000..=half_hour).contains(&ttl("session:a")),
        "{}",
        ttl("session:a")
    );
    assert!(
        (half_hour - 5000..=half_hour).contains(&ttl("session:b")),
        "{}",
        ttl("session:b")
    );
    let c = ttl("session:c");
    assert!((540_000..600_000).contains(&c), "own expiry is sooner: {c}");
    assert_eq!(ttl("agent:2"), -1);

    // An RDB restore is refused for a keys snapshot, with the way out.
    let err = one_error_line(&repo.run(&[
        "restore",
        v["snapshot"].as_str().unwrap(),
        "--redis-datadir",
        &tmp.path().join("x").display().to_string(),
    ]));
    assert!(err.contains("--redis-target"), "{err}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
fn tls_files(dir: &Path) -> [std::path::PathBuf; 5] {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "test redis CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let issue = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server, server_key) = issue(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client, client_key) = issue(vec!["backup".into()], ExtendedKeyUsagePurpose::ClientAuth);
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server),
        ("server.key", server_key),
        ("client.pem", client),
        ("client.key", client_key),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    })
}

#[test]
fn tls_with_an_acl_user_for_rdb_and_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let [ca, server, server_key, client, client_key] = tls_files(&tmp.path().join("tls"));
    let tls_port = free_port();
    let s = |p: &Path| p.display().to_string();
    let tls_port_arg = tls_port.to_string();
    let src = RedisServer::start(
        &tmp.path().join("src"),
        &[
            "--tls-port",
            &tls_port_arg,
            "--tls-cert-file",
            &s(&server),
            "--tls-key-file",
            &s(&server_key),
            "--tls-ca-cert-file",
            &s(&ca),
            "--tls-auth-clients",
            "yes",
        ],
    );
    populate(&src);
    src.cli(&[
        "ACL", "SETUSER", "backup", "on", ">s3cret", "~*", "&*", "+@all",
    ]);
    let digest = src.cli(&["DEBUG", "DIGEST"]);
    let url = format!("rediss://backup:s3cret@127.0.0.1:{tls_port}");
    let tls_args = [
        "--redis-ca".to_string(),
        s(&ca),
        "--redis-cert".into(),
        s(&client),
        "--redis-key".into(),
        s(&client_key),
    ];
    let with_tls = |mut args: Vec<String>| {
        args.extend(tls_args.iter().cloned());
        args
    };
    let repo = Repo::local(&tmp.path().join("repo"));
    repo.ok(&["init"]);
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        repo.run(&refs)
    };

    // A whole RDB over TLS, restored and compared.
    let args = with_tls(vec![
        "--json".into(),
        "backup".into(),
        "redis".into(),
        "--url".into(),
        url.clone(),
    ]);
    let out = run(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["facts"]["keys"]["db0"], 2007);
    let dir = tmp.path().join("restored");
    repo.ok(&["restore", "latest", "--redis-datadir", &s(&dir)]);
    let copy = RedisServer::start(&dir, &["--dbfilename", "dump.rdb"]);
    assert_eq!(copy.cli(&["DEBUG", "DIGEST"]), digest);

    // Selected keys over TLS, restored into a live server over TLS.
    let args = with_tls(vec![
        "backup".into(),
        "redis".into(),
        "--url".into(),
        url.clone(),
        "--keys".into(),
        "agent:*".into(),
    ]);
    let out = run(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dst_tls = free_port();
    let dst_tls_arg = dst_tls.to_string();
    let dst = RedisServer::start(
        &tmp.path().join("dst"),
        &[
            "--tls-port",
            &dst_tls_arg,
            "--tls-cert-file",
            &s(&server),
            "--tls-key-file",
            &s(&server_key),
            "--tls-ca-cert-file",
            &s(&ca),
        ],
    );
    let target = format!("rediss://127.0.0.1:{dst_tls}");
    let out = run(with_tls(vec![
        "restore".into(),
        "latest".into(),
        "--redis-target".into(),
        target,
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dst.cli(&["DBSIZE"]), "2000");
    assert_eq!(dst.cli(&["GET", "agent:7"]), "id=7 region=eu");

    // No client certificate: the server refuses, and the error says what to give.
    let out = run(vec![
        "backup".into(),
        "redis".into(),
        "--url".into(),
        url.clone(),
        "--redis-ca".into(),
        s(&ca),
    ]);
    let err = one_error_line(&out);
    assert!(err.contains("--redis-cert"), "{err}");
    assert!(!err.contains("s3cret"), "the password leaked: {err}");
    // A CA that did not sign the server: refused before any credential is sent.
    let other = tls_files(&tmp.path().join("other"));
    let out = run(vec![
        "backup".into(),
        "redis".into(),
        "--url".into(),
        url.clone(),
        "--redis-ca".into(),
        s(&other[0]),
    ]);
    let err = one_error_line(&out);
    assert!(
        err.contains("TLS handshake") && err.contains("--redis-ca"),
        "{err}"
    );
    // TLS flags with a plain URL are a mistake, said so.
    let out = run(vec![
        "backup".into(),
        "redis".into(),
        "--url".into(),
        src.url(),
        "--redis-ca".into(),
        s(&ca),
    ]);
    assert!(one_error_line(&out).contains("rediss://"));
}

/// Three primaries in cluster mode, all 16384 slots assigned.
fn start_cluster(dir: &Path) -> Vec<RedisServer> {
    // A cluster node also listens on its port + 10000 (the cluster bus):
    // both must be free, or the node cannot join and the cluster never
    // becomes ok.
    let bus_free = |port: u16| {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
    };
    let nodes: Vec<RedisServer> = (0..3)
        .map(|i| {
            let port = loop {
                let p = free_port();
                if bus_free(p) {
                    break p;
                }
            };
            RedisServer::start_on(
                &dir.join(format!("node{i}")),
                port,
                &["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"],
            )
        })
        .collect();
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new(require("redis-cli"))
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes
        .iter()
        .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    {
        assert!(Instant::now() < deadline, "the cluster did not become ok");
        std::thread::sleep(Duration::from_millis(100));
    }
    nodes
}

/// Runs commands through `redis-cli -c`, which follows the cluster's redirects.
fn cluster_cli(node: &RedisServer, script: &str) -> String {
    let mut child = Command::new(require("redis-cli"))
        .args(["-c", "-p", &node.port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let script = script.to_string();
    let writer = std::thread::spawn(move || {
        std::io::Write::write_all(&mut stdin, script.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn keys_of_a_cluster_are_read_from_every_primary_and_restored_to_the_owners() {
    let tmp = tempfile::tempdir().unwrap();
    let src = start_cluster(&tmp.path().join("src"));
    let mut script = String::new();
    for i in 0..300 {
        script.push_str(&format!("HSET agent:{i} id {i} region eu\n"));
    }
    for i in 0..50 {
        script.push_str(&format!("SET task:pending:{i} t{i} EX 86400\n"));
    }
    script.push_str("SET unrelated kept-out\n");
    cluster_cli(&src[0], &script);
    let held: Vec<u64> = src
        .iter()
        .map(|n| n.cli(&["DBSIZE"]).parse().unwrap())
        .collect();
    assert!(
        held.iter().all(|&n| n > 0),
        "keys on every primary: {held:?}"
    );

    let repo = Repo::local(&tmp.path().join("repo"));
    repo.ok(&["init"]);
    let url = src[1].url();
    let v = repo.json(&[
        "backup",
        "redis",
        "--url",
        &url,
        "--keys",
        "agent:*",
        "--keys",
        "task:pending:*",
    ]);
    let facts = &v["facts"];
    assert_eq!(facts["keys_captured"], 350, "{facts}");
    assert_eq!(
        facts["cluster_primaries"].as_array().unwrap().len(),
        3,
        "{facts}"
    );

    let dst = start_cluster(&tmp.path().join("dst"));
    let r = repo.json(&["restore", "latest", "--redis-target", &dst[2].url()]);
    assert_eq!(r["restore"]["restored"], 350, "{r}");
    let total: u64 = dst
        .iter()
        .map(|n| n.cli(&["DBSIZE"]).parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 350);
    let got = cluster_cli(
        &dst[0],
        "HGET agent:123 id\nGET task:pending:7\nTTL task:pending:7\nEXISTS unrelated\n",
    );
    let lines: Vec<&str> = got.lines().filter(|l| !l.starts_with("-> ")).collect();
    assert_eq!(&lines[..2], ["123", "t7"], "{got}");
    let ttl: i64 = lines[2].parse().unwrap();
    assert!((86_000..=86_400).contains(&ttl), "{got}");
    assert_eq!(lines[3], "0", "{got}");
}

#[test]
fn a_redis_password_can_come_from_a_file_or_the_environment_not_the_url() {
    let tmp = tempfile::tempdir().unwrap();
    let src = RedisServer::start(&tmp.path().join("src"), &[]);
    src.cli(&["CONFIG", "SET", "requirepass", "from-a-file"]);
    let repo = Repo::local(&tmp.path().join("repo"));
    repo.ok(&["init"]);
    let url = format!("redis://127.0.0.1:{}", src.port);
    // No password anywhere: the server's refusal, named.
    let err = one_error_line(&repo.run(&["backup", "redis", "--url", &url]));
    assert!(err.to_lowercase().contains("auth"), "{err}");
    // From a file others cannot read.
    let file = tmp.path().join("redis.pass");
    std::fs::write(&file, "from-a-file\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = repo.cmd(&["--json", "backup", "redis", "--url", &url]);
    cmd.env("SEAWALL_REDIS_PASSWORD_FILE", &file);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // From redis-cli's variable.
    let mut cmd = repo.cmd(&["--json", "backup", "redis", "--url", &url]);
    cmd.env("REDISCLI_AUTH", "from-a-file");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(repo.json(&["snapshots"]).as_array().map(Vec::len), Some(2));
}

#[test]
fn an_rdb_stream_is_listed_and_dumped_without_a_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let src = RedisServer::start(&tmp.path().join("src"), &[]);
    src.cli(&["DEBUG", "POPULATE", "5000", "key", "32"]);
    let repo = Repo::local(&tmp.path().join("repo"));
    repo.ok(&["init"]);
    repo.json(&["backup", "redis", "--url", &src.url()]);
    let listed = repo.json(&["ls", "latest"]);
    let entry = &listed.as_array().unwrap()[0];
    assert_eq!(entry["kind"], "stream");
    let name = entry["path"].as_str().unwrap();
    let out = repo.run(&["dump", "latest", name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len() as u64, entry["size"].as_u64().unwrap());
    // An RDB file starts with its magic.
    assert!(out.stdout.starts_with(b"REDIS"));
}
