//! Generated sample data for the demo and the benchmarks: a database-dump-like
//! text file (varied, compressible, as real dumps are) and many small files
//! of mixed sizes, with symlinks and an empty directory.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

const WORDS: [&str; 32] = [
    "agent",
    "task",
    "pending",
    "session",
    "region",
    "primary",
    "replica",
    "backup",
    "restore",
    "verify",
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "queue",
    "worker",
    "metric",
    "latency",
    "error",
    "warning",
    "ok",
    "timeout",
    "retry",
    "commit",
    "rollback",
    "index",
    "table",
    "vacuum",
    "checkpoint",
    "snapshot",
];

/// A small fast PRNG: the data must be varied, not cryptographic.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// Next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One dump-like line.
pub fn dump_line(rng: &mut Rng, row: u64, out: &mut Vec<u8>) {
    let r = rng.next();
    let _ = write!(
        out,
        "{row}\tuser_{}\t{}-{:02}-{:02} {:02}:{:02}:{:02}\t{:016x}\t{}.{:02}\t",
        r % 100_000,
        2020 + (r >> 20) % 7,
        1 + (r >> 24) % 12,
        1 + (r >> 28) % 28,
        (r >> 33) % 24,
        (r >> 38) % 60,
        (r >> 44) % 60,
        rng.next(),
        (r >> 50) % 10_000,
        r % 100
    );
    let words = 4 + rng.next() % 12;
    for i in 0..words {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(WORDS[(rng.next() % WORDS.len() as u64) as usize].as_bytes());
    }
    out.push(b'\n');
}

/// Writes a dump-like file of about `bytes` bytes.
pub fn write_dump(path: &Path, bytes: u64, seed: u64) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut rng = Rng::new(seed);
    let mut buf = Vec::with_capacity(1 << 20);
    let mut written = 0u64;
    let mut row = 0u64;
    f.write_all(b"COPY public.events (id, owner, created_at, hash, amount, note) FROM stdin;\n")?;
    while written < bytes {
        buf.clear();
        while buf.len() < (1 << 20) {
            dump_line(&mut rng, row, &mut buf);
            row += 1;
        }
        f.write_all(&buf)?;
        written += buf.len() as u64;
    }
    f.flush()?;
    Ok(())
}

/// Writes `count` small files (0 to 64 KiB, mixed text and random) under `dir`, 100 per folder.
pub fn write_small_files(dir: &Path, count: u64, seed: u64) -> Result<u64> {
    let mut rng = Rng::new(seed);
    let mut total = 0;
    let mut buf = Vec::new();
    for i in 0..count {
        let sub = dir.join(format!("d{:04}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let size = match rng.next() % 10 {
            0 => 0,
            1..=6 => rng.next() % 4096,
            7 | 8 => rng.next() % 32768,
            _ => rng.next() % 65536,
        };
        buf.clear();
        if i % 3 == 0 {
            while (buf.len() as u64) < size {
                buf.extend_from_slice(&rng.next().to_le_bytes());
            }
        } else {
            let mut row = i * 1000;
            while (buf.len() as u64) < size {
                dump_line(&mut rng, row, &mut buf);
                row += 1;
            }
        }
        buf.truncate(size as usize);
        std::fs::write(sub.join(format!("f{i:06}.dat")), &buf)?;
        total += size;
    }
    Ok(total)
}

/// A whole sample tree: dump, small files, symlinks, an empty directory.
pub fn write_tree(root: &Path, dump_bytes: u64, small_files: u64, seed: u64) -> Result<()> {
    std::fs::create_dir_all(root.join("db"))?;
    std::fs::create_dir_all(root.join("files"))?;
    std::fs::create_dir_all(root.join("empty"))?;
    write_dump(&root.join("db/dump.sql"), dump_bytes, seed)?;
    write_small_files(&root.join("files"), small_files, seed + 1)?;
    let _ = std::fs::remove_file(root.join("latest-dump"));
    std::os::unix::fs::symlink("db/dump.sql", root.join("latest-dump"))?;
    let _ = std::fs::remove_file(root.join("dangling"));
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling"))?;
    Ok(())
}

/// Changes about `percent` of the data: rewrites a slice of the dump and of the small files.
pub fn mutate(root: &Path, percent: f64, seed: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut rng = Rng::new(seed);
    let dump = root.join("db/dump.sql");
    let f = std::fs::OpenOptions::new().write(true).open(&dump)?;
    let len = f.metadata()?.len();
    // Ten separate edits, as scattered row updates are: one edit alone makes
    // the figure hinge on where two chunk boundaries happen to fall.
    let change = (len as f64 * percent / 100.0) as u64 / 10;
    let mut row = 9_000_000_000;
    for region in 0..10u64 {
        let mut buf = Vec::new();
        while (buf.len() as u64) < change {
            dump_line(&mut rng, row, &mut buf);
            row += 1;
        }
        buf.truncate(change as usize);
        let at = len / 10 * region + len / 20;
        f.write_all_at(&buf, at.min(len.saturating_sub(change)))?;
    }
    let files = root.join("files");
    let mut n = 0u64;
    for dir in std::fs::read_dir(&files)? {
        for file in std::fs::read_dir(dir?.path())? {
            let path = file?.path();
            n += 1;
            if (rng.next() % 10_000) < (percent * 100.0) as u64 {
                std::fs::write(&path, format!("changed {n}\n"))?;
            }
        }
    }
    Ok(())
}
