//! Kafka RecordBatch v2 (magic 2): the one record format of StreamHouse, on
//! the wire and at rest.
//!
//! ```text
//! offset  field                  type
//!      0  base_offset            i64   (outside the CRC; patched on read)
//!      8  batch_length           i32   (bytes after this field)
//!     12  partition_leader_epoch i32
//!     16  magic                  i8    (= 2)
//!     17  crc                    u32   (CRC32C of bytes 21..end)
//!     21  attributes             i16   (codec, timestamp type, transactional, control)
//!     23  last_offset_delta      i32
//!     27  base_timestamp         i64
//!     35  max_timestamp          i64
//!     43  producer_id            i64
//!     51  producer_epoch         i16
//!     53  base_sequence          i32
//!     57  record_count           i32
//!     61  records                (compressed as a whole when a codec is set)
//! ```
//!
//! [`BatchHeader::validate`] checks a batch's framing and CRC without
//! decompressing it; agents run the full produce-side check,
//! [`validate_produced`](crate::validate::validate_produced), before they
//! accept a batch; clients use [`RecordBatch::encode`] and
//! [`RecordBatch::decode`].

use bytes::{BufMut, Bytes};

use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::varint::{get_varint, get_varlong, put_varint, put_varlong, varint_len, varlong_len};

/// Length of the fixed batch header, up to and including `record_count`.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batch_length` counts: `base_offset` and `batch_length`.
pub const LOG_OVERHEAD: usize = 12;
/// The only supported magic byte.
pub const MAGIC_V2: i8 = 2;
/// Producer id of batches written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// Producer epoch of batches written without idempotence.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Base sequence of batches written without idempotence.
pub const NO_SEQUENCE: i32 = -1;

const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;

/// Batch attributes (a Kafka `int16`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Attributes(pub i16);

impl Attributes {
    const CODEC_MASK: i16 = 0x07;
    const LOG_APPEND_TIME: i16 = 0x08;
    const TRANSACTIONAL: i16 = 0x10;
    const CONTROL: i16 = 0x20;

    /// The compression codec; an error for codec ids 5-7.
    pub fn compression(self) -> Result<Compression> {
        Compression::from_id((self.0 & Self::CODEC_MASK) as u8)
    }
    /// Whether timestamps are log-append time rather than create time.
    pub fn is_log_append_time(self) -> bool {
        self.0 & Self::LOG_APPEND_TIME != 0
    }
    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(self) -> bool {
        self.0 & Self::TRANSACTIONAL != 0
    }
    /// Whether the batch holds a control record (commit or abort marker).
    pub fn is_control(self) -> bool {
        self.0 & Self::CONTROL != 0
    }
    /// These attributes with the codec replaced.
    pub fn with_compression(self, c: Compression) -> Self {
        Attributes((self.0 & !Self::CODEC_MASK) | c.id() as i16)
    }
    /// These attributes with the transactional flag set or cleared.
    pub fn with_transactional(self, on: bool) -> Self {
        self.with_flag(Self::TRANSACTIONAL, on)
    }
    /// These attributes with the control flag set or cleared.
    pub fn with_control(self, on: bool) -> Self {
        self.with_flag(Self::CONTROL, on)
    }
    fn with_flag(self, flag: i16, on: bool) -> Self {
        Attributes(if on { self.0 | flag } else { self.0 & !flag })
    }
}

/// The fixed-size header of a batch, read without touching the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: Attributes,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    buf[at..at + N].try_into().expect("slice has N bytes")
}

