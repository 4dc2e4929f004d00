//! The produce trust boundary over raw gRPC: every malformed batch is
//! refused for its partition alone with a precise code and message, the
//! agent stays up with bounded memory, nothing stored changes, and what
//! was acknowledged before reads back byte for byte. On the read side a
//! batch damaged in storage is reported, never served, and can be skipped.

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use streamhouse_agent::{Agent, AgentConfig, RunningAgent};
use streamhouse_core::{Attributes, Compression, NewRecord, RecordBatch};
use streamhouse_proto as pb;
use streamhouse_proto::ErrorCode;
use streamhouse_proto::stream_house_client::StreamHouseClient;
use tonic::transport::Channel;

const MAX_BATCH: usize = 64 << 10;

async fn start(dir: &tempfile::TempDir) -> (RunningAgent, StreamHouseClient<Channel>) {
    let mut config = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metadata_url: format!("sqlite://{}", dir.path().join("metadata.db").display()),
        storage_url: format!("file://{}", dir.path().join("objects").display()),
        ..AgentConfig::default()
    };
    config.pipeline.linger = Duration::from_millis(2);
    config.limits.max_request_bytes = 4 << 20;
    config.limits.max_batch_bytes = MAX_BATCH;
    let agent = Agent::start(config).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", agent.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (agent, StreamHouseClient::new(channel))
}

