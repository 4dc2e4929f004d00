//! StreamHouse metadata: topics, the log commit that assigns offsets,
//! segments, consumer group offsets, the agent registry, ACLs and SCRAM
//! credentials, on SQLite (embedded default) or PostgreSQL (production).
//!
//! The store is split by concern ([`TopicStore`], [`LogStore`],
//! [`OffsetStore`], [`AgentStore`], [`AclStore`], [`ScramStore`], …);
//! [`MetadataStore`] combines them so that
//! one `Arc<dyn MetadataStore>` serves every component:
//!
//! ```no_run
//! use std::{collections::HashMap, sync::Arc};
//! use streamhouse_metadata::{MetadataStore, SqliteMetadataStore, TopicConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let metadata: Arc<dyn MetadataStore> = Arc::new(SqliteMetadataStore::new("metadata.db").await?);
//! metadata
//!     .create_topic(TopicConfig {
//!         name: "orders".to_string(),
//!         partition_count: 3,
//!         retention_ms: Some(86_400_000),
//!         config: HashMap::new(),
//!     })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Offsets are assigned only by [`LogStore::commit_object`]: in one
//! transaction, every partition chunk of a flushed object takes
//! `base = next_offset` and advances `next_offset`, so any number of writers
//! may commit to the same partitions concurrently and offsets stay dense.

use std::sync::Arc;

use async_trait::async_trait;
use streamhouse_core::scram::{Credential, Mechanism};

mod acl;
pub mod assignment;
mod classic;
mod error;
mod postgres;
mod scram;
mod sql;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

pub use acl::*;
pub use classic::*;
pub use error::{Error, Result};
pub use postgres::PostgresMetadataStore;
pub use scram::*;
pub use sqlite::SqliteMetadataStore;
pub use types::*;

/// Topics: create, look up, list, delete.
#[async_trait]
pub trait TopicStore: Send + Sync {
    /// Creates a topic with `partition_count` empty partitions.
    /// Fails with [`Error::TopicAlreadyExists`] if the name is taken and with
    /// a validation error for a bad name, count, retention or config key.
    async fn create_topic(&self, config: TopicConfig) -> Result<Topic>;
    /// The topic with this name, if it exists.
    async fn get_topic(&self, name: &str) -> Result<Option<Topic>>;
    /// Every topic, ordered by name.
    async fn list_topics(&self) -> Result<Vec<Topic>>;
    /// Adds partitions, changes retention or config keys (validated as in
    /// `create_topic`). Partitions can only be added.
    async fn alter_topic(&self, name: &str, alter: TopicAlter) -> Result<Topic>;
    /// Deletes the topic, its partitions, segment rows and group offsets.
    /// Its objects are left for the object GC.
    async fn delete_topic(&self, name: &str) -> Result<()>;
}

/// The log: the commit that assigns offsets, partition offsets, segments.
#[async_trait]
pub trait LogStore: Send + Sync {
    /// Commits one flushed object in ONE transaction: records the object,
    /// and for every chunk takes `base = next_offset`, advances `next_offset`
    /// by the offset span of its accepted batches and inserts segment rows.
    ///
    /// Batches of idempotent producers are checked in the same transaction
    /// (each producer's row locked against a concurrent epoch bump or
    /// transaction end): a batch already committed (its sequences at or
    /// before the last one committed in its epoch) is not committed again,
    /// and is answered with its original offset while it is one of the
    /// last [`PRODUCER_BATCHES_REMEMBERED`], or as
    /// [`BatchRejected::AlreadyCommitted`] after; a sequence gap, an old
    /// epoch or an unknown producer rejects the batch.
    ///
    /// The transaction is atomic: all of it is applied or none of it. A
    /// chunk whose partition no longer exists (its topic was deleted) is
    /// skipped and reported as rejected; the other chunks are applied.
    ///
    /// An error means nothing was committed, except
    /// [`Error::CommitOutcomeUnknown`] (the connection failed while the
    /// commit was being sent): then [`LogStore::settle_object`] tells.
    async fn commit_object(&self, commit: &ObjectCommit) -> Result<CommitOutcome>;
    /// Whether the commit of `object_key` happened, after waiting for a
    /// transaction still committing it to end: `Some` with the object's
    /// segment rows (none when every batch was a duplicate or rejected) if
    /// it is committed, `None` if it is not (and no commit in doubt can
    /// commit it any more).
    async fn settle_object(&self, object_key: &str) -> Result<Option<Vec<Segment>>>;
    /// Log start and next offset of one partition.
    async fn partition_state(&self, topic_id: TopicId, partition: u32) -> Result<PartitionState>;
    /// The first segment (in offset order) holding a record at or after
    /// `timestamp` by its maximum timestamp, if any.
    async fn segment_for_timestamp(
        &self,
        topic_id: TopicId,
        partition: u32,
        timestamp: i64,
    ) -> Result<Option<Segment>>;
    /// Up to `limit` segments of a partition in offset order, starting with
    /// the one that holds `from_offset` (or the first one after it).
    async fn segments(
        &self,
        topic_id: TopicId,
        partition: u32,
        from_offset: i64,
        limit: u32,
    ) -> Result<Vec<Segment>>;
}

