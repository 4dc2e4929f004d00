//! Interoperability with a Kafka client library we did not write
//! (kafka-python; fixtures and scripts in `fixtures/kafka`).
//!
//! - Batches kafka-python wrote decode field by field, and uncompressed ones
//!   re-encode byte-exactly.
//! - Batches we encode (every codec, idempotent, transactional, control) are
//!   accepted by kafka-python's decoder (`verify.py`), which needs
//!   `STREAMHOUSE_KAFKA_PYTHON` (set by `scripts/test`); under `CI=true` its
//!   absence is a failure.

use std::path::PathBuf;

use bytes::Bytes;
use serde_json::{Value, json};
use streamhouse_core::{BatchHeader, Compression, Header, NewRecord, RecordBatch};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/kafka")
}

fn hex(v: &Value) -> Option<Bytes> {
    let s = v.as_str()?;
    Some(Bytes::from(
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>(),
    ))
}

fn to_hex(b: &Option<Bytes>) -> Value {
    match b {
        Some(b) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        None => Value::Null,
    }
}

#[test]
fn kafka_python_batches_decode_exactly() {
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("batches.json")).unwrap())
            .unwrap();
    let batches = spec["batches"].as_array().unwrap();
    assert!(batches.len() >= 10);
    let mut codecs_seen = std::collections::HashSet::new();
    for b in batches {
        let name = b["name"].as_str().unwrap();
        let bytes =
            Bytes::from(std::fs::read(fixtures().join(b["file"].as_str().unwrap())).unwrap());
        let header =
            BatchHeader::validate(&bytes, 16 << 20).unwrap_or_else(|e| panic!("{name}: {e}"));
        let batch = RecordBatch::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let int = |k: &str| b[k].as_i64().unwrap_or_else(|| panic!("{name}: {k}"));

        assert_eq!(header.crc as i64, int("crc"), "{name}");
        assert_eq!(header.batch_length as i64, int("length"), "{name}");
        assert_eq!(batch.base_offset, int("base_offset"), "{name}");
        assert_eq!(
            batch.partition_leader_epoch as i64,
            int("partition_leader_epoch"),
            "{name}"
        );
        assert_eq!(batch.attributes.0 as i64, int("attributes"), "{name}");
        let codec: Compression = b["compression"].as_str().unwrap().parse().unwrap();
        assert_eq!(batch.compression().unwrap(), codec, "{name}");
        codecs_seen.insert(codec);
        assert_eq!(
            batch.attributes.is_transactional(),
            b["is_transactional"].as_bool().unwrap()
        );
        assert_eq!(
            batch.attributes.is_control(),
            b["is_control"].as_bool().unwrap()
        );
        assert_eq!(
            batch.last_offset_delta as i64,
            int("last_offset_delta"),
            "{name}"
        );
        assert_eq!(batch.base_timestamp, int("base_timestamp"), "{name}");
        assert_eq!(batch.max_timestamp, int("max_timestamp"), "{name}");
        assert_eq!(batch.producer_id, int("producer_id"), "{name}");
        assert_eq!(batch.producer_epoch as i64, int("producer_epoch"), "{name}");
        assert_eq!(batch.base_sequence as i64, int("base_sequence"), "{name}");
        assert_eq!(batch.records.len() as i64, int("record_count"), "{name}");

        let expected = b["records"].as_array().unwrap();
        for (r, e) in batch.records.iter().zip(expected) {
            assert_eq!(
                r.offset_delta as i64,
                e["offset_delta"].as_i64().unwrap(),
                "{name}"
            );
            assert_eq!(
                batch.base_timestamp + r.timestamp_delta,
                e["timestamp"].as_i64().unwrap()
            );
            assert_eq!(r.key, hex(&e["key_hex"]), "{name} key");
            assert_eq!(r.value, hex(&e["value_hex"]), "{name} value");
            let headers: Vec<Header> = e["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| Header {
                    key: h["key"].as_str().unwrap().to_string(),
                    value: hex(&h["value_hex"]),
                })
                .collect();
            assert_eq!(r.headers, headers, "{name} headers");
        }

        // Uncompressed batches re-encode to the very same bytes; compressed
        // ones to the same records once decompressed.
        if codec == Compression::None {
            assert_eq!(batch.encode().unwrap(), bytes, "{name}: re-encoding");
        } else {
            let plain = batch
                .clone()
                .with_compression(Compression::None)
                .encode()
                .unwrap();
            let ours = codec
                .decompress(
                    &bytes[streamhouse_core::batch::BATCH_HEADER_LEN..],
                    64 << 20,
                )
                .unwrap();
            assert_eq!(
                &plain[streamhouse_core::batch::BATCH_HEADER_LEN..],
                &ours[..],
                "{name}"
            );
        }
    }
    assert_eq!(codecs_seen.len(), 5, "fixtures cover every codec");
}

