//! The files path end to end: backup and restore of a real tree on a local
//! repository and on S3, incremental backups, excludes, includes, and files
//! that change while they are read.

use crate::fixtures::*;
use std::path::Path;

fn round_trip(repo: &Repo, files: usize) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, files, 3 * 1024 * 1024, 11);
    repo.ok(&["init"]);
    let (id, summary) = repo.backup(&[&src]);
    let extra = tree_extra_files() as usize;
    assert_eq!(
        summary["files_new"].as_u64().unwrap() as usize,
        files + extra
    );
    let target = work.path().join("restored");
    repo.ok(&["restore", &id[..8], "--to", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));
    let verify = repo.ok(&["verify", "--read-data"]);
    assert!(verify.contains("no errors found"), "{verify}");
}

#[test]
fn local_round_trip_of_tens_of_thousands_of_files() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(&Repo::local(&dir.path().join("repo")), 20_000);
}

#[test]
fn s3_round_trip() {
    let server = S3Server::start(S3Kind::S3sFs);
    server.create_bucket_blocking("files");
    round_trip(&Repo::s3(&server, "files"), 20_000);
}

#[test]
fn second_backup_after_one_percent_change_adds_little_and_skips_unchanged_files() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 2_000, 120 * 1024 * 1024, 3);
    let repo = Repo::local(&work.path().join("repo"));
    repo.ok(&["init"]);
    let (first, s1) = repo.backup(&[&src]);
    let first_added = s1["bytes_added"].as_u64().unwrap();

    // Change 1% of ~126 MiB: 20 small files rewritten, 1 MiB rewritten inside the large file.
    let mut rng = Rng(99);
    for i in (0..2_000).step_by(100) {
        let p = src.join(format!(
            "dir{:03}/sub{}/file{i:05}.txt",
            i / 200,
            (i / 50) % 4
        ));
        std::fs::write(&p, rng.bytes(3000, true)).unwrap();
    }
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(src.join("large.bin"))
            .unwrap();
        f.write_all_at(&rng.bytes(1024 * 1024, true), 50 * 1024 * 1024)
            .unwrap();
    }
    let (second, s2) = repo.backup(&[&src]);
    assert_ne!(first, second);
    let added = s2["bytes_added"].as_u64().unwrap();
    assert!(
        added * 100 <= first_added * 3,
        "second backup added {added} bytes, more than 3% of the first ({first_added})"
    );
    assert_eq!(s2["files_changed"].as_u64().unwrap(), 21, "{s2}");
    assert_eq!(
        s2["files_unchanged"].as_u64().unwrap(),
        2_000 + tree_extra_files() - 21,
        "{s2}"
    );
    // Unchanged files are not read: only the changed ones count as read.
    let read = s2["bytes_read"].as_u64().unwrap();
    assert!(read < 120 * 1024 * 1024 + 21 * 6000, "read {read} bytes");
    let snaps = repo.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    assert_eq!(snaps[1]["parent"].as_str().unwrap(), first);
    assert_eq!(snaps[1]["backup_type"], "incremental");

    let target = work.path().join("restored");
    repo.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn excludes_and_includes() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 300, 0, 5);
    std::fs::write(src.join("scratch.tmp"), b"junk").unwrap();
    let repo = Repo::local(&work.path().join("repo"));
    repo.ok(&["init"]);
    let excluded_dir = src.join("dir001");
    repo.ok(&[
        "backup",
        "files",
        src.to_str().unwrap(),
        "--exclude",
        "*.tmp",
        "--exclude",
        excluded_dir.to_str().unwrap(),
        "--tag",
        "nightly",
    ]);
    let snaps = repo.json(&["snapshots"]);
    assert_eq!(snaps[0]["tags"][0], "nightly");
    let target = work.path().join("restored");
    repo.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
    let root = restored(&target, &src);
    assert!(!root.join("scratch.tmp").exists());
    assert!(!root.join("dir001").exists());
    assert!(root.join("dir000/sub0/file00000.txt").exists());

    let only = work.path().join("only");
    let include = src.join("private");
    repo.ok(&[
        "restore",
        "latest",
        "--to",
        only.to_str().unwrap(),
        "--include",
        include.to_str().unwrap(),
    ]);
    let root = restored(&only, &src);
    assert_eq!(
        std::fs::read(root.join("private/secret")).unwrap(),
        b"s3cr3t"
    );
    assert!(!root.join("dir000").exists());
}

