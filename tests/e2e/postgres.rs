//! The PostgreSQL source against real PostgreSQL 15 servers: logical round
//! trips compared by pg_dump, point-in-time recovery with marker rows,
//! missing WAL named, another cluster's WAL refused, checks that fail.

use crate::pg_fixture::{archiving, pg_bin, pg_dir, stop_datadir, PgCluster, PgRepo};
use std::path::Path;
use std::time::Duration;

/// A database with schemas, foreign keys, sequences, large objects and pgbench data.
fn populate(pg: &PgCluster, db: &str) {
    pg.sql("postgres", &format!("CREATE DATABASE {db}"));
    let dsn = pg.dsn(db);
    pg.tool("pgbench", &["-i", "-s", "1", "-q", "--foreign-keys", &dsn]);
    pg.sql(
        db,
        "CREATE SCHEMA fleet;
         CREATE SCHEMA audit;
         CREATE TABLE fleet.agents (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE, region text, seen timestamptz DEFAULT now());
         CREATE TABLE fleet.tasks (id bigserial PRIMARY KEY, agent_id bigint REFERENCES fleet.agents(id), payload jsonb, state text CHECK (state IN ('pending','done')));
         CREATE SEQUENCE audit.event_seq START 1000 INCREMENT 7;
         CREATE TABLE audit.events (id bigint DEFAULT nextval('audit.event_seq') PRIMARY KEY, task_id bigint REFERENCES fleet.tasks(id) ON DELETE CASCADE, note text, blob oid);
         INSERT INTO fleet.agents (name, region) SELECT 'agent-' || g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END FROM generate_series(1, 200) g;
         INSERT INTO fleet.tasks (agent_id, payload, state) SELECT 1 + g % 200, jsonb_build_object('n', g, 'h', md5(g::text)), CASE WHEN g % 3 = 0 THEN 'done' ELSE 'pending' END FROM generate_series(1, 5000) g;
         INSERT INTO audit.events (task_id, note, blob) SELECT g, repeat('note ', g % 20), lo_from_bytea(0, convert_to(repeat(md5(g::text), 100), 'UTF8')) FROM generate_series(1, 50) g;
         CREATE VIEW fleet.pending AS SELECT t.* FROM fleet.tasks t WHERE state = 'pending';
         CREATE INDEX ON fleet.tasks (agent_id);",
    );
}

fn assert_same_dump(a: &str, b: &str) {
    if a != b {
        let diff: Vec<String> = a
            .lines()
            .zip(b.lines())
            .filter(|(x, y)| x != y)
            .take(5)
            .map(|(x, y)| format!("- {x}\n+ {y}"))
            .collect();
        panic!(
            "pg_dump of the restored database differs from the source's:\n{}",
            diff.join("\n")
        );
    }
}

#[test]
fn logical_round_trip_gives_the_same_pg_dump() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = PgCluster::start(&tmp.path().join("pg"), "");
    populate(&pg, "app");
    let repo = PgRepo::init(&tmp.path().join("r"));
    let v = repo.json(&["backup", "postgres", "--dsn", &pg.dsn("postgres")]);
    let names: Vec<&str> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"globals") && names.contains(&"db/app"),
        "{names:?}"
    );
    assert_eq!(v["facts"]["mode"], "logical");

    let out = repo.ok(&[
        "restore",
        "latest",
        "--pg-target",
        &pg.dsn("app_copy"),
        "--database",
        "app",
    ]);
    assert!(out.contains("restored into app_copy (created)"), "{out}");
    let a = pg.dump("app");
    assert!(
        a.contains("lo_create") || a.contains("LARGE OBJECT"),
        "no large objects dumped"
    );
    assert_same_dump(&a, &pg.dump("app_copy"));
    assert_eq!(
        pg.sql("app_copy", "SELECT last_value FROM audit.event_seq"),
        pg.sql("app", "SELECT last_value FROM audit.event_seq")
    );

    // Large tables dumped apart, in parallel, in one exported snapshot: the same database back.
    let split = repo.json(&[
        "backup",
        "postgres",
        "--dsn",
        &pg.dsn("postgres"),
        "--database",
        "app",
        "--no-globals",
        "--jobs",
        "3",
        "--split-min-mib",
        "1",
    ]);
    let names: Vec<&str> = split["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"db/app/table/public.pgbench_accounts"),
        "{names:?}"
    );
    let id = split["snapshot"].as_str().unwrap();
    repo.ok(&[
        "restore",
        id,
        "--pg-target",
        &pg.dsn("app_split"),
        "--jobs",
        "3",
    ]);
    assert_same_dump(&a, &pg.dump("app_split"));

    // A second restore into the now non-empty database is refused, and says how.
    let again = repo.run(&[
        "restore",
        "latest",
        "--pg-target",
        &pg.dsn("app_copy"),
        "--database",
        "app",
    ]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("is not empty") && err.contains("--pg-clean"),
        "{err}"
    );

    // A second backup of unchanged data adds almost nothing.
    let v2 = repo.json(&[
        "backup",
        "postgres",
        "--dsn",
        &pg.dsn("postgres"),
        "--database",
        "app",
    ]);
    let total = v2["summary"]["bytes_total"].as_u64().unwrap();
    let added = v2["summary"]["bytes_added"].as_u64().unwrap();
    assert!(
        added * 10 < total,
        "unchanged dump added {added} of {total} bytes"
    );
}

