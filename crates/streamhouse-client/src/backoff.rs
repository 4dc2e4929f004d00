//! The client's one retry policy: exponential backoff with jitter, bounded
//! by the request timeout and an optional deadline, used by every call the
//! client makes (produce, metadata, producer ids, transactions, groups,
//! offsets), with the builder's `max_retries`, `retry_backoff` and
//! `request_timeout`.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

/// How often and how patiently a failed call is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The wait before the first retry; doubles per retry.
    pub retry_backoff: Duration,
    /// The timeout of one attempt; no wait is longer.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            retry_backoff: Duration::from_millis(100),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first):
    /// `retry_backoff × 2^(retry-1)`, with ±25% jitter, at most
    /// `request_timeout`.
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_with_jitter(retry, rand::random::<f64>())
    }

    /// [`delay`](Self::delay) with the jitter drawn as `unit` in `[0, 1)`.
    fn delay_with_jitter(&self, retry: u32, unit: f64) -> Duration {
        let exponent = retry.saturating_sub(1).min(30) as i32;
        let base = self.retry_backoff.as_secs_f64() * 2f64.powi(exponent);
        let jittered = base * (0.75 + unit.clamp(0.0, 1.0) * 0.5);
        Duration::from_secs_f64(jittered.min(self.request_timeout.as_secs_f64()))
    }

    /// The wait before another attempt after `failed` failed attempts, or
    /// `None` when the retries are used up or the wait would end past
    /// `deadline`.
    pub fn next_wait(&self, failed: u32, deadline: Option<Instant>) -> Option<Duration> {
        if failed > self.max_retries {
            return None;
        }
        let wait = self.delay(failed);
        match deadline {
            Some(d) if Instant::now() + wait >= d => None,
            _ => Some(wait),
        }
    }

    /// Runs `attempt` until it succeeds, fails with an error that is not
    /// retryable, the retries are used up or `deadline` would pass; waits
    /// the backoff between attempts. The last error is returned.
    pub async fn run<T, F, Fut>(&self, deadline: Option<Instant>, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut failed = 0;
        loop {
            let e = match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => e,
            };
            failed += 1;
            let Some(wait) = self.next_wait(failed, deadline) else {
                return Err(e);
            };
            tracing::debug!(error = %e, retry = failed, ?wait, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Runs a metadata store call under this policy.
    pub async fn run_metadata<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = streamhouse_metadata::Result<T>>,
    {
        self.run(None, || {
            let f = call();
            async move { f.await.map_err(Error::from) }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy(max_retries: u32, backoff_ms: u64, timeout_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            retry_backoff: Duration::from_millis(backoff_ms),
            request_timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn delays_double_per_retry_within_the_jitter() {
        let p = policy(5, 100, 60_000);
        for (retry, base) in [(1, 100.0), (2, 200.0), (3, 400.0), (4, 800.0)] {
            let low = p.delay_with_jitter(retry, 0.0).as_secs_f64() * 1000.0;
            let high = p.delay_with_jitter(retry, 1.0).as_secs_f64() * 1000.0;
            assert!((low - base * 0.75).abs() < 1e-6, "retry {retry}: {low}");
            assert!((high - base * 1.25).abs() < 1e-6, "retry {retry}: {high}");
            let d = p.delay(retry).as_secs_f64() * 1000.0;
            assert!(d >= low - 1e-6 && d <= high + 1e-6, "retry {retry}: {d}");
        }
        let draws: std::collections::HashSet<_> = (0..20).map(|_| p.delay(1)).collect();
        assert!(draws.len() > 1, "the jitter varies: {draws:?}");
    }

    #[test]
    fn no_delay_exceeds_the_request_timeout() {
        let p = policy(100, 100, 1_000);
        assert_eq!(p.delay_with_jitter(5, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay_with_jitter(64, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay_with_jitter(u32::MAX, 0.5), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn next_wait_ends_with_the_retries_or_the_deadline() {
        let p = policy(2, 100, 1_000);
        assert!(p.next_wait(1, None).is_some());
        assert!(p.next_wait(2, None).is_some());
        assert_eq!(p.next_wait(3, None), None, "two retries, then no more");
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(p.next_wait(1, Some(soon)), None, "the wait would pass it");
        let later = Instant::now() + Duration::from_secs(10);
        assert!(p.next_wait(1, Some(later)).is_some());
    }

    fn retryable() -> Error {
        Error::NoAgents {
            group: "g".into(),
            reason: "down".into(),
        }
    }

    #[tokio::test]
    async fn run_retries_retryable_errors_then_gives_up() {
        let p = policy(3, 1, 1_000);
        let calls = AtomicU32::new(0);
        let r: Result<()> = p
            .run(None, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(retryable())
            })
            .await;
        assert!(matches!(r, Err(Error::NoAgents { .. })), "{r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 4, "one attempt and 3 retries");
    }

    #[tokio::test]
    async fn run_returns_the_first_success_and_waits_between_attempts() {
        let p = policy(5, 20, 1_000);
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let r = p
            .run(None, || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(retryable()),
                    n => Ok(n),
                }
            })
            .await;
        assert_eq!(r.unwrap(), 2);
        // 20 ms and 40 ms, each at least 75% of that.
        assert!(started.elapsed() >= Duration::from_millis(45));
    }

    #[tokio::test]
    async fn run_does_not_retry_a_final_error() {
        let p = policy(5, 1, 1_000);
        let calls = AtomicU32::new(0);
        let r: Result<()> = p
            .run(None, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::Config("bad".into()))
            })
            .await;
        assert!(matches!(r, Err(Error::Config(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn run_stops_at_the_deadline() {
        let p = policy(1_000, 10, 1_000);
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let r: Result<()> = p
            .run(Some(started + Duration::from_millis(100)), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(retryable())
            })
            .await;
        assert!(r.is_err());
        assert!(started.elapsed() < Duration::from_millis(100));
        let n = calls.load(Ordering::SeqCst);
        assert!((2..=6).contains(&n), "{n} attempts");
    }
}
