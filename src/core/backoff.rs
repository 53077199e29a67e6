//! When to try the control plane again after a failed call: capped exponential backoff with full
//! jitter. Pure: the attempt number and the random draw are arguments, so the schedule is tested
//! without a clock or an RNG.
use std::time::Duration;

/// The longest `Retry-After` the node honours. A server asking for more is more likely
/// misconfigured than overloaded, and a node silent for longer looks dead in the fleet table.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry.
    pub base: Duration,
    /// No retry waits longer than this (unless the server asked with `Retry-After`).
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The ceiling for retry number `attempt` (0 = first retry): `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Full jitter: `random` (in `[0, 1)`, clamped) scales the ceiling, so a fleet that lost the
    /// control plane at the same moment does not come back in lockstep. A floor of `base / 4`
    /// keeps a draw near zero from turning into a hot loop.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let r = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.ceiling(attempt).mul_f64(r).max(self.base / 4)
    }

    /// The wait before the next try: the jittered delay, or longer if the server said so with
    /// `Retry-After` (bounded by [`RETRY_AFTER_MAX`]).
    pub fn next(&self, attempt: u32, random: f64, retry_after: Option<Duration>) -> Duration {
        let own = self.delay(attempt, random);
        match retry_after {
            Some(ra) => own.max(ra.min(RETRY_AFTER_MAX)),
            None => own,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const B: Backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(60),
    };

    #[test]
    fn ceiling_doubles_until_the_cap() {
        let secs: Vec<u64> = (0..9).map(|a| B.ceiling(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(B.ceiling(u32::MAX), B.cap);
    }

    #[test]
    fn jitter_scales_the_ceiling() {
        assert_eq!(B.delay(3, 0.5), Duration::from_secs(4));
        assert_eq!(B.delay(3, 0.0), Duration::from_millis(250));
        assert_eq!(B.delay(10, 1.0), B.cap);
        assert_eq!(B.delay(2, f64::NAN), Duration::from_secs(4));
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_bounded() {
        let ra = Some(Duration::from_secs(120));
        assert_eq!(B.next(0, 0.5, ra), Duration::from_secs(120));
        assert_eq!(
            B.next(5, 1.0, Some(Duration::from_secs(1))),
            Duration::from_secs(32)
        );
        assert_eq!(
            B.next(0, 0.5, Some(Duration::from_secs(86400))),
            RETRY_AFTER_MAX
        );
    }

    proptest! {
        #[test]
        fn delay_stays_between_floor_and_cap(attempt in 0u32..200, r in -1.0f64..2.0) {
            let d = B.delay(attempt, r);
            prop_assert!(d >= B.base / 4 && d <= B.cap);
            prop_assert!(d <= B.ceiling(attempt).max(B.base / 4));
        }

        #[test]
        fn ceiling_never_shrinks(attempt in 0u32..100) {
            prop_assert!(B.ceiling(attempt) <= B.ceiling(attempt + 1));
        }
    }
}
