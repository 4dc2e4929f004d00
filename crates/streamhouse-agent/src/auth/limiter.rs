//! Bounds on password guessing: each user name has a budget of failed
//! authentications that refills with time. Once it is spent, further
//! attempts for that name are refused without checking the password until
//! the budget refills, whatever connection or listener they come on.
//! Other users, and connections already authenticated, are unaffected.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures a user name may have in a burst.
const BURST: f64 = 10.0;
/// Failures per second the budget refills by.
const REFILL_PER_SECOND: f64 = 2.0;
/// Most user names tracked; the fullest budgets are forgotten first.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
struct Budget {
    left: f64,
    at: Instant,
}

impl Budget {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.left = (self.left + elapsed * REFILL_PER_SECOND).min(BURST);
        self.at = now;
    }
}

/// Failed authentications per user name.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    budgets: Mutex<HashMap<String, Budget>>,
}

impl Limiter {
    /// `None` when `user` may try to authenticate now; otherwise how long
    /// until it may.
    pub(crate) fn check(&self, user: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut budgets = self.budgets.lock().expect("limiter lock");
        let budget = budgets.get_mut(user)?;
        budget.refill(now);
        (budget.left < 1.0)
            .then(|| Duration::from_secs_f64((1.0 - budget.left) / REFILL_PER_SECOND))
    }

    /// Records a failed authentication of `user`.
    pub(crate) fn failed(&self, user: &str) {
        let now = Instant::now();
        let mut budgets = self.budgets.lock().expect("limiter lock");
        if budgets.len() >= MAX_TRACKED && !budgets.contains_key(user) {
            budgets.retain(|_, b| {
                b.refill(now);
                b.left < BURST
            });
            if budgets.len() >= MAX_TRACKED {
                return;
            }
        }
        let budget = budgets.entry(user.to_string()).or_insert(Budget {
            left: BURST,
            at: now,
        });
        budget.refill(now);
        budget.left = (budget.left - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_failures_locks_one_user_out_for_a_while() {
        let limiter = Limiter::default();
        for _ in 0..BURST as usize {
            assert_eq!(limiter.check("victim"), None);
            limiter.failed("victim");
        }
        let wait = limiter.check("victim").expect("locked out");
        assert!(wait <= Duration::from_secs_f64(1.0 / REFILL_PER_SECOND));
        assert_eq!(limiter.check("someone-else"), None);
    }
}
