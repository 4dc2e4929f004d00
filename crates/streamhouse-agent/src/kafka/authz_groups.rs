//! ACL checks of the Kafka requests about consumer groups, transactions
//! and the cluster, as Kafka's `KafkaApis` makes them (see
//! [`authz`](super::authz) for the topic ones): a request refused as a
//! whole gets GROUP_AUTHORIZATION_FAILED, TRANSACTIONAL_ID_AUTHORIZATION_FAILED
//! or CLUSTER_AUTHORIZATION_FAILED; a request about several groups, ids or
//! topics is answered for the others and refused for those only; listings
//! leave out what the principal may not describe.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, BrokerId, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse, ListGroupsRequest,
    ListGroupsResponse, ListTransactionsRequest, ListTransactionsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, TopicName, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
    delete_groups_response, describe_groups_response, describe_transactions_response,
    offset_commit_response, offset_delete_response, offset_fetch_response,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::{AclOperation as Op, ResourceType as Resource};

use super::Broker;
use super::authz::{
    CLUSTER_DENIED, GROUP_DENIED, TOPIC_DENIED, TXN_DENIED, cluster, take_refused, topic,
};
use crate::auth::{CLUSTER, Session};

/// FindCoordinator key types.
const GROUP_KEY: i8 = 0;
const TRANSACTION_KEY: i8 = 1;

pub(super) fn group(broker: &Broker, session: &Session, op: Op, name: &str) -> bool {
    broker.auth.allows(session, op, Resource::Group, name)
}

pub(super) fn transactional_id(broker: &Broker, session: &Session, name: &str) -> bool {
    broker
        .auth
        .allows(session, Op::Write, Resource::TransactionalId, name)
}

/// Answers for the partitions of `topics`, each with `code`.
fn partitions<T, P>(
    topics: &[(TopicName, Vec<i32>)],
    code: i16,
    topic: impl Fn(TopicName, Vec<P>) -> T,
    partition: impl Fn(i32, i16) -> P,
) -> Vec<T> {
    topics
        .iter()
        .map(|(name, ps)| {
            topic(
                name.clone(),
                ps.iter().map(|&p| partition(p, code)).collect(),
            )
        })
        .collect()
}

pub(super) async fn find_coordinator(
    broker: &Broker,
    session: &Session,
    mut request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let allowed = |key: &str| match request.key_type {
        GROUP_KEY => group(broker, session, Op::Describe, key),
        TRANSACTION_KEY => {
            broker
                .auth
                .allows(session, Op::Describe, Resource::TransactionalId, key)
        }
        // The handler refuses other key types.
        _ => true,
    };
    let code = if request.key_type == GROUP_KEY {
        GROUP_DENIED
    } else {
        TXN_DENIED
    };
    if version < 4 {
        if !allowed(&request.key) {
            return FindCoordinatorResponse::default()
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(code);
        }
        return super::coordinator::handle(broker, request, version).await;
    }
    let refused = take_refused(&mut request.coordinator_keys, |k| allowed(k));
    let mut response = super::coordinator::handle(broker, request, version).await;
    response.coordinators.extend(refused.into_iter().map(|key| {
        Coordinator::default()
            .with_key(key)
            .with_node_id(BrokerId(-1))
            .with_port(-1)
            .with_error_code(code)
    }));
    response
}

pub(super) async fn offset_commit(
    broker: &Broker,
    session: &Session,
    mut request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let topic_response = |name, ps| {
        offset_commit_response::OffsetCommitResponseTopic::default()
            .with_name(name)
            .with_partitions(ps)
    };
    let partition_response = |p, code| {
        offset_commit_response::OffsetCommitResponsePartition::default()
            .with_partition_index(p)
            .with_error_code(code)
    };
    let listed =
        |topics: &[kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic]| {
            topics
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect::<Vec<_>>()
        };
    if !group(broker, session, Op::Read, &request.group_id) {
        return OffsetCommitResponse::default().with_topics(partitions(
            &listed(&request.topics),
            GROUP_DENIED,
            topic_response,
            partition_response,
        ));
    }
    let refused = take_refused(&mut request.topics, |t| {
        topic(broker, session, Op::Read, &t.name)
    });
    let mut response = super::offsets::commit(broker, request, version).await;
    response.topics.extend(partitions(
        &listed(&refused),
        TOPIC_DENIED,
        topic_response,
        partition_response,
    ));
    response
}

