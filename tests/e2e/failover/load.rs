//! Load generators writing to the primaries while a failover runs, counting
//! what their server acknowledged.

use crate::pg_fixture::PgCluster;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Writes rows 1, 2, 3... to a table, one autocommitted INSERT each, and
/// counts those PostgreSQL acknowledged (in order: one session).
pub(super) struct PgLoad {
    pub(super) child: Child,
    pub(super) acked: Arc<AtomicU64>,
    /// When each row was acknowledged (ms since the epoch), by row.
    pub(super) times: Arc<std::sync::Mutex<Vec<i64>>>,
}

impl PgLoad {
    pub(super) fn start(pg: &PgCluster) -> PgLoad {
        PgLoad::on(&pg.dsn("postgres"), 1)
    }

    /// Rows `first`, `first + 1`... through the server at `dsn`.
    pub(super) fn on(dsn: &str, first: u64) -> PgLoad {
        crate::pg_fixture::psql_dsn(
            dsn,
            "CREATE TABLE IF NOT EXISTS load (n bigint PRIMARY KEY)",
        );
        let mut child = Command::new(crate::pg_fixture::pg_bin().join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for n in first.. {
                if writeln!(stdin, "INSERT INTO load VALUES ({n}) RETURNING n;").is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let acked = Arc::new(AtomicU64::new(0));
        let times: Arc<std::sync::Mutex<Vec<i64>>> = Arc::default();
        let (seen, at) = (acked.clone(), times.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(n) = line.trim().parse::<u64>() {
                    at.lock().unwrap().push(now_ms());
                    seen.store(n, Ordering::SeqCst);
                }
            }
        });
        PgLoad {
            child,
            acked,
            times,
        }
    }

    pub(super) fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// The lost writes' issue window: from when the first row after
    /// `present` was sent to when row `acked` was (each row is sent when
    /// the one before it is acknowledged). The server's commit times of
    /// those rows lie within it; their acknowledgements come later.
    pub(super) fn issued_ms(&self, acked: u64, present: u64) -> i64 {
        if present >= acked || acked < 2 || present < 1 {
            return 0;
        }
        let times = self.times.lock().unwrap();
        times[acked as usize - 2] - times[present as usize - 1]
    }

    /// When row `n` (from 1) was acknowledged, unix ms.
    pub(super) fn acked_at(&self, n: u64) -> Option<i64> {
        let times = self.times.lock().unwrap();
        times.get((n as usize).checked_sub(1)?).copied()
    }

    /// The loss, as time: from the first acknowledged row after `present`
    /// (the newest the new primary has) to row `acked` (rows from 1).
    pub(super) fn lost_ms(&self, acked: u64, present: u64) -> i64 {
        if present >= acked {
            return 0;
        }
        let times = self.times.lock().unwrap();
        times[acked as usize - 1] - times[present as usize]
    }
}

impl Drop for PgLoad {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SET load:1, load:2... through one redis-cli session; counts the OKs.
pub(super) struct RedisLoad {
    pub(super) child: Child,
    pub(super) acked: Arc<AtomicU64>,
}

impl RedisLoad {
    pub(super) fn start(port: u16) -> RedisLoad {
        RedisLoad::on(port, "load")
    }

    /// SET `prefix`:1, `prefix`:2...
    pub(super) fn on(port: u16, prefix: &'static str) -> RedisLoad {
        RedisLoad::on_at("127.0.0.1", port, prefix)
    }

    /// [`RedisLoad::on`] the server at `host`.
    pub(super) fn on_at(host: &str, port: u16, prefix: &'static str) -> RedisLoad {
        let mut child = Command::new("redis-cli")
            .args(["-h", host, "-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for n in 1.. {
                if writeln!(stdin, "SET {prefix}:{n} {n}").is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let acked = Arc::new(AtomicU64::new(0));
        let seen = acked.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim() == "OK" {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        RedisLoad { child, acked }
    }

    pub(super) fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }
}

impl Drop for RedisLoad {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
