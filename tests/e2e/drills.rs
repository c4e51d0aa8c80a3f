//! Restore drills end to end: a coordinator and an agent whose repository
//! holds a files source, PostgreSQL physical (with archived WAL) and
//! logical backups, and a Redis RDB; drills restore each into scratch
//! instances, check them against the snapshots and the service's check
//! file, tear them down, and judge the figures against the objectives.

use crate::fixtures::{make_tree, open_local_repo};
use crate::fleet_fixture::{
    backup_now, eventually, op, op_json, start_agent_on, start_replica, Pki,
};
use crate::pg_fixture::{archiving, pg_bin, PgCluster, PgRepo};
use crate::redis::RedisServer;
use crate::topology::{strings, Scenario, Service, Topology};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The pack holding the first chunk of the first non-empty file of the
/// newest snapshot of `source`, and an offset inside that chunk.
fn pack_of_first_file(repo_dir: &Path, source: &str) -> (PathBuf, u64) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let repo = open_local_repo(repo_dir).await;
        repo.load_index().await.unwrap();
        let tag = format!("source={source}");
        let (_, snap) = repo
            .snapshots()
            .await
            .unwrap()
            .into_iter()
            .rev()
            .find(|(_, s)| s.tags.contains(&tag))
            .unwrap();
        let mut trees = vec![snap.tree.unwrap()];
        while let Some(t) = trees.pop() {
            for node in repo.load_tree(&t).await.unwrap().nodes {
                if let Some(first) = node.content.first() {
                    let loc = repo.locate(first).unwrap();
                    let pack = repo_dir
                        .join(seawall_common::storage::FileKind::Pack.path(&loc.pack.to_hex()));
                    return (pack, loc.offset as u64 + loc.length as u64 / 2);
                }
                trees.extend(node.subtree);
            }
        }
        panic!("no file with content in the {source} snapshot")
    })
}

fn step<'a>(drill: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    drill["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name:?} in {drill:#}"))
}

fn evidence<'a>(drill: &'a serde_json::Value, name: &str, key: &str) -> &'a str {
    step(drill, name)["evidence"][key]
        .as_str()
        .unwrap_or_else(|| panic!("step {name:?} has no evidence {key:?}: {drill:#}"))
}

/// Runs a drill with --wait; its exit code and final journal.
fn drill(pki: &Pki, addr: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["drill"];
    all.extend_from_slice(args);
    all.push("--wait");
    let out = op(pki, addr, &all);
    let text = String::from_utf8_lossy(&out.stdout);
    let journal: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "drill {args:?} printed no journal ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), journal)
}

fn nothing_left(scratch: &Path, drill: &serde_json::Value) {
    let left: Vec<_> = std::fs::read_dir(scratch)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch directories left: {left:?}");
    let ps = Command::new("pgrep")
        .arg("-f")
        .arg(scratch.display().to_string())
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "scratch processes left: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    for s in drill["steps"].as_array().unwrap() {
        if let Some(port) = s["evidence"]["port"].as_str() {
            let open = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap()));
            assert!(
                open.is_err(),
                "scratch port {port} ({}) still answers",
                s["name"]
            );
        }
    }
}

