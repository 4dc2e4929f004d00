//! The write pipeline and read path through their public API, against a
//! local directory with SQLite and a real S3-compatible server with
//! PostgreSQL (`scripts/test` starts both; under CI=true they must exist).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use streamhouse_core::{Compression, NewRecord, RecordBatch};
use streamhouse_storage::testing::FaultyStore;
use streamhouse_storage::*;

#[macro_use]
mod common;
use common::{Env, create};

backend_tests!(
    concurrent_appends_share_one_object_per_flush_and_read_back,
    two_pipelines_on_the_same_partitions_keep_offsets_dense,
    reads_honour_offsets_and_limits,
    cold_reads_use_range_gets_through_the_block_cache,
    bad_appends_get_clear_errors,
    upload_failure_fails_only_that_flush,
    commit_failure_leaves_an_unreferenced_object,
    backpressure_bounds_buffered_bytes,
    batches_gather_while_flushes_are_unfinished,
    deleted_topic_fails_its_appends_only,
    close_commits_everything_submitted,
    idempotent_retries_are_committed_once,
    a_commit_in_doubt_is_settled_before_answering,
);

/// A batch of `n` records whose values name (tag, record index).
fn batch(tag: &str, n: usize, codec: Compression) -> Bytes {
    RecordBatch::from_records((0..n).map(|i| {
        NewRecord::new(
            1_700_000_000_000 + i as i64,
            Some(Bytes::from(format!("k{i}"))),
            format!("{tag}/{i}"),
        )
    }))
    .with_compression(codec)
    .encode()
    .unwrap()
}

fn config(flush_ms: u64) -> PipelineConfig {
    PipelineConfig {
        linger: Duration::from_millis(flush_ms),
        ..PipelineConfig::default()
    }
}

async fn object_keys(store: &Arc<dyn ObjectStore>) -> Vec<Path> {
    store
        .list(Some(&Path::from("objects")))
        .map(|m| m.unwrap().location)
        .collect()
        .await
}

/// Reads a whole partition and returns (offset, value) of every record.
async fn read_all(reader: &Reader, topic: &str, partition: u32) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let r = reader.read(topic, partition, at, 1 << 20).await.unwrap();
        if r.batches.is_empty() {
            assert_eq!(at, r.next_offset);
            return out;
        }
        for b in r.batches {
            let batch = RecordBatch::decode(&b).unwrap();
            for (offset, _, rec) in batch.iter() {
                if offset >= at {
                    out.push((
                        offset,
                        String::from_utf8(rec.value.clone().unwrap().to_vec()).unwrap(),
                    ));
                }
            }
            at = batch.base_offset + batch.last_offset_delta as i64 + 1;
        }
    }
}

