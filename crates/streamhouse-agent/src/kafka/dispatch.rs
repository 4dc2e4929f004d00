//! From a request frame to the future of its answer: the header, the API
//! key and version, the body decoded by `kafka-protocol`, the handler, and
//! the answer encoded at the request's version.
//!
//! A version inside the codec's range but outside ours is answered with
//! UNSUPPORTED_VERSION in the API's own response (ApiVersions answers at
//! v0, as Kafka does, so that any client can read it); a frame that cannot
//! be decoded (unknown API key, a version no Kafka release defines, a
//! malformed body) is an error that closes the connection.

use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Message};

use super::connection::Peer;
use super::metrics::{self, ErrorCodes};
use super::{
    Broker, acl_admin, admin, api_versions, authz, authz_groups, bounds, classic_groups, cluster,
    configs, consumer_group_describe, consumer_groups, coordinator, delete_records, fetch,
    group_admin, init_producer_id, list_offsets, metadata, offsets, produce, sasl,
    transaction_admin, transactions, user_admin,
};
use crate::error::{Error, Result};

/// The answer to one request: its encoded frame, or `None` when the
/// request is not answered (produce with acks=0).
pub(super) type Reply = Pin<Box<dyn Future<Output = Result<Option<Bytes>>> + Send>>;

const UNSUPPORTED_VERSION: i16 = ResponseError::UnsupportedVersion.code();

