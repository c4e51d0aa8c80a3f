//! Schedules: cron expressions (5 fields, or 6 with seconds) read in a time
//! zone. Each slot makes at most one job, whose id is `<schedule>-<slot ms>`
//! and which is created only if absent, so a new leader re-evaluating the
//! same slot makes nothing twice. After downtime the newest missed slot runs
//! once, not once per missed slot. Jitter delays a job by a fixed amount per
//! slot (a hash), so every leader computes the same delay. A higher layer
//! (the drills) registers slots of its own ([`Slotted`]): the scheduler
//! keeps their state the same way and calls them back when due.

use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::config::ScheduleConfig;
use crate::model::cron::{due_slots, next_slot, parse_cron, parse_tz};
use crate::model::records::{schedule_key, JobRecord, JobState, ScheduleState};
use croner::Cron;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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

/// What a due slot of a schedule that a higher layer owns does.
#[async_trait::async_trait]
pub trait SlotFiring: Send + Sync {
    /// Fires the slot at `slot_ms`; the id of what it made, and whether
    /// it made it now (a slot seen again by a new leader makes nothing).
    async fn fire(
        &self,
        coord: &Coordinator,
        lead: &Lead,
        slot_ms: i64,
    ) -> Result<(String, bool), crate::model::error::ActError>;
}

/// A schedule that a higher layer owns: its name, its cron in its time
/// zone, and what a due slot does.
pub struct Slotted {
    /// The schedule's name (its state is kept under it).
    pub name: String,
    /// The cron expression.
    pub cron: String,
    /// The IANA time zone the cron is read in.
    pub timezone: String,
    /// What a due slot does.
    pub fire: Arc<dyn SlotFiring>,
}

/// What a schedule's slot makes.
enum What {
    /// A job.
    Job(ScheduleConfig),
    /// Whatever a higher layer registered.
    Other(Arc<dyn SlotFiring>),
}

struct Compiled {
    /// The schedule's name (a drill's: `drill:<scenario>`).
    name: String,
    what: What,
    cron: Cron,
    tz: chrono_tz::Tz,
}

/// Starts the scheduler worker of `lead`'s term: it makes jobs, and fires
/// the `others`' slots, while the term lasts.
pub fn start(coord: Arc<Coordinator>, lead: Arc<Lead>, others: Vec<Slotted>) {
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
    compiled.extend(others.into_iter().filter_map(|s| {
        Some(Compiled {
            cron: parse_cron(&s.cron).ok()?,
            tz: parse_tz(&s.timezone).ok()?,
            name: s.name,
            what: What::Other(s.fire),
        })
    }));
    let now = now_ms();
    for c in &compiled {
        let first = next_slot(&c.cron, c.tz, now);
        let second = first.and_then(|f| next_slot(&c.cron, c.tz, f));
        if let (Some(a), Some(b), What::Job(config)) = (first, second, &c.what) {
            super::metrics::schedule_interval(
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
    crate::fleet::workers::spawn_worker(&tree, &board, "scheduler", move || {
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
) -> Result<crate::fleet::workers::Next, String> {
    if !lead.leadership.is_valid() {
        return Ok(crate::fleet::workers::Next::Stop);
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
                    What::Other(fire) => fire.fire(coord, lead, slot).await,
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
        super::metrics::refresh_ages();
        match failed {
            Some(e) => Err(e),
            None => Ok(crate::fleet::workers::Next::After(wait)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slots_jitter_is_fixed_and_within_its_bound() {
        let base = 1_796_000_000_000;
        let j = jitter_ms("s", base, Duration::from_secs(60));
        assert!((0..60_000).contains(&j));
        assert_eq!(j, jitter_ms("s", base, Duration::from_secs(60)));
    }
}
