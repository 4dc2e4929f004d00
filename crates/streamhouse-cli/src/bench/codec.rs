//! `streamhouse bench codec`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use streamhouse_core::{Compression, NewRecord, RecordBatch};

use super::value;
use crate::BoxError;

#[derive(clap::Args)]
pub struct Args {
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    records: usize,
    /// Value sizes to measure, in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1024])]
    value_sizes: Vec<usize>,
    /// Codecs to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [Compression::None, Compression::Lz4])]
    codecs: Vec<Compression>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
}

struct Row {
    value_size: usize,
    codec: Compression,
    op: &'static str,
    records_per_sec: f64,
    mb_per_sec: f64,
    batch_bytes: usize,
}

/// Runs `f` repeatedly for about `seconds`; returns calls per second.
fn rate(seconds: f64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs_f64(seconds) {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

pub fn run(args: Args) -> Result<(), BoxError> {
    let mut rows = Vec::new();
    for &size in &args.value_sizes {
        let records: Vec<NewRecord> = (0..args.records)
            .map(|i| NewRecord::new(1_700_000_000_000 + i as i64, None, value(i, size)))
            .collect();
        let payload = (args.records * size) as f64;
        for &codec in &args.codecs {
            let batch = RecordBatch::from_records(records.clone()).with_compression(codec);
            let encoded: Bytes = batch.encode()?;
            let per_sec = rate(args.seconds, || {
                std::hint::black_box(batch.encode().expect("encode"));
            });
            rows.push(Row {
                value_size: size,
                codec,
                op: "encode",
                records_per_sec: per_sec * args.records as f64,
                mb_per_sec: per_sec * payload / 1e6,
                batch_bytes: encoded.len(),
            });
            let per_sec = rate(args.seconds, || {
                std::hint::black_box(RecordBatch::decode(&encoded).expect("decode"));
            });
            rows.push(Row {
                value_size: size,
                codec,
                op: "decode",
                records_per_sec: per_sec * args.records as f64,
                mb_per_sec: per_sec * payload / 1e6,
                batch_bytes: encoded.len(),
            });
        }
    }
    println!(
        "{:>6} {:>6} {:>7} {:>14} {:>10} {:>11}",
        "value", "codec", "op", "records/s", "MB/s", "batch bytes"
    );
    for r in &rows {
        println!(
            "{:>6} {:>6} {:>7} {:>14.0} {:>10.1} {:>11}",
            r.value_size, r.codec, r.op, r.records_per_sec, r.mb_per_sec, r.batch_bytes
        );
    }
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                r#"{{"value_size":{},"codec":"{}","op":"{}","records_per_sec":{:.0},"mb_per_sec":{:.1},"batch_bytes":{}}}"#,
                r.value_size, r.codec, r.op, r.records_per_sec, r.mb_per_sec, r.batch_bytes
            )
        })
        .collect();
    println!(
        r#"{{"bench":"codec","records_per_batch":{},"results":[{}]}}"#,
        args.records,
        json.join(",")
    );
    Ok(())
}
