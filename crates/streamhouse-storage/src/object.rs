//! The object format: partition chunks followed by a self-describing footer.
//!
//! ```text
//! object  := chunk* footer trailer
//! chunk   := record batch*            (one partition, base offsets 0)
//! footer  := entry_count:u32 entry*
//! entry   := topic_id:i64 partition:u32 byte_start:u64 byte_length:u64
//!            batch_count:u32 record_count:u64 min_timestamp:i64 max_timestamp:i64
//! trailer := footer_length:u32 footer_crc32c:u32 magic:"SHO\x01"
//! ```
//! All integers big-endian. The footer lets an object be read without the
//! metadata store: for debugging and for orphan detection.

use bytes::{BufMut, Bytes, BytesMut};

/// Last four bytes of every object (the last byte is the format version).
pub const MAGIC: [u8; 4] = *b"SHO\x01";
/// Size of the fixed trailer at the end of an object.
pub const TRAILER_LEN: usize = 12;
const ENTRY_LEN: usize = 8 + 4 + 8 + 8 + 4 + 8 + 8 + 8;

/// Where one partition's chunk lies in an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkIndex {
    pub topic_id: i64,
    pub partition: u32,
    pub byte_start: u64,
    pub byte_length: u64,
    pub batch_count: u32,
    pub record_count: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
}

/// Builds an object chunk by chunk.
#[derive(Debug, Default)]
pub struct ObjectBuilder {
    buf: BytesMut,
    chunks: Vec<ChunkIndex>,
}

impl ObjectBuilder {
    /// A builder with room for `capacity` bytes of batches.
    pub fn with_capacity(capacity: usize) -> Self {
        ObjectBuilder {
            buf: BytesMut::with_capacity(capacity + 64),
            chunks: Vec::new(),
        }
    }

    /// Current size of the chunks written.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no chunk was written.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Appends one batch to the chunk of `(topic_id, partition)`, starting a
    /// new chunk when the partition changes. Returns the batch's byte offset.
    pub fn push_batch(
        &mut self,
        topic_id: i64,
        partition: u32,
        batch: &[u8],
        record_count: u64,
        min_timestamp: i64,
        max_timestamp: i64,
    ) -> u64 {
        let at = self.buf.len() as u64;
        match self.chunks.last_mut() {
            Some(c) if c.topic_id == topic_id && c.partition == partition => {
                c.byte_length += batch.len() as u64;
                c.batch_count += 1;
                c.record_count += record_count;
                c.min_timestamp = c.min_timestamp.min(min_timestamp);
                c.max_timestamp = c.max_timestamp.max(max_timestamp);
            }
            _ => self.chunks.push(ChunkIndex {
                topic_id,
                partition,
                byte_start: at,
                byte_length: batch.len() as u64,
                batch_count: 1,
                record_count,
                min_timestamp,
                max_timestamp,
            }),
        }
        self.buf.extend_from_slice(batch);
        at
    }

    /// Writes the footer and returns the object bytes with its chunk index.
    pub fn finish(mut self) -> (Bytes, Vec<ChunkIndex>) {
        let footer = encode_footer(&self.chunks);
        let crc = crc32c::crc32c(&footer);
        self.buf.extend_from_slice(&footer);
        self.buf.put_u32(footer.len() as u32);
        self.buf.put_u32(crc);
        self.buf.extend_from_slice(&MAGIC);
        (self.buf.freeze(), self.chunks)
    }
}

fn encode_footer(chunks: &[ChunkIndex]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + chunks.len() * ENTRY_LEN);
    out.put_u32(chunks.len() as u32);
    for c in chunks {
        out.put_i64(c.topic_id);
        out.put_u32(c.partition);
        out.put_u64(c.byte_start);
        out.put_u64(c.byte_length);
        out.put_u32(c.batch_count);
        out.put_u64(c.record_count);
        out.put_i64(c.min_timestamp);
        out.put_i64(c.max_timestamp);
    }
    out
}

