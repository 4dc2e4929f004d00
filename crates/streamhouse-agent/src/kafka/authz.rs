//! ACL checks of the Kafka requests that name topics, as Kafka's
//! `KafkaApis` makes them: the parts of a request the principal may not
//! touch are taken out before the handler runs and answered with
//! TOPIC_AUTHORIZATION_FAILED (CLUSTER_AUTHORIZATION_FAILED for the
//! cluster), beside the handler's answer for the rest. Group and
//! transaction checks are in [`authz_groups`](super::authz_groups).
//!
//! Without required authentication every check passes
//! ([`Auth::allows`](crate::auth::Auth::allows)), and requests reach their
//! handlers whole.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::TopicProduceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteRecordsRequest, DeleteRecordsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    DescribeProducersRequest, DescribeProducersResponse, FetchRequest, FetchResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ListOffsetsRequest,
    ListOffsetsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest,
    TopicName, alter_configs_response, create_partitions_response, create_topics_response,
    delete_records_response, delete_topics_response, describe_configs_response,
    describe_producers_response, fetch_response, incremental_alter_configs_response,
    offset_for_leader_epoch_response,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::{AclOperation as Op, ResourceType as Resource};

use super::Broker;
use crate::auth::{CLUSTER, Session};

pub(super) const TOPIC_DENIED: i16 = ResponseError::TopicAuthorizationFailed.code();
pub(super) const CLUSTER_DENIED: i16 = ResponseError::ClusterAuthorizationFailed.code();
pub(super) const GROUP_DENIED: i16 = ResponseError::GroupAuthorizationFailed.code();
pub(super) const TXN_DENIED: i16 = ResponseError::TransactionalIdAuthorizationFailed.code();

/// Config resource types (DescribeConfigs, AlterConfigs).
const CONFIG_TOPIC: i8 = 2;

/// Whether `session` may perform `op` on topic `name` (refusals counted).
pub(super) fn topic(broker: &Broker, session: &Session, op: Op, name: &str) -> bool {
    broker.auth.allows(session, op, Resource::Topic, name)
}

/// Whether `session` may perform `op` on the cluster.
pub(super) fn cluster(broker: &Broker, session: &Session, op: Op) -> bool {
    broker.auth.allows(session, op, Resource::Cluster, CLUSTER)
}

/// Whether `session` may create topic `name`: CREATE on the cluster (not
/// counted when refused) or on the topic.
pub(super) fn may_create(broker: &Broker, session: &Session, name: &str) -> bool {
    broker
        .auth
        .allows_silently(session, Op::Create, Resource::Cluster, CLUSTER)
        || topic(broker, session, Op::Create, name)
}

/// Takes the items `allowed` refuses out of `items`, and returns them.
pub(super) fn take_refused<T>(items: &mut Vec<T>, mut allowed: impl FnMut(&T) -> bool) -> Vec<T> {
    let (kept, refused) = std::mem::take(items).into_iter().partition(|t| allowed(t));
    *items = kept;
    refused
}

/// Whether any record batch of `records` has the transactional flag
/// (bytes that do not parse are refused whole by produce validation, which
/// writes nothing of a partition whose records do not all parse).
pub(crate) fn transactional(records: &[u8]) -> bool {
    streamhouse_core::batches(records)
        .any(|b| b.is_ok_and(|(header, _)| header.attributes.is_transactional()))
}

/// Takes the topics of a Produce request the principal may not write to
/// out of it; when the request is transactional and the principal may not
/// write to its transactional id, every topic. The refused ones, answered.
pub(super) fn produce(
    broker: &Broker,
    session: &Session,
    request: &mut ProduceRequest,
) -> Vec<TopicProduceResponse> {
    let is_transactional = request.transactional_id.is_some()
        || request
            .topic_data
            .iter()
            .flat_map(|t| &t.partition_data)
            .any(|p| p.records.as_ref().is_some_and(|r| transactional(r)));
    // Transactional batches without a transactional id are refused only
    // when ACLs are enforced (there is no id to allow).
    let txn_allowed = !is_transactional
        || match &request.transactional_id {
            Some(id) => broker
                .auth
                .allows(session, Op::Write, Resource::TransactionalId, id),
            None => !broker.auth.required(),
        };
    let (code, refused) = if txn_allowed {
        let refused = take_refused(&mut request.topic_data, |t| {
            topic(broker, session, Op::Write, &t.name)
        });
        (TOPIC_DENIED, refused)
    } else {
        (TXN_DENIED, std::mem::take(&mut request.topic_data))
    };
    let refused_request = ProduceRequest::default().with_topic_data(refused);
    super::produce::refuse(&refused_request, code).responses
}

pub(super) async fn fetch(
    broker: &Broker,
    session: &Session,
    mut request: FetchRequest,
    version: i16,
) -> FetchResponse {
    let refused = take_refused(&mut request.topics, |t| {
        topic(broker, session, Op::Read, &t.topic)
    });
    let mut response = super::fetch::handle(broker, request, version).await;
    response.responses.extend(refused.into_iter().map(|t| {
        fetch_response::FetchableTopicResponse::default()
            .with_topic(t.topic)
            .with_partitions(
                t.partitions
                    .iter()
                    .map(|p| super::fetch::failed(p.partition, TOPIC_DENIED))
                    .collect(),
            )
    }));
    response
}