/// Producer ids and epochs for idempotent producers.
#[async_trait]
pub trait ProducerStore: Send + Sync {
    /// With `None`, issues a new producer id at epoch 0. With the producer's
    /// current identity, bumps its epoch (fencing any other instance using
    /// the old one) and lets it restart its sequences at 0. The same bump
    /// sent again (its answer was lost: the identity is the one the last
    /// bump started from, and that bump made the current epoch) returns the
    /// current identity unchanged (KIP-360); any other identity whose epoch
    /// is no longer current fails with [`Error::ProducerFenced`].
    async fn init_producer_id(&self, current: Option<ProducerIdentity>)
    -> Result<ProducerIdentity>;
}

/// Transactions of producers with a transactional id.
#[async_trait]
pub trait TransactionStore: Send + Sync {
    /// Finds or creates the producer of `transactional_id` and bumps its
    /// epoch, fencing any older instance. Call after ending (aborting) the
    /// transaction an older instance left open.
    async fn init_transactional_producer(
        &self,
        transactional_id: &str,
        transaction_timeout_ms: i64,
    ) -> Result<ProducerIdentity>;
    /// The producer id of a transactional id, if it was ever initialized.
    async fn transactional_producer_id(&self, transactional_id: &str) -> Result<Option<i64>>;
    /// The producer's open transaction, if any.
    async fn open_transaction(&self, producer_id: i64) -> Result<Option<OpenTransaction>>;
    /// Producers whose open transaction is older than its timeout (by the
    /// database clock).
    async fn expired_transactions(&self) -> Result<Vec<i64>>;
    /// Adds offset commits to the producer's transaction (opening it if
    /// needed); they are applied when it commits. Fenced by the producer
    /// epoch and, when `member` is given, as
    /// [`GroupStore::commit_group_offsets`] fences a member.
    async fn add_transaction_offsets(
        &self,
        producer: ProducerIdentity,
        group: &str,
        member: Option<(&str, i32)>,
        offsets: &[OffsetCommit],
    ) -> Result<()>;
    /// Ends a transaction in one metadata transaction: commits the markers
    /// object, applies (commit) or drops (abort, recording the aborted
    /// ranges) its offsets, closes it and bumps the producer epoch, so a
    /// delayed end message can never end a later transaction. Retrying an
    /// end that succeeded returns the same identity. Returns the producer's
    /// new identity.
    async fn end_transaction(&self, end: &EndTransaction) -> Result<ProducerIdentity>;
    /// Opens a transaction for `producer` if none is open (Kafka's
    /// AddPartitionsToTxn and AddOffsetsToTxn), so that its timeout runs
    /// and an end finds it. Fails with [`Error::ProducerFenced`] for an
    /// epoch that is not current and [`Error::InvalidTransactionState`]
    /// for a producer without a transactional id.
    async fn begin_transaction(&self, producer: ProducerIdentity) -> Result<()>;
    /// Transactional ids with their producer and transaction state: those
    /// named in `ids`, or all of them, ordered by transactional id.
    async fn transactions(&self, ids: Option<&[String]>) -> Result<Vec<TransactionListing>>;
    /// The producers whose batches a partition remembers, with their last
    /// sequence and the first offset of their open transaction there.
    async fn partition_producers(
        &self,
        topic_id: TopicId,
        partition: u32,
    ) -> Result<Vec<PartitionProducer>>;
    /// Aborted transactions of a partition overlapping `from..to`.
    async fn aborted_transactions(
        &self,
        topic_id: TopicId,
        partition: u32,
        from: i64,
        to: i64,
    ) -> Result<Vec<AbortedTransaction>>;
}

