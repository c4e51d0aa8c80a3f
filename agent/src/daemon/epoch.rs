//! The newest fencing epoch this agent has obeyed, kept on disk so a
//! restarted agent still refuses a deposed leader. A command with an older
//! epoch is refused; a newer one raises the mark before it is obeyed.

use seawall_common::{Error, Result};
use std::path::PathBuf;
use std::sync::Mutex;

/// The epoch mark.
#[derive(Debug)]
pub struct EpochGuard {
    path: PathBuf,
    newest: Mutex<u64>,
}

/// What to do with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Obey it.
    Obey,
    /// Refuse it: the agent has seen this newer epoch.
    Refuse(u64),
    /// Refuse it: no store issues such an epoch (etcd revisions are
    /// signed 64-bit numbers), so it is forged; the mark is not raised.
    Impossible,
}

/// The largest epoch a store can issue: etcd's revision is an i64.
pub const MAX_EPOCH: u64 = i64::MAX as u64;

impl EpochGuard {
    /// Loads the mark from `state_dir/epoch` (0 when absent).
    pub fn open(state_dir: &std::path::Path) -> Result<EpochGuard> {
        std::fs::create_dir_all(state_dir).map_err(|e| Error::io(state_dir.display(), e))?;
        let path = state_dir.join("epoch");
        let newest = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| {
                Error::corrupt(format!(
                    "{} does not hold an epoch number: remove it only if no old coordinator can still reach this agent",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        Ok(EpochGuard {
            path,
            newest: Mutex::new(newest),
        })
    }

    /// The newest epoch seen.
    pub fn newest(&self) -> u64 {
        self.newest.lock().map(|n| *n).unwrap_or(u64::MAX)
    }

    /// Checks a command's epoch; a newer one is written down first.
    pub fn check(&self, epoch: u64) -> Result<Verdict> {
        let mut newest = self
            .newest
            .lock()
            .map_err(|_| Error::corrupt("epoch mark poisoned"))?;
        if epoch > MAX_EPOCH {
            return Ok(Verdict::Impossible);
        }
        if epoch < *newest {
            return Ok(Verdict::Refuse(*newest));
        }
        if epoch > *newest {
            self.persist(epoch)?;
            *newest = epoch;
        }
        Ok(Verdict::Obey)
    }
}

/// Sets the mark of the agent whose state is in `state_dir` to `epoch`,
/// for an operator recovering from a forged epoch (the coordinator names
/// the epoch to set); returns the mark it replaced. Run it with the agent
/// stopped.
pub fn reset(state_dir: &std::path::Path, epoch: u64) -> Result<u64> {
    let guard = EpochGuard::open(state_dir)?;
    let old = guard.newest();
    guard.persist(epoch)?;
    Ok(old)
}

impl EpochGuard {
    /// Writes the mark durably: epochs change only with the leader, and a
    /// mark lost in a power cut would let a deposed leader command again.
    fn persist(&self, epoch: u64) -> Result<()> {
        super::durable::write(&self.path, epoch.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_older_epochs_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let g = EpochGuard::open(dir.path()).unwrap();
        assert_eq!(g.check(5).unwrap(), Verdict::Obey);
        assert_eq!(g.check(5).unwrap(), Verdict::Obey);
        assert_eq!(g.check(4).unwrap(), Verdict::Refuse(5));
        drop(g);
        let g = EpochGuard::open(dir.path()).unwrap();
        assert_eq!(g.newest(), 5);
        assert_eq!(g.check(3).unwrap(), Verdict::Refuse(5));
        assert_eq!(g.check(9).unwrap(), Verdict::Obey);
        // A forged epoch beyond any etcd revision does not move the mark.
        assert_eq!(g.check(u64::MAX).unwrap(), Verdict::Impossible);
        assert_eq!(g.newest(), 9);
        drop(g);
        // An operator lowers a mark a forged (but possible) epoch raised.
        let g = EpochGuard::open(dir.path()).unwrap();
        assert_eq!(g.check(1 << 40).unwrap(), Verdict::Obey);
        drop(g);
        assert_eq!(reset(dir.path(), 9).unwrap(), 1 << 40);
        let g = EpochGuard::open(dir.path()).unwrap();
        assert_eq!(g.check(9).unwrap(), Verdict::Obey);
    }
}
