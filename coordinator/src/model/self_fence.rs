//! The self-fence inequality, in one place. An agent holding a lease on
//! its region's primaries fences them itself when it has not had the
//! lease renewed for `self_fence_after`, counted from when it SENT the
//! heartbeat the leader last answered. The leader never promotes elsewhere
//! before `self_fence_after + SELF_FENCE_MARGIN` has passed since it GOT
//! that agent's last heartbeat (later than the send), nor, as a new
//! leader, since it was elected. So an old primary has stopped taking
//! writes before the new one takes any, whatever the network delays:
//!
//! ```text
//! agent fences at   sent(h) + self_fence_after            (+ the fence itself: a signal, milliseconds)
//! leader promotes   >= got(h) + self_fence_after + margin,  got(h) >= sent(h)
//! ```
//!
//! Automatic failover declares a region down no sooner than its agents'
//! silence limit after their last heartbeat: the fleet's (2 x heartbeat +
//! 1 s), or for an agent that keeps a lease the lease and margin when that
//! is shorter (it has fenced itself by then); the `after` reach checks run
//! alongside, so they may be done by then. The configuration is refused
//! when the fleet's limit comes before the self-fence bound plus the
//! margin (the promotion would only wait, but an operator should know the
//! numbers do not add up).

use std::time::Duration;

/// What the leader adds to the agent's bound before it may promote: the
/// fence's own time (a signal to the postmaster, a CONFIG SET) and the
/// agent's clock against the leader's over a few seconds.
pub const SELF_FENCE_MARGIN: Duration = Duration::from_secs(1);

/// How long an agent may go without a heartbeat before it counts as
/// silent: its session is ended, and its region may be declared down.
pub fn silence_limit(heartbeat: Duration) -> Duration {
    heartbeat * 2 + Duration::from_secs(1)
}

/// The earliest automatic promotion after a region's agents were last
/// heard: the first check that finds them silent (the reach checks, counted
/// alongside, may have reached `after` by then).
pub fn earliest_automatic_promotion(heartbeat: Duration, self_fence_after: Duration) -> Duration {
    silence_limit(heartbeat).min(self_fence_after + SELF_FENCE_MARGIN)
}

/// Why `self_fence_after` breaks the inequality, if it does.
pub fn problem(self_fence_after: Duration, heartbeat: Duration) -> Option<String> {
    let earliest = silence_limit(heartbeat);
    if self_fence_after < Duration::from_millis(500) {
        return Some(format!(
            "self_fence_after = {self_fence_after:?} is under 500ms: a busy host would fence its primaries on a late heartbeat; use 2s"
        ));
    }
    (self_fence_after + SELF_FENCE_MARGIN > earliest).then(|| {
        format!(
            "self_fence_after = {self_fence_after:?} plus the {SELF_FENCE_MARGIN:?} margin is after the fleet's silence limit ({earliest:?}: 2 x heartbeat + 1s), the earliest an agent that keeps no lease is declared silent: an old primary could still take writes when the new one is promoted; lower self_fence_after or raise the heartbeat"
        )
    })
}

/// The default bound.
pub fn default_after() -> Duration {
    Duration::from_secs(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_keep_the_inequality_and_a_bound_past_the_promotion_is_refused() {
        let s = Duration::from_secs;
        // Heartbeat 1 s: promotion at >= 3 s, the lease's end too.
        assert_eq!(earliest_automatic_promotion(s(1), default_after()), s(3));
        assert_eq!(problem(default_after(), s(1)), None);
        // The default heartbeat (5 s): a leased agent is silent after the
        // lease and margin (3 s), another after 11 s.
        assert_eq!(earliest_automatic_promotion(s(5), default_after()), s(3));
        assert_eq!(problem(default_after(), s(5)), None);
        let p = problem(s(5), s(1)).unwrap();
        assert!(p.contains("lower self_fence_after"), "{p}");
        assert!(problem(Duration::from_millis(100), s(1))
            .unwrap()
            .contains("under 500ms"));
    }
}
