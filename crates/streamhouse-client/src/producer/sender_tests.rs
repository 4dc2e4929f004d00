//! The sender against a scripted transport: answers, retries, re-sequencing
//! and epoch bumps without a running agent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use streamhouse_metadata::ProducerIdentity;
use streamhouse_proto as pb;
use streamhouse_proto::ErrorCode;

use super::transport::Transport;
use super::{Producer, ProducerConfig};
use crate::cluster::{Cluster, ClusterConfig, Source};
use crate::error::{Error, Result};

type Answer = Box<dyn FnOnce(&pb::ProduceRequest) -> Result<pb::ProduceResponse> + Send>;

/// A one-partition cluster whose produce answers are scripted; once the
/// script is used up every batch is acknowledged.
#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<Answer>>,
    requests: Mutex<Vec<pb::ProduceRequest>>,
    bumps: Mutex<Vec<Option<ProducerIdentity>>>,
    next_offset: Mutex<i64>,
}

impl Script {
    fn then(self: &Arc<Self>, answer: Answer) -> &Arc<Self> {
        self.answers.lock().unwrap().push_back(answer);
        self
    }

    /// (epoch, base sequence) of every batch of every request so far.
    fn stamps(&self) -> Vec<Vec<(i16, i32)>> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                r.partitions
                    .iter()
                    .flat_map(|p| headers(&p.records))
                    .map(|h| (h.producer_epoch, h.base_sequence))
                    .collect()
            })
            .collect()
    }

    fn bumps(&self) -> Vec<Option<ProducerIdentity>> {
        self.bumps.lock().unwrap().clone()
    }

    fn acknowledge(&self, request: &pb::ProduceRequest) -> pb::ProduceResponse {
        let mut next = self.next_offset.lock().unwrap();
        let results = request
            .partitions
            .iter()
            .map(|p| pb::PartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                batches: headers(&p.records)
                    .into_iter()
                    .map(|h| {
                        let base = *next;
                        *next += i64::from(h.record_count);
                        pb::BatchResult {
                            base_offset: base,
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        pb::ProduceResponse { results }
    }
}

fn headers(records: &[u8]) -> Vec<streamhouse_core::BatchHeader> {
    streamhouse_core::batches(records)
        .map(|b| b.unwrap().0)
        .collect()
}

impl Transport for Script {
    fn partitions<'a>(&'a self, _topic: &'a str) -> BoxFuture<'a, Result<u32>> {
        Box::pin(async { Ok(1) })
    }

    fn invalidate_topic(&self, _topic: &str) {}

    fn produce(&self, request: pb::ProduceRequest) -> BoxFuture<'_, Result<pb::ProduceResponse>> {
        let answer = self.answers.lock().unwrap().pop_front();
        let result = match answer {
            Some(answer) => answer(&request),
            None => Ok(self.acknowledge(&request)),
        };
        self.requests.lock().unwrap().push(request);
        Box::pin(async move { result })
    }

    fn init_producer_id(
        &self,
        current: Option<ProducerIdentity>,
    ) -> BoxFuture<'_, Result<ProducerIdentity>> {
        self.bumps.lock().unwrap().push(current);
        let next = match current {
            Some(c) => ProducerIdentity {
                producer_id: c.producer_id,
                epoch: c.epoch + 1,
            },
            None => ProducerIdentity {
                producer_id: 7,
                epoch: 0,
            },
        };
        Box::pin(async move { Ok(next) })
    }
}

/// Every batch of the request answered with `code`.
fn batch_error(code: ErrorCode) -> Answer {
    Box::new(move |request| {
        let results = request
            .partitions
            .iter()
            .map(|p| pb::PartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                batches: headers(&p.records)
                    .iter()
                    .map(|_| pb::BatchResult {
                        error: code as i32,
                        message: format!("scripted {code:?}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        Ok(pb::ProduceResponse { results })
    })
}

/// Every partition of the request refused as a whole with `code`.
fn partition_error(code: ErrorCode) -> Answer {
    Box::new(move |request| {
        let results = request
            .partitions
            .iter()
            .map(|p| pb::PartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                error: code as i32,
                message: format!("scripted {code:?}"),
                ..Default::default()
            })
            .collect();
        Ok(pb::ProduceResponse { results })
    })
}

/// The request was lost on the way: the batch may or may not be committed.
fn unavailable() -> Answer {
    Box::new(|_| {
        Err(Error::Rpc {
            address: "scripted".into(),
            status: Arc::new(tonic::Status::unavailable("connection reset")),
        })
    })
}

/// The answer to a batch committed before: its original offset.
fn duplicate_at(base_offset: i64) -> Answer {
    Box::new(move |request| {
        let results = request
            .partitions
            .iter()
            .map(|p| pb::PartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                batches: vec![pb::BatchResult {
                    base_offset,
                    duplicate: true,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        Ok(pb::ProduceResponse { results })
    })
}

/// An idempotent producer (id 7, epoch 0) over `script`, one record per
/// batch.
fn producer(script: &Arc<Script>, max_retries: u32) -> Producer {
    producer_with(
        script,
        max_retries,
        Some(ProducerIdentity {
            producer_id: 7,
            epoch: 0,
        }),
    )
}

/// A producer over `script` with `identity` (`None`: without idempotence),
/// one record per batch.
fn producer_with(
    script: &Arc<Script>,
    max_retries: u32,
    identity: Option<ProducerIdentity>,
) -> Producer {
    let config = ProducerConfig {
        batch_size: 1,
        batch_timeout: Duration::from_millis(1),
        max_retries,
        retry_backoff: Duration::from_millis(1),
        ..ProducerConfig::default()
    };
    let cluster = Arc::new(Cluster::new(
        // Never called: the sender only talks to the script.
        Source::Bootstrap(vec!["127.0.0.1:9".into()]),
        ClusterConfig::new(
            "default",
            None,
            config.retry_policy(),
            config.agent_refresh_interval,
            1 << 20,
        ),
    ));
    Producer::start(config, cluster, script.clone(), identity)
}

async fn send(p: &Producer, value: &str) -> Result<i64> {
    p.send("t", None, value.as_bytes(), None)
        .await
        .map(|r| r.offset)
}

#[tokio::test]
async fn acknowledged_and_duplicate_batches_resolve_with_their_offsets() {
    let script = Arc::new(Script::default());
    script.then(duplicate_at(41));
    let p = producer(&script, 3);
    assert_eq!(
        send(&p, "a").await.unwrap(),
        41,
        "a duplicate keeps its offset"
    );
    assert_eq!(send(&p, "b").await.unwrap(), 0);
    assert_eq!(send(&p, "c").await.unwrap(), 1);
    assert_eq!(
        script.stamps(),
        [vec![(0, 0)], vec![(0, 1)], vec![(0, 2)]],
        "one sequence per batch, in order"
    );
    assert!(script.bumps().is_empty());
    p.close().await.unwrap();
}

#[tokio::test]
async fn retryable_errors_are_retried_with_the_same_sequence() {
    let script = Arc::new(Script::default());
    script
        .then(partition_error(ErrorCode::StorageUnavailable))
        .then(unavailable())
        .then(batch_error(ErrorCode::AgentShuttingDown));
    let p = producer(&script, 3);
    assert_eq!(send(&p, "a").await.unwrap(), 0);
    assert_eq!(
        script.stamps(),
        vec![vec![(0, 0)]; 4],
        "a retry resends the same stamp, so the agent can drop a duplicate"
    );
    assert!(script.bumps().is_empty());
    assert_eq!(send(&p, "b").await.unwrap(), 1);
    assert_eq!(script.stamps()[4], [(0, 1)]);
    p.close().await.unwrap();
}

#[tokio::test]
async fn out_of_order_sequence_bumps_the_epoch_and_resequences() {
    let script = Arc::new(Script::default());
    let p = producer(&script, 3);
    assert_eq!(send(&p, "a").await.unwrap(), 0);
    script.then(batch_error(ErrorCode::OutOfOrderSequence));
    assert_eq!(send(&p, "b").await.unwrap(), 1);
    assert_eq!(
        script.bumps(),
        [Some(ProducerIdentity {
            producer_id: 7,
            epoch: 0
        })],
        "the lost sequence is given up with a new epoch"
    );
    assert_eq!(
        script.stamps(),
        [vec![(0, 0)], vec![(0, 1)], vec![(1, 0)]],
        "the refused batch is re-stamped under the new epoch from sequence 0"
    );
    assert_eq!(send(&p, "c").await.unwrap(), 2);
    assert_eq!(script.stamps()[3], [(1, 1)]);
    p.close().await.unwrap();
}

#[tokio::test]
async fn possibly_committed_batches_given_up_on_bump_the_epoch() {
    let script = Arc::new(Script::default());
    // Lost in transit until retries run out: it may have been committed,
    // so sequences cannot go on in this epoch.
    script
        .then(unavailable())
        .then(unavailable())
        .then(unavailable());
    let p = producer(&script, 2);
    let e = send(&p, "a").await.unwrap_err();
    let Error::RetriesExhausted { attempts, last, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(*attempts, 3);
    assert!(last.is_retryable(), "{last:?}");
    assert_eq!(send(&p, "b").await.unwrap(), 0);
    assert_eq!(
        script.bumps(),
        [Some(ProducerIdentity {
            producer_id: 7,
            epoch: 0
        })]
    );
    assert_eq!(
        script.stamps(),
        [vec![(0, 0)], vec![(0, 0)], vec![(0, 0)], vec![(1, 0)]],
        "the next batch starts the new epoch at sequence 0"
    );
    p.close().await.unwrap();
}

#[tokio::test]
async fn batches_behind_a_refused_one_are_resequenced_after_one_bump() {
    let script = Arc::new(Script::default());
    // Both batches travel in one request: the first is out of order, the
    // second is out of order only because it follows the first.
    script.then(batch_error(ErrorCode::OutOfOrderSequence));
    let p = producer(&script, 3);
    let a = p
        .send_record(super::ProducerRecord::new("t", "a"))
        .await
        .unwrap();
    let b = p
        .send_record(super::ProducerRecord::new("t", "b"))
        .await
        .unwrap();
    assert_eq!(a.await.unwrap().offset, 0);
    assert_eq!(b.await.unwrap().offset, 1);
    assert_eq!(script.bumps().len(), 1, "one bump for the partition");
    assert_eq!(
        script.stamps(),
        [vec![(0, 0), (0, 1)], vec![(1, 0), (1, 1)]],
        "re-stamped in order under the new epoch"
    );
    p.close().await.unwrap();
}

#[tokio::test]
async fn retries_are_exhausted_after_max_retries() {
    let script = Arc::new(Script::default());
    for _ in 0..3 {
        script.then(partition_error(ErrorCode::StorageUnavailable));
    }
    let p = producer(&script, 2);
    let e = send(&p, "a").await.unwrap_err();
    let Error::RetriesExhausted { attempts, last, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(*attempts, 3);
    assert!(
        matches!(
            **last,
            Error::Rejected {
                code: ErrorCode::StorageUnavailable,
                ..
            }
        ),
        "{last:?}"
    );
    assert_eq!(script.stamps(), vec![vec![(0, 0)]; 3]);
    assert!(
        script.bumps().is_empty(),
        "refused (never committed) batches keep the epoch"
    );
    // The sequence goes on after a batch known not to be committed (the
    // agent then answers OUT_OF_ORDER_SEQUENCE, which bumps the epoch).
    script.then(batch_error(ErrorCode::OutOfOrderSequence));
    assert_eq!(send(&p, "b").await.unwrap(), 0);
    assert_eq!(script.stamps()[3..], [vec![(0, 1)], vec![(1, 0)]]);
    assert_eq!(script.bumps().len(), 1);
    p.close().await.unwrap();
}

#[tokio::test]
async fn a_fenced_producer_fails_its_batch_without_retrying() {
    let script = Arc::new(Script::default());
    script.then(batch_error(ErrorCode::ProducerFenced));
    let p = producer(&script, 3);
    let e = send(&p, "a").await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Rejected {
                code: ErrorCode::ProducerFenced,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(script.stamps().len(), 1, "fencing is not retried");
    assert!(script.bumps().is_empty());
    p.close().await.unwrap();
}

/// Every batch of the request answered as committed before: the first
/// `unknown` with DUPLICATE_SEQUENCE (offsets forgotten), the others as
/// duplicates at offsets from 100 on.
fn all_duplicates(unknown: usize) -> Answer {
    Box::new(move |request| {
        let results = request
            .partitions
            .iter()
            .map(|p| pb::PartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                batches: headers(&p.records)
                    .iter()
                    .enumerate()
                    .map(|(i, _)| {
                        if i < unknown {
                            pb::BatchResult {
                                error: ErrorCode::DuplicateSequence as i32,
                                message: "committed before".into(),
                                ..Default::default()
                            }
                        } else {
                            pb::BatchResult {
                                base_offset: 100 + i as i64,
                                duplicate: true,
                                ..Default::default()
                            }
                        }
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        Ok(pb::ProduceResponse { results })
    })
}

#[tokio::test]
async fn a_lost_answer_is_settled_by_resending_the_same_sequences() {
    let script = Arc::new(Script::default());
    // The first request commits but its answer is lost; the resend is
    // answered as committed before.
    script.then(unavailable()).then(all_duplicates(3));
    let p = producer(&script, 3);
    let n = super::sender::MAX_IDEMPOTENT_BATCHES + 4;
    let mut pending = Vec::new();
    for i in 0..n {
        let record = super::ProducerRecord::new("t", format!("r{i}"));
        pending.push(p.send_record(record).await.unwrap());
    }
    let mut offsets = Vec::new();
    for d in pending {
        offsets.push(d.await.unwrap().offset);
    }
    let cap = super::sender::MAX_IDEMPOTENT_BATCHES;
    let first: Vec<(i16, i32)> = (0..cap as i32).map(|s| (0, s)).collect();
    let rest: Vec<(i16, i32)> = (cap as i32..n as i32).map(|s| (0, s)).collect();
    assert_eq!(
        script.stamps(),
        [first.clone(), first, rest],
        "no more batches per request than the agent remembers; the resend \
         carries the original sequences"
    );
    assert!(script.bumps().is_empty(), "nothing is re-sequenced");
    let mut expected = vec![-1; 3];
    expected.extend((3..cap as i64).map(|i| 100 + i));
    expected.extend(0..4);
    assert_eq!(
        offsets, expected,
        "delivered once each; -1 where the offset is no longer known"
    );
    p.close().await.unwrap();
}

#[tokio::test]
async fn outcome_unknown_is_resent_only_with_the_same_sequence() {
    let script = Arc::new(Script::default());
    script
        .then(batch_error(ErrorCode::OutcomeUnknown))
        .then(duplicate_at(12));
    let p = producer(&script, 3);
    assert_eq!(send(&p, "a").await.unwrap(), 12);
    assert_eq!(script.stamps(), [vec![(0, 0)], vec![(0, 0)]]);
    assert!(script.bumps().is_empty());
    p.close().await.unwrap();

    // Without idempotence a resend could write the records twice: the
    // record fails, saying it may have been written.
    let script = Arc::new(Script::default());
    script.then(batch_error(ErrorCode::OutcomeUnknown));
    let p = producer_with(&script, 3, None);
    let e = send(&p, "a").await.unwrap_err();
    assert!(matches!(e, Error::OutcomeUnknown { .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert_eq!(e.code(), Some(ErrorCode::OutcomeUnknown));
    assert!(
        e.to_string().contains("may or may not have been written"),
        "{e}"
    );
    assert_eq!(script.requests.lock().unwrap().len(), 1, "not resent");
    assert_eq!(send(&p, "b").await.unwrap(), 0);
    p.close().await.unwrap();
}

#[tokio::test]
async fn a_batch_lost_once_stays_in_doubt_after_refusals() {
    let script = Arc::new(Script::default());
    // Lost (maybe committed), then refused twice (nothing written by those
    // attempts): the first attempt's outcome is still unknown when the
    // producer gives up, so the sequence cannot go on in this epoch.
    script
        .then(unavailable())
        .then(partition_error(ErrorCode::StorageUnavailable))
        .then(batch_error(ErrorCode::StorageUnavailable));
    let p = producer(&script, 2);
    let e = send(&p, "a").await.unwrap_err();
    assert!(matches!(e, Error::RetriesExhausted { .. }), "{e:?}");
    assert_eq!(send(&p, "b").await.unwrap(), 0);
    assert_eq!(script.bumps().len(), 1);
    assert_eq!(
        script.stamps(),
        [vec![(0, 0)], vec![(0, 0)], vec![(0, 0)], vec![(1, 0)]],
        "the batch in doubt kept its sequence; the next one starts a new epoch"
    );
    p.close().await.unwrap();
}
