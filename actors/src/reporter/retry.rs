//! When to send a failed batch again: exponential backoff with full jitter, capped, and the
//! server's `Retry-After` (429/503) honoured. Pure: the caller supplies the attempt number, the
//! server's hint and the random number; [`unit_random`] is a cheap source for the latter.

use std::time::Duration;

/// The longest wait a server's `Retry-After` can impose (a larger value is cut to this).
pub const RETRY_AFTER_CEILING: Duration = Duration::from_secs(3600);

/// The shortest wait after a server sent `Retry-After` (also `0` or a date in the past), so a
/// struggling server is never hammered in a tight loop.
pub const RETRY_AFTER_FLOOR: Duration = Duration::from_secs(1);

/// Exponential backoff with full jitter: before retry number `attempt` (0 for the first retry)
/// wait a uniformly random time in `[0, min(max, initial * 2^attempt))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The ceiling of the first wait.
    pub initial: Duration,
    /// The ceiling of every wait (without a `Retry-After`).
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 1 s, doubling up to 5 min.
    fn default() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the jittered wait before retry number `attempt`:
    /// `min(max, initial * 2^attempt)`, without overflow.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// How long to wait before retry number `attempt` (0-based: the number of failures before
    /// the last one). `random` is uniform in `[0, 1)` (out-of-range values are clamped, NaN is
    /// 0). With `retry_after` (the server's `Retry-After`), the wait is the larger of the
    /// jittered backoff and that value clamped to
    /// [`RETRY_AFTER_FLOOR`]..=[`RETRY_AFTER_CEILING`].
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, random: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let random = if random.is_nan() {
            0.0
        } else {
            random.clamp(0.0, 1.0)
        };
        let jittered = Duration::try_from_secs_f64(ceiling.as_secs_f64() * random)
            .unwrap_or(ceiling)
            .min(ceiling);
        match retry_after {
            None => jittered,
            Some(hint) => jittered.max(hint.clamp(RETRY_AFTER_FLOOR, RETRY_AFTER_CEILING)),
        }
    }
}

/// A uniformly distributed number in `[0, 1)` from the random bits of a v4 UUID (53 of its 122
/// random bits): good enough to spread retries, not for cryptography.
pub fn unit_random() -> f64 {
    const BITS: u32 = f64::MANTISSA_DIGITS; // 53
                                            // The low 62 bits of a v4 UUID are random (version and variant bits sit above them).
    let bits = uuid::Uuid::new_v4().as_u128() & ((1u128 << BITS) - 1);
    bits as f64 / (1u64 << BITS) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const S: fn(u64) -> Duration = Duration::from_secs;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: MS(100),
            max: S(10),
        }
    }

    #[test]
    fn the_ceiling_doubles_and_is_capped() {
        let cases = [
            (0, MS(100)),
            (1, MS(200)),
            (2, MS(400)),
            (6, MS(6400)),
            (7, S(10)),
            (31, S(10)),
            (32, S(10)),
            (u32::MAX, S(10)),
        ];
        for (attempt, expected) in cases {
            assert_eq!(policy().ceiling(attempt), expected, "attempt {attempt}");
        }
    }

    #[test]
    fn full_jitter_stays_within_bounds() {
        // (attempt, random, expected)
        let cases = [
            (0, 0.0, Duration::ZERO),
            (0, 0.5, MS(50)),
            (3, 0.25, MS(200)),
            (3, 0.999_999, MS(800)),
            (20, 0.5, S(5)),
            (20, 0.0, Duration::ZERO),
            // Out of range or NaN random values are clamped, never a panic.
            (2, -1.0, Duration::ZERO),
            (2, f64::NAN, Duration::ZERO),
            (2, 7.0, MS(400)),
            (2, f64::INFINITY, MS(400)),
        ];
        for (attempt, random, expected) in cases {
            let delay = policy().delay(attempt, None, random);
            let diff = delay.abs_diff(expected);
            assert!(
                diff < MS(1),
                "attempt {attempt}, random {random}: {delay:?} != {expected:?}"
            );
            assert!(delay <= policy().ceiling(attempt));
        }
    }

    #[test]
    fn random_delays_never_exceed_the_cap() {
        for attempt in 0..100 {
            let delay = policy().delay(attempt, None, unit_random());
            assert!(delay <= policy().ceiling(attempt) && delay <= S(10));
        }
        let huge = RetryPolicy {
            initial: Duration::MAX,
            max: Duration::MAX,
        };
        assert!(huge.delay(u32::MAX, None, 0.999_999_999) <= Duration::MAX);
    }

    #[test]
    fn retry_after_is_honoured_floored_and_capped() {
        // (attempt, retry_after, random, expected)
        let cases = [
            // The server's value wins over a shorter backoff.
            (0, S(1), 0.0, S(1)),
            (0, S(1), 0.99, S(1)),
            (0, S(30), 0.5, S(30)),
            // A longer backoff wins over a short server value.
            (10, S(2), 0.8, S(8)),
            // Never zero: `Retry-After: 0` or a past date still waits the floor.
            (0, Duration::ZERO, 0.0, RETRY_AFTER_FLOOR),
            (0, MS(10), 0.0, RETRY_AFTER_FLOOR),
            // An absurd value is cut to the ceiling.
            (0, S(86_400 * 365), 0.5, RETRY_AFTER_CEILING),
            (0, Duration::MAX, 0.5, RETRY_AFTER_CEILING),
        ];
        for (attempt, retry_after, random, expected) in cases {
            let delay = policy().delay(attempt, Some(retry_after), random);
            assert!(
                delay.abs_diff(expected) < MS(1),
                "attempt {attempt}, Retry-After {retry_after:?}, random {random}: {delay:?} != {expected:?}"
            );
            assert!(delay >= RETRY_AFTER_FLOOR);
        }
    }

    #[test]
    fn unit_random_is_in_range_and_varies() {
        let values: Vec<f64> = (0..1000).map(|_| unit_random()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
        assert!(values.windows(2).any(|w| w[0] != w[1]));
    }
}