#[test]
fn restore_drills_bring_every_kind_of_source_back_in_scratch_and_judge_the_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let repo = PgRepo::init(&dir.join("west"));
    let pg = PgCluster::start(&dir.join("pg"), &archiving(&repo));
    pg.sql("postgres", "CREATE DATABASE app");
    pg.sql(
        "app",
        "CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric NOT NULL);
         INSERT INTO orders (total) SELECT g FROM generate_series(1, 1000) g;",
    );
    let redis = RedisServer::start(&dir.join("redis"), &[]);
    redis.cli(&["DEBUG", "POPULATE", "5000", "k"]);
    redis.cli(&["-n", "1", "DEBUG", "POPULATE", "300", "s"]);
    let files = dir.join("docs");
    make_tree(&files, 40, 2 * 1024 * 1024, 7);
    let checks = dir.join("checks.toml");
    std::fs::write(
        &checks,
        "database = \"app\"\nmin_rows = { \"public.orders\" = 1000 }\n\n[[zero_rows]]\nname = \"no negative totals\"\nsql = \"SELECT 1 FROM orders WHERE total < 0\"\n",
    )
    .unwrap();
    let scratch = dir.join("scratch");
    let gate = RedisGate::new(dir);

    let pki = Pki::new(&dir.join("pki"));
    let topology = format!(
        "[dev]\nstate = \"{}\"\n{}",
        dir.join("state.redb").display(),
        Topology::new()
            .region("west", "primary")
            .service(
                Service::new("shop")
                    .set("rto", "10m")
                    .set("rpo", "1h")
                    .set(
                        "backups",
                        strings(&["docs", "pgphys", "pglog", "cache", "sessions"])
                    )
                    .set("check_file", checks.display().to_string())
                    .repository("west", "a1", None)
            )
            .service(
                // Its check file is one a1's agent.toml does not list.
                Service::new("ledger")
                    .set("backups", strings(&["docs"]))
                    .set(
                        "check_file",
                        dir.join("ledger-checks.toml").display().to_string()
                    )
                    .repository("west", "a1", None)
            )
            .scenario(
                Scenario::new("impatient", "shop", "restore")
                    .set("rto", "1ms")
                    .set("rpo", "1h")
            )
            .build()
    );
    let c = start_replica(&pki, dir, "c1", &topology, "", true);
    let addr = c.address();
    let dsn = pg.dsn("postgres");
    let sources = format!(
        "check_files = [\"{}\"]\n\n[drills]\nscratch_dir = \"{}\"\nredis_server = \"{}\"\n\n[[sources]]\nname = \"docs\"\nkind = \"files\"\npaths = [\"{}\"]\n\n[[sources]]\nname = \"pgphys\"\nkind = \"postgres\"\nphysical = true\ndsn = \"{dsn}\"\npg_bin = \"{}\"\n\n[[sources]]\nname = \"pglog\"\nkind = \"postgres\"\ndsn = \"{dsn}\"\npg_bin = \"{}\"\n\n[[sources]]\nname = \"cache\"\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\n\n[[sources]]\nname = \"sessions\"\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{}/1\"\nkeys = [\"s:*\"]\n",
        checks.display(),
        scratch.display(),
        gate.program().display(),
        files.display(),
        pg_bin().display(),
        pg_bin().display(),
        redis.port,
        redis.port
    );
    let _a1 = start_agent_on(
        &pki,
        dir,
        "a1",
        "west",
        std::slice::from_ref(&addr),
        &sources,
        Some(&format!(
            "repo = \"{}\"\npassword_file = \"{}\"",
            repo.dir.display(),
            repo.password_file.display()
        )),
    );
    eventually(30, "agent a1 to connect", || {
        let agents = op_json(&pki, &addr, &["agents"]);
        (agents.as_array()?.len() == 1).then_some(())
    });
    // A drill whose check file the agent would refuse is refused at once,
    // naming the fix, and leaves no journal behind.
    let refused = op(&pki, &addr, &["drill", "restore", "ledger"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("does not list the check file"),
        "{said}"
    );
    assert_eq!(
        op_json(&pki, &addr, &["drill", "list"]),
        serde_json::json!([])
    );
    for source in ["docs", "pgphys", "pglog", "cache", "sessions"] {
        backup_now(&pki, &addr, "west", source);
    }
    // Written after the base backup and archived: only replaying the WAL
    // brings these rows back.
    pg.sql(
        "app",
        "INSERT INTO orders (total) SELECT g FROM generate_series(1, 500) g",
    );
    pg.switch_and_archive();

    // 1. By hand, deep: every source restored, checked, torn down; met.
    // Meanwhile another local user tries every scratch server.
    let probe = ScratchProbe::start(scratch.clone(), _a1.pid(), gate.dir.clone());
    let (code, met) = drill(&pki, &addr, &["restore", "shop", "--deep"]);
    let probed = probe.finish();
    std::fs::write(gate.dir.join("open"), b"").unwrap();
    let (mut postgres, mut redis) = (0, 0);
    for p in &probed {
        match p {
            Probed::Postgres { port, tcp, socket } => {
                postgres += 1;
                assert!(
                    !tcp.status.success() && !socket.status.success(),
                    "another local user got into the scratch PostgreSQL on {port}: {p:?}"
                );
            }
            Probed::Redis { port, uid, said } => {
                redis += 1;
                assert!(
                    said.contains("NOAUTH") && *uid != 0,
                    "the scratch redis-server on {port} (uid {uid}) answered another local user: {said}"
                );
            }
        }
    }
    assert_eq!(
        (postgres, redis),
        (2, 2),
        "not every scratch server was probed: {probed:?}"
    );
    assert_eq!(met["verdict"], "met", "{met:#}");
    assert_eq!(code, 0);
    for source in ["docs", "pgphys", "pglog", "cache", "sessions"] {
        for phase in ["choose", "restore", "check", "teardown"] {
            let s = step(&met, &format!("{source}: {phase}"));
            assert_eq!(s["state"], "done", "{s:#}");
            let (a, b) = (
                s["started_unix_ms"].as_i64().unwrap(),
                s["ended_unix_ms"].as_i64().unwrap(),
            );
            assert!(a > 0 && b >= a, "{source}: {phase} is not timed: {s:#}");
        }
    }
    assert_eq!(
        evidence(&met, "pgphys: check", "rows app.public.orders"),
        "1500"
    );
    assert_eq!(
        evidence(&met, "pglog: check", "rows app.public.orders"),
        "1000"
    );
    // The check file's two checks and pg_amcheck in app, pg_amcheck in postgres.
    assert_eq!(evidence(&met, "pgphys: check", "checks_passed"), "4/4");
    assert_eq!(evidence(&met, "pgphys: check", "depth"), "deep");
    assert_eq!(
        evidence(&met, "cache: check", "keys db0"),
        "5000 (recorded 5000)"
    );
    assert_eq!(
        evidence(&met, "cache: check", "keys db1"),
        "300 (recorded 300)"
    );
    // Captured keys: restored into an empty scratch server's database 1.
    assert_eq!(evidence(&met, "sessions: check", "keys"), "300");
    assert_eq!(evidence(&met, "sessions: check", "keys_captured"), "300");
    assert_eq!(
        evidence(&met, "docs: check", "files_checked"),
        evidence(&met, "docs: restore", "files")
    );
    let rto = met["rto_ms"].as_i64().unwrap();
    let rpo = met["rpo_ms"].as_i64().unwrap();
    assert!(rto > 0 && rpo > 0, "{met:#}");
    nothing_left(&scratch, &met);

    // 2. A scenario whose RTO no restore can meet: missed, both figures named.
    let (code, missed) = drill(&pki, &addr, &["run", "impatient"]);
    assert_eq!(code, 1);
    assert_eq!(missed["verdict"], "missed", "{missed:#}");
    assert_eq!(missed["scenario"], "impatient");
    let reason = missed["reasons"][0].as_str().unwrap();
    assert!(
        reason.starts_with("RTO ") && reason.ends_with("is over the objective of 1ms"),
        "{reason}"
    );
    // Not deep: the check file's checks (the replayed rows counted), every
    // table listed with the catalog's estimate, no pg_amcheck.
    for source in ["pgphys", "pglog"] {
        let check = format!("{source}: check");
        assert_eq!(evidence(&missed, &check, "depth"), "catalog");
        assert_eq!(evidence(&missed, &check, "checks_passed"), "2/2");
        let rows = evidence(&missed, &check, "rows app.public.orders");
        assert!(rows.starts_with('~') || rows == "not analyzed", "{rows}");
    }
    assert_eq!(
        evidence(
            &missed,
            "pgphys: check",
            "check app: public.orders has at least 1000 rows"
        ),
        "1500 rows"
    );
    nothing_left(&scratch, &missed);

    // 3. One damaged pack of the files source: failed, naming the source,
    // the pack and the file; the other sources are still reported.
    let (pack, at) = pack_of_first_file(&repo.dir, "docs");
    let mut data = std::fs::read(&pack).unwrap();
    data[at as usize] ^= 0x01;
    std::fs::write(&pack, &data).unwrap();
    let (code, failed) = drill(&pki, &addr, &["restore", "shop"]);
    assert_eq!(code, 1);
    assert_eq!(failed["verdict"], "failed", "{failed:#}");
    let broken = step(&failed, "docs: restore");
    assert_eq!(broken["state"], "failed");
    let pack_name = pack.file_name().unwrap().to_string_lossy();
    let detail = broken["detail"].as_str().unwrap();
    assert!(
        detail.contains(&pack_name[..8]) && detail.contains("could not be restored"),
        "{detail}"
    );
    let reason = failed["reasons"][0].as_str().unwrap();
    assert!(reason.starts_with("step docs: restore failed"), "{reason}");
    for source in ["pgphys", "pglog", "cache", "sessions"] {
        assert_eq!(step(&failed, &format!("{source}: check"))["state"], "done");
    }
    nothing_left(&scratch, &failed);

    // The journal, the list and the report page.
    let id = failed["id"].as_str().unwrap();
    // `drill show` exits 1 for a drill that did not meet its objectives.
    let out = op(&pki, &addr, &["drill", "show", id]);
    assert_eq!(out.status.code(), Some(1));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["verdict"], "failed");
    let list = op_json(&pki, &addr, &["drill", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 3);
    let page = dir.join("report.html");
    let out = op(
        &pki,
        &addr,
        &["drill", "report", id, "--html", page.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("docs: restore") && html.contains(&pack_name[..8]));
}

/// What a local user other than the agent's got from each scratch server
/// a drill started. The drill is single-stepped: its job processes are
/// stopped while the scratch directory is looked at and any new server
/// probed, then let run for a moment, so no server can come and go
/// between two looks; each is probed while it serves: as root (the
/// control: it answers) and as `nobody`.
struct ScratchProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Probed>>,
}

