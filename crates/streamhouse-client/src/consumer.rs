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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::Stream;
use streamhouse_core::{Header, RecordBatch};
use streamhouse_metadata::{MetadataStore, TopicPartition};
use streamhouse_proto as pb;
use streamhouse_proto::ErrorCode;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cluster::{Cluster, ClusterConfig, Source};
use crate::error::{Error, Result};

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

/// Called by `poll` when the group moves partitions; an application
/// commits what it processed in `on_revoked`.
pub trait RebalanceListener: Send + Sync {
    /// The partitions are about to be taken away; their positions are still
    /// readable and committable.
    fn on_revoked<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()>;
    /// The partitions were added; their positions are set.
    fn on_assigned<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()>;
}

/// Consumer settings; every field is set through [`ConsumerBuilder`].
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub group_id: Option<String>,
    pub client_id: String,
    pub agent_group: String,
    pub zone: Option<String>,
    pub auto_offset_reset: AutoOffsetReset,
    pub enable_auto_commit: bool,
    pub auto_commit_interval: Duration,
    pub max_poll_records: usize,
    pub fetch_max_bytes: usize,
    pub max_partition_fetch_bytes: usize,
    pub fetch_max_wait: Duration,
    pub max_prefetch_bytes: usize,
    pub isolation_level: IsolationLevel,
    pub session_timeout: Duration,
    pub request_timeout: Duration,
    pub agent_refresh_interval: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: None,
            client_id: "streamhouse-consumer".into(),
            agent_group: "default".into(),
            zone: None,
            auto_offset_reset: AutoOffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            max_poll_records: 500,
            fetch_max_bytes: 50 << 20,
            max_partition_fetch_bytes: 1 << 20,
            fetch_max_wait: Duration::from_millis(500),
            max_prefetch_bytes: 64 << 20,
            isolation_level: IsolationLevel::ReadUncommitted,
            session_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            agent_refresh_interval: Duration::from_secs(30),
        }
    }
}

/// Builds a [`Consumer`]: discovery (`metadata_store` or `bootstrap`), then
/// `subscribe` (with a `group_id`) or `assign`.
#[derive(Default)]
#[must_use]
pub struct ConsumerBuilder {
    metadata: Option<Arc<dyn MetadataStore>>,
    bootstrap: Vec<String>,
    subscribe: Vec<String>,
    assign: Vec<TopicPartition>,
    listener: Option<Arc<dyn RebalanceListener>>,
    config: ConsumerConfig,
}