impl BatchHeader {
    /// Reads the header at the start of `buf` (only the first 61 bytes are
    /// needed). Checks the magic byte and that `batch_length` is sane; does
    /// not check the CRC or the records.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(Error::truncated(
                "record batch header",
                BATCH_HEADER_LEN,
                buf.len(),
            ));
        }
        let h = BatchHeader {
            base_offset: i64::from_be_bytes(be(buf, 0)),
            batch_length: i32::from_be_bytes(be(buf, 8)),
            partition_leader_epoch: i32::from_be_bytes(be(buf, 12)),
            magic: buf[16] as i8,
            crc: u32::from_be_bytes(be(buf, 17)),
            attributes: Attributes(i16::from_be_bytes(be(buf, 21))),
            last_offset_delta: i32::from_be_bytes(be(buf, 23)),
            base_timestamp: i64::from_be_bytes(be(buf, 27)),
            max_timestamp: i64::from_be_bytes(be(buf, 35)),
            producer_id: i64::from_be_bytes(be(buf, 43)),
            producer_epoch: i16::from_be_bytes(be(buf, 51)),
            base_sequence: i32::from_be_bytes(be(buf, 53)),
            record_count: i32::from_be_bytes(be(buf, 57)),
        };
        if h.magic != MAGIC_V2 {
            return Err(Error::BadMagic(h.magic));
        }
        if (h.batch_length as i64) < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(Error::invalid(
                "batch_length",
                format!(
                    "{} is shorter than the {}-byte header",
                    h.batch_length,
                    BATCH_HEADER_LEN - LOG_OVERHEAD
                ),
            ));
        }
        Ok(h)
    }

    /// Size of the whole batch in bytes, base offset and length included.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// Whether the batch carries a producer id (idempotent or transactional);
    /// -1 means none, and then epoch and sequence mean nothing.
    pub fn has_producer(&self) -> bool {
        self.producer_id != NO_PRODUCER_ID
    }

    /// How many offsets the batch occupies (`last_offset_delta + 1`).
    pub fn offset_span(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    /// Validates one complete batch that fills `buf` exactly: magic, length,
    /// CRC32C, counts, and a size limit. The records are not decompressed,
    /// so this is cheap enough for every produce request.
    pub fn validate(buf: &[u8], max_batch_bytes: usize) -> Result<Self> {
        let h = Self::parse(buf)?;
        if h.total_len() > max_batch_bytes {
            return Err(Error::TooLarge {
                what: "record batch",
                size: h.total_len(),
                max: max_batch_bytes,
            });
        }
        if h.total_len() != buf.len() {
            return Err(Error::LengthMismatch {
                what: "record batch length",
                declared: h.total_len() as i64,
                actual: buf.len() as i64,
            });
        }
        let actual = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..]);
        if actual != h.crc {
            return Err(Error::BadCrc {
                expected: h.crc,
                actual,
            });
        }
        h.attributes.compression()?;
        if h.record_count < 0 {
            return Err(Error::invalid(
                "record_count",
                format!("{} is negative", h.record_count),
            ));
        }
        // A batch spans at least one offset; compaction may leave fewer
        // records than offsets, never more.
        if h.last_offset_delta < 0 || h.last_offset_delta < h.record_count - 1 {
            return Err(Error::invalid(
                "last_offset_delta",
                format!(
                    "{} cannot hold {} records",
                    h.last_offset_delta, h.record_count
                ),
            ));
        }
        let uncompressed = h.attributes.compression()? == Compression::None;
        if uncompressed && h.record_count > 0 && buf.len() == BATCH_HEADER_LEN {
            return Err(Error::RecordCountMismatch {
                declared: h.record_count.into(),
                actual: "the batch has no record bytes".into(),
            });
        }
        Ok(h)
    }
}