/// Reads the trailer (the last [`TRAILER_LEN`] bytes of an object) and
/// returns the footer's length and CRC.
pub fn decode_trailer(trailer: &[u8]) -> Result<(usize, u32), String> {
    if trailer.len() != TRAILER_LEN {
        return Err(format!(
            "trailer is {} bytes, not {TRAILER_LEN}",
            trailer.len()
        ));
    }
    if trailer[8..] != MAGIC {
        return Err(format!("bad magic {:02x?}", &trailer[8..]));
    }
    let len = u32::from_be_bytes(trailer[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(trailer[4..8].try_into().expect("4 bytes"));
    Ok((len, crc))
}

/// Decodes a whole object's footer: `object` may be the full object or any
/// suffix of it that holds the footer and trailer. `object_size` is the full
/// size, used to check that every chunk lies inside the object.
pub fn decode_footer(tail: &[u8], object_size: u64) -> Result<Vec<ChunkIndex>, String> {
    if tail.len() < TRAILER_LEN {
        return Err(format!("{} bytes cannot hold a trailer", tail.len()));
    }
    let (len, crc) = decode_trailer(&tail[tail.len() - TRAILER_LEN..])?;
    let end = tail.len() - TRAILER_LEN;
    if len > end {
        return Err(format!(
            "footer length {len} exceeds the {end} bytes before the trailer"
        ));
    }
    let footer = &tail[end - len..end];
    if crc32c::crc32c(footer) != crc {
        return Err("footer CRC mismatch".into());
    }
    if footer.len() < 4 {
        return Err("footer too short for its entry count".into());
    }
    let count = u32::from_be_bytes(footer[..4].try_into().expect("4 bytes")) as usize;
    let body = &footer[4..];
    if body.len() != count * ENTRY_LEN {
        return Err(format!(
            "footer holds {} bytes for {count} entries",
            body.len()
        ));
    }
    let data_end = object_size.saturating_sub((len + TRAILER_LEN) as u64);
    body.chunks_exact(ENTRY_LEN)
        .map(|mut e| {
            let c = ChunkIndex {
                topic_id: bytes::Buf::get_i64(&mut e),
                partition: bytes::Buf::get_u32(&mut e),
                byte_start: bytes::Buf::get_u64(&mut e),
                byte_length: bytes::Buf::get_u64(&mut e),
                batch_count: bytes::Buf::get_u32(&mut e),
                record_count: bytes::Buf::get_u64(&mut e),
                min_timestamp: bytes::Buf::get_i64(&mut e),
                max_timestamp: bytes::Buf::get_i64(&mut e),
            };
            match c.byte_start.checked_add(c.byte_length) {
                Some(end) if end <= data_end => Ok(c),
                _ => Err(format!(
                    "chunk {}:{} at {}+{} lies outside the {data_end} data bytes",
                    c.topic_id, c.partition, c.byte_start, c.byte_length
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_chunks() -> impl Strategy<Value = Vec<(i64, u32, Vec<Vec<u8>>)>> {
        proptest::collection::vec(
            (
                any::<i64>(),
                any::<u32>(),
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 1..4),
            ),
            0..6,
        )
    }

    proptest! {
        #[test]
        fn round_trip(chunks in arb_chunks()) {
            let mut b = ObjectBuilder::default();
            let mut expect = Vec::new();
            for (i, (topic, partition, batches)) in chunks.iter().enumerate() {
                // Distinct consecutive partitions, so each entry is its own chunk.
                let partition = partition.wrapping_add(i as u32 * 2);
                let start = b.len() as u64;
                for batch in batches {
                    b.push_batch(*topic, partition, batch, 2, 5, 9);
                }
                let len: usize = batches.iter().map(Vec::len).sum();
                expect.push((*topic, partition, start, len as u64, batches.len() as u32));
            }
            let (bytes, index) = b.finish();
            let decoded = decode_footer(&bytes, bytes.len() as u64).unwrap();
            prop_assert_eq!(&decoded, &index);
            let got: Vec<_> = decoded.iter()
                .map(|c| (c.topic_id, c.partition, c.byte_start, c.byte_length, c.batch_count))
                .collect();
            // Consecutive entries may merge when random partitions collide;
            // compare only when they did not.
            if got.len() == expect.len() {
                prop_assert_eq!(got, expect);
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), size in any::<u64>()) {
            let _ = decode_footer(&bytes, size);
        }

        #[test]
        fn corruption_is_detected(chunks in arb_chunks(), at in any::<prop::sample::Index>(), flip in 1u8..) {
            let mut b = ObjectBuilder::default();
            for (topic, partition, batches) in &chunks {
                for batch in batches {
                    b.push_batch(*topic, *partition, batch, 1, 0, 0);
                }
            }
            let data_len = b.len();
            let (bytes, _) = b.finish();
            let mut bad = bytes.to_vec();
            let i = data_len + at.index(bytes.len() - data_len);
            bad[i] ^= flip;
            prop_assert!(decode_footer(&bad, bad.len() as u64).is_err());
        }
    }

    #[test]
    fn consecutive_batches_of_a_partition_share_a_chunk() {
        let mut b = ObjectBuilder::default();
        b.push_batch(1, 0, b"aaaa", 2, 10, 20);
        b.push_batch(1, 0, b"bb", 1, 5, 30);
        b.push_batch(1, 1, b"c", 1, 7, 7);
        let (bytes, index) = b.finish();
        assert_eq!(index.len(), 2);
        assert_eq!(
            (
                index[0].byte_length,
                index[0].batch_count,
                index[0].record_count
            ),
            (6, 2, 3)
        );
        assert_eq!((index[0].min_timestamp, index[0].max_timestamp), (5, 30));
        assert_eq!(index[1].byte_start, 6);
        assert_eq!(&bytes[..7], b"aaaabbc");
        assert_eq!(decode_footer(&bytes, bytes.len() as u64).unwrap(), index);
    }
}