/// One scratch server as another local user found it.
#[derive(Debug)]
enum Probed {
    Postgres {
        port: u16,
        tcp: std::process::Output,
        socket: std::process::Output,
    },
    Redis {
        port: u16,
        uid: u32,
        said: String,
    },
}

/// The drills' redis-server, held after it started until the test has
/// tried it (a drill's Redis may live for only milliseconds): it writes
/// `up.PID` into its directory and waits for `go.PID`.
struct RedisGate {
    dir: PathBuf,
}

impl RedisGate {
    fn new(root: &Path) -> RedisGate {
        use std::os::unix::fs::PermissionsExt;
        let dir = root.join("redis-gate");
        std::fs::create_dir_all(&dir).unwrap();
        // The scratch server runs as another user: it must reach this.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let real = crate::fixtures::require("redis-server");
        let d = dir.display();
        let script = format!(
            "#!/bin/sh\n{} \"$@\" || exit $?\nprev=; for a in \"$@\"; do [ \"$prev\" = --pidfile ] && pf=$a; prev=$a; done\ni=0\nwhile [ ! -s \"$pf\" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n[ -e {d}/open ] && exit 0\ntouch {d}/up.$$\ni=0\nwhile [ ! -e {d}/go.$$ ] && [ ! -e {d}/open ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n",
            real.display()
        );
        std::fs::write(dir.join("redis-server"), script).unwrap();
        std::fs::set_permissions(
            dir.join("redis-server"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        RedisGate { dir }
    }

    fn program(&self) -> PathBuf {
        self.dir.join("redis-server")
    }
}

impl ScratchProbe {
    fn start(scratch: PathBuf, agent: i32, gate: PathBuf) -> ScratchProbe {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut done = std::collections::BTreeSet::new();
            let mut held_since = std::collections::HashMap::new();
            let mut found = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                // Stopped until no job the agent started since escapes.
                let mut jobs = Vec::new();
                loop {
                    let now = drill_jobs(agent);
                    let new: Vec<i32> = now.into_iter().filter(|p| !jobs.contains(p)).collect();
                    if new.is_empty() {
                        break;
                    }
                    signal(&new, nix::sys::signal::Signal::SIGSTOP);
                    jobs.extend(new);
                }
                let dirs = std::fs::read_dir(&scratch)
                    .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
                    .unwrap_or_default();
                for d in dirs {
                    for (pidfile, postgres) in [
                        (d.join("pgdata/postmaster.pid"), true),
                        (d.join("redis/redis.pid"), false),
                    ] {
                        if done.contains(&pidfile) || !pidfile.exists() {
                            continue;
                        }
                        let probed = if postgres {
                            probe_postgres(pidfile.parent().unwrap())
                        } else {
                            probe_redis(&pidfile)
                        };
                        if let Some(p) = probed {
                            done.insert(pidfile);
                            found.push(p);
                        }
                    }
                }
                // A held redis-server goes on once every Redis there is
                // was tried (or after 20 s, when its probe never succeeds).
                let redis_left = std::fs::read_dir(&scratch)
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.path().join("redis/redis.pid"))
                            .any(|p| p.exists() && !done.contains(&p))
                    })
                    .unwrap_or(false);
                for up in std::fs::read_dir(&gate).unwrap().flatten() {
                    let name = up.file_name().to_string_lossy().to_string();
                    let Some(pid) = name.strip_prefix("up.") else {
                        continue;
                    };
                    let held = held_since
                        .entry(pid.to_string())
                        .or_insert_with(Instant::now);
                    if !redis_left || held.elapsed() > Duration::from_secs(20) {
                        let _ = std::fs::write(gate.join(format!("go.{pid}")), b"");
                    }
                }
                signal(&jobs, nix::sys::signal::Signal::SIGCONT);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            found
        });
        ScratchProbe { stop, thread }
    }

    fn finish(self) -> Vec<Probed> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// The agent's job processes (`seawall run-operation`).
