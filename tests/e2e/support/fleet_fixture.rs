//! A fleet on loopback: a private CA from `seawall certs`, coordinator
//! replicas and agents as real `seawall` processes, and the operator
//! commands run against them.

#![allow(dead_code)]

use crate::fixtures::{bin, free_port};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The CA and certificates of a test fleet.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// A CA in `dir`.
    pub fn new(dir: &Path) -> Pki {
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        pki.certs(&["ca"]);
        pki.certs(&["operator", "--name", "ops"]);
        pki
    }

    /// Runs `seawall certs` in the CA's directory.
    pub fn certs(&self, args: &[&str]) {
        let out = Command::new(bin())
            .arg("certs")
            .arg("--dir")
            .arg(&self.dir)
            .arg("-q")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `[tls]` lines for a holder's files.
    pub fn tls_toml(&self, name: &str) -> String {
        format!(
            "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.dir.join("ca.pem").display(),
            self.dir.join(format!("{name}.pem")).display(),
            self.dir.join(format!("{name}.key")).display()
        )
    }

    /// Operator flags with the `ops` certificate.
    pub fn operator_flags(&self, coordinator: &str) -> Vec<String> {
        vec![
            "--coordinator".into(),
            coordinator.into(),
            "--ca".into(),
            self.dir.join("ca.pem").display().to_string(),
            "--cert".into(),
            self.dir.join("ops.pem").display().to_string(),
            "--key".into(),
            self.dir.join("ops.key").display().to_string(),
        ]
    }
}

/// A daemon process, killed on drop.
pub struct Daemon {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
    pub config: PathBuf,
    args: Vec<String>,
    /// Words it runs after (such as `ip netns exec NAME`).
    prefix: Vec<String>,
}

