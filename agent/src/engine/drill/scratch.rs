//! The scratch instances a restore drill makes: one directory per drill
//! under the agent's scratch root, and the servers started in it. Teardown
//! stops every server and removes the directory, then proves both gone (no
//! process, no directory, no listening port). A drill's process can be
//! killed before its teardown (a cancel, a crash), so every drill first
//! sweeps what earlier ones left under the same root.

use nix::sys::signal::Signal;
use seawall_common::{Error, ErrorKind, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A server started for a drill: what it is and the port it answers on.
#[derive(Debug, Clone)]
struct Server {
    what: &'static str,
    port: u16,
}

/// The scratch PostgreSQL's data directory and redis-server's directory,
/// under a drill's scratch directory.
const PG_DIR: &str = "pgdata";
const REDIS_DIR: &str = "redis";
/// The file that makes a directory a drill's scratch directory (it holds
/// the directory's own name): a sweep removes nothing without it.
const MARKER: &str = ".seawall-scratch";

/// Whether `dir` is a scratch directory a drill made: a real directory
/// (not a link) holding the marker file, a plain file naming it.
fn is_scratch(dir: &Path) -> bool {
    let Some(name) = dir.file_name() else {
        return false;
    };
    let marker = dir.join(MARKER);
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir())
        && std::fs::symlink_metadata(&marker).is_ok_and(|m| m.is_file())
        && std::fs::read(&marker).is_ok_and(|b| b == name.as_encoded_bytes())
}

/// Why `root` may not hold scratch directories, if it may not: the root of
/// the file system, the agent's state directory or one holding it, or a
/// PostgreSQL data directory.
pub fn unfit_root(root: &Path, state_dir: &Path) -> Option<String> {
    let clean = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (root, state) = (clean(root), clean(state_dir));
    if root.parent().is_none() {
        return Some(format!(
            "[drills] scratch_dir is {}: give a directory of its own (default: <state_dir>/scratch)",
            root.display()
        ));
    }
    if state.starts_with(&root) {
        return Some(format!(
            "[drills] scratch_dir {} holds the agent's state_dir {}: give a directory of its own (default: <state_dir>/scratch)",
            root.display(),
            state.display()
        ));
    }
    if root.join("PG_VERSION").exists() {
        return Some(format!(
            "[drills] scratch_dir {} is a PostgreSQL data directory: give a directory of its own",
            root.display()
        ));
    }
    None
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

/// Whether `pid` works in `dir` (its current directory is there or
/// below): PostgreSQL and redis-server move into their data directories,
/// so this tells a drill's server from whatever process a stale or
/// restored pid file names.
fn works_in(pid: i32, dir: &Path) -> bool {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return false;
    };
    std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&dir))
}

/// Stops the process of a pid file, if it is a server working in `dir`:
/// `signal`, then SIGKILL after `grace`.
fn stop_pid(file: &Path, dir: &Path, signal: Signal, grace: Duration) -> Option<String> {
    let pid = pid_in(file)?;
    if !alive(pid) || !works_in(pid, dir) {
        return None;
    }
    let target = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(target, signal);
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if alive(pid) {
        let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(100));
    }
    alive(pid).then(|| format!("process {pid} ({}) still runs", file.display()))
}

/// Where a drill's servers keep their pid files, under its scratch
/// directory (the only places looked at: a restored files tree can hold a
/// postmaster.pid naming a process of this host that is no drill's), and
/// the signal that stops each at once. SIGQUIT is PostgreSQL's immediate
/// shutdown: a scratch cluster needs no checkpoint, and its children go
/// with it.
fn server_pidfiles(dir: &Path) -> [(PathBuf, Signal); 2] {
    [
        (dir.join(PG_DIR).join("postmaster.pid"), Signal::SIGQUIT),
        (dir.join(REDIS_DIR).join("redis.pid"), Signal::SIGTERM),
    ]
}

/// Logs what a stop left running, where nobody waits for an answer.
fn warn_left(left: Vec<String>) {
    for l in left {
        tracing::warn!("{l}");
    }
}

