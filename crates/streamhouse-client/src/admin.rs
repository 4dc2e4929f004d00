//! Topic administration through any agent.

use std::collections::HashMap;
use std::time::Duration;

use streamhouse_proto as pb;

use crate::cluster::{Cluster, ClusterConfig, Source};
use crate::error::{Error, Result};

/// A topic as an agent describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub topic_id: i64,
    pub partition_count: u32,
    pub retention_ms: Option<i64>,
    pub config: HashMap<String, String>,
    pub created_at_ms: i64,
    /// Per partition: (log start offset, high watermark); empty from
    /// [`Admin::list_topics`].
    pub partitions: Vec<(i64, i64)>,
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
}

/// Creates, lists, describes and deletes topics through an agent.
pub struct Admin {
    cluster: Cluster,
}

impl Admin {
    /// An admin client for the agent at `address` (`host:port`) and the
    /// other agents of its group. Fails if no agent answers.
    pub async fn connect(address: impl Into<String>) -> Result<Admin> {
        let address = address.into();
        let admin = Admin {
            cluster: Cluster::new(
                Source::Bootstrap(vec![address.clone()]),
                ClusterConfig {
                    group: String::new(),
                    zone: None,
                    request_timeout: Duration::from_secs(30),
                    refresh_interval: Duration::from_secs(30),
                    agent_ttl: Duration::from_secs(10),
                    failure_cooldown: Duration::from_secs(5),
                    max_message_bytes: 64 << 20,
                },
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
        F: Fn(
            streamhouse_proto::stream_house_client::StreamHouseClient<tonic::transport::Channel>,
        ) -> Fut,
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
            .map(|p| (p.log_start_offset, p.high_watermark))
            .collect();
        Ok(t)
    }

    /// Live agents of every group.
    pub async fn agents(&self) -> Result<Vec<AgentDescription>> {
        let r = self
            .call(|mut c| async move { c.get_metadata(pb::MetadataRequest::default()).await })
            .await?;
        Ok(r.agents
            .into_iter()
            .map(|a| AgentDescription {
                agent_id: a.agent_id,
                group: a.group,
                address: a.address,
                zone: (!a.zone.is_empty()).then_some(a.zone),
                heartbeat_age: Duration::from_millis(a.heartbeat_age_ms),
            })
            .collect())
    }
}

// Admin errors keep the agent's status: NOT_FOUND, ALREADY_EXISTS, ...
impl Error {
    /// The gRPC status code behind an error from an agent, if any.
    pub fn status_code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}
