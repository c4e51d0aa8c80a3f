//! A restore's recovery point as operators write it (`latest`,
//! `random-within 7d`, an RFC 3339 time): the coordinator checks a
//! scenario's point with the same reading the agent restores by.

use std::time::Duration;

/// Which recovery point a restore drill takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Point {
    /// The newest snapshot of each source.
    Latest,
    /// A snapshot picked at random among those of the last `.0`.
    RandomWithin(Duration),
    /// The state at a time (PITR for physical PostgreSQL, the newest
    /// snapshot not after it for the rest).
    At(chrono::DateTime<chrono::Utc>),
}

impl Point {
    /// Reads `latest`, `random-within 7d` or an RFC 3339 time.
    pub fn parse(text: &str) -> Result<Point, String> {
        let t = text.trim();
        if t == "latest" {
            return Ok(Point::Latest);
        }
        if let Some(d) = t.strip_prefix("random-within") {
            return crate::duration::parse(d.trim())
                .map(Point::RandomWithin)
                .map_err(|e| format!("point {text:?}: {e}"));
        }
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|at| Point::At(at.with_timezone(&chrono::Utc)))
            .map_err(|_| {
                format!(
                    "point {text:?} is not latest, random-within DURATION (\"random-within 7d\") or an RFC 3339 time (\"2026-11-30T03:00:00Z\")"
                )
            })
    }
}
