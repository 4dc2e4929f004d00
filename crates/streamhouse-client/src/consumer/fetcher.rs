//! The fetch task: prefetches records of assigned partitions, bounded in
//! bytes, and decodes fetched batches (skipping aborted transactions).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use streamhouse_core::RecordBatch;
use streamhouse_metadata::TopicPartition;
use streamhouse_proto as pb;
use streamhouse_proto::ErrorCode;

use super::{AutoOffsetReset, ConsumerRecord, Inner, IsolationLevel, record_size};
use crate::error::{Error, Result};

pub(super) fn isolation(level: IsolationLevel) -> pb::IsolationLevel {
    match level {
        IsolationLevel::ReadUncommitted => pb::IsolationLevel::ReadUncommitted,
        IsolationLevel::ReadCommitted => pb::IsolationLevel::ReadCommitted,
    }
}

/// Prefetches records of assigned partitions, bounded in bytes.
pub(super) async fn run_fetcher(inner: Arc<Inner>) {
    // Fetch rounds failed in a row (each after the call's own retries):
    // the pause before the next round grows with them, per the retry policy.
    let mut failed_rounds = 0u32;
    loop {
        let wake = inner.fetch_wake.notified();
        let wanted: Vec<(TopicPartition, i64, u64)> = {
            let mut state = inner.state.lock().expect("consumer state");
            if state.buffered_bytes >= inner.config.max_prefetch_bytes {
                Vec::new()
            } else {
                let per_partition_cap = inner.config.max_partition_fetch_bytes.max(1);
                state
                    .partitions
                    .iter_mut()
                    .filter(|(_, p)| {
                        !p.in_flight
                            && !p.stopped_at_corrupt
                            && p.position.is_some()
                            && p.buffered_bytes < per_partition_cap
                    })
                    .map(|(tp, p)| {
                        p.in_flight = true;
                        (tp.clone(), p.fetch_offset, p.generation)
                    })
                    .collect()
            }
        };
        if wanted.is_empty() {
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        }
        let budget = {
            let state = inner.state.lock().expect("consumer state");
            inner
                .config
                .max_prefetch_bytes
                .saturating_sub(state.buffered_bytes)
                .clamp(1, inner.config.fetch_max_bytes)
        };
        let request = pb::FetchRequest {
            partitions: wanted
                .iter()
                .map(|(tp, offset, _)| pb::FetchPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: *offset,
                    max_bytes: inner.config.max_partition_fetch_bytes as u32,
                })
                .collect(),
            max_wait_ms: inner.config.fetch_max_wait.as_millis() as u32,
            max_bytes: budget as u32,
            isolation_level: isolation(inner.config.isolation_level) as i32,
        };
        let result = inner
            .cluster
            .call(|mut c| {
                let r = request.clone();
                async move { c.fetch(r).await }
            })
            .await;
        let response = match result {
            Ok(r) => {
                failed_rounds = 0;
                r
            }
            Err(e) => {
                failed_rounds = failed_rounds.saturating_add(1);
                tracing::warn!(error = %e, "fetch failed");
                {
                    let mut state = inner.state.lock().expect("consumer state");
                    for (tp, _, _) in &wanted {
                        if let Some(p) = state.partitions.get_mut(tp) {
                            p.in_flight = false;
                        }
                    }
                }
                tokio::time::sleep(inner.cluster.config.retry.delay(failed_rounds)).await;
                continue;
            }
        };
        let mut any = false;
        let mut resets = Vec::new();
        for (fetched, (tp, offset, generation)) in response.partitions.into_iter().zip(wanted) {
            let records = if fetched.error == ErrorCode::None as i32 {
                decode_records(&tp, &fetched.records, offset, &fetched.aborted)
            } else {
                Ok((Vec::new(), offset))
            };
            let mut state = inner.state.lock().expect("consumer state");
            let s = &mut *state;
            let Some(p) = s.partitions.get_mut(&tp) else {
                continue;
            };
            p.in_flight = false;
            if p.generation != generation {
                continue;
            }
            if fetched.error == ErrorCode::OffsetOutOfRange as i32 {
                resets.push(tp.clone());
                continue;
            }
            if fetched.error == ErrorCode::CorruptBatch as i32 {
                let last = fetched.corrupt_last_offset.max(offset);
                if inner.config.skip_corrupt_batches {
                    tracing::warn!(%tp, first_offset = offset, last_offset = last, message = %fetched.message, "skipping a corrupt batch: its records are lost to this consumer");
                    advance(p, last + 1);
                } else {
                    p.stopped_at_corrupt = true;
                    s.error = Some(Error::CorruptBatch {
                        partition: tp.clone(),
                        first_offset: offset,
                        last_offset: last,
                        message: fetched.message,
                    });
                    any = true;
                }
                continue;
            }
            if fetched.error != ErrorCode::None as i32 {
                tracing::warn!(%tp, message = %fetched.message, "fetch error");
                continue;
            }
            p.high_watermark = Some(fetched.high_watermark);
            match records {
                Ok((records, next)) => {
                    // Past every returned batch, even when all of it was
                    // skipped (aborted, control, compacted away).
                    if records.is_empty() {
                        advance(p, next);
                    } else {
                        p.fetch_offset = p.fetch_offset.max(next);
                    }
                    for r in records {
                        let size = record_size(&r);
                        p.buffered_bytes += size;
                        s.buffered_bytes += size;
                        p.buffer.push_back(r);
                        any = true;
                    }
                }
                Err(e) => s.error = Some(e),
            }
        }
        for tp in resets {
            let reset = match inner.config.auto_offset_reset {
                AutoOffsetReset::Earliest => inner.list_offset(&tp, -2).await,
                AutoOffsetReset::Latest => inner.list_offset(&tp, -1).await,
                AutoOffsetReset::None => Err(Error::OffsetOutOfRange(tp.clone())),
            };
            let mut state = inner.state.lock().expect("consumer state");
            match reset {
                Ok(offset) => {
                    if let Some(p) = state.partitions.get_mut(&tp) {
                        p.position = Some(offset);
                        p.fetch_offset = offset;
                        p.generation += 1;
                    }
                }
                Err(e) => {
                    state.error = Some(e);
                    any = true;
                }
            }
        }
        if any {
            inner.data.notify_one();
        }
    }
}

