//! The sender task: gathers sealed batches into produce requests, applies
//! the answers (offsets, retries with backoff, failures) and bumps the
//! producer epoch when sequence continuity is lost.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use streamhouse_proto as pb;
use streamhouse_proto::ErrorCode;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::accumulator::{PartitionQueue, Sealed, restamp};
use super::delivery::BatchWait;
use super::{Command, Inner};
use crate::error::{Error, Result, code_is_retryable};

/// Most batches of an idempotent producer per partition in one request:
/// as many as the agent's commit remembers with their offsets.
pub(super) const MAX_IDEMPOTENT_BATCHES: usize = streamhouse_metadata::PRODUCER_BATCHES_REMEMBERED;

/// Batches of one partition travelling in one request.
pub(super) struct InFlight {
    pub(super) queue: Arc<Mutex<PartitionQueue>>,
    pub(super) batches: Vec<Sealed>,
}

pub(super) type RequestDone = (Vec<InFlight>, Result<pb::ProduceResponse>);

/// The sender task: seals due batches, sends requests, handles answers.
pub(super) async fn run_sender(inner: Arc<Inner>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut requests: FuturesUnordered<BoxFuture<'static, RequestDone>> = FuturesUnordered::new();
    let mut bump_needed = false;
    let mut bump_not_before: Option<Instant> = None;
    let mut bump_failures = 0;
    loop {
        if bump_needed && inner.config.transactional_id.is_some() {
            // Sequence continuity is lost inside a transaction: it can only
            // be aborted (which starts a new epoch).
            let e = Error::TransactionAbortable {
                source: Arc::new(Error::Transaction(
                    "a batch of the transaction failed and its partition lost sequence continuity"
                        .into(),
                )),
            };
            inner.make_abortable(e.clone());
            fail_everything(&inner, &e);
            bump_needed = false;
        }
        if bump_needed && bump_not_before.is_none_or(|t| t <= Instant::now()) {
            match bump_epoch(&inner).await {
                Ok(()) => {
                    bump_needed = false;
                    bump_failures = 0;
                }
                Err(e) if e.is_retryable() => {
                    bump_failures += 1;
                    let wait = inner.config.retry_policy().delay(bump_failures);
                    bump_not_before = Some(Instant::now() + wait);
                }
                Err(e) => {
                    tracing::error!(error = %e, "producer fenced; failing buffered records");
                    fail_everything(&inner, &e);
                    inner.closed.store(true, Ordering::Relaxed);
                    bump_needed = false;
                }
            }
        }
        let (deadline, pending) = gather(&inner, &mut requests, bump_needed);
        if inner.closed.load(Ordering::Relaxed) && !pending && requests.is_empty() {
            // Answer flushes still queued; nothing is left to deliver.
            while let Ok(Command::Flush(reply)) = commands.try_recv() {
                let _ = reply.send(Vec::new());
            }
            return;
        }
        let deadline = match (deadline, bump_needed.then_some(bump_not_before).flatten()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            Some(command) = commands.recv() => match command {
                Command::Flush(reply) => {
                    let mut batches = Vec::new();
                    for queue in inner.queues() {
                        let mut q = queue.lock().expect("partition queue lock");
                        if let Err(e) = inner.seal(&mut q) {
                            tracing::warn!(error = %e, "sealing batch failed");
                        }
                        batches.extend(q.in_flight.iter().map(|cell| BatchWait {
                            cell: cell.clone(),
                            slot: None,
                        }));
                        batches.extend(q.sealed.iter().map(|b| b.done.waiter()));
                    }
                    let _ = reply.send(batches);
                }
            },
            Some((flights, result)) = requests.next(), if !requests.is_empty() => {
                bump_needed |= handle_response(&inner, flights, result);
            }
            _ = inner.wake.notified() => {}
            _ = sleep_until(deadline) => {}
        }
    }
}

pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Seals batches whose timeout passed and starts a request with every
/// partition ready to send. Returns the next time something is due and
/// whether any record is still waiting.
pub(super) fn gather(
    inner: &Arc<Inner>,
    requests: &mut FuturesUnordered<BoxFuture<'static, RequestDone>>,
    hold: bool,
) -> (Option<Instant>, bool) {
    let now = Instant::now();
    let closing = inner.closed.load(Ordering::Relaxed);
    let identity = *inner.identity.lock().expect("identity lock");
    let mut deadline: Option<Instant> = None;
    let mut pending = false;
    let mut flights = Vec::new();
    let mut bytes = 0usize;
    let mut due = |t: Instant| deadline = Some(deadline.map_or(t, |d| d.min(t)));
    for queue in inner.queues() {
        let mut q = queue.lock().expect("partition queue lock");
        if let Some(open) = &q.open {
            let at = open.started + inner.config.batch_timeout;
            if at <= now || closing {
                if let Err(e) = inner.seal(&mut q) {
                    tracing::warn!(error = %e, "sealing batch failed");
                }
            } else {
                due(at);
            }
        }
        pending |= q.open.is_some() || !q.sealed.is_empty() || !q.in_flight.is_empty();
        if hold || !q.in_flight.is_empty() || q.sealed.is_empty() {
            continue;
        }
        if let Some(t) = q.not_before.filter(|&t| t > now) {
            due(t);
            continue;
        }
        if bytes >= inner.config.max_request_bytes {
            due(now);
            continue;
        }
        if let Some(id) = identity
            && let Err(e) = restamp(&mut q, id)
        {
            tracing::error!(error = %e, "re-sequencing batch failed");
            continue;
        }
        // One request per partition at a time, with batches of one epoch;
        // idempotent ones no more than the agent remembers the offsets of,
        // so a resent request gets every batch's offsets back.
        let epoch = q.sealed.front().and_then(|b| b.stamp.map(|s| s.0));
        let most = if epoch.is_some() {
            MAX_IDEMPOTENT_BATCHES
        } else {
            usize::MAX
        };
        let mut batches = Vec::new();
        while let Some(b) = q.sealed.front() {
            let fits =
                batches.is_empty() || bytes + b.bytes.len() <= inner.config.max_request_bytes;
            if !fits || b.stamp.map(|s| s.0) != epoch || batches.len() >= most {
                break;
            }
            bytes += b.bytes.len();
            batches.push(q.sealed.pop_front().expect("front exists"));
        }
        q.in_flight = batches.iter().map(|b| b.done.0.clone()).collect();
        q.not_before = None;
        drop(q);
        flights.push(InFlight { queue, batches });
    }
    if !flights.is_empty() {
        requests.push(Box::pin(send_request(inner.clone(), flights)));
    }
    (deadline, pending)
}

pub(super) async fn send_request(inner: Arc<Inner>, flights: Vec<InFlight>) -> RequestDone {
    let mut request = pb::ProduceRequest {
        partitions: Vec::with_capacity(flights.len()),
    };
    for f in &flights {
        let q = f.queue.lock().expect("partition queue lock");
        let records = if f.batches.len() == 1 {
            f.batches[0].bytes.clone()
        } else {
            let mut buf = Vec::with_capacity(f.batches.iter().map(|b| b.bytes.len()).sum());
            for b in &f.batches {
                buf.extend_from_slice(&b.bytes);
            }
            buf.into()
        };
        request.partitions.push(pb::PartitionRecords {
            topic: q.topic.to_string(),
            partition: q.partition,
            records,
        });
    }
    let result = inner.transport.produce(request).await;
    (flights, result)
}

/// What to do with one batch after an answer.
pub(super) enum Fate {
    /// Committed at this base offset (-1: at offsets no longer known).
    Done(i64),
    /// Retry, knowing this much of whether the batch was committed.
    Retry {
        written: Written,
        error: Error,
    },
    Fail(Error),
}

/// What an answer to be retried tells of whether the batch was committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Written {
    /// This attempt may have committed it: its outcome is unknown until an
    /// answer to the same producer id, epoch and sequence settles it.
    Maybe,
    /// This attempt wrote nothing; what earlier attempts did is unchanged.
    NotThisAttempt,
    /// No attempt committed it (the agent's commit recognises every
    /// committed batch of the epoch): it may be re-sequenced.
    Never,
}