/// Parses one request frame and starts handling it. Produce requests are
/// submitted to the pipeline before this returns, so the requests of a
/// connection reach the pipeline in the order they were sent; everything
/// else happens in the returned future.
pub(super) async fn request(
    broker: &Arc<Broker>,
    frame: Bytes,
    peer: &Peer,
    sasl: &mut sasl::Conn,
) -> Result<Reply> {
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(api_key)
        .map_err(|()| Error::KafkaConnection(format!("unknown API key {api_key}")))?;
    if !sasl.authenticated()
        && !matches!(
            api,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        )
    {
        return Err(Error::KafkaConnection(format!(
            "{api:?} request before SASL authentication, which this agent requires"
        )));
    }
    ::metrics::counter!("streamhouse_kafka_requests_total", "api" => format!("{api:?}"))
        .increment(1);
    if api == ApiKey::ApiVersions && !api_versions::VERSIONS.contains(&version) {
        // The body may be of a version we cannot parse: answer at v0.
        let body = api_versions::unsupported();
        return done(api, 0, correlation_id, &body);
    }
    let mut body = frame;
    let header = RequestHeader::decode(&mut body, api.request_header_version(version))
        .map_err(codec("request header"))?;
    let zone = header
        .client_id
        .as_deref()
        .and_then(super::brokers::client_zone)
        .map(str::to_string);
    let b = broker.clone();
    let session = peer.session.clone();
    match api {
        ApiKey::ApiVersions => {
            let _: kafka_protocol::messages::ApiVersionsRequest = decode(api, &mut body, version)?;
            done(api, version, correlation_id, &api_versions::supported())
        }
        ApiKey::SaslHandshake => {
            let r = decode(api, &mut body, version)?;
            if !sasl::HANDSHAKE_VERSIONS.contains(&version) {
                let refused = kafka_protocol::messages::SaslHandshakeResponse::default()
                    .with_error_code(UNSUPPORTED_VERSION);
                return done(api, version, correlation_id, &refused);
            }
            step(api, version, correlation_id, sasl.handshake(&r))
        }
        ApiKey::SaslAuthenticate => {
            let r = decode(api, &mut body, version)?;
            step(api, version, correlation_id, sasl.authenticate(&r))
        }
        ApiKey::Metadata => {
            let r = decode(api, &mut body, version)?;
            if !metadata::VERSIONS.contains(&version) {
                return done(
                    api,
                    version,
                    correlation_id,
                    &metadata::refuse(UNSUPPORTED_VERSION),
                );
            }
            Ok(reply(api, version, correlation_id, async move {
                metadata::handle(&b, r, version, zone.as_deref(), &session).await
            }))
        }
        ApiKey::Produce => {
            let mut r: kafka_protocol::messages::ProduceRequest = decode(api, &mut body, version)?;
            let acks = r.acks;
            if !produce::VERSIONS.contains(&version) {
                let refused = produce::refuse(&r, UNSUPPORTED_VERSION);
                return if acks == 0 {
                    Ok(Box::pin(async { Ok(None) }))
                } else {
                    done(api, version, correlation_id, &refused)
                };
            }
            let refused = authz::produce(&b, &session, &mut r);
            let committed = produce::submit(&b, r).await;
            Ok(Box::pin(async move {
                let mut response = committed.answer().await;
                response.responses.extend(refused);
                metrics::count(api, &response);
                if acks == 0 {
                    return Ok(None);
                }
                encode(api, version, correlation_id, &response).map(Some)
            }))
        }
        ApiKey::Fetch => {
            let r = decode(api, &mut body, version)?;
            if !fetch::VERSIONS.contains(&version) {
                return done(
                    api,
                    version,
                    correlation_id,
                    &fetch::refuse(UNSUPPORTED_VERSION),
                );
            }
            Ok(reply(api, version, correlation_id, async move {
                authz::fetch(&b, &session, r, version).await
            }))
        }
        ApiKey::ListOffsets => {
            let r = decode(api, &mut body, version)?;
            if !list_offsets::VERSIONS.contains(&version) {
                let refused = list_offsets::refuse(&r, UNSUPPORTED_VERSION);
                return done(api, version, correlation_id, &refused);
            }
            Ok(reply(api, version, correlation_id, async move {
                authz::list_offsets(&b, &session, r, version).await
            }))
        }
        ApiKey::InitProducerId => {
            if !init_producer_id::VERSIONS.contains(&version) {
                known::<kafka_protocol::messages::InitProducerIdRequest>(version)?;
                let refused = init_producer_id::refuse(UNSUPPORTED_VERSION);
                return done(api, version, correlation_id, &refused);
            }
            let r = decode(api, &mut body, version)?;
            Ok(reply(api, version, correlation_id, async move {
                authz_groups::init_producer_id(&b, &session, r).await
            }))
        }
        ApiKey::CreateTopics => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz::create_topics(&b, &session, r, version).await },
        ),
        ApiKey::DeleteTopics => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz::delete_topics(&b, &session, r, version).await },
        ),
        ApiKey::CreatePartitions => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz::create_partitions(&b, &session, r).await },
        ),
        ApiKey::DescribeConfigs => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz::describe_configs(&b, &session, r).await },
        ),
        ApiKey::AlterConfigs => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz::alter_configs(&b, &session, r).await },
        ),
        ApiKey::IncrementalAlterConfigs => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz::incremental_alter_configs(&b, &session, r).await },
        ),
        ApiKey::DescribeCluster => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz_groups::describe_cluster(&b, &session, r).await },
        ),
        ApiKey::OffsetForLeaderEpoch => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz::leader_epochs(&b, &session, r).await },
        ),
        ApiKey::DeleteRecords => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz::delete_records(&b, &session, r).await },
        ),
        ApiKey::FindCoordinator => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz_groups::find_coordinator(&b, &session, r, version).await },
        ),
        ApiKey::OffsetCommit => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz_groups::offset_commit(&b, &session, r, version).await },
        ),
        ApiKey::OffsetFetch => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz_groups::offset_fetch(&b, &session, r, version).await },
        ),
        ApiKey::JoinGroup => {
            let client_id = header.client_id.as_deref().unwrap_or_default().to_string();
            let peer = peer.clone();
            handled(
                api,
                version,
                correlation_id,
                &mut body,
                move |r| async move { classic_groups::join(&b, r, version, client_id, peer).await },
            )
        }
        ApiKey::SyncGroup => {
            let peer = peer.clone();
            handled(
                api,
                version,
                correlation_id,
                &mut body,
                move |r| async move { classic_groups::sync(&b, r, version, &peer).await },
            )
        }
        ApiKey::Heartbeat => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { classic_groups::heartbeat(&b, r, &session).await },
        ),
        ApiKey::LeaveGroup => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { classic_groups::leave(&b, r, version, &session).await },
        ),
        ApiKey::ListGroups => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz_groups::list_groups(&b, &session, r).await },
        ),
        ApiKey::DescribeGroups => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz_groups::describe_groups(&b, &session, r, version).await },
        ),
        ApiKey::DeleteGroups => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz_groups::delete_groups(&b, &session, r).await },
        ),
        ApiKey::OffsetDelete => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz_groups::offset_delete(&b, &session, r).await },
        ),
        ApiKey::ConsumerGroupHeartbeat => {
            let client_id = header.client_id.as_deref().unwrap_or_default().to_string();
            handled(
                api,
                version,
                correlation_id,
                &mut body,
                move |r| async move {
                    consumer_groups::heartbeat(&b, r, version, client_id, &session).await
                },
            )
        }
        ApiKey::ConsumerGroupDescribe => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz_groups::consumer_group_describe(&b, &session, r).await },
        ),
        ApiKey::AddPartitionsToTxn => served(
            api,
            version,
            correlation_id,
            &mut body,
            transactions::ADD_PARTITIONS_VERSIONS,
            transactions::refuse_add_partitions,
            move |r| async move { authz_groups::add_partitions(&b, &session, r).await },
        ),
        ApiKey::AddOffsetsToTxn => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz_groups::add_offsets(&b, &session, r).await },
        ),
        ApiKey::TxnOffsetCommit => served(
            api,
            version,
            correlation_id,
            &mut body,
            transactions::TXN_OFFSET_COMMIT_VERSIONS,
            transactions::refuse_commit_offsets,
            move |r| async move { authz_groups::txn_offset_commit(&b, &session, r).await },
        ),
        ApiKey::EndTxn => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz_groups::end_txn(&b, &session, r, version).await },
        ),
        ApiKey::ListTransactions => served(
            api,
            version,
            correlation_id,
            &mut body,
            transaction_admin::LIST_VERSIONS,
            |_, code| {
                kafka_protocol::messages::ListTransactionsResponse::default().with_error_code(code)
            },
            move |r| async move { authz_groups::list_transactions(&b, &session, r).await },
        ),
        ApiKey::DescribeTransactions => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz_groups::describe_transactions(&b, &session, r).await },
        ),
        ApiKey::DescribeProducers => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { authz::describe_producers(&b, &session, r).await },
        ),
        ApiKey::CreateAcls => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { acl_admin::create(&b, &session, r).await },
        ),
        ApiKey::DescribeAcls => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { acl_admin::describe(&b, &session, r).await },
        ),
        ApiKey::DeleteAcls => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { acl_admin::delete(&b, &session, r).await },
        ),
        ApiKey::DescribeUserScramCredentials => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { user_admin::describe(&b, &session, r).await },
        ),
        ApiKey::AlterUserScramCredentials => handled(
            api,
            version,
            correlation_id,
            &mut body,
            move |r| async move { user_admin::alter(&b, &session, r).await },
        ),
        other => Err(Error::KafkaConnection(format!(
            "API {other:?} (key {api_key}) is not served"
        ))),
    }
}