#[test]
fn a_file_that_keeps_changing_is_reported_not_stored_silently() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let busy = src.join("busy.log");
    std::fs::write(&busy, Rng(1).bytes(64 * 1024 * 1024, false)).unwrap();
    let repo = Repo::local(&work.path().join("repo"));
    repo.ok(&["init"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let busy = busy.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&busy)
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"x").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let out = repo.run(&["backup", "files", src.to_str().unwrap()]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "a torn file must give the incomplete exit status"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("busy.log changed while it was read"),
        "{stderr}"
    );
    let snaps = repo.json(&["snapshots"]);
    let warnings = &snaps[0]["summary"]["warnings"];
    assert!(
        warnings[0].as_str().unwrap().contains("busy.log"),
        "{warnings}"
    );
}

#[test]
fn demo_runs_on_a_bare_machine() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .args(["demo", "--size-mib", "16", "--dir"])
        .arg(dir.path().join("demo"))
        .env_remove("SEAWALL_PASSWORD")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("identical"), "{stdout}");
    assert!(Path::new(&dir.path().join("demo/repo/config")).exists());
    // The fleet part: both regions backed up on schedule, shown to the operator.
    assert!(stdout.contains("2 agents connected"), "{stdout}");
    for region in ["eu-west-1", "us-east-1"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(region) && l.contains("app-data")),
            "no backup shown for {region}: {stdout}"
        );
    }
}