/// State of the background jobs: leases, retention, segment replacement
/// (compaction) and the object references the object GC checks.
#[async_trait]
pub trait MaintenanceStore: Send + Sync {
    /// Takes or renews `job`'s lease for `holder` for `ttl_ms` (by the
    /// database clock). True when `holder` holds it now; an expired lease
    /// can be taken by anyone.
    async fn try_lease(&self, job: &str, holder: &str, ttl_ms: i64) -> Result<bool>;
    /// Who holds `job`'s lease, if it has not expired.
    async fn lease_holder(&self, job: &str) -> Result<Option<String>>;
    /// Deletes a partition's oldest segments while all their records are
    /// older than `min_timestamp`, then while its bytes exceed `max_bytes`,
    /// never at or past the last stable offset, and advances the log start
    /// offset. Returns the segments deleted and the new log start.
    async fn apply_retention(
        &self,
        topic_id: TopicId,
        partition: u32,
        min_timestamp: Option<i64>,
        max_bytes: Option<i64>,
    ) -> Result<(u64, i64)>;
    /// Advances a partition's log start offset to `offset` (`None`: to the
    /// last stable offset, which is the high watermark when no transaction
    /// is open), as Kafka's DeleteRecords does: drops the segments and
    /// aborted ranges wholly below it. The log start never moves back (an
    /// offset at or below it changes nothing) and never past the last
    /// stable offset ([`Error::LogStartOutOfRange`]). Returns the log start
    /// offset after the call.
    async fn advance_log_start(
        &self,
        topic_id: TopicId,
        partition: u32,
        offset: Option<i64>,
    ) -> Result<i64>;
    /// Replaces consecutive segments of one partition by one segment in a
    /// new object, atomically. `Ok(false)` (nothing changed) when the old
    /// segments are no longer exactly there.
    async fn replace_segments(&self, old: &[Segment], new: &Segment) -> Result<bool>;
    /// The keys among `keys` that a segment references.
    async fn referenced_objects(&self, keys: &[String]) -> Result<Vec<String>>;
    /// Claims objects for deletion, in one transaction, and returns the
    /// keys claimed: those no segment references. A key no commit recorded
    /// (`(key, size)` as listed in the object store) gets a row that makes
    /// any later commit of that key fail on its unique key, so an object is
    /// deleted only once no commit can ever reference it; a key a commit is
    /// recording right now is not claimed. Claims are idempotent.
    async fn claim_objects(&self, objects: &[(String, u64)]) -> Result<Vec<String>>;
    /// Forgets deleted objects: drops their rows unless a segment
    /// references them, keeping the claims of keys no commit recorded.
    async fn forget_objects(&self, keys: &[String]) -> Result<()>;
    /// Segment rows and bytes of each partition of a topic that has any.
    async fn partition_usage(&self, topic_id: TopicId) -> Result<Vec<PartitionUsage>>;
}

/// Committed consumer group offsets.
#[async_trait]
pub trait OffsetStore: Send + Sync {
    /// Stores the group's next offset to read in a partition.
    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: i64,
        metadata: Option<&str>,
    ) -> Result<()>;
    /// The group's committed offset in one partition, if any.
    async fn fetch_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<CommittedOffset>>;
    /// Every committed offset of a group, ordered by topic and partition.
    async fn fetch_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>>;
}

/// Consumer groups: membership and assignment (the coordinator's state)
/// and member-fenced offset commits.
#[async_trait]
pub trait GroupStore: Send + Sync {
    /// Handles a member's heartbeat in one transaction: joins, leaves or
    /// refreshes it, removes members whose session expired, recomputes the
    /// group's target assignment when membership, subscriptions or the
    /// partition counts of the subscribed topics changed (partitions added,
    /// a subscribed topic created or deleted), and answers with the
    /// partitions the member may own now (a partition is handed over only
    /// after its previous owner released it). A heartbeat with an epoch
    /// other than the member's current one fails with
    /// [`Error::FencedMemberEpoch`] and changes nothing.
    async fn group_heartbeat(&self, heartbeat: GroupHeartbeat) -> Result<GroupAssignment>;
    /// Every group with its live member count.
    async fn list_groups(&self) -> Result<Vec<(String, usize)>>;
    /// A group's live members and committed offsets.
    async fn describe_group(&self, group: &str) -> Result<GroupDescription>;
    /// Deletes a group with no live members, with its offsets, in one
    /// transaction ([`Error::GroupNotEmpty`] when a member is live,
    /// [`Error::GroupNotFound`] when there is no such group).
    async fn delete_group(&self, group: &str) -> Result<()>;
    /// Commits offsets for a group. With `member` (id, epoch) the member
    /// must be current ([`Error::UnknownMember`], [`Error::FencedMemberEpoch`]
    /// otherwise) and own every committed partition
    /// ([`Error::NotPartitionOwner`] otherwise); without, the group must have
    /// no live members (manual assignment, or an administrator's offset
    /// reset).
    async fn commit_group_offsets(
        &self,
        group: &str,
        member: Option<(&str, i32)>,
        offsets: &[OffsetCommit],
    ) -> Result<()>;
}

