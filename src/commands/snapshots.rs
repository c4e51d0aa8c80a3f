//! `seawall snapshots`.

use crate::args::{Global, SnapshotsArgs};
use crate::repo_open;

/// Lists snapshots, oldest first, filtered by where they came from.
pub async fn run(g: &Global, a: SnapshotsArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    // Each file is read once for the listing and the head check; a head
    // that cannot be read still leaves the listing, with a warning.
    let (all, check) = match repo.snapshots_checked().await {
        Ok((all, check)) => (all, Ok(check)),
        Err(e) => (repo.snapshots().await?, Err(e)),
    };
    let snaps: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| {
            a.region
                .as_ref()
                .is_none_or(|r| s.region.as_ref() == Some(r))
                && a.host.as_ref().is_none_or(|h| &s.hostname == h)
                && a.agent.as_ref().is_none_or(|x| s.agent.as_ref() == Some(x))
                && a.tag.iter().all(|t| s.tags.contains(t))
        })
        .collect();
    // Snapshots removed or planted behind Seawall's back are named here
    // too, not only by verify.
    match check {
        Ok(check) => {
            for alarm in check.alarms() {
                eprintln!("warning: {alarm}");
            }
        }
        Err(e) => eprintln!("warning: the head cannot be checked: {e}"),
    }
    if g.json {
        let mut list = Vec::with_capacity(snaps.len());
        for (id, s) in &snaps {
            let mut v = serde_json::to_value(s)?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("id".into(), serde_json::json!(id));
                obj.insert("short_id".into(), serde_json::json!(id.short()));
            }
            list.push(v);
        }
        crate::output::json(&list)?;
        return Ok(0);
    }
    println!(
        "{:<10} {:<20} {:<16} {:<22} {:<8} {:<12} paths",
        "id", "time", "host", "region/agent", "source", "type"
    );
    for (id, s) in &snaps {
        let origin = match (&s.region, &s.agent) {
            (Some(r), Some(a)) => format!("{r}/{a}"),
            (Some(r), None) => r.clone(),
            _ => "-".into(),
        };
        println!(
            "{:<10} {:<20} {:<16} {:<22} {:<8} {:<12} {}",
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            origin,
            s.source,
            format!("{:?}", s.backup_type).to_lowercase(),
            s.paths.join(" ")
        );
    }
    println!("{} snapshots", snaps.len());
    Ok(0)
}
