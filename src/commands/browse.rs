//! `seawall ls`, `dump` and `stats`: a repository looked into, not restored.

use crate::args::{DiffArgs, DumpArgs, FindArgs, Global, LsArgs, TagArgs};
use crate::output::size;
use crate::repo_open;
use seawall_agent::engine::browse;

/// `seawall ls`.
pub async fn ls(g: &Global, a: LsArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    repo.load_index().await?;
    let (_, snap) = repo.find_snapshot(&a.snapshot).await?;
    let entries = browse::list(&repo, &snap, &a.path, !a.no_recursive).await?;
    if g.json {
        crate::output::json(&entries)?;
        return Ok(0);
    }
    for e in entries {
        let when = chrono::DateTime::from_timestamp(e.mtime, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let kind = match e.kind {
            "dir" => 'd',
            "fifo" => 'p',
            "chardev" => 'c',
            "blockdev" => 'b',
            "symlink" => 'l',
            "stream" => 's',
            _ => '-',
        };
        match &e.target {
            Some(t) => println!(
                "{kind}{:04o} {:>10} {when} {} -> {t}",
                e.mode, e.size, e.path
            ),
            None => println!("{kind}{:04o} {:>10} {when} {}", e.mode, e.size, e.path),
        }
    }
    Ok(0)
}

/// `seawall dump`.
pub async fn dump(g: &Global, a: DumpArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    repo.load_index().await?;
    let (_, snap) = repo.find_snapshot(&a.snapshot).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    browse::dump(&repo, &snap, &a.path, &mut out).await?;
    std::io::Write::flush(&mut out)?;
    Ok(0)
}

/// `seawall stats`.
pub async fn stats(g: &Global) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    let s = browse::stats(&repo).await?;
    if g.json {
        crate::output::json(&s)?;
        return Ok(0);
    }
    println!("{} snapshots", s.snapshots);
    println!(
        "logical size (what restores give): {}",
        size(s.logical_bytes)
    );
    println!(
        "distinct content:                  {}",
        size(s.unique_bytes)
    );
    println!(
        "stored (packs):                    {}",
        size(s.stored_bytes)
    );
    println!("logical / stored:                  {:.2}x", s.ratio);
    println!();
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>8}",
        "snapshot", "logical", "stored", "added", "ratio"
    );
    for one in &s.per_snapshot {
        println!(
            "{:<10} {:>12} {:>12} {:>12} {:>7.2}x",
            &one.id[..8.min(one.id.len())],
            size(one.logical_bytes),
            size(one.stored_bytes),
            size(one.added_bytes),
            one.ratio
        );
    }
    Ok(0)
}

/// `seawall find`.
pub async fn find(g: &Global, a: FindArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    let found = browse::find(&repo, &a.pattern).await?;
    if g.json {
        crate::output::json(&found)?;
    } else {
        for f in &found {
            println!(
                "{} {} {:>10} {}",
                &f.snapshot[..8],
                f.time.format("%Y-%m-%d %H:%M:%S"),
                f.entry.size,
                f.entry.path
            );
        }
    }
    Ok(if found.is_empty() { 1 } else { 0 })
}

/// `seawall diff`.
pub async fn diff(g: &Global, a: DiffArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    repo.load_index().await?;
    let (_, from) = repo.find_snapshot(&a.from).await?;
    let (_, to) = repo.find_snapshot(&a.to).await?;
    let changes = browse::diff(&repo, &from, &to).await?;
    if g.json {
        crate::output::json(&changes)?;
        return Ok(0);
    }
    for c in &changes {
        let mark = match c.change {
            "added" => '+',
            "removed" => '-',
            "changed" => 'M',
            "type" => 'T',
            _ => 'U',
        };
        println!("{mark} {}", c.path);
    }
    Ok(0)
}

/// `seawall tag`.
pub async fn tag(g: &Global, a: TagArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    let change = seawall_agent::engine::tag::TagChange {
        add: a.add,
        remove: a.remove,
        set: (!a.set.is_empty()).then_some(a.set),
    };
    let done = seawall_agent::engine::tag::retag(
        &repo,
        &a.snapshots,
        &change,
        std::time::Duration::from_secs(g.lock_wait),
    )
    .await?;
    if g.json {
        crate::output::json(
            &done
                .iter()
                .map(|(o, n)| serde_json::json!({ "old": o.to_hex(), "new": n.to_hex() }))
                .collect::<Vec<_>>(),
        )?;
    } else if !g.quiet {
        for (o, n) in &done {
            println!("{} is now {}", o.short(), n.short());
        }
        if done.is_empty() {
            println!("no tags changed");
        }
    }
    Ok(0)
}
