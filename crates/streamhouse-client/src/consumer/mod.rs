//! The Consumer: poll-based reading, consumer groups with incremental
//! server-side rebalancing, and offset management.
//!
//! ```text
//! heartbeat task ──GroupHeartbeat──▶ coordinator (any agent)
//!      │ new assignment (to add / to revoke)
//!      ▼
//! poll() ── applies it: on_revoked (commit here) → release → on_assigned
//!      │                                      ▲
//!      └── takes records from the prefetch ───┘
//! fetch task ──Fetch (long-poll)──▶ any agent; buffers whole batches,
//!                                   bounded in bytes across partitions
//! ```
//!
//! Positions advance only when `poll` hands records to the application, and
//! commits (manual, or automatic every `auto_commit_interval`) commit those
//! positions, never records the application has not received.
//!
//! ```no_run
//! # async fn demo() -> Result<(), streamhouse_client::Error> {
//! use std::time::Duration;
//! use streamhouse_client::{AutoOffsetReset, Consumer};
//! let consumer = Consumer::builder()
//!     .bootstrap("127.0.0.1:50051")
//!     .group_id("billing")
//!     .subscribe(["orders"])
//!     .auto_offset_reset(AutoOffsetReset::Earliest)
//!     .build()
//!     .await?;
//! loop {
//!     for record in consumer.poll(Duration::from_secs(1)).await? {
//!         println!("{}/{} @{}", record.topic, record.partition, record.offset);
//!     }
//!     # break;
//! }
//! consumer.close().await?;
//! # Ok(()) }
//! ```

mod config;
mod fetcher;
mod group;
mod positions;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::Stream;
use streamhouse_core::Header;
use streamhouse_metadata::TopicPartition;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::{Error, Result};

pub use config::{ConsumerBuilder, ConsumerConfig};
use group::Member;
pub use group::{ConsumerGroupMetadata, RebalanceListener};

/// Where a consumer starts in a partition without a committed offset (or
/// whose committed offset is out of range).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AutoOffsetReset {
    /// The first offset still stored.
    Earliest,
    /// The next offset to be written (only new records).
    #[default]
    Latest,
    /// Fail with [`Error::NoOffset`].
    None,
}

/// Which records a consumer reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IsolationLevel {
    /// Every record up to the high watermark.
    #[default]
    ReadUncommitted,
    /// Records of committed transactions (and non-transactional records) up
    /// to the last stable offset; aborted transactions are skipped.
    ReadCommitted,
}

/// A record as the consumer returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Reads records; the design is in the `consumer` module docs
/// (`cargo doc --document-private-items`).
pub struct Consumer {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    last_auto_commit: Mutex<Instant>,
}

struct Inner {
    config: ConsumerConfig,
    cluster: Cluster,
    subscription: Vec<String>,
    listener: Option<Arc<dyn RebalanceListener>>,
    state: Mutex<State>,
    /// Records arrived, or a rebalance is waiting for `poll`.
    data: Notify,
    fetch_wake: Notify,
    heartbeat_wake: Notify,
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    partitions: BTreeMap<TopicPartition, PartitionState>,
    buffered_bytes: usize,
    member: Option<Member>,
    /// Set by the heartbeat task, applied by `poll`.
    target: Option<BTreeSet<TopicPartition>>,
    /// An error for the next `poll` (e.g. no offset and no reset policy).
    error: Option<Error>,
}

#[derive(Default)]
struct PartitionState {
    /// Next offset to hand to the application.
    position: Option<i64>,
    /// Next offset to fetch.
    fetch_offset: i64,
    /// Changes on seek, so an answer to an older fetch is dropped.
    generation: u64,
    in_flight: bool,
    /// Fetching stopped at a corrupt batch until the application seeks.
    stopped_at_corrupt: bool,
    buffer: VecDeque<ConsumerRecord>,
    buffered_bytes: usize,
    high_watermark: Option<i64>,
}

impl Consumer {
    /// A builder with the documented defaults.
    pub fn builder() -> ConsumerBuilder {
        ConsumerBuilder::default()
    }