/// Kafka classic consumer groups (JoinGroup, SyncGroup, Heartbeat,
/// LeaveGroup): the whole state of a group in the metadata store, each
/// operation one transaction under the group's lock, sessions and join
/// deadlines judged by the database clock, so any agent coordinates any
/// group. Every operation first removes the members whose session timed
/// out (starting a rebalance for the others).
#[async_trait]
pub trait ClassicGroupStore: Send + Sync {
    /// A JoinGroup. Answered [`JoinProgress::Waiting`] until the join phase
    /// ends: the caller sends the same join again (polling) until
    /// [`JoinProgress::Joined`] or its rebalance timeout. A new member, a
    /// known one with changed protocols, or the leader of a stable group
    /// starts a join phase, which ends once every member rejoined or the
    /// longest rebalance timeout passed (members that did not rejoin are
    /// removed). Errors: [`Error::InconsistentGroupProtocol`] (protocols
    /// shared with no member, or the group id is a server-side consumer
    /// group with live members), [`Error::FencedInstanceId`].
    async fn classic_join(&self, join: ClassicJoin) -> Result<JoinProgress>;
    /// A SyncGroup: the leader's stores every member's assignment and makes
    /// the group stable; the others get [`SyncProgress::Waiting`] until
    /// then. Errors: [`Error::UnknownMember`], [`Error::IllegalGeneration`],
    /// [`Error::RebalanceInProgress`], [`Error::FencedInstanceId`].
    async fn classic_sync(&self, sync: ClassicSync) -> Result<SyncProgress>;
    /// A Heartbeat: refreshes the member's session.
    /// [`Error::RebalanceInProgress`] while a join phase runs (the member
    /// must rejoin), [`Error::IllegalGeneration`], [`Error::UnknownMember`],
    /// [`Error::FencedInstanceId`].
    async fn classic_heartbeat(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<()>;
    /// A LeaveGroup of members given by member id and, for static members,
    /// instance id: one answer per member. The members left rebalance.
    async fn classic_leave(
        &self,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<()>>>;
    /// The classic group of this id, if there is one.
    async fn describe_classic_group(&self, group: &str) -> Result<Option<ClassicGroupDescription>>;
    /// Every group (classic, server-side, or with only committed offsets)
    /// with its protocol type, state and type, ordered by id.
    async fn list_group_states(&self) -> Result<Vec<GroupListing>>;
    /// Deletes a group's committed offsets of some partitions (Kafka's
    /// OffsetDelete): one answer per partition,
    /// [`Error::GroupSubscribedToTopic`] for a topic a live member
    /// consumes. [`Error::GroupNotFound`] when the group does not exist.
    async fn delete_group_offsets(
        &self,
        group: &str,
        partitions: &[(String, u32)],
    ) -> Result<Vec<Result<()>>>;
}

/// The agent registry: agents register, heartbeat and deregister; clients
/// discover them.
#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Registers (or re-registers) an agent with a fresh heartbeat.
    async fn register_agent(&self, agent: AgentRegistration) -> Result<()>;
    /// Records a heartbeat; [`Error::AgentNotFound`] if not registered.
    async fn heartbeat_agent(&self, agent_id: &str) -> Result<()>;
    /// Removes an agent; removing an unknown agent is not an error.
    async fn deregister_agent(&self, agent_id: &str) -> Result<()>;
    /// Registered agents (of one group, or all), with their heartbeat age by
    /// the store's clock. Use [`AgentInfo::is_live`] to drop stale ones.
    async fn list_agents(&self, group: Option<&str>) -> Result<Vec<AgentInfo>>;
}

/// Access control lists in Kafka's model (see [`AclBinding`]).
#[async_trait]
pub trait AclStore: Send + Sync {
    /// Validates every binding ([`AclBinding::validate`]; nothing is stored
    /// if one is invalid), then stores them in one transaction. A binding
    /// already stored is kept as it is (creating it again is not an error).
    async fn create_acls(&self, acls: &[AclBinding]) -> Result<()>;
    /// Deletes every binding `filter` matches ([`AclFilter::matches`]) in
    /// one transaction and returns them, in the order of
    /// [`acls`](Self::acls). A binding a concurrent call deleted first is
    /// returned by that call only.
    async fn delete_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>>;
    /// Every binding, in [`AclBinding`]'s order (resource type, resource
    /// name by bytes, pattern type, principal, host, operation,
    /// permission), the same on every backend.
    async fn acls(&self) -> Result<Vec<AclBinding>>;
}

/// SCRAM users: one stored credential per user and mechanism (the salted,
/// derived keys of RFC 5802; never a password).
#[async_trait]
pub trait ScramStore: Send + Sync {
    /// Stores `credential` as `user`'s for its mechanism, replacing the one
    /// stored. Validates the user name ([`validate_user_name`]) and the
    /// credential ([`Credential::validate`], failing with [`Error::Invalid`]).
    async fn upsert_scram_credential(&self, user: &str, credential: &Credential) -> Result<()>;
    /// Deletes `user`'s credential for `mechanism`; false if there was none.
    async fn delete_scram_credential(&self, user: &str, mechanism: Mechanism) -> Result<bool>;
    /// Deletes every credential of `user`; false if there was none.
    async fn delete_user(&self, user: &str) -> Result<bool>;
    /// `user`'s credential for `mechanism`, if any.
    async fn scram_credential(
        &self,
        user: &str,
        mechanism: Mechanism,
    ) -> Result<Option<Credential>>;
    /// Every credential, ordered by user (by bytes) then mechanism (by
    /// Kafka type), the same on every backend.
    async fn scram_credentials(&self) -> Result<Vec<UserCredential>>;
}

/// Every metadata concern in one object-safe trait.
pub trait MetadataStore:
    TopicStore
    + LogStore
    + ProducerStore
    + TransactionStore
    + OffsetStore
    + GroupStore
    + ClassicGroupStore
    + MaintenanceStore
    + AgentStore
    + AclStore
    + ScramStore
{
}

impl<
    T: TopicStore
        + LogStore
        + ProducerStore
        + TransactionStore
        + OffsetStore
        + GroupStore
        + ClassicGroupStore
        + MaintenanceStore
        + AgentStore
        + AclStore
        + ScramStore,
> MetadataStore for T
{
}

/// Opens the store a URL names: `sqlite://PATH` (created if missing, with
/// durable commits) or `postgres://…` / `postgresql://…`. Applies pending
/// migrations.
pub async fn open(url: &str) -> Result<Arc<dyn MetadataStore>> {
    open_with(url, true).await
}

/// [`open`], except that a SQLite store commits without fsync (see
/// `SqliteMetadataStore::new_without_fsync`); PostgreSQL is unaffected.
pub async fn open_without_fsync(url: &str) -> Result<Arc<dyn MetadataStore>> {
    open_with(url, false).await
}

async fn open_with(url: &str, fsync: bool) -> Result<Arc<dyn MetadataStore>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(if fsync {
            SqliteMetadataStore::new(url).await?
        } else {
            SqliteMetadataStore::new_without_fsync(url).await?
        }))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresMetadataStore::new(url).await?))
    } else {
        Err(Error::InvalidUrl {
            url: streamhouse_core::names::redact_url(url),
            reason: "expected sqlite://PATH or postgres://…".into(),
        })
    }
}

pub(crate) fn validate_group_id(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > 255 {
        return Err(Error::InvalidArgument {
            field: "group id",
            reason: format!("{group:?} must be 1 to 255 bytes"),
        });
    }
    Ok(())
}

pub(crate) fn validate_offsets(offsets: &[OffsetCommit]) -> Result<()> {
    match offsets.iter().find(|o| o.offset < 0) {
        Some(o) => Err(Error::InvalidArgument {
            field: "offset",
            reason: format!("{} for {}/{} is negative", o.offset, o.topic, o.partition),
        }),
        None => Ok(()),
    }
}

pub(crate) fn migrator(files: &[(&'static str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    let migrations = files
        .iter()
        .map(|(name, sql)| {
            let (version, description) = name.split_once('_').expect("NNNN_name.sql");
            sqlx::migrate::Migration::new(
                version.parse().expect("numbered migration"),
                description.trim_end_matches(".sql").to_string().into(),
                sqlx::migrate::MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    sqlx::migrate::Migrator::with_migrations(migrations)
}
