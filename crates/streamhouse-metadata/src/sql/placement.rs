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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::BatchCommit;

    /// A chunk at byte 100 of batches (offset span, byte length, max
    /// timestamp); each batch holds one record per offset.
    fn chunk(batches: &[(i64, u64, i64)]) -> ChunkCommit {
        ChunkCommit {
            topic_id: 7,
            partition: 2,
            byte_start: 100,
            batches: batches
                .iter()
                .map(|&(span, bytes, ts)| BatchCommit {
                    byte_length: bytes,
                    offset_span: span,
                    record_count: span,
                    min_timestamp: ts - 1,
                    max_timestamp: ts,
                    producer: None,
                })
                .collect(),
        }
    }

    #[test]
    fn adjacent_accepted_batches_share_one_segment() {
        let c = chunk(&[(3, 30, 10), (2, 20, 5), (1, 10, 20)]);
        let mut segments = Vec::new();
        let placed = place_batches(&c, 40, &[true, true, true], &mut segments);
        assert_eq!(placed, vec![Some(40), Some(43), Some(45)]);
        assert_eq!(
            segments,
            vec![SegmentRow {
                topic_id: 7,
                partition: 2,
                base_offset: 40,
                last_offset: 45,
                record_count: 6,
                byte_start: 100,
                byte_length: 60,
                min_timestamp: 4,
                max_timestamp: 20,
            }]
        );
    }

    #[test]
    fn a_skipped_batch_splits_segments_and_takes_no_offsets() {
        let c = chunk(&[(3, 30, 10), (2, 20, 5), (1, 10, 20), (4, 40, 30)]);
        let mut segments = Vec::new();
        let placed = place_batches(&c, 0, &[true, false, true, true], &mut segments);
        assert_eq!(placed, vec![Some(0), None, Some(3), Some(4)]);
        let spans: Vec<_> = segments
            .iter()
            .map(|s| (s.base_offset, s.last_offset, s.byte_start, s.byte_length))
            .collect();
        // The second segment starts after the skipped batch's bytes.
        assert_eq!(spans, vec![(0, 2, 100, 30), (3, 7, 150, 50)]);
    }

    #[test]
    fn nothing_accepted_adds_no_segment() {
        let c = chunk(&[(3, 30, 10), (2, 20, 5)]);
        let mut segments = Vec::new();
        let placed = place_batches(&c, 9, &[false, false], &mut segments);
        assert_eq!(placed, vec![None, None]);
        assert!(segments.is_empty());
    }
}
