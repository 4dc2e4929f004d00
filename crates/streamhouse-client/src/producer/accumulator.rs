//! Record accumulation: per-partition queues of an open batch and sealed
//! batches, sealing (compression and sequence stamps), and re-sequencing
//! after an epoch bump.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use streamhouse_core::BatchBuilder;
use streamhouse_metadata::ProducerIdentity;
use tokio::time::Instant;

use super::budget::Reservation;
use super::delivery::{BatchCell, BatchHandle};
use super::{Inner, now_ms};
use crate::error::{Error, Result};

/// The partition queues of one topic.
pub(super) struct TopicQueues {
    pub(super) queues: Vec<Arc<Mutex<PartitionQueue>>>,
    /// Partition keyless records go to until its batch is sealed.
    pub(super) sticky: Arc<AtomicU32>,
    /// When the partition count was last checked (epoch milliseconds).
    pub(super) checked_at_ms: i64,
}

pub(super) struct OpenBatch {
    pub(super) builder: BatchBuilder,
    pub(super) started: Instant,
    pub(super) done: BatchHandle,
    pub(super) reserved: Reservation,
}

pub(super) struct Sealed {
    pub(super) bytes: Bytes,
    pub(super) records: i32,
    /// (epoch, base sequence) stamped in the header, for idempotent producers.
    pub(super) stamp: Option<(i16, i32)>,
    pub(super) attempts: u32,
    /// The last attempt failed in a way that may have committed it.
    pub(super) uncertain: bool,
    pub(super) last_error: Option<Error>,
    pub(super) done: BatchHandle,
    pub(super) _reserved: Reservation,
}

pub(super) struct PartitionQueue {
    pub(super) topic: Arc<str>,
    pub(super) partition: u32,
    /// The topic's sticky partition, moved on when this partition's batch
    /// is sealed (by size or by timeout), as Kafka's sticky partitioner does.
    pub(super) sticky: Arc<AtomicU32>,
    pub(super) partition_count: u32,
    pub(super) open: Option<OpenBatch>,
    pub(super) sealed: VecDeque<Sealed>,
    /// Outcomes of the batches of the request in flight.
    pub(super) in_flight: Vec<Arc<BatchCell>>,
    pub(super) not_before: Option<Instant>,
    /// Epoch that `next_sequence` counts in.
    pub(super) sequence_epoch: i16,
    pub(super) next_sequence: i32,
}

impl Inner {
    /// The queues of a topic, looked up (and its partition count checked
    /// against the cluster) at most once per refresh interval.
    pub(super) async fn topic(&self, name: &str, now_ms: i64) -> Result<Arc<TopicQueues>> {
        if let Some(t) = self.topics.read().expect("topics lock").get(name)
            && now_ms.saturating_sub(t.checked_at_ms)
                < self.config.agent_refresh_interval.as_millis() as i64
        {
            return Ok(t.clone());
        }
        self.refresh_topic(name).await
    }

    pub(super) async fn refresh_topic(&self, name: &str) -> Result<Arc<TopicQueues>> {
        let count = self.transport.partitions(name).await?;
        let mut topics = self.topics.write().expect("topics lock");
        let old = topics.get(name).cloned();
        let mut queues = old.as_ref().map(|t| t.queues.clone()).unwrap_or_default();
        let topic: Arc<str> = name.into();
        let sticky = old.as_ref().map_or_else(
            || Arc::new(AtomicU32::new(rand::random::<u32>() % count.max(1))),
            |t| t.sticky.clone(),
        );
        let epoch = self
            .identity
            .lock()
            .expect("identity lock")
            .map_or(0, |i| i.epoch);
        // Partitions are only ever added: keep the queues we have.
        for partition in queues.len() as u32..count {
            queues.push(Arc::new(Mutex::new(PartitionQueue {
                topic: topic.clone(),
                partition,
                sticky: sticky.clone(),
                partition_count: count,
                open: None,
                sealed: VecDeque::new(),
                in_flight: Vec::new(),
                not_before: None,
                sequence_epoch: epoch,
                next_sequence: 0,
            })));
        }
        let t = Arc::new(TopicQueues {
            queues,
            sticky,
            checked_at_ms: now_ms(),
        });
        topics.insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// Closes the open batch of `q`: compresses it, stamps the producer id,
    /// epoch and next sequence, and queues it for sending.
    pub(super) fn seal(&self, q: &mut PartitionQueue) -> Result<()> {
        let Some(open) = q.open.take() else {
            return Ok(());
        };
        if q.partition_count > 1 {
            let next = (q.partition + 1 + rand::random::<u32>() % (q.partition_count - 1))
                % q.partition_count;
            let _ =
                q.sticky
                    .compare_exchange(q.partition, next, Ordering::Relaxed, Ordering::Relaxed);
        }
        let records = open.builder.record_count() as i32;
        let identity = *self.identity.lock().expect("identity lock");
        let (producer_id, stamp) = match identity {
            Some(id) => {
                if q.sequence_epoch != id.epoch {
                    q.sequence_epoch = id.epoch;
                    q.next_sequence = 0;
                }
                let seq = q.next_sequence;
                q.next_sequence = streamhouse_metadata::add_sequence(seq, records);
                (id.producer_id, Some((id.epoch, seq)))
            }
            None => (-1, None),
        };
        let bytes = open.builder.finish(
            self.config.compression,
            producer_id,
            stamp.map_or(-1, |s| s.0),
            stamp.map_or(-1, |s| s.1),
            self.config.transactional_id.is_some(),
        );
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                let e = Error::from(e);
                open.done.complete(Err(e.clone()));
                return Err(e);
            }
        };
        q.sealed.push_back(Sealed {
            bytes,
            records,
            stamp,
            attempts: 0,
            uncertain: false,
            last_error: None,
            done: open.done,
            _reserved: open.reserved,
        });
        Ok(())
    }

    pub(super) fn queues(&self) -> Vec<Arc<Mutex<PartitionQueue>>> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .flat_map(|t| t.queues.iter().cloned())
            .collect()
    }
}

/// Renumbers the batches of `q` that may be re-sequenced (never sent, or
/// known not to be committed) under the current epoch, in queue order.
pub(super) fn restamp(q: &mut PartitionQueue, id: ProducerIdentity) -> Result<()> {
    // Uncertain batches (possibly committed) keep their stamps; they are
    // always at the front, as they were sent first.
    let first = q
        .sealed
        .iter()
        .position(|b| !b.uncertain)
        .unwrap_or(q.sealed.len());
    let needs = q.sequence_epoch != id.epoch
        || q.sealed
            .iter()
            .skip(first)
            .any(|b| b.stamp.is_some_and(|s| s.0 != id.epoch));
    if !needs {
        return Ok(());
    }
    let mut seq = match first.checked_sub(1).and_then(|i| q.sealed[i].stamp) {
        Some((epoch, s)) if epoch == id.epoch => {
            streamhouse_metadata::add_sequence(s, q.sealed[first - 1].records)
        }
        _ => 0,
    };
    for b in q.sealed.iter_mut().skip(first) {
        let mut bytes = b.bytes.to_vec();
        streamhouse_core::set_producer(&mut bytes, id.producer_id, id.epoch, seq)?;
        b.bytes = bytes.into();
        b.stamp = Some((id.epoch, seq));
        seq = streamhouse_metadata::add_sequence(seq, b.records);
    }
    q.sequence_epoch = id.epoch;
    q.next_sequence = seq;
    Ok(())
}
