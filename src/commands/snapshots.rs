//! `seawall snapshots`.

use crate::args::Global;
use crate::repo_open;

/// Lists snapshots, oldest first.
pub async fn run(g: &Global) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    let snaps = repo.snapshots().await?;
    if g.json {
        let list: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("id".into(), serde_json::json!(id));
                    obj.insert("short_id".into(), serde_json::json!(id.short()));
                }
                v
            })
            .collect();
        crate::output::json(&list)?;
        return Ok(0);
    }
    println!(
        "{:<10} {:<20} {:<16} {:<8} {:<12} paths",
        "id", "time", "host", "source", "type"
    );
    for (id, s) in &snaps {
        println!(
            "{:<10} {:<20} {:<16} {:<8} {:<12} {}",
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            s.source,
            format!("{:?}", s.backup_type).to_lowercase(),
            s.paths.join(" ")
        );
    }
    println!("{} snapshots", snaps.len());
    Ok(0)
}
