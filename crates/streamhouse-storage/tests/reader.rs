//! The read path's memory and I/O bounds: the segment row cache stays
//! bounded over long tailing reads, retention and deleted topics, and a
//! small read of a large segment fetches only the blocks it needs. Against
//! a local directory with SQLite and an S3-compatible server with
//! PostgreSQL (`scripts/test` starts both; under CI=true they must exist).

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use streamhouse_core::{NewRecord, RecordBatch};
use streamhouse_storage::cache::SegmentCacheStats;
use streamhouse_storage::*;

#[macro_use]
mod common;
use common::{Env, create};

backend_tests!(
    a_long_tailing_read_with_short_retention_keeps_the_segment_cache_flat,
    deleted_topics_leave_no_cached_segment_rows,
    the_segment_cache_is_bounded_over_many_partitions,
    a_small_read_of_a_large_segment_fetches_only_its_first_blocks,
    a_read_across_many_segments_loads_them_together,
    small_reads_through_a_large_segment_return_each_record_once,
);

/// One batch of `n` records with values `tag/i`, each `pad` bytes longer.
fn batch(tag: &str, n: usize, pad: usize) -> Bytes {
    RecordBatch::from_records((0..n).map(|i| {
        NewRecord::new(
            1_700_000_000_000 + i as i64,
            Some(Bytes::from(format!("k{i}"))),
            format!("{tag}/{i}/{}", "x".repeat(pad)),
        )
    }))
    .encode()
    .unwrap()
}

fn pipeline(env: &Env, flush_ms: u64) -> WritePipeline {
    WritePipeline::new(
        env.store.clone(),
        env.metadata.clone(),
        PipelineConfig {
            linger: Duration::from_millis(flush_ms),
            ..PipelineConfig::default()
        },
    )
    .unwrap()
}

/// A reader that reads everything from the object store.
fn cold_reader(env: &Env, config: ReaderConfig) -> Reader {
    Reader::new(env.store.clone(), env.metadata.clone(), None, config)
}

/// Values of the records a read returned at or after `at`, and the offset
/// after them.
fn values(r: &ReadResult, mut at: i64) -> (Vec<String>, i64) {
    let mut out = Vec::new();
    for b in &r.batches {
        let batch = RecordBatch::decode(b).unwrap();
        for (offset, _, rec) in batch.iter() {
            if offset >= at {
                out.push(String::from_utf8(rec.value.clone().unwrap().to_vec()).unwrap());
            }
        }
        at = batch.base_offset + i64::from(batch.last_offset_delta) + 1;
    }
    (out, at)
}

async fn a_long_tailing_read_with_short_retention_keeps_the_segment_cache_flat(env: Env) {
    create(&env, "tail", 1).await;
    let t = env.metadata.get_topic("tail").await.unwrap().unwrap();
    let w = pipeline(&env, 1);
    let reader = cold_reader(&env, ReaderConfig::default());
    let one = batch("t0", 2, 0).len() as i64;
    let mut at = 0;
    let mut largest = SegmentCacheStats::default();
    for i in 0..300 {
        // One append, one segment; the consumer reads it at the tail.
        w.append("tail", 0, batch(&format!("t{i}"), 2, 0))
            .await
            .unwrap();
        let r = reader.read("tail", 0, at, 1 << 20).await.unwrap();
        let (got, next) = values(&r, at);
        assert_eq!(got.len(), 2, "append {i}");
        at = next;
        // Retention keeps about the newest five segments.
        if i % 10 == 9 {
            env.metadata
                .apply_retention(t.id, 0, None, Some(5 * one))
                .await
                .unwrap();
        }
        let stats = reader.segment_cache_stats();
        if stats.rows > largest.rows {
            largest = stats;
        }
    }
    w.close().await;
    assert_eq!(at, 600);
    // Rows below the log start are dropped as the reader sees it move: at
    // most the five kept plus the ten appended between retention runs.
    assert!(largest.rows <= 16, "cache grew to {largest:?}");
    assert_eq!(largest.partitions, 1);
}

async fn deleted_topics_leave_no_cached_segment_rows(env: Env) {
    create(&env, "gone", 2).await;
    create(&env, "kept", 1).await;
    let w = pipeline(&env, 1);
    for p in 0..2 {
        w.append("gone", p, batch("g", 3, 0)).await.unwrap();
    }
    w.append("kept", 0, batch("k", 3, 0)).await.unwrap();
    w.close().await;
    let reader = cold_reader(&env, ReaderConfig::default());
    for p in 0..2 {
        assert_eq!(
            reader
                .read("gone", p, 0, 1 << 20)
                .await
                .unwrap()
                .batches
                .len(),
            1
        );
    }
    assert_eq!(
        reader
            .read("kept", 0, 0, 1 << 20)
            .await
            .unwrap()
            .batches
            .len(),
        1
    );
    assert_eq!(
        reader.segment_cache_stats(),
        SegmentCacheStats {
            rows: 3,
            partitions: 3
        }
    );
    env.metadata.delete_topic("gone").await.unwrap();
    assert!(matches!(
        reader.read("gone", 0, 0, 1 << 20).await,
        Err(Error::TopicNotFound(_))
    ));
    assert_eq!(
        reader.segment_cache_stats(),
        SegmentCacheStats {
            rows: 1,
            partitions: 1
        },
        "both partitions of the deleted topic forgotten"
    );
}