impl ConsumerBuilder {
    /// Discover agents through this metadata store.
    pub fn metadata_store(mut self, store: Arc<dyn MetadataStore>) -> Self {
        self.metadata = Some(store);
        self
    }
    /// Discover agents through an agent at `host:port` (repeatable).
    pub fn bootstrap(mut self, address: impl Into<String>) -> Self {
        self.bootstrap.push(address.into());
        self
    }
    /// Consumer group: with `subscribe`, partitions are shared among its
    /// members; offsets are committed under it. Default: none.
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.config.group_id = Some(group.into());
        self
    }
    /// Topics to consume as a group member (needs `group_id`).
    pub fn subscribe<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subscribe = topics.into_iter().map(Into::into).collect();
        self
    }
    /// Partitions to consume without group membership.
    pub fn assign(mut self, partitions: impl IntoIterator<Item = TopicPartition>) -> Self {
        self.assign = partitions.into_iter().collect();
        self
    }
    /// Where to start without a committed offset. Default `Latest`.
    pub fn auto_offset_reset(mut self, reset: AutoOffsetReset) -> Self {
        self.config.auto_offset_reset = reset;
        self
    }
    /// Commit positions automatically. Default on (needs `group_id`).
    pub fn enable_auto_commit(mut self, enabled: bool) -> Self {
        self.config.enable_auto_commit = enabled;
        self
    }
    /// How often automatic commits happen. Default 5 s.
    pub fn auto_commit_interval(mut self, interval: Duration) -> Self {
        self.config.auto_commit_interval = interval;
        self
    }
    /// Most records one `poll` returns. Default 500.
    pub fn max_poll_records(mut self, records: usize) -> Self {
        self.config.max_poll_records = records;
        self
    }
    /// Byte budget of one fetch request. Default 50 MiB.
    pub fn fetch_max_bytes(mut self, bytes: usize) -> Self {
        self.config.fetch_max_bytes = bytes;
        self
    }
    /// Byte budget per partition in one fetch. Default 1 MiB.
    pub fn max_partition_fetch_bytes(mut self, bytes: usize) -> Self {
        self.config.max_partition_fetch_bytes = bytes;
        self
    }
    /// Longest an agent holds a fetch waiting for records. Default 500 ms.
    pub fn fetch_max_wait(mut self, wait: Duration) -> Self {
        self.config.fetch_max_wait = wait;
        self
    }
    /// Most bytes of fetched, not yet polled records held, over all
    /// partitions. Default 64 MiB.
    pub fn max_prefetch_bytes(mut self, bytes: usize) -> Self {
        self.config.max_prefetch_bytes = bytes;
        self
    }
    /// Default `ReadUncommitted`.
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.config.isolation_level = level;
        self
    }
    /// The group removes a member silent for this long. Default 10 s.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.session_timeout = timeout;
        self
    }
    /// Timeout of one request to an agent. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }
    /// Agent group to talk to. Default `"default"`.
    pub fn agent_group(mut self, group: impl Into<String>) -> Self {
        self.config.agent_group = group.into();
        self
    }
    /// Prefer agents in this zone.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.config.zone = Some(zone.into());
        self
    }
    /// Client id shown in group descriptions.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = id.into();
        self
    }
    /// Called on partition moves (from `poll`).
    pub fn rebalance_listener(mut self, listener: Arc<dyn RebalanceListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Validates the settings, finds an agent and starts the consumer.
    pub async fn build(self) -> Result<Consumer> {
        let c = &self.config;
        let source = Source::from_builder(self.metadata, self.bootstrap)?;
        match (self.subscribe.is_empty(), self.assign.is_empty()) {
            (false, false) => return Err(Error::Config("subscribe or assign, not both".into())),
            (true, true) => {
                return Err(Error::Config(
                    "subscribe to topics or assign partitions".into(),
                ));
            }
            (false, true) if c.group_id.is_none() => {
                return Err(Error::Config("subscribe needs a group_id".into()));
            }
            _ => {}
        }
        if c.enable_auto_commit && c.group_id.is_none() && !self.assign.is_empty() {
            return Err(Error::Config(
                "enable_auto_commit needs a group_id (or enable_auto_commit(false))".into(),
            ));
        }
        if c.max_poll_records == 0 {
            return Err(Error::Config("max_poll_records must be at least 1".into()));
        }
        let cluster = Cluster::new(
            source,
            ClusterConfig {
                group: c.agent_group.clone(),
                zone: c.zone.clone(),
                request_timeout: c.request_timeout,
                refresh_interval: c.agent_refresh_interval,
                agent_ttl: Duration::from_secs(10),
                failure_cooldown: Duration::from_secs(5),
                max_message_bytes: c.fetch_max_bytes + (8 << 20),
            },
        );
        cluster.agent().await?;
        let subscribed = !self.subscribe.is_empty();
        let inner = Arc::new(Inner {
            config: self.config,
            cluster,
            subscription: self.subscribe,
            listener: self.listener,
            state: Mutex::new(State::default()),
            data: Notify::new(),
            fetch_wake: Notify::new(),
            heartbeat_wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        if !subscribed {
            inner.add_partitions(&self.assign).await?;
        }
        let mut tasks = vec![tokio::spawn(run_fetcher(inner.clone()))];
        if subscribed {
            tasks.push(tokio::spawn(run_heartbeats(inner.clone())));
        }
        Ok(Consumer {
            inner,
            tasks: Mutex::new(tasks),
            last_auto_commit: Mutex::new(Instant::now()),
        })
    }
}

/// Reads records; see the [module docs](self).
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

#[derive(Clone, Debug)]
struct Member {
    id: String,
    epoch: i32,
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
        let mut out = Vec::new();
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

    async fn maybe_auto_commit(&self) {
        if !self.inner.config.enable_auto_commit || self.inner.config.group_id.is_none() {
            return;
        }
        {
            let mut last = self.last_auto_commit.lock().expect("auto commit clock");
            if last.elapsed() < self.inner.config.auto_commit_interval {
                return;
            }
            *last = Instant::now();
        }
        if let Err(e) = self.commit().await {
            tracing::warn!(error = %e, "automatic offset commit failed");
        }
    }

    /// Applies an assignment change from the coordinator: revoke (listener,
    /// auto-commit, release), then add (positions, listener).
    async fn apply_rebalance(&self) -> Result<()> {
        let target = self
            .inner
            .state
            .lock()
            .expect("consumer state")
            .target
            .take();
        let Some(target) = target else {
            return Ok(());
        };
        let owned: BTreeSet<TopicPartition> = self
            .inner
            .state
            .lock()
            .expect("consumer state")
            .partitions
            .keys()
            .cloned()
            .collect();
        let revoked: Vec<_> = owned.difference(&target).cloned().collect();
        let added: Vec<_> = target.difference(&owned).cloned().collect();
        if !revoked.is_empty() {
            if let Some(l) = &self.inner.listener {
                l.on_revoked(self, &revoked).await;
            }
            if self.inner.config.enable_auto_commit {
                let positions = self.positions_of(&revoked);
                if let Err(e) = self.commit_offsets(positions).await {
                    tracing::warn!(error = %e, "commit before revocation failed");
                }
            }
            let mut state = self.inner.state.lock().expect("consumer state");
            for tp in &revoked {
                if let Some(p) = state.partitions.remove(tp) {
                    state.buffered_bytes -= p.buffered_bytes;
                }
            }
        }
        if !added.is_empty() {
            self.inner.add_partitions(&added).await?;
            if let Some(l) = &self.inner.listener {
                l.on_assigned(self, &added).await;
            }
        }
        if !revoked.is_empty() || !added.is_empty() {
            // Tell the coordinator at once what was released.
            self.inner.heartbeat_wake.notify_one();
            self.inner.fetch_wake.notify_one();
        }
        Ok(())
    }

    fn positions_of(&self, partitions: &[TopicPartition]) -> HashMap<TopicPartition, i64> {
        let state = self.inner.state.lock().expect("consumer state");
        partitions
            .iter()
            .filter_map(|tp| Some((tp.clone(), state.partitions.get(tp)?.position?)))
            .collect()
    }

    /// Commits the position of every assigned partition (what `poll` has
    /// returned) and waits for the commit.
    pub async fn commit(&self) -> Result<()> {
        let all: Vec<TopicPartition> = self.assignment();
        let positions = self.positions_of(&all);
        self.commit_offsets(positions).await
    }

    /// Commits the current positions in the background; failures are
    /// logged.
    pub fn commit_async(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.commit().await {
                tracing::warn!(error = %e, "asynchronous commit failed");
            }
        });
    }

    /// Commits explicit offsets (the next offset to read, per partition).
    pub async fn commit_offsets(&self, offsets: HashMap<TopicPartition, i64>) -> Result<()> {
        let Some(group) = self.inner.config.group_id.clone() else {
            return Err(Error::Config("committing offsets needs a group_id".into()));
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let member = self
            .inner
            .state
            .lock()
            .expect("consumer state")
            .member
            .clone();
        let request = pb::CommitOffsetsRequest {
            group_id: group,
            member_id: member.as_ref().map(|m| m.id.clone()),
            member_epoch: member.map_or(0, |m| m.epoch),
            offsets: offsets
                .into_iter()
                .map(|(tp, offset)| pb::OffsetToCommit {
                    topic: tp.topic,
                    partition: tp.partition,
                    offset,
                    metadata: None,
                })
                .collect(),
        };
        let r = self
            .inner
            .cluster
            .call(3, |mut c| {
                let r = request.clone();
                async move { c.commit_offsets(r).await }
            })
            .await?;
        if r.error != ErrorCode::None as i32 {
            let code = ErrorCode::try_from(r.error).unwrap_or(ErrorCode::Internal);
            return Err(Error::Group {
                code,
                message: r.message,
            });
        }
        Ok(())
    }

    /// The group's committed offset of a partition.
    pub async fn committed(&self, tp: &TopicPartition) -> Result<Option<i64>> {
        Ok(self.inner.committed().await?.get(tp).copied())
    }

    /// Moves a partition's position; the next poll returns records from
    /// `offset` (an offset out of range is reset per `auto_offset_reset`).
    pub fn seek(&self, tp: &TopicPartition, offset: i64) -> Result<()> {
        let mut state = self.inner.state.lock().expect("consumer state");
        let s = &mut *state;
        let p = s
            .partitions
            .get_mut(tp)
            .ok_or_else(|| Error::NotAssigned(tp.clone()))?;
        s.buffered_bytes -= p.buffered_bytes;
        p.buffered_bytes = 0;
        p.buffer.clear();
        p.position = Some(offset);
        p.fetch_offset = offset;
        p.generation += 1;
        drop(state);
        self.inner.fetch_wake.notify_one();
        Ok(())
    }

    /// Seeks to the first stored offset.
    pub async fn seek_to_beginning(&self, tp: &TopicPartition) -> Result<()> {
        let offset = self.inner.list_offset(tp, -2).await?;
        self.seek(tp, offset)
    }

    /// Seeks to the end (only records written from now on).
    pub async fn seek_to_end(&self, tp: &TopicPartition) -> Result<()> {
        let offset = self.inner.list_offset(tp, -1).await?;
        self.seek(tp, offset)
    }

    /// Seeks to the first record at or after `timestamp` (ms).
    pub async fn seek_to_timestamp(&self, tp: &TopicPartition, timestamp: i64) -> Result<()> {
        let offset = self.inner.list_offset(tp, timestamp).await?;
        self.seek(tp, offset)
    }

    /// The next offset `poll` returns for a partition.
    pub fn position(&self, tp: &TopicPartition) -> Result<i64> {
        let state = self.inner.state.lock().expect("consumer state");
        state
            .partitions
            .get(tp)
            .ok_or_else(|| Error::NotAssigned(tp.clone()))?
            .position
            .ok_or_else(|| Error::NoOffset(tp.clone()))
    }

    /// The group and membership to pass to
    /// [`Producer::send_offsets_to_transaction`](crate::Producer::send_offsets_to_transaction).
    pub fn group_metadata(&self) -> Option<crate::ConsumerGroupMetadata> {
        let group_id = self.inner.config.group_id.clone()?;
        let member = self
            .inner
            .state
            .lock()
            .expect("consumer state")
            .member
            .as_ref()
            .map(|m| (m.id.clone(), m.epoch));
        Some(crate::ConsumerGroupMetadata { group_id, member })
    }

    /// The positions of every assigned partition (what `poll` returned).
    pub fn positions(&self) -> HashMap<TopicPartition, i64> {
        self.positions_of(&self.assignment())
    }

    /// Moves every assigned partition back to the group's committed offset
    /// (or the reset policy): for reprocessing after an aborted transaction.
    pub async fn rewind_to_committed(&self) -> Result<()> {
        let committed = self.inner.committed().await?;
        for tp in self.assignment() {
            let offset = self.inner.initial_position(&tp, &committed).await?;
            self.seek(&tp, offset)?;
        }
        Ok(())
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

    /// Records between the position and the end of each assigned partition.
    pub async fn lag(&self) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut out = BTreeMap::new();
        for tp in self.assignment() {
            let end = self.inner.list_offset(&tp, -1).await?;
            if let Ok(position) = self.position(&tp) {
                out.insert(tp, (end - position).max(0));
            }
        }
        Ok(out)
    }

    /// Commits (with auto-commit on), leaves the group at once so its
    /// partitions move without waiting for the session timeout, and stops.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let committed =
            if self.inner.config.enable_auto_commit && self.inner.config.group_id.is_some() {
                self.commit().await
            } else {
                Ok(())
            };
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
        let member = self
            .inner
            .state
            .lock()
            .expect("consumer state")
            .member
            .take();
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

impl Inner {
    async fn committed(&self) -> Result<HashMap<TopicPartition, i64>> {
        let Some(group) = self.config.group_id.clone() else {
            return Ok(HashMap::new());
        };
        let r = self
            .cluster
            .call(3, |mut c| {
                let group_id = group.clone();
                async move { c.fetch_offsets(pb::FetchOffsetsRequest { group_id }).await }
            })
            .await?;
        Ok(r.offsets
            .into_iter()
            .map(|o| (TopicPartition::new(o.topic, o.partition), o.offset))
            .collect())
    }

    /// One ListOffsets answer: -2 earliest, -1 latest, else a timestamp.
    async fn list_offset(&self, tp: &TopicPartition, timestamp: i64) -> Result<i64> {
        let request = pb::ListOffsetsRequest {
            partitions: vec![pb::ListOffsetsPartition {
                topic: tp.topic.clone(),
                partition: tp.partition,
                timestamp,
            }],
            isolation_level: isolation(self.config.isolation_level) as i32,
        };
        let r = self
            .cluster
            .call(3, |mut c| {
                let r = request.clone();
                async move { c.list_offsets(r).await }
            })
            .await?;
        let p = r
            .partitions
            .into_iter()
            .next()
            .ok_or_else(|| Error::Config("empty list offsets answer".into()))?;
        if p.error != ErrorCode::None as i32 {
            let code = ErrorCode::try_from(p.error).unwrap_or(ErrorCode::Internal);
            return Err(match code {
                ErrorCode::UnknownTopic => Error::UnknownTopic(tp.topic.clone()),
                _ => Error::Rejected {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    code,
                    message: p.message,
                },
            });
        }
        Ok(p.offset)
    }

    /// The starting position of a partition: committed, else the reset
    /// policy.
    async fn initial_position(
        &self,
        tp: &TopicPartition,
        committed: &HashMap<TopicPartition, i64>,
    ) -> Result<i64> {
        if let Some(&o) = committed.get(tp) {
            return Ok(o);
        }
        match self.config.auto_offset_reset {
            AutoOffsetReset::Earliest => self.list_offset(tp, -2).await,
            AutoOffsetReset::Latest => self.list_offset(tp, -1).await,
            AutoOffsetReset::None => Err(Error::NoOffset(tp.clone())),
        }
    }

    async fn add_partitions(&self, added: &[TopicPartition]) -> Result<()> {
        let committed = self.committed().await?;
        for tp in added {
            let position = self.initial_position(tp, &committed).await?;
            let mut state = self.state.lock().expect("consumer state");
            state.partitions.insert(
                tp.clone(),
                PartitionState {
                    position: Some(position),
                    fetch_offset: position,
                    ..Default::default()
                },
            );
        }
        Ok(())
    }

    async fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        epoch: i32,
        owned: Vec<TopicPartition>,
    ) -> Result<pb::GroupHeartbeatResponse> {
        let request = pb::GroupHeartbeatRequest {
            group_id: group.to_string(),
            member_id: member_id.to_string(),
            member_epoch: epoch,
            client_id: self.config.client_id.clone(),
            subscribed_topics: self.subscription.clone(),
            owned: owned
                .into_iter()
                .map(|tp| pb::TopicPartitionRef {
                    topic: tp.topic,
                    partition: tp.partition,
                })
                .collect(),
            session_timeout_ms: self.config.session_timeout.as_millis() as i32,
        };
        self.cluster
            .call(2, |mut c| {
                let r = request.clone();
                async move { c.group_heartbeat(r).await }
            })
            .await
    }
}

fn isolation(level: IsolationLevel) -> pb::IsolationLevel {
    match level {
        IsolationLevel::ReadUncommitted => pb::IsolationLevel::ReadUncommitted,
        IsolationLevel::ReadCommitted => pb::IsolationLevel::ReadCommitted,
    }
}

/// Keeps the membership alive and picks up new assignments.
async fn run_heartbeats(inner: Arc<Inner>) {
    let group = inner
        .config
        .group_id
        .clone()
        .expect("subscribe needs a group");
    let mut interval = Duration::from_millis(500);
    loop {
        let (member, owned) = {
            let state = inner.state.lock().expect("consumer state");
            (
                state.member.clone(),
                state.partitions.keys().cloned().collect::<Vec<_>>(),
            )
        };
        let (id, epoch) = member.map_or((String::new(), 0), |m| (m.id, m.epoch));
        match inner.heartbeat(&group, &id, epoch, owned).await {
            Ok(r) if r.error == ErrorCode::None as i32 => {
                interval = Duration::from_millis(r.heartbeat_interval_ms.max(10).into());
                let target: BTreeSet<TopicPartition> = r
                    .assigned
                    .iter()
                    .map(|p| TopicPartition::new(p.topic.clone(), p.partition))
                    .collect();
                let mut state = inner.state.lock().expect("consumer state");
                state.member = Some(Member {
                    id: r.member_id,
                    epoch: r.member_epoch,
                });
                let owned: BTreeSet<_> = state.partitions.keys().cloned().collect();
                if target != owned {
                    state.target = Some(target);
                    drop(state);
                    inner.data.notify_one();
                }
            }
            Ok(r) => {
                // Unknown member or fenced epoch: drop everything and rejoin.
                tracing::info!(group = %group, reason = %r.message, "rejoining the group");
                let mut state = inner.state.lock().expect("consumer state");
                state.member = None;
                state.partitions.clear();
                state.buffered_bytes = 0;
                state.target = None;
                interval = Duration::from_millis(10);
            }
            Err(e) => {
                tracing::warn!(group = %group, error = %e, "group heartbeat failed");
            }
        }
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = inner.heartbeat_wake.notified() => {}
        }
    }
}