fn drill_jobs(agent: i32) -> Vec<i32> {
    let mut jobs = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if ppid == Some(agent) && String::from_utf8_lossy(&cmdline).contains("run-operation") {
            jobs.push(pid);
        }
    }
    jobs
}

fn signal(pids: &[i32], s: nix::sys::signal::Signal) {
    for p in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), s);
    }
}

fn as_nobody(program: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(program)
        .args(args)
        .output()
        .unwrap()
}

/// A scratch PostgreSQL in `datadir`, once it answers its owner.
fn probe_postgres(datadir: &Path) -> Option<Probed> {
    let pid = std::fs::read_to_string(datadir.join("postmaster.pid")).ok()?;
    let port: u16 = pid.lines().nth(3)?.trim().parse().ok()?;
    let dir = datadir.display().to_string();
    let p = port.to_string();
    let psql = pg_bin().join("psql");
    let control = Command::new(&psql)
        .args([
            "-X", "-A", "-t", "-h", &dir, "-p", &p, "-U", "postgres", "-d", "postgres",
        ])
        .args(["-c", "SELECT 1"])
        .output()
        .ok()?;
    if String::from_utf8_lossy(&control.stdout).trim() != "1" {
        return None;
    }
    let try_as_nobody = |host: &str| {
        as_nobody(
            &psql,
            &[
                "-X", "-h", host, "-p", &p, "-U", "postgres", "-d", "postgres", "-c", "SELECT 1",
            ],
        )
    };
    Some(Probed::Postgres {
        port,
        tcp: try_as_nobody("127.0.0.1"),
        socket: try_as_nobody(&dir),
    })
}