async fn concurrent_appends_share_one_object_per_flush_and_read_back(env: Env) {
    create(&env, "events", 16).await;
    let pipeline =
        Arc::new(WritePipeline::new(env.store.clone(), env.metadata.clone(), config(20)).unwrap());
    // 16 partitions, 8 tasks, each appending 10 batches per partition in
    // order; every append waits in flight with all the others.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let p = pipeline.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for round in 0..10 {
                let mut pending = Vec::new();
                for partition in 0..16u32 {
                    let codec = if round % 2 == 0 {
                        Compression::Lz4
                    } else {
                        Compression::None
                    };
                    let tag = format!("t{t}r{round}p{partition}");
                    let appending = p
                        .submit("events", partition, batch(&tag, 5, codec))
                        .await
                        .unwrap();
                    pending.push((partition, tag, appending));
                }
                for (partition, tag, appending) in pending {
                    acks.push((partition, tag, appending.await.unwrap()));
                }
            }
            acks
        }));
    }
    let acks: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    assert_eq!(acks.len(), 8 * 10 * 16);

    // Exactly one object per flush, and flushes carried many partitions.
    let stats = pipeline.stats();
    assert_eq!(stats.objects_written, stats.flushes);
    assert_eq!(stats.commits, stats.flushes);
    assert_eq!(
        object_keys(&env.store).await.len() as u64,
        stats.objects_written
    );
    assert!(
        stats.flushes < 8 * 10 * 16 / 4,
        "{stats:?}: appends were not batched"
    );

    // Per partition, acknowledged ranges tile 0..next with no gap or overlap,
    // and each task's batches of one partition are in order.
    let mut by_partition: BTreeMap<u32, Vec<(i64, String)>> = BTreeMap::new();
    for (partition, tag, a) in &acks {
        assert_eq!(a.offset_span, 5);
        by_partition
            .entry(*partition)
            .or_default()
            .push((a.base_offset, tag.clone()));
    }
    let reader = Reader::new(
        env.store.clone(),
        env.metadata.clone(),
        Some(pipeline.recent_objects()),
        ReaderConfig::default(),
    );
    for (partition, mut ranges) in by_partition {
        ranges.sort();
        for (i, (base, _)) in ranges.iter().enumerate() {
            assert_eq!(*base, i as i64 * 5, "partition {partition}");
        }
        // Every acknowledged record reads back at its offset.
        let records = read_all(&reader, "events", partition).await;
        assert_eq!(records.len(), ranges.len() * 5);
        for (base, tag) in &ranges {
            for i in 0..5 {
                assert_eq!(
                    records[(*base + i) as usize],
                    (*base + i, format!("{tag}/{i}"))
                );
            }
        }
    }
    pipeline.close().await;
}

async fn two_pipelines_on_the_same_partitions_keep_offsets_dense(env: Env) {
    create(&env, "shared", 4).await;
    let a =
        Arc::new(WritePipeline::new(env.store.clone(), env.metadata.clone(), config(5)).unwrap());
    let b =
        Arc::new(WritePipeline::new(env.store.clone(), env.metadata.clone(), config(7)).unwrap());
    let mut tasks = Vec::new();
    for (name, p) in [("a", a.clone()), ("b", b.clone())] {
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..40u32 {
                let tag = format!("{name}{i}");
                let ack = p
                    .append("shared", i % 4, batch(&tag, 3, Compression::Lz4))
                    .await
                    .unwrap();
                out.push((i % 4, ack.base_offset, tag));
            }
            out
        }));
    }
    let acks: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    let reader = Reader::new(
        env.store.clone(),
        env.metadata.clone(),
        None,
        ReaderConfig::default(),
    );
    for partition in 0..4 {
        let records = read_all(&reader, "shared", partition).await;
        assert_eq!(records.len(), 20 * 3, "partition {partition}");
        for (p, base, tag) in acks.iter().filter(|a| a.0 == partition) {
            assert_eq!(
                records[*base as usize].1,
                format!("{tag}/0"),
                "partition {p}"
            );
        }
    }
    a.close().await;
    b.close().await;
}

async fn reads_honour_offsets_and_limits(env: Env) {
    create(&env, "r", 1).await;
    let pipeline = WritePipeline::new(env.store.clone(), env.metadata.clone(), config(1)).unwrap();
    for i in 0..10 {
        let a = pipeline
            .append("r", 0, batch(&format!("b{i}"), 10, Compression::None))
            .await
            .unwrap();
        assert_eq!(a.base_offset, i * 10);
    }
    let reader = Reader::new(
        env.store.clone(),
        env.metadata.clone(),
        Some(pipeline.recent_objects()),
        ReaderConfig::default(),
    );
    // An offset inside a batch returns that whole batch first, patched.
    let r = reader.read("r", 0, 37, 1).await.unwrap();
    assert_eq!(r.batches.len(), 1, "max_bytes 1 still returns one batch");
    let first = RecordBatch::decode(&r.batches[0]).unwrap();
    assert_eq!(first.base_offset, 30);
    assert_eq!((r.log_start_offset, r.next_offset), (0, 100));
    // max_bytes bounds the batches returned.
    let size = r.batches[0].len();
    let r = reader.read("r", 0, 0, size * 3).await.unwrap();
    assert_eq!(r.batches.len(), 3);
    let r = reader.read("r", 0, 0, usize::MAX).await.unwrap();
    assert_eq!(r.batches.len(), 10);
    // The end of the log is empty; beyond it is out of range.
    assert!(
        reader
            .read("r", 0, 100, 1000)
            .await
            .unwrap()
            .batches
            .is_empty()
    );
    assert!(matches!(
        reader.read("r", 0, 101, 1000).await,
        Err(Error::OffsetOutOfRange {
            offset: 101,
            next_offset: 100,
            ..
        })
    ));
    assert!(matches!(
        reader.read("r", 0, -1, 1000).await,
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        reader.read("r", 1, 0, 1000).await,
        Err(Error::PartitionNotFound { .. })
    ));
    assert!(matches!(
        reader.read("nope", 0, 0, 1000).await,
        Err(Error::TopicNotFound(_))
    ));
    pipeline.close().await;
}

