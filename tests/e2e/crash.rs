//! `kill -9` during a backup: the repository stays valid, and the next
//! backup completes and reuses the packs the killed one uploaded.

use crate::fixtures::*;
use std::time::{Duration, Instant};

fn count(dir: &std::path::Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                n += count(&p);
            } else if !p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
            {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn kill_9_during_backup_leaves_a_valid_repository_and_packs_are_reused() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Incompressible data, so that packs and index files land while the backup runs.
    let mut rng = Rng(77);
    for i in 0..24 {
        std::fs::write(
            src.join(format!("blob{i:02}.bin")),
            rng.bytes(24 * 1024 * 1024, false),
        )
        .unwrap();
    }
    let repo_dir = work.path().join("repo");
    let repo = Repo::local(&repo_dir);
    repo.ok(&["init"]);
    let mut child = repo
        .cmd(&["backup", "files", "--threads", "1", src.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&repo_dir.join("index")) == 0 {
        assert!(Instant::now() < deadline, "no index written within 120s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "backup finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        count(&repo_dir.join("snapshots")),
        0,
        "a killed backup must leave no snapshot"
    );
    let packs_before = count(&repo_dir.join("data"));
    assert!(packs_before >= 8);

    let verify = repo.ok(&["verify", "--read-data"]);
    assert!(verify.contains("no errors found"), "{verify}");

    let (_, summary) = repo.backup(&[&src]);
    let total = 24u64 * 24 * 1024 * 1024;
    let added = summary["bytes_added"].as_u64().unwrap();
    assert!(
        added < total - 8 * 16 * 1024 * 1024 + 1024 * 1024,
        "packs were not reused: added {added} of {total}"
    );
    repo.ok(&["verify", "--read-data"]);
    let target = work.path().join("restored");
    repo.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));

    // A write a crash interrupted leaves a temporary file: prune deletes it
    // once it is old, and spares a fresh one (a lock-free wal-push may be
    // writing it).
    let dir = repo_dir.join("data").join("00");
    std::fs::create_dir_all(&dir).unwrap();
    let (stale, fresh) = (dir.join(".tmp-stale"), dir.join(".tmp-fresh"));
    std::fs::write(&stale, vec![7u8; 4096]).unwrap();
    std::fs::write(&fresh, b"in flight").unwrap();
    let hour_ago = filetime::FileTime::from_unix_time(now_secs() - 3600, 0);
    filetime::set_file_mtime(&stale, hour_ago).unwrap();
    let out = repo.json(&["prune"]);
    assert!(out["temporaries_deleted"].as_u64().unwrap() >= 1, "{out}");
    assert!(!stale.exists() && fresh.exists());
    repo.ok(&["verify", "--read-data"]);
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
