//! The agent's gRPC API with a raw client: precise errors, malformed and
//! oversize requests rejected alone, idempotent retries answered with their
//! original offsets.

use std::time::Duration;

use bytes::Bytes;
use streamhouse_agent::{Agent, AgentConfig, RunningAgent};
use streamhouse_core::{NewRecord, RecordBatch};
use streamhouse_proto as pb;
use streamhouse_proto::ErrorCode;
use streamhouse_proto::stream_house_client::StreamHouseClient;
use tonic::Code;
use tonic::transport::Channel;

async fn start(dir: &tempfile::TempDir) -> (RunningAgent, StreamHouseClient<Channel>) {
    let mut config = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metadata_url: format!("sqlite://{}", dir.path().join("metadata.db").display()),
        storage_url: format!("file://{}", dir.path().join("objects").display()),
        ..AgentConfig::default()
    };
    config.pipeline.linger = Duration::from_millis(2);
    config.limits.max_request_bytes = 1 << 20;
    config.limits.max_batch_bytes = 64 << 10;
    let agent = Agent::start(config).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", agent.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = StreamHouseClient::new(channel).max_encoding_message_size(16 << 20);
    (agent, client)
}

fn batch(values: &[&str]) -> Bytes {
    RecordBatch::from_records(
        values
            .iter()
            .map(|v| NewRecord::new(1, None, v.to_string())),
    )
    .encode()
    .unwrap()
}

async fn create(client: &mut StreamHouseClient<Channel>, name: &str, partitions: u32) {
    client
        .create_topic(pb::CreateTopicRequest {
            name: name.into(),
            partition_count: partitions,
            ..Default::default()
        })
        .await
        .unwrap();
}

