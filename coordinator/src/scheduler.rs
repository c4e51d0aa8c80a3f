//! Schedules: cron expressions (5 fields, or 6 with seconds) read in a time
//! zone. Each slot makes at most one job, whose id is `<schedule>-<slot ms>`
//! and which is created only if absent, so a new leader re-evaluating the
//! same slot makes nothing twice. After downtime the newest missed slot runs
//! once, not once per missed slot. Jitter delays a job by a fixed amount per
//! slot (a hash), so every leader computes the same delay.

use crate::config::ScheduleConfig;
use crate::core::{Coordinator, Lead};
use crate::records::{now_ms, schedule_key, JobRecord, JobState, ScheduleState};
use chrono::{TimeZone, Utc};
use croner::Cron;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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

/// The fixed jitter of one slot.
pub fn jitter_ms(schedule: &str, slot_ms: i64, jitter: Duration) -> i64 {
    let max = jitter.as_millis() as u64;
    if max == 0 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schedule.bytes().chain(slot_ms.to_be_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % max) as i64
}

/// The job a schedule's slot makes.
pub fn job_for(s: &ScheduleConfig, slot_ms: i64, epoch: i64, note: &str) -> JobRecord {
    let mut job = JobRecord {
        level: s.level,
        schedule: Some(s.name.clone()),
        retries: s.retries,
        retry_backoff_ms: i64::try_from(s.retry_backoff.as_millis()).unwrap_or(i64::MAX),
        not_before_ms: slot_ms + jitter_ms(&s.name, slot_ms, s.jitter),
        retention_after: s.retention_after,
        epoch,
        ..JobRecord::pending(
            format!("{}-{slot_ms}", s.name),
            s.region.clone(),
            s.source.clone(),
            s.kind,
        )
    };
    job.enter(JobState::Pending, epoch, note.to_string());
    job
}

/// What a schedule's slot makes.
enum What {
    /// A job.
    Job(ScheduleConfig),
    /// A drill of a `[[scenarios]]` entry.
    Drill(String),
}

struct Compiled {
    /// The schedule's name (a drill's: `drill:<scenario>`).
    name: String,
    what: What,
    cron: Cron,
    tz: chrono_tz::Tz,
}

/// The id of a scheduled drill: the scenario's name as a slug and the slot.
pub fn drill_id(scenario: &str, slot_ms: i64) -> String {
    let slug: String = scenario
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{slug}-{slot_ms}")
}

/// Starts the scheduler worker of `lead`'s term: it makes jobs while the
/// term lasts.
pub fn start(coord: Arc<Coordinator>, lead: Arc<Lead>) {
    let mut compiled: Vec<Compiled> = coord
        .config
        .schedules
        .iter()
        .filter_map(|s| {
            Some(Compiled {
                name: s.name.clone(),
                cron: parse_cron(&s.cron).ok()?,
                tz: parse_tz(&s.timezone).ok()?,
                what: What::Job(s.clone()),
            })
        })
        .collect();
    compiled.extend(coord.config.scenarios.iter().filter_map(|s| {
        Some(Compiled {
            name: format!("drill:{}", s.name),
            cron: parse_cron(s.cron.as_deref()?).ok()?,
            tz: parse_tz(s.timezone.as_deref().unwrap_or("UTC")).ok()?,
            what: What::Drill(s.name.clone()),
        })
    }));
    let now = now_ms();
    for c in &compiled {
        let first = next_slot(&c.cron, c.tz, now);
        let second = first.and_then(|f| next_slot(&c.cron, c.tz, f));
        if let (Some(a), Some(b), What::Job(config)) = (first, second, &c.what) {
            crate::metrics::schedule_interval(
                &config.name,
                seawall_proto::kinds::name(config.kind),
                &config.region,
                &config.source,
                (b - a) as f64 / 1000.0,
            );
        }
    }
    let state = Arc::new(tokio::sync::Mutex::new((compiled, HashMap::new())));
    let board = coord.workers.clone();
    let tree = lead.tree.clone();
    crate::workers::spawn_worker(&tree, &board, "scheduler", move || {
        let (coord, lead, state) = (coord.clone(), lead.clone(), state.clone());
        async move {
            let mut state = state.lock().await;
            let (compiled, last) = &mut *state;
            tick(&coord, &lead, compiled, last).await
        }
    });
}

