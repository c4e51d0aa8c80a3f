//! The scratch instances a restore drill makes: one directory per drill
//! under the agent's scratch root, and the servers started in it. Teardown
//! stops every server and removes the directory, then proves both gone (no
//! process, no directory, no listening port). A drill's process can be
//! killed before its teardown (a cancel, a crash), so every drill first
//! sweeps what earlier ones left under the same root.

use crate::engine::postgres::PgTools;
use seawall_common::{Error, ErrorKind, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A server started for a drill.
#[derive(Debug, Clone)]
enum Server {
    /// A PostgreSQL data directory (postmaster.pid names the process).
    Postgres {
        datadir: PathBuf,
        port: u16,
        run_as: Option<String>,
        tools: PgTools,
    },
    /// A redis-server daemon and its pid file.
    Redis { pidfile: PathBuf, port: u16 },
}

/// One drill's scratch directory and servers.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    servers: Vec<Server>,
    torn_down: bool,
    /// Held while the drill runs (`<dir>.lock` beside the directory), so a
    /// sweep by a drill running at the same time leaves this one alone;
    /// the kernel lets go of it when the drill's process dies.
    lock: Option<nix::fcntl::Flock<std::fs::File>>,
    lock_path: PathBuf,
}

/// The lock beside scratch directory `dir`.
fn lock_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    dir.with_file_name(name)
}