pub(super) async fn list_offsets(
    broker: &Broker,
    session: &Session,
    mut request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let refused = take_refused(&mut request.topics, |t| {
        topic(broker, session, Op::Describe, &t.name)
    });
    let refused = ListOffsetsRequest::default().with_topics(refused);
    let mut response = super::list_offsets::handle(broker, request, version).await;
    response
        .topics
        .extend(super::list_offsets::refuse(&refused, TOPIC_DENIED).topics);
    response
}

pub(super) async fn leader_epochs(
    broker: &Broker,
    session: &Session,
    mut request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let refused = take_refused(&mut request.topics, |t| {
        topic(broker, session, Op::Describe, &t.topic)
    });
    let mut response = super::cluster::leader_epochs(broker, request).await;
    response.topics.extend(refused.into_iter().map(|t| {
        offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
            .with_topic(t.topic)
            .with_partitions(
                t.partitions
                    .iter()
                    .map(|p| {
                        offset_for_leader_epoch_response::EpochEndOffset::default()
                            .with_partition(p.partition)
                            .with_error_code(TOPIC_DENIED)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1)
                    })
                    .collect(),
            )
    }));
    response
}

pub(super) async fn delete_records(
    broker: &Broker,
    session: &Session,
    mut request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let refused = take_refused(&mut request.topics, |t| {
        topic(broker, session, Op::Delete, &t.name)
    });
    let mut response = super::delete_records::handle(broker, request).await;
    response.topics.extend(refused.into_iter().map(|t| {
        delete_records_response::DeleteRecordsTopicResult::default()
            .with_name(t.name)
            .with_partitions(
                t.partitions
                    .iter()
                    .map(|p| {
                        delete_records_response::DeleteRecordsPartitionResult::default()
                            .with_partition_index(p.partition_index)
                            .with_low_watermark(-1)
                            .with_error_code(TOPIC_DENIED)
                    })
                    .collect(),
            )
    }));
    response
}

pub(super) async fn describe_producers(
    broker: &Broker,
    session: &Session,
    mut request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let refused = take_refused(&mut request.topics, |t| {
        topic(broker, session, Op::Read, &t.name)
    });
    let mut response = super::transaction_admin::describe_producers(broker, request).await;
    response.topics.extend(refused.into_iter().map(|t| {
        describe_producers_response::TopicResponse::default()
            .with_name(t.name)
            .with_partitions(
                t.partition_indexes
                    .iter()
                    .map(|&p| {
                        describe_producers_response::PartitionResponse::default()
                            .with_partition_index(p)
                            .with_error_code(TOPIC_DENIED)
                    })
                    .collect(),
            )
    }));
    response
}

fn denied_message(session: &Session, what: &str) -> Option<StrBytes> {
    Some(StrBytes::from_string(format!(
        "{} is not authorized to {what}",
        session.principal
    )))
}

pub(super) async fn create_topics(
    broker: &Broker,
    session: &Session,
    mut request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let refused = take_refused(&mut request.topics, |t| {
        may_create(broker, session, &t.name)
    });
    let mut response = super::admin::create_topics(broker, request, version).await;
    response.topics.extend(refused.into_iter().map(|t| {
        create_topics_response::CreatableTopicResult::default()
            .with_name(t.name)
            .with_error_code(TOPIC_DENIED)
            .with_error_message(denied_message(session, "create this topic"))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
    }));
    response
}

pub(super) async fn delete_topics(
    broker: &Broker,
    session: &Session,
    mut request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // A topic named by id (v6+) is checked by the name the id stands for;
    // the topics are listed for that only when ACLs are enforced.
    let by_id = broker.auth.required()
        && request
            .topics
            .iter()
            .any(|t| t.name.as_ref().is_none_or(|n| n.is_empty()));
    let ids = if by_id {
        super::topic_ids::by_uuid(broker).await.unwrap_or_default()
    } else {
        Default::default()
    };
    let mut refused: Vec<(Option<TopicName>, uuid::Uuid)> = Vec::new();
    let allowed = |name: &str| topic(broker, session, Op::Delete, name);
    let names = take_refused(&mut request.topic_names, |n| allowed(n));
    refused.extend(names.into_iter().map(|n| (Some(n), uuid::Uuid::nil())));
    let states = take_refused(&mut request.topics, |t| {
        match (&t.name, ids.get(&t.topic_id)) {
            (Some(n), _) if !n.is_empty() => allowed(n),
            (_, Some(found)) => allowed(&found.name),
            // An id that could not be resolved (unknown, or the listing
            // failed) is refused when ACLs are enforced: it never reaches
            // the handler unchecked.
            (_, None) => !broker.auth.required(),
        }
    });
    refused.extend(states.into_iter().map(|t| (t.name, t.topic_id)));
    let mut response = super::admin::delete_topics(broker, request, version).await;
    response
        .responses
        .extend(refused.into_iter().map(|(name, id)| {
            delete_topics_response::DeletableTopicResult::default()
                .with_name(name)
                .with_topic_id(id)
                .with_error_code(TOPIC_DENIED)
                .with_error_message(denied_message(session, "delete this topic"))
        }));
    response
}

