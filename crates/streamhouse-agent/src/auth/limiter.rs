//! Bounds on password guessing: each user name, from each client address,
//! has a budget of attempts that refills with time. A password check that fails spends one unit; a
//! SCRAM exchange spends one when it starts and gets it back when it
//! succeeds, so exchanges in flight cannot overdraw the budget. Once the
//! budget is spent, further attempts for that name are refused without
//! checking the password until it refills, whatever connection or listener
//! they come on from that address. Other users, the same user from other
//! addresses, and connections already authenticated, are unaffected: a
//! guesser cannot lock a user out everywhere.
//!
//! At most [`MAX_TRACKED`] names have their own budget; while that many
//! are being tracked, every other name shares one overflow budget, so
//! failures spread over many made-up names cannot lift the bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts a user name may spend in a burst.
const BURST: f64 = 10.0;
/// Units per second a budget refills by.
const REFILL_PER_SECOND: f64 = 2.0;
/// Most user names with a budget of their own.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
struct Budget {
    left: f64,
    at: Instant,
}

impl Budget {
    fn full(now: Instant) -> Budget {
        Budget {
            left: BURST,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.left = (self.left + elapsed * REFILL_PER_SECOND).min(BURST);
        self.at = now;
    }
}

#[derive(Debug)]
struct Budgets {
    by_user: HashMap<String, Budget>,
    overflow: Budget,
}

impl Budgets {
    /// The budget `user` spends from, made if there is room.
    fn of(&mut self, user: &str, now: Instant) -> &mut Budget {
        if !self.by_user.contains_key(user) && self.by_user.len() >= MAX_TRACKED {
            // Forget the names whose budgets are full again.
            self.by_user.retain(|_, b| {
                b.refill(now);
                b.left < BURST
            });
        }
        if self.by_user.contains_key(user) || self.by_user.len() < MAX_TRACKED {
            let budget = self
                .by_user
                .entry(user.to_string())
                .or_insert_with(|| Budget::full(now));
            budget.refill(now);
            return budget;
        }
        self.overflow.refill(now);
        &mut self.overflow
    }
}

/// The budget key of `user` from client address `host`.
pub(crate) fn key(user: &str, host: &str) -> String {
    format!("{host} {user}")
}

/// Attempt budgets per user name and client address.
#[derive(Debug)]
pub(crate) struct Limiter {
    budgets: Mutex<Budgets>,
}

impl Default for Limiter {
    fn default() -> Limiter {
        Limiter {
            budgets: Mutex::new(Budgets {
                by_user: HashMap::new(),
                overflow: Budget::full(Instant::now()),
            }),
        }
    }
}

impl Limiter {
    /// `None` when `user` may try to authenticate now; otherwise how long
    /// until it may.
    pub(crate) fn check(&self, user: &str) -> Option<Duration> {
        let mut budgets = self.budgets.lock().expect("limiter lock");
        let budget = budgets.of(user, Instant::now());
        (budget.left < 1.0)
            .then(|| Duration::from_secs_f64((1.0 - budget.left) / REFILL_PER_SECOND))
    }

    /// Spends one unit of `user`'s budget.
    pub(crate) fn spend(&self, user: &str) {
        let mut budgets = self.budgets.lock().expect("limiter lock");
        let budget = budgets.of(user, Instant::now());
        budget.left = (budget.left - 1.0).max(0.0);
    }

    /// Gives back the unit a successful exchange spent.
    pub(crate) fn refund(&self, user: &str) {
        let mut budgets = self.budgets.lock().expect("limiter lock");
        let budget = budgets.of(user, Instant::now());
        budget.left = (budget.left + 1.0).min(BURST);
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
            limiter.spend("victim");
        }
        let wait = limiter.check("victim").expect("locked out");
        assert!(wait <= Duration::from_secs_f64(1.0 / REFILL_PER_SECOND));
        assert_eq!(limiter.check("someone-else"), None);
        limiter.refund("victim");
        assert_eq!(limiter.check("victim"), None);
    }

    #[test]
    fn a_user_locked_out_from_one_address_may_try_from_another() {
        let limiter = Limiter::default();
        for _ in 0..BURST as usize {
            limiter.spend(&key("victim", "10.0.0.66"));
        }
        assert!(limiter.check(&key("victim", "10.0.0.66")).is_some());
        assert_eq!(limiter.check(&key("victim", "10.0.0.7")), None);
    }

    #[test]
    fn names_beyond_the_tracked_ones_share_one_budget() {
        let limiter = Limiter::default();
        for i in 0..MAX_TRACKED {
            limiter.spend(&format!("made-up-{i}"));
        }
        for i in 0..BURST as usize {
            limiter.spend(&format!("overflow-{i}"));
        }
        assert!(limiter.check("yet-another-name").is_some());
        // A tracked name keeps its own budget.
        assert_eq!(limiter.check("made-up-0"), None);
    }
}