impl Daemon {
    /// Starts `seawall <args>` with its log in `log`.
    pub fn start(name: &str, args: Vec<String>, config: PathBuf, log: PathBuf) -> Daemon {
        let mut d = Daemon {
            name: name.into(),
            child: None,
            log,
            config,
            args,
            prefix: Vec::new(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = cmd
            .args(&self.args)
            .env("SEAWALL_LOG", "info")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process has ended (reaping it if so).
    pub fn exited(&mut self) -> bool {
        matches!(
            self.child.as_mut().map(|c| c.try_wait()),
            Some(Ok(Some(_))) | None
        )
    }

    /// Starts it again with the same configuration.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGSTOP or SIGCONT.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process cannot die of SIGKILL until continued.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
        self.kill9();
    }
}

/// Waits until `port` accepts connections.
pub fn wait_port(port: u16, what: &Daemon) {
    wait_listening("127.0.0.1", port, what)
}

/// Waits until `host`:`port` accepts connections.
pub fn wait_listening(host: &str, port: u16, what: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect((host, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} did not listen on {port}: {}",
            what.name,
            what.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A coordinator replica's ports and process.
pub struct Replica {
    pub id: String,
    pub port: u16,
    pub metrics_port: u16,
    pub daemon: Daemon,
    /// The address it listens on.
    pub host: String,
}

impl Replica {
    /// `host:port` of its gRPC listener.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Starts a coordinator replica; `store` is the `[etcd]` or `[dev]` section
/// (top-level keys may come first), `schedules` the `[[schedules]]` tables.
pub fn start_replica(
    pki: &Pki,
    dir: &Path,
    id: &str,
    store: &str,
    schedules: &str,
    dev: bool,
) -> Replica {
    start_replica_at(pki, dir, id, store, schedules, dev, "127.0.0.1")
}

/// [`start_replica`] listening on `host` (an address of this machine),
/// its certificate naming it.
pub fn start_replica_at(
    pki: &Pki,
    dir: &Path,
    id: &str,
    store: &str,
    schedules: &str,
    dev: bool,
    host: &str,
) -> Replica {
    pki.certs(&[
        "coordinator",
        "--name",
        id,
        "--host",
        host,
        "--host",
        "127.0.0.1",
        "--host",
        "localhost",
    ]);
    let port = free_port();
    let metrics_port = free_port();
    let config = dir.join(format!("{id}.toml"));
    std::fs::write(
        &config,
        format!(
            "id = \"{id}\"\nlisten = \"{host}:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\nheartbeat = \"1s\"\njob_timeout = \"60s\"\n{store}\n{}\n{schedules}\n",
            pki.tls_toml(id)
        ),
    )
    .unwrap();
    let mut args = vec![
        "coordinator".to_string(),
        "--config".into(),
        config.display().to_string(),
    ];
    if dev {
        args.push("--dev".into());
    }
    let daemon = Daemon::start(id, args, config, dir.join(format!("{id}.log")));
    wait_listening(host, port, &daemon);
    Replica {
        id: id.into(),
        port,
        metrics_port,
        daemon,
        host: host.to_string(),
    }
}

/// Starts an agent serving one files source `files` from `data`, with a
/// local repository in `dir`.
pub fn start_agent(
    pki: &Pki,
    dir: &Path,
    name: &str,
    region: &str,
    coordinators: &[String],
    data: &Path,
) -> Daemon {
    let sources = format!(
        "[[sources]]\nname = \"files\"\nkind = \"files\"\npaths = [\"{}\"]\n[sources.retention]\nkeep_last = 3\n",
        data.display()
    );
    start_agent_with(pki, dir, name, region, coordinators, &sources)
}

/// Starts an agent serving the `[[sources]]` tables given, with a local
/// repository in `dir`.
pub fn start_agent_with(
    pki: &Pki,
    dir: &Path,
    name: &str,
    region: &str,
    coordinators: &[String],
    sources: &str,
) -> Daemon {
    start_agent_on(pki, dir, name, region, coordinators, sources, None)
}

/// [`start_agent_with`], with the `[repository]` table's body given instead
/// of the local repository (which is still created and initialised).
pub fn start_agent_on(
    pki: &Pki,
    dir: &Path,
    name: &str,
    region: &str,
    coordinators: &[String],
    sources: &str,
    repository: Option<&str>,
) -> Daemon {
    start_agent_in(
        pki,
        dir,
        name,
        region,
        coordinators,
        sources,
        repository,
        Vec::new(),
    )
}

/// [`start_agent_on`], the agent run after `prefix` (such as `ip netns
/// exec NAME`).
#[allow(clippy::too_many_arguments)]
pub fn start_agent_in(
    pki: &Pki,
    dir: &Path,
    name: &str,
    region: &str,
    coordinators: &[String],
    sources: &str,
    repository: Option<&str>,
    prefix: Vec<String>,
) -> Daemon {
    pki.certs(&["agent", "--name", name, "--region", region]);
    let repo = dir.join(format!("repo-{name}"));
    let pw = dir.join(format!("{name}.password"));
    std::fs::write(&pw, "fleet test password").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let init = Command::new(bin())
        .args(["-q", "-r"])
        .arg(&repo)
        .arg("--password-file")
        .arg(&pw)
        .arg("init")
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let list = coordinators
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config = dir.join(format!("{name}.toml"));
    // Top-level keys given before the first table go before every table.
    let tables_at = sources
        .lines()
        .scan(0, |at, line| {
            let start = *at;
            *at += line.len() + 1;
            Some((start, line))
        })
        .find(|(_, line)| line.trim_start().starts_with('['))
        .map_or(sources.len(), |(at, _)| at);
    let (top, sources) = sources.split_at(tables_at);
    std::fs::write(
        &config,
        format!(
            "id = \"{name}\"\nregion = \"{region}\"\ncoordinators = [{list}]\nshutdown_grace = \"10s\"\nstate_dir = \"{}\"\n{top}\n{}\n[repository]\n{}\n\n{sources}",
            dir.join(format!("state-{name}")).display(),
            pki.tls_toml(name),
            repository.map(str::to_string).unwrap_or_else(|| format!(
                "repo = \"{}\"\npassword_file = \"{}\"",
                repo.display(),
                pw.display()
            )),
        ),
    )
    .unwrap();
    let mut d = Daemon {
        name: name.into(),
        child: None,
        log: dir.join(format!("{name}.log")),
        config: config.clone(),
        args: vec![
            "agent".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        prefix,
    };
    d.spawn();
    d
}

/// Runs an operator command with `--json`.
pub fn op(pki: &Pki, coordinator: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--json")
        .args(args)
        .args(pki.operator_flags(coordinator))
        .output()
        .unwrap()
}

/// Triggers a backup of `source` in `region` and waits for it; it must succeed.
pub fn backup_now(pki: &Pki, coordinator: &str, region: &str, source: &str) {
    let out = op(
        pki,
        coordinator,
        &[
            "backup", "--now", "--region", region, "--source", source, "--wait",
        ],
    );
    assert!(
        out.status.success(),
        "backup of {region}/{source}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs an operator command and parses its JSON.
pub fn op_json(pki: &Pki, coordinator: &str, args: &[&str]) -> serde_json::Value {
    let out = op(pki, coordinator, args);
    assert!(
        out.status.success(),
        "seawall {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// [`eventually`], failing with the end of each daemon's log, so a
/// timeout shows what the processes were doing.
pub fn eventually_or_logs<T>(
    secs: u64,
    what: &str,
    daemons: &[&Daemon],
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            let logs: String = daemons
                .iter()
                .map(|d| {
                    let text = d.log_text();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                    format!("\n--- {} (last 40 lines):\n{tail}", d.name)
                })
                .collect();
            panic!("timed out after {secs}s waiting for {what}{logs}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `f` until it returns Some, or fails after `secs` saying `what`.
pub fn eventually<T>(secs: u64, what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_or_logs(secs, what, &[], f)
}
