//! Metadata: the live brokers of the agent's group and the topics asked
//! for (or all), each partition led by the broker [`brokers::leader`]
//! picks. A named topic that does not exist is created with the default
//! partition count when auto-creation is on and the client allows it.
//! Every topic carries its id ([`topic_ids`]) from v10 on, and v10+
//! requests may name topics by id.

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::{AclOperation as Op, ResourceType as Resource, Topic, TopicConfig};
use uuid::Uuid;

use super::Broker;
use super::brokers::{self, KafkaBroker};
use super::errors::metadata_code;
use super::topic_ids;
use crate::auth::Session;
use crate::error::bounded;

/// Metadata versions served (v13 only adds a top-level error code).
pub(super) const VERSIONS: RangeInclusive<i16> = 0..=12;

/// The cluster id every agent reports.
pub(super) const CLUSTER_ID: &str = "streamhouse";

/// The answer to a request refused as a whole. Metadata below v13 has no
/// top-level error code: it lists no brokers and no topics.
pub(super) fn refuse(code: i16) -> MetadataResponse {
    MetadataResponse::default().with_error_code(code)
}

/// The answer; `zone` is the client's (see [`brokers::client_zone`]).
pub(super) async fn handle(
    broker: &Broker,
    request: MetadataRequest,
    version: i16,
    zone: Option<&str>,
    session: &Session,
) -> MetadataResponse {
    let describable = |name: &str| {
        broker
            .auth
            .allows_silently(session, Op::Describe, Resource::Topic, name)
    };
    let brokers = match brokers::live(broker).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "listing brokers for Kafka metadata failed");
            Vec::new()
        }
    };
    // v0 has no null: an empty list means every topic. v4+ says whether
    // the client allows creation; before v4 clients always allowed it.
    // v10+ may name a topic by id (with a null or empty name) instead.
    let asked: Option<Vec<Asked>> = match request.topics {
        Some(t) if !(version == 0 && t.is_empty()) => Some(
            t.into_iter()
                .filter_map(|t| match t.name {
                    Some(n) if !n.is_empty() || t.topic_id.is_nil() => {
                        Some(Asked::Name(n.0.to_string()))
                    }
                    _ if !t.topic_id.is_nil() => Some(Asked::Id(t.topic_id)),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    };
    let may_create =
        broker.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let mut topics = Vec::new();
    match asked {
        None => match broker.metadata.list_topics().await {
            // Topics the principal may not describe are left out.
            Ok(all) => topics.extend(
                all.iter()
                    .filter(|t| describable(&t.name))
                    .map(|t| topic_entry(t, &brokers, zone)),
            ),
            Err(e) => tracing::warn!(error = %e, "listing topics for Kafka metadata failed"),
        },
        Some(asked) => {
            let by_id = if asked.iter().any(|a| matches!(a, Asked::Id(_))) {
                topic_ids::by_uuid(broker).await.map_err(|e| {
                    tracing::warn!(error = %e, "listing topics for Kafka metadata failed");
                    metadata_code(&e)
                })
            } else {
                Ok(HashMap::new())
            };
            let mut seen = HashSet::new();
            for a in asked {
                if !seen.insert(a.clone()) {
                    continue;
                }
                let name = match a {
                    Asked::Name(name) => name,
                    Asked::Id(id) => {
                        topics.push(match &by_id {
                            Ok(found) => match found.get(&id) {
                                Some(t)
                                    if !super::authz::topic(
                                        broker,
                                        session,
                                        Op::Describe,
                                        &t.name,
                                    ) =>
                                {
                                    MetadataResponseTopic::default()
                                        .with_topic_id(id)
                                        .with_error_code(super::authz::TOPIC_DENIED)
                                }
                                Some(t) => topic_entry(t, &brokers, zone),
                                None => MetadataResponseTopic::default()
                                    .with_topic_id(id)
                                    .with_error_code(ResponseError::UnknownTopicId.code()),
                            },
                            Err(code) => MetadataResponseTopic::default()
                                .with_topic_id(id)
                                .with_error_code(*code),
                        });
                        continue;
                    }
                };
                if !super::authz::topic(broker, session, Op::Describe, &name) {
                    topics.push(
                        MetadataResponseTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(name))))
                            .with_error_code(super::authz::TOPIC_DENIED),
                    );
                    continue;
                }
                let create = may_create.then(|| super::authz::may_create(broker, session, &name));
                topics.push(match find_or_create(broker, &name, create).await {
                    Ok(t) => topic_entry(&t, &brokers, zone),
                    Err(code) => MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(name))))
                        .with_error_code(code),
                });
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(
            brokers
                .iter()
                .map(|b| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(b.node_id))
                        .with_host(StrBytes::from_string(b.host.clone()))
                        .with_port(b.port)
                        .with_rack(b.rack.clone().map(StrBytes::from_string))
                })
                .collect(),
        )
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(BrokerId(brokers.first().map_or(-1, |b| b.node_id)))
        .with_topics(topics)
}

/// A topic a request names: by name, or (v10+) by id.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Asked {
    Name(String),
    Id(Uuid),
}

/// The topic, created when missing if `create` is `Some(true)`; a missing
/// topic the principal may not create (`Some(false)`) is
/// TOPIC_AUTHORIZATION_FAILED, as in Kafka; without automatic creation
/// (`None`) it is UNKNOWN_TOPIC_OR_PARTITION.
async fn find_or_create(broker: &Broker, name: &str, create: Option<bool>) -> Result<Topic, i16> {
    match broker.metadata.get_topic(name).await {
        Ok(Some(t)) => return Ok(t),
        Ok(None) if create.is_none() => return Err(ResponseError::UnknownTopicOrPartition.code()),
        Ok(None) if create == Some(false) => return Err(super::authz::TOPIC_DENIED),
        Ok(None) => {}
        Err(e) => return Err(metadata_code(&e)),
    }
    let created = broker
        .metadata
        .create_topic(TopicConfig {
            name: name.to_string(),
            partition_count: broker.default_partitions,
            retention_ms: None,
            config: HashMap::new(),
        })
        .await;
    match created {
        Ok(t) => {
            tracing::info!(topic = %t.name, partitions = t.partition_count, "created topic for a Kafka client");
            Ok(t)
        }
        // Another client created it meanwhile.
        Err(streamhouse_metadata::Error::TopicAlreadyExists(_)) => {
            match broker.metadata.get_topic(name).await {
                Ok(Some(t)) => Ok(t),
                Ok(None) => Err(ResponseError::UnknownTopicOrPartition.code()),
                Err(e) => Err(metadata_code(&e)),
            }
        }
        Err(e) => {
            tracing::info!(topic = %bounded(name), error = %e, "automatic topic creation refused");
            Err(metadata_code(&e))
        }
    }
}

fn topic_entry(t: &Topic, brokers: &[KafkaBroker], zone: Option<&str>) -> MetadataResponseTopic {
    let partitions = (0..t.partition_count)
        .map(|p| {
            let leader = brokers::leader_for(brokers, zone, &t.name, p);
            let entry = MetadataResponsePartition::default()
                .with_partition_index(p as i32)
                .with_leader_epoch(0);
            match leader {
                Some(l) => entry
                    .with_leader_id(BrokerId(l))
                    .with_replica_nodes(vec![BrokerId(l)])
                    .with_isr_nodes(vec![BrokerId(l)]),
                None => entry
                    .with_leader_id(BrokerId(-1))
                    .with_error_code(ResponseError::LeaderNotAvailable.code()),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(topic_ids::topic_uuid(t))
        .with_partitions(partitions)
}