/// Moves a partition's next fetch to `next` (never backwards), for a fetch
/// that returned no record for the application. When nothing is buffered
/// either, the position follows: offsets that held no record (markers,
/// aborted or skipped batches) are passed, so commits and lag move on too.
fn advance(p: &mut super::PartitionState, next: i64) {
    if next <= p.fetch_offset {
        return;
    }
    p.fetch_offset = next;
    if p.buffer.is_empty() {
        p.position = Some(next);
    }
}

/// The records of fetched batches at or after `from`, without control
/// batches and without batches of `aborted` transactions, and the offset
/// after the last returned batch (where the next fetch starts).
pub(super) fn decode_records(
    tp: &TopicPartition,
    bytes: &Bytes,
    from: i64,
    aborted: &[pb::AbortedTransactionInfo],
) -> Result<(Vec<ConsumerRecord>, i64)> {
    let mut out = Vec::new();
    let mut next = from;
    for item in streamhouse_core::batches(bytes) {
        let (header, raw) = item?;
        next = next.max(header.base_offset + header.offset_span());
        if header.attributes.is_control() || header.base_offset + header.offset_span() <= from {
            continue;
        }
        if header.attributes.is_transactional()
            && aborted.iter().any(|a| {
                a.producer_id == header.producer_id
                    && (a.first_offset..=a.last_offset).contains(&header.base_offset)
            })
        {
            continue;
        }
        let batch = RecordBatch::decode(&bytes.slice_ref(raw))?;
        for (offset, timestamp, r) in batch.iter() {
            if offset >= from {
                out.push(ConsumerRecord {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset,
                    timestamp,
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r.headers.clone(),
                });
            }
        }
    }
    Ok((out, next))
}