#[test]
fn s3_credentials_from_flags_and_a_secret_file() {
    use std::os::unix::fs::PermissionsExt;
    let server = S3Server::start(S3Kind::S3sFs);
    server.create_bucket_blocking("flags");
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("s3-secret");
    std::fs::write(&secret, format!("{SECRET_KEY}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let src = work.path().join("src");
    make_tree(&src, 100, 0, 12);
    // No AWS_* credentials in the environment: only the flags.
    let repo = Repo {
        url: "s3://flags/r".into(),
        env: vec![
            ("SEAWALL_S3_ENDPOINT".into(), server.endpoint.clone()),
            ("SEAWALL_S3_PATH_STYLE".into(), "true".into()),
        ],
    };
    let flags = [
        "--s3-access-key-id",
        ACCESS_KEY,
        "--s3-secret-access-key-file",
        secret.to_str().unwrap(),
    ];
    let with = |args: &[&str]| -> Vec<String> {
        flags
            .iter()
            .chain(args.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = repo.cmd(&refs);
        c.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
        c.output().unwrap()
    };
    assert!(run(with(&["init"])).status.success());
    assert!(run(with(&["backup", "files", src.to_str().unwrap()]))
        .status
        .success());
    let target = work.path().join("restored");
    assert!(run(with(&[
        "restore",
        "latest",
        "--to",
        target.to_str().unwrap()
    ]))
    .status
    .success());
    assert_same_tree(&src, &restored(&target, &src));

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let line = one_error_line(&run(with(&["snapshots"])));
    assert!(
        line.contains("may be read by others") && line.contains("chmod 600"),
        "{line}"
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&secret, "not-the-secret").unwrap();
    let line = one_error_line(&run(with(&["snapshots"])));
    assert!(
        line.contains("denied") || line.contains("Denied") || line.contains("S3"),
        "{line}"
    );
}

#[test]
fn passwords_are_added_removed_and_changed_without_rewriting_data() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 50, 1024 * 1024, 5);
    let dir = work.path().join("repo");
    let repo = Repo::local(&dir);
    repo.ok(&["init"]);
    repo.backup(&[&src]);
    let data_before = dir_digest(&dir.join("data"));
    let with = |password: &str, args: &[&str]| {
        repo.cmd(args)
            .env("SEAWALL_PASSWORD", password)
            .output()
            .unwrap()
    };
    let first = crate::fixtures::PASSWORD;

    // A second password opens the same repository.
    let out = repo
        .cmd(&["key", "add"])
        .env("SEAWALL_NEW_PASSWORD", "second password")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(with("second password", &["snapshots"]).status.success());
    let keys: serde_json::Value =
        serde_json::from_slice(&with("second password", &["--json", "key", "list"]).stdout)
            .unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let (mine, other): (Vec<_>, Vec<_>) = keys.iter().partition(|k| k["current"] == true);
    let second_id = mine[0]["id"].as_str().unwrap().to_string();
    let first_id = other[0]["id"].as_str().unwrap().to_string();

    // The key in use cannot remove itself; another password can.
    let line = one_error_line(&with(
        "second password",
        &["key", "remove", &second_id[..8]],
    ));
    assert!(line.contains("the given password opened"), "{line}");
    let out = with("second password", &["key", "remove", &first_id[..8]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = one_error_line(&with(first, &["snapshots"]));
    assert!(line.to_lowercase().contains("password"), "{line}");
    // A third password, then passwd from it.
    let out = repo
        .cmd(&["key", "add"])
        .env("SEAWALL_PASSWORD", "second password")
        .env("SEAWALL_NEW_PASSWORD", "third password")
        .output()
        .unwrap();
    assert!(out.status.success());
    let keys: serde_json::Value =
        serde_json::from_slice(&with("third password", &["--json", "key", "list"]).stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 2);

    // passwd: the new one opens, the old one no longer does.
    let out = repo
        .cmd(&["key", "passwd"])
        .env("SEAWALL_PASSWORD", "third password")
        .env("SEAWALL_NEW_PASSWORD", "fourth password")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!with("third password", &["snapshots"]).status.success());
    assert!(with("fourth password", &["snapshots"]).status.success());
    let keys: serde_json::Value =
        serde_json::from_slice(&with("fourth password", &["--json", "key", "list"]).stdout)
            .unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    // Remove the other until one is left; the last is refused.
    let other = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(with("fourth password", &["key", "remove", &other[..8]])
        .status
        .success());
    let current = serde_json::from_slice::<serde_json::Value>(
        &with("fourth password", &["--json", "key", "list"]).stdout,
    )
    .unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let line = one_error_line(&with("fourth password", &["key", "remove", &current[..8]]));
    assert!(line.contains("last key"), "{line}");
    // No pack was rewritten.
    assert_eq!(dir_digest(&dir.join("data")), data_before);
}

#[test]
fn a_snapshot_is_listed_and_dumped_without_a_restore() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 60, 3 * 1024 * 1024, 8);
    let repo = Repo::local(&work.path().join("repo"));
    repo.ok(&["init"]);
    repo.backup(&[&src]);
    let root = src.display().to_string();

    // ls: every entry, with the large file's size.
    let entries = repo.json(&["ls", "latest"]);
    let entries = entries.as_array().unwrap();
    let large = entries
        .iter()
        .find(|e| e["path"] == format!("{root}/large.bin"))
        .expect("large.bin listed");
    assert_eq!(
        large["size"].as_u64().unwrap(),
        std::fs::metadata(src.join("large.bin")).unwrap().len()
    );
    let files = entries.iter().filter(|e| e["kind"] == "file").count() as u64;
    assert_eq!(files, 60 + tree_extra_files());
    // One level only.
    let top = repo.json(&["ls", "latest", &root, "--no-recursive"]);
    assert!(top.as_array().unwrap().iter().all(|e| e["path"]
        .as_str()
        .unwrap()
        .strip_prefix(&format!("{root}/"))
        .is_some_and(|rest| !rest.contains('/'))));

    // dump: a file byte for byte, a directory as a tar that extracts to it.
    let out = repo.run(&["dump", "latest", &format!("{root}/large.bin")]);
    assert!(out.status.success());
    assert_eq!(out.stdout, std::fs::read(src.join("large.bin")).unwrap());
    let tar = work.path().join("src.tar");
    std::fs::write(&tar, repo.run(&["dump", "latest", &root]).stdout).unwrap();
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let st = std::process::Command::new("tar")
        .arg("-xpf")
        .arg(&tar)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(st.success());
    let relative = |dir: &Path| dir_digest(dir).replace(&dir.display().to_string(), "");
    assert_eq!(relative(&unpacked), relative(&src));
    let line = one_error_line(&repo.run(&["dump", "latest", "/no/such/file"]));
    assert!(line.contains("not in the snapshot"), "{line}");

    // stats: a second, unchanged backup doubles what restores give and
    // adds almost nothing stored.
    let one = repo.json(&["stats"]);
    repo.backup(&[&src]);
    let two = repo.json(&["stats"]);
    assert_eq!(
        two["logical_bytes"].as_u64().unwrap(),
        2 * one["logical_bytes"].as_u64().unwrap()
    );
    assert!(
        two["stored_bytes"].as_u64().unwrap() < one["stored_bytes"].as_u64().unwrap() * 11 / 10
    );
    assert!(two["ratio"].as_f64().unwrap() > one["ratio"].as_f64().unwrap() * 1.8);
    // Per snapshot: the second restores as much, costs as much alone, and
    // added nothing.
    let per = two["per_snapshot"].as_array().unwrap();
    assert_eq!(per.len(), 2);
    assert_eq!(per[0]["logical_bytes"], per[1]["logical_bytes"]);
    assert_eq!(per[0]["stored_bytes"], per[1]["stored_bytes"]);
    assert!(per[0]["added_bytes"].as_u64().unwrap() > 0);
    assert_eq!(per[1]["added_bytes"].as_u64().unwrap(), 0, "{two:#}");
    let text = repo.ok(&["stats"]);
    assert!(
        text.contains(&per[1]["id"].as_str().unwrap()[..8]),
        "{text}"
    );
}