/// Every API this listener serves, with the versions it serves, by API key.
pub(super) const SERVED: &[(ApiKey, RangeInclusive<i16>)] = &[
    (ApiKey::Produce, produce::VERSIONS),
    (ApiKey::Fetch, fetch::VERSIONS),
    (ApiKey::ListOffsets, list_offsets::VERSIONS),
    (ApiKey::Metadata, metadata::VERSIONS),
    (ApiKey::OffsetCommit, offsets::COMMIT_VERSIONS),
    (ApiKey::OffsetFetch, offsets::FETCH_VERSIONS),
    (ApiKey::FindCoordinator, coordinator::VERSIONS),
    (ApiKey::ApiVersions, api_versions::VERSIONS),
    (ApiKey::SaslHandshake, sasl::HANDSHAKE_VERSIONS),
    (ApiKey::SaslAuthenticate, sasl::AUTHENTICATE_VERSIONS),
    (ApiKey::CreateTopics, admin::CREATE_TOPICS_VERSIONS),
    (ApiKey::DeleteTopics, admin::DELETE_TOPICS_VERSIONS),
    (ApiKey::DeleteRecords, delete_records::VERSIONS),
    (ApiKey::InitProducerId, init_producer_id::VERSIONS),
    (ApiKey::OffsetForLeaderEpoch, cluster::LEADER_EPOCH_VERSIONS),
    (ApiKey::DescribeConfigs, configs::DESCRIBE_VERSIONS),
    (ApiKey::AlterConfigs, configs::ALTER_VERSIONS),
    (ApiKey::CreatePartitions, admin::CREATE_PARTITIONS_VERSIONS),
    (
        ApiKey::IncrementalAlterConfigs,
        configs::INCREMENTAL_VERSIONS,
    ),
    (ApiKey::DescribeCluster, cluster::DESCRIBE_CLUSTER_VERSIONS),
    (ApiKey::JoinGroup, classic_groups::JOIN_VERSIONS),
    (ApiKey::SyncGroup, classic_groups::SYNC_VERSIONS),
    (ApiKey::Heartbeat, classic_groups::HEARTBEAT_VERSIONS),
    (ApiKey::LeaveGroup, classic_groups::LEAVE_VERSIONS),
    (ApiKey::ListGroups, group_admin::LIST_VERSIONS),
    (ApiKey::DescribeGroups, group_admin::DESCRIBE_VERSIONS),
    (ApiKey::DeleteGroups, group_admin::DELETE_VERSIONS),
    (ApiKey::OffsetDelete, group_admin::OFFSET_DELETE_VERSIONS),
    (ApiKey::ConsumerGroupHeartbeat, consumer_groups::VERSIONS),
    (
        ApiKey::ConsumerGroupDescribe,
        consumer_group_describe::VERSIONS,
    ),
    (
        ApiKey::AddPartitionsToTxn,
        transactions::ADD_PARTITIONS_VERSIONS,
    ),
    (ApiKey::AddOffsetsToTxn, transactions::ADD_OFFSETS_VERSIONS),
    (
        ApiKey::TxnOffsetCommit,
        transactions::TXN_OFFSET_COMMIT_VERSIONS,
    ),
    (ApiKey::EndTxn, transactions::END_VERSIONS),
    (ApiKey::ListTransactions, transaction_admin::LIST_VERSIONS),
    (
        ApiKey::DescribeTransactions,
        transaction_admin::DESCRIBE_VERSIONS,
    ),
    (
        ApiKey::DescribeProducers,
        transaction_admin::DESCRIBE_PRODUCERS_VERSIONS,
    ),
    (ApiKey::DescribeAcls, acl_admin::DESCRIBE_VERSIONS),
    (ApiKey::CreateAcls, acl_admin::CREATE_VERSIONS),
    (ApiKey::DeleteAcls, acl_admin::DELETE_VERSIONS),
    (
        ApiKey::DescribeUserScramCredentials,
        user_admin::DESCRIBE_VERSIONS,
    ),
    (
        ApiKey::AlterUserScramCredentials,
        user_admin::ALTER_VERSIONS,
    ),
];