/// Overwrites the base offset (the first 8 bytes, outside the CRC) of the
/// batch at the start of `buf`.
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Iterates over consecutive batches in `buf`, yielding each header with
/// the batch's bytes. Stops at the first malformed or truncated batch with
/// an error.
pub fn batches(buf: &[u8]) -> impl Iterator<Item = Result<(BatchHeader, &[u8])>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let item = BatchHeader::parse(rest).and_then(|h| {
            if rest.len() < h.total_len() {
                return Err(Error::truncated("record batch", h.total_len(), rest.len()));
            }
            Ok(h)
        });
        match item {
            Ok(h) => {
                let (batch, tail) = rest.split_at(h.total_len());
                rest = tail;
                Some(Ok((h, batch)))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

/// A record header: a string key and an optional value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// One record as stored inside a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Record attributes (unused by Kafka today; kept as read).
    pub attributes: i8,
    /// Timestamp relative to the batch's `base_timestamp`.
    pub timestamp_delta: i64,
    /// Offset relative to the batch's base offset.
    pub offset_delta: i32,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Length of a record's body (everything after its length varint).
fn record_body_len(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> usize {
    fn field(v: Option<&[u8]>) -> usize {
        match v {
            Some(b) => varint_len(b.len() as i32) + b.len(),
            None => 1,
        }
    }
    1 + varlong_len(timestamp_delta)
        + varint_len(offset_delta)
        + field(key)
        + field(value)
        + varint_len(headers.len() as i32)
        + headers
            .iter()
            .map(|h| varint_len(h.key.len() as i32) + h.key.len() + field(h.value.as_deref()))
            .sum::<usize>()
}

/// Appends one record (length varint, then body) to `out`; returns the
/// bytes written.
fn encode_record(
    out: &mut Vec<u8>,
    attributes: i8,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> usize {
    fn bytes_field(out: &mut Vec<u8>, v: Option<&[u8]>) {
        match v {
            Some(b) => {
                put_varint(out, b.len() as i32);
                out.extend_from_slice(b);
            }
            None => put_varint(out, -1),
        }
    }
    let start = out.len();
    let body = record_body_len(timestamp_delta, offset_delta, key, value, headers);
    out.reserve(body + 5);
    put_varint(out, body as i32);
    out.push(attributes as u8);
    put_varlong(out, timestamp_delta);
    put_varint(out, offset_delta);
    bytes_field(out, key);
    bytes_field(out, value);
    put_varint(out, headers.len() as i32);
    for h in headers {
        put_varint(out, h.key.len() as i32);
        out.extend_from_slice(h.key.as_bytes());
        bytes_field(out, h.value.as_deref());
    }
    out.len() - start
}

impl Record {
    fn encoded_len(&self) -> usize {
        let body = record_body_len(
            self.timestamp_delta,
            self.offset_delta,
            self.key.as_deref(),
            self.value.as_deref(),
            &self.headers,
        );
        varint_len(body as i32) + body
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        encode_record(
            out,
            self.attributes,
            self.timestamp_delta,
            self.offset_delta,
            self.key.as_deref(),
            self.value.as_deref(),
            &self.headers,
        );
    }

    /// Reads one record from the front of `buf`. `data` is the buffer that
    /// `buf` points into, so keys and values are zero-copy slices of it.
    fn decode(buf: &mut &[u8], data: &Bytes) -> Result<Record> {
        let len = get_varint(buf, "record length")?;
        let len = usize::try_from(len)
            .map_err(|_| Error::invalid("record length", format!("{len} is negative")))?;
        if buf.len() < len {
            return Err(Error::truncated("record", len, buf.len()));
        }
        let (mut body, rest) = buf.split_at(len);
        *buf = rest;
        let (&attributes, tail) = body
            .split_first()
            .ok_or_else(|| Error::truncated("record attributes", 1, 0))?;
        body = tail;
        let timestamp_delta = get_varlong(&mut body, "record timestamp delta")?;
        let offset_delta = get_varint(&mut body, "record offset delta")?;
        let key = bytes_field(&mut body, data, "record key")?;
        let value = bytes_field(&mut body, data, "record value")?;
        let count = get_varint(&mut body, "record header count")?;
        let count = usize::try_from(count)
            .map_err(|_| Error::invalid("record header count", format!("{count} is negative")))?;
        // Each header takes at least two bytes: bound the allocation by the input.
        let mut headers = Vec::with_capacity(count.min(body.len() / 2));
        for _ in 0..count {
            let key = bytes_field(&mut body, data, "record header key")?
                .ok_or_else(|| Error::invalid("record header key", "null"))?;
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| Error::invalid("record header key", "not UTF-8"))?;
            let value = bytes_field(&mut body, data, "record header value")?;
            headers.push(Header { key, value });
        }
        if !body.is_empty() {
            return Err(Error::LengthMismatch {
                what: "record length",
                declared: len as i64,
                actual: (len - body.len()) as i64,
            });
        }
        Ok(Record {
            attributes: attributes as i8,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        })
    }
}

fn bytes_field(buf: &mut &[u8], data: &Bytes, what: &'static str) -> Result<Option<Bytes>> {
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
    Ok(Some(data.slice_ref(field)))
}

/// A whole RecordBatch v2 with its records decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBatch {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub attributes: Attributes,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: Vec<Record>,
}

impl Default for RecordBatch {
    fn default() -> Self {
        RecordBatch {
            base_offset: 0,
            partition_leader_epoch: -1,
            attributes: Attributes::default(),
            last_offset_delta: -1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            records: Vec::new(),
        }
    }
}

/// Decoding limits for [`RecordBatch::decode_with`].
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Maximum size of the records once decompressed (default 64 MiB).
    pub max_uncompressed_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_uncompressed_bytes: 64 << 20,
        }
    }
}

