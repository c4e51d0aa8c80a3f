//! PostgreSQL 15 clusters for tests: initdb in a temporary directory, run
//! as the unprivileged `postgres` user when the tests run as root (the
//! server refuses root), listening on a Unix socket and a free port. Seawall
//! itself runs as the same user here, as it does in `archive_command`.

#![allow(dead_code)]

use crate::fixtures::{bin, free_port, running_as_root, PASSWORD};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Directory of the PostgreSQL 15 programs, or a failure naming the installer.
pub fn pg_bin() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("SEAWALL_TEST_PG_BIN")
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
    );
    assert!(
        dir.join("initdb").is_file() && dir.join("pg_basebackup").is_file(),
        "PostgreSQL 15 server programs are not in {}: run scripts/setup.sh (it installs postgresql-15)",
        dir.display()
    );
    dir
}

/// The user servers and seawall run as.
fn pg_user() -> Option<&'static str> {
    running_as_root().then_some("postgres")
}

/// A command run as the PostgreSQL user.
pub fn as_pg(program: &Path) -> Command {
    match pg_user() {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Makes a directory the PostgreSQL user owns.
pub fn pg_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    if let Some(u) = pg_user() {
        let st = Command::new("chown").arg(u).arg(path).status().unwrap();
        assert!(st.success());
    }
}

/// Runs SQL through psql against `dsn`; returns unaligned tuples-only output.
pub fn psql_dsn(dsn: &str, sql: &str) -> String {
    let out = Command::new(pg_bin().join("psql"))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(dsn)
        .arg("-c")
        .arg(sql)
        .output()
        .unwrap();
    check(out, &format!("psql {sql:?}")).trim().to_string()
}

/// Whether psql took `sql` at `dsn` (`PGOPTIONS` set when given), and all
/// it said: for statements a test expects to be refused.
pub fn psql_tried(dsn: &str, options: Option<&str>, sql: &str) -> (bool, String) {
    let mut cmd = Command::new(pg_bin().join("psql"));
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn])
        .args(["-c", sql]);
    if let Some(o) = options {
        cmd.env("PGOPTIONS", o);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// [`psql_dsn`] on database postgres of the server whose socket is in
/// `socket_dir` (a cluster the tests started by hand, or restored).
pub fn psql_at(socket_dir: &Path, port: u16, sql: &str) -> String {
    psql_dsn(
        &format!(
            "host={} port={port} user=postgres dbname=postgres",
            socket_dir.display()
        ),
        sql,
    )
}

/// Gives a file to the PostgreSQL user (a server key must be its own).
pub fn pg_own(path: &Path) {
    if let Some(u) = pg_user() {
        let st = Command::new("chown").arg(u).arg(path).status().unwrap();
        assert!(st.success());
    }
}

fn check(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running cluster, stopped on drop.
pub struct PgCluster {
    pub root: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    stopped: bool,
    /// Words that run the server elsewhere (inside a network namespace).
    prefix: Vec<String>,
}

impl PgCluster {
    /// initdb and start, with `conf` appended to postgresql.conf.
    pub fn start(root: &Path, conf: &str) -> PgCluster {
        PgCluster::start_in(root, conf, Vec::new())
    }

    /// [`PgCluster::start`], the server run after `prefix` (such as
    /// `ip netns exec NAME`).
    pub fn start_in(root: &Path, conf: &str, prefix: Vec<String>) -> PgCluster {
        let bin = pg_bin();
        pg_dir(root);
        let data = root.join("data");
        check(
            as_pg(&bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data)
                .output()
                .unwrap(),
            "initdb",
        );
        let port = free_port();
        let settings = format!(
            "port = {port}\nunix_socket_directories = '{}'\nlisten_addresses = ''\nfsync = off\nfull_page_writes = on\nmax_wal_senders = 4\nwal_level = replica\n{conf}\n",
            root.display()
        );
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap();
        text.push_str(&settings);
        std::fs::write(&conf_path, text).unwrap();
        let mut c = PgCluster {
            root: root.to_path_buf(),
            data,
            port,
            stopped: true,
            prefix,
        };
        c.start_server();
        c
    }

    /// Starts the server of an existing data directory.
    pub fn start_server(&mut self) {
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest);
                if let Some(u) = pg_user() {
                    c.args(["runuser", "-u", u, "--"]);
                }
                c.arg(pg_bin().join("pg_ctl"));
                c
            }
            None => as_pg(&pg_bin().join("pg_ctl")),
        };
        check(
            cmd.arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.root.join("server.log"))
                .args(["-w", "start"])
                .output()
                .unwrap(),
            "pg_ctl start",
        );
        self.stopped = false;
    }

    /// Gives user postgres `password` and requires it over TCP (SCRAM);
    /// the Unix socket stays trusted for the fixture's own tools. The
    /// cluster must listen on 127.0.0.1.
    pub fn require_password(&self, password: &str) {
        self.sql(
            "postgres",
            &format!("SET password_encryption = 'scram-sha-256'; ALTER USER postgres PASSWORD '{password}'"),
        );
        std::fs::write(
            self.data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        let reload = as_pg(&pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("reload")
            .status()
            .unwrap();
        assert!(reload.success());
        // The reload is asynchronous: wait until a password-less TCP
        // connection is refused.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new(pg_bin().join("psql"))
                .args(["-X", "-w", "-c", "select 1", "-d"])
                .arg(format!(
                    "host=127.0.0.1 port={} user=postgres dbname=postgres",
                    self.port
                ))
                .env_remove("PGPASSWORD")
                .output()
                .unwrap();
            if !out.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "pg_hba.conf was not reloaded");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Connection string for database `db`.
    pub fn dsn(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.root.display(),
            self.port
        )
    }

    /// Runs SQL through psql; returns unaligned tuples-only output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        psql_dsn(&self.dsn(db), sql)
    }

    /// Runs a PostgreSQL client program against this server.
    pub fn tool(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(pg_bin().join(program))
            .args(args)
            .output()
            .unwrap();
        check(out, program)
    }

    /// A plain-text dump of a database, for comparing two databases.
    pub fn dump(&self, db: &str) -> String {
        let dsn = self.dsn(db);
        self.tool(
            "pg_dump",
            &[
                "--format=plain",
                "--restrict-key=seawalltest",
                "--dbname",
                &dsn,
            ],
        )
    }

    /// Forces a WAL switch and waits until the archiver has archived it.
    pub fn switch_and_archive(&self) -> String {
        let seg = self.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = self.sql(
                "postgres",
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
            );
            if last.as_str() >= seg.as_str() {
                return seg;
            }
            assert!(
                Instant::now() < deadline,
                "segment {seg} was not archived within 60 s; server log: {}",
                std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if !self.stopped {
            let _ = as_pg(&pg_bin().join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.stopped = true;
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops a server seawall started in `data` (a restored copy).
pub fn stop_datadir(data: &Path) {
    let _ = as_pg(&pg_bin().join("pg_ctl"))
        .arg("-D")
        .arg(data)
        .args(["-m", "immediate", "-w", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A local repository owned by the PostgreSQL user, with a password file
/// that user can read, and seawall run as that user.
pub struct PgRepo {
    pub dir: PathBuf,
    pub password_file: PathBuf,
    pub spool: PathBuf,
}

impl PgRepo {
    /// Creates and initialises the repository under `root`.
    pub fn init(root: &Path) -> PgRepo {
        pg_dir(root);
        let password_file = root.join("password");
        std::fs::write(&password_file, PASSWORD).unwrap();
        std::fs::set_permissions(
            &password_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        if let Some(u) = pg_user() {
            Command::new("chown")
                .arg(u)
                .arg(&password_file)
                .status()
                .unwrap();
        }
        let r = PgRepo {
            dir: root.join("repo"),
            password_file,
            spool: root.join("spool"),
        };
        r.ok(&["init"]);
        r
    }

    /// The seawall command line as archive_command would run it.
    pub fn command_line(&self, rest: &str) -> String {
        format!(
            "{} --repo {} --password-file {} {rest}",
            bin(),
            self.dir.display(),
            self.password_file.display()
        )
    }

    /// A seawall command as the PostgreSQL user.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = as_pg(Path::new(bin()));
        c.arg("--repo")
            .arg(&self.dir)
            .arg("--password-file")
            .arg(&self.password_file)
            .args(args)
            .env("SEAWALL_PG_BIN", pg_bin())
            .env("SEAWALL_SPOOL", &self.spool)
            .env_remove("SEAWALL_PASSWORD")
            .env_remove("SEAWALL_REPOSITORY")
            .stdin(Stdio::null());
        c
    }

    /// Runs seawall, whatever the outcome.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs seawall, requiring success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        check(self.run(args), &format!("seawall {args:?}"))
    }

    /// Runs seawall --json, requiring success.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

/// archive_command settings that archive into `repo`.
pub fn archiving(repo: &PgRepo) -> String {
    format!(
        "archive_mode = on\narchive_command = 'SEAWALL_SPOOL={} SEAWALL_PG_BIN={} {}'\narchive_timeout = 0\n",
        repo.spool.display(),
        pg_bin().display(),
        repo.command_line("wal-push %p")
    )
}
