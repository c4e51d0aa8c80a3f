//! Damage and bad input: a flipped byte in a pack, a wrong password, missing
//! or truncated files, an unreachable endpoint, an unknown snapshot. Each
//! gives one clear line and a non-zero exit, and changes nothing.

use crate::fixtures::*;
use std::path::{Path, PathBuf};

fn setup() -> (tempfile::TempDir, PathBuf, Repo, String) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 200, 5 * 1024 * 1024, 21);
    let repo_dir = work.path().join("repo");
    let repo = Repo::local(&repo_dir);
    repo.ok(&["init"]);
    let (id, _) = repo.backup(&[&src]);
    (work, src, repo, id)
}

#[test]
fn a_flipped_byte_in_a_pack_is_found_named_and_contained() {
    let (work, src, repo, id) = setup();
    let repo_dir = work.path().join("repo");
    let (biggest, at) = blob_position(&repo_dir, &src.join("large.bin"));
    let mut data = std::fs::read(&biggest).unwrap();
    data[at as usize] ^= 0x01;
    std::fs::write(&biggest, &data).unwrap();

    let out = repo.run(&["verify", "--read-data"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pack_name = biggest.file_name().unwrap().to_str().unwrap();
    assert!(
        stderr.contains(pack_name),
        "verify must name the damaged pack:\n{stderr}"
    );
    assert!(
        stderr.contains(&id[..8]),
        "verify must name the affected snapshot:\n{stderr}"
    );
    assert!(
        stderr.contains("large.bin"),
        "verify must name the affected file:\n{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&repo.run(&["--json", "verify", "--read-data"]).stdout).unwrap();
    let problem = &report["problems"][0];
    assert!(problem["object"].as_str().unwrap().contains(pack_name));

    let target = work.path().join("restored");
    let out = repo.run(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert!(!out.status.success(), "restoring a damaged file must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("large.bin"), "{stderr}");
    let root = restored(&target, &src);
    assert!(
        !root.join("large.bin").exists(),
        "a damaged file must not be left torn"
    );
    // Everything else came back intact.
    assert_eq!(
        std::fs::read(root.join("private/secret")).unwrap(),
        b"s3cr3t"
    );
    assert_eq!(
        std::fs::read(root.join("dir000/sub0/file00000.txt")).unwrap(),
        std::fs::read(src.join("dir000/sub0/file00000.txt")).unwrap()
    );
}

#[test]
fn wrong_password_is_one_line_and_changes_nothing() {
    let (work, src, repo, _) = setup();
    let before = dir_digest(&work.path().join("repo"));
    let out = repo
        .cmd(&["backup", "files", src.to_str().unwrap()])
        .env("SEAWALL_PASSWORD", "wrong")
        .output()
        .unwrap();
    let line = one_error_line(&out);
    assert!(line.contains("wrong password"), "{line}");
    assert_eq!(before, dir_digest(&work.path().join("repo")));
}

#[test]
fn unknown_snapshot_and_missing_repository_are_clear() {
    let (work, _src, repo, _) = setup();
    let before = dir_digest(&work.path().join("repo"));
    let target = work.path().join("t");
    let line =
        one_error_line(&repo.run(&["restore", "deadbeef", "--to", target.to_str().unwrap()]));
    assert!(line.contains("no snapshot deadbeef"), "{line}");
    let line =
        one_error_line(&repo.run(&["restore", "not-an-id", "--to", target.to_str().unwrap()]));
    assert!(line.contains("not a snapshot id"), "{line}");
    assert_eq!(before, dir_digest(&work.path().join("repo")));
    let nowhere = Repo::local(&work.path().join("nowhere"));
    let line = one_error_line(&nowhere.run(&["snapshots"]));
    assert!(line.contains("seawall init"), "{line}");
}

#[test]
fn truncated_snapshot_or_index_is_named() {
    let (work, _src, repo, id) = setup();
    let repo_dir = work.path().join("repo");
    let snap = repo_dir.join("snapshots").join(&id);
    let data = std::fs::read(&snap).unwrap();
    std::fs::write(&snap, &data[..data.len() / 2]).unwrap();
    let before = dir_digest(&repo_dir);
    let line = one_error_line(&repo.run(&["snapshots"]));
    assert!(
        line.contains(&id[..8]) && line.contains("damaged"),
        "{line}"
    );
    let target = work.path().join("t");
    let line = one_error_line(&repo.run(&["restore", &id, "--to", target.to_str().unwrap()]));
    assert!(line.contains(&id[..8]), "{line}");
    assert_eq!(before, dir_digest(&repo_dir));
    std::fs::write(&snap, &data).unwrap();

    let index = files_under(&repo_dir.join("index")).pop().unwrap();
    let data = std::fs::read(&index).unwrap();
    std::fs::write(&index, &data[..data.len() - 7]).unwrap();
    let before = dir_digest(&repo_dir);
    let line = one_error_line(&repo.run(&["restore", "latest", "--to", target.to_str().unwrap()]));
    let name = index.file_name().unwrap().to_str().unwrap();
    assert!(
        line.contains(name) && line.contains("repair index"),
        "{line}"
    );
    assert_eq!(before, dir_digest(&repo_dir));

    // The named fix works: the index is rebuilt from the packs and the data restores.
    repo.ok(&["repair", "index"]);
    repo.ok(&["verify", "--read-data"]);
    repo.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
}

#[test]
fn deleted_snapshot_file_is_unknown_not_a_crash() {
    let (work, _src, repo, id) = setup();
    std::fs::remove_file(work.path().join("repo/snapshots").join(&id)).unwrap();
    let target = work.path().join("t");
    let line = one_error_line(&repo.run(&["restore", &id, "--to", target.to_str().unwrap()]));
    assert!(line.contains("no snapshot"), "{line}");
}

#[test]
fn unreachable_s3_endpoint_is_one_line() {
    let port = free_port();
    let repo = Repo {
        url: "s3://bucket/repo".into(),
        env: vec![
            (
                "SEAWALL_S3_ENDPOINT".into(),
                format!("http://127.0.0.1:{port}"),
            ),
            ("SEAWALL_S3_PATH_STYLE".into(), "true".into()),
            ("AWS_ACCESS_KEY_ID".into(), "x".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "y".into()),
        ],
    };
    let started = std::time::Instant::now();
    let line = one_error_line(&repo.run(&["snapshots"]));
    assert!(line.contains("cannot reach S3 endpoint"), "{line}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "gave up too slowly"
    );
    let line = one_error_line(&repo.run(&["init"]));
    assert!(line.contains("cannot reach S3 endpoint"), "{line}");
}

#[test]
fn init_refuses_an_existing_repository() {
    let (work, _src, repo, _) = setup();
    let before = dir_digest(&work.path().join("repo"));
    let line = one_error_line(&repo.run(&["init"]));
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(before, dir_digest(&work.path().join("repo")));
}

/// The pack file and a byte offset inside the first blob of a backed-up file.
fn blob_position(repo_dir: &Path, file: &Path) -> (PathBuf, u64) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let repo = open_local_repo(repo_dir).await;
        repo.load_index().await.unwrap();
        let (_, snap) = repo.find_snapshot("latest").await.unwrap();
        let mut tree = repo.load_tree(&snap.tree.unwrap()).await.unwrap();
        let names: Vec<String> = file
            .iter()
            .skip(1)
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        for (i, name) in names.iter().enumerate() {
            let node = tree.nodes.iter().find(|n| &n.name == name).unwrap().clone();
            if i + 1 == names.len() {
                let loc = repo.locate(&node.content[0]).unwrap();
                let pack =
                    repo_dir.join(seawall_common::storage::FileKind::Pack.path(&loc.pack.to_hex()));
                return (pack, loc.offset as u64 + loc.length as u64 / 2);
            }
            tree = repo.load_tree(&node.subtree.unwrap()).await.unwrap();
        }
        unreachable!("{} not in the snapshot", file.display())
    })
}

#[test]
fn hostile_repository_objects_are_refused_or_ignored_not_obeyed() {
    let (work, src, repo, _) = setup();
    let repo_dir = work.path().join("repo");
    // A planted key file asking Argon2 for 4 TiB, listed before the good one.
    let good = files_under(&repo_dir.join("keys"))[0].clone();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&good).unwrap().permissions().mode() & 0o777,
        0o600,
        "a local key file others may read"
    );
    let mut key: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&good).unwrap()).unwrap();
    key["kdf"]["m_cost"] = serde_json::json!(u32::MAX);
    let planted = repo_dir.join("keys").join("0".repeat(64));
    std::fs::write(&planted, serde_json::to_vec(&key).unwrap()).unwrap();
    // And 100 within the bounds but at their most (256 MiB, 8 passes:
    // some 2 s each), all listed before the good one, and one far too
    // large to be a key file: an open tries the cheapest first, within a
    // budget.
    key["kdf"]["m_cost"] = serde_json::json!(256 * 1024);
    key["kdf"]["t_cost"] = serde_json::json!(8);
    for i in 1..=100 {
        let name = format!("{i:064}");
        std::fs::write(
            repo_dir.join("keys").join(name),
            serde_json::to_vec(&key).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(
        repo_dir.join("keys").join("2".repeat(64)),
        vec![b' '; 1 << 20],
    )
    .unwrap();
    let opened = std::time::Instant::now();
    repo.ok(&["snapshots"]);
    assert!(
        opened.elapsed() < std::time::Duration::from_secs(20),
        "opening took {:?} with planted key files",
        opened.elapsed()
    );
    // A lock file that no seawall wrote.
    std::fs::create_dir_all(repo_dir.join("locks")).unwrap();
    std::fs::write(repo_dir.join("locks").join("f".repeat(64)), b"garbage").unwrap();

    // The repository still opens with the good key, and a backup is not
    // blocked by the garbage lock.
    repo.ok(&["snapshots"]);
    let (second, _) = repo.backup(&[&src]);
    assert!(!second.is_empty());
    // `unlock` clears the garbage.
    repo.ok(&["unlock"]);
    assert!(files_under(&repo_dir.join("locks")).is_empty());

    // A 3 GiB (sparse) file among the snapshots is refused from its size:
    // with the address space capped at 1 GiB, reading it whole would fail.
    let huge = repo_dir.join("snapshots").join("e".repeat(64));
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(3 << 30))
        .unwrap();
    let out = std::process::Command::new("prlimit")
        .arg(format!("--as={}", 1u64 << 30))
        .arg("--")
        .arg(crate::fixtures::bin())
        .arg("snapshots")
        .env("SEAWALL_REPOSITORY", &repo.url)
        .env("SEAWALL_PASSWORD", crate::fixtures::PASSWORD)
        .env_remove("SEAWALL_PASSWORD_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("snapshots/{}", "e".repeat(64)))
            && stderr.contains("more than a snapshots file may be"),
        "{stderr}"
    );
    assert!(!stderr.contains("memory allocation"), "{stderr}");
    std::fs::remove_file(&huge).unwrap();

    // A config whose chunker bounds would make the chunker panic is one
    // clear line naming the parameter.
    std::fs::remove_file(&planted).unwrap();
    let config_path = repo_dir.join("config");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["chunker"]["min"] = serde_json::json!(2_000_000);
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let line = one_error_line(&repo.run(&["backup", "files", src.to_str().unwrap()]));
    assert!(line.contains("chunker.min = 2000000"), "{line}");
}