impl RecordBatch {
    /// Builds a batch of records written at the given absolute timestamps,
    /// with dense offset deltas from 0: what a producer sends.
    pub fn from_records(records: impl IntoIterator<Item = NewRecord>) -> RecordBatch {
        let records: Vec<NewRecord> = records.into_iter().collect();
        let base_timestamp = records.first().map_or(0, |r| r.timestamp);
        let max_timestamp = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
        RecordBatch {
            last_offset_delta: records.len() as i32 - 1,
            base_timestamp,
            max_timestamp,
            records: records
                .into_iter()
                .enumerate()
                .map(|(i, r)| Record {
                    attributes: 0,
                    timestamp_delta: r.timestamp - base_timestamp,
                    offset_delta: i as i32,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                })
                .collect(),
            ..RecordBatch::default()
        }
    }

    /// The batch's compression codec.
    pub fn compression(&self) -> Result<Compression> {
        self.attributes.compression()
    }

    /// Sets the compression codec used by [`encode`](Self::encode).
    pub fn with_compression(mut self, c: Compression) -> Self {
        self.attributes = self.attributes.with_compression(c);
        self
    }

    /// Sets the producer id, epoch and base sequence (idempotent producers).
    pub fn with_producer(mut self, producer_id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Each record with its absolute offset and timestamp.
    pub fn iter(&self) -> impl Iterator<Item = (i64, i64, &Record)> {
        self.records.iter().map(move |r| {
            (
                self.base_offset + i64::from(r.offset_delta),
                self.base_timestamp + r.timestamp_delta,
                r,
            )
        })
    }

    /// Encodes the batch, compressing the records with the codec in its
    /// attributes and computing the CRC.
    pub fn encode(&self) -> Result<Bytes> {
        let codec = self.compression()?;
        let plain_len: usize = self.records.iter().map(Record::encoded_len).sum();
        let mut out = Vec::with_capacity(BATCH_HEADER_LEN + plain_len);
        out.resize(BATCH_HEADER_LEN, 0);
        for r in &self.records {
            r.encode_into(&mut out);
        }
        let header = HeaderFields {
            base_offset: self.base_offset,
            partition_leader_epoch: self.partition_leader_epoch,
            attributes: self.attributes,
            last_offset_delta: self.last_offset_delta,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            record_count: self.records.len() as i32,
        };
        seal(compress_records(out, codec)?, &header)
    }

    /// Decodes one complete batch that fills `buf`, with default limits.
    pub fn decode(buf: &Bytes) -> Result<RecordBatch> {
        Self::decode_with(buf, DecodeLimits::default())
    }

    /// Decodes one complete batch that fills `buf`: validates it, then
    /// decompresses and reads every record. Uncompressed keys and values
    /// share `buf`'s memory.
    pub fn decode_with(buf: &Bytes, limits: DecodeLimits) -> Result<RecordBatch> {
        let h = BatchHeader::validate(buf, usize::MAX)?;
        let codec = h.attributes.compression()?;
        let data = match codec {
            Compression::None => buf.slice(BATCH_HEADER_LEN..),
            c => {
                Bytes::from(c.decompress(&buf[BATCH_HEADER_LEN..], limits.max_uncompressed_bytes)?)
            }
        };
        let mut rest: &[u8] = &data;
        // A record takes at least 7 bytes: bound the allocation by the input.
        let mut records = Vec::with_capacity((h.record_count as usize).min(rest.len() / 7));
        while !rest.is_empty() {
            if records.len() == h.record_count as usize {
                return Err(Error::RecordCountMismatch {
                    declared: h.record_count.into(),
                    actual: format!("{} bytes follow the last record", rest.len()),
                });
            }
            records.push(Record::decode(&mut rest, &data)?);
        }
        if records.len() != h.record_count as usize {
            return Err(Error::RecordCountMismatch {
                declared: h.record_count.into(),
                actual: format!("the batch holds {}", records.len()),
            });
        }
        Ok(RecordBatch {
            base_offset: h.base_offset,
            partition_leader_epoch: h.partition_leader_epoch,
            attributes: h.attributes,
            last_offset_delta: h.last_offset_delta,
            base_timestamp: h.base_timestamp,
            max_timestamp: h.max_timestamp,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            records,
        })
    }
}

/// The header fields a writer chooses (length and CRC are computed).
struct HeaderFields {
    base_offset: i64,
    partition_leader_epoch: i32,
    attributes: Attributes,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    record_count: i32,
}

/// Compresses the records that follow the header placeholder in `buf`.
fn compress_records(buf: Vec<u8>, codec: Compression) -> Result<Vec<u8>> {
    if codec == Compression::None {
        return Ok(buf);
    }
    let packed = codec.compress(&buf[BATCH_HEADER_LEN..])?;
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + packed.len());
    out.resize(BATCH_HEADER_LEN, 0);
    out.extend_from_slice(&packed);
    Ok(out)
}

