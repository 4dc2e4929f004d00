//! Test helpers (feature `testing`): real backends for integration tests.
//!
//! Integration tests that need an external service read its address from
//! the environment. Without it they skip with a message, except under
//! `CI=true`, where a missing service fails the test: CI must run them all.

use std::sync::atomic::{AtomicU32, Ordering};

/// Reads an environment variable naming a test service. `None` (skip) when
/// unset outside CI; panics when unset under `CI=true`.
pub fn service_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{var} is not set and CI=true: run the tests through scripts/test")
        }
        _ => {
            eprintln!("skipping: {var} is not set (scripts/test sets it)");
            None
        }
    }
}

/// A URL for a fresh, empty PostgreSQL schema in the database named by
/// `STREAMHOUSE_TEST_POSTGRES_URL`, so tests never see each other's data.
/// `None` when the variable is unset outside CI.
pub async fn postgres_url() -> Option<String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = service_env("STREAMHOUSE_TEST_POSTGRES_URL")?;
    let schema = format!(
        "sh_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_micros()
    );
    let pool = sqlx::PgPool::connect(&base)
        .await
        .expect("connecting to STREAMHOUSE_TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .expect("creating a test schema");
    pool.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

/// Wraps a metadata store; its object commits can be made to fail (as a
/// lost database connection would) or to stall before they start (as a
/// hung connection would), everything else passes through.
pub struct FaultyMetadata {
    inner: std::sync::Arc<dyn crate::MetadataStore>,
    fail_commits: std::sync::atomic::AtomicBool,
    fail_after_commits: std::sync::atomic::AtomicBool,
    fail_settles: std::sync::atomic::AtomicBool,
    stall_commits_ms: std::sync::atomic::AtomicU64,
}

impl FaultyMetadata {
    pub fn new(inner: std::sync::Arc<dyn crate::MetadataStore>) -> std::sync::Arc<Self> {
        std::sync::Arc::new(FaultyMetadata {
            inner,
            fail_commits: std::sync::atomic::AtomicBool::new(false),
            fail_after_commits: std::sync::atomic::AtomicBool::new(false),
            fail_settles: std::sync::atomic::AtomicBool::new(false),
            stall_commits_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Makes every `commit_object` wait `stall` before it starts (zero: no
    /// wait).
    pub fn stall_commits(&self, stall: std::time::Duration) {
        self.stall_commits_ms
            .store(stall.as_millis() as u64, Ordering::SeqCst);
    }

    /// Makes every `commit_object` fail (`true`) or pass (`false`). It
    /// fails before committing, as a connection lost before `COMMIT`.
    pub fn fail_commits(&self, on: bool) {
        self.fail_commits.store(on, Ordering::SeqCst);
    }

    /// Makes every `commit_object` commit and then fail with
    /// [`crate::Error::CommitOutcomeUnknown`] (`true`), as a connection
    /// lost while `COMMIT` was being answered, or pass (`false`).
    pub fn fail_after_commits(&self, on: bool) {
        self.fail_after_commits.store(on, Ordering::SeqCst);
    }

    /// Makes every `settle_object` fail (`true`) or pass (`false`).
    pub fn fail_settles(&self, on: bool) {
        self.fail_settles.store(on, Ordering::SeqCst);
    }
}

/// Implements a trait for [`FaultyMetadata`] by delegating to `inner`.
macro_rules! delegate {
    ($trait:path { $($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)* }) => {
        #[async_trait::async_trait]
        impl $trait for FaultyMetadata {
            $(
                async fn $name(&self, $($arg: $ty),*) -> crate::Result<$ret> {
                    self.inner.$name($($arg),*).await
                }
            )*
        }
    };
}

#[async_trait::async_trait]
impl crate::LogStore for FaultyMetadata {
    async fn commit_object(
        &self,
        commit: &crate::ObjectCommit,
    ) -> crate::Result<crate::CommitOutcome> {
        let stall = self.stall_commits_ms.load(Ordering::SeqCst);
        if stall > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(stall)).await;
        }
        if self.fail_commits.load(Ordering::SeqCst) {
            return Err(crate::Error::Database {
                op: "committing object",
                source: sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected commit failure",
                )),
            });
        }
        let outcome = self.inner.commit_object(commit).await?;
        if self.fail_after_commits.load(Ordering::SeqCst) {
            return Err(crate::Error::CommitOutcomeUnknown {
                op: "committing object",
                source: sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected failure after the commit",
                )),
            });
        }
        Ok(outcome)
    }
    async fn settle_object(&self, object_key: &str) -> crate::Result<Option<Vec<crate::Segment>>> {
        if self.fail_settles.load(Ordering::SeqCst) {
            return Err(crate::Error::Database {
                op: "settling object commit",
                source: sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected settle failure",
                )),
            });
        }
        self.inner.settle_object(object_key).await
    }
    async fn partition_state(
        &self,
        topic_id: crate::TopicId,
        partition: u32,
    ) -> crate::Result<crate::PartitionState> {
        self.inner.partition_state(topic_id, partition).await
    }
    async fn segment_for_timestamp(
        &self,
        topic_id: crate::TopicId,
        partition: u32,
        timestamp: i64,
    ) -> crate::Result<Option<crate::Segment>> {
        self.inner
            .segment_for_timestamp(topic_id, partition, timestamp)
            .await
    }
    async fn segments(
        &self,
        topic_id: crate::TopicId,
        partition: u32,
        from_offset: i64,
        limit: u32,
    ) -> crate::Result<Vec<crate::Segment>> {
        self.inner
            .segments(topic_id, partition, from_offset, limit)
            .await
    }
}