/// Prefetches records of assigned partitions, bounded in bytes.
async fn run_fetcher(inner: Arc<Inner>) {
    loop {
        let wake = inner.fetch_wake.notified();
        let wanted: Vec<(TopicPartition, i64, u64)> = {
            let mut state = inner.state.lock().expect("consumer state");
            if state.buffered_bytes >= inner.config.max_prefetch_bytes {
                Vec::new()
            } else {
                let per_partition_cap = inner.config.max_partition_fetch_bytes.max(1);
                state
                    .partitions
                    .iter_mut()
                    .filter(|(_, p)| {
                        !p.in_flight && p.position.is_some() && p.buffered_bytes < per_partition_cap
                    })
                    .map(|(tp, p)| {
                        p.in_flight = true;
                        (tp.clone(), p.fetch_offset, p.generation)
                    })
                    .collect()
            }
        };
        if wanted.is_empty() {
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        }
        let budget = {
            let state = inner.state.lock().expect("consumer state");
            inner
                .config
                .max_prefetch_bytes
                .saturating_sub(state.buffered_bytes)
                .clamp(1, inner.config.fetch_max_bytes)
        };
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
            .call(2, |mut c| {
                let r = request.clone();
                async move { c.fetch(r).await }
            })
            .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "fetch failed");
                {
                    let mut state = inner.state.lock().expect("consumer state");
                    for (tp, _, _) in &wanted {
                        if let Some(p) = state.partitions.get_mut(tp) {
                            p.in_flight = false;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut any = false;
        let mut resets = Vec::new();
        for (fetched, (tp, offset, generation)) in response.partitions.into_iter().zip(wanted) {
            let records = if fetched.error == ErrorCode::None as i32 {
                decode_records(&tp, &fetched.records, offset, &fetched.aborted)
            } else {
                Ok(Vec::new())
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
            if fetched.error != ErrorCode::None as i32 {
                tracing::warn!(%tp, message = %fetched.message, "fetch error");
                continue;
            }
            p.high_watermark = Some(fetched.high_watermark);
            match records {
                Ok(records) => {
                    if let Some(last) = records.last() {
                        p.fetch_offset = last.offset + 1;
                    }
                    for r in records {
                        let size = record_size(&r);
                        p.buffered_bytes += size;
                        s.buffered_bytes += size;
                        p.buffer.push_back(r);
                        any = true;
                    }
                }
                Err(e) => s.error = Some(e),
            }
        }
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
}

/// The records of fetched batches at or after `from`, without control
/// batches and without batches of `aborted` transactions.
fn decode_records(
    tp: &TopicPartition,
    bytes: &Bytes,
    from: i64,
    aborted: &[pb::AbortedTransactionInfo],
) -> Result<Vec<ConsumerRecord>> {
    let mut out = Vec::new();
    for item in streamhouse_core::batches(bytes) {
        let (header, raw) = item?;
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
        for (offset, timestamp, r) in batch.iter() {
            if offset >= from {
                out.push(ConsumerRecord {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset,
                    timestamp,
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r.headers.clone(),
                });
            }
        }
    }
    Ok(out)
}
