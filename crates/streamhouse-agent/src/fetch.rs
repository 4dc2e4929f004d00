//! The fetch path shared by every front door: read the partitions of a
//! request at once (up to [`READ_AHEAD`] at a time), then share the
//! request's byte budget among them in request order.
//!
//! ```text
//! request ─▶ read every partition concurrently (each up to its own limit)
//!         ─▶ in request order: keep whole batches within what is left of
//!            the budget (the first partition with data keeps at least one)
//! ```
//!
//! Reading concurrently keeps a consumer catching up from object storage
//! from waiting on one range GET per partition in turn: partitions whose
//! chunks share a block wait for the same GET, the others fetch theirs
//! meanwhile. What the budget leaves out was read in vain, but its blocks
//! stay in the reader's cache for the next fetch. The batches are the
//! stored bytes (base offsets patched), never decoded.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use streamhouse_core::BatchHeader;
use streamhouse_metadata::AbortedTransaction;
use streamhouse_storage::{ReadResult, Reader};

/// Partitions of one request read at once.
const READ_AHEAD: usize = 16;

/// One partition a fetch asks for.
pub(crate) struct PartitionRead<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub offset: i64,
    /// The partition's own byte limit.
    pub max_bytes: usize,
}

/// What a fetch returns for one partition.
pub(crate) struct Fetched {
    /// Whole batches, concatenated; empty once the budget is spent.
    pub records: Bytes,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// Aborted transactions overlapping `records` (read_committed only).
    pub aborted: Vec<AbortedTransaction>,
}

/// Reads every partition of a request and shares `max_bytes` among them
/// in order (see the module docs). Returns each partition's outcome and
/// the record bytes returned in all.
pub(crate) async fn fetch(
    reader: &Reader,
    reads: &[PartitionRead<'_>],
    max_bytes: usize,
    committed: bool,
) -> (Vec<streamhouse_storage::Result<Fetched>>, usize) {
    // The futures are made first: a stream over a closure that borrows
    // would not be Send for every lifetime, as the gRPC service needs.
    let reads_at_once: Vec<_> = reads
        .iter()
        .map(|r| read_one(reader, r, max_bytes, committed))
        .collect();
    let results: Vec<_> = futures::stream::iter(reads_at_once)
        .buffered(READ_AHEAD)
        .collect()
        .await;
    let mut budget = max_bytes;
    let mut total = 0usize;
    let fetched = results
        .into_iter()
        .zip(reads)
        .map(|(result, r)| {
            result.map(|read| {
                // Once the budget is spent, later partitions report offsets
                // only; the first partition with data gets at least one
                // batch, so a consumer progresses.
                let limit = r.max_bytes.min(budget);
                let keep = if limit == 0 && total > 0 {
                    0
                } else {
                    limit.max(1)
                };
                let fetched = within(read, keep);
                budget = budget.saturating_sub(fetched.records.len());
                total += fetched.records.len();
                fetched
            })
        })
        .collect();
    (fetched, total)
}

/// Reads one partition up to its own limit (at most the request's).
async fn read_one(
    reader: &Reader,
    r: &PartitionRead<'_>,
    max_bytes: usize,
    committed: bool,
) -> streamhouse_storage::Result<ReadResult> {
    let limit = r.max_bytes.min(max_bytes).max(1);
    if committed {
        reader
            .read_committed(r.topic, r.partition, r.offset, limit)
            .await
    } else {
        reader.read(r.topic, r.partition, r.offset, limit).await
    }
}

/// The whole batches of `read` a read of `limit` bytes returns (as
/// [`Reader::read`] counts: batches while none is kept or fewer than
/// `limit` bytes are), concatenated.
fn within(read: ReadResult, limit: usize) -> Fetched {
    let mut size = 0usize;
    let mut kept = 0usize;
    if limit > 0 {
        for b in &read.batches {
            if kept > 0 && size >= limit {
                break;
            }
            size += b.len();
            kept += 1;
        }
    }
    let batches = &read.batches[..kept];
    let records = match batches {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut buf = BytesMut::with_capacity(size);
            for b in many {
                buf.extend_from_slice(b);
            }
            buf.freeze()
        }
    };
    // Aborted transactions starting after the last batch kept concern
    // batches this answer leaves out.
    let last_offset = batches
        .last()
        .and_then(|b| BatchHeader::parse(b).ok())
        .map(|h| h.base_offset + i64::from(h.last_offset_delta));
    let aborted = match last_offset {
        Some(last) => read
            .aborted
            .into_iter()
            .filter(|a| a.first_offset <= last)
            .collect(),
        None => Vec::new(),
    };
    Fetched {
        records,
        log_start_offset: read.log_start_offset,
        high_watermark: read.next_offset,
        last_stable_offset: read.last_stable_offset,
        aborted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamhouse_core::{NewRecord, RecordBatch};

    fn batch(base_offset: i64, records: usize) -> Bytes {
        let mut b = RecordBatch::from_records(
            (0..records).map(|i| NewRecord::new(1, None, format!("value-{i}"))),
        )
        .encode()
        .unwrap()
        .to_vec();
        streamhouse_core::set_base_offset(&mut b, base_offset);
        b.into()
    }

    fn read(batches: Vec<Bytes>, aborted: &[i64]) -> ReadResult {
        ReadResult {
            batches,
            log_start_offset: 0,
            next_offset: 100,
            last_stable_offset: 90,
            aborted: aborted
                .iter()
                .map(|&first_offset| AbortedTransaction {
                    producer_id: 7,
                    first_offset,
                    last_offset: first_offset + 1,
                })
                .collect(),
        }
    }

    #[test]
    fn whole_batches_are_kept_as_a_read_of_the_limit_would() {
        let batches = vec![batch(0, 3), batch(3, 3), batch(6, 3)];
        let one = batches[0].len();
        let all: usize = batches.iter().map(Bytes::len).sum();
        // At least one batch, even over the limit.
        assert_eq!(within(read(batches.clone(), &[]), 1).records, batches[0]);
        // The batch that crosses the limit is kept, the next is not.
        let two = within(read(batches.clone(), &[]), one + 1).records;
        assert_eq!(two.len(), one + batches[1].len());
        assert_eq!(
            within(read(batches.clone(), &[]), all * 2).records.len(),
            all
        );
        // A spent budget: offsets only.
        let none = within(read(batches, &[]), 0);
        assert!(none.records.is_empty());
        assert_eq!((none.high_watermark, none.last_stable_offset), (100, 90));
    }

    #[test]
    fn aborted_transactions_past_the_kept_batches_are_left_out() {
        let batches = vec![batch(0, 3), batch(3, 3)];
        let first = batches[0].len();
        let kept = within(read(batches, &[1, 4]), first);
        let starts: Vec<_> = kept.aborted.iter().map(|a| a.first_offset).collect();
        assert_eq!(starts, [1], "the second starts in the batch left out");
    }
}
