//! `streamhouse bench`: benchmarks whose last line is a JSON summary.

use clap::Subcommand;

mod codec;
mod consume;
mod cpu;
#[cfg(feature = "kafka-bench")]
mod kafka;
#[cfg(feature = "kafka-bench")]
mod peer;
mod pipeline;
mod produce;

use crate::BoxError;

#[derive(Subcommand)]
pub enum Bench {
    /// Record batch encode and decode throughput (100-byte and 1 KiB
    /// values; uncompressed and LZ4).
    Codec(codec::Args),
    /// The write pipeline end to end (append → committed offset) at full
    /// speed, with 1, 16 and 256 partitions by default.
    Pipeline(pipeline::Args),
    /// The Producer against an agent (a running one, or one started in
    /// this process): throughput, acknowledgement latency and process CPU
    /// per million records; with the kafka-bench feature, `--kafka` also
    /// runs librdkafka through the agent's Kafka listener.
    Produce(produce::Args),
    /// The Consumer reading a pre-filled topic from storage (a fresh agent,
    /// so nothing is served from memory): records/s and MB/s.
    Consume(consume::ConsumeArgs),
    /// Produce → consume latency at a target rate, through one agent.
    E2e(consume::E2eArgs),
    /// librdkafka against any Kafka broker (an agent's Kafka listener or a
    /// peer): produce for a while, or read a topic back, reporting
    /// records/s, acknowledgement latency and CPU per million records of
    /// this client and of watched processes (kafka-bench feature).
    #[cfg(feature = "kafka-bench")]
    Kafka(peer::PeerArgs),
}

pub async fn run(bench: Bench) -> Result<(), BoxError> {
    match bench {
        Bench::Codec(args) => codec::run(args),
        Bench::Pipeline(args) => pipeline::run(args).await,
        Bench::Produce(args) => produce::run(args).await,
        Bench::Consume(args) => consume::consume(args).await,
        Bench::E2e(args) => consume::e2e(args).await,
        #[cfg(feature = "kafka-bench")]
        Bench::Kafka(args) => peer::run(args).await,
    }
}

/// A progress bar (on a terminal) over `seconds` of a timed run; abort the
/// returned task when the run ends.
pub fn time_bar(seconds: f64) -> tokio::task::JoinHandle<()> {
    let bar = indicatif::ProgressBar::new((seconds * 10.0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {elapsed}/{duration}")
            .expect("a valid template"),
    );
    tokio::spawn(async move {
        let _clear = ClearOnDrop(bar.clone());
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            bar.inc(1);
        }
    })
}

/// Clears a progress bar when its task ends.
struct ClearOnDrop(indicatif::ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// The value at quantile `q` of sorted samples.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A value of `size` bytes shaped like a small JSON event: field names
/// repeat from record to record, field values are pseudo-random, so it
/// compresses about as well as real payloads do.
pub fn value(i: usize, size: usize) -> bytes::Bytes {
    let mut state = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut v = format!(
        r#"{{"id":{i},"user":"user-{}","amount":{},"note":""#,
        rand() % 10_000,
        rand() % 1_000_000
    )
    .into_bytes();
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 ";
    while v.len() < size {
        v.push(ALPHABET[(rand() % ALPHABET.len() as u64) as usize]);
    }
    v.truncate(size);
    v.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&s, 0.5), 51);
        assert_eq!(quantile(&s, 0.99), 99);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn values_have_the_asked_size() {
        assert_eq!(value(3, 100).len(), 100);
        assert_eq!(value(3, 5).len(), 5);
    }
}
