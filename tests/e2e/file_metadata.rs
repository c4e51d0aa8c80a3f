//! What restic keeps of a tree, Seawall keeps and restores: hard links
//! (inside and across directories), extended attributes in the user and
//! security namespaces, a file capability, access and default ACLs, a
//! FIFO, a character device node, a sparse file, and the times of files,
//! directories and symlinks. The two trees are compared with the tools an
//! operator would use: `stat`, `getfattr -d -m -`, `getfacl -R`, `getcap`.

use crate::fixtures::*;
use std::path::Path;
use std::process::Command;

/// Runs a tool the setup script installs, in `cwd`; its stdout.
fn tool(cwd: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} cannot run ({e}): scripts/setup.sh installs it (packages attr, acl, libcap2-bin)")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}",
        cwd.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `stat` of every entry under `root` (relative names, sorted), the
/// fields a restore must bring back: type, mode, owner, size, link count,
/// device numbers, access and modification times to the nanosecond, and
/// for regular files the blocks they take (holes stay holes). A
/// directory's access time is left out: listing it here moves it (relatime
/// updates an access time older than the change time, which a restore
/// makes new).
fn stat_all(root: &Path) -> String {
    let listing = tool(root, "find", &[".", "-mindepth", "1"]);
    let mut paths: Vec<&str> = listing.lines().collect();
    paths.sort();
    let mut out = String::new();
    for p in paths {
        let kind = tool(root, "stat", &["-c", "%F", p]);
        let format = match kind.trim() {
            "directory" => "%n|%F|%a|%u|%g|%h|%y",
            "regular file" | "regular empty file" => "%n|%F|%a|%u|%g|%h|%x|%y|%s|%b",
            _ => "%n|%F|%a|%u|%g|%h|%t:%T|%x|%y",
        };
        out.push_str(&tool(root, "stat", &["-c", format, p]));
    }
    out
}

/// Inode numbers of `paths` under `root`.
fn inodes(root: &Path, paths: &[&str]) -> Vec<String> {
    paths
        .iter()
        .map(|p| tool(root, "stat", &["-c", "%i", p]).trim().to_string())
        .collect()
}

#[test]
fn links_attributes_acls_capabilities_special_files_holes_and_times_round_trip_exactly() {
    assert!(
        running_as_root(),
        "this test makes a device node and sets security.* attributes: run the suite as root"
    );
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let sh = |script: &str| {
        let out = Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(&src)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::create_dir_all(src.join("b/deeper")).unwrap();
    std::fs::create_dir_all(src.join("shared")).unwrap();
    sh(r#"
        printf 'linked content\n' > a/data.txt
        ln a/data.txt a/same-dir-link
        ln a/data.txt b/deeper/other-dir-link
        printf 'attributes\n' > attrs.txt
        setfattr -n user.color -v blue attrs.txt
        setfattr -n user.raw -v 0x00ff10 attrs.txt
        setfattr -n security.seawall-test -v marked attrs.txt
        setfattr -n user.on-dir -v yes b
        printf '#!/bin/sh\n' > tool.sh
        chmod 755 tool.sh
        setcap cap_net_raw+ep tool.sh
        printf 'acl\n' > acl.txt
        setfacl -m u:1234:rw,g:2345:r acl.txt
        setfacl -d -m u:1234:rwx,g:2345:rx shared
        setfacl -m u:1234:rx shared
        mkfifo pipe
        mknod null-device c 1 3
        chmod 640 null-device
        truncate -s 1G sparse.bin
        printf 'data in the middle' | dd of=sparse.bin bs=4096 seek=131072 conv=notrunc status=none
        ln -s a/data.txt symlink
        touch -h -d '2001-02-03 04:05:06.123456789' symlink
        touch -a -d '2002-03-04 05:06:07.5' attrs.txt
        touch -m -d '2003-04-05 06:07:08.25' acl.txt
        touch -d '2004-05-06 07:08:09.75' b/deeper b shared a
    "#);
    // Read before the backup reads the tree (reading a file or a directory
    // can move its access time).
    let stat_before = stat_all(&src);
    let xattrs_before = tool(
        &src,
        "getfattr",
        &["-R", "-h", "-d", "-m", "-", "-e", "hex", "."],
    );
    let acls_before = tool(&src, "getfacl", &["-R", "-p", "."]);
    assert!(
        xattrs_before.contains("security.capability"),
        "{xattrs_before}"
    );
    assert!(
        acls_before.contains("default:user:1234:rwx"),
        "{acls_before}"
    );
    let blocks = tool(&src, "stat", &["-c", "%b", "sparse.bin"]);
    assert!(
        blocks.trim().parse::<u64>().unwrap() <= 64,
        "the source file is not sparse: {blocks}"
    );

    let repo = Repo::local(&work.path().join("repo"));
    repo.ok(&["init"]);
    let (id, summary) = repo.backup(&[&src]);
    let warnings = summary["warnings"].as_array().cloned().unwrap_or_default();
    assert!(warnings.is_empty(), "{warnings:?}");
    let target = work.path().join("restored");
    repo.ok(&["restore", &id[..8], "--to", target.to_str().unwrap()]);
    let back = restored(&target, &src);

    assert_eq!(stat_all(&back), stat_before);
    assert_eq!(
        tool(
            &back,
            "getfattr",
            &["-R", "-h", "-d", "-m", "-", "-e", "hex", "."]
        ),
        xattrs_before
    );
    assert_eq!(tool(&back, "getfacl", &["-R", "-p", "."]), acls_before);
    assert_eq!(
        tool(&back, "getcap", &["tool.sh"]).trim(),
        "tool.sh cap_net_raw=ep"
    );
    // One file with three names inside the restored tree.
    let linked = inodes(
        &back,
        &["a/data.txt", "a/same-dir-link", "b/deeper/other-dir-link"],
    );
    assert!(linked.iter().all(|i| *i == linked[0]), "{linked:?}");
    assert_eq!(
        std::fs::read(back.join("b/deeper/other-dir-link")).unwrap(),
        b"linked content\n"
    );
    let sparse = std::fs::read(back.join("sparse.bin")).unwrap();
    assert_eq!(sparse.len(), 1 << 30);
    assert_eq!(&sparse[512 << 20..(512 << 20) + 18], b"data in the middle");

    // The listing names the special files by kind.
    let ls = repo.ok(&["ls", &id[..8], &format!("{}/pipe", src.display())]);
    assert!(ls.starts_with('p'), "{ls}");
    let ls = repo.ok(&["ls", &id[..8], &format!("{}/null-device", src.display())]);
    assert!(ls.starts_with('c'), "{ls}");
}