/// Writes the header into the first [`BATCH_HEADER_LEN`] bytes of `out`
/// (the records follow) and computes length and CRC.
fn seal(mut out: Vec<u8>, h: &HeaderFields) -> Result<Bytes> {
    let batch_length = i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| Error::TooLarge {
        what: "record batch",
        size: out.len(),
        max: i32::MAX as usize,
    })?;
    let mut header = &mut out[..BATCH_HEADER_LEN];
    header.put_i64(h.base_offset);
    header.put_i32(batch_length);
    header.put_i32(h.partition_leader_epoch);
    header.put_i8(MAGIC_V2);
    header.put_u32(0); // CRC, filled below
    header.put_i16(h.attributes.0);
    header.put_i32(h.last_offset_delta);
    header.put_i64(h.base_timestamp);
    header.put_i64(h.max_timestamp);
    header.put_i64(h.producer_id);
    header.put_i16(h.producer_epoch);
    header.put_i32(h.base_sequence);
    header.put_i32(h.record_count);
    let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Bytes::from(out))
}

/// Rewrites the producer id, epoch and base sequence of the batch that
/// fills `buf` and re-seals its CRC (used to re-sequence a batch that was
/// never committed).
pub fn set_producer(
    buf: &mut [u8],
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
) -> Result<()> {
    BatchHeader::parse(buf)?;
    buf[43..51].copy_from_slice(&producer_id.to_be_bytes());
    buf[51..53].copy_from_slice(&epoch.to_be_bytes());
    buf[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..]);
    buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Builds a batch record by record, encoding each as it is added, so a
