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