/// Applies a produce answer; returns whether the producer epoch must be
/// bumped (sequence continuity was lost).
pub(super) fn handle_response(
    inner: &Arc<Inner>,
    flights: Vec<InFlight>,
    result: Result<pb::ProduceResponse>,
) -> bool {
    let mut bump = false;
    let current_epoch = inner
        .identity
        .lock()
        .expect("identity lock")
        .map(|i| i.epoch);
    let mut results = match &result {
        Ok(r) => r.results.iter().map(Some).collect::<Vec<_>>(),
        Err(_) => vec![None; flights.len()],
    };
    results.resize(flights.len(), None);
    for (flight, partition_result) in flights.into_iter().zip(results) {
        let mut q = flight.queue.lock().expect("partition queue lock");
        q.in_flight.clear();
        let (topic, partition) = (q.topic.to_string(), q.partition);
        let rejected = |code: ErrorCode, message: &str| Error::Rejected {
            topic: topic.clone(),
            partition,
            code,
            message: message.to_string(),
        };
        let mut fates = Vec::with_capacity(flight.batches.len());
        let mut earlier_retry = false;
        for (i, b) in flight.batches.iter().enumerate() {
            let fate = match (&result, partition_result) {
                (Err(e), _) => Fate::Retry {
                    written: Written::Maybe,
                    error: e.clone(),
                },
                (Ok(_), None) => Fate::Retry {
                    written: Written::Maybe,
                    error: rejected(
                        ErrorCode::Internal,
                        "the agent's answer omitted this partition",
                    ),
                },
                (Ok(_), Some(pr)) if pr.error != ErrorCode::None as i32 => {
                    let code = ErrorCode::try_from(pr.error).unwrap_or(ErrorCode::Internal);
                    if matches!(code, ErrorCode::UnknownPartition | ErrorCode::UnknownTopic) {
                        inner.transport.invalidate_topic(&topic);
                    }
                    let error = rejected(code, &pr.message);
                    if code_is_retryable(code) {
                        // Refused as a whole: nothing of it was written now.
                        Fate::Retry {
                            written: Written::NotThisAttempt,
                            error,
                        }
                    } else {
                        Fate::Fail(error)
                    }
                }
                (Ok(_), Some(pr)) => match pr.batches.get(i) {
                    None => Fate::Retry {
                        written: Written::Maybe,
                        error: rejected(ErrorCode::Internal, "the agent's answer omitted a batch"),
                    },
                    Some(br) if br.error == ErrorCode::None as i32 => Fate::Done(br.base_offset),
                    Some(br) => {
                        let code = ErrorCode::try_from(br.error).unwrap_or(ErrorCode::Internal);
                        let answer = BatchAnswer {
                            code,
                            topic: &topic,
                            partition,
                            message: &br.message,
                        };
                        batch_fate(b, answer, current_epoch, || {
                            // Follows a batch being retried: retry in order.
                            // Otherwise the sequence was lost: new epoch.
                            if !earlier_retry {
                                bump = true;
                            }
                        })
                    }
                },
            };
            earlier_retry |= matches!(fate, Fate::Retry { .. });
            fates.push(fate);
        }
        // Apply in order; batches to retry go back to the front, in order.
        let mut retry = Vec::new();
        let mut gave_up: Option<Error> = None;
        for (mut b, fate) in flight.batches.into_iter().zip(fates) {
            if let Some(e) = &gave_up {
                // Behind a batch given up on: fail what may be committed
                // after it; the rest is re-sequenced after the epoch bump.
                if b.uncertain {
                    b.done.complete(Err(e.clone()));
                    continue;
                }
            }
            match fate {
                Fate::Done(base) => {
                    b.done.complete(Ok(base));
                }
                Fate::Fail(e) => {
                    if inner.config.transactional_id.is_some()
                        && e.code() == Some(ErrorCode::ProducerFenced)
                    {
                        inner.make_fatal(super::transactions::classify(e.clone()));
                    }
                    b.done.complete(Err(e));
                }
                Fate::Retry { written, error } => {
                    b.attempts += 1;
                    match written {
                        Written::Maybe => b.uncertain = true,
                        Written::NotThisAttempt => {}
                        Written::Never => b.uncertain = false,
                    }
                    if b.attempts > inner.config.max_retries {
                        let e = Error::RetriesExhausted {
                            topic: topic.clone(),
                            partition,
                            attempts: b.attempts,
                            last: Arc::new(error),
                        };
                        if b.uncertain && b.stamp.is_some() {
                            bump = true;
                        }
                        b.done.complete(Err(e.clone()));
                        gave_up = Some(e);
                    } else {
                        b.last_error = Some(error);
                        retry.push(b);
                    }
                }
            }
        }
        if let Some(first) = retry.first() {
            if let Some(e) = &first.last_error {
                tracing::debug!(%topic, partition, attempts = first.attempts, error = %e, "retrying");
            }
            let attempts = first.attempts;
            q.not_before = Some(Instant::now() + inner.config.retry_policy().delay(attempts));
        }
        for b in retry.into_iter().rev() {
            q.sealed.push_front(b);
        }
    }
    inner.wake.notify_one();
    bump
}

