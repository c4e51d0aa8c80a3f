//! A network namespace of the test's own, joined to the host by a veth
//! pair on a /30 of 10.250.0.0/16: a "region" whose link a test cuts with
//! `ip link set ... down` and heals with `up`. Removed on drop, also when
//! the test fails (the veth pair goes with it). Needs root and `ip`
//! (iproute2, installed by scripts/setup.sh).

#![allow(dead_code)]

use std::process::Command;

/// The namespace and its link.
pub struct Netns {
    /// The namespace's name.
    pub name: String,
    /// The host end's address.
    pub host_ip: String,
    /// The namespace end's address.
    pub ns_ip: String,
    host_if: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("ip (iproute2) cannot run ({e}): run scripts/setup.sh, which installs it")
    });
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// Creates the namespace, its veth pair and addresses, links up.
    pub fn create() -> Netns {
        assert!(
            crate::fixtures::running_as_root(),
            "network namespaces need root: run the tests as root (as CI does)"
        );
        let pid = std::process::id();
        let (x, y) = ((pid >> 6) & 0xff, (pid & 0x3f) * 4);
        let ns = Netns {
            name: format!("seawall-{pid}"),
            host_ip: format!("10.250.{x}.{}", y + 1),
            ns_ip: format!("10.250.{x}.{}", y + 2),
            host_if: format!("swh{pid}"),
        };
        // Left over by a killed run with the same pid.
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &ns.host_if])
            .output();
        let peer = format!("swn{pid}");
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ]);
        ip(&["link", "set", &ns.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/30", ns.ns_ip), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        // `ip netns exec` mounts it over /etc/hosts for what runs inside,
        // so a test can give names (an RDS endpoint) to its addresses.
        std::fs::create_dir_all(ns.hosts().parent().unwrap()).unwrap();
        std::fs::write(ns.hosts(), std::fs::read("/etc/hosts").unwrap_or_default()).unwrap();
        ns
    }

    /// The hosts file of what runs inside.
    pub fn hosts(&self) -> std::path::PathBuf {
        std::path::Path::new("/etc/netns")
            .join(&self.name)
            .join("hosts")
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// The words that run a program inside the namespace.
    pub fn prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// Cuts the link: nothing passes either way.
    pub fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]);
    }

    /// Heals it.
    pub fn heal(&self) {
        ip(&["link", "set", &self.host_if, "up"]);
    }
}

/// Gives `name` the address `ip` for what runs inside the namespace whose
/// hosts file is `hosts` (appended in place: the mounted file is this one).
pub fn resolve_inside(hosts: &std::path::Path, name: &str, ip: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(hosts)
        .unwrap();
    writeln!(f, "{ip} {name}").unwrap();
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.hosts().parent().unwrap());
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}