/// A scratch redis-server whose pid file is `pidfile`, once it has loaded.
fn probe_redis(pidfile: &Path) -> Option<Probed> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = String::from_utf8_lossy(&cmdline)
        .split(|c: char| c == '\0' || c.is_whitespace())
        .map(str::to_string)
        .collect();
    let port: u16 = words
        .iter()
        .position(|w| w == "--port")
        .and_then(|i| words.get(i + 1))
        .or_else(|| words.iter().find(|w| w.contains(':')))
        .and_then(|w| w.rsplit(':').next())?
        .parse()
        .ok()?;
    let uid: u32 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let conf = std::fs::read_to_string(pidfile.parent()?.join("seawall-redis.conf")).ok()?;
    let password = conf.trim().strip_prefix("requirepass ")?;
    let p = port.to_string();
    // Whether the server answers its owner (with the password).
    let serving = || {
        Command::new("redis-cli")
            .args(["-p", &p, "--no-auth-warning", "-a", password, "PING"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
    };
    if !serving() {
        return None;
    }
    let said = as_nobody(Path::new("redis-cli"), &["-p", &p, "DBSIZE"]);
    // Still serving, or the answer proves nothing: try again later.
    if !serving() {
        return None;
    }
    Some(Probed::Redis {
        port,
        uid,
        said: String::from_utf8_lossy(&said.stdout).to_string()
            + &String::from_utf8_lossy(&said.stderr),
    })
}