/// One pass over the schedules: makes the jobs that are due; asks to run
/// again when the next slot comes (within a second).
async fn tick(
    coord: &Coordinator,
    lead: &Lead,
    compiled: &[Compiled],
    last: &mut HashMap<String, i64>,
) -> Result<crate::workers::Next, String> {
    if !lead.leadership.is_valid() {
        return Ok(crate::workers::Next::Stop);
    }
    let mut failed: Option<String> = None;
    {
        let now = now_ms();
        let mut wait = Duration::from_secs(1);
        for c in compiled {
            let name = &c.name;
            let last_slot = match last.get(name) {
                Some(v) => *v,
                None => match coord.store.get(&schedule_key(name)).await {
                    Ok(Some(e)) => serde_json::from_slice::<ScheduleState>(&e.value)
                        .map(|s| s.last_slot_ms)
                        .unwrap_or(now),
                    // A new schedule starts from now (no retroactive runs),
                    // remembered so a leader change does not move it.
                    Ok(None) => {
                        let state = ScheduleState {
                            last_slot_ms: now,
                            last_job: None,
                        };
                        let key = schedule_key(name);
                        match serde_json::to_vec(&state) {
                            Ok(value) => {
                                let _ = coord.store.put(lead.fence(), &key, &value, Some(0)).await;
                            }
                            Err(e) => {
                                tracing::warn!(schedule = %name, error = %e, "schedule state not encoded")
                            }
                        }
                        now
                    }
                    Err(e) => {
                        failed = Some(format!("schedule {name}: state unreadable: {e}"));
                        continue;
                    }
                },
            };
            last.insert(name.clone(), last_slot);
            let (due, count) = due_slots(&c.cron, c.tz, last_slot, now);
            if let Some(slot) = due {
                let note = if count > 1 {
                    format!("schedule {name}: {count} slots passed while no leader ran; running the newest once")
                } else {
                    format!("schedule {name}")
                };
                let made = match &c.what {
                    What::Job(config) => {
                        let job = job_for(config, slot, lead.fence().epoch, &note);
                        let job_id = job.job_id.clone();
                        match coord.create_job(lead, job, "scheduler").await {
                            Ok(created) => {
                                coord.supersede(lead, name, &job_id).await;
                                Ok((job_id, created))
                            }
                            Err(e) => Err(e),
                        }
                    }
                    // A drill of the same id is returned as it is, so a
                    // new leader seeing the slot again makes nothing twice.
                    What::Drill(scenario) => {
                        let req = seawall_proto::v1::DrillRequest {
                            scenario: scenario.clone(),
                            ..Default::default()
                        };
                        let id = drill_id(scenario, slot);
                        crate::drills::launch::launch(
                            coord,
                            lead,
                            &req,
                            Some(id.clone()),
                            "scheduler",
                        )
                        .await
                        .map(|d| (id, d.started_unix_ms >= slot))
                    }
                };
                match made {
                    Ok((job_id, created)) => {
                        if count > 1 {
                            coord.audit(lead, "scheduler", note.clone()).await;
                        }
                        let state = ScheduleState {
                            last_slot_ms: slot,
                            last_job: Some(job_id),
                        };
                        let saved = match serde_json::to_vec(&state) {
                            Ok(value) => coord
                                .store
                                .put(lead.fence(), &schedule_key(name), &value, None)
                                .await
                                .map(|_| ())
                                .map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        };
                        if let Err(e) = saved {
                            failed = Some(format!("schedule {name}: state not saved: {e}"));
                            continue;
                        }
                        last.insert(name.clone(), slot);
                        tracing::info!(schedule = %name, slot, created, "schedule fired");
                    }
                    Err(e) => {
                        failed = Some(format!("schedule {name}: not started: {e}"));
                        continue;
                    }
                }
            }
            if let Some(next) = next_slot(&c.cron, c.tz, *last.get(name).unwrap_or(&now)) {
                let until = Duration::from_millis((next - now_ms()).max(0) as u64);
                wait = wait.min(until.max(Duration::from_millis(20)));
            }
        }
        crate::metrics::refresh_ages();
        match failed {
            Some(e) => Err(e),
            None => Ok(crate::workers::Next::After(wait)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_drills_id_is_its_scenario_and_slot() {
        assert_eq!(
            drill_id("Complete outage", 1_796_000_000_000),
            "complete-outage-1796000000000"
        );
    }

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
        let j = jitter_ms("s", base, Duration::from_secs(60));
        assert!((0..60_000).contains(&j));
        assert_eq!(j, jitter_ms("s", base, Duration::from_secs(60)));
    }
}
