//! Topic and consumer group administration through any agent.

use std::collections::HashMap;
use std::time::Duration;

use streamhouse_metadata::TopicPartition;
use streamhouse_proto as pb;
use streamhouse_proto::ErrorCode;

use crate::backoff::RetryPolicy;
use crate::cluster::{Cluster, ClusterConfig, Source};
use crate::error::{Error, Result};
use crate::security::Security;

/// A topic as an agent describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub topic_id: i64,
    pub partition_count: u32,
    pub retention_ms: Option<i64>,
    pub config: HashMap<String, String>,
    pub created_at_ms: i64,
    /// Per partition; empty from [`Admin::list_topics`].
    pub partitions: Vec<PartitionDescription>,
}

/// Offsets and storage of one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: u32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub bytes: u64,
    pub segments: u64,
}

impl From<pb::TopicInfo> for TopicDescription {
    fn from(t: pb::TopicInfo) -> Self {
        TopicDescription {
            name: t.name,
            topic_id: t.topic_id,
            partition_count: t.partition_count,
            retention_ms: t.retention_ms,
            config: t.config,
            created_at_ms: t.created_at_ms,
            partitions: Vec::new(),
        }
    }
}

/// A live agent as the cluster lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentDescription {
    pub agent_id: String,
    pub group: String,
    pub address: String,
    pub zone: Option<String>,
    pub heartbeat_age: Duration,
    /// Client connections open on the agent, as the agent itself reported
    /// them (see [`Admin::agents_with_connections`]); `None` when it was
    /// not asked or did not answer.
    pub connections: Option<AgentConnections>,
}

/// Client connections open on an agent, by protocol. The gRPC count
/// includes the connection that asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentConnections {
    pub grpc: u64,
    pub kafka: u64,
}

/// How long [`Admin::agents_with_connections`] waits for each agent.
const CONNECTIONS_TIMEOUT: Duration = Duration::from_secs(5);

impl From<pb::AgentInfo> for AgentDescription {
    fn from(a: pb::AgentInfo) -> Self {
        let connections = match (a.grpc_connections, a.kafka_connections) {
            (Some(grpc), Some(kafka)) => Some(AgentConnections { grpc, kafka }),
            _ => None,
        };
        AgentDescription {
            agent_id: a.agent_id,
            group: a.group,
            address: a.address,
            zone: (!a.zone.is_empty()).then_some(a.zone),
            heartbeat_age: Duration::from_millis(a.heartbeat_age_ms),
            connections,
        }
    }
}

/// Creates, lists, describes and deletes topics through an agent.
pub struct Admin {
    cluster: Cluster,
}

impl Admin {
    /// An admin client for the agent at `address` (`host:port`) and the
    /// other agents of its group. Fails if no agent answers.
    pub async fn connect(address: impl Into<String>) -> Result<Admin> {
        Admin::connect_with(address, Security::default()).await
    }

    /// Like [`Admin::connect`], with TLS and credentials.
    pub async fn connect_with(address: impl Into<String>, security: Security) -> Result<Admin> {
        let address = address.into();
        let admin = Admin {
            cluster: Cluster::new(
                Source::Bootstrap(vec![address.clone()]),
                ClusterConfig::new(
                    String::new(),
                    None,
                    RetryPolicy::default(),
                    Duration::from_secs(30),
                    64 << 20,
                )
                .with_security(security),
            ),
        };
        admin.agents().await.map_err(|e| match e {
            Error::NoAgents { reason, .. } | Error::Config(reason) => Error::NoAgents {
                group: String::new(),
                reason: format!(
                    "cannot reach an agent at {address} ({reason}); is `streamhouse agent` running there?"
                ),
            },
            other => other,
        })?;
        Ok(admin)
    }

