//! The produce-side trust boundary: the full check of a record batch sent by
//! a client, run before the batch is buffered or acknowledged.
//!
//! [`BatchHeader::validate`] checks what the header says about itself
//! (magic, lengths, CRC32C). [`validate_produced`] also checks that the
//! header agrees with the records it carries, walking every record (after
//! decompressing, within a size bound), so that whatever an agent accepts
//! every consumer can decode:
//!
//! - a producer id (other than -1, "none") comes with a non-negative epoch
//!   and base sequence;
//! - no control batches (only the broker writes transaction markers), and
//!   the transactional bit only with a producer id;
//! - at least one record; `record_count` and `last_offset_delta` match the
//!   records, whose offset deltas run 0, 1, 2, …;
//! - every record parses within its length (varints, key, value, headers
//!   with UTF-8 keys) and nothing follows the last one;
//! - `max_timestamp` is the largest record timestamp (create-time batches);
//! - the records decompress without error to at most `max_batch_bytes`;
//! - on topics that keep the latest record per key, every record has a key.
//!
//! The batch bytes are never changed: what is stored is what was sent.

use crate::batch::{BATCH_HEADER_LEN, BatchHeader};
use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::varint::{get_varint, get_varlong};

/// What a batch sent by a producer must satisfy beyond its format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProduceRules {
    /// Largest batch, in bytes as sent and once decompressed.
    pub max_batch_bytes: usize,
    /// Every record must have a key (topics with `cleanup.policy=compact`).
    pub require_keys: bool,
}

/// Fully validates one batch that fills `buf`, as sent by a producer (see
/// the module docs for what is checked). Returns its header.
///
/// The cost is one pass over the records, plus one decompression for
/// compressed batches; callers on an async runtime should run large or
/// compressed batches on a blocking thread.
pub fn validate_produced(buf: &[u8], rules: &ProduceRules) -> Result<BatchHeader> {
    let h = BatchHeader::validate(buf, rules.max_batch_bytes)?;
    check_producer_fields(&h)?;
    if h.record_count == 0 {
        return Err(Error::invalid(
            "record_count",
            "a produced batch must hold at least one record",
        ));
    }
    if h.last_offset_delta != h.record_count - 1 {
        return Err(Error::invalid(
            "last_offset_delta",
            format!(
                "{} does not match the record count {} (expected {})",
                h.last_offset_delta,
                h.record_count,
                h.record_count - 1
            ),
        ));
    }
    let codec = h.attributes.compression()?;
    let payload = &buf[BATCH_HEADER_LEN..];
    let max_timestamp = match codec {
        Compression::None => check_records(payload, &h, rules)?,
        c => {
            let plain = c
                .decompress(payload, rules.max_batch_bytes)
                .map_err(|e| match e {
                    Error::TooLarge { size, max, .. } => Error::TooLarge {
                        what: "decompressed record batch",
                        size,
                        max,
                    },
                    other => other,
                })?;
            check_records(&plain, &h, rules)?
        }
    };
    if !h.attributes.is_log_append_time() && max_timestamp != h.max_timestamp {
        return Err(Error::invalid(
            "max_timestamp",
            format!(
                "header says {}, the largest record timestamp is {max_timestamp}",
                h.max_timestamp
            ),
        ));
    }
    Ok(h)
}

/// Checks the fields of a produced batch's header that decide how the
/// commit treats it: a producer id (other than -1, "none") comes with a
/// valid epoch and base sequence; no control batch; the transactional bit
/// only with a producer id.
fn check_producer_fields(h: &BatchHeader) -> Result<()> {
    // Producer id -1 means "no idempotence": as Kafka brokers do, its epoch
    // and sequence are then ignored (kafkajs, for one, sends epoch 0).
    let valid =
        !h.has_producer() || (h.producer_id >= 0 && h.producer_epoch >= 0 && h.base_sequence >= 0);
    if !valid {
        return Err(Error::invalid(
            "producer fields",
            format!(
                "producer id {}, epoch {}, base sequence {}: a producer id needs a \
                 non-negative epoch and base sequence (or is -1, for none)",
                h.producer_id, h.producer_epoch, h.base_sequence
            ),
        ));
    }
    if h.attributes.is_control() {
        return Err(Error::invalid(
            "attributes",
            "control batches are written by the broker, not by producers",
        ));
    }
    if h.attributes.is_transactional() && !h.has_producer() {
        return Err(Error::invalid(
            "attributes",
            "a transactional batch needs a producer id",
        ));
    }
    Ok(())
}

