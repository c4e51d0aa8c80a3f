//! forget and prune: what kept snapshots need survives; the rest is freed.

use crate::fixtures::*;

#[test]
fn forget_and_prune_keep_what_kept_snapshots_need() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 500, 8 * 1024 * 1024, 4);
    let repo_dir = work.path().join("repo");
    let repo = Repo::local(&repo_dir);
    repo.ok(&["init"]);
    let mut rng = Rng(5);
    for round in 0..4 {
        std::fs::write(
            src.join(format!("round{round}.bin")),
            rng.bytes(6 * 1024 * 1024, false),
        )
        .unwrap();
        if round > 0 {
            std::fs::remove_file(src.join(format!("round{}.bin", round - 1))).unwrap();
        }
        repo.backup(&[&src]);
    }
    let err = one_error_line(&repo.run(&["forget"]));
    assert!(err.contains("no retention rule"), "{err}");
    let dry = repo.json(&["forget", "--keep-last", "2", "--dry-run"]);
    assert_eq!(dry["forget"]["removed"].as_array().unwrap().len(), 2);
    // The four snapshots were taken within a minute of the newest.
    let dry = repo.json(&["forget", "--keep-within", "1h", "--dry-run"]);
    assert_eq!(dry["forget"]["kept"].as_array().unwrap().len(), 4);
    let out = repo.run(&["forget", "--keep-within", "a month"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--keep-within") && err.contains("30d"),
        "{err}"
    );
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 4);

    let size_before = dir_size(&repo_dir.join("data"));
    let out = repo.json(&["forget", "--keep-last", "2", "--prune"]);
    assert_eq!(out["forget"]["kept"].as_array().unwrap().len(), 2);
    assert!(out["prune"]["bytes_freed"].as_u64().unwrap() > 0, "{out}");
    let size_after = dir_size(&repo_dir.join("data"));
    assert!(
        size_after < size_before,
        "prune freed nothing: {size_before} -> {size_after}"
    );
    repo.ok(&["verify", "--read-data"]);
    let snaps = repo.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    let target = work.path().join("restored");
    repo.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));
    let older = snaps[0]["id"].as_str().unwrap().to_string();
    let t2 = work.path().join("older");
    repo.ok(&["restore", &older, "--to", t2.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(restored(&t2, &src).join("round2.bin"))
            .unwrap()
            .len(),
        6 * 1024 * 1024
    );
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            n += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    n
}

#[test]
fn prune_spares_a_pack_no_index_lists_until_it_is_older_than_any_lock() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 20, 1024 * 1024, 9);
    let repo_dir = work.path().join("repo");
    let repo = Repo::local(&repo_dir);
    repo.ok(&["init"]);
    repo.backup(&[&src]);
    // A pack that no index lists yet: what a backup still writing (whose
    // lock prune could not see) leaves until its index is written.
    let data = repo_dir.join("data");
    let some_pack = std::fs::read_dir(
        data.join(
            std::fs::read_dir(&data)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .file_name(),
        ),
    )
    .unwrap()
    .next()
    .unwrap()
    .unwrap()
    .path();
    let orphan_dir = data.join("ab");
    std::fs::create_dir_all(&orphan_dir).unwrap();
    let orphan = orphan_dir.join(format!("ab{}", "0".repeat(62)));
    std::fs::copy(&some_pack, &orphan).unwrap();

    let out = repo.json(&["prune"]);
    assert_eq!(out["unindexed_packs_deleted"], 0, "{out}");
    assert_eq!(out["unindexed_packs_kept"], 1, "{out}");
    assert!(orphan.exists());

    // Older than the lock TTL (30 minutes): a crash's leftover, freed.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    filetime::set_file_mtime(&orphan, filetime::FileTime::from_system_time(hour_ago)).unwrap();
    let out = repo.json(&["prune"]);
    assert_eq!(out["unindexed_packs_deleted"], 1, "{out}");
    assert!(!orphan.exists());
    repo.ok(&["verify", "--read-data"]);
}
