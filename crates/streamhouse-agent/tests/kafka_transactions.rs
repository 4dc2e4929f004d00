//! Kafka transactions with a raw client: InitProducerId with a
//! transactional id, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit,
//! EndTxn (keeping the epoch before KIP-890, moving it with v5), fetches
//! at read_committed (last stable offset, aborted transactions), zombies
//! fenced on every path, timeouts, and the transaction admin APIs.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use streamhouse_core::{NewRecord, RecordBatch};

mod common;
use common::kafka::*;

const TID: &str = "txn-app";

fn tid() -> TransactionalId {
    TransactionalId(StrBytes::from_static_str(TID))
}

/// A transactional batch of `n` records starting at `sequence`.
fn txn_batch(id: (i64, i16), sequence: i32, n: usize, tag: &str) -> Bytes {
    let mut batch = RecordBatch::from_records(
        (0..n).map(|i| NewRecord::new(1_700_000_000_000, None, format!("{tag}-{i}"))),
    )
    .with_producer(id.0, id.1, sequence);
    batch.attributes = batch.attributes.with_transactional(true);
    batch.encode().unwrap()
}

async fn init(conn: &mut Conn, timeout_ms: i32) -> (i64, i16) {
    let r: InitProducerIdResponse = conn
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(tid()))
                .with_transaction_timeout_ms(timeout_ms)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    assert_eq!(r.error_code, 0);
    (r.producer_id.0, r.producer_epoch)
}

async fn add_partition(conn: &mut Conn, id: (i64, i16), partition: i32) -> i16 {
    let r: AddPartitionsToTxnResponse = conn
        .call(
            ApiKey::AddPartitionsToTxn,
            3,
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(tid())
                .with_v3_and_below_producer_id(ProducerId(id.0))
                .with_v3_and_below_producer_epoch(id.1)
                .with_v3_and_below_topics(vec![
                    AddPartitionsToTxnTopic::default()
                        .with_name(topic("t"))
                        .with_partitions(vec![partition]),
                ]),
        )
        .await;
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

async fn end(conn: &mut Conn, version: i16, id: (i64, i16), commit: bool) -> EndTxnResponse {
    conn.call(
        ApiKey::EndTxn,
        version,
        &EndTxnRequest::default()
            .with_transactional_id(tid())
            .with_producer_id(ProducerId(id.0))
            .with_producer_epoch(id.1)
            .with_committed(commit),
    )
    .await
}

async fn txn_offsets(conn: &mut Conn, id: (i64, i16), offset: i64) -> i16 {
    let add: AddOffsetsToTxnResponse = conn
        .call(
            ApiKey::AddOffsetsToTxn,
            3,
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(tid())
                .with_producer_id(ProducerId(id.0))
                .with_producer_epoch(id.1)
                .with_group_id(GroupId(StrBytes::from_static_str("g"))),
        )
        .await;
    if add.error_code != 0 {
        return add.error_code;
    }
    let r: TxnOffsetCommitResponse = conn
        .call(
            ApiKey::TxnOffsetCommit,
            3,
            &TxnOffsetCommitRequest::default()
                .with_transactional_id(tid())
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_producer_id(ProducerId(id.0))
                .with_producer_epoch(id.1)
                .with_generation_id(-1)
                .with_topics(vec![
                    TxnOffsetCommitRequestTopic::default()
                        .with_name(topic("t"))
                        .with_partitions(vec![
                            TxnOffsetCommitRequestPartition::default()
                                .with_partition_index(1)
                                .with_committed_offset(offset),
                        ]),
                ]),
        )
        .await;
    r.topics[0].partitions[0].error_code
}

/// Partition 0 of `t` fetched from 0 at `isolation`: high watermark, last
/// stable offset, aborted transactions and record bytes.
async fn fetch(conn: &mut Conn, isolation: i8) -> (i64, i64, Vec<(i64, i64)>, usize) {
    let r: FetchResponse = conn
        .call(
            ApiKey::Fetch,
            11,
            &fetch_request(vec![("t", 0, 0, 1 << 20)]).with_isolation_level(isolation),
        )
        .await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    (
        p.high_watermark,
        p.last_stable_offset,
        p.aborted_transactions
            .iter()
            .flatten()
            .map(|a| (a.producer_id.0, a.first_offset))
            .collect(),
        p.records.as_ref().map_or(0, |r| r.len()),
    )
}

async fn committed_offset(conn: &mut Conn) -> i64 {
    let r: OffsetFetchResponse = conn
        .call(
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic("t"))
                        .with_partition_indexes(vec![1]),
                ])),
        )
        .await;
    r.topics[0].partitions[0].committed_offset
}

