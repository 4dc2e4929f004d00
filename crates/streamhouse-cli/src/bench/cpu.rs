//! Process CPU time (user + system, all threads) for the benches' CPU
//! seconds per million records.

use std::time::Duration;

/// Clock ticks per second of the times in `/proc/self/stat` (USER_HZ, 100
/// on every Linux architecture).
const USER_HZ: f64 = 100.0;

/// User + system CPU time this process has used so far, over all its
/// threads; `None` where `/proc/self/stat` cannot be read (not Linux).
pub fn process_cpu() -> Option<Duration> {
    cpu_of("self")
}

/// User + system CPU time process `pid` (a number, or `self`) has used so
/// far; `None` where its `/proc/PID/stat` cannot be read.
pub fn cpu_of(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (user, system) = parse_stat(&stat)?;
    Some(Duration::from_secs_f64((user + system) as f64 / USER_HZ))
}

/// The utime and stime fields (14 and 15, in clock ticks) of a
/// `/proc/PID/stat` line. The command name (field 2) is in parentheses and
/// may hold spaces and parentheses, so fields are counted after the last
/// `)`.
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is the first, so utime (14) is the
    // 12th and stime (15) the 13th.
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some((user, system))
}

/// CPU time used between two readings of [`process_cpu`], in seconds; 0
/// when either is missing.
pub fn cpu_seconds(before: Option<Duration>, after: Option<Duration>) -> f64 {
    match (before, after) {
        (Some(b), Some(a)) => a.saturating_sub(b).as_secs_f64(),
        _ => 0.0,
    }
}

/// CPU seconds per million records; 0 when no record was handled.
pub fn per_million(cpu_seconds: f64, records: f64) -> f64 {
    if records > 0.0 {
        cpu_seconds / records * 1e6
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let line = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 731 52 0 0 20 0 9 0 123 456 789";
        assert_eq!(parse_stat(line), Some((731, 52)));
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        let before = process_cpu();
        if before.is_none() {
            // Not Linux: nothing to read, and cpu_seconds says 0.
            assert_eq!(cpu_seconds(before, process_cpu()), 0.0);
            return;
        }
        // Spin until the reading has grown by 50 ms (a shared machine may
        // give this thread only part of a core), for at most 30 s.
        let start = std::time::Instant::now();
        let mut x = 1u64;
        while cpu_seconds(before, process_cpu()) < 0.05 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "process CPU time did not grow in 30 s of spinning"
            );
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
    }

    #[test]
    fn per_million_records() {
        assert_eq!(per_million(2.0, 4e6), 0.5);
        assert_eq!(per_million(1.0, 0.0), 0.0);
        assert_eq!(cpu_seconds(None, Some(Duration::from_secs(1))), 0.0);
        assert_eq!(
            cpu_seconds(
                Some(Duration::from_secs(1)),
                Some(Duration::from_millis(1500))
            ),
            0.5
        );
    }
}
