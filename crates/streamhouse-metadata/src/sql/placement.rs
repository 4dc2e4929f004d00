//! Placing the accepted batches of a chunk at offsets, and the segment rows
//! that record them.

use crate::types::{ChunkCommit, TopicId};

/// A segment row to insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentRow {
    pub topic_id: TopicId,
    pub partition: u32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: i64,
    pub byte_start: u64,
    pub byte_length: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
}

/// Gives offsets from `base` to the accepted batches of a chunk in order and
/// adds one segment row per run of adjacent accepted batches. Returns each
/// batch's base offset (`None` where not accepted).
pub(crate) fn place_batches(
    chunk: &ChunkCommit,
    base: i64,
    accepted: &[bool],
    segments: &mut Vec<SegmentRow>,
) -> Vec<Option<i64>> {
    let mut outcomes = Vec::with_capacity(chunk.batches.len());
    let mut offset = base;
    let mut byte = chunk.byte_start;
    let mut run: Option<SegmentRow> = None;
    for (batch, &ok) in chunk.batches.iter().zip(accepted) {
        if ok {
            outcomes.push(Some(offset));
            let last = offset + batch.offset_span - 1;
            match &mut run {
                Some(r) => {
                    r.last_offset = last;
                    r.record_count += batch.record_count;
                    r.byte_length += batch.byte_length;
                    r.min_timestamp = r.min_timestamp.min(batch.min_timestamp);
                    r.max_timestamp = r.max_timestamp.max(batch.max_timestamp);
                }
                None => {
                    run = Some(SegmentRow {
                        topic_id: chunk.topic_id,
                        partition: chunk.partition,
                        base_offset: offset,
                        last_offset: last,
                        record_count: batch.record_count,
                        byte_start: byte,
                        byte_length: batch.byte_length,
                        min_timestamp: batch.min_timestamp,
                        max_timestamp: batch.max_timestamp,
                    })
                }
            }
            offset = last + 1;
        } else {
            outcomes.push(None);
            segments.extend(run.take());
        }
        byte += batch.byte_length;
    }
    segments.extend(run.take());
    outcomes
}
