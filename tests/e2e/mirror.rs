//! Mirroring a region's repository into another region's bucket: a run
//! killed with -9 is finished by the next without copying anything twice,
//! a damaged replica is named (with the snapshots it hurts) and mended, and
//! the replica alone restores the data.

use crate::fixtures::{assert_same_tree, files_under, make_tree, restored, Repo, S3Kind, S3Server};
use std::time::{Duration, Instant};

#[test]
fn a_mirror_resumes_after_kill_names_what_it_lacks_and_restores_alone() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 400, 96 * 1024 * 1024, 31);
    let primary = Repo::local(&work.path().join("primary"));
    primary.ok(&["init"]);
    primary.backup(&[&src]);
    std::fs::write(src.join("later.txt"), "written after the first backup").unwrap();
    primary.backup(&[&src]);

    let server = S3Server::start(S3Kind::S3sFs);
    server.create_bucket_blocking("dr-replica");
    let replica = Repo::s3(&server, "dr-replica");
    let mirror = |args: &[&str]| {
        let mut cmd = primary.cmd(&["--json", "mirror", "--to", &replica.url]);
        cmd.args(args);
        for (k, v) in &replica.env {
            cmd.env(k, v);
        }
        cmd
    };
    let objects = server
        .dir
        .path()
        .join("data")
        .join("dr-replica")
        .join("repo");

    // Killed once its first pack has landed.
    let mut child = mirror(&["--concurrency", "1"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while files_under(&objects.join("data")).is_empty() {
        assert!(Instant::now() < deadline, "no pack reached the replica");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // The check says what is missing, and the snapshots that hurts.
    let check = mirror(&["--check"]).output().unwrap();
    assert!(!check.status.success(), "the replica cannot be whole yet");
    let behind: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let gaps = behind["mirror"]["gaps"].as_array().unwrap().len() as u64;
    let present = behind["mirror"]["present"].as_u64().unwrap();
    assert!(gaps > 0 && present > 0, "{behind}");

    // The next run copies exactly what was missing, nothing twice.
    let out = mirror(&[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let copied: u64 = run["mirror"]["copied"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(copied, gaps, "{run}");
    let again: serde_json::Value =
        serde_json::from_slice(&mirror(&[]).output().unwrap().stdout).unwrap();
    assert_eq!(again["mirror"]["copied"], serde_json::json!({}), "{again}");
    replica.ok(&["verify", "--read-data"]);

    // One pack lost in the replica: named, with the snapshots it hurts,
    // then mended by the next run.
    let pack = files_under(&objects.join("data"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .unwrap();
    std::fs::remove_file(&pack).unwrap();
    let check = mirror(&["--check"]).output().unwrap();
    assert!(!check.status.success());
    let found: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let name = pack.file_name().unwrap().to_string_lossy().to_string();
    let gaps = found["mirror"]["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{found}");
    assert!(
        gaps[0]["object"].as_str().unwrap().ends_with(&name) && gaps[0]["problem"] == "missing",
        "{found}"
    );
    let hurt = found["target_verify"]["problems"].as_array().unwrap();
    assert!(
        hurt.iter()
            .any(|p| !p["snapshots"].as_array().unwrap().is_empty()),
        "the snapshots the lost pack hurts are named: {found}"
    );
    let out = mirror(&[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    replica.ok(&["verify"]);

    // Retention in the primary reaches the replica only when asked.
    primary.ok(&["forget", "--keep-last", "1", "--prune"]);
    let out = mirror(&[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(replica.json(&["snapshots"]).as_array().unwrap().len(), 2);
    let out = mirror(&["--prune"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(replica.json(&["snapshots"]).as_array().unwrap().len(), 1);
    replica.ok(&["verify"]);

    // A password retired in the primary stops opening the replica at the
    // next run.
    let add = primary
        .cmd(&["key", "add"])
        .env("SEAWALL_NEW_PASSWORD", "temporary password")
        .output()
        .unwrap();
    assert!(add.status.success());
    assert!(mirror(&[]).output().unwrap().status.success());
    let opens = |password: &str| {
        let mut cmd = replica.cmd(&["snapshots"]);
        cmd.env("SEAWALL_PASSWORD", password);
        cmd.output().unwrap().status.success()
    };
    assert!(opens("temporary password"));
    let keys: serde_json::Value = serde_json::from_slice(
        &primary
            .cmd(&["--json", "key", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let temporary = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    primary.ok(&["key", "remove", &temporary[..8]]);
    assert!(mirror(&[]).output().unwrap().status.success());
    assert!(!opens("temporary password"));
    assert!(opens(crate::fixtures::PASSWORD));

    // The primary region is gone: the replica alone restores the data.
    std::fs::remove_dir_all(work.path().join("primary")).unwrap();
    let target = work.path().join("restored");
    replica.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn a_hostile_source_cannot_lock_the_replica_out_and_one_bad_object_stops_nothing() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 30, 8 * 1024 * 1024, 5);
    let primary_dir = work.path().join("primary");
    let primary = Repo::local(&primary_dir);
    primary.ok(&["init"]);
    primary.backup(&[&src]);
    let replica_dir = work.path().join("replica");
    let replica = Repo::local(&replica_dir);
    let mirror = || {
        primary
            .cmd(&["--json", "mirror", "--to", replica_dir.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let first = mirror();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let replica_config = std::fs::read(replica_dir.join("config")).unwrap();

    // A second backup, then the source is tampered with by someone who
    // may write its bucket but knows no password: its one key file
    // replaced by junk (named by its hash, as key files are), its config
    // altered within the parser's bounds, one of the new packs damaged.
    let packs_before = files_under(&primary_dir.join("data"));
    make_tree(&src.join("more"), 20, 4 * 1024 * 1024, 9);
    primary.backup(&[&src]);
    let new_packs: Vec<_> = files_under(&primary_dir.join("data"))
        .into_iter()
        .filter(|p| !packs_before.contains(p))
        .collect();
    assert!(!new_packs.is_empty(), "the second backup wrote no pack");
    let damaged = &new_packs[0];
    let mut bytes = std::fs::read(damaged).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(damaged, bytes).unwrap();
    for key in files_under(&primary_dir.join("keys")) {
        std::fs::remove_file(key).unwrap();
    }
    let junk = b"{\"not\": \"a key\"}".to_vec();
    let junk_id = seawall_common::Id::of_file(&junk).to_hex();
    std::fs::write(primary_dir.join("keys").join(&junk_id), &junk).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(primary_dir.join("config")).unwrap()).unwrap();
    let avg = config["chunker"]["avg"].as_u64().unwrap();
    config["chunker"]["avg"] = serde_json::json!(avg * 2);
    std::fs::write(
        primary_dir.join("config"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();

    // The run names what it skipped and fails, but copies the rest.
    let out = mirror();
    assert!(
        !out.status.success(),
        "a run that skipped objects must fail"
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let skipped = run["mirror"]["skipped"].to_string();
    let damaged_name = damaged.file_name().unwrap().to_string_lossy().to_string();
    assert!(skipped.contains(&damaged_name), "{run:#}");
    assert!(
        skipped.contains(&junk_id) && skipped.contains("config"),
        "{run:#}"
    );
    assert!(stderr.contains("were not mirrored"), "{stderr}");
    assert!(
        run["mirror"]["keys_kept"]
            .as_str()
            .unwrap_or("")
            .contains("no key was removed"),
        "{run:#}"
    );
    for good in &new_packs[1..] {
        let rel = good.strip_prefix(&primary_dir).unwrap();
        assert!(
            replica_dir.join(rel).exists(),
            "{} was not copied",
            rel.display()
        );
    }
    // The replica still opens with its password, with its own config.
    assert_eq!(
        std::fs::read(replica_dir.join("config")).unwrap(),
        replica_config
    );
    assert_eq!(replica.json(&["snapshots"]).as_array().unwrap().len(), 2);
    assert!(!replica_dir.join("keys").join(&junk_id).exists());
}