fn records(topic: &str, partition: u32, records: Bytes) -> pb::PartitionRecords {
    pb::PartitionRecords {
        topic: topic.into(),
        partition,
        records,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_errors_map_to_precise_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, mut c) = start(&dir).await;
    create(&mut c, "t", 2).await;
    let err = c
        .create_topic(pb::CreateTopicRequest {
            name: "t".into(),
            partition_count: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("\"t\""), "{}", err.message());
    for (name, partitions) in [("", 1), ("a b", 1), ("ok", 0)] {
        let err = c
            .create_topic(pb::CreateTopicRequest {
                name: name.into(),
                partition_count: partitions,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{name:?}: {}",
            err.message()
        );
    }
    let err = c
        .describe_topic(pb::DescribeTopicRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .delete_topic(pb::DeleteTopicRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let meta = c
        .get_metadata(pb::MetadataRequest {
            topics: vec!["t".into(), "nope".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.topics.len(), 1);
    assert_eq!(meta.unknown_topics, ["nope"]);
    assert_eq!(meta.agents.len(), 1);
    assert_eq!(meta.agents[0].address, agent.local_addr().to_string());
    let listed = c
        .list_topics(pb::ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.topics.len(), 1);
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_partitions_are_rejected_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, mut c) = start(&dir).await;
    create(&mut c, "t", 2).await;
    let good = batch(&["a", "b"]);
    let mut corrupt = good.to_vec();
    *corrupt.last_mut().unwrap() ^= 1;
    let big = batch(&[&"x".repeat(100_000)]);
    let response = c
        .produce(pb::ProduceRequest {
            partitions: vec![
                records("t", 0, good.clone()),
                records("t", 1, Bytes::from(corrupt)),
                records("t", 7, good.clone()),
                records("nope", 0, good.clone()),
                records("t", 1, Bytes::from_static(b"garbage")),
                records("t", 1, Bytes::new()),
                records("t", 1, big),
                records("t", 0, [good.clone(), good.clone()].concat().into()),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<_> = response.results.iter().map(|r| r.error).collect();
    assert_eq!(
        codes,
        [
            ErrorCode::None,
            ErrorCode::InvalidRecord,
            ErrorCode::None,
            ErrorCode::None,
            ErrorCode::InvalidRecord,
            ErrorCode::InvalidRecord,
            ErrorCode::RecordTooLarge,
            ErrorCode::None,
        ]
        .map(|c| c as i32)
    );
    assert!(
        response.results[1].message.contains("CRC"),
        "{}",
        response.results[1].message
    );
    assert!(response.results[1].message.contains("partition 1"));
    // Unknown partitions and topics fail per batch, named.
    let unknown = &response.results[2].batches[0];
    assert_eq!(unknown.error, ErrorCode::UnknownPartition as i32);
    assert!(
        unknown.message.contains("no partition 7"),
        "{}",
        unknown.message
    );
    assert_eq!(
        response.results[3].batches[0].error,
        ErrorCode::UnknownTopic as i32
    );
    // The good entries were committed, in order.
    assert_eq!(response.results[0].batches[0].base_offset, 0);
    let bases: Vec<_> = response.results[7]
        .batches
        .iter()
        .map(|b| b.base_offset)
        .collect();
    assert_eq!(bases, [2, 4]);

    // A request over the size limit is refused whole; the agent goes on.
    let huge = vec![records("t", 0, Bytes::from(vec![0u8; 2 << 20]))];
    let err = c
        .produce(pb::ProduceRequest { partitions: huge })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err}");
    assert!(err.message().contains("too large"), "{err}");
    let ok = c
        .produce(pb::ProduceRequest {
            partitions: vec![records("t", 0, good)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.results[0].batches[0].base_offset, 6);
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_get_their_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, mut c) = start(&dir).await;
    create(&mut c, "i", 1).await;
    let id = c
        .init_producer_id(pb::InitProducerIdRequest::default())
        .await
        .unwrap()
        .into_inner();
    let epoch = id.producer_epoch as i16;
    let seq_batch = |seq: i32, v: &str| {
        RecordBatch::from_records([NewRecord::new(1, None, v.to_string())])
            .with_producer(id.producer_id, epoch, seq)
            .encode()
            .unwrap()
    };
    let produce = |b: Bytes| pb::ProduceRequest {
        partitions: vec![records("i", 0, b)],
    };
    let first = c
        .produce(produce(seq_batch(0, "a")))
        .await
        .unwrap()
        .into_inner();
    let retry = c
        .produce(produce(seq_batch(0, "a")))
        .await
        .unwrap()
        .into_inner();
    let (f, r) = (&first.results[0].batches[0], &retry.results[0].batches[0]);
    assert_eq!((f.base_offset, f.duplicate), (0, false));
    assert_eq!((r.base_offset, r.duplicate), (0, true));
    let gap = c
        .produce(produce(seq_batch(5, "b")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        gap.results[0].batches[0].error,
        ErrorCode::OutOfOrderSequence as i32
    );

    // A bumped epoch fences the old one.
    let bumped = c
        .init_producer_id(pb::InitProducerIdRequest {
            producer_id: Some(id.producer_id),
            producer_epoch: Some(id.producer_epoch),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bumped.producer_epoch, id.producer_epoch + 1);
    let fenced = c
        .produce(produce(seq_batch(1, "c")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        fenced.results[0].batches[0].error,
        ErrorCode::ProducerFenced as i32
    );
    // The same bump again (its answer was lost) gets the bumped identity
    // (KIP-360), not a fenced producer.
    let old = pb::InitProducerIdRequest {
        producer_id: Some(id.producer_id),
        producer_epoch: Some(id.producer_epoch),
        ..Default::default()
    };
    let again = c.init_producer_id(old.clone()).await.unwrap().into_inner();
    assert_eq!(again, bumped);
    // Once the epoch moved on, the old one is fenced for good.
    c.init_producer_id(pb::InitProducerIdRequest {
        producer_id: Some(bumped.producer_id),
        producer_epoch: Some(bumped.producer_epoch),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = c.init_producer_id(old).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_request_of_many_batches_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, mut c) = start(&dir).await;
    create(&mut c, "many", 1).await;
    let id = c
        .init_producer_id(pb::InitProducerIdRequest::default())
        .await
        .unwrap()
        .into_inner();
    // More batches of one producer for one partition than the commit
    // remembers the offsets of, in one request.
    let n = streamhouse_metadata::PRODUCER_BATCHES_REMEMBERED + 4;
    let mut bytes = Vec::new();
    for seq in 0..n as i32 {
        let b = RecordBatch::from_records([NewRecord::new(1, None, format!("v{seq}"))])
            .with_producer(id.producer_id, id.producer_epoch as i16, seq)
            .encode()
            .unwrap();
        bytes.extend_from_slice(&b);
    }
    let request = pb::ProduceRequest {
        partitions: vec![records("many", 0, bytes.into())],
    };
    let first = c.produce(request.clone()).await.unwrap().into_inner();
    let first = &first.results[0].batches;
    assert_eq!(
        first
            .iter()
            .map(|b| (b.error, b.base_offset))
            .collect::<Vec<_>>(),
        (0..n as i64).map(|i| (0, i)).collect::<Vec<_>>()
    );
    // Its answer was lost: the same request again writes nothing.
    let again = c.produce(request).await.unwrap().into_inner();
    for (i, b) in again.results[0].batches.iter().enumerate() {
        if i < n - streamhouse_metadata::PRODUCER_BATCHES_REMEMBERED {
            assert_eq!(
                b.error,
                ErrorCode::DuplicateSequence as i32,
                "batch {i}: {}",
                b.message
            );
        } else {
            assert_eq!(
                (b.error, b.base_offset, b.duplicate),
                (0, i as i64, true),
                "batch {i}: {}",
                b.message
            );
        }
    }
    // The high watermark did not move.
    let next = c
        .produce(pb::ProduceRequest {
            partitions: vec![records("many", 0, batch(&["after"]))],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.results[0].batches[0].base_offset, n as i64);
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_returns_committed_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, mut c) = start(&dir).await;
    create(&mut c, "f", 1).await;
    for v in ["a", "b", "c"] {
        c.produce(pb::ProduceRequest {
            partitions: vec![records("f", 0, batch(&[v, v]))],
        })
        .await
        .unwrap();
    }
    let fetch = |offset: i64, max_wait_ms: u32| pb::FetchRequest {
        partitions: vec![pb::FetchPartition {
            topic: "f".into(),
            partition: 0,
            offset,
            max_bytes: 1 << 20,
        }],
        max_wait_ms,
        max_bytes: 1 << 20,
        isolation_level: pb::IsolationLevel::ReadUncommitted as i32,
    };
    let r = c.fetch(fetch(3, 0)).await.unwrap().into_inner();
    let p = &r.partitions[0];
    assert_eq!((p.error, p.high_watermark), (0, 6));
    let batches: Vec<_> = streamhouse_core::batches(&p.records)
        .map(|b| b.unwrap().0.base_offset)
        .collect();
    assert_eq!(batches, [2, 4], "starts with the batch holding offset 3");
    let r = c.fetch(fetch(99, 0)).await.unwrap().into_inner();
    assert_eq!(r.partitions[0].error, ErrorCode::OffsetOutOfRange as i32);
    // At the end of the log a fetch waits up to max_wait for new records.
    let mut waiting = c.clone();
    let wait = tokio::spawn(async move { waiting.fetch(fetch(6, 5_000)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.produce(pb::ProduceRequest {
        partitions: vec![records("f", 0, batch(&["d"]))],
    })
    .await
    .unwrap();
    let r = wait.await.unwrap().unwrap().into_inner();
    assert_eq!(r.partitions[0].high_watermark, 7);
    assert!(!r.partitions[0].records.is_empty());
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_partitions_owner_commits_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, mut c) = start(&dir).await;
    create(&mut c, "own", 2).await;
    let heartbeat = |member_id: &str, member_epoch: i32, owned: &[pb::TopicPartitionRef]| {
        pb::GroupHeartbeatRequest {
            group_id: "owners".into(),
            member_id: member_id.into(),
            member_epoch,
            client_id: "test".into(),
            subscribed_topics: vec!["own".into()],
            owned: owned.to_vec(),
            session_timeout_ms: 30_000,
            assignor: None,
        }
    };
    let a = c
        .group_heartbeat(heartbeat("", 0, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.assigned.len(), 2);
    let b = c
        .group_heartbeat(heartbeat("", 0, &[]))
        .await
        .unwrap()
        .into_inner();
    // `a` gives one partition up, `b` takes it.
    let a = c
        .group_heartbeat(heartbeat(&a.member_id, a.member_epoch, &a.assigned))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.assigned.len(), 1);
    let a = c
        .group_heartbeat(heartbeat(&a.member_id, a.member_epoch, &a.assigned))
        .await
        .unwrap()
        .into_inner();
    let b = c
        .group_heartbeat(heartbeat(&b.member_id, b.member_epoch, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.assigned.len(), 1);
    let commit = |p: &pb::TopicPartitionRef| pb::CommitOffsetsRequest {
        group_id: "owners".into(),
        member_id: Some(a.member_id.clone()),
        member_epoch: a.member_epoch,
        offsets: vec![pb::OffsetToCommit {
            topic: p.topic.clone(),
            partition: p.partition,
            offset: 3,
            metadata: None,
        }],
    };
    let ok = c.commit_offsets(commit(&a.assigned[0])).await.unwrap();
    assert_eq!(ok.into_inner().error, ErrorCode::None as i32);
    let refused = c
        .commit_offsets(commit(&b.assigned[0]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        refused.error,
        ErrorCode::FencedMemberEpoch as i32,
        "{}",
        refused.message
    );
    assert!(
        refused.message.contains("does not own"),
        "{}",
        refused.message
    );
    agent.shutdown().await.unwrap();
}
