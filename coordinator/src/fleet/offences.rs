//! What agents send that they may not (a result for a job another agent was
//! given), counted per agent so that one misbehaving agent cannot flood the
//! audit log: the first offence is audited, the rest are counted into at
//! most one audit line a minute, and an agent past [`CUT_OFF`] offences in
//! a minute has its session ended.

use std::collections::HashMap;
use std::sync::Mutex;

/// Offences in one minute past which the agent's session is ended.
pub const CUT_OFF: u32 = 20;
/// The window of the count, and the least time between two audit lines.
const WINDOW_MS: i64 = 60_000;

/// What to do about one offence.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write one audit line for `count` offences (this one included).
    Audit {
        /// Offences since the last line.
        count: u32,
    },
    /// Counted; nothing written now.
    Counted,
    /// End the session.
    CutOff {
        /// Offences to write in one audit line, when one is due.
        audit: Option<u32>,
    },
}

#[derive(Default)]
struct Tally {
    window_start_ms: i64,
    in_window: u32,
    unreported: u32,
    last_audit_ms: Option<i64>,
}

/// Offences by agent (region, name).
#[derive(Default)]
pub struct Offences {
    by_agent: Mutex<HashMap<(String, String), Tally>>,
}

impl Offences {
    /// Records one offence of `agent` in `region` at `now_ms`.
    pub fn note(&self, region: &str, agent: &str, now_ms: i64) -> Verdict {
        let mut map = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        let t = map
            .entry((region.to_string(), agent.to_string()))
            .or_default();
        if now_ms - t.window_start_ms >= WINDOW_MS {
            t.window_start_ms = now_ms;
            t.in_window = 0;
        }
        t.in_window += 1;
        t.unreported += 1;
        let audit_due = t.last_audit_ms.is_none_or(|at| now_ms - at >= WINDOW_MS);
        let audit = audit_due.then(|| {
            t.last_audit_ms = Some(now_ms);
            std::mem::take(&mut t.unreported)
        });
        if t.in_window > CUT_OFF {
            Verdict::CutOff { audit }
        } else {
            match audit {
                Some(count) => Verdict::Audit { count },
                None => Verdict::Counted,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_one_line_then_a_cut_off_and_one_line_a_minute() {
        let o = Offences::default();
        assert_eq!(o.note("eu", "a", 1_000), Verdict::Audit { count: 1 });
        for i in 2..=CUT_OFF {
            assert_eq!(o.note("eu", "a", 1_000 + i as i64), Verdict::Counted);
        }
        // Another agent is counted apart.
        assert_eq!(o.note("us", "a", 2_000), Verdict::Audit { count: 1 });
        // Past the cut-off: ended, nothing written within the minute.
        assert_eq!(o.note("eu", "a", 5_000), Verdict::CutOff { audit: None });
        assert_eq!(o.note("eu", "a", 6_000), Verdict::CutOff { audit: None });
        // A minute after the first line: the rest, in one line.
        assert_eq!(
            o.note("eu", "a", 61_000),
            Verdict::Audit { count: CUT_OFF + 2 }
        );
    }
}
