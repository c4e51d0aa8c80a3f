//! File-level physical backups of a real PostgreSQL 15 cluster with a
//! tablespace outside its data directory: an incremental reads only what
//! changed, restores on its own (the WAL it needs inside it) with the
//! tablespace in place, and recovers to the latest archived WAL.

use crate::pg_fixture::{archiving, pg_dir, psql_at, stop_datadir, PgCluster, PgRepo};
use std::time::Duration;

fn file_level(repo: &PgRepo, pg: &PgCluster, extra: &[&str]) -> serde_json::Value {
    let dsn = pg.dsn("postgres");
    let mut args = vec![
        "backup",
        "postgres",
        "--physical",
        "--file-level",
        "--dsn",
        &dsn,
    ];
    args.extend_from_slice(extra);
    repo.json(&args)
}

fn summary(v: &serde_json::Value, field: &str) -> u64 {
    v["summary"][field].as_u64().unwrap()
}

#[test]
fn file_level_incrementals_read_what_changed_and_restore_with_their_tablespace() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = PgRepo::init(&tmp.path().join("r"));
    let pg = PgCluster::start(&tmp.path().join("pg"), &archiving(&repo));
    let side = tmp.path().join("side");
    pg_dir(&side);
    pg.sql(
        "postgres",
        &format!("CREATE TABLESPACE side LOCATION '{}'", side.display()),
    );
    pg.sql(
        "postgres",
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 300000) g",
    );
    pg.sql(
        "postgres",
        "CREATE TABLE aside (id int, v text) TABLESPACE side",
    );
    pg.sql(
        "postgres",
        "INSERT INTO aside SELECT g, 'side ' || g FROM generate_series(1, 1000) g",
    );
    pg.sql("postgres", "CREATE TABLE marker (t text)");
    pg.sql("postgres", "CHECKPOINT");
    // A file written in the second before a backup starts is read again
    // by the next one (it may change unseen within the clock's tick).
    std::thread::sleep(Duration::from_millis(1100));

    let full = file_level(&repo, &pg, &[]);
    let f = &full["facts"];
    assert_eq!(f["mode"], "physical");
    assert_eq!(f["layout"], "files");
    let oid = pg.sql(
        "postgres",
        "SELECT oid FROM pg_tablespace WHERE spcname = 'side'",
    );
    assert_eq!(
        f["tablespaces"][&oid].as_str(),
        Some(side.to_str().unwrap()),
        "{f}"
    );
    assert_eq!(summary(&full, "files_unchanged"), 0);

    // Files the full backup read more than a second after they were last
    // written are settled; what is written now changes only a few.
    std::thread::sleep(Duration::from_millis(1500));
    pg.sql("postgres", "INSERT INTO marker VALUES ('after full')");
    pg.sql("postgres", "UPDATE aside SET v = v || '!' WHERE id = 1");
    pg.sql("postgres", "CHECKPOINT");
    let incr = file_level(&repo, &pg, &[]);
    let (read, total) = (summary(&incr, "bytes_read"), summary(&incr, "bytes_total"));
    assert!(
        summary(&incr, "files_unchanged") > 500,
        "most files are taken from the full backup: {}",
        incr["summary"]
    );
    // The big table (about 22 MB) is not read again; WAL segments are.
    let big_bytes: u64 = pg
        .sql("postgres", "SELECT pg_relation_size('big')")
        .parse()
        .unwrap();
    assert!(
        read + big_bytes <= total,
        "read {read} of {total}: the unchanged table was read again"
    );

    // Later work reaches the archive only, for the point-in-time restore.
    pg.sql("postgres", "INSERT INTO marker VALUES ('archived only')");
    pg.switch_and_archive();

    let incr_id = incr["snapshot"].as_str().unwrap().to_string();
    let restores = tmp.path().join("restores");
    pg_dir(&restores);
    let alone = restores.join("alone");
    let port = crate::fixtures::free_port();
    let out = repo.ok(&[
        "restore",
        &incr_id,
        "--pg-datadir",
        alone.to_str().unwrap(),
        "--immediate",
        "--start",
        "--pg-port",
        &port.to_string(),
    ]);
    assert!(out.contains("promoted"), "{out}");
    let got = (
        psql_at(&alone, port, "SELECT string_agg(t, ',') FROM marker"),
        psql_at(
            &alone,
            port,
            "SELECT count(*) || ' ' || max(v) FILTER (WHERE id = 1) FROM aside",
        ),
        psql_at(&alone, port, "SELECT count(*) FROM big"),
        psql_at(
            &alone,
            port,
            "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'side'",
        ),
    );
    stop_datadir(&alone);
    assert_eq!(got.0, "after full");
    assert_eq!(got.1, "1000 side 1!");
    assert_eq!(got.2, "300000");
    let in_place = alone.join("pg_tblspc").join(&oid);
    assert!(
        std::fs::symlink_metadata(&in_place).unwrap().is_dir(),
        "the tablespace is restored inside the data directory, not linked to {}",
        got.3
    );

    let latest = restores.join("latest");
    let (_, port) = crate::postgres::restore_latest_started(&repo, &latest);
    let got = psql_at(
        &latest,
        port,
        "SELECT string_agg(t, ',' ORDER BY t) FROM marker",
    );
    stop_datadir(&latest);
    assert_eq!(got, "after full,archived only");

    // --delta reads every file but stores only what is new.
    let delta = file_level(&repo, &pg, &["--delta"]);
    assert_eq!(
        summary(&delta, "bytes_read"),
        summary(&delta, "bytes_total"),
        "{}",
        delta["summary"]
    );
    assert!(
        summary(&delta, "bytes_added") < big_bytes,
        "{}",
        delta["summary"]
    );

    // verify reads every pack and follows the WAL from each base backup.
    let out = repo.ok(&["verify", "--read-data"]);
    assert!(!out.contains("missing"), "{out}");
}

#[test]
fn a_file_level_backup_of_another_clusters_directory_is_refused_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = PgRepo::init(&tmp.path().join("r"));
    let a = PgCluster::start(&tmp.path().join("a"), "");
    let b = PgCluster::start(&tmp.path().join("b"), "");
    let before = repo.json(&["snapshots"]);
    let out = repo.run(&[
        "backup",
        "postgres",
        "--physical",
        "--file-level",
        "--dsn",
        &a.dsn("postgres"),
        "--data-dir",
        b.data.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("belongs to cluster") && err.contains("--data-dir"),
        "{err}"
    );
    assert_eq!(repo.json(&["snapshots"]), before);
}