pub(super) async fn create_partitions(
    broker: &Broker,
    session: &Session,
    mut request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let refused = take_refused(&mut request.topics, |t| {
        topic(broker, session, Op::Alter, &t.name)
    });
    let mut response = super::admin::create_partitions(broker, request).await;
    response.results.extend(refused.into_iter().map(|t| {
        create_partitions_response::CreatePartitionsTopicResult::default()
            .with_name(t.name)
            .with_error_code(TOPIC_DENIED)
            .with_error_message(denied_message(session, "alter this topic"))
    }));
    response
}

/// Whether `session` may perform `op` on a config resource: a topic, or
/// the cluster for broker resources.
fn config_resource(
    broker: &Broker,
    session: &Session,
    op: Op,
    resource_type: i8,
    name: &str,
) -> Result<(), i16> {
    let allowed = if resource_type == CONFIG_TOPIC {
        topic(broker, session, op, name)
    } else {
        cluster(broker, session, op)
    };
    if allowed {
        Ok(())
    } else if resource_type == CONFIG_TOPIC {
        Err(TOPIC_DENIED)
    } else {
        Err(CLUSTER_DENIED)
    }
}

pub(super) async fn describe_configs(
    broker: &Broker,
    session: &Session,
    mut request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut refused = Vec::new();
    request.resources.retain(|r| {
        match config_resource(
            broker,
            session,
            Op::DescribeConfigs,
            r.resource_type,
            &r.resource_name,
        ) {
            Ok(()) => true,
            Err(code) => {
                refused.push(
                    describe_configs_response::DescribeConfigsResult::default()
                        .with_resource_type(r.resource_type)
                        .with_resource_name(r.resource_name.clone())
                        .with_error_code(code)
                        .with_error_message(denied_message(session, "describe these configs")),
                );
                false
            }
        }
    });
    let mut response = super::configs::describe(broker, request).await;
    response.results.extend(refused);
    response
}

/// The config resources of an AlterConfigs or IncrementalAlterConfigs
/// request the principal may not alter: taken out, answered as
/// `(code, resource type, resource name)`.
fn refused_alterations<T>(
    broker: &Broker,
    session: &Session,
    resources: &mut Vec<T>,
    key: impl Fn(&T) -> (i8, &StrBytes),
) -> Vec<(i16, i8, StrBytes)> {
    let mut refused = Vec::new();
    resources.retain(|r| {
        let (resource_type, name) = key(r);
        match config_resource(broker, session, Op::AlterConfigs, resource_type, name) {
            Ok(()) => true,
            Err(code) => {
                refused.push((code, resource_type, name.clone()));
                false
            }
        }
    });
    refused
}

pub(super) async fn alter_configs(
    broker: &Broker,
    session: &Session,
    mut request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let refused = refused_alterations(broker, session, &mut request.resources, |r| {
        (r.resource_type, &r.resource_name)
    });
    let mut response = super::configs::alter(broker, request).await;
    response
        .responses
        .extend(refused.into_iter().map(|(code, resource_type, name)| {
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(denied_message(session, "alter these configs"))
                .with_resource_type(resource_type)
                .with_resource_name(name)
        }));
    response
}

pub(super) async fn incremental_alter_configs(
    broker: &Broker,
    session: &Session,
    mut request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let refused = refused_alterations(broker, session, &mut request.resources, |r| {
        (r.resource_type, &r.resource_name)
    });
    let mut response = super::configs::incremental_alter(broker, request).await;
    response
        .responses
        .extend(refused.into_iter().map(|(code, resource_type, name)| {
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(denied_message(session, "alter these configs"))
                .with_resource_type(resource_type)
                .with_resource_name(name)
        }));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transactional_flag_of_any_batch_counts() {
        let plain =
            streamhouse_core::RecordBatch::from_records([streamhouse_core::NewRecord::new(
                1, None, "v",
            )])
            .encode()
            .unwrap()
            .to_vec();
        assert!(!transactional(&plain));
        // The attributes' low byte: base offset 8, length 4, leader epoch
        // 4, magic 1, crc 4, then attributes (2).
        let mut flagged = plain.clone();
        flagged[22] |= 0x10;
        assert!(transactional(&flagged));
        // A transactional batch behind a plain one is found too.
        assert!(transactional(&[plain.clone(), flagged].concat()));
        assert!(!transactional(&[1, 2, 3]));
    }

    #[test]
    fn refused_items_are_taken_out_in_order() {
        let mut items = vec![1, 2, 3, 4, 5];
        let refused = take_refused(&mut items, |i| i % 2 == 0);
        assert_eq!(items, vec![2, 4]);
        assert_eq!(refused, vec![1, 3, 5]);
    }
}
