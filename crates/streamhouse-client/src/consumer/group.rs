//! Consumer group membership: the heartbeat task, applying assignment
//! changes (with the rebalance listener), and the group metadata a
//! transaction commits offsets for.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::BoxFuture;
use streamhouse_metadata::TopicPartition;
use streamhouse_proto as pb;
use streamhouse_proto::ErrorCode;

use super::{Consumer, Inner};
use crate::error::Result;

/// Called by `poll` when the group moves partitions, and by `close` for
/// every partition still owned; an application commits what it processed
/// in `on_revoked`.
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

/// The group position a transaction commits offsets for: the consumer's
/// group and, for group members, its membership (so a fenced consumer
/// cannot commit through a transaction).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    pub group_id: String,
    pub member: Option<(String, i32)>,
}

#[derive(Clone, Debug)]
pub(super) struct Member {
    pub(super) id: String,
    pub(super) epoch: i32,
}

impl Consumer {
    /// Applies an assignment change from the coordinator: revoke (listener,
    /// auto-commit, release), then add (positions, listener).
    pub(super) async fn apply_rebalance(&self) -> Result<()> {
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
        if let Err(e) = self.revoke(&revoked).await {
            tracing::warn!(error = %e, "commit before revocation failed");
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

    /// Gives up `partitions`: the listener's `on_revoked`, the auto-commit
    /// of their positions, then their release. Returns the commit's
    /// failure (the partitions are released either way).
    pub(super) async fn revoke(&self, partitions: &[TopicPartition]) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        if let Some(l) = &self.inner.listener {
            l.on_revoked(self, partitions).await;
        }
        let committed = if self.inner.config.enable_auto_commit {
            self.commit_offsets(self.positions_of(partitions)).await
        } else {
            Ok(())
        };
        let mut state = self.inner.state.lock().expect("consumer state");
        for tp in partitions {
            if let Some(p) = state.partitions.remove(tp) {
                state.buffered_bytes -= p.buffered_bytes;
            }
        }
        committed
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
}

impl Inner {
    pub(super) async fn heartbeat(
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
            assignor: self.config.group_assignor.clone(),
        };
        // A heartbeat retried past the session timeout would come too late.
        let deadline = tokio::time::Instant::now() + self.config.session_timeout;
        self.cluster
            .call_within(Some(deadline), |mut c| {
                let r = request.clone();
                async move { c.group_heartbeat(r).await }
            })
            .await
    }
}

/// Keeps the membership alive and picks up new assignments.
pub(super) async fn run_heartbeats(inner: Arc<Inner>) {
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
