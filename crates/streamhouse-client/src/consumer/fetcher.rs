//! The fetch task: prefetches records of assigned partitions with several
//! requests in flight, bounded in bytes, and decodes fetched batches
//! (skipping aborted transactions).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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

/// Fetch requests one consumer keeps in flight at most while it is behind
/// (an answer left records to read). A partition is in one of them at a
/// time (its records stay in order); with several, the agent reads the
/// next partitions while the client decodes the last answer, instead of
/// each waiting for the other. A consumer that has caught up asks for all
/// its partitions in one request, which waits for new records.
const FETCHES_IN_FLIGHT: usize = 8;

/// What the rounds of one fetcher share.
#[derive(Default)]
struct Rounds {
    /// Fetch rounds failed in a row (each after the call's own retries):
    /// the pause before a failed round's partitions are fetched again
    /// grows with them, per the retry policy.
    failed: AtomicU32,
    /// The last answer left records to read in one of its partitions.
    behind: AtomicBool,
}

/// A partition to fetch: where from, and its generation (a seek or a
/// reassignment since makes the answer stale).
type Wanted = (TopicPartition, i64, u64);

/// Prefetches records of assigned partitions, bounded in bytes: while
/// behind, up to [`FETCHES_IN_FLIGHT`] requests at a time, each for a
/// share of the partitions that are not being fetched.
pub(super) async fn run_fetcher(inner: Arc<Inner>) {
    let shared = Arc::new(Rounds::default());
    // Dropped with this task (when the consumer closes): aborts the rounds.
    let mut rounds = tokio::task::JoinSet::new();
    loop {
        let wake = inner.fetch_wake.notified();
        let wanted = if rounds.len() >= FETCHES_IN_FLIGHT {
            Vec::new()
        } else {
            take_wanted(&inner, shared.behind.load(Ordering::Relaxed))
        };
        if wanted.is_empty() {
            tokio::select! {
                _ = wake => {}
                Some(_) = rounds.join_next(), if !rounds.is_empty() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        }
        let budget = {
            let state = inner.state.lock().expect("consumer state");
            // Each round may fill a share of the room left, so the rounds
            // in flight together stay within max_prefetch_bytes.
            (inner
                .config
                .max_prefetch_bytes
                .saturating_sub(state.buffered_bytes)
                / FETCHES_IN_FLIGHT)
                .clamp(1, inner.config.fetch_max_bytes)
        };
        rounds.spawn(fetch_round(inner.clone(), wanted, budget, shared.clone()));
    }
}

/// Marks in flight and returns the partitions of the next round: those
/// with room in their buffer that are not being fetched; while `behind`,
/// at most a [`FETCHES_IN_FLIGHT`]th of the assigned ones (at least one).
/// None while the whole prefetch buffer is full.
fn take_wanted(inner: &Inner, behind: bool) -> Vec<Wanted> {
    let mut state = inner.state.lock().expect("consumer state");
    if state.buffered_bytes >= inner.config.max_prefetch_bytes {
        return Vec::new();
    }
    let share = round_share(state.partitions.len(), behind);
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
        .take(share)
        .map(|(tp, p)| {
            p.in_flight = true;
            (tp.clone(), p.fetch_offset, p.generation)
        })
        .collect()
}

/// How many of `assigned` partitions one round asks for: a
/// [`FETCHES_IN_FLIGHT`]th (at least one) while behind, else all, so the
/// rounds in flight cover every partition either way.
fn round_share(assigned: usize, behind: bool) -> usize {
    if behind {
        assigned.div_ceil(FETCHES_IN_FLIGHT).max(1)
    } else {
        usize::MAX
    }
}

/// One fetch request for `wanted` and what its answer does: records into
/// the partitions' buffers, resets, errors; every partition of it is out
/// of flight again when this returns.
async fn fetch_round(inner: Arc<Inner>, wanted: Vec<Wanted>, budget: usize, shared: Arc<Rounds>) {
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
            shared.failed.store(0, Ordering::Relaxed);
            r
        }
        Err(e) => {
            let failed = shared
                .failed
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            tracing::warn!(error = %e, "fetch failed");
            // The partitions stay in flight through the pause, so no
            // other round asks for them meanwhile.
            tokio::time::sleep(inner.cluster.config.retry.delay(failed)).await;
            release(&inner, &wanted);
            return;
        }
    };
    let mut any = false;
    let mut behind = false;
    let mut resets = Vec::new();
    // A partition the answer left out is fetched again by a later round.
    release(
        &inner,
        wanted.get(response.partitions.len()..).unwrap_or_default(),
    );
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
                p.buffer.reserve(records.len());
                for r in records {
                    let size = record_size(&r);
                    p.buffered_bytes += size;
                    s.buffered_bytes += size;
                    p.buffer.push_back(r);
                    any = true;
                }
                behind |= p.fetch_offset < fetched.high_watermark;
            }
            Err(e) => s.error = Some(e),
        }
    }
    shared.behind.store(behind, Ordering::Relaxed);
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

/// Takes `partitions` out of flight, for a later round to fetch (the
/// fetch task wakes when the round that held them ends).
fn release(inner: &Inner, partitions: &[Wanted]) {
    if partitions.is_empty() {
        return;
    }
    let mut state = inner.state.lock().expect("consumer state");
    for (tp, _, _) in partitions {
        if let Some(p) = state.partitions.get_mut(tp) {
            p.in_flight = false;
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
        out.reserve(batch.records.len());
        // The batch is dropped here: its records' fields move, not copy.
        for r in batch.records {
            let offset = batch.base_offset + i64::from(r.offset_delta);
            if offset >= from {
                out.push(ConsumerRecord {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset,
                    timestamp: batch.base_timestamp + r.timestamp_delta,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                });
            }
        }
    }
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_in_flight_cover_every_partition() {
        for assigned in [1, 2, 7, 8, 9, 16, 17, 256, 1000] {
            let share = round_share(assigned, true);
            assert!(share >= 1);
            assert!(
                share * FETCHES_IN_FLIGHT >= assigned,
                "{assigned} partitions in rounds of {share}"
            );
            assert!(share < assigned || assigned <= FETCHES_IN_FLIGHT);
            assert!(round_share(assigned, false) >= assigned);
        }
        assert_eq!(round_share(16, true), 2);
        assert_eq!(round_share(0, true), 1);
    }
}
