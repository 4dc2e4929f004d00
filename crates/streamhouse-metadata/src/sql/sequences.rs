//! The idempotence decision: whether a batch of an idempotent producer is
//! new (and in sequence), a retry of a committed batch, or rejected.

use std::collections::HashMap;

use crate::types::{BatchOutcome, BatchRejected, ChunkCommit, ProducerBatch, add_sequence};

/// Batches of one producer and partition remembered with their offsets,
/// to answer retries with where they were committed.
pub(crate) const SEQUENCES_KEPT: usize = crate::types::PRODUCER_BATCHES_REMEMBERED;

/// A remembered batch of a producer in a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SequenceRow {
    pub epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    /// Added by this commit (to be inserted).
    pub new: bool,
}

/// What a commit needs to know of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProducerRow {
    /// Its current epoch.
    pub epoch: i16,
    /// It has a transactional id, so its batches may be transactional.
    pub transactional: bool,
}

/// The producers seen in one commit (`None`: an id never issued).
pub(crate) type ProducerEpochs = HashMap<i64, Option<ProducerRow>>;

/// Per producer of one chunk: its last batches in the partition, newest
/// first. The newest one holds the last sequence committed in the
/// partition (of its epoch), which is never forgotten.
pub(crate) type SequenceHistory = HashMap<i64, Vec<SequenceRow>>;

/// What the commit does with one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accept,
    /// A retry of the batch committed at this base offset.
    Duplicate(i64),
    Reject(BatchRejected),
}

/// Whether sequence `a` is at or before `b`, sequences wrapping past
/// `i32::MAX` to 0: `a` lies within the half of the sequence space that
/// ends at `b`.
fn at_or_before(a: i32, b: i32) -> bool {
    let distance = (i64::from(b) - i64::from(a)).rem_euclid(i64::from(i32::MAX) + 1);
    distance < 1 << 30
}

/// Checks one idempotent batch against the producer's current epoch and
/// its last batches in the partition (newest first).
///
/// A batch whose sequence range lies entirely at or before the last
/// sequence committed in its epoch was committed before (sequences of an
/// epoch are committed gap-free from 0): it is a duplicate, answered with
/// its base offset when a remembered batch matches, or as
/// [`BatchRejected::AlreadyCommitted`] when it is too old to be
/// remembered. Both hold even when its epoch has since been fenced, as long
/// as no batch of a newer epoch was committed in the partition: nothing is
/// written, and the producer learns the batch's fate.
pub(crate) fn check_sequence(
    p: &ProducerBatch,
    current_epoch: Option<i16>,
    history: &[SequenceRow],
) -> Verdict {
    if let Some(dup) = history.iter().find(|r| {
        r.epoch == p.epoch
            && r.first_sequence == p.base_sequence
            && r.last_sequence == p.last_sequence()
    }) {
        return Verdict::Duplicate(dup.base_offset);
    }
    if let Some(last) = history.first()
        && last.epoch == p.epoch
        && at_or_before(p.base_sequence, p.last_sequence())
        && at_or_before(p.last_sequence(), last.last_sequence)
    {
        return Verdict::Reject(BatchRejected::AlreadyCommitted {
            producer_id: p.producer_id,
            epoch: p.epoch,
            first_sequence: p.base_sequence,
            last_sequence: p.last_sequence(),
        });
    }
    let Some(current) = current_epoch.filter(|&e| p.epoch <= e) else {
        return Verdict::Reject(BatchRejected::UnknownProducer {
            producer_id: p.producer_id,
            epoch: p.epoch,
        });
    };
    if p.epoch < current {
        return Verdict::Reject(BatchRejected::ProducerFenced {
            producer_id: p.producer_id,
            epoch: p.epoch,
            current_epoch: current,
        });
    }
    let expected = match history.first() {
        Some(last) if last.epoch == p.epoch => add_sequence(last.last_sequence, 1),
        _ => 0,
    };
    if p.base_sequence != expected {
        return Verdict::Reject(BatchRejected::OutOfOrderSequence {
            producer_id: p.producer_id,
            expected,
            received: p.base_sequence,
        });
    }
    Verdict::Accept
}

