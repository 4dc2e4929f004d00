//! The idempotence decision: whether a batch of an idempotent producer is
//! new (and in sequence), a retry of a committed batch, or rejected.

use std::collections::HashMap;

use crate::types::{BatchOutcome, BatchRejected, ChunkCommit, ProducerBatch, add_sequence};

/// Batches of one producer and partition remembered to answer retries.
pub(crate) const SEQUENCES_KEPT: usize = 5;

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

/// Current epochs of the producers seen in one commit (`None`: unknown id).
pub(crate) type ProducerEpochs = HashMap<i64, Option<i16>>;

/// Per producer of one chunk: its last batches in the partition, newest
/// first.
pub(crate) type SequenceHistory = HashMap<i64, Vec<SequenceRow>>;

/// What the commit does with one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accept,
    /// A retry of the batch committed at this base offset.
    Duplicate(i64),
    Reject(BatchRejected),
}

/// Checks one idempotent batch against the producer's current epoch and
/// its last batches in the partition (newest first).
pub(crate) fn check_sequence(
    p: &ProducerBatch,
    current_epoch: Option<i16>,
    history: &[SequenceRow],
) -> Verdict {
    // A retry of a batch already committed is answered with its offset even
    // when its epoch has since been fenced: nothing is written, and the
    // producer learns the batch's fate.
    if let Some(dup) = history.iter().find(|r| {
        r.epoch == p.epoch
            && r.first_sequence == p.base_sequence
            && r.last_sequence == p.last_sequence()
    }) {
        return Verdict::Duplicate(dup.base_offset);
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
        let verdict = check_sequence(&p, epochs[&p.producer_id], rows);
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