async fn describe(conn: &mut Conn) -> describe_transactions_response::TransactionState {
    let r: DescribeTransactionsResponse = conn
        .call(
            ApiKey::DescribeTransactions,
            0,
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![tid()]),
        )
        .await;
    r.transaction_states.into_iter().next().unwrap()
}

#[tokio::test]
async fn transactions_commit_abort_and_keep_their_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let mut conn = Conn::open(&agent).await;
    create(&mut conn, "t").await;
    let id = init(&mut conn, 60_000).await;
    assert_eq!(
        describe(&mut conn).await.transaction_state.as_str(),
        "Empty"
    );

    // An aborted transaction: 3 records, the abort marker at 3.
    assert_eq!(add_partition(&mut conn, id, 0).await, 0);
    assert_eq!(
        produce(&mut conn, "t", 0, txn_batch(id, 0, 3, "a")).await,
        (0, 0)
    );
    let state = describe(&mut conn).await;
    assert_eq!(state.transaction_state.as_str(), "Ongoing");
    assert_eq!(state.topics[0].partitions, [0]);
    let (hw, lso, _, bytes) = fetch(&mut conn, 1).await;
    assert_eq!(
        (hw, lso, bytes),
        (3, 0, 0),
        "read_committed stops at the open transaction"
    );
    let (_, _, _, bytes) = fetch(&mut conn, 0).await;
    assert!(bytes > 0, "read_uncommitted sees it");
    assert_eq!(txn_offsets(&mut conn, id, 3).await, 0);
    let r = end(&mut conn, 3, id, false).await;
    assert_eq!(r.error_code, 0);
    let (hw, lso, aborted, _) = fetch(&mut conn, 1).await;
    assert_eq!((hw, lso), (4, 4));
    assert_eq!(aborted, [(id.0, 0)]);
    assert_eq!(
        committed_offset(&mut conn).await,
        -1,
        "aborted offsets are dropped"
    );
    assert_eq!(
        describe(&mut conn).await.transaction_state.as_str(),
        "CompleteAbort"
    );

    // The next transaction keeps the epoch and continues the sequences.
    assert_eq!(add_partition(&mut conn, id, 0).await, 0);
    assert_eq!(
        produce(&mut conn, "t", 0, txn_batch(id, 3, 2, "b")).await,
        (0, 4)
    );
    assert_eq!(txn_offsets(&mut conn, id, 6).await, 0);
    // DescribeProducers shows the open transaction's first offset.
    let r: DescribeProducersResponse = conn
        .call(
            ApiKey::DescribeProducers,
            0,
            &DescribeProducersRequest::default().with_topics(vec![
                TopicRequest::default()
                    .with_name(topic("t"))
                    .with_partition_indexes(vec![0, 7]),
            ]),
        )
        .await;
    let partitions = &r.topics[0].partitions;
    let p = &partitions[0].active_producers[0];
    assert_eq!(
        (p.producer_id.0, p.last_sequence, p.current_txn_start_offset),
        (id.0, 4, 4)
    );
    assert_eq!(partitions[1].error_code, 3, "partition 7 does not exist");
    let r = end(&mut conn, 3, id, true).await;
    assert_eq!(r.error_code, 0);
    // A retried commit is answered; an abort of the ended one is refused.
    assert_eq!(end(&mut conn, 3, id, true).await.error_code, 0);
    assert_eq!(end(&mut conn, 3, id, false).await.error_code, 48);
    let (hw, lso, aborted, _) = fetch(&mut conn, 1).await;
    assert_eq!((hw, lso), (7, 7));
    assert_eq!(aborted, [(id.0, 0)]);
    assert_eq!(committed_offset(&mut conn).await, 6);
    let listed: ListTransactionsResponse = conn
        .call(
            ApiKey::ListTransactions,
            1,
            &ListTransactionsRequest::default()
                .with_state_filters(vec![
                    StrBytes::from_static_str("CompleteCommit"),
                    StrBytes::from_static_str("Bogus"),
                ])
                .with_duration_filter(-1),
        )
        .await;
    assert_eq!(listed.transaction_states.len(), 1);
    assert_eq!(listed.transaction_states[0].producer_id.0, id.0);
    assert_eq!(
        listed.unknown_state_filters,
        [StrBytes::from_static_str("Bogus")]
    );

    // EndTxn v5 (KIP-890) moves the producer to its next epoch.
    assert_eq!(add_partition(&mut conn, id, 0).await, 0);
    assert_eq!(
        produce(&mut conn, "t", 0, txn_batch(id, 5, 1, "c")).await,
        (0, 7)
    );
    let r = end(&mut conn, 5, id, true).await;
    assert_eq!(
        (r.error_code, r.producer_id.0, r.producer_epoch),
        (0, id.0, id.1 + 1)
    );
    let next = (id.0, id.1 + 1);
    assert_eq!(add_partition(&mut conn, next, 0).await, 0);
    assert_eq!(
        produce(&mut conn, "t", 0, txn_batch(next, 0, 1, "d")).await,
        (0, 9)
    );
    assert_eq!(end(&mut conn, 5, next, true).await.error_code, 0);
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_zombie_is_fenced_on_produce_offsets_and_end() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let mut conn = Conn::open(&agent).await;
    create(&mut conn, "t").await;
    let zombie = init(&mut conn, 60_000).await;
    assert_eq!(add_partition(&mut conn, zombie, 0).await, 0);
    assert_eq!(
        produce(&mut conn, "t", 0, txn_batch(zombie, 0, 2, "z")).await,
        (0, 0)
    );

    // A new instance aborts what the zombie left open and fences it.
    let fresh = init(&mut conn, 60_000).await;
    assert_eq!(fresh.0, zombie.0);
    assert!(fresh.1 > zombie.1);
    let (_, lso, aborted, _) = fetch(&mut conn, 1).await;
    assert_eq!((lso, aborted), (3, vec![(zombie.0, 0)]));
    assert_eq!(
        produce(&mut conn, "t", 0, txn_batch(zombie, 2, 1, "z"))
            .await
            .0,
        47
    );
    assert_eq!(add_partition(&mut conn, zombie, 0).await, 90);
    assert_eq!(txn_offsets(&mut conn, zombie, 1).await, 90);
    assert_eq!(end(&mut conn, 3, zombie, true).await.error_code, 90);
    // A KIP-360 bump by the zombie is fenced; one by the current instance
    // bumps.
    let bump = |id: (i64, i16)| {
        InitProducerIdRequest::default()
            .with_transactional_id(Some(tid()))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(id.0))
            .with_producer_epoch(id.1)
    };
    let r: InitProducerIdResponse = conn.call(ApiKey::InitProducerId, 4, &bump(zombie)).await;
    assert_eq!(r.error_code, 90);
    let r: InitProducerIdResponse = conn.call(ApiKey::InitProducerId, 4, &bump(fresh)).await;
    assert_eq!((r.error_code, r.producer_epoch), (0, fresh.1 + 1));
    // The wrong producer id for the transactional id.
    let wrong = (fresh.0 + 100, 0);
    assert_eq!(add_partition(&mut conn, wrong, 0).await, 49);
    // Timeouts outside 1 ms..15 min are refused.
    let r: InitProducerIdResponse = conn
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(tid()))
                .with_transaction_timeout_ms(0)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    assert_eq!(r.error_code, 50);
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&dir).await;
    let mut conn = Conn::open(&agent).await;
    create(&mut conn, "t").await;
    let id = init(&mut conn, 300).await;
    assert_eq!(add_partition(&mut conn, id, 0).await, 0);
    assert_eq!(
        produce(&mut conn, "t", 0, txn_batch(id, 0, 2, "x")).await,
        (0, 0)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while describe(&mut conn).await.transaction_state.as_str() != "CompleteAbort" {
        assert!(
            Instant::now() < deadline,
            "the transaction was never aborted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, lso, aborted, _) = fetch(&mut conn, 1).await;
    assert_eq!((lso, aborted), (3, vec![(id.0, 0)]));
    assert_eq!(end(&mut conn, 3, id, true).await.error_code, 90);
    agent.shutdown().await.unwrap();
}
