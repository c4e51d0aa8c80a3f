//! `seawall certs`: a CA and certificates for each role, private keys kept
//! private, nothing overwritten by accident, identities readable back.

use crate::fixtures::{bin, one_error_line};
use seawall_common::tls::{Identity, TlsFiles};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn certs(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("certs")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn certs_issue_identities_for_every_role() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    // No CA yet: the error says how to make one.
    let err = one_error_line(&certs(&dir, &["operator", "--name", "alice"]));
    assert!(err.contains("certs") && err.contains(" ca"), "{err}");

    assert!(certs(&dir, &["ca"]).status.success());
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("ca.key"), 0o600);
    for args in [
        &[
            "coordinator",
            "--name",
            "c1",
            "--host",
            "127.0.0.1",
            "--host",
            "localhost",
        ][..],
        &["agent", "--name", "eu-1", "--region", "eu-west-1"],
        &["operator", "--name", "alice"],
    ] {
        let out = certs(&dir, args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let load = |name: &str| TlsFiles::in_dir(&dir, name).load().unwrap().identity;
    assert_eq!(load("c1"), Identity::Coordinator { name: "c1".into() });
    assert_eq!(
        load("eu-1"),
        Identity::Agent {
            region: "eu-west-1".into(),
            name: "eu-1".into()
        }
    );
    assert_eq!(
        load("alice"),
        Identity::Operator {
            name: "alice".into()
        }
    );
    assert_eq!(mode("eu-1.key"), 0o600);

    // Nothing is overwritten without --force; bad names are refused.
    let before = std::fs::read(dir.join("eu-1.key")).unwrap();
    let err = one_error_line(&certs(
        &dir,
        &["agent", "--name", "eu-1", "--region", "eu-west-1"],
    ));
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(dir.join("eu-1.key")).unwrap(), before);
    let err = one_error_line(&certs(
        &dir,
        &["agent", "--name", "x", "--region", "EU West"],
    ));
    assert!(err.contains("region"), "{err}");
    // A replaced key is 0600 whatever the mode of the file it replaces.
    std::fs::set_permissions(dir.join("eu-1.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(certs(
        &dir,
        &[
            "--force",
            "agent",
            "--name",
            "eu-1",
            "--region",
            "eu-west-1"
        ]
    )
    .status
    .success());
    assert_ne!(std::fs::read(dir.join("eu-1.key")).unwrap(), before);
    assert_eq!(mode("eu-1.key"), 0o600);

    // A key others can read is refused when loaded.
    std::fs::set_permissions(
        dir.join("alice.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = TlsFiles::in_dir(&dir, "alice")
        .load()
        .unwrap_err()
        .to_string();
    assert!(err.contains("chmod 600"), "{err}");
}