/// producer keeps one growing buffer per partition instead of records.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    /// An empty batch whose timestamps are relative to `base_timestamp`
    /// (usually the first record's).
    pub fn new(base_timestamp: i64) -> Self {
        let mut buf = Vec::with_capacity(1024);
        buf.resize(BATCH_HEADER_LEN, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp,
            max_timestamp: base_timestamp,
        }
    }

    /// Records added so far.
    pub fn record_count(&self) -> usize {
        self.count as usize
    }

    /// Size of the batch uncompressed, header included.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Size a record would add to a batch (an upper bound: offset and
    /// timestamp deltas are counted at their widest).
    pub fn record_size_bound(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> usize {
        record_body_len(i64::MAX, i32::MAX, key, value, headers) + 5
    }

    /// Appends a record; returns its offset delta.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> i32 {
        let delta = self.count;
        encode_record(
            &mut self.buf,
            0,
            timestamp.wrapping_sub(self.base_timestamp),
            delta,
            key,
            value,
            headers,
        );
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
        delta
    }

    /// Compresses and seals the batch with the given producer fields
    /// (`-1, -1, -1` for a producer without idempotence).
    pub fn finish(
        self,
        compression: Compression,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
        transactional: bool,
    ) -> Result<Bytes> {
        seal(
            compress_records(self.buf, compression)?,
            &HeaderFields {
                base_offset: 0,
                partition_leader_epoch: -1,
                attributes: Attributes::default()
                    .with_compression(compression)
                    .with_transactional(transactional),
                last_offset_delta: self.count - 1,
                base_timestamp: self.base_timestamp,
                max_timestamp: self.max_timestamp,
                producer_id,
                producer_epoch,
                base_sequence,
                record_count: self.count,
            },
        )
    }
}