    async fn call<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(crate::cluster::Rpc) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.cluster.call_any(call).await
    }

    /// Creates a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partition_count: u32,
        retention_ms: Option<i64>,
        config: HashMap<String, String>,
    ) -> Result<TopicDescription> {
        let request = pb::CreateTopicRequest {
            name: name.to_string(),
            partition_count,
            retention_ms,
            config,
        };
        let t = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.create_topic(r).await }
            })
            .await?;
        Ok(t.into())
    }

    /// Adds partitions (`partition_count`), sets or clears retention
    /// (`Some(None)` keeps records forever), sets and removes config keys.
    pub async fn alter_topic(
        &self,
        name: &str,
        partition_count: Option<u32>,
        retention_ms: Option<Option<i64>>,
        set_config: HashMap<String, String>,
        remove_config: Vec<String>,
    ) -> Result<TopicDescription> {
        let request = pb::AlterTopicRequest {
            name: name.to_string(),
            partition_count,
            retention_ms: retention_ms.flatten(),
            clear_retention: retention_ms == Some(None),
            set_config,
            remove_config,
        };
        let t = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.alter_topic(r).await }
            })
            .await?;
        Ok(t.into())
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = pb::DeleteTopicRequest {
            name: name.to_string(),
        };
        self.call(|mut c| {
            let r = request.clone();
            async move { c.delete_topic(r).await }
        })
        .await?;
        Ok(())
    }

    /// Every topic.
    pub async fn list_topics(&self) -> Result<Vec<TopicDescription>> {
        let r = self
            .call(|mut c| async move { c.list_topics(pb::ListTopicsRequest {}).await })
            .await?;
        Ok(r.topics.into_iter().map(Into::into).collect())
    }

    /// Moves a partition's log start offset up to `offset` (`None`: the
    /// last stable offset, which is the high watermark when no transaction
    /// is open), as Kafka's DeleteRecords: the records below are no longer
    /// served. Never past the last stable offset (an error with
    /// `OFFSET_OUT_OF_RANGE`); an offset at or below the log start changes
    /// nothing. Returns the log start offset after the call.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        offset: Option<i64>,
    ) -> Result<i64> {
        let request = pb::DeleteRecordsRequest {
            topic: topic.to_string(),
            partition,
            offset,
        };
        let r = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.delete_records(r).await }
            })
            .await?;
        Ok(r.log_start_offset)
    }

    /// A topic with the offsets of its partitions.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let request = pb::DescribeTopicRequest {
            name: name.to_string(),
        };
        let r = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.describe_topic(r).await }
            })
            .await?;
        let mut t: TopicDescription = r
            .topic
            .ok_or_else(|| Error::UnknownTopic(name.to_string()))?
            .into();
        t.partitions = r
            .partitions
            .iter()
            .map(|p| PartitionDescription {
                partition: p.partition,
                log_start_offset: p.log_start_offset,
                high_watermark: p.high_watermark,
                last_stable_offset: p.last_stable_offset,
                bytes: p.bytes,
                segments: p.segments,
            })
            .collect();
        Ok(t)
    }

    /// Live agents of every group.
    pub async fn agents(&self) -> Result<Vec<AgentDescription>> {
        let r = self
            .call(|mut c| async move { c.get_metadata(pb::MetadataRequest::default()).await })
            .await?;
        Ok(r.agents.into_iter().map(AgentDescription::from).collect())
    }

    /// Live agents of every group, each with the client connections it
    /// reports (an agent knows only its own, so every agent is asked at
    /// its address; one that does not answer within 5 s has none).
    pub async fn agents_with_connections(&self) -> Result<Vec<AgentDescription>> {
        let mut agents = self.agents().await?;
        let asked = agents.iter().map(|a| async move {
            match a.connections {
                Some(c) => Some(c),
                None => self.connections_of(a).await,
            }
        });
        let counts = futures::future::join_all(asked).await;
        for (a, c) in agents.iter_mut().zip(counts) {
            a.connections = c;
        }
        Ok(agents)
    }

    /// The connections `agent` reports in its own entry.
    async fn connections_of(&self, agent: &AgentDescription) -> Option<AgentConnections> {
        let mut client = self.cluster.client(&agent.address).ok()?;
        let request = pb::MetadataRequest {
            agent_group: agent.group.clone(),
            ..Default::default()
        };
        let answer = tokio::time::timeout(CONNECTIONS_TIMEOUT, client.get_metadata(request))
            .await
            .ok()?
            .ok()?;
        answer
            .into_inner()
            .agents
            .into_iter()
            .find(|a| a.agent_id == agent.agent_id)
            .and_then(|a| AgentDescription::from(a).connections)
    }
}

/// A consumer group as an agent describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    pub group_id: String,
    pub group_epoch: i32,
    pub members: Vec<GroupMemberInfo>,
    /// Committed offsets: (partition, offset).
    pub offsets: Vec<(TopicPartition, i64)>,
}

/// A live member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMemberInfo {
    pub member_id: String,
    pub client_id: String,
    pub member_epoch: i32,
    pub subscription: Vec<String>,
    pub owned: Vec<TopicPartition>,
    pub heartbeat_age: Duration,
}

/// Where [`Admin::reset_offsets`] moves a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first record at or after this timestamp (ms).
    Timestamp(i64),
    Offset(i64),
}