fn codec<E>(what: &'static str) -> impl FnOnce(E) -> Error
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    move |e| Error::KafkaProtocol {
        what: what.to_string(),
        source: e.into(),
    }
}

/// An error unless the codec knows `version` of `R` (otherwise the body's
/// layout, and the answer's, are unknown).
fn known<R: Message>(version: i16) -> Result<()> {
    if version < R::VERSIONS.min || version > R::VERSIONS.max {
        return Err(Error::KafkaConnection(format!(
            "request version {version} is outside {}..={}",
            R::VERSIONS.min,
            R::VERSIONS.max
        )));
    }
    Ok(())
}

/// The request body at `version`, once its array counts are known to fit
/// ([`bounds`]).
fn decode<R: Decodable + Message>(api: ApiKey, body: &mut Bytes, version: i16) -> Result<R> {
    known::<R>(version)?;
    bounds::check(api, version, body)?;
    R::decode(body, version).map_err(codec("request body"))
}

/// The frame of an answer: size, response header, body. An answer the
/// codec refuses is a bug of ours: logged, and the connection closes.
fn encode<T: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &T) -> Result<Bytes> {
    encode_frame(api, version, correlation_id, body).inspect_err(|e| {
        tracing::warn!(?api, version, error = %e, "a Kafka answer could not be encoded");
    })
}

