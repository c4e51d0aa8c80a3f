//! The snapshot a recovery point names for one source: the newest, one at
//! random among a recent window's, or the newest finished by a time.

use seawall_common::point::Point;
use seawall_common::repo::snapshot::Snapshot;
use seawall_common::{Error, ErrorKind, Id, Repository, Result};

/// Chooses the snapshot of `source` that `point` names.
pub async fn choose(repo: &Repository, source: &str, point: &Point) -> Result<(Id, Snapshot)> {
    let tag = format!("source={source}");
    let mut of_source: Vec<(Id, Snapshot)> = repo
        .snapshots()
        .await?
        .into_iter()
        .filter(|(_, s)| s.tags.iter().any(|t| t == &tag))
        .collect();
    of_source.sort_by_key(|(_, s)| s.end_time);
    if of_source.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "the repository has no snapshot of source {source} (tagged {tag}): back it up, or mirror the region that does into this one"
            ),
        ));
    }
    match point {
        Point::Latest => of_source.pop().ok_or_else(|| unreachable_empty(source)),
        Point::At(t) => of_source
            .into_iter()
            .rev()
            .find(|(_, s)| s.end_time <= *t)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("no snapshot of {source} finished by {t}: choose a later time"),
                )
            }),
        Point::RandomWithin(window) => {
            let since = chrono::Utc::now()
                - chrono::Duration::from_std(*window).unwrap_or(chrono::Duration::MAX);
            let mut recent: Vec<(Id, Snapshot)> = of_source
                .into_iter()
                .filter(|(_, s)| s.end_time >= since)
                .collect();
            if recent.is_empty() {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no snapshot of {source} in the last {}: widen the window, or check its backups run",
                        humantime::format_duration(*window)
                    ),
                ));
            }
            let i = rand::Rng::gen_range(&mut rand::thread_rng(), 0..recent.len());
            Ok(recent.swap_remove(i))
        }
    }
}

fn unreachable_empty(source: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("the repository has no snapshot of source {source}"),
    )
}