/// Takes `path`'s lock without waiting; None when another holds it.
fn try_lock(path: &Path) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path.display(), e))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(Error::new(
            ErrorKind::Io,
            format!("locking {}: {e}", path.display()),
        )),
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("binding a loopback port for a scratch server", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("reading a loopback port", e))
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// The pid in the first line of a pid file.
fn pid_in(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` still runs: a daemonized server's parent is init, which
/// may reap it late, and a zombie holds no port, file or memory.
fn alive(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses.
            let after = stat.rsplit_once(')')?.1;
            after
                .split_whitespace()
                .next()
                .map(|st| st == "Z" || st == "X")
        })
        .unwrap_or(false);
    !zombie
}

/// Stops the process of a pid file: SIGTERM, then SIGKILL after `grace`.
fn stop_pid(file: &Path, grace: Duration) -> Option<String> {
    let pid = pid_in(file)?;
    let target = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(100));
    }
    alive(pid).then(|| format!("process {pid} ({}) still runs", file.display()))
}

/// Stops every server found under `dir` by its pid file (postmaster.pid,
/// redis.pid), deepest first.
fn stop_all_under(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            stop_all_under(&path);
        } else if matches!(
            path.file_name().and_then(|n| n.to_str()),
            Some("postmaster.pid" | "redis.pid")
        ) {
            if let Some(left) = stop_pid(&path, Duration::from_secs(10)) {
                tracing::warn!("{left}");
            }
        }
    }
}

/// Removes what earlier drills left under `root` (their servers stopped
/// first); returns the directories removed.
pub fn sweep(root: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return removed;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // A drill still running holds its lock: not ours to remove.
        let lock = lock_path(&path);
        let Ok(Some(_held)) = try_lock(&lock) else {
            continue;
        };
        stop_all_under(&path);
        if std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path.display().to_string());
        }
        let _ = std::fs::remove_file(&lock);
    }
    removed
}

impl Scratch {
    /// Makes `root/name`, world-traversable so a server run as another user
    /// reaches its directory inside (the contents keep their own modes).
    pub fn create(root: &Path, name: &str) -> Result<Scratch> {
        use std::os::unix::fs::PermissionsExt;
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = root.join(safe);
        std::fs::create_dir_all(root).map_err(|e| Error::io(root.display(), e))?;
        let lock_path = lock_path(&dir);
        let lock = try_lock(&lock_path)?.ok_or_else(|| {
            Error::new(
                ErrorKind::Locked,
                format!(
                    "another drill is using {} (its lock {} is held)",
                    dir.display(),
                    lock_path.display()
                ),
            )
        })?;
        if dir.exists() {
            stop_all_under(&dir);
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        }
        std::fs::create_dir(&dir).map_err(|e| Error::io(dir.display(), e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| Error::io(dir.display(), e))?;
        Ok(Scratch {
            dir,
            servers: Vec::new(),
            torn_down: false,
            lock: Some(lock),
            lock_path,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Remembers a PostgreSQL server to stop at teardown.
    pub fn started_postgres(
        &mut self,
        datadir: PathBuf,
        port: u16,
        run_as: Option<String>,
        tools: PgTools,
    ) {
        self.servers.push(Server::Postgres {
            datadir,
            port,
            run_as,
            tools,
        });
    }

    /// Remembers a redis-server to stop at teardown.
    pub fn started_redis(&mut self, pidfile: PathBuf, port: u16) {
        self.servers.push(Server::Redis { pidfile, port });
    }

    /// Stops every server, removes the directory, and says what is left
    /// (a process, the directory, a listening port); empty when all went.
    pub async fn teardown(mut self) -> Vec<String> {
        self.torn_down = true;
        let servers = std::mem::take(&mut self.servers);
        let mut left = Vec::new();
        for s in &servers {
            if let Server::Postgres {
                datadir,
                run_as,
                tools,
                ..
            } = s
            {
                if datadir.join("postmaster.pid").exists() {
                    if let Ok(program) = tools.path("pg_ctl") {
                        let mut cmd =
                            crate::engine::postgres::recovery::as_user(program, run_as.as_deref());
                        cmd.arg("-D")
                            .arg(datadir)
                            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                            .stdin(std::process::Stdio::null())
                            .stdout(std::process::Stdio::null())
                            .stderr(std::process::Stdio::null());
                        let _ = cmd.status().await;
                    }
                }
            }
        }
        let dir = self.dir.clone();
        let pidfiles: Vec<PathBuf> = servers
            .iter()
            .filter_map(|s| match s {
                Server::Redis { pidfile, .. } => Some(pidfile.clone()),
                Server::Postgres { .. } => None,
            })
            .collect();
        let swept = tokio::task::spawn_blocking(move || {
            let mut left: Vec<String> = pidfiles
                .iter()
                .filter_map(|p| stop_pid(p, Duration::from_secs(10)))
                .collect();
            stop_all_under(&dir);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    left.push(format!("directory {} not removed: {e}", dir.display()));
                }
            }
            left
        })
        .await;
        match swept {
            Ok(l) => left.extend(l),
            Err(e) => left.push(format!("teardown stopped: {e}")),
        }
        let _ = std::fs::remove_file(&self.lock_path);
        self.lock = None;
        for s in &servers {
            let (port, what) = match s {
                Server::Postgres { port, .. } => (*port, "PostgreSQL"),
                Server::Redis { port, .. } => (*port, "redis-server"),
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while port_open(port) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if port_open(port) {
                left.push(format!("the scratch {what} port {port} still answers"));
            }
        }
        left
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.torn_down {
            stop_all_under(&self.dir);
            let _ = std::fs::remove_dir_all(&self.dir);
            let _ = std::fs::remove_file(&self.lock_path);
        }
    }
}

/// An error for a scratch directory that cannot be used.
pub fn unusable(root: &Path, e: Error) -> Error {
    Error::new(
        ErrorKind::Io,
        format!(
            "the drill scratch directory {} cannot be used ({e}): set [drills] scratch_dir in agent.toml to a directory on a disk with room",
            root.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_removes_what_a_dead_drill_left_and_spares_a_running_one() {
        let root = tempfile::tempdir().unwrap();
        let running = Scratch::create(root.path(), "d1-files").unwrap();
        std::fs::write(running.path("data"), b"x").unwrap();
        // Left by a drill whose process died: a directory and no lock held.
        let stale = root.path().join("d0-files");
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("data"), b"x").unwrap();
        let removed = sweep(root.path());
        assert_eq!(removed, vec![stale.display().to_string()]);
        assert!(running.path("data").exists());
        // The same name twice at once is refused, not shared.
        let again = Scratch::create(root.path(), "d1-files").unwrap_err();
        assert_eq!(again.kind(), ErrorKind::Locked);
        // Dropped without teardown (a panic): nothing is left.
        let dir = running.dir().to_path_buf();
        drop(running);
        assert!(!dir.exists());
        assert!(!lock_path(&dir).exists());
    }
}