/// Walks the records of `data` (the batch's records, decompressed) and
/// returns the largest record timestamp.
fn check_records(mut data: &[u8], h: &BatchHeader, rules: &ProduceRules) -> Result<i64> {
    let mut max_timestamp = i64::MIN;
    let mut count: i32 = 0;
    while !data.is_empty() {
        if count == h.record_count {
            return Err(Error::RecordCountMismatch {
                declared: h.record_count.into(),
                actual: format!("{} bytes follow the last record", data.len()),
            });
        }
        let record = check_record(&mut data, count)?;
        let timestamp = h
            .base_timestamp
            .checked_add(record.timestamp_delta)
            .ok_or_else(|| {
                Error::invalid(
                    "record timestamp delta",
                    format!(
                        "record {count}: {} overflows the base timestamp {}",
                        record.timestamp_delta, h.base_timestamp
                    ),
                )
            })?;
        max_timestamp = max_timestamp.max(timestamp);
        if rules.require_keys && !record.has_key {
            return Err(Error::invalid(
                "record key",
                format!("record {count} has no key; a compacted topic keeps records by key"),
            ));
        }
        count += 1;
    }
    if count != h.record_count {
        return Err(Error::RecordCountMismatch {
            declared: h.record_count.into(),
            actual: format!("the batch holds {count}"),
        });
    }
    Ok(max_timestamp)
}

/// What [`check_record`] learned about one record.
struct RecordShape {
    timestamp_delta: i64,
    has_key: bool,
}

/// Checks the record at the front of `buf` (the `index`-th of its batch)
/// without copying it, and advances past it.
fn check_record(buf: &mut &[u8], index: i32) -> Result<RecordShape> {
    let len = get_varint(buf, "record length")?;
    let len = usize::try_from(len)
        .map_err(|_| Error::invalid("record length", format!("record {index}: {len}")))?;
    if buf.len() < len {
        return Err(Error::truncated("record", len, buf.len()));
    }
    let (mut body, rest) = buf.split_at(len);
    *buf = rest;
    let Some((_attributes, tail)) = body.split_first() else {
        return Err(Error::truncated("record attributes", 1, 0));
    };
    body = tail;
    let timestamp_delta = get_varlong(&mut body, "record timestamp delta")?;
    let offset_delta = get_varint(&mut body, "record offset delta")?;
    if offset_delta != index {
        return Err(Error::invalid(
            "record offset delta",
            format!(
                "record {index} has offset delta {offset_delta}; produced deltas run 0, 1, 2, …"
            ),
        ));
    }
    let has_key = skip_bytes(&mut body, "record key")?.is_some();
    skip_bytes(&mut body, "record value")?;
    let headers = get_varint(&mut body, "record header count")?;
    if headers < 0 {
        return Err(Error::invalid(
            "record header count",
            format!("record {index}: {headers}"),
        ));
    }
    for _ in 0..headers {
        let key = skip_bytes(&mut body, "record header key")?
            .ok_or_else(|| Error::invalid("record header key", format!("record {index}: null")))?;
        if std::str::from_utf8(key).is_err() {
            return Err(Error::invalid(
                "record header key",
                format!("record {index}: not UTF-8"),
            ));
        }
        skip_bytes(&mut body, "record header value")?;
    }
    if !body.is_empty() {
        return Err(Error::LengthMismatch {
            what: "record length",
            declared: len as i64,
            actual: (len - body.len()) as i64,
        });
    }
    Ok(RecordShape {
        timestamp_delta,
        has_key,
    })
}

