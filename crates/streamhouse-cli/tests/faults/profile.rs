//! Run profiles (short for CI, long for soak runs), seeded randomness and
//! the figures every run prints.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long and how hard a scenario runs. `STREAMHOUSE_FAULTS=long`
/// selects the soak profile; anything else (or nothing) the short one.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    pub name: &'static str,
    /// How long faults are injected while the workload runs.
    pub fault_time: Duration,
    /// Longest single stall (SIGSTOP, proxy stall, delay window).
    pub max_stall: Duration,
}

impl Profile {
    pub fn from_env() -> Profile {
        match std::env::var("STREAMHOUSE_FAULTS").as_deref() {
            Ok("long") => Profile {
                name: "long",
                fault_time: Duration::from_secs(300),
                max_stall: Duration::from_millis(2500),
            },
            _ => Profile {
                name: "short",
                fault_time: Duration::from_secs(20),
                max_stall: Duration::from_millis(1500),
            },
        }
    }
}

/// The seed of a run: `STREAMHOUSE_FAULTS_SEED` replays one, otherwise the
/// clock picks it (and every report prints it).
pub fn seed() -> u64 {
    if let Ok(s) = std::env::var("STREAMHOUSE_FAULTS_SEED") {
        return s.parse().expect("STREAMHOUSE_FAULTS_SEED is a u64");
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// A small deterministic generator (SplitMix64): the fault schedule of a
/// seed is the same on every run (process timing is not).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A duration in `min..max`.
    pub fn between(&mut self, min: Duration, max: Duration) -> Duration {
        let span = (max - min).as_millis().max(1) as u64;
        min + Duration::from_millis(self.below(span))
    }
}

/// Counts of one run: operations done, faults injected and what the
/// proxies did to single requests while a fault lasted, by kind.
#[derive(Default)]
pub struct Figures {
    operations: Mutex<BTreeMap<&'static str, u64>>,
    faults: Mutex<BTreeMap<&'static str, u64>>,
    effects: Mutex<BTreeMap<String, u64>>,
    total_operations: AtomicU64,
}

impl Figures {
    pub fn operation(&self, kind: &'static str, n: u64) {
        *self.operations.lock().unwrap().entry(kind).or_default() += n;
        self.total_operations.fetch_add(n, Ordering::Relaxed);
    }

    pub fn fault(&self, kind: &'static str) {
        *self.faults.lock().unwrap().entry(kind).or_default() += 1;
    }

    /// A request or connection a proxy delayed, lost, replayed or reset.
    pub fn effect(&self, kind: String) {
        *self.effects.lock().unwrap().entry(kind).or_default() += 1;
    }

    pub fn effects_total(&self) -> u64 {
        self.effects.lock().unwrap().values().sum()
    }

    pub fn faults_total(&self) -> u64 {
        self.faults.lock().unwrap().values().sum()
    }

    pub fn operations_of(&self, kind: &'static str) -> u64 {
        self.operations
            .lock()
            .unwrap()
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    /// One line per figure, as the README quotes them.
    pub fn report(
        &self,
        scenario: &str,
        profile: &Profile,
        seed: u64,
        violations: usize,
    ) -> String {
        fn list<K: std::fmt::Display>(m: &BTreeMap<K, u64>) -> String {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
        let ops = self.operations.lock().unwrap();
        let faults = self.faults.lock().unwrap();
        let effects = self.effects.lock().unwrap();
        format!(
            "faults/{scenario} profile={} seed={seed}\n  operations: {} ({})\n  faults injected: {} ({})\n  proxy effects: {} ({})\n  violations: {violations}",
            profile.name,
            self.total_operations.load(Ordering::Relaxed),
            list(&ops),
            faults.values().sum::<u64>(),
            list(&faults),
            effects.values().sum::<u64>(),
            list(&effects),
        )
    }
}

#[test]
fn the_generator_is_deterministic_and_bounded() {
    let (mut a, mut b) = (Rng::new(7), Rng::new(7));
    for _ in 0..1000 {
        let x = a.below(10);
        assert_eq!(x, b.below(10));
        assert!(x < 10);
    }
    let d = a.between(Duration::from_millis(5), Duration::from_millis(9));
    assert!(d >= Duration::from_millis(5) && d < Duration::from_millis(9));
}