/// Our batches, with the expectations in verify.py's schema.
fn our_batches() -> Vec<(&'static str, RecordBatch)> {
    let records = |n: usize| {
        (0..n).map(|i| NewRecord {
            timestamp: 1_700_000_000_000 + (i as i64 * 7) % 50,
            key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
            value: (i % 5 != 4).then(|| Bytes::from(format!("value-{i:04}-").repeat(8))),
            headers: (0..i % 3)
                .map(|h| Header {
                    key: format!("h{h}"),
                    value: (h == 0).then(|| Bytes::from("hv")),
                })
                .collect(),
        })
    };
    let mut out = Vec::new();
    for codec in Compression::ALL {
        let name = match codec {
            Compression::None => "ours_none",
            Compression::Gzip => "ours_gzip",
            Compression::Snappy => "ours_snappy",
            Compression::Lz4 => "ours_lz4",
            Compression::Zstd => "ours_zstd",
        };
        out.push((
            name,
            RecordBatch::from_records(records(200)).with_compression(codec),
        ));
    }
    out.push((
        "ours_idempotent",
        RecordBatch::from_records(records(10)).with_producer(4242, 3, 17),
    ));
    let mut txn = RecordBatch::from_records(records(10))
        .with_compression(Compression::Lz4)
        .with_producer(77, 1, 0);
    txn.attributes = txn.attributes.with_transactional(true);
    txn.base_offset = 5000;
    out.push(("ours_transactional", txn));
    // A commit marker as Kafka writes it: key = version 0, type 1 (commit);
    // value = version 0, coordinator epoch 0.
    let mut control = RecordBatch::from_records([NewRecord {
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from_static(&[0, 0, 0, 1])),
        value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
        headers: vec![],
    }])
    .with_producer(77, 1, -1);
    control.attributes = control
        .attributes
        .with_transactional(true)
        .with_control(true);
    out.push(("ours_control_commit", control));
    out
}

fn expectation(name: &str, batch: &RecordBatch) -> Value {
    json!({
        "file": format!("{name}.bin"),
        "base_offset": batch.base_offset,
        "partition_leader_epoch": batch.partition_leader_epoch,
        "magic": 2,
        "attributes": batch.attributes.0,
        "compression": batch.compression().unwrap().name(),
        "is_transactional": batch.attributes.is_transactional(),
        "is_control": batch.attributes.is_control(),
        "last_offset_delta": batch.last_offset_delta,
        "base_timestamp": batch.base_timestamp,
        "max_timestamp": batch.max_timestamp,
        "producer_id": batch.producer_id,
        "producer_epoch": batch.producer_epoch,
        "base_sequence": batch.base_sequence,
        "record_count": batch.records.len(),
        "records": batch.iter().map(|(offset, ts, r)| json!({
            "offset_delta": offset - batch.base_offset,
            "timestamp": ts,
            "key_hex": to_hex(&r.key),
            "value_hex": to_hex(&r.value),
            "headers": r.headers.iter().map(|h| json!({
                "key": h.key,
                "value_hex": to_hex(&h.value),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[test]
fn our_batches_are_accepted_by_kafka_python() {
    let python = match std::env::var("STREAMHOUSE_KAFKA_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("STREAMHOUSE_KAFKA_PYTHON is not set and CI=true: run scripts/test")
        }
        _ => {
            eprintln!("skipping: STREAMHOUSE_KAFKA_PYTHON is not set (scripts/test sets it)");
            return;
        }
    };
    let dir = tempfile_dir();
    let mut entries = Vec::new();
    for (name, batch) in our_batches() {
        let bytes = batch.encode().unwrap();
        // Our own decoder agrees before we ask kafka-python.
        assert_eq!(RecordBatch::decode(&bytes).unwrap(), batch, "{name}");
        std::fs::write(dir.join(format!("{name}.bin")), &bytes).unwrap();
        entries.push(expectation(name, &batch));
    }
    std::fs::write(
        dir.join("expected.json"),
        serde_json::to_vec_pretty(&json!({ "batches": entries })).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(&python)
        .arg(fixtures().join("verify.py"))
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kafka-python rejected our batches:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        entries.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamhouse-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
