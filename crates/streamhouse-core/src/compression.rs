//! Record compression codecs of the Kafka batch format.
//!
//! StreamHouse writes `none` and `lz4` (the default); every codec Kafka
//! defines can be read and written. Decompression is bounded: output larger
//! than the caller's limit is an error, never an unbounded allocation.

use std::io::{Read, Write};

use crate::error::{Error, Result};

/// The compression codec of a batch (attributes bits 0-2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// The header that Java clients (xerial snappy-java) put before framed snappy data.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

impl Compression {
    /// Every codec, in attribute order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec named by the attribute bits.
    pub fn from_id(id: u8) -> Result<Self> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(Error::UnknownCompression(other)),
        })
    }

    /// The attribute bits of this codec.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec's name as Kafka configurations spell it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Compresses `data` (the records section of a batch).
    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>> {
        let err = |source| Error::Compression {
            codec: self.name(),
            op: "compression",
            source,
        };
        match self {
            Compression::None => Ok(data.to_vec()),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(data).map_err(err)?;
                enc.finish().map_err(err)
            }
            Compression::Snappy => snap::raw::Encoder::new()
                .compress_vec(data)
                .map_err(|e| err(std::io::Error::other(e))),
            Compression::Lz4 => {
                // Kafka's LZ4 is the LZ4 frame format with independent blocks
                // and no content checksum, as its Java client writes it.
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_mode(lz4_flex::frame::BlockMode::Independent);
                let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
                enc.write_all(data).map_err(err)?;
                enc.finish().map_err(|e| err(std::io::Error::other(e)))
            }
            Compression::Zstd => zstd::bulk::compress(data, 3).map_err(err),
        }
    }

    /// Decompresses `data`; output over `max_len` bytes is an error.
    pub fn decompress(self, data: &[u8], max_len: usize) -> Result<Vec<u8>> {
        let err = |source| Error::Compression {
            codec: self.name(),
            op: "decompression",
            source,
        };
        match self {
            Compression::None => {
                if data.len() > max_len {
                    return Err(too_large(data.len(), max_len));
                }
                Ok(data.to_vec())
            }
            Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data), max_len)
                .map_err(|e| e.or_else(err)),
            Compression::Snappy => snappy_decompress(data, max_len).map_err(|e| e.or_else(err)),
            Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), max_len)
                .map_err(|e| e.or_else(err)),
            Compression::Zstd => {
                let dec = zstd::stream::read::Decoder::with_buffer(data).map_err(err)?;
                read_bounded(dec, max_len).map_err(|e| e.or_else(err))
            }
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::invalid(
                    "compression",
                    format!("{s:?} is not one of none, gzip, snappy, lz4, zstd"),
                )
            })
    }
}

fn too_large(size: usize, max: usize) -> Error {
    Error::TooLarge {
        what: "decompressed records",
        size,
        max,
    }
}

/// A decompression failure: either already an [`Error`] or an I/O error to wrap.
enum Failure {
    Limit(Error),
    Io(std::io::Error),
}

impl Failure {
    fn or_else(self, wrap: impl FnOnce(std::io::Error) -> Error) -> Error {
        match self {
            Failure::Limit(e) => e,
            Failure::Io(e) => wrap(e),
        }
    }
}

fn read_bounded(reader: impl Read, max_len: usize) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    reader
        .take(max_len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(Failure::Io)?;
    if out.len() > max_len {
        return Err(Failure::Limit(too_large(out.len(), max_len)));
    }
    Ok(out)
}

fn snappy_decompress(data: &[u8], max_len: usize) -> Result<Vec<u8>, Failure> {
    let io = |e: snap::Error| Failure::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
    let raw = |block: &[u8], out: &mut Vec<u8>| -> Result<(), Failure> {
        let len = snap::raw::decompress_len(block).map_err(io)?;
        if out.len() + len > max_len {
            return Err(Failure::Limit(too_large(out.len() + len, max_len)));
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(io)?;
        Ok(())
    };
    let mut out = Vec::new();
    if let Some(mut rest) = data.strip_prefix(&XERIAL_MAGIC[..]) {
        // xerial framing: version and compatible-version ints, then
        // (big-endian u32 length, raw snappy block) pairs.
        if rest.len() < 8 {
            return Err(Failure::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "truncated xerial snappy header",
            )));
        }
        rest = &rest[8..];
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_at_checked(4)
                .ok_or_else(|| Failure::Io(std::io::ErrorKind::UnexpectedEof.into()))?;
            let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
            let (block, tail) = tail.split_at_checked(len).ok_or_else(|| {
                Failure::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "truncated xerial snappy block",
                ))
            })?;
            raw(block, &mut out)?;
            rest = tail;
        }
    } else {
        raw(data, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_codec_round_trips(data in proptest::collection::vec(any::<u8>(), 0..5000), idx in 0usize..5) {
            let codec = Compression::ALL[idx];
            let packed = codec.compress(&data).unwrap();
            prop_assert_eq!(codec.decompress(&packed, data.len()).unwrap(), data);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), idx in 0usize..5) {
            let _ = Compression::ALL[idx].decompress(&data, 1 << 16);
        }
    }

    #[test]
    fn output_over_limit_is_rejected() {
        let data = vec![7u8; 100_000];
        for codec in Compression::ALL {
            let packed = codec.compress(&data).unwrap();
            let err = codec.decompress(&packed, 1000).unwrap_err();
            assert!(matches!(err, Error::TooLarge { .. }), "{codec}: {err}");
        }
    }

    #[test]
    fn xerial_framed_snappy_is_read() {
        let data = b"hello hello hello hello xerial".repeat(10);
        let block = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        for half in [&block[..], &block[..]] {
            framed.extend_from_slice(&(half.len() as u32).to_be_bytes());
            framed.extend_from_slice(half);
        }
        let out = Compression::Snappy.decompress(&framed, 1 << 20).unwrap();
        assert_eq!(out, [data.clone(), data].concat());
    }

    #[test]
    fn names_parse() {
        for c in Compression::ALL {
            assert_eq!(c.name().parse::<Compression>().unwrap(), c);
            assert_eq!(Compression::from_id(c.id()).unwrap(), c);
        }
        assert!("brotli".parse::<Compression>().is_err());
        assert!(matches!(
            Compression::from_id(5),
            Err(Error::UnknownCompression(5))
        ));
    }
}
