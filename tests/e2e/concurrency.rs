//! Several processes on one repository: two backups at once both succeed;
//! a prune started beside a backup never deletes what the backup needs.

use crate::fixtures::*;

#[test]
fn two_backups_at_once_both_succeed() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    make_tree(&a, 1_500, 20 * 1024 * 1024, 1);
    make_tree(&b, 1_500, 20 * 1024 * 1024, 2);
    let repo = Repo::local(&work.path().join("repo"));
    repo.ok(&["init"]);
    let ca = repo
        .cmd(&["backup", "files", a.to_str().unwrap()])
        .spawn()
        .unwrap();
    let cb = repo
        .cmd(&["backup", "files", b.to_str().unwrap()])
        .spawn()
        .unwrap();
    let (ra, rb) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    assert!(ra.status.success() && rb.status.success());
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 2);
    repo.ok(&["verify", "--read-data"]);
    let target = work.path().join("restored");
    let snaps = repo.json(&["snapshots"]);
    for (n, src) in [&a, &b].into_iter().enumerate() {
        // Either may have started first: find each one's snapshot by its path.
        let snap = snaps
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["paths"][0].as_str() == src.to_str())
            .unwrap();
        let id = snap["id"].as_str().unwrap().to_string();
        let t = target.join(format!("{n}"));
        repo.ok(&["restore", &id, "--to", t.to_str().unwrap()]);
        assert_same_tree(src, &restored(&t, src));
    }
}

#[test]
fn prune_beside_a_backup_deletes_nothing_the_backup_needs() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 3_000, 60 * 1024 * 1024, 9);
    let repo = Repo::local(&work.path().join("repo"));
    repo.ok(&["init"]);
    let mut backup = repo
        .cmd(&["backup", "files", src.to_str().unwrap()])
        .spawn()
        .unwrap();
    // Start prune while the backup holds its lock; without waiting it must refuse.
    let mut refused = false;
    for _ in 0..200 {
        let out = repo.run(&["--lock-wait", "0", "prune"]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("locked"), "{err}");
            refused = true;
            break;
        }
        if backup.try_wait().unwrap().is_some() {
            break;
        }
    }
    assert!(backup.wait().unwrap().success());
    assert!(refused, "prune never met the backup's lock");
    // A prune that waits for the lock runs after the backup and keeps everything it needs.
    repo.ok(&["prune"]);
    repo.ok(&["verify", "--read-data"]);
    let target = work.path().join("restored");
    repo.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));
}