/// The topics of an OffsetFetch group: refused names taken out of
/// `asked`; when every topic is asked for, the answer is filtered
/// afterwards ([`describable`]).
fn refused_fetch_topics(
    broker: &Broker,
    session: &Session,
    asked: Option<&mut Vec<(TopicName, Vec<i32>)>>,
) -> Vec<(TopicName, Vec<i32>)> {
    match asked {
        Some(topics) => take_refused(topics, |(name, _)| {
            topic(broker, session, Op::Describe, name)
        }),
        None => Vec::new(),
    }
}

fn describable(broker: &Broker, session: &Session, name: &str) -> bool {
    broker
        .auth
        .allows_silently(session, Op::Describe, Resource::Topic, name)
}

pub(super) async fn offset_fetch(
    broker: &Broker,
    session: &Session,
    mut request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        // Refused groups and topics per group; the handler answers the rest.
        let mut refused_groups = Vec::new();
        let mut refused_topics = Vec::new();
        let mut all_topics = Vec::new();
        request.groups.retain_mut(|g| {
            if !group(broker, session, Op::Describe, &g.group_id) {
                refused_groups.push(g.group_id.clone());
                return false;
            }
            match &mut g.topics {
                Some(topics) => {
                    let refused =
                        take_refused(topics, |t| topic(broker, session, Op::Describe, &t.name));
                    let refused: Vec<_> = refused
                        .into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect();
                    refused_topics.push((g.group_id.clone(), refused));
                }
                None => all_topics.push(g.group_id.clone()),
            }
            true
        });
        let mut response = super::offsets::fetch(broker, request, version).await;
        for g in &mut response.groups {
            if all_topics.contains(&g.group_id) {
                g.topics.retain(|t| describable(broker, session, &t.name));
            }
            if let Some((_, refused)) = refused_topics.iter().find(|(id, _)| *id == g.group_id) {
                g.topics.extend(partitions(
                    refused,
                    TOPIC_DENIED,
                    |name, ps| {
                        offset_fetch_response::OffsetFetchResponseTopics::default()
                            .with_name(name)
                            .with_partitions(ps)
                    },
                    |p, code| {
                        offset_fetch_response::OffsetFetchResponsePartitions::default()
                            .with_partition_index(p)
                            .with_committed_offset(-1)
                            .with_committed_leader_epoch(-1)
                            .with_error_code(code)
                    },
                ));
            }
        }
        response.groups.extend(refused_groups.into_iter().map(|id| {
            offset_fetch_response::OffsetFetchResponseGroup::default()
                .with_group_id(id)
                .with_error_code(GROUP_DENIED)
        }));
        return response;
    }
    let topic_response = |name, ps| {
        offset_fetch_response::OffsetFetchResponseTopic::default()
            .with_name(name)
            .with_partitions(ps)
    };
    let partition_response = |p, code| {
        offset_fetch_response::OffsetFetchResponsePartition::default()
            .with_partition_index(p)
            .with_committed_offset(-1)
            .with_committed_leader_epoch(-1)
            .with_error_code(code)
    };
    let mut asked: Option<Vec<(TopicName, Vec<i32>)>> = request.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.clone(), t.partition_indexes.clone()))
            .collect()
    });
    if !group(broker, session, Op::Describe, &request.group_id) {
        let answered = partitions(
            asked.as_deref().unwrap_or_default(),
            GROUP_DENIED,
            topic_response,
            partition_response,
        );
        // v1 has no top-level error code: the partitions carry it.
        let response = OffsetFetchResponse::default().with_topics(answered);
        return if version >= 2 {
            response.with_error_code(GROUP_DENIED)
        } else {
            response
        };
    }
    let refused = refused_fetch_topics(broker, session, asked.as_mut());
    if let Some(topics) = &mut request.topics {
        topics.retain(|t| !refused.iter().any(|(name, _)| *name == t.name));
    }
    let every_topic = request.topics.is_none();
    let mut response = super::offsets::fetch(broker, request, version).await;
    if every_topic {
        response
            .topics
            .retain(|t| describable(broker, session, &t.name));
    }
    response.topics.extend(partitions(
        &refused,
        TOPIC_DENIED,
        topic_response,
        partition_response,
    ));
    response
}