/// Stops the servers a drill started in `dir`; what still runs.
fn stop_servers_in(dir: &Path) -> Vec<String> {
    server_pidfiles(dir)
        .iter()
        .filter_map(|(file, signal)| stop_pid(file, dir, *signal, Duration::from_secs(30)))
        .collect()
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
        // Only what a drill made: anything else under the root (another
        // program's data, a directory someone put there) is left alone.
        if !e.file_type().is_ok_and(|t| t.is_dir()) || !is_scratch(&path) {
            continue;
        }
        // A drill still running holds its lock: not ours to remove.
        let lock = lock_path(&path);
        let Ok(Some(_held)) = try_lock(&lock) else {
            continue;
        };
        warn_left(stop_servers_in(&path));
        if super::tree_removal::remove_tree(&path).is_ok() {
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
        let dir = root.join(&safe);
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
        if std::fs::symlink_metadata(&dir).is_ok() {
            if !is_scratch(&dir) {
                drop(lock);
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "{} exists and is not a drill's scratch directory (no {MARKER} naming it): nothing in it is removed; move it, or set [drills] scratch_dir to a directory of its own",
                        dir.display()
                    ),
                ));
            }
            warn_left(stop_servers_in(&dir));
            super::tree_removal::remove_tree(&dir).map_err(|e| Error::io(dir.display(), e))?;
        }
        std::fs::create_dir(&dir).map_err(|e| Error::io(dir.display(), e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| Error::io(dir.display(), e))?;
        std::fs::write(dir.join(MARKER), safe.as_bytes())
            .map_err(|e| Error::io(dir.join(MARKER).display(), e))?;
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

    /// Where the scratch PostgreSQL's data directory goes.
    pub fn postgres_dir(&self) -> PathBuf {
        self.dir.join(PG_DIR)
    }

    /// Where a scratch redis-server works (its pid file: `redis.pid`).
    pub fn redis_dir(&self) -> PathBuf {
        self.dir.join(REDIS_DIR)
    }

    /// Remembers a PostgreSQL server (in [`Scratch::postgres_dir`]) to
    /// stop at teardown.
    pub fn started_postgres(&mut self, port: u16) {
        self.servers.push(Server {
            what: "PostgreSQL",
            port,
        });
    }

    /// Remembers a redis-server (in [`Scratch::redis_dir`]) to stop at
    /// teardown.
    pub fn started_redis(&mut self, port: u16) {
        self.servers.push(Server {
            what: "redis-server",
            port,
        });
    }

    /// Stops every server, removes the directory, and says what is left
    /// (a process, the directory, a listening port); empty when all went.
    pub async fn teardown(mut self) -> Vec<String> {
        self.torn_down = true;
        let servers = std::mem::take(&mut self.servers);
        let mut left = Vec::new();
        let dir = self.dir.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let mut left = stop_servers_in(&dir);
            if let Err(e) = super::tree_removal::remove_tree(&dir) {
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
        for Server { what, port } in servers {
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
            warn_left(stop_servers_in(&self.dir));
            let _ = super::tree_removal::remove_tree(&self.dir);
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
        // Left by a drill whose process died: its directory, no lock held.
        let stale_dir = root.path().join("d0-files");
        std::fs::create_dir(&stale_dir).unwrap();
        std::fs::write(stale_dir.join(MARKER), b"d0-files").unwrap();
        std::fs::write(stale_dir.join("data"), b"x").unwrap();
        std::fs::write(lock_path(&stale_dir), b"").unwrap();
        // Another program's data under the same root, one directory with
        // a marker that names another, one with a lock file beside it.
        let shared = root.path().join("shared/app-data");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::write(shared.join("data"), b"keep").unwrap();
        let copied = root.path().join("copied");
        std::fs::create_dir(&copied).unwrap();
        std::fs::write(copied.join(MARKER), b"d0-files").unwrap();
        std::fs::write(root.path().join("copied.lock"), b"").unwrap();
        let removed = sweep(root.path());
        assert_eq!(removed, vec![stale_dir.display().to_string()]);
        assert!(running.path("data").exists());
        assert!(shared.join("data").exists() && copied.exists());
        // Nor does a drill of that name remove a directory it did not make.
        let err = Scratch::create(root.path(), "shared").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(
            err.to_string()
                .contains("is not a drill's scratch directory"),
            "{err}"
        );
        assert!(shared.join("data").exists());
        // The same name twice at once is refused, not shared.
        let again = Scratch::create(root.path(), "d1-files").unwrap_err();
        assert_eq!(again.kind(), ErrorKind::Locked);
        // Dropped without teardown (a panic): nothing is left.
        let dir = running.dir().to_path_buf();
        drop(running);
        assert!(!dir.exists());
        assert!(!lock_path(&dir).exists());
    }

    #[test]
    fn a_root_holding_the_state_or_a_database_is_refused() {
        let state = Path::new("/var/lib/seawall");
        assert!(unfit_root(Path::new("/"), state).is_some());
        assert!(unfit_root(state, state).is_some());
        assert!(unfit_root(Path::new("/var/lib"), state).is_some());
        assert!(unfit_root(&state.join("scratch"), state).is_none());
        let pg = tempfile::tempdir().unwrap();
        std::fs::write(pg.path().join("PG_VERSION"), b"15\n").unwrap();
        assert!(unfit_root(pg.path(), state)
            .unwrap()
            .contains("PostgreSQL data directory"));
    }

    /// A process that stays until killed, working in `cwd`.
    fn sleeper(cwd: &Path) -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("60")
            .current_dir(cwd)
            .spawn()
            .unwrap()
    }

    fn running(child: &mut std::process::Child) -> bool {
        child.try_wait().unwrap().is_none()
    }

    #[tokio::test]
    async fn teardown_stops_only_servers_working_in_the_scratch_directory() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let scratch = Scratch::create(root.path(), "d2-mixed").unwrap();
        // A restored data directory's postmaster.pid names a process of
        // this host; so does a server pid file whose process works
        // elsewhere. Neither is the drill's to stop.
        let restored = scratch.path("files/var/lib/postgresql/15/main");
        std::fs::create_dir_all(&restored).unwrap();
        let mut bystander = sleeper(elsewhere.path());
        std::fs::write(
            restored.join("postmaster.pid"),
            format!("{}\n", bystander.id()),
        )
        .unwrap();
        std::fs::create_dir_all(scratch.path("redis")).unwrap();
        let mut other = sleeper(elsewhere.path());
        std::fs::write(scratch.path("redis/redis.pid"), other.id().to_string()).unwrap();
        // A server of the drill's, working in its data directory.
        std::fs::create_dir_all(scratch.path("pgdata")).unwrap();
        let mut own = sleeper(&scratch.path("pgdata"));
        std::fs::write(
            scratch.path("pgdata/postmaster.pid"),
            format!("{}\n", own.id()),
        )
        .unwrap();
        let dir = scratch.dir().to_path_buf();
        let left = scratch.teardown().await;
        assert!(left.is_empty(), "{left:?}");
        assert!(!dir.exists());
        let own_gone = own.wait().unwrap();
        assert!(!own_gone.success(), "{own_gone:?}");
        assert!(running(&mut bystander) && running(&mut other));
        bystander.kill().unwrap();
        other.kill().unwrap();
    }
}