    /// Returns records received since the last call, waiting up to
    /// `timeout` for some; applies pending partition moves first (calling
    /// the rebalance listener).
    pub async fn poll(&self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.apply_rebalance().await?;
            self.maybe_auto_commit().await;
            let notified = self.inner.data.notified();
            let records = self.take_records()?;
            if !records.is_empty() || Instant::now() >= deadline {
                return Ok(records);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// The records as a stream (each item one record).
    pub fn stream(&self) -> impl Stream<Item = Result<ConsumerRecord>> + '_ {
        futures::stream::unfold(
            (self, VecDeque::new()),
            |(consumer, mut pending): (&Consumer, VecDeque<ConsumerRecord>)| async move {
                loop {
                    if let Some(r) = pending.pop_front() {
                        return Some((Ok(r), (consumer, pending)));
                    }
                    match consumer.poll(Duration::from_secs(1)).await {
                        Ok(records) => pending.extend(records),
                        Err(e) => return Some((Err(e), (consumer, pending))),
                    }
                }
            },
        )
    }

    fn take_records(&self) -> Result<Vec<ConsumerRecord>> {
        let mut state = self.inner.state.lock().expect("consumer state");
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        let max = self.inner.config.max_poll_records;
        let buffered: usize = state.partitions.values().map(|p| p.buffer.len()).sum();
        let mut out = Vec::with_capacity(buffered.min(max));
        let mut freed = 0;
        // Round-robin over partitions, a slice each, until max records.
        let keys: Vec<TopicPartition> = state.partitions.keys().cloned().collect();
        while out.len() < max {
            let before = out.len();
            for tp in &keys {
                let p = state.partitions.get_mut(tp).expect("key exists");
                let mut n = 0;
                while n < 100 && out.len() < max {
                    let Some(r) = p.buffer.pop_front() else { break };
                    let size = record_size(&r);
                    p.buffered_bytes -= size;
                    freed += size;
                    p.position = Some(r.offset + 1);
                    out.push(r);
                    n += 1;
                }
                // Everything fetched was handed over: the position passes
                // what followed the last record (markers, aborted batches).
                if n > 0 && p.buffer.is_empty() {
                    p.position = p.position.max(Some(p.fetch_offset));
                }
            }
            if out.len() == before {
                break;
            }
        }
        state.buffered_bytes -= freed;
        drop(state);
        if freed > 0 {
            self.inner.fetch_wake.notify_one();
        }
        Ok(out)
    }

    /// The partitions this consumer owns now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.inner
            .state
            .lock()
            .expect("consumer state")
            .partitions
            .keys()
            .cloned()
            .collect()
    }

    /// Stops handing out records, revokes the group's partitions (the
    /// listener's `on_revoked` runs, then the auto-commit), leaves the group
    /// at once so its partitions move without waiting for the session
    /// timeout, and stops.
    ///
    /// The partitions are released before the group is told, so no other
    /// member can be given one while this consumer still holds it.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let committed = if self.inner.config.group_id.is_some() {
            self.revoke(&self.assignment()).await
        } else {
            Ok(())
        };
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
        let member = {
            // Nothing is held once the tasks are stopped, whatever a
            // concurrent `poll` added meanwhile.
            let mut state = self.inner.state.lock().expect("consumer state");
            state.partitions.clear();
            state.buffered_bytes = 0;
            state.target = None;
            state.member.take()
        };
        if let (Some(m), Some(group)) = (member, &self.inner.config.group_id) {
            self.inner
                .heartbeat(
                    group,
                    &m.id,
                    streamhouse_metadata::LEAVE_GROUP_EPOCH,
                    vec![],
                )
                .await?;
        }
        committed
    }
}

impl Drop for Consumer {
    /// Dropping stops the background tasks; the group notices the member
    /// is gone after its session timeout (call `close` to leave at once).
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
    }
}

fn record_size(r: &ConsumerRecord) -> usize {
    64 + r.key.as_ref().map_or(0, Bytes::len)
        + r.value.as_ref().map_or(0, Bytes::len)
        + r.headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len))
            .sum::<usize>()
}