pub(super) async fn list_groups(
    broker: &Broker,
    session: &Session,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let mut response = super::group_admin::list(broker, request).await;
    if !broker
        .auth
        .allows_silently(session, Op::Describe, Resource::Cluster, CLUSTER)
    {
        response.groups.retain(|g| {
            broker
                .auth
                .allows_silently(session, Op::Describe, Resource::Group, &g.group_id)
        });
    }
    response
}

pub(super) async fn describe_groups(
    broker: &Broker,
    session: &Session,
    mut request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let refused = take_refused(&mut request.groups, |g| {
        group(broker, session, Op::Describe, g)
    });
    let mut response = super::group_admin::describe(broker, request, version).await;
    response.groups.extend(refused.into_iter().map(|g| {
        describe_groups_response::DescribedGroup::default()
            .with_group_id(g)
            .with_error_code(GROUP_DENIED)
    }));
    response
}

pub(super) async fn consumer_group_describe(
    broker: &Broker,
    session: &Session,
    mut request: kafka_protocol::messages::ConsumerGroupDescribeRequest,
) -> kafka_protocol::messages::ConsumerGroupDescribeResponse {
    use kafka_protocol::messages::consumer_group_describe_response::DescribedGroup;
    let refused = take_refused(&mut request.group_ids, |g| {
        group(broker, session, Op::Describe, g)
    });
    let mut response = super::consumer_group_describe::handle(broker, request).await;
    response.groups.extend(refused.into_iter().map(|g| {
        DescribedGroup::default()
            .with_group_id(g)
            .with_error_code(GROUP_DENIED)
    }));
    response
}

pub(super) async fn delete_groups(
    broker: &Broker,
    session: &Session,
    mut request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let refused = take_refused(&mut request.groups_names, |g| {
        group(broker, session, Op::Delete, g)
    });
    let mut response = super::group_admin::delete(broker, request).await;
    response.results.extend(refused.into_iter().map(|g| {
        delete_groups_response::DeletableGroupResult::default()
            .with_group_id(g)
            .with_error_code(GROUP_DENIED)
    }));
    response
}

