//! The PostgreSQL programs Seawall drives (`pg_dump`, `pg_basebackup`,
//! `pg_restore`, `pg_ctl`, ...): finding them, running them, and turning a
//! failed run into an error that quotes what the program said.

use seawall_common::{Error, ErrorKind, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Bytes of a program's stderr kept for error messages.
const STDERR_TAIL: usize = 4096;

/// Where the PostgreSQL programs are: a given directory, or `PATH`.
#[derive(Debug, Clone, Default)]
pub struct PgTools {
    /// Directory holding the programs (such as /usr/lib/postgresql/15/bin).
    pub bin_dir: Option<PathBuf>,
}

impl PgTools {
    /// The full path of `program`, or an error saying how to provide it.
    pub fn path(&self, program: &str) -> Result<PathBuf> {
        let found = match &self.bin_dir {
            Some(dir) => Some(dir.join(program)).filter(|p| p.is_file()),
            None => std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(program))
                    .find(|p| p.is_file())
            }),
        };
        found.ok_or_else(|| {
            let place = match &self.bin_dir {
                Some(d) => format!("in {}", d.display()),
                None => "on PATH".to_string(),
            };
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "{program} not found {place}: install the PostgreSQL programs (Debian: postgresql-15) or pass --pg-bin DIR"
                ),
            )
        })
    }

    /// A command for `program` with stdin closed and stdout and stderr piped.
    pub fn command(&self, program: &str) -> Result<Command> {
        let mut cmd = Command::new(self.path(program)?);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok(cmd)
    }

    /// The same program for tokio, for children fed from async code.
    pub fn async_command(&self, program: &str) -> Result<tokio::process::Command> {
        let mut cmd = tokio::process::Command::new(self.path(program)?);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok(cmd)
    }
}

/// Keeps the end of a text, for quoting a program's complaint.
pub fn tail(text: &str) -> String {
    let t = text.trim();
    if t.len() <= STDERR_TAIL {
        return t.to_string();
    }
    let mut start = t.len() - STDERR_TAIL;
    while !t.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &t[start..])
}

/// A running program whose stderr is collected on a thread.
pub struct Running {
    child: std::process::Child,
    stderr: Option<std::thread::JoinHandle<String>>,
    what: String,
}

impl Running {
    /// Starts `cmd`; `what` names it in errors.
    pub fn spawn(mut cmd: Command, what: &str) -> Result<Running> {
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {what}"), e))?;
        let stderr = child.stderr.take().map(|mut s| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        });
        Ok(Running {
            child,
            stderr,
            what: what.to_string(),
        })
    }

    /// The program's stdout, with a 1 MiB pipe buffer: fewer wake-ups per byte.
    pub fn stdout(&mut self) -> Result<std::process::ChildStdout> {
        let out = self
            .child
            .stdout
            .take()
            .ok_or_else(|| Error::new(ErrorKind::Io, format!("{} has no stdout", self.what)))?;
        let _ = nix::fcntl::fcntl(&out, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
        Ok(out)
    }

    /// Stops the program (after a failure on our side).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the end; returns stderr, or an error quoting it.
    pub fn wait(mut self) -> Result<String> {
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io(format!("waiting for {}", self.what), e))?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if status.success() {
            Ok(stderr)
        } else {
            Err(Error::new(
                ErrorKind::Io,
                format!("{} failed ({status}): {}", self.what, tail(&stderr)),
            ))
        }
    }
}

/// Runs a program to the end and returns its stdout, or an error quoting stderr.
pub async fn output(mut cmd: tokio::process::Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .await
        .map_err(|e| Error::io(format!("running {what}"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::new(
            ErrorKind::Io,
            format!(
                "{what} failed ({}): {}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr))
            ),
        ))
    }
}

/// Whether `dir` is absent or an empty directory.
pub fn absent_or_empty(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io(dir.display(), e)),
    }
}
