//! An etcd cluster of one or three members on loopback ports, started by the
//! tests in a temporary directory and stopped on drop. Members can be
//! killed and restarted to test elections.

#![allow(dead_code)]

use crate::fixtures::{free_port, require};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// TLS for the members' client port, which then requires client
/// certificates signed by `ca` (etcd's `--client-cert-auth`).
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA for both sides.
    pub ca: PathBuf,
    /// The members' server certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A client certificate and key for the fixture's own health checks.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// A running etcd cluster.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    tls: Option<EtcdTls>,
}

impl EtcdCluster {
    /// Starts `n` members under `dir` and waits until the cluster is healthy.
    pub fn start(dir: &Path, n: usize) -> EtcdCluster {
        Self::start_with(dir, n, None)
    }

    /// Starts `n` members serving clients over TLS with client certificates.
    pub fn start_tls(dir: &Path, n: usize, tls: EtcdTls) -> EtcdCluster {
        Self::start_with(dir, n, Some(tls))
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn start_with(dir: &Path, n: usize, tls: Option<EtcdTls>) -> EtcdCluster {
        require("etcd");
        // A port chosen free can be taken by another test's server before
        // etcd binds it: a member that dies at start is tried again on
        // fresh ports.
        for _ in 0..3 {
            let mut cluster = Self::launch_all(dir, n, tls.clone());
            if cluster.started() {
                cluster.wait_healthy();
                return cluster;
            }
            for m in &mut cluster.members {
                if let Some(mut c) = m.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                let _ = std::fs::remove_dir_all(&m.dir);
            }
        }
        panic!(
            "etcd members kept dying at start (ports taken?): see {}",
            dir.display()
        );
    }

    /// Whether every member is still running once the cluster answers (or
    /// after 10 s).
    fn started(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for m in &mut self.members {
                if let Some(c) = &mut m.child {
                    if matches!(c.try_wait(), Ok(Some(_))) {
                        return false;
                    }
                }
            }
            if self.healthy() || Instant::now() > deadline {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn launch_all(dir: &Path, n: usize, tls: Option<EtcdTls>) -> EtcdCluster {
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                dir: dir.join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            tls,
        };
        for i in 0..n {
            cluster.launch(i, "new");
        }
        cluster
    }

    /// Starts member `i`; `state` is "new" for a first start, "existing" after.
    fn launch(&mut self, i: usize, state: &str) {
        let initial = self.initial_cluster.clone();
        let scheme = self.scheme();
        let tls_args: Vec<std::ffi::OsString> = match &self.tls {
            Some(t) => vec![
                "--client-cert-auth".into(),
                "--trusted-ca-file".into(),
                t.ca.clone().into(),
                "--cert-file".into(),
                t.cert.clone().into(),
                "--key-file".into(),
                t.key.clone().into(),
            ],
            None => Vec::new(),
        };
        let m = &mut self.members[i];
        std::fs::create_dir_all(&m.dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(m.dir.join("etcd.log"))
            .unwrap();
        let client = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(require("etcd"))
            .args(["--name", &m.name, "--data-dir"])
            .arg(m.dir.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                state,
            ])
            .args(["--initial-cluster-token", "seawall-test"])
            .args(&tls_args)
            // Fast elections on loopback.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        m.child = Some(child);
    }

    /// Client endpoints of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect()
    }

    /// A coordinator's `[etcd]` section for this cluster over plain
    /// loopback, keys under `prefix`, with the given lease (None: the
    /// coordinator's default).
    pub fn coordinator_section(&self, prefix: &str, lease_ttl: Option<&str>) -> String {
        let endpoints = self
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let lease = lease_ttl
            .map(|t| format!("lease_ttl = \"{t}\"\n"))
            .unwrap_or_default();
        format!("[etcd]\nendpoints = [{endpoints}]\nprefix = \"{prefix}\"\n{lease}allow_plaintext = true\n")
    }

    /// Whether every running member reports healthy now.
    fn healthy(&self) -> bool {
        let running: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect();
        let tls_args: Vec<std::ffi::OsString> = match &self.tls {
            Some(t) => vec![
                "--cacert".into(),
                t.ca.clone().into(),
                "--cert".into(),
                t.client_cert.clone().into(),
                "--key".into(),
                t.client_key.clone().into(),
            ],
            None => Vec::new(),
        };
        Command::new(require("etcdctl"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &running.join(","), "endpoint", "health"])
            .args(&tls_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Waits until every running member reports healthy.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.healthy() {
                return;
            }
            if Instant::now() > deadline {
                let logs: String = self
                    .members
                    .iter()
                    .map(|m| std::fs::read_to_string(m.dir.join("etcd.log")).unwrap_or_default())
                    .map(|l| l.lines().rev().take(5).collect::<Vec<_>>().join("\n"))
                    .collect::<Vec<_>>()
                    .join("\n---\n");
                panic!("etcd did not become healthy within 30 s:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// kill -9 of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.launch(i, "existing");
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