/// Decides every batch of a chunk whose first free offset is `next`, in
/// order: batches without a producer are accepted; the others are checked
/// by [`check_sequence`] against `epochs` and `history` (which must hold
/// every producer of the chunk), and accepted ones are added to `history`
/// as new rows so later batches of the chunk follow them. Returns the
/// verdicts and the partition's next offset after the accepted batches.
pub(crate) fn decide_batches(
    chunk: &ChunkCommit,
    next: i64,
    epochs: &ProducerEpochs,
    history: &mut SequenceHistory,
) -> (Vec<Verdict>, i64) {
    let mut verdicts = Vec::with_capacity(chunk.batches.len());
    let mut offset = next;
    for batch in &chunk.batches {
        let Some(p) = batch.producer else {
            verdicts.push(Verdict::Accept);
            offset += batch.offset_span;
            continue;
        };
        let rows = history.get_mut(&p.producer_id).expect("history loaded");
        let producer = epochs[&p.producer_id];
        let verdict = match check_sequence(&p, producer.map(|r| r.epoch), rows) {
            // Only a producer with a transactional id writes transactional
            // batches: anything else would bypass the transaction's markers.
            Verdict::Accept if p.transactional && producer.is_some_and(|r| !r.transactional) => {
                Verdict::Reject(BatchRejected::NotTransactional {
                    producer_id: p.producer_id,
                })
            }
            v => v,
        };
        if let Verdict::Accept = verdict {
            rows.insert(
                0,
                SequenceRow {
                    epoch: p.epoch,
                    first_sequence: p.base_sequence,
                    last_sequence: p.last_sequence(),
                    base_offset: offset,
                    new: true,
                },
            );
            offset += batch.offset_span;
        }
        verdicts.push(verdict);
    }
    (verdicts, offset)
}