impl Admin {
    /// Groups with their live member counts.
    pub async fn list_groups(&self) -> Result<Vec<(String, u32)>> {
        let r = self
            .call(|mut c| async move { c.list_groups(pb::ListGroupsRequest {}).await })
            .await?;
        Ok(r.groups
            .into_iter()
            .map(|g| (g.group_id, g.members))
            .collect())
    }

    /// A group's members, assignments and committed offsets.
    pub async fn describe_group(&self, group: &str) -> Result<GroupInfo> {
        let request = pb::DescribeGroupRequest {
            group_id: group.to_string(),
        };
        let r = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.describe_group(r).await }
            })
            .await?;
        let tp = |p: pb::TopicPartitionRef| TopicPartition::new(p.topic, p.partition);
        Ok(GroupInfo {
            group_id: r.group_id,
            group_epoch: r.group_epoch,
            members: r
                .members
                .into_iter()
                .map(|m| GroupMemberInfo {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    member_epoch: m.member_epoch,
                    subscription: m.subscribed_topics,
                    owned: m.owned.into_iter().map(tp).collect(),
                    heartbeat_age: Duration::from_millis(m.heartbeat_age_ms),
                })
                .collect(),
            offsets: r
                .offsets
                .into_iter()
                .map(|o| (TopicPartition::new(o.topic, o.partition), o.offset))
                .collect(),
        })
    }

    /// Deletes a group without live members, and its offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let request = pb::DeleteGroupRequest {
            group_id: group.to_string(),
        };
        self.call(|mut c| {
            let r = request.clone();
            async move { c.delete_group(r).await }
        })
        .await?;
        Ok(())
    }

    /// The offset `spec` names in each partition: `Offset` as given (checked
    /// against the log), the others from the agent.
    pub async fn list_offsets(
        &self,
        partitions: &[TopicPartition],
        spec: OffsetSpec,
    ) -> Result<Vec<(TopicPartition, i64)>> {
        let timestamp = match spec {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest | OffsetSpec::Offset(_) => -1,
            OffsetSpec::Timestamp(t) => t,
        };
        let request = pb::ListOffsetsRequest {
            partitions: partitions
                .iter()
                .map(|tp| pb::ListOffsetsPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    timestamp,
                })
                .collect(),
            isolation_level: 0,
        };
        let r = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.list_offsets(r).await }
            })
            .await?;
        r.partitions
            .into_iter()
            .map(|p| {
                let tp = TopicPartition::new(p.topic.clone(), p.partition);
                if p.error != ErrorCode::None as i32 {
                    return Err(Error::Rejected {
                        topic: p.topic,
                        partition: p.partition,
                        code: ErrorCode::try_from(p.error).unwrap_or(ErrorCode::Internal),
                        message: p.message,
                    });
                }
                let offset = match spec {
                    OffsetSpec::Offset(o) if o < p.log_start_offset || o > p.high_watermark => {
                        return Err(Error::Config(format!(
                            "offset {o} is outside {tp} (log start {}, end {})",
                            p.log_start_offset, p.high_watermark
                        )));
                    }
                    OffsetSpec::Offset(o) => o,
                    _ => p.offset,
                };
                Ok((tp, offset))
            })
            .collect()
    }

    /// Moves a group's committed offsets in `partitions` (every partition
    /// of `topic`'s when empty) to `spec`. The group must have no live
    /// members. Returns the new offsets.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[u32],
        spec: OffsetSpec,
    ) -> Result<Vec<(TopicPartition, i64)>> {
        let partitions: Vec<TopicPartition> = if partitions.is_empty() {
            let t = self.describe_topic(topic).await?;
            (0..t.partition_count)
                .map(|p| TopicPartition::new(topic, p))
                .collect()
        } else {
            partitions
                .iter()
                .map(|&p| TopicPartition::new(topic, p))
                .collect()
        };
        let offsets = self.list_offsets(&partitions, spec).await?;
        let request = pb::CommitOffsetsRequest {
            group_id: group.to_string(),
            member_id: None,
            member_epoch: 0,
            offsets: offsets
                .iter()
                .map(|(tp, o)| pb::OffsetToCommit {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: *o,
                    metadata: None,
                })
                .collect(),
        };
        let r = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.commit_offsets(r).await }
            })
            .await?;
        if r.error != ErrorCode::None as i32 {
            return Err(Error::Group {
                code: ErrorCode::try_from(r.error).unwrap_or(ErrorCode::Internal),
                message: r.message,
            });
        }
        Ok(offsets)
    }
}
