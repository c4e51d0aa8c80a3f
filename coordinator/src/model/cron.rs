//! Cron expressions (5 fields, or 6 with seconds) read in a time zone: the
//! slots of job schedules and drill scenarios.

use chrono::{TimeZone, Utc};
use croner::Cron;

/// Most slots walked when catching up (a per-second schedule down a day).
const MAX_WALK: usize = 200_000;

/// Parses a cron expression, with or without a seconds field.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    Cron::new(expr)
        .with_seconds_optional()
        .parse()
        .map_err(|e| format!("cron {expr:?} is not valid: {e}"))
}

/// Parses an IANA time zone name.
pub fn parse_tz(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>().map_err(|_| {
        format!("time zone {name:?} is not an IANA name such as \"UTC\" or \"Europe/Dublin\"")
    })
}

/// The first slot after `after_ms`.
pub fn next_slot(cron: &Cron, tz: chrono_tz::Tz, after_ms: i64) -> Option<i64> {
    let after = tz.timestamp_millis_opt(after_ms).single()?;
    cron.find_next_occurrence(&after, false)
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
}

/// The newest slot in (`after_ms`, `until_ms`] and how many there were.
pub fn due_slots(
    cron: &Cron,
    tz: chrono_tz::Tz,
    after_ms: i64,
    until_ms: i64,
) -> (Option<i64>, usize) {
    let mut latest = None;
    let mut count = 0;
    let mut at = after_ms;
    while count < MAX_WALK {
        match next_slot(cron, tz, at) {
            Some(slot) if slot <= until_ms => {
                latest = Some(slot);
                count += 1;
                at = slot;
            }
            _ => break,
        }
    }
    (latest, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_catch_up_once_and_respect_time_zones() {
        let cron = parse_cron("0 2 * * *").unwrap();
        let utc = parse_tz("UTC").unwrap();
        let day = 86_400_000;
        let base = Utc
            .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        // Three days down: three slots passed, the newest is the one to run.
        let (latest, count) = due_slots(&cron, utc, base, base + 3 * day);
        assert_eq!(count, 3);
        assert_eq!(latest, Some(base + 2 * day + 2 * 3_600_000));
        // 02:00 in Dublin in November is 02:00 UTC; in Tokyo it is 17:00 UTC the day before.
        let tokyo = parse_tz("Asia/Tokyo").unwrap();
        let next = next_slot(&cron, tokyo, base).unwrap();
        assert_eq!(next, base + 17 * 3_600_000);
        let seconds = parse_cron("*/5 * * * * *").unwrap();
        assert_eq!(next_slot(&seconds, utc, base), Some(base + 5000));
        assert!(parse_cron("0 25 * * *").is_err());
        assert!(parse_tz("Mars/Olympus").is_err());
    }
}