/// The outcome of each batch from its verdict and its placed base offset.
pub(crate) fn batch_outcomes(
    placed: Vec<Option<i64>>,
    verdicts: Vec<Verdict>,
) -> Vec<BatchOutcome> {
    placed
        .into_iter()
        .zip(verdicts)
        .map(|(base, v)| match (base, v) {
            (Some(base_offset), _) => BatchOutcome::Appended { base_offset },
            (None, Verdict::Duplicate(base_offset)) => BatchOutcome::Duplicate { base_offset },
            (None, Verdict::Reject(r)) => BatchOutcome::Rejected(r),
            (None, Verdict::Accept) => unreachable!("accepted batches are placed"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::BatchCommit;

    fn batch(epoch: i16, base_sequence: i32, record_count: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: 1,
            epoch,
            base_sequence,
            record_count,
            transactional: false,
        }
    }

    fn row(epoch: i16, first: i32, last: i32, base_offset: i64) -> SequenceRow {
        SequenceRow {
            epoch,
            first_sequence: first,
            last_sequence: last,
            base_offset,
            new: false,
        }
    }

    #[test]
    fn a_new_producer_starts_at_sequence_zero() {
        assert_eq!(
            check_sequence(&batch(0, 0, 5), Some(0), &[]),
            Verdict::Accept
        );
        assert_eq!(
            check_sequence(&batch(0, 3, 5), Some(0), &[]),
            Verdict::Reject(BatchRejected::OutOfOrderSequence {
                producer_id: 1,
                expected: 0,
                received: 3,
            })
        );
    }

    #[test]
    fn the_next_batch_follows_the_last_one() {
        let history = [row(0, 5, 9, 50), row(0, 0, 4, 40)];
        assert_eq!(
            check_sequence(&batch(0, 10, 2), Some(0), &history),
            Verdict::Accept
        );
        assert_eq!(
            check_sequence(&batch(0, 11, 2), Some(0), &history),
            Verdict::Reject(BatchRejected::OutOfOrderSequence {
                producer_id: 1,
                expected: 10,
                received: 11,
            })
        );
        // A new epoch restarts at 0.
        assert_eq!(
            check_sequence(&batch(1, 0, 2), Some(1), &history),
            Verdict::Accept
        );
    }

    #[test]
    fn sequences_wrap_past_i32_max() {
        let history = [row(0, i32::MAX - 1, i32::MAX, 7)];
        assert_eq!(
            check_sequence(&batch(0, 0, 1), Some(0), &history),
            Verdict::Accept
        );
    }

    #[test]
    fn retries_are_duplicates_even_after_fencing() {
        let history = [row(0, 5, 9, 50), row(0, 0, 4, 40)];
        assert_eq!(
            check_sequence(&batch(0, 0, 5), Some(0), &history),
            Verdict::Duplicate(40)
        );
        assert_eq!(
            check_sequence(&batch(0, 5, 5), Some(3), &history),
            Verdict::Duplicate(50)
        );
        // Same first sequence, different length: not the same batch, so
        // not answered with its offset. Longer: it runs past the last
        // committed sequence (out of order); shorter: it lies within what
        // was committed (already written, offset unknown).
        assert!(matches!(
            check_sequence(&batch(0, 5, 6), Some(0), &history),
            Verdict::Reject(BatchRejected::OutOfOrderSequence { .. })
        ));
        assert!(matches!(
            check_sequence(&batch(0, 5, 4), Some(0), &history),
            Verdict::Reject(BatchRejected::AlreadyCommitted { .. })
        ));
    }

    #[test]
    fn committed_ranges_too_old_to_remember_are_already_committed() {
        // Only the newest batch is remembered; sequences 0..=99 of epoch 2
        // were committed.
        let history = [row(2, 90, 99, 500)];
        for (base, count) in [(0, 10), (40, 5), (89, 11)] {
            assert_eq!(
                check_sequence(&batch(2, base, count), Some(2), &history),
                Verdict::Reject(BatchRejected::AlreadyCommitted {
                    producer_id: 1,
                    epoch: 2,
                    first_sequence: base,
                    last_sequence: base + count - 1,
                }),
                "{base}+{count}"
            );
        }
        // Even once the epoch is fenced, while it is the partition's last.
        assert!(matches!(
            check_sequence(&batch(2, 0, 10), Some(3), &history),
            Verdict::Reject(BatchRejected::AlreadyCommitted { .. })
        ));
        // Overlapping the end, or of another epoch: not committed.
        assert!(matches!(
            check_sequence(&batch(2, 95, 10), Some(2), &history),
            Verdict::Reject(BatchRejected::OutOfOrderSequence { expected: 100, .. })
        ));
        assert!(matches!(
            check_sequence(&batch(1, 0, 10), Some(2), &history),
            Verdict::Reject(BatchRejected::ProducerFenced { .. })
        ));
        // Across the wrap past i32::MAX.
        let wrapped = [row(0, 3, 9, 70)];
        assert!(matches!(
            check_sequence(&batch(0, i32::MAX - 4, 5), Some(0), &wrapped),
            Verdict::Reject(BatchRejected::AlreadyCommitted { .. })
        ));
        assert_eq!(
            check_sequence(&batch(0, 10, 1), Some(0), &wrapped),
            Verdict::Accept
        );
    }

    #[test]
    fn old_epochs_are_fenced_and_unknown_ones_rejected() {
        assert_eq!(
            check_sequence(&batch(1, 0, 1), Some(2), &[]),
            Verdict::Reject(BatchRejected::ProducerFenced {
                producer_id: 1,
                epoch: 1,
                current_epoch: 2,
            })
        );
        for current in [None, Some(0)] {
            assert_eq!(
                check_sequence(&batch(1, 0, 1), current, &[]),
                Verdict::Reject(BatchRejected::UnknownProducer {
                    producer_id: 1,
                    epoch: 1,
                })
            );
        }
    }

    fn batch_commit(span: i64, producer: Option<ProducerBatch>) -> BatchCommit {
        BatchCommit {
            byte_length: 10,
            offset_span: span,
            record_count: span,
            min_timestamp: 0,
            max_timestamp: 0,
            producer,
        }
    }

    #[test]
    fn batches_of_a_chunk_follow_each_other() {
        let chunk = ChunkCommit {
            topic_id: 1,
            partition: 0,
            byte_start: 0,
            batches: vec![
                batch_commit(2, Some(batch(0, 0, 2))),
                batch_commit(3, None),
                // Out of order: takes no offsets.
                batch_commit(1, Some(batch(0, 5, 1))),
                batch_commit(1, Some(batch(0, 2, 1))),
                // A retry of the first batch, in the same chunk.
                batch_commit(2, Some(batch(0, 0, 2))),
            ],
        };
        let epochs = ProducerEpochs::from([(
            1,
            Some(ProducerRow {
                epoch: 0,
                transactional: false,
            }),
        )]);
        let mut history = SequenceHistory::from([(1, Vec::new())]);
        let (verdicts, next) = decide_batches(&chunk, 100, &epochs, &mut history);
        assert_eq!(
            verdicts,
            vec![
                Verdict::Accept,
                Verdict::Accept,
                Verdict::Reject(BatchRejected::OutOfOrderSequence {
                    producer_id: 1,
                    expected: 2,
                    received: 5,
                }),
                Verdict::Accept,
                Verdict::Duplicate(100),
            ]
        );
        assert_eq!(next, 106);
        let rows: Vec<_> = history[&1]
            .iter()
            .map(|r| (r.first_sequence, r.base_offset, r.new))
            .collect();
        assert_eq!(rows, vec![(2, 105, true), (0, 100, true)]);
    }

    #[test]
    fn outcomes_follow_verdicts_and_placement() {
        let rejected = BatchRejected::UnknownProducer {
            producer_id: 1,
            epoch: 0,
        };
        let outcomes = batch_outcomes(
            vec![Some(3), None, None],
            vec![
                Verdict::Accept,
                Verdict::Duplicate(1),
                Verdict::Reject(rejected.clone()),
            ],
        );
        assert_eq!(
            outcomes,
            vec![
                BatchOutcome::Appended { base_offset: 3 },
                BatchOutcome::Duplicate { base_offset: 1 },
                BatchOutcome::Rejected(rejected),
            ]
        );
    }
}