delegate!(crate::TopicStore {
        create_topic(config: crate::TopicConfig) -> crate::Topic;
        alter_topic(name: &str, alter: crate::TopicAlter) -> crate::Topic;
        get_topic(name: &str) -> Option<crate::Topic>;
        list_topics() -> Vec<crate::Topic>;
        delete_topic(name: &str) -> ();
});

delegate!(crate::ProducerStore {
        init_producer_id(current: Option<crate::ProducerIdentity>) -> crate::ProducerIdentity;
});

delegate!(crate::TransactionStore {
    init_transactional_producer(transactional_id: &str, transaction_timeout_ms: i64) -> crate::ProducerIdentity;
    transactional_producer_id(transactional_id: &str) -> Option<i64>;
    open_transaction(producer_id: i64) -> Option<crate::OpenTransaction>;
    expired_transactions() -> Vec<i64>;
    add_transaction_offsets(producer: crate::ProducerIdentity, group: &str, member: Option<(&str, i32)>, offsets: &[crate::OffsetCommit]) -> ();
    end_transaction(end: &crate::EndTransaction) -> crate::ProducerIdentity;
    aborted_transactions(topic_id: crate::TopicId, partition: u32, from: i64, to: i64) -> Vec<crate::AbortedTransaction>;
    begin_transaction(producer: crate::ProducerIdentity) -> ();
    transactions(ids: Option<&[String]>) -> Vec<crate::TransactionListing>;
    partition_producers(topic_id: crate::TopicId, partition: u32) -> Vec<crate::PartitionProducer>;
});

delegate!(crate::MaintenanceStore {
    try_lease(job: &str, holder: &str, ttl_ms: i64) -> bool;
    lease_holder(job: &str) -> Option<String>;
    apply_retention(topic_id: crate::TopicId, partition: u32, min_timestamp: Option<i64>, max_bytes: Option<i64>) -> (u64, i64);
    advance_log_start(topic_id: crate::TopicId, partition: u32, offset: Option<i64>) -> i64;
    replace_segments(old: &[crate::Segment], new: &crate::Segment) -> bool;
    referenced_objects(keys: &[String]) -> Vec<String>;
    claim_objects(objects: &[(String, u64)]) -> Vec<String>;
    forget_objects(keys: &[String]) -> ();
    partition_usage(topic_id: crate::TopicId) -> Vec<crate::PartitionUsage>;
});

delegate!(crate::OffsetStore {
        commit_offset(group: &str, topic: &str, partition: u32, offset: i64, metadata: Option<&str>) -> ();
        fetch_offset(group: &str, topic: &str, partition: u32) -> Option<crate::CommittedOffset>;
        fetch_offsets(group: &str) -> Vec<crate::CommittedOffset>;
});

delegate!(crate::GroupStore {
        group_heartbeat(heartbeat: crate::GroupHeartbeat) -> crate::GroupAssignment;
        list_groups() -> Vec<(String, usize)>;
        describe_group(group: &str) -> crate::GroupDescription;
        delete_group(group: &str) -> ();
        commit_group_offsets(group: &str, member: Option<(&str, i32)>, offsets: &[crate::OffsetCommit]) -> ();
});

delegate!(crate::ClassicGroupStore {
        classic_join(join: crate::ClassicJoin) -> crate::JoinProgress;
        classic_sync(sync: crate::ClassicSync) -> crate::SyncProgress;
        classic_heartbeat(group: &str, member_id: &str, instance_id: Option<&str>, generation: i32) -> ();
        classic_leave(group: &str, members: &[(String, Option<String>)]) -> Vec<crate::Result<()>>;
        describe_classic_group(group: &str) -> Option<crate::ClassicGroupDescription>;
        list_group_states() -> Vec<crate::GroupListing>;
        delete_group_offsets(group: &str, partitions: &[(String, u32)]) -> Vec<crate::Result<()>>;
});

delegate!(crate::AgentStore {
        register_agent(agent: crate::AgentRegistration) -> ();
        heartbeat_agent(agent_id: &str) -> ();
        deregister_agent(agent_id: &str) -> ();
        list_agents(group: Option<&str>) -> Vec<crate::AgentInfo>;
});

delegate!(crate::AclStore {
        create_acls(acls: &[crate::AclBinding]) -> ();
        delete_acls(filter: &crate::AclFilter) -> Vec<crate::AclBinding>;
        acls() -> Vec<crate::AclBinding>;
});

delegate!(crate::ScramStore {
        upsert_scram_credential(user: &str, credential: &streamhouse_core::scram::Credential) -> ();
        delete_scram_credential(user: &str, mechanism: streamhouse_core::scram::Mechanism) -> bool;
        delete_user(user: &str) -> bool;
        scram_credential(user: &str, mechanism: streamhouse_core::scram::Mechanism) -> Option<streamhouse_core::scram::Credential>;
        scram_credentials() -> Vec<crate::UserCredential>;
});