fn encode_frame<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes> {
    let header_version = api.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + body.compute_size(version)?))
        .map_err(codec("response size"))?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header
        .encode(&mut buf, header_version)
        .map_err(codec("response header"))?;
    body.encode(&mut buf, version)
        .map_err(codec("response body"))?;
    Ok(buf.freeze())
}

/// Decodes a request the handler serves at every version the codec knows,
/// and starts the handler.
fn handled<R, T, F, A>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &mut Bytes,
    handler: F,
) -> Result<Reply>
where
    R: Decodable + Message,
    T: Encodable + ErrorCodes,
    F: FnOnce(R) -> A,
    A: Future<Output = T> + Send + 'static,
{
    let request = decode(api, body, version)?;
    Ok(reply(api, version, correlation_id, handler(request)))
}

/// Like [`handled`] for an API served at only some of the versions the
/// codec knows: a request of another version is answered by `refuse`
/// with UNSUPPORTED_VERSION.
fn served<R, T, F, A>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &mut Bytes,
    versions: RangeInclusive<i16>,
    refuse: fn(&R, i16) -> T,
    handler: F,
) -> Result<Reply>
where
    R: Decodable + Message,
    T: Encodable + ErrorCodes,
    F: FnOnce(R) -> A,
    A: Future<Output = T> + Send + 'static,
{
    let request = decode(api, body, version)?;
    if !versions.contains(&version) {
        return done(
            api,
            version,
            correlation_id,
            &refuse(&request, UNSUPPORTED_VERSION),
        );
    }
    Ok(reply(api, version, correlation_id, handler(request)))
}

fn done<T: Encodable + ErrorCodes>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Reply> {
    metrics::count(api, body);
    let frame = encode(api, version, correlation_id, body)?;
    Ok(Box::pin(async move { Ok(Some(frame)) }))
}

/// The answer of a SASL step; a failed step is answered after a delay.
fn step<T: Encodable + ErrorCodes + Send + 'static>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    step: sasl::Step<T>,
) -> Result<Reply> {
    match step {
        sasl::Step::Answer(body) => done(api, version, correlation_id, &body),
        sasl::Step::Fail(body) => Ok(reply(api, version, correlation_id, async move {
            sasl::delay_failure().await;
            body
        })),
    }
}

fn reply<T, F>(api: ApiKey, version: i16, correlation_id: i32, answer: F) -> Reply
where
    T: Encodable + ErrorCodes,
    F: Future<Output = T> + Send + 'static,
{
    Box::pin(async move {
        let body = answer.await;
        metrics::count(api, &body);
        encode(api, version, correlation_id, &body).map(Some)
    })
}