async fn the_segment_cache_is_bounded_over_many_partitions(env: Env) {
    create(&env, "wide", 8).await;
    let w = pipeline(&env, 1);
    for round in 0..3 {
        for p in 0..8 {
            w.append("wide", p, batch(&format!("w{round}"), 1, 0))
                .await
                .unwrap();
        }
    }
    w.close().await;
    let reader = cold_reader(
        &env,
        ReaderConfig {
            segment_cache_rows: 10,
            ..ReaderConfig::default()
        },
    );
    for _ in 0..2 {
        for p in 0..8 {
            let mut at = 0;
            let mut got = Vec::new();
            while at < 3 {
                let r = reader.read("wide", p, at, 1).await.unwrap();
                let (v, next) = values(&r, at);
                got.extend(v);
                at = next;
                assert!(reader.segment_cache_stats().rows <= 10);
            }
            assert_eq!(got.len(), 3, "partition {p}");
        }
    }
    assert!(reader.segment_cache_stats().partitions <= 4);
}

async fn a_small_read_of_a_large_segment_fetches_only_its_first_blocks(env: Env) {
    create(&env, "large", 1).await;
    // 200 batches of about 1 KiB appended at once: one flush, one segment.
    let w = pipeline(&env, 200);
    let appends = (0..200).map(|i| w.append("large", 0, batch(&format!("l{i}"), 1, 1000)));
    for r in join_all(appends).await {
        r.unwrap();
    }
    w.close().await;
    let t = env.metadata.get_topic("large").await.unwrap().unwrap();
    let segments = env.metadata.segments(t.id, 0, 0, 10).await.unwrap();
    assert_eq!(segments.len(), 1, "one segment");
    assert!(segments[0].byte_length > 200_000);
    let reader = cold_reader(
        &env,
        ReaderConfig {
            block_size: 4096,
            ..ReaderConfig::default()
        },
    );
    // A read of 0 bytes (a fetch whose budget is spent) loads nothing and
    // still reports the partition's offsets.
    let r = reader.read("large", 0, 0, 0).await.unwrap();
    assert!(r.batches.is_empty());
    assert_eq!(r.next_offset, 200);
    assert_eq!(reader.cache_stats().bytes, 0);
    let r = reader.read("large", 0, 0, 1).await.unwrap();
    assert_eq!(r.batches.len(), 1);
    assert!(
        reader.cache_stats().bytes <= 2 * 4096,
        "a one-batch read loaded {} bytes",
        reader.cache_stats().bytes
    );
    // Reading on returns every record, in order.
    let mut at = 0;
    let mut all = Vec::new();
    while at < 200 {
        let r = reader.read("large", 0, at, 16 << 10).await.unwrap();
        let (v, next) = values(&r, at);
        assert!(!v.is_empty());
        all.extend(v);
        at = next;
    }
    assert_eq!(all.len(), 200);
    let distinct: std::collections::HashSet<&str> =
        all.iter().map(|v| v.split('/').next().unwrap()).collect();
    assert_eq!(distinct.len(), 200, "each append once");
}

async fn a_read_across_many_segments_loads_them_together(env: Env) {
    create(&env, "many", 1).await;
    // Eight appends one after the other: eight objects, eight segments.
    let w = pipeline(&env, 0);
    for i in 0..8 {
        w.append("many", 0, batch(&format!("m{i}"), 2, 0))
            .await
            .unwrap();
    }
    w.close().await;
    let faulty = streamhouse_storage::testing::FaultyStore::new(env.store.clone());
    faulty.slow_gets(Duration::from_millis(30));
    let reader = Reader::new(
        faulty.clone(),
        env.metadata.clone(),
        None,
        ReaderConfig::default(),
    );
    let r = reader.read("many", 0, 0, 1 << 20).await.unwrap();
    let (got, next) = values(&r, 0);
    assert_eq!((got.len(), next), (16, 16), "every record, in order");
    assert!(got[0].starts_with("m0/0/") && got[15].starts_with("m7/1/"));
    assert!(
        faulty.most_gets_running() >= 2,
        "the following segments load while the first does"
    );
}

async fn small_reads_through_a_large_segment_return_each_record_once(env: Env) {
    create(&env, "big", 1).await;
    // 100 batches of 3 records appended at once: one flush, one segment.
    let w = pipeline(&env, 200);
    let appends = (0..100).map(|i| w.append("big", 0, batch(&format!("b{i}"), 3, 100)));
    for r in join_all(appends).await {
        r.unwrap();
    }
    w.close().await;
    let reader = cold_reader(&env, ReaderConfig::default());
    // A consumer's fetches, one batch at a time: each starts where the
    // last stopped inside the segment.
    let mut at = 0;
    let mut got = Vec::new();
    while at < 300 {
        let r = reader.read("big", 0, at, 1).await.unwrap();
        let (v, next) = values(&r, at);
        assert_eq!(v.len(), 3, "one batch from {at}");
        got.extend(v);
        at = next;
    }
    let expected: Vec<String> = (0..100)
        .flat_map(|i| (0..3).map(move |j| format!("b{i}/{j}/{}", "x".repeat(100))))
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(sorted, want, "every record exactly once");
    // Reading back from before where the last read stopped, and from the
    // middle of a batch, still starts at the right batch.
    for from in [0, 150, 151, 299] {
        let r = reader.read("big", 0, from, 1).await.unwrap();
        let first = streamhouse_core::BatchHeader::parse(&r.batches[0]).unwrap();
        assert!(
            first.base_offset <= from && from <= first.base_offset + 2,
            "{from}"
        );
    }
}