/// A record to be written: absolute timestamp, key, value and headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewRecord {
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl NewRecord {
    /// A record with a value and optional key, no headers.
    pub fn new(timestamp: i64, key: Option<Bytes>, value: impl Into<Bytes>) -> Self {
        NewRecord {
            timestamp,
            key,
            value: Some(value.into()),
            headers: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(codec: Compression) -> RecordBatch {
        RecordBatch::from_records((0..10).map(|i| NewRecord {
            timestamp: 1_700_000_000_000 + i,
            key: (i % 2 == 0).then(|| Bytes::from(format!("key-{i}"))),
            value: (i != 3).then(|| Bytes::from(format!("value-{i}").repeat(5))),
            headers: vec![Header {
                key: "h".into(),
                value: Some(Bytes::from_static(b"v")),
            }],
        }))
        .with_compression(codec)
        .with_producer(7, 1, 42)
    }

    #[test]
    fn round_trip_every_codec() {
        for codec in Compression::ALL {
            let batch = sample(codec);
            let bytes = batch.encode().unwrap();
            let back = RecordBatch::decode(&bytes).unwrap();
            assert_eq!(back, batch, "{codec}");
            let h = BatchHeader::validate(&bytes, 1 << 20).unwrap();
            assert_eq!(h.record_count, 10);
            assert_eq!(h.offset_span(), 10);
            assert_eq!(h.producer_id, 7);
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let bytes = sample(Compression::None).encode().unwrap();
        let mut bad = bytes.to_vec();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            BatchHeader::validate(&bad, 1 << 20),
            Err(Error::BadCrc { .. })
        ));
        let mut bad = bytes.to_vec();
        bad[16] = 1;
        assert!(matches!(
            BatchHeader::validate(&bad, 1 << 20),
            Err(Error::BadMagic(1))
        ));
        assert!(matches!(
            BatchHeader::validate(&bytes[..bytes.len() - 1], 1 << 20),
            Err(Error::LengthMismatch { .. })
        ));
        assert!(matches!(
            BatchHeader::validate(&bytes[..20], 1 << 20),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            BatchHeader::validate(&bytes, 100),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn builder_matches_from_records() {
        for codec in Compression::ALL {
            let expected = sample(codec);
            let mut b = BatchBuilder::new(expected.base_timestamp);
            for (_, ts, r) in expected.iter() {
                b.push(ts, r.key.as_deref(), r.value.as_deref(), &r.headers);
            }
            assert_eq!(b.record_count(), 10);
            let bytes = b.finish(codec, 7, 1, 42, false).unwrap();
            let mut decoded = RecordBatch::decode(&bytes).unwrap();
            decoded.partition_leader_epoch = expected.partition_leader_epoch;
            assert_eq!(decoded, expected, "{codec}");
        }
    }

    #[test]
    fn set_producer_reseals() {
        let mut bytes = sample(Compression::Lz4).encode().unwrap().to_vec();
        set_producer(&mut bytes, 99, 4, 1000).unwrap();
        let h = BatchHeader::validate(&bytes, 1 << 20).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (99, 4, 1000)
        );
        assert!(set_producer(&mut bytes[..10], 1, 1, 1).is_err());
    }

    #[test]
    fn empty_batch_is_rejected() {
        let bytes = RecordBatch::from_records([]).encode().unwrap();
        let err = BatchHeader::validate(&bytes, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("last_offset_delta"), "{err}");
    }

    #[test]
    fn record_count_mismatch_is_detected() {
        let mut batch = sample(Compression::None);
        batch.records.pop();
        let mut bytes = batch.encode().unwrap().to_vec();
        // Claim one record more than present, and re-seal the CRC.
        bytes[57..61].copy_from_slice(&10i32.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = RecordBatch::decode(&Bytes::from(bytes)).unwrap_err();
        assert!(matches!(err, Error::RecordCountMismatch { .. }), "{err}");
    }

    #[test]
    fn base_offset_patch_keeps_crc_valid() {
        let bytes = sample(Compression::Lz4).encode().unwrap();
        let mut patched = bytes.to_vec();
        set_base_offset(&mut patched, 12345);
        let back = RecordBatch::decode(&Bytes::from(patched)).unwrap();
        assert_eq!(back.base_offset, 12345);
        assert_eq!(back.iter().next().unwrap().0, 12345);
    }

    #[test]
    fn batches_iterates_concatenation() {
        let a = sample(Compression::None).encode().unwrap();
        let b = sample(Compression::Lz4).encode().unwrap();
        let joined = [a.as_ref(), b.as_ref()].concat();
        let parsed: Vec<_> = batches(&joined).collect::<Result<_>>().unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].1, b.as_ref());
        let cut = &joined[..joined.len() - 3];
        let results: Vec<_> = batches(cut).collect();
        assert!(results[1].is_err());
    }

    fn arb_bytes() -> impl Strategy<Value = Option<Bytes>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from))
    }

    fn arb_record() -> impl Strategy<Value = NewRecord> {
        (
            0i64..1 << 45,
            arb_bytes(),
            arb_bytes(),
            proptest::collection::vec(("[a-z]{0,8}", arb_bytes()), 0..3),
        )
            .prop_map(|(timestamp, key, value, headers)| NewRecord {
                timestamp,
                key,
                value,
                headers: headers
                    .into_iter()
                    .map(|(key, value)| Header { key, value })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn prop_round_trip(
            records in proptest::collection::vec(arb_record(), 1..20),
            codec in 0usize..5,
            producer in (any::<i64>(), any::<i16>(), any::<i32>()),
            transactional: bool,
            base_offset in any::<i64>(),
        ) {
            let mut batch = RecordBatch::from_records(records)
                .with_compression(Compression::ALL[codec])
                .with_producer(producer.0, producer.1, producer.2);
            batch.attributes = batch.attributes.with_transactional(transactional);
            batch.base_offset = base_offset;
            let bytes = batch.encode().unwrap();
            prop_assert_eq!(RecordBatch::decode(&bytes).unwrap(), batch);
        }

        #[test]
        fn prop_decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let bytes = Bytes::from(bytes);
            let _ = RecordBatch::decode(&bytes);
            let _ = BatchHeader::validate(&bytes, 1 << 20);
            let _ = batches(&bytes).count();
        }

        /// Mutated valid batches whose CRC is re-sealed, so that decoding
        /// reaches the record parser and the decompressors.
        #[test]
        fn prop_decoding_mutated_batches_never_panics(
            records in proptest::collection::vec(arb_record(), 1..8),
            codec in 0usize..5,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let batch = RecordBatch::from_records(records).with_compression(Compression::ALL[codec]);
            let mut bytes = batch.encode().unwrap().to_vec();
            for (at, v) in flips {
                let i = 21 + at.index(bytes.len() - 21);
                bytes[i] ^= v;
            }
            let crc = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            let _ = RecordBatch::decode(&Bytes::from(bytes.clone()));
            let len = cut.index(bytes.len() + 1);
            bytes.truncate(len);
            let _ = RecordBatch::decode(&Bytes::from(bytes));
        }
    }
}