#[test]
fn checks_pass_on_good_data_and_name_what_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = PgCluster::start(&tmp.path().join("pg"), "");
    populate(&pg, "app");
    let repo = PgRepo::init(&tmp.path().join("r"));
    let checks = tmp.path().join("checks.toml");
    std::fs::write(
        &checks,
        r#"
not_empty = ["fleet.agents", "fleet.tasks"]
[min_rows]
"pgbench_accounts" = 100000
[[zero_rows]]
name = "tasks whose agent is gone"
sql = "SELECT id FROM fleet.tasks WHERE agent_id NOT IN (SELECT id FROM fleet.agents)"
"#,
    )
    .unwrap();
    std::fs::set_permissions(&checks, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let checks_s = checks.display().to_string();
    repo.ok(&[
        "backup",
        "postgres",
        "--dsn",
        &pg.dsn("postgres"),
        "--database",
        "app",
    ]);
    let out = repo.ok(&[
        "restore",
        "latest",
        "--pg-target",
        &pg.dsn("restored"),
        "--check",
        &checks_s,
    ]);
    assert!(
        out.contains("ok   tasks whose agent is gone: 0 rows"),
        "{out}"
    );
    assert!(out.contains("pg_amcheck"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");

    // Orphan a task behind the foreign key's back: the check must catch it.
    pg.sql(
        "restored",
        "ALTER TABLE fleet.tasks DROP CONSTRAINT tasks_agent_id_fkey; DELETE FROM fleet.agents WHERE id = 5;",
    );
    let out = repo.run(&[
        "check",
        "postgres",
        "--dsn",
        &pg.dsn("restored"),
        "--checks",
        &checks_s,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL tasks whose agent is gone: 25 rows"),
        "{text}"
    );
    let json = repo.json(&[
        "check",
        "postgres",
        "--dsn",
        &pg.dsn("app"),
        "--checks",
        &checks_s,
        "--no-amcheck",
    ]);
    assert_eq!(json["ok"], true);
    assert!(json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["table"] == "fleet.tasks" && t["rows"] == 5000));
}

/// Restores the newest backup with all archived WAL into `datadir` and
/// starts it on a free port; the command's output and the port.
pub(crate) fn restore_latest_started(repo: &PgRepo, datadir: &Path) -> (String, u16) {
    let port = crate::fixtures::free_port();
    let out = repo.ok(&[
        "restore",
        "latest",
        "--pg-datadir",
        &datadir.display().to_string(),
        "--latest",
        "--start",
        "--pg-port",
        &port.to_string(),
    ]);
    (out, port)
}

/// The restored copy's marker rows, in order, comma-separated.
pub(crate) fn markers(data: &Path, port: u16) -> String {
    crate::pg_fixture::psql_at(
        data,
        port,
        "SELECT string_agg(t, ',' ORDER BY t) FROM marker",
    )
}

#[test]
fn point_in_time_restore_between_two_markers_and_to_latest() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = PgRepo::init(&tmp.path().join("r"));
    let pg = PgCluster::start(&tmp.path().join("pg"), &archiving(&repo));
    pg.sql(
        "postgres",
        "CREATE TABLE marker (t text, at timestamptz DEFAULT clock_timestamp())",
    );
    let v = repo.json(&[
        "backup",
        "postgres",
        "--physical",
        "--dsn",
        &pg.dsn("postgres"),
    ]);
    assert_eq!(v["facts"]["mode"], "physical");
    assert!(v["facts"]["start_lsn"].as_str().unwrap().contains('/'));

    pg.sql("postgres", "INSERT INTO marker (t) VALUES ('first')");
    std::thread::sleep(Duration::from_millis(1500));
    pg.sql("postgres", "INSERT INTO marker (t) VALUES ('second')");
    pg.switch_and_archive();
    let between = pg.sql(
        "postgres",
        "SELECT to_char(((SELECT at FROM marker WHERE t = 'first') + interval '700 ms') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );

    let restores = tmp.path().join("restores");
    pg_dir(&restores);
    let at_time = restores.join("t");
    let port = crate::fixtures::free_port();
    let out = repo.ok(&[
        "restore",
        "latest",
        "--pg-datadir",
        &at_time.display().to_string(),
        "--time",
        &between,
        "--start",
        "--pg-port",
        &port.to_string(),
    ]);
    assert!(out.contains("promoted"), "{out}");
    assert!(out.contains("files verified against its manifest"), "{out}");
    let got = markers(&at_time, port);
    stop_datadir(&at_time);
    assert_eq!(
        got, "first",
        "restore to {between} should hold only the first marker"
    );

    let latest = restores.join("l");
    let (_, port) = restore_latest_started(&repo, &latest);
    let got = markers(&latest, port);
    stop_datadir(&latest);
    assert_eq!(got, "first,second");
}

#[test]
fn a_missing_wal_segment_fails_the_restore_and_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = PgRepo::init(&tmp.path().join("r"));
    let pg = PgCluster::start(&tmp.path().join("pg"), &archiving(&repo));
    pg.sql("postgres", "CREATE TABLE t (x int)");
    repo.ok(&[
        "backup",
        "postgres",
        "--physical",
        "--dsn",
        &pg.dsn("postgres"),
    ]);
    let mut segments = vec![];
    for i in 0..3 {
        pg.sql("postgres", &format!("INSERT INTO t VALUES ({i})"));
        segments.push(pg.switch_and_archive());
    }
    let victim = &segments[1];
    let path = repo.dir.join("wal").join(&victim[..8]).join(victim);
    std::fs::remove_file(&path).unwrap();

    let verify = repo.run(&["verify"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        !verify.status.success() && text.contains(victim.as_str()),
        "verify must name {victim}: {text}"
    );

    let restores = tmp.path().join("restores");
    pg_dir(&restores);
    let out = repo.run(&[
        "restore",
        "latest",
        "--pg-datadir",
        &restores.join("d").display().to_string(),
        "--latest",
    ]);
    let err = crate::fixtures::one_error_line(&out);
    assert!(
        err.contains(victim.as_str()) && err.contains("missing"),
        "{err}"
    );
    assert!(
        !restores.join("d").exists(),
        "a refused restore must not leave files"
    );
}

#[test]
fn wal_from_another_cluster_is_refused_and_pushes_are_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = PgRepo::init(&tmp.path().join("r"));
    let a = PgCluster::start(&tmp.path().join("a"), &archiving(&repo));
    let seg = a.switch_and_archive();
    let wal_a = a.data.join("pg_wal");
    // Archived segments may be recycled; the archive holds the truth.
    let copy = tmp.path().join("copy");
    pg_dir(&copy);
    let fetched = copy.join(&seg);
    repo.ok(&["wal-fetch", &seg, &fetched.display().to_string()]);
    let first = std::fs::read(&fetched).unwrap();

    // The same content again: accepted, nothing changes.
    repo.ok(&["wal-push", &fetched.display().to_string()]);
    // Other content under the same name: refused.
    let mut altered = first.clone();
    altered[first.len() - 1] ^= 0xff;
    std::fs::write(&fetched, &altered).unwrap();
    let out = repo.run(&["wal-push", &fetched.display().to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("different content"),
        "{err}"
    );

    // A second cluster's segment is refused by system identifier.
    let b = PgCluster::start(&tmp.path().join("b"), "");
    let seg_b = b.sql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    b.sql("postgres", "SELECT pg_switch_wal()");
    let out = repo.run(&[
        "wal-push",
        &b.data.join("pg_wal").join(&seg_b).display().to_string(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cluster"), "{err}");
    assert!(err.contains("PostgreSQL keeps it"), "{err}");
    let _ = wal_a;

    // The archive still serves the original content.
    std::fs::remove_file(&fetched).unwrap();
    repo.ok(&["wal-fetch", &seg, &fetched.display().to_string()]);
    assert!(std::fs::read(&fetched).unwrap() == first);
    // A file the archive lacks: exit 1, the normal end of recovery.
    let out = repo.run(&[
        "wal-fetch",
        "0000000100000000000000FE",
        &copy.join("x").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn wal_fetch_from_a_dead_repository_stops_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = PgRepo::init(&tmp.path().join("r"));
    std::fs::rename(&repo.dir, tmp.path().join("r").join("moved")).unwrap();
    let out = repo.run(&[
        "wal-fetch",
        "000000010000000000000003",
        &tmp.path().join("x").display().to_string(),
    ]);
    // Above 125: PostgreSQL aborts recovery instead of promoting early.
    assert_eq!(
        out.status.code(),
        Some(200),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unreachable_repository_leaves_wal_with_postgres_until_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = PgRepo::init(&tmp.path().join("r"));
    let pg = PgCluster::start(&tmp.path().join("pg"), &archiving(&repo));
    pg.sql("postgres", "CREATE TABLE t (x int)");
    pg.switch_and_archive();

    let hidden = tmp.path().join("r").join("hidden");
    std::fs::rename(&repo.dir, &hidden).unwrap();
    pg.sql("postgres", "INSERT INTO t VALUES (1)");
    let seg = pg.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pg.sql("postgres", "SELECT failed_count FROM pg_stat_archiver") == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the archiver never failed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let last = pg.sql(
        "postgres",
        "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
    );
    assert!(
        last < seg,
        "{seg} reported archived while the repository was away"
    );
    assert!(
        pg.data
            .join("pg_wal/archive_status")
            .join(format!("{seg}.ready"))
            .exists(),
        "PostgreSQL must keep {seg} ready for archiving"
    );
    let status: Vec<_> = walk_files(&repo.spool)
        .into_iter()
        .filter(|p| p.ends_with("last-push.json"))
        .collect();
    let text = std::fs::read_to_string(&status[0]).unwrap();
    assert!(text.contains("\"ok\":false"), "{text}");
    let log = std::fs::read_to_string(pg.root.join("server.log")).unwrap();
    assert!(
        log.contains("PostgreSQL keeps it and will retry"),
        "the failure must reach the server log"
    );

    std::fs::rename(&hidden, &repo.dir).unwrap();
    pg.sql("postgres", "SELECT pg_reload_conf()");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let last = pg.sql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        if last >= seg {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{seg} not archived after the repository came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(repo.dir.join("wal").join(&seg[..8]).join(&seg).exists());
}

#[test]
fn prune_keeps_the_wal_kept_base_backups_need() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = PgRepo::init(&tmp.path().join("r"));
    let pg = PgCluster::start(&tmp.path().join("pg"), &archiving(&repo));
    pg.sql("postgres", "CREATE TABLE t (x int)");
    let mut old = vec![];
    for i in 0..2 {
        pg.sql("postgres", &format!("INSERT INTO t VALUES ({i})"));
        old.push(pg.switch_and_archive());
    }
    let first = repo.json(&[
        "backup",
        "postgres",
        "--physical",
        "--dsn",
        &pg.dsn("postgres"),
    ]);
    pg.switch_and_archive();
    let second = repo.json(&[
        "backup",
        "postgres",
        "--physical",
        "--dsn",
        &pg.dsn("postgres"),
    ]);
    pg.sql("postgres", "INSERT INTO t VALUES (9)");
    pg.switch_and_archive();
    let wal_of = |name: &str| repo.dir.join("wal").join(&name[..8]).join(name);

    // With both base backups kept, only WAL older than the first goes.
    repo.ok(&["prune"]);
    let first_start = first["facts"]["wal_start"].as_str().unwrap();
    assert!(
        wal_of(first_start).exists(),
        "WAL the first base backup needs was pruned"
    );
    assert!(
        !wal_of(&old[0]).exists(),
        "WAL before every base backup should be pruned"
    );

    // Forget the first: WAL it alone needed goes, the second's stays and verifies.
    repo.ok(&["forget", "--keep-last", "1", "--prune"]);
    let second_start = second["facts"]["wal_start"].as_str().unwrap();
    assert!(
        wal_of(second_start).exists(),
        "WAL the kept base backup needs was pruned"
    );
    let v = repo.json(&["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    let restored = tmp.path().join("restored");
    pg_dir(&restored);
    let port = crate::fixtures::free_port();
    repo.ok(&[
        "restore",
        "latest",
        "--pg-datadir",
        &restored.join("d").display().to_string(),
        "--latest",
        "--start",
        "--pg-port",
        &port.to_string(),
    ]);
    let got = std::process::Command::new(pg_bin().join("psql"))
        .args(["-X", "-A", "-t", "-d"])
        .arg(format!(
            "host={} port={port} user=postgres dbname=postgres",
            restored.join("d").display()
        ))
        .args(["-c", "SELECT string_agg(x::text, ',' ORDER BY x) FROM t"])
        .output()
        .unwrap();
    stop_datadir(&restored.join("d"));
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "0,1,9");
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn streamed_wal_recovers_a_commit_made_seconds_before_the_loss() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let repo = PgRepo::init(&tmp.path().join("r"));
    let mut pg = PgCluster::start(&tmp.path().join("pg"), "");
    pg.sql("postgres", "CREATE TABLE marker (t text)");
    let staging = tmp.path().join("staging");
    pg_dir(&staging);
    let dsn = pg.dsn("postgres");
    let staging_s = staging.join("wal").display().to_string();
    let mut stream = repo
        .cmd(&[
            "wal-stream",
            "--dsn",
            &dsn,
            "--dir",
            &staging_s,
            "--partial-every",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pg.sql(
        "postgres",
        "SELECT count(*) FROM pg_replication_slots WHERE active",
    ) != "1"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "wal-stream never connected"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    repo.ok(&["backup", "postgres", "--physical", "--dsn", &dsn]);
    pg.sql(
        "postgres",
        "INSERT INTO marker VALUES ('seconds before the loss')",
    );
    // Lost only once the repository holds the commit: the partial segment
    // wal-stream archives every second carries the row's bytes.
    let segment = pg.sql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    let fetched = staging.join("fetched");
    let fetched_s = fetched.display().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let _ = std::fs::remove_file(&fetched);
        let _ = repo
            .cmd(&["wal-fetch", &segment, &fetched_s])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let wal = std::fs::read(&fetched).unwrap_or_default();
        if wal
            .windows(b"seconds before the loss".len())
            .any(|w| w == b"seconds before the loss")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the streamed WAL of the commit never reached the repository"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The source and its host are lost at once: no switch, no graceful stop.
    pg.stop();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", stream.id())])
        .status();
    let _ = stream.wait();

    let restores = tmp.path().join("restores");
    pg_dir(&restores);
    let port = crate::fixtures::free_port();
    repo.ok(&[
        "restore",
        "latest",
        "--pg-datadir",
        &restores.join("d").display().to_string(),
        "--latest",
        "--start",
        "--pg-port",
        &port.to_string(),
    ]);
    let got = markers(&restores.join("d"), port);
    stop_datadir(&restores.join("d"));
    assert_eq!(got, "seconds before the loss");
}

#[test]
fn recovery_follows_a_timeline_switch_in_the_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = PgRepo::init(&tmp.path().join("r"));
    let mut pg = PgCluster::start(&tmp.path().join("pg"), &archiving(&repo));
    pg.sql("postgres", "CREATE TABLE marker (t text)");
    repo.ok(&[
        "backup",
        "postgres",
        "--physical",
        "--dsn",
        &pg.dsn("postgres"),
    ]);
    pg.sql("postgres", "INSERT INTO marker VALUES ('a on timeline 1')");
    pg.switch_and_archive();
    pg.stop();

    // A restored copy that becomes the primary and keeps archiving: timeline 2.
    let restores = tmp.path().join("restores");
    pg_dir(&restores);
    let promoted = restores.join("p");
    let port = crate::fixtures::free_port();
    repo.ok(&[
        "restore",
        "latest",
        "--pg-datadir",
        &promoted.display().to_string(),
        "--latest",
        "--start",
        "--pg-port",
        &port.to_string(),
        "--pg-keep-archiving",
    ]);
    let dsn = format!(
        "host={} port={port} user=postgres dbname=postgres",
        promoted.display()
    );
    let psql = |sql: &str| {
        let out = std::process::Command::new(pg_bin().join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &dsn,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(psql("SELECT pg_walfile_name(pg_current_wal_lsn())").starts_with("00000002"));
    psql("INSERT INTO marker VALUES ('b on timeline 2')");
    let seg = psql("SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < seg {
        assert!(
            std::time::Instant::now() < deadline,
            "timeline 2 segment {seg} not archived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_datadir(&promoted);
    assert!(repo.dir.join("wal/00000002/00000002.history").exists());

    // From the same base backup, the latest state is on timeline 2.
    let again = restores.join("again");
    let (out, port) = restore_latest_started(&repo, &again);
    assert!(out.contains("timeline 2"), "{out}");
    let got = markers(&again, port);
    stop_datadir(&again);
    assert_eq!(got, "a on timeline 1,b on timeline 2");
}

#[test]
fn no_postgresql_program_sees_the_password_on_its_command_line() {
    const SECRET: &str = "Pa55-word-in-the-dsn";
    let tmp = tempfile::tempdir().unwrap();
    let pg = PgCluster::start(&tmp.path().join("pg"), "");
    populate(&pg, "app");
    let repo = PgRepo::init(&tmp.path().join("r"));
    // Each PostgreSQL program through a wrapper that records its argv.
    let wrap = tmp.path().join("wrap");
    pg_dir(&wrap);
    let log = wrap.join("argv.log");
    for program in [
        "pg_dump",
        "pg_dumpall",
        "pg_basebackup",
        "psql",
        "pg_restore",
    ] {
        let script = wrap.join(program);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$0 $*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                pg_bin().join(program).display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    // The DSN, password included, reaches seawall through the environment
    // (as an agent's comes through its configuration), not its argv.
    let dsn = format!("{} password={SECRET}", pg.dsn("postgres"));
    for extra in [&[][..], &["--physical"][..]] {
        let mut cmd = repo.cmd(&[&["backup", "postgres"][..], extra].concat());
        cmd.env("SEAWALL_PG_BIN", &wrap).env("SEAWALL_PG_DSN", &dsn);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let argv = std::fs::read_to_string(&log).unwrap();
    for program in ["pg_dump ", "pg_dumpall ", "pg_basebackup "] {
        assert!(argv.contains(program), "{program} did not run: {argv}");
    }
    assert!(
        !argv.contains(SECRET),
        "a password on a command line:\n{argv}"
    );
}

#[test]
fn seawalls_own_connection_follows_sslmode_as_libpq_does() {
    let tmp = tempfile::tempdir().unwrap();
    // A server certificate for localhost from a private CA, and another CA
    // that did not sign it.
    let pki = crate::fleet_fixture::Pki::new(&tmp.path().join("pki"));
    pki.certs(&["coordinator", "--name", "pg", "--host", "localhost"]);
    let other = crate::fleet_fixture::Pki::new(&tmp.path().join("other"));
    let tls = tmp.path().join("pgtls");
    crate::pg_fixture::pg_dir(&tls);
    for (from, to, mode) in [
        ("pg.pem", "server.crt", 0o644),
        ("pg.key", "server.key", 0o600),
        ("ca.pem", "ca.pem", 0o644),
    ] {
        let path = tls.join(to);
        std::fs::copy(pki.dir.join(from), &path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
        crate::pg_fixture::pg_own(&path);
    }
    std::fs::copy(other.dir.join("ca.pem"), tls.join("other-ca.pem")).unwrap();
    let pg = PgCluster::start(
        &tmp.path().join("pg"),
        &format!(
            "listen_addresses = '127.0.0.1'\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            tls.join("server.crt").display(),
            tls.join("server.key").display()
        ),
    );
    // Over TCP, only TLS connections are let in.
    std::fs::write(
        pg.data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    let reload = crate::pg_fixture::as_pg(&pg_bin().join("pg_ctl"))
        .arg("-D")
        .arg(&pg.data)
        .arg("reload")
        .status()
        .unwrap();
    assert!(reload.success());
    // The postmaster reads pg_hba.conf on its SIGHUP: wait until a plain
    // TCP connection is turned away.
    let plain = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        pg.port
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::process::Command::new(pg_bin().join("psql"))
        .args(["-XAtc", "SELECT 1", &plain])
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "pg_hba.conf was not reloaded"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let repo = PgRepo::init(&tmp.path().join("r"));
    let tcp = format!(
        "host=localhost port={} user=postgres dbname=postgres",
        pg.port
    );

    let verified = format!(
        "{tcp} sslmode=verify-full sslrootcert={}",
        tls.join("ca.pem").display()
    );
    let v = repo.json(&["backup", "postgres", "--dsn", &verified]);
    assert_eq!(v["facts"]["mode"], "logical", "{v}");
    // The URL form, with TLS parameters in its query.
    let url = format!(
        "postgresql://postgres@localhost:{}/postgres?sslmode=verify-ca&sslrootcert={}",
        pg.port,
        tls.join("ca.pem").display()
    );
    let v = repo.json(&[
        "backup",
        "postgres",
        "--dsn",
        &url,
        "--database",
        "postgres",
    ]);
    assert_eq!(v["facts"]["mode"], "logical", "{v}");

    for (dsn, expect) in [
        (format!("{tcp} sslmode=disable"), "sslmode=disable"),
        (
            format!(
                "{tcp} sslmode=verify-full sslrootcert={}",
                tls.join("other-ca.pem").display()
            ),
            "sslrootcert",
        ),
        (format!("{tcp} sslmode=verify-full"), "sslrootcert"),
    ] {
        let out = repo.run(&["backup", "postgres", "--dsn", &dsn]);
        let err = crate::fixtures::one_error_line(&out);
        assert!(err.contains(expect), "{dsn}: {err}");
    }
}

#[test]
fn a_password_can_come_from_pgpassword_or_a_password_file() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = PgCluster::start(&tmp.path().join("pg"), "listen_addresses = '127.0.0.1'\n");
    pg.require_password("from-the-environment");
    let repo = PgRepo::init(&tmp.path().join("r"));
    let dsn = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        pg.port
    );
    let backup = |env: &[(&str, &std::ffi::OsStr)]| {
        let mut cmd = repo.cmd(&[
            "backup",
            "postgres",
            "--dsn",
            &dsn,
            "--database",
            "postgres",
        ]);
        cmd.env_remove("PGPASSWORD").env_remove("PGPASSFILE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    // No password anywhere: the server's refusal, named.
    let err = crate::fixtures::one_error_line(&backup(&[]));
    assert!(err.contains("password"), "{err}");
    // From the environment, for Seawall's own connection and pg_dump alike.
    let out = backup(&[("PGPASSWORD", "from-the-environment".as_ref())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // From a password file readable by its owner only.
    let passfile = tmp.path().join("r").join("pgpass");
    std::fs::write(
        &passfile,
        format!("127.0.0.1:{}:*:postgres:from-the-environment\n", pg.port),
    )
    .unwrap();
    std::fs::set_permissions(
        &passfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    crate::pg_fixture::pg_own(&passfile);
    let out = backup(&[("PGPASSFILE", passfile.as_os_str())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_other_regions_replica_alone_restores_to_a_point_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = PgRepo::init(&tmp.path().join("r"));
    let pg = PgCluster::start(&tmp.path().join("pg"), &archiving(&repo));
    pg.sql("postgres", "CREATE TABLE marker (t text)");
    repo.ok(&[
        "backup",
        "postgres",
        "--physical",
        "--dsn",
        &pg.dsn("postgres"),
    ]);
    pg.sql("postgres", "INSERT INTO marker (t) VALUES ('first')");
    pg.sql("postgres", "INSERT INTO marker (t) VALUES ('second')");
    pg.switch_and_archive();

    // The other region's replica, filled by mirror; the primary's
    // repository is then lost.
    let elsewhere = tmp.path().join("other-region");
    pg_dir(&elsewhere);
    let replica = PgRepo {
        dir: elsewhere.join("repo"),
        password_file: repo.password_file.clone(),
        spool: elsewhere.join("spool"),
    };
    repo.ok(&["mirror", "--to", &replica.dir.display().to_string()]);
    std::fs::rename(&repo.dir, tmp.path().join("r").join("lost")).unwrap();

    let restores = tmp.path().join("restores");
    pg_dir(&restores);
    let latest = restores.join("l");
    let (out, port) = restore_latest_started(&replica, &latest);
    assert!(out.contains("promoted"), "{out}");
    let got = markers(&latest, port);
    stop_datadir(&latest);
    assert_eq!(got, "first,second");
}
