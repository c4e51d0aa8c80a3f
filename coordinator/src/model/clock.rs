//! The coordinator's clock: wall time in milliseconds, which in unit tests
//! moves with tokio's paused clock.

/// Milliseconds since the Unix epoch, now.
#[cfg(not(test))]
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Milliseconds since the Unix epoch, now, moving with tokio's clock so
/// that tests with paused time see backoffs and timeouts pass.
#[cfg(test)]
pub fn now_ms() -> i64 {
    thread_local! {
        static BASE: (i64, tokio::time::Instant) =
            (chrono::Utc::now().timestamp_millis(), tokio::time::Instant::now());
    }
    BASE.with(|(wall, at)| wall + at.elapsed().as_millis() as i64)
}

/// A unix-ms time as RFC 3339 (UTC, milliseconds), for journals.
pub fn iso(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{unix_ms} ms"))
}