#[test]
fn an_s3_repository_with_no_credentials_anywhere_says_so_in_one_line() {
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let repo = Repo {
        url: "s3://bucket/repo".into(),
        env: vec![
            (
                "SEAWALL_S3_ENDPOINT".into(),
                format!("http://127.0.0.1:{port}"),
            ),
            ("SEAWALL_S3_PATH_STYLE".into(), "true".into()),
            // No profile files either.
            ("HOME".into(), home.path().display().to_string()),
        ],
    };
    let mut cmd = repo.cmd(&["snapshots"]);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    let line = one_error_line(&out);
    assert!(line.contains("no S3 credentials were found"), "{line}");
    assert!(line.contains("AWS_ACCESS_KEY_ID"), "{line}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("WARN"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn a_deleted_newest_snapshot_and_one_copied_under_another_name_are_named() {
    let (work, src, repo, first) = setup();
    let snaps = work.path().join("repo").join("snapshots");
    std::fs::write(src.join("new.txt"), "a later change").unwrap();
    let (second, _) = repo.backup(&[&src]);
    let out = repo.run(&["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Legitimate removal leaves no alarm: forget updates the head.
    let (third, _) = repo.backup(&[&src]);
    repo.ok(&["forget", "--keep-last", "2"]);
    assert!(!snaps.join(&first).exists());
    let out = repo.run(&["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A rollback: the newest snapshot's file deleted behind Seawall's back.
    std::fs::remove_file(snaps.join(&third)).unwrap();
    let out = repo.run(&["verify"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&third) && stderr.contains("recorded in the head but its file is gone"),
        "{stderr}"
    );
    let listed = repo.run(&["snapshots"]);
    let warned = String::from_utf8_lossy(&listed.stderr);
    assert!(
        warned.contains(&third[..8]) && warned.contains("rollback"),
        "{warned}"
    );

    // A replay: a snapshot copied under another name.
    let planted = "a".repeat(64);
    std::fs::copy(snaps.join(&second), snaps.join(&planted)).unwrap();
    let out = repo.run(&["verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("snapshots/{planted}"))
            && stderr.contains("not named by the hash of its bytes"),
        "{stderr}"
    );
}

#[test]
fn read_data_subsets_partition_the_packs_and_one_of_them_finds_the_damage() {
    // Enough data for several packs.
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 100, 4 * 1024 * 1024, 22);
    let mut rng = crate::fixtures::Rng(7);
    std::fs::write(src.join("random.bin"), rng.bytes(72 * 1024 * 1024, false)).unwrap();
    let repo_dir = work.path().join("repo");
    let repo = Repo::local(&repo_dir);
    repo.ok(&["init"]);
    repo.backup(&[&src]);
    let (biggest, at) = blob_position(&repo_dir, &src.join("large.bin"));
    let mut data = std::fs::read(&biggest).unwrap();
    data[at as usize] ^= 0x01;
    std::fs::write(&biggest, &data).unwrap();

    let total = files_under(&repo_dir.join("data")).len() as u64;
    assert!(total >= 3, "{total} packs");
    let mut read = 0;
    let mut found = 0;
    for part in ["1/3", "2/3", "3/3"] {
        let out = repo.run(&["--json", "verify", "--read-data-subset", part]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        read += report["packs_read"].as_u64().unwrap();
        let problems = report["problems"].as_array().unwrap();
        if !problems.is_empty() {
            found += 1;
            assert!(!out.status.success());
            let name = biggest.file_name().unwrap().to_str().unwrap();
            assert!(problems[0]["object"].as_str().unwrap().contains(name));
        }
    }
    // Every pack read exactly once over the three runs, and the damage in
    // exactly one of them.
    assert_eq!(read, total);
    assert_eq!(found, 1);
    let out = repo.run(&["--json", "verify", "--read-data-subset", "50%"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["packs_read"].as_u64().unwrap() <= total);
    let out = repo.run(&["verify", "--read-data-subset", "4/3"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"4/3\" is not n/t"), "{stderr}");
}
