//! `seawall forget`.

use crate::args::{ForgetArgs, Global};
use crate::repo_open;
use seawall_agent::engine::forget::{forget, KeepPolicy};
use std::time::Duration;

/// Applies the retention policy, then prunes when asked.
pub async fn run(g: &Global, a: ForgetArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    let policy = KeepPolicy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within_secs: a.keep_within.map_or(0, |d| d.as_secs()),
    };
    let report = forget(
        &repo,
        policy,
        &a.tag,
        a.dry_run,
        Duration::from_secs(g.lock_wait),
    )
    .await?;
    let pruned = if a.prune && !a.dry_run {
        Some(
            seawall_agent::engine::prune::prune(repo, false, Duration::from_secs(g.lock_wait))
                .await?,
        )
    } else {
        None
    };
    if g.json {
        crate::output::json(&serde_json::json!({ "forget": report, "prune": pruned }))?;
    } else if !g.quiet {
        let verb = if a.dry_run { "would remove" } else { "removed" };
        println!(
            "kept {} snapshots, {verb} {}",
            report.kept.len(),
            report.removed.len()
        );
        for id in &report.removed {
            println!("  {verb} {}", &id[..8]);
        }
        if let Some(p) = pruned {
            crate::commands::maintenance::print_prune(&p);
        }
    }
    Ok(0)
}