#[test]
fn find_diff_and_tag_work_on_stored_snapshots() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 20, 64 * 1024, 9);
    std::fs::write(src.join("app.conf"), "version 1").unwrap();
    std::fs::write(src.join("gone.txt"), "soon removed").unwrap();
    std::fs::write(src.join("same.txt"), "same content").unwrap();
    let repo = Repo::local(&work.path().join("repo"));
    repo.ok(&["init"]);
    let (first, _) = repo.backup(&[&src]);
    std::fs::write(src.join("app.conf"), "version 2").unwrap();
    std::fs::remove_file(src.join("gone.txt")).unwrap();
    std::fs::write(src.join("new.txt"), "added").unwrap();
    let later = filetime::FileTime::from_unix_time(1_700_000_000, 0);
    filetime::set_file_mtime(src.join("same.txt"), later).unwrap();
    let (second, _) = repo.backup(&[&src]);
    let root = src.display().to_string();

    // find: both snapshots hold app.conf; only the first gone.txt.
    let found = repo.json(&["find", "*.conf"]);
    assert_eq!(found.as_array().unwrap().len(), 2, "{found}");
    let found = repo.json(&["find", "gone.txt"]);
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["snapshot"], first);
    assert!(!repo.run(&["find", "nothing-like-this"]).status.success());

    // diff: added, removed, changed, metadata only.
    let changes = repo.json(&["diff", &first[..8], &second[..8]]);
    let of = |path: &str| {
        changes
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == format!("{root}/{path}"))
            .map(|c| c["change"].as_str().unwrap().to_string())
    };
    assert_eq!(of("new.txt").as_deref(), Some("added"));
    assert_eq!(of("gone.txt").as_deref(), Some("removed"));
    assert_eq!(of("app.conf").as_deref(), Some("changed"));
    assert_eq!(of("same.txt").as_deref(), Some("metadata"));
    assert_eq!(of("large.bin"), None);

    // tag: a retagged snapshot keeps its content under a new id, and the
    // head follows (verify stays clean).
    let done = repo.json(&["tag", &second[..8], "--add", "keep", "--add", "release"]);
    let new = done[0]["new"].as_str().unwrap().to_string();
    let snaps = repo.json(&["snapshots"]);
    let tagged = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == new)
        .expect("the retagged snapshot");
    let tags: Vec<&str> = tagged["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tags.contains(&"keep") && tags.contains(&"release"),
        "{tags:?}"
    );
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    let done = repo.json(&["tag", &new[..8], "--remove", "release"]);
    assert_eq!(done.as_array().unwrap().len(), 1);
    let out = repo.run(&["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = work.path().join("restored");
    repo.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(restored(&target, &src).join("app.conf")).unwrap(),
        "version 2"
    );
}

#[test]
fn browse_commands_name_an_unknown_snapshot_or_path_in_one_line_and_change_nothing() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 5, 64 * 1024, 12);
    let repo_dir = work.path().join("repo");
    let repo = Repo::local(&repo_dir);
    repo.ok(&["init"]);
    repo.backup(&[&src]);
    let before = dir_digest(&repo_dir);
    let unknown = "0badc0de";
    for args in [
        vec!["ls", unknown],
        vec!["dump", unknown, "/etc/passwd"],
        vec!["diff", unknown, "latest"],
        vec!["diff", "latest", unknown],
        vec!["tag", unknown, "--add", "keep"],
    ] {
        let line = one_error_line(&repo.run(&args));
        assert!(line.contains(unknown), "{args:?}: {line}");
    }
    for args in [
        vec!["ls", "latest", "/no/such/dir"],
        vec!["dump", "latest", "/no/such/file"],
    ] {
        let line = one_error_line(&repo.run(&args));
        assert!(
            line.contains("/no/such/") && line.contains("not in the snapshot"),
            "{args:?}: {line}"
        );
    }
    assert_eq!(
        dir_digest(&repo_dir),
        before,
        "a failed command changed the repository"
    );
}
