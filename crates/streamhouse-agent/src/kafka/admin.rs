//! Topic administration over Kafka: CreateTopics (with configs),
//! DeleteTopics and CreatePartitions. Replication factors and replica
//! assignments have no meaning here (the object store keeps the data, any
//! agent serves any partition): a replication factor is accepted as
//! given, an explicit assignment is refused.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::{TopicAlter, TopicConfig};
use uuid::Uuid;

use super::Broker;
use super::configs::Settings;
use super::errors::metadata_code;
use super::topic_ids;

pub(super) const CREATE_TOPICS_VERSIONS: RangeInclusive<i16> = 2..=7;
pub(super) const DELETE_TOPICS_VERSIONS: RangeInclusive<i16> = 1..=6;
pub(super) const CREATE_PARTITIONS_VERSIONS: RangeInclusive<i16> = 0..=3;

fn s(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// The topic a CreateTopics entry asks for, or why it cannot be.
fn creatable(
    broker: &Broker,
    t: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<TopicConfig, (i16, String)> {
    if !t.assignments.is_empty() {
        return Err((
            ResponseError::InvalidReplicaAssignment.code(),
            "replica assignments do not apply: any agent serves any partition".into(),
        ));
    }
    let partition_count = match t.num_partitions {
        -1 => broker.default_partitions,
        n => u32::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
            (
                ResponseError::InvalidPartitions.code(),
                format!("{n} partitions: a topic needs at least one"),
            )
        })?,
    };
    let mut settings = Settings::default();
    for c in &t.configs {
        settings.add(&c.name, c.value.as_deref())?;
    }
    let config = TopicConfig {
        name: t.name.0.to_string(),
        partition_count,
        retention_ms: settings.retention_ms.flatten(),
        config: settings.set,
    };
    config
        .validate()
        .map_err(|e| (metadata_code(&e), e.to_string()))?;
    Ok(config)
}

pub(super) async fn create_topics(
    broker: &Broker,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let result = CreatableTopicResult::default().with_name(t.name.clone());
        let created = match creatable(broker, t) {
            Err(e) => Err(e),
            Ok(config) if request.validate_only => Ok((config, Uuid::nil())),
            Ok(config) => match broker.metadata.create_topic(config).await {
                Ok(topic) => {
                    tracing::info!(topic = %topic.name, partitions = topic.partition_count, "topic created by a Kafka client");
                    let id = topic_ids::topic_uuid(&topic);
                    Ok((
                        TopicConfig {
                            name: topic.name,
                            partition_count: topic.partition_count,
                            retention_ms: topic.retention_ms,
                            config: topic.config,
                        },
                        id,
                    ))
                }
                Err(e) => Err((metadata_code(&e), e.to_string())),
            },
        };
        topics.push(match created {
            Ok((config, id)) => {
                let result = result
                    .with_topic_id(id)
                    .with_num_partitions(config.partition_count as i32)
                    .with_replication_factor(t.replication_factor.max(1));
                if version >= 5 {
                    result.with_configs(Some(created_configs(broker, &config)))
                } else {
                    result
                }
            }
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(s(message)))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        });
    }
    CreateTopicsResponse::default().with_topics(topics)
}

/// The configs of a created topic, as DescribeConfigs gives them.
fn created_configs(broker: &Broker, config: &TopicConfig) -> Vec<CreatableTopicConfigs> {
    super::configs::topic_configs(broker, config.retention_ms, &config.config)
        .into_iter()
        .map(|c| {
            CreatableTopicConfigs::default()
                .with_name(c.name)
                .with_value(c.value)
                .with_read_only(c.read_only)
                .with_config_source(c.config_source)
        })
        .collect()
}

/// Deletes topics by name, or (v6) by topic id ([`topic_ids`]).
pub(super) async fn delete_topics(
    broker: &Broker,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let asked: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            // A topic named by id has a null (or empty) name.
            .map(|t| {
                (
                    t.name.filter(|n| !n.is_empty() || t.topic_id.is_nil()),
                    t.topic_id,
                )
            })
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    let by_id = if asked.iter().any(|(name, _)| name.is_none()) {
        topic_ids::by_uuid(broker)
            .await
            .map_err(|e| (metadata_code(&e), e.to_string()))
    } else {
        Ok(HashMap::new())
    };
    let mut responses = Vec::with_capacity(asked.len());
    for (name, id) in asked {
        let name = match name {
            Some(name) => name,
            None => match &by_id {
                Ok(found) => match found.get(&id) {
                    Some(t) => TopicName(s(t.name.clone())),
                    None => {
                        responses.push(
                            DeletableTopicResult::default()
                                .with_topic_id(id)
                                .with_error_code(ResponseError::UnknownTopicId.code())
                                .with_error_message(Some(s(format!("no topic has id {id}")))),
                        );
                        continue;
                    }
                },
                Err((code, message)) => {
                    responses.push(
                        DeletableTopicResult::default()
                            .with_topic_id(id)
                            .with_error_code(*code)
                            .with_error_message(Some(s(message.clone()))),
                    );
                    continue;
                }
            },
        };
        let result = DeletableTopicResult::default()
            .with_name(Some(name.clone()))
            .with_topic_id(id);
        responses.push(match broker.metadata.delete_topic(&name).await {
            Ok(()) => {
                broker.pipeline.invalidate_topic(&name);
                tracing::info!(topic = %name.as_str(), "topic deleted by a Kafka client");
                result
            }
            Err(e) => result
                .with_error_code(metadata_code(&e))
                .with_error_message(Some(s(e.to_string()))),
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(super) async fn create_partitions(
    broker: &Broker,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    let mut seen: HashMap<TopicName, ()> = HashMap::new();
    for t in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let outcome = if seen.insert(t.name.clone(), ()).is_some() {
            Err((
                ResponseError::InvalidRequest.code(),
                "topic named twice".to_string(),
            ))
        } else if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
            Err((
                ResponseError::InvalidReplicaAssignment.code(),
                "replica assignments do not apply: any agent serves any partition".into(),
            ))
        } else {
            grow(broker, &t.name, t.count, request.validate_only).await
        };
        results.push(match outcome {
            Ok(()) => result,
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(s(message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

async fn grow(
    broker: &Broker,
    name: &str,
    count: i32,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let failed = |e: streamhouse_metadata::Error| (metadata_code(&e), e.to_string());
    let topic = broker
        .metadata
        .get_topic(name)
        .await
        .map_err(failed)?
        .ok_or_else(|| {
            (
                ResponseError::UnknownTopicOrPartition.code(),
                format!("topic {name:?} does not exist"),
            )
        })?;
    let count = u32::try_from(count)
        .ok()
        .filter(|&c| c > topic.partition_count)
        .ok_or_else(|| {
            (
                ResponseError::InvalidPartitions.code(),
                format!(
                    "topic {name:?} has {} partitions; {count} does not add any",
                    topic.partition_count
                ),
            )
        })?;
    if validate_only {
        return streamhouse_core::names::validate_partition_count(count)
            .map_err(|e| (ResponseError::InvalidPartitions.code(), e.to_string()));
    }
    broker
        .metadata
        .alter_topic(
            name,
            TopicAlter {
                partition_count: Some(count),
                retention_ms: None,
                set_config: HashMap::new(),
                remove_config: Vec::new(),
            },
        )
        .await
        .map_err(failed)?;
    broker.pipeline.invalidate_topic(name);
    tracing::info!(topic = %name, partitions = count, "partitions added by a Kafka client");
    Ok(())
}