/// Reads a varint-length-prefixed byte field (-1 is null) and advances.
fn skip_bytes<'a>(buf: &mut &'a [u8], what: &'static str) -> Result<Option<&'a [u8]>> {
    let len = get_varint(buf, what)?;
    if len < 0 {
        return if len == -1 {
            Ok(None)
        } else {
            Err(Error::invalid(what, format!("length {len}")))
        };
    }
    let len = len as usize;
    if buf.len() < len {
        return Err(Error::truncated(what, len, buf.len()));
    }
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(Some(field))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::batch::{Attributes, NewRecord, RecordBatch};
    use crate::varint::put_varint;

    const RULES: ProduceRules = ProduceRules {
        max_batch_bytes: 1 << 20,
        require_keys: false,
    };

    fn records(n: usize) -> Vec<NewRecord> {
        (0..n)
            .map(|i| {
                NewRecord::new(
                    1_700_000_000_000 + i as i64,
                    Some(Bytes::from(format!("k{i}"))),
                    format!("value {i}"),
                )
            })
            .collect()
    }

    fn good(codec: Compression) -> Bytes {
        RecordBatch::from_records(records(5))
            .with_compression(codec)
            .encode()
            .unwrap()
    }

    /// Re-encodes `batch` with its fields as they are (record count taken
    /// from the records, so callers edit records to break it).
    fn encode(batch: &RecordBatch) -> Bytes {
        batch.encode().unwrap()
    }

    /// Overwrites the record count field and re-seals the CRC.
    fn with_count(buf: &Bytes, count: i32) -> Bytes {
        let mut b = buf.to_vec();
        b[57..61].copy_from_slice(&count.to_be_bytes());
        reseal(b)
    }

    fn reseal(mut b: Vec<u8>) -> Bytes {
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    fn err(buf: &[u8], rules: &ProduceRules) -> String {
        validate_produced(buf, rules).unwrap_err().to_string()
    }

    #[test]
    fn accepts_what_the_client_writes_in_every_codec() {
        for codec in Compression::ALL {
            let b = good(codec);
            let h = validate_produced(&b, &RULES).unwrap();
            assert_eq!(h.record_count, 5);
            let idempotent = RecordBatch::from_records(records(3))
                .with_compression(codec)
                .with_producer(7, 0, 42)
                .encode()
                .unwrap();
            validate_produced(&idempotent, &RULES).unwrap();
        }
    }

    #[test]
    fn record_count_must_match_the_records() {
        let b = good(Compression::None);
        for count in [0, 4, 6] {
            let e = err(&with_count(&b, count), &RULES);
            assert!(
                e.contains("record count")
                    || e.contains("last_offset_delta")
                    || e.contains("record_count"),
                "{count}: {e}"
            );
        }
        // 2^31-1 records with a matching last offset delta.
        let mut big = with_count(&b, i32::MAX).to_vec();
        big[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        let e = err(&reseal(big), &RULES);
        assert!(e.contains("record count mismatch"), "{e}");
        let lz4 = good(Compression::Lz4);
        let e = err(&with_count(&lz4, 4), &RULES);
        assert!(e.contains("last_offset_delta"), "{e}");
    }

    #[test]
    fn offset_deltas_must_be_dense() {
        let mut batch = RecordBatch::from_records(records(3));
        batch.records[2].offset_delta = 5;
        batch.last_offset_delta = 5;
        let e = err(&encode(&batch), &RULES);
        assert!(e.contains("last_offset_delta"), "{e}");
        let mut batch = RecordBatch::from_records(records(3));
        batch.records.swap(0, 1);
        let e = err(&encode(&batch), &RULES);
        assert!(e.contains("offset delta"), "{e}");
    }

    #[test]
    fn max_timestamp_must_be_the_largest_record_timestamp() {
        let mut batch = RecordBatch::from_records(records(3));
        batch.max_timestamp += 1000;
        let e = err(&encode(&batch), &RULES);
        assert!(e.contains("max_timestamp"), "{e}");
        // Out-of-order record timestamps are fine when the max is right.
        let mut batch = RecordBatch::from_records(records(3));
        batch.records[0].timestamp_delta = 10;
        batch.max_timestamp = batch.base_timestamp + 10;
        validate_produced(&encode(&batch), &RULES).unwrap();
    }

    #[test]
    fn a_producer_id_needs_a_valid_epoch_and_sequence() {
        for (pid, epoch, seq) in [
            (5, 0, -1),
            (5, -1, 0),
            (5, -1, -1),
            (-2, 0, 0),
            (-7, -1, -1),
        ] {
            let b = RecordBatch::from_records(records(2))
                .with_producer(pid, epoch, seq)
                .encode()
                .unwrap();
            let e = err(&b, &RULES);
            assert!(e.contains("producer fields"), "{pid} {epoch} {seq}: {e}");
        }
        // No producer id: epoch and sequence are ignored, as Kafka does.
        for (epoch, seq) in [(-1, -1), (0, 0), (-1, 0)] {
            let b = RecordBatch::from_records(records(2))
                .with_producer(-1, epoch, seq)
                .encode()
                .unwrap();
            validate_produced(&b, &RULES).unwrap();
        }
    }

    #[test]
    fn control_and_transactional_bits() {
        let mut batch = RecordBatch::from_records(records(1)).with_producer(3, 0, 0);
        batch.attributes = Attributes::default().with_control(true);
        assert!(err(&encode(&batch), &RULES).contains("control"));
        let mut batch = RecordBatch::from_records(records(1));
        batch.attributes = Attributes::default().with_transactional(true);
        assert!(err(&encode(&batch), &RULES).contains("transactional"));
        let mut batch = RecordBatch::from_records(records(1)).with_producer(3, 0, 0);
        batch.attributes = Attributes::default().with_transactional(true);
        validate_produced(&encode(&batch), &RULES).unwrap();
    }

    #[test]
    fn garbage_compressed_payloads_are_refused() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = good(codec);
            let mut g = b.to_vec();
            for byte in &mut g[BATCH_HEADER_LEN..] {
                *byte = byte.wrapping_mul(31).wrapping_add(7);
            }
            assert!(validate_produced(&reseal(g), &RULES).is_err(), "{codec}");
        }
    }

    #[test]
    fn decompression_is_bounded_by_max_batch_bytes() {
        // 4 MiB of zeros compresses to a few KiB.
        let batch = RecordBatch::from_records([NewRecord::new(0, None, vec![0u8; 4 << 20])])
            .with_compression(Compression::Zstd);
        let b = batch.encode().unwrap();
        assert!(b.len() < 64 << 10);
        let e = err(&b, &RULES);
        assert!(e.contains("decompressed record batch"), "{e}");
        let roomy = ProduceRules {
            max_batch_bytes: 8 << 20,
            ..RULES
        };
        validate_produced(&b, &roomy).unwrap();
    }

    #[test]
    fn compacted_topics_need_keys() {
        let compact = ProduceRules {
            require_keys: true,
            ..RULES
        };
        validate_produced(&good(Compression::Lz4), &compact).unwrap();
        let b = RecordBatch::from_records([NewRecord::new(1, None, "v")])
            .encode()
            .unwrap();
        assert!(err(&b, &compact).contains("no key"));
        validate_produced(&b, &RULES).unwrap();
    }

    #[test]
    fn broken_records_are_refused() {
        // A record whose header key is not UTF-8.
        let mut batch = RecordBatch::from_records(records(1));
        batch.records[0].headers.push(crate::batch::Header {
            key: "h".into(),
            value: None,
        });
        let mut b = encode(&batch).to_vec();
        let at = b.len() - 3; // varint key length, key byte, null value
        assert_eq!(b[at + 1], b'h');
        b[at + 1] = 0xff;
        assert!(err(&reseal(b), &RULES).contains("UTF-8"));
        // A record length larger than what follows.
        let mut b = encode(&RecordBatch::from_records(records(1))).to_vec();
        let mut len = Vec::new();
        put_varint(&mut len, 60);
        assert_eq!(len.len(), 1);
        b[BATCH_HEADER_LEN] = len[0];
        let e = err(&reseal(b), &RULES);
        assert!(e.contains("truncated record"), "{e}");
    }

    fn mutate(buf: &[u8], at: usize, xor: u8) -> Bytes {
        let mut b = buf.to_vec();
        let i = at % b.len();
        b[i] ^= xor.max(1);
        if i >= 21 { reseal(b) } else { Bytes::from(b) }
    }

    proptest! {
        /// Whatever the validator accepts, every consumer decodes, with the
        /// header's record count.
        #[test]
        fn accepted_batches_decode(
            codec in prop::sample::select(Compression::ALL.to_vec()),
            n in 1usize..20,
            mutations in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            truncate in prop::option::of(any::<usize>()),
        ) {
            let mut b = RecordBatch::from_records(records(n)).with_compression(codec).encode().unwrap();
            for (at, xor) in mutations {
                b = mutate(&b, at, xor);
            }
            if let Some(t) = truncate {
                let cut = t % b.len();
                let mut v = b[..cut].to_vec();
                if v.len() >= 12 {
                    let len = (v.len() - 12) as i32;
                    v[8..12].copy_from_slice(&len.to_be_bytes());
                }
                b = if v.len() > 21 { reseal(v) } else { Bytes::from(v) };
            }
            if let Ok(h) = validate_produced(&b, &RULES) {
                let decoded = RecordBatch::decode(&b).expect("accepted batches decode");
                prop_assert_eq!(decoded.records.len(), h.record_count as usize);
            }
        }
    }
}