async fn cold_reads_use_range_gets_through_the_block_cache(env: Env) {
    create(&env, "cold", 2).await;
    let pipeline = WritePipeline::new(env.store.clone(), env.metadata.clone(), config(1)).unwrap();
    for i in 0..6 {
        pipeline
            .append("cold", i % 2, batch(&format!("c{i}"), 50, Compression::Lz4))
            .await
            .unwrap();
    }
    pipeline.close().await;
    // A reader without the pipeline's memory: everything comes by range GETs,
    // in small blocks so objects span several.
    let reader = Reader::new(
        env.store.clone(),
        env.metadata.clone(),
        None,
        ReaderConfig {
            block_size: 256,
            cache_bytes: 1 << 20,
            ..ReaderConfig::default()
        },
    );
    let first = read_all(&reader, "cold", 0).await;
    assert_eq!(first.len(), 150);
    assert_eq!(first[0].1, "c0/0");
    assert_eq!(first[149].1, "c4/49");
    let misses = reader.cache_stats().misses;
    assert!(misses > 0);
    assert_eq!(read_all(&reader, "cold", 0).await, first);
    assert_eq!(
        reader.cache_stats().misses,
        misses,
        "second read served from cache"
    );
    assert!(reader.cache_stats().hits > 0);
}

async fn bad_appends_get_clear_errors(env: Env) {
    create(&env, "bad", 2).await;
    let pipeline = WritePipeline::new(
        env.store.clone(),
        env.metadata.clone(),
        PipelineConfig {
            max_batch_bytes: 4096,
            ..config(1)
        },
    )
    .unwrap();
    let good = batch("g", 3, Compression::None);
    let mut corrupt = good.to_vec();
    *corrupt.last_mut().unwrap() ^= 0xff;
    let err = pipeline.append("bad", 0, corrupt.into()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidBatch {
                source: streamhouse_core::Error::BadCrc { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("\"bad\" partition 0"), "{err}");
    assert!(!err.is_retryable());
    let err = pipeline
        .append("bad", 0, good.slice(..40))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidBatch { .. }), "{err}");
    let err = pipeline
        .append("bad", 0, batch("big", 400, Compression::None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidBatch {
                source: streamhouse_core::Error::TooLarge { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        pipeline.append("bad", 2, good.clone()).await,
        Err(Error::PartitionNotFound {
            partition: 2,
            partition_count: 2,
            ..
        })
    ));
    assert!(matches!(
        pipeline.append("nope", 0, good.clone()).await,
        Err(Error::TopicNotFound(_))
    ));
    // Nothing above reached the log; a good batch still goes in at 0.
    assert_eq!(
        pipeline.append("bad", 0, good).await.unwrap().base_offset,
        0
    );
    pipeline.close().await;
}

async fn upload_failure_fails_only_that_flush(env: Env) {
    create(&env, "f", 2).await;
    let faulty = FaultyStore::new(env.store.clone());
    let pipeline = WritePipeline::new(faulty.clone(), env.metadata.clone(), config(1)).unwrap();
    pipeline
        .append("f", 0, batch("ok1", 2, Compression::None))
        .await
        .unwrap();
    faulty.fail_puts(true);
    let failed =
        join_all((0..2).map(|p| pipeline.append("f", p, batch("lost", 2, Compression::None))))
            .await;
    for r in failed {
        let err = r.unwrap_err();
        assert!(matches!(err, Error::FlushFailed(_)), "{err}");
        assert!(err.is_retryable(), "{err}");
    }
    faulty.fail_puts(false);
    // Nothing of the failed flush is visible; the retry lands right after.
    let again = pipeline
        .append("f", 0, batch("ok2", 2, Compression::None))
        .await
        .unwrap();
    assert_eq!(again.base_offset, 2);
    let reader = Reader::new(
        env.store.clone(),
        env.metadata.clone(),
        None,
        ReaderConfig::default(),
    );
    let values: Vec<_> = read_all(&reader, "f", 0)
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(values, ["ok1/0", "ok1/1", "ok2/0", "ok2/1"]);
    assert!(read_all(&reader, "f", 1).await.is_empty());
    assert_eq!(pipeline.stats().failed_flushes, 1);
    pipeline.close().await;
}

async fn commit_failure_leaves_an_unreferenced_object(env: Env) {
    create(&env, "c", 1).await;
    let failing = streamhouse_metadata::testing::FaultyMetadata::new(env.metadata.clone());
    failing.fail_commits(true);
    let pipeline = WritePipeline::new(env.store.clone(), failing, config(1)).unwrap();
    let err = pipeline
        .append("c", 0, batch("x", 3, Compression::None))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        matches!(err, Error::FlushFailed(_)),
        "failed before COMMIT: known not written: {err}"
    );
    pipeline.close().await;
    // The object was written and describes itself, but no segment uses it.
    let keys = object_keys(&env.store).await;
    assert_eq!(keys.len(), 1);
    let bytes = env
        .store
        .get(&keys[0])
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let index = streamhouse_storage::object::decode_footer(&bytes, bytes.len() as u64).unwrap();
    assert_eq!(
        (index.len(), index[0].record_count, index[0].partition),
        (1, 3, 0)
    );
    let topic = env.metadata.get_topic("c").await.unwrap().unwrap();
    assert_eq!(
        env.metadata
            .partition_state(topic.id, 0)
            .await
            .unwrap()
            .next_offset,
        0
    );
    assert!(
        env.metadata
            .segments(topic.id, 0, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn backpressure_bounds_buffered_bytes(env: Env) {
    create(&env, "bp", 1).await;
    let faulty = FaultyStore::new(env.store.clone());
    let one = batch("bp", 10, Compression::None);
    let pipeline = WritePipeline::new(
        faulty.clone(),
        env.metadata.clone(),
        PipelineConfig {
            max_buffered_bytes: one.len() * 3,
            max_batch_bytes: one.len() * 3,
            ..config(1)
        },
    )
    .unwrap();
    // Hold every PUT: three batches fill the buffer, the fourth must wait.
    let held = faulty.hold_puts().await;
    let mut acks = Vec::new();
    for _ in 0..3 {
        acks.push(pipeline.submit("bp", 0, one.clone()).await.unwrap());
    }
    let mut fourth = Box::pin(pipeline.submit("bp", 0, one.clone()));
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(
        futures::poll!(fourth.as_mut()).is_pending(),
        "buffer full: submit waits"
    );
    drop(held);
    let fourth = fourth.await.unwrap();
    for a in acks {
        a.await.unwrap();
    }
    assert_eq!(fourth.await.unwrap().base_offset, 30);
    pipeline.close().await;
}

/// Waits until the pipeline has started `n` flushes.
async fn flushes_reach(pipeline: &WritePipeline, n: u64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while pipeline.stats().flushes < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} flushes never started: {:?}", pipeline.stats()));
}

async fn batches_gather_while_flushes_are_unfinished(env: Env) {
    create(&env, "gc", 4).await;
    let faulty = FaultyStore::new(env.store.clone());
    let pipeline = WritePipeline::new(
        faulty.clone(),
        env.metadata.clone(),
        PipelineConfig {
            linger: Duration::ZERO,
            flush_bytes: 64 << 10,
            ..PipelineConfig::default()
        },
    )
    .unwrap();
    let held = faulty.hold_puts().await;
    // Idle: the first batch flushes at once, alone.
    let first = pipeline
        .submit("gc", 0, batch("first", 1, Compression::None))
        .await
        .unwrap();
    flushes_reach(&pipeline, 1).await;
    // A flush unfinished: later batches gather, with no timer to flush
    // them, until it finishes.
    let mut rest = Vec::new();
    for i in 0..12u32 {
        rest.push(
            pipeline
                .submit("gc", i % 4, batch(&format!("r{i}"), 2, Compression::None))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        pipeline.stats().flushes,
        1,
        "gathering while one is unfinished"
    );
    // An eighth of flush_bytes gathered is worth a flush of its own, beside
    // the unfinished one.
    let big = batch("big", 1000, Compression::None);
    assert!(big.len() >= (64 << 10) / 8);
    let big = pipeline.submit("gc", 3, big).await.unwrap();
    flushes_reach(&pipeline, 2).await;
    drop(held);
    big.await.unwrap();
    first.await.unwrap();
    let acked = join_all(rest).await;
    assert!(acked.iter().all(Result::is_ok), "{acked:?}");
    let stats = pipeline.stats();
    assert_eq!(
        (stats.flushes, stats.commits),
        (2, 2),
        "the twelve gathered batches and the big one made one object"
    );
    pipeline.close().await;
}

async fn deleted_topic_fails_its_appends_only(env: Env) {
    create(&env, "gone", 1).await;
    create(&env, "kept", 1).await;
    let faulty = FaultyStore::new(env.store.clone());
    let pipeline = WritePipeline::new(faulty.clone(), env.metadata.clone(), config(1)).unwrap();
    pipeline
        .append("gone", 0, batch("warm", 1, Compression::None))
        .await
        .unwrap();
    // Both appends wait in one flush while the topic is deleted.
    let held = faulty.hold_puts().await;
    let a = pipeline
        .submit("gone", 0, batch("a", 1, Compression::None))
        .await
        .unwrap();
    let b = pipeline
        .submit("kept", 0, batch("b", 1, Compression::None))
        .await
        .unwrap();
    env.metadata.delete_topic("gone").await.unwrap();
    drop(held);
    let err = a.await.unwrap_err();
    assert!(matches!(err, Error::TopicDeleted { .. }), "{err}");
    assert_eq!(b.await.unwrap().base_offset, 0);
    // The re-created topic starts from offset 0 with none of the old data.
    create(&env, "gone", 1).await;
    assert_eq!(
        pipeline
            .append("gone", 0, batch("new", 2, Compression::None))
            .await
            .unwrap()
            .base_offset,
        0
    );
    pipeline.close().await;
}

async fn close_commits_everything_submitted(env: Env) {
    create(&env, "close", 3).await;
    let pipeline =
        WritePipeline::new(env.store.clone(), env.metadata.clone(), config(10_000)).unwrap();
    let mut acks = Vec::new();
    for i in 0..30u32 {
        acks.push(
            pipeline
                .submit("close", i % 3, batch("z", 1, Compression::Lz4))
                .await
                .unwrap(),
        );
    }
    pipeline.close().await;
    for a in acks {
        a.await.unwrap();
    }
    // One flush held them all, and later appends are refused.
    assert_eq!(pipeline.stats().objects_written, 1);
    assert!(matches!(
        pipeline
            .append("close", 0, batch("late", 1, Compression::None))
            .await,
        Err(Error::Closed)
    ));
}

async fn idempotent_retries_are_committed_once(env: Env) {
    create(&env, "idem", 1).await;
    let id = env.metadata.init_producer_id(None).await.unwrap();
    let pipeline = WritePipeline::new(env.store.clone(), env.metadata.clone(), config(1)).unwrap();
    let idempotent = |seq: i32, tag: &str| {
        RecordBatch::from_records((0..4).map(|i| NewRecord::new(1, None, format!("{tag}/{i}"))))
            .with_producer(id.producer_id, id.epoch, seq)
            .encode()
            .unwrap()
    };
    let first = pipeline
        .append("idem", 0, idempotent(0, "a"))
        .await
        .unwrap();
    // The same batch again (a retry after a lost acknowledgement), in the
    // same flush as the next one.
    let retry = pipeline
        .submit("idem", 0, idempotent(0, "a"))
        .await
        .unwrap();
    let next = pipeline
        .submit("idem", 0, idempotent(4, "b"))
        .await
        .unwrap();
    let (retry, next) = (retry.await.unwrap(), next.await.unwrap());
    assert!(!first.duplicate);
    assert_eq!((retry.base_offset, retry.duplicate), (0, true));
    assert_eq!((next.base_offset, next.duplicate), (4, false));
    let err = pipeline
        .append("idem", 0, idempotent(20, "gap"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Rejected {
                reason: streamhouse_metadata::BatchRejected::OutOfOrderSequence { expected: 8, .. },
                ..
            }
        ),
        "{err}"
    );
    let reader = Reader::new(
        env.store.clone(),
        env.metadata.clone(),
        None,
        ReaderConfig::default(),
    );
    let values: Vec<_> = read_all(&reader, "idem", 0)
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(
        values,
        ["a/0", "a/1", "a/2", "a/3", "b/0", "b/1", "b/2", "b/3"]
    );
    pipeline.close().await;
}

async fn a_commit_in_doubt_is_settled_before_answering(env: Env) {
    create(&env, "doubt", 1).await;
    let id = env.metadata.init_producer_id(None).await.unwrap();
    let faulty = streamhouse_metadata::testing::FaultyMetadata::new(env.metadata.clone());
    let pipeline = WritePipeline::new(env.store.clone(), faulty.clone(), config(1)).unwrap();
    let idempotent =
        RecordBatch::from_records((0..4).map(|i| NewRecord::new(1, None, format!("i/{i}"))))
            .with_producer(id.producer_id, id.epoch, 0)
            .encode()
            .unwrap();
    pipeline
        .append("doubt", 0, batch("x", 2, Compression::None))
        .await
        .unwrap();
    // Committed, then the connection fails: the pipeline finds the commit
    // and answers a batch without producer id with its offsets.
    faulty.fail_after_commits(true);
    let plain = pipeline
        .append("doubt", 0, batch("y", 3, Compression::None))
        .await
        .unwrap();
    assert_eq!((plain.base_offset, plain.duplicate), (2, false));
    // An idempotent batch is not told where (only its deduplicated retry
    // is safe), nor is any batch when settling fails.
    let err = pipeline
        .append("doubt", 0, idempotent.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err}");
    assert!(!err.is_retryable(), "a plain retry may duplicate: {err}");
    faulty.fail_settles(true);
    let err = pipeline
        .append("doubt", 0, batch("z", 1, Compression::None))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err}");
    faulty.fail_settles(false);
    faulty.fail_after_commits(false);
    // The idempotent retry is answered with where it was committed.
    let retry = pipeline.append("doubt", 0, idempotent).await.unwrap();
    assert_eq!((retry.base_offset, retry.duplicate), (5, true));
    let stats = pipeline.stats();
    assert_eq!(
        (stats.commits, stats.failed_flushes),
        (4, 1),
        "unsettled: not counted as committed"
    );
    let reader = Reader::new(
        env.store.clone(),
        env.metadata.clone(),
        None,
        ReaderConfig::default(),
    );
    let values: Vec<_> = read_all(&reader, "doubt", 0)
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(
        values,
        [
            "x/0", "x/1", "y/0", "y/1", "y/2", "i/0", "i/1", "i/2", "i/3", "z/0"
        ],
        "every batch written once"
    );
    pipeline.close().await;
}
