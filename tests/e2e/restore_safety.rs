//! Restore never writes outside its target: hostile names in a snapshot and
//! symlinks already in the target are refused.

use crate::fixtures::*;
use seawall_common::repo::blob;
use seawall_common::repo::index::{IndexFile, IndexPack};
use seawall_common::repo::pack::PackBuilder;
use seawall_common::repo::snapshot::{BackupSummary, BackupType, Snapshot};
use seawall_common::repo::BlobType;
use seawall_common::storage::FileKind;
use std::path::Path;
use std::process::Command;

/// Writes a snapshot whose root tree is `tree_json`, bypassing every check a
/// real backup makes, as an attacker with the key (or a bug) could.
fn plant_snapshot(repo_dir: &Path, tree_json: serde_json::Value, file_data: &[u8]) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let repo = open_local_repo(repo_dir).await;
        let key = repo.key().clone();
        let data_id = key.blob_id(file_data);
        let mut tree_json = tree_json;
        for node in tree_json["nodes"].as_array_mut().unwrap() {
            if node["type"] == "file" {
                node["content"] = serde_json::json!([data_id]);
                node["size"] = serde_json::json!(file_data.len());
            }
        }
        let tree = serde_json::to_vec(&tree_json).unwrap();
        let tree_id = key.blob_id(&tree);
        let mut pack = PackBuilder::default();
        pack.add(
            BlobType::Data,
            data_id,
            &blob::encode(&key, BlobType::Data, &data_id, file_data, 1),
            file_data.len() as u32,
        );
        pack.add(
            BlobType::Tree,
            tree_id,
            &blob::encode(&key, BlobType::Tree, &tree_id, &tree, 1),
            tree.len() as u32,
        );
        let pack = pack.finish(&key);
        let record = IndexPack::from_entries(pack.id, pack.bytes.len() as u64, &pack.entries);
        repo.storage()
            .write(FileKind::Pack, &pack.id.to_hex(), pack.bytes.into())
            .await
            .unwrap();
        repo.write_json(
            FileKind::Index,
            &IndexFile {
                supersedes: vec![],
                packs: vec![record],
            },
        )
        .await
        .unwrap();
        let now = chrono::Utc::now();
        let snap = Snapshot {
            time: now,
            end_time: now,
            hostname: "attacker".into(),
            source: "files".into(),
            paths: vec!["/".into()],
            tags: vec![],
            region: None,
            agent: None,
            backup_type: BackupType::Full,
            parent: None,
            excludes: vec![],
            tree: Some(tree_id),
            streams: vec![],
            facts: Default::default(),
            summary: BackupSummary::default(),
        };
        repo.write_json(FileKind::Snapshot, &snap).await.unwrap();
    });
}

fn file_node(name: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "type": "file", "mode": 420, "uid": 0, "gid": 0, "mtime": 0, "mtime_nsec": 0})
}

#[test]
fn hostile_names_are_refused_and_nothing_lands_outside() {
    for hostile in ["..", "../escaped", "/tmp/escaped-abs", "."] {
        let work = tempfile::tempdir().unwrap();
        let repo_dir = work.path().join("repo");
        let repo = Repo::local(&repo_dir);
        repo.ok(&["init"]);
        plant_snapshot(
            &repo_dir,
            serde_json::json!({"nodes": [file_node(hostile)]}),
            b"pwned",
        );
        let target = work.path().join("a/b/target");
        let out = repo.run(&["restore", "latest", "--to", target.to_str().unwrap()]);
        let line = one_error_line(&out);
        assert!(
            line.contains("unsafe name") || line.contains("refus"),
            "{hostile}: {line}"
        );
        assert!(!work.path().join("a/b/escaped").exists());
        assert!(!Path::new("/tmp/escaped-abs").exists());
        // Nothing but the repository and, at most, the empty target's folders.
        let top: Vec<_> = std::fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            top.iter().all(|n| n == "repo" || n == "a"),
            "{hostile}: {top:?}"
        );
        if let Ok(rd) = std::fs::read_dir(work.path().join("a/b")) {
            let names: Vec<_> = rd.map(|e| e.unwrap().file_name()).collect();
            assert!(names.iter().all(|n| n == "target"), "{hostile}: {names:?}");
        }
    }
}

#[test]
fn an_existing_symlink_in_the_target_is_not_followed() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 50, 0, 8);
    let repo = Repo::local(&work.path().join("repo"));
    repo.ok(&["init"]);
    repo.backup(&[&src]);
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let target = work.path().join("target");
    // The first component of the restored path is a symlink planted to lead outside.
    let first = src.components().nth(1).unwrap().as_os_str().to_owned();
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join(&first)).unwrap();
    let out = repo.run(&["restore", "latest", "--to", target.to_str().unwrap()]);
    let line = one_error_line(&out);
    assert!(
        line.contains("not a directory") || line.contains("symlink"),
        "{line}"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside the target"
    );
}

#[test]
fn duplicate_names_in_a_tree_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let repo_dir = work.path().join("repo");
    let repo = Repo::local(&repo_dir);
    repo.ok(&["init"]);
    let link = serde_json::json!({"name": "x", "type": "symlink", "mode": 511, "uid": 0, "gid": 0, "mtime": 0, "mtime_nsec": 0, "link_target": "/etc"});
    plant_snapshot(
        &repo_dir,
        serde_json::json!({"nodes": [link, file_node("x")]}),
        b"data",
    );
    let target = work.path().join("target");
    let line = one_error_line(&repo.run(&["restore", "latest", "--to", target.to_str().unwrap()]));
    assert!(line.contains("not unique"), "{line}");
}

#[test]
fn a_private_file_is_private_from_the_moment_it_is_restored() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let secret = src.join("secret.key");
    // Large and incompressible enough that the restore takes a while to write it.
    let mut data = vec![0u8; 192 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&secret, &data).unwrap();
    drop(data);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let repo = Repo::local(&work.path().join("repo"));
    repo.ok(&["init"]);
    repo.backup(&[&src]);

    // Restore with umask 0, watching the file's mode the whole time.
    let target = work.path().join("restored");
    let restored_secret = restored(&target, &secret);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "umask 0; exec '{}' restore latest --to '{}'",
            bin(),
            target.display()
        ))
        .env("SEAWALL_REPOSITORY", &repo.url)
        .env("SEAWALL_PASSWORD", PASSWORD);
    let mut child = cmd.spawn().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        if let Ok(m) = std::fs::symlink_metadata(&restored_secret) {
            seen.insert(m.permissions().mode() & 0o777);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    assert!(child.wait().unwrap().success());
    assert!(
        !seen.is_empty(),
        "the restore was never seen writing the file"
    );
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [0o600],
        "the secret file had another mode while it was restored"
    );
}