pub(super) async fn offset_delete(
    broker: &Broker,
    session: &Session,
    mut request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    if !group(broker, session, Op::Delete, &request.group_id) {
        return OffsetDeleteResponse::default().with_error_code(GROUP_DENIED);
    }
    let refused = take_refused(&mut request.topics, |t| {
        topic(broker, session, Op::Read, &t.name)
    });
    let refused: Vec<_> = refused
        .into_iter()
        .map(|t| {
            (
                t.name,
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let mut response = super::group_admin::offset_delete(broker, request).await;
    response.topics.extend(partitions(
        &refused,
        TOPIC_DENIED,
        |name, ps| {
            offset_delete_response::OffsetDeleteResponseTopic::default()
                .with_name(name)
                .with_partitions(ps)
        },
        |p, code| {
            offset_delete_response::OffsetDeleteResponsePartition::default()
                .with_partition_index(p)
                .with_error_code(code)
        },
    ));
    response
}

pub(super) async fn init_producer_id(
    broker: &Broker,
    session: &Session,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    match request
        .transactional_id
        .as_deref()
        .filter(|t| !t.is_empty())
    {
        Some(id) if !transactional_id(broker, session, id) => {
            return super::init_producer_id::refuse(TXN_DENIED);
        }
        Some(_) => {}
        None => {
            let idempotent = broker.auth.allows_silently(
                session,
                Op::IdempotentWrite,
                Resource::Cluster,
                CLUSTER,
            ) || broker
                .auth
                .allows_somewhere(session, Op::Write, Resource::Topic);
            if !idempotent && !cluster(broker, session, Op::IdempotentWrite) {
                return super::init_producer_id::refuse(CLUSTER_DENIED);
            }
        }
    }
    super::init_producer_id::handle(broker, request).await
}

pub(super) async fn add_partitions(
    broker: &Broker,
    session: &Session,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if !transactional_id(broker, session, &request.v3_and_below_transactional_id) {
        return super::transactions::refuse_add_partitions(&request, TXN_DENIED).with_error_code(0);
    }
    let refused: Vec<TopicName> = request
        .v3_and_below_topics
        .iter()
        .filter(|t| !topic(broker, session, Op::Write, &t.name))
        .map(|t| t.name.clone())
        .collect();
    if refused.is_empty() {
        return super::transactions::add_partitions(broker, request).await;
    }
    // Kafka's rule: the refused topics fail, the others are not attempted.
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
        super::transactions::partition_results(&request, |name, _| {
            if refused.iter().any(|r| r.as_str() == name) {
                TOPIC_DENIED
            } else {
                ResponseError::OperationNotAttempted.code()
            }
        }),
    )
}

pub(super) async fn add_offsets(
    broker: &Broker,
    session: &Session,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    if !transactional_id(broker, session, &request.transactional_id) {
        return AddOffsetsToTxnResponse::default().with_error_code(TXN_DENIED);
    }
    if !group(broker, session, Op::Read, &request.group_id) {
        return AddOffsetsToTxnResponse::default().with_error_code(GROUP_DENIED);
    }
    super::transactions::add_offsets(broker, request).await
}

pub(super) async fn txn_offset_commit(
    broker: &Broker,
    session: &Session,
    mut request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    if !transactional_id(broker, session, &request.transactional_id) {
        return super::transactions::refuse_commit_offsets(&request, TXN_DENIED);
    }
    if !group(broker, session, Op::Read, &request.group_id) {
        return super::transactions::refuse_commit_offsets(&request, GROUP_DENIED);
    }
    let refused = take_refused(&mut request.topics, |t| {
        topic(broker, session, Op::Read, &t.name)
    });
    let refused_request = TxnOffsetCommitRequest::default().with_topics(refused);
    let mut response = super::transactions::commit_offsets(broker, request).await;
    response
        .topics
        .extend(super::transactions::refuse_commit_offsets(&refused_request, TOPIC_DENIED).topics);
    response
}

pub(super) async fn end_txn(
    broker: &Broker,
    session: &Session,
    request: kafka_protocol::messages::EndTxnRequest,
    version: i16,
) -> kafka_protocol::messages::EndTxnResponse {
    if !transactional_id(broker, session, &request.transactional_id) {
        return kafka_protocol::messages::EndTxnResponse::default()
            .with_error_code(TXN_DENIED)
            .with_producer_id(kafka_protocol::messages::ProducerId(-1))
            .with_producer_epoch(-1);
    }
    super::transactions::end(broker, request, version).await
}

pub(super) async fn list_transactions(
    broker: &Broker,
    session: &Session,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut response = super::transaction_admin::list(broker, request).await;
    response.transaction_states.retain(|t| {
        broker.auth.allows_silently(
            session,
            Op::Describe,
            Resource::TransactionalId,
            &t.transactional_id,
        )
    });
    response
}

pub(super) async fn describe_transactions(
    broker: &Broker,
    session: &Session,
    mut request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let refused = take_refused(&mut request.transactional_ids, |id| {
        broker
            .auth
            .allows(session, Op::Describe, Resource::TransactionalId, id)
    });
    let mut response = super::transaction_admin::describe(broker, request).await;
    // Only the topics the principal may describe, as Kafka answers.
    for state in &mut response.transaction_states {
        state.topics.retain(|t| {
            broker
                .auth
                .allows_silently(session, Op::Describe, Resource::Topic, &t.topic)
        });
    }
    response
        .transaction_states
        .extend(refused.into_iter().map(|id| {
            describe_transactions_response::TransactionState::default()
                .with_transactional_id(id)
                .with_error_code(TXN_DENIED)
        }));
    response
}

pub(super) async fn describe_cluster(
    broker: &Broker,
    session: &Session,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    if !cluster(broker, session, Op::Describe) {
        return DescribeClusterResponse::default()
            .with_error_code(CLUSTER_DENIED)
            .with_error_message(Some(StrBytes::from_string(format!(
                "{} may not describe the cluster",
                session.principal
            ))));
    }
    super::cluster::describe(broker, request).await
}