/// An agent's error answer for one batch.
struct BatchAnswer<'a> {
    code: ErrorCode,
    topic: &'a str,
    partition: u32,
    message: &'a str,
}

/// The fate of one batch the agent answered with an error;
/// `out_of_order` runs when the batch's sequence does not follow the last
/// committed one.
fn batch_fate(
    b: &Sealed,
    answer: BatchAnswer<'_>,
    current_epoch: Option<i16>,
    out_of_order: impl FnOnce(),
) -> Fate {
    let error = Error::Rejected {
        topic: answer.topic.to_string(),
        partition: answer.partition,
        code: answer.code,
        message: answer.message.to_string(),
    };
    match answer.code {
        // Committed before, at offsets no longer known: delivered.
        ErrorCode::DuplicateSequence => Fate::Done(-1),
        // Nothing written now; this attempt may have failed after the
        // commit applied, so its outcome is unknown unless an agent said
        // it definitely wrote nothing.
        ErrorCode::StorageUnavailable | ErrorCode::TopicDeleted | ErrorCode::AgentShuttingDown => {
            Fate::Retry {
                written: Written::NotThisAttempt,
                error,
            }
        }
        // Maybe written: only a resend with the same sequence is safe (it
        // is answered as a duplicate if it was); a producer without
        // idempotence reports the possibility instead of duplicating.
        ErrorCode::OutcomeUnknown if b.stamp.is_some() => Fate::Retry {
            written: Written::Maybe,
            error,
        },
        ErrorCode::OutcomeUnknown => Fate::Fail(Error::OutcomeUnknown {
            topic: answer.topic.to_string(),
            partition: answer.partition,
            message: answer.message.to_string(),
        }),
        c if code_is_retryable(c) => Fate::Retry {
            written: Written::Maybe,
            error,
        },
        ErrorCode::OutOfOrderSequence => {
            out_of_order();
            // A committed batch would have been answered as a duplicate.
            Fate::Retry {
                written: Written::Never,
                error,
            }
        }
        ErrorCode::ProducerFenced if b.stamp.map(|s| s.0) < current_epoch => {
            // Stamped before our own epoch bump, and not recognised as
            // committed in that epoch: not committed; re-sequence and
            // resend.
            Fate::Retry {
                written: Written::Never,
                error,
            }
        }
        _ => Fate::Fail(error),
    }
}

/// Bumps the producer epoch after sequence continuity was lost; every
/// partition then re-sequences its unsent batches from 0.
pub(super) async fn bump_epoch(inner: &Arc<Inner>) -> Result<()> {
    let current = *inner.identity.lock().expect("identity lock");
    let Some(current) = current else {
        return Ok(());
    };
    let next = inner.transport.init_producer_id(Some(current)).await?;
    tracing::info!(
        producer_id = next.producer_id,
        epoch = next.epoch,
        "bumped producer epoch"
    );
    *inner.identity.lock().expect("identity lock") = Some(next);
    Ok(())
}

pub(super) fn fail_everything(inner: &Arc<Inner>, e: &Error) {
    for queue in inner.queues() {
        let mut q = queue.lock().expect("partition queue lock");
        if let Some(open) = q.open.take() {
            open.done.complete(Err(e.clone()));
        }
        for b in q.sealed.drain(..) {
            b.done.complete(Err(e.clone()));
        }
    }
}