async fn create(c: &mut StreamHouseClient<Channel>, name: &str, config: &[(&str, &str)]) {
    c.create_topic(pb::CreateTopicRequest {
        name: name.into(),
        partition_count: 2,
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
    .await
    .unwrap();
}

fn records(n: usize, tag: &str) -> Vec<NewRecord> {
    (0..n)
        .map(|i| {
            NewRecord::new(
                1_700_000_000_000 + i as i64,
                Some(Bytes::from(format!("key-{i}"))),
                format!("{tag} value {i}"),
            )
        })
        .collect()
}

fn encode(batch: RecordBatch) -> Bytes {
    batch.encode().unwrap()
}

fn reseal(mut b: Vec<u8>) -> Bytes {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

fn set_i32(b: &Bytes, at: usize, v: i32) -> Bytes {
    let mut v8 = b.to_vec();
    v8[at..at + 4].copy_from_slice(&v.to_be_bytes());
    reseal(v8)
}

/// A batch whose compressed payload is `payload`, with a valid CRC.
fn with_payload(codec: Compression, payload: &[u8], count: i32) -> Bytes {
    let template = encode(RecordBatch::from_records(records(1, "t")).with_compression(codec));
    let mut b = template[..61].to_vec();
    b.extend_from_slice(payload);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[57..61].copy_from_slice(&count.to_be_bytes());
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    reseal(b)
}

async fn produce(
    c: &mut StreamHouseClient<Channel>,
    topic: &str,
    partition: u32,
    records: Bytes,
) -> pb::PartitionResult {
    let mut r = c
        .produce(pb::ProduceRequest {
            partitions: vec![pb::PartitionRecords {
                topic: topic.into(),
                partition,
                records,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    r.results.remove(0)
}

async fn fetch(
    c: &mut StreamHouseClient<Channel>,
    topic: &str,
    partition: u32,
    offset: i64,
) -> pb::FetchedPartition {
    let mut r = c
        .fetch(pb::FetchRequest {
            partitions: vec![pb::FetchPartition {
                topic: topic.into(),
                partition,
                offset,
                max_bytes: 1 << 20,
            }],
            max_wait_ms: 0,
            max_bytes: 1 << 20,
            isolation_level: pb::IsolationLevel::ReadCommitted as i32,
        })
        .await
        .unwrap()
        .into_inner();
    r.partitions.remove(0)
}

/// The stored batches of a partition, base offsets zeroed, as fetched.
async fn stored(c: &mut StreamHouseClient<Channel>, topic: &str, partition: u32) -> Vec<Vec<u8>> {
    let p = fetch(c, topic, partition, 0).await;
    assert_eq!(p.error, 0, "{}", p.message);
    streamhouse_core::batches(&p.records)
        .map(|b| {
            let mut raw = b.unwrap().1.to_vec();
            raw[..8].fill(0);
            raw
        })
        .collect()
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// `len` zeros compressed by `codec` without holding them in memory.
fn bomb(codec: Compression, len: u64) -> Vec<u8> {
    let zeros = std::io::repeat(0).take(len);
    match codec {
        Compression::Zstd => zstd::stream::encode_all(zeros, 1).unwrap(),
        Compression::Gzip => {
            let mut out = Vec::new();
            flate2::read::GzEncoder::new(zeros, flate2::Compression::best())
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        other => unreachable!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_batches_are_refused_alone_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, mut c) = start(&dir).await;
    create(&mut c, "t", &[]).await;
    create(&mut c, "compacted", &[("cleanup.policy", "compact")]).await;

    // Acknowledged before the attack: these must read back unchanged.
    let good = encode(RecordBatch::from_records(records(5, "good")));
    let good_lz4 =
        encode(RecordBatch::from_records(records(5, "lz4")).with_compression(Compression::Lz4));
    for b in [&good, &good_lz4] {
        let r = produce(&mut c, "t", 0, b.clone()).await;
        assert_eq!(r.error, 0, "{}", r.message);
        assert_eq!(r.batches[0].error, 0, "{}", r.batches[0].message);
    }
    let before = stored(&mut c, "t", 0).await;
    assert_eq!(before, [good.to_vec(), good_lz4.to_vec()]);

    let id = c
        .init_producer_id(pb::InitProducerIdRequest::default())
        .await
        .unwrap()
        .into_inner();
    let (pid, epoch) = (id.producer_id, id.producer_epoch as i16);
    let idempotent = |seq: i32| {
        encode(RecordBatch::from_records(records(2, "idem")).with_producer(pid, epoch, seq))
    };

    let mut cases: Vec<(String, Bytes, ErrorCode, &str)> = vec![
        (
            "negative base sequence with a valid producer".into(),
            idempotent(-1),
            ErrorCode::InvalidRecord,
            "producer fields",
        ),
        (
            "producer id without epoch".into(),
            encode(RecordBatch::from_records(records(1, "x")).with_producer(pid, -1, 0)),
            ErrorCode::InvalidRecord,
            "producer fields",
        ),
        (
            "record count 0".into(),
            set_i32(&good, 57, 0),
            ErrorCode::InvalidRecord,
            "record_count",
        ),
        (
            "record count one less".into(),
            set_i32(&good, 57, 4),
            ErrorCode::InvalidRecord,
            "last_offset_delta",
        ),
        (
            "record count 2^31-1 with a matching last offset delta".into(),
            set_i32(&set_i32(&good, 57, i32::MAX), 23, i32::MAX - 1),
            ErrorCode::InvalidRecord,
            "record count mismatch",
        ),
        (
            "wrong magic".into(),
            {
                let mut b = good.to_vec();
                b[16] = 1;
                Bytes::from(b)
            },
            ErrorCode::InvalidRecord,
            "magic",
        ),
        (
            "length larger than the payload".into(),
            {
                let mut b = good.to_vec();
                b[8..12].copy_from_slice(&((good.len() + 100) as i32).to_be_bytes());
                Bytes::from(b)
            },
            ErrorCode::InvalidRecord,
            "truncated",
        ),
        (
            "unknown codec".into(),
            {
                let mut b = good.to_vec();
                b[22] |= 7;
                reseal(b)
            },
            ErrorCode::InvalidRecord,
            "codec",
        ),
        (
            "control batch from a producer".into(),
            {
                let mut b = RecordBatch::from_records(records(1, "c")).with_producer(pid, epoch, 0);
                b.attributes = Attributes::default().with_control(true);
                encode(b)
            },
            ErrorCode::InvalidRecord,
            "control",
        ),
        (
            "transactional bit without a producer".into(),
            {
                let mut b = RecordBatch::from_records(records(1, "c"));
                b.attributes = Attributes::default().with_transactional(true);
                encode(b)
            },
            ErrorCode::InvalidRecord,
            "transactional",
        ),
        (
            "wrong max timestamp".into(),
            {
                let mut b = RecordBatch::from_records(records(3, "ts"));
                b.max_timestamp += 1;
                encode(b)
            },
            ErrorCode::InvalidRecord,
            "max_timestamp",
        ),
        (
            "no bytes".into(),
            Bytes::new(),
            ErrorCode::InvalidRecord,
            "no record batch",
        ),
        (
            "zstd bomb".into(),
            // 1 GiB once decompressed: the memory check below sees it.
            Bytes::from(bomb(Compression::Zstd, 1 << 30)),
            ErrorCode::RecordTooLarge,
            "decompressed",
        ),
        (
            "gzip bomb".into(),
            // Deflate's ratio is at most about 1000:1; keep the batch
            // itself under the size limit.
            with_payload(Compression::Gzip, &bomb(Compression::Gzip, 32 << 20), 1),
            ErrorCode::RecordTooLarge,
            "decompressed",
        ),
    ];
    // The zstd bomb above is a bare frame: give it a batch header.
    let zstd = cases.iter().position(|c| c.0 == "zstd bomb").unwrap();
    cases[zstd].1 = with_payload(Compression::Zstd, &cases[zstd].1.clone(), 1);
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        cases.push((
            format!("{codec} garbage with a valid CRC"),
            with_payload(codec, b"this is not compressed data at all, not at all", 1),
            ErrorCode::InvalidRecord,
            codec.name(),
        ));
    }
    // Truncated at every position.
    for cut in 1..good.len() {
        cases.push((
            format!("truncated at {cut}"),
            good.slice(..cut),
            ErrorCode::InvalidRecord,
            "",
        ));
    }

    let rss_before = peak_rss_bytes();
    for (name, bytes, code, needle) in &cases {
        // Each bad entry shares its request with a good one that commits.
        let response = c
            .produce(pb::ProduceRequest {
                partitions: vec![
                    pb::PartitionRecords {
                        topic: "t".into(),
                        partition: 1,
                        records: bytes.clone(),
                    },
                    pb::PartitionRecords {
                        topic: "compacted".into(),
                        partition: 0,
                        records: good.clone(),
                    },
                ],
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .into_inner();
        let bad = &response.results[0];
        assert_eq!(bad.error, *code as i32, "{name}: {}", bad.message);
        assert!(bad.batches.is_empty(), "{name}");
        assert!(
            bad.message.contains(needle),
            "{name}: {:?} lacks {needle:?}",
            bad.message
        );
        assert!(
            bad.message.contains("partition 1"),
            "{name}: {}",
            bad.message
        );
        let ok = &response.results[1];
        assert_eq!(ok.error, 0, "{name}: {}", ok.message);
        assert_eq!(ok.batches[0].error, 0, "{name}: {}", ok.batches[0].message);
    }
    let grown = peak_rss_bytes().saturating_sub(rss_before);
    assert!(grown < 256 << 20, "peak memory grew by {grown} bytes");

    // Keyless records on a compacted topic.
    let keyless = encode(RecordBatch::from_records([NewRecord::new(1, None, "v")]));
    let r = produce(&mut c, "compacted", 1, keyless).await;
    assert_eq!(r.error, ErrorCode::InvalidRecord as i32);
    assert!(r.message.contains("no key"), "{}", r.message);

    // The transactional bit from an idempotent producer without a
    // transactional id: it would bypass the transaction's markers.
    let plain = c
        .init_producer_id(pb::InitProducerIdRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut b = RecordBatch::from_records(records(1, "txn")).with_producer(
        plain.producer_id,
        plain.producer_epoch as i16,
        0,
    );
    b.attributes = Attributes::default().with_transactional(true);
    let r = produce(&mut c, "t", 1, encode(b)).await;
    assert_eq!(r.batches[0].error, ErrorCode::InvalidTxnState as i32);
    assert!(
        r.batches[0].message.contains("no transactional id"),
        "{}",
        r.batches[0].message
    );

    // A producer id that was never issued; a fenced epoch.
    let unknown =
        encode(RecordBatch::from_records(records(1, "u")).with_producer(pid + 1000, 0, 0));
    let r = produce(&mut c, "t", 1, unknown).await;
    assert_eq!(r.batches[0].error, ErrorCode::UnknownProducer as i32);
    c.init_producer_id(pb::InitProducerIdRequest {
        producer_id: Some(pid),
        producer_epoch: Some(id.producer_epoch),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = produce(&mut c, "t", 1, idempotent(0)).await;
    assert_eq!(r.batches[0].error, ErrorCode::ProducerFenced as i32);

    // Nothing of it reached partition 1; partition 0 is as acknowledged.
    let p1 = fetch(&mut c, "t", 1, 0).await;
    assert_eq!((p1.error, p1.high_watermark), (0, 0), "{}", p1.message);
    assert_eq!(stored(&mut c, "t", 0).await, before);
    let compacted = fetch(&mut c, "compacted", 0, 0).await;
    assert_eq!(compacted.high_watermark, 5 * cases.len() as i64);
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bits_with_a_recomputed_crc_never_store_an_undecodable_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, mut c) = start(&dir).await;
    create(&mut c, "t", &[]).await;
    for codec in [Compression::None, Compression::Lz4] {
        let good = encode(RecordBatch::from_records(records(3, "flip")).with_compression(codec));
        for at in 21..good.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = good.to_vec();
                b[at] ^= bit;
                let r = produce(&mut c, "t", 0, reseal(b)).await;
                if r.error != 0 {
                    assert_eq!(r.error, ErrorCode::InvalidRecord as i32, "{}", r.message);
                }
            }
        }
    }
    // Whatever was accepted decodes.
    let mut offset = 0;
    loop {
        let p = fetch(&mut c, "t", 0, offset).await;
        assert_eq!(p.error, 0, "{}", p.message);
        if p.records.is_empty() {
            break;
        }
        for b in streamhouse_core::batches(&p.records) {
            let (h, raw) = b.unwrap();
            let batch = RecordBatch::decode(&Bytes::copy_from_slice(raw)).unwrap();
            assert_eq!(batch.records.len(), h.record_count as usize);
            offset = h.base_offset + h.offset_span();
        }
    }
    assert!(offset > 0, "some flips (values, keys) are valid batches");
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_are_quoted_short() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, mut c) = start(&dir).await;
    let name = "n".repeat(10_000);
    let r = produce(
        &mut c,
        &name,
        0,
        encode(RecordBatch::from_records(records(1, "x"))),
    )
    .await;
    let message = if r.message.is_empty() {
        r.batches[0].message.clone()
    } else {
        r.message.clone()
    };
    assert!(message.len() < 1024, "{} bytes", message.len());
    assert!(message.contains("nnnn"), "{message}");
    let err = c
        .create_topic(pb::CreateTopicRequest {
            name: name.clone(),
            partition_count: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().len() < 1024, "{} bytes", err.message().len());
    let err = c
        .describe_topic(pb::DescribeTopicRequest { name: name.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().len() < 1024, "{} bytes", err.message().len());
    let err = c
        .describe_group(pb::DescribeGroupRequest { group_id: name })
        .await
        .map(|r| r.into_inner())
        .err();
    if let Some(err) = err {
        assert!(err.message().len() < 1024, "{} bytes", err.message().len());
    }
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_damaged_in_storage_is_reported_and_can_be_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, mut c) = start(&dir).await;
    create(&mut c, "t", &[]).await;
    // Three flushes: one object each.
    let mut sent = Vec::new();
    for tag in ["one", "two", "three"] {
        let b = encode(RecordBatch::from_records(records(4, tag)));
        let r = produce(&mut c, "t", 0, b.clone()).await;
        assert_eq!(r.batches[0].error, 0);
        sent.push(b);
    }
    agent.shutdown().await.unwrap();

    // Flip one byte inside the middle object's batch (a record value).
    let mut objects: Vec<_> = walk(&dir.path().join("objects"));
    objects.sort();
    assert_eq!(objects.len(), 3, "{objects:?}");
    let mut bytes = std::fs::read(&objects[1]).unwrap();
    let at = bytes
        .windows(3)
        .position(|w| w == b"two")
        .expect("value in the object");
    bytes[at] ^= 0x20;
    std::fs::write(&objects[1], bytes).unwrap();

    // A fresh agent reads from storage, not from its memory.
    let (agent, mut c) = start(&dir).await;
    let p = fetch(&mut c, "t", 0, 0).await;
    assert_eq!(p.error, 0);
    let first: Vec<_> = streamhouse_core::batches(&p.records).collect();
    assert_eq!(first.len(), 1, "the good batch before it is served alone");
    let p = fetch(&mut c, "t", 0, 4).await;
    assert_eq!(p.error, ErrorCode::CorruptBatch as i32, "{}", p.message);
    assert_eq!(p.corrupt_last_offset, 7);
    assert!(p.records.is_empty());
    assert!(p.message.contains("4..=7"), "{}", p.message);
    let p = fetch(&mut c, "t", 0, 6).await;
    assert_eq!(p.error, ErrorCode::CorruptBatch as i32);
    // Skipping past it reads on.
    let p = fetch(&mut c, "t", 0, 8).await;
    assert_eq!(p.error, 0, "{}", p.message);
    let (h, raw) = streamhouse_core::batches(&p.records)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(h.base_offset, 8);
    assert_eq!(&raw[8..], &sent[2][8..]);
    agent.shutdown().await.unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "sho") {
            out.push(path);
        }
    }
    out
}
