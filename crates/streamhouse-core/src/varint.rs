//! Zig-zag variable-length integers as Kafka writes them inside records.

use crate::error::{Error, Result};

/// Appends `v` as a zig-zag varint (at most 5 bytes).
pub fn put_varint(buf: &mut Vec<u8>, v: i32) {
    put_unsigned(buf, ((v << 1) ^ (v >> 31)) as u32 as u64);
}

/// Appends `v` as a zig-zag varlong (at most 10 bytes).
pub fn put_varlong(buf: &mut Vec<u8>, v: i64) {
    put_unsigned(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Number of bytes [`put_varint`] writes for `v`.
pub fn varint_len(v: i32) -> usize {
    unsigned_len(((v << 1) ^ (v >> 31)) as u32 as u64)
}

/// Number of bytes [`put_varlong`] writes for `v`.
pub fn varlong_len(v: i64) -> usize {
    unsigned_len(((v << 1) ^ (v >> 63)) as u64)
}

fn put_unsigned(buf: &mut Vec<u8>, mut u: u64) {
    while u >= 0x80 {
        buf.push((u as u8) | 0x80);
        u >>= 7;
    }
    buf.push(u as u8);
}

fn unsigned_len(u: u64) -> usize {
    let bits = 64 - u.leading_zeros() as usize;
    bits.max(1).div_ceil(7)
}

/// Reads an unsigned varint of at most `max_bytes` (at least 2) bytes,
/// advancing `buf`. One- and two-byte values, nearly every length, delta
/// and count of a record, take the inlined fast path.
#[inline(always)]
fn get_unsigned(buf: &mut &[u8], max_bytes: usize, what: &'static str) -> Result<u64> {
    match *buf {
        [b0, rest @ ..] if *b0 < 0x80 => {
            *buf = rest;
            Ok(u64::from(*b0))
        }
        [b0, b1, rest @ ..] if *b1 < 0x80 => {
            *buf = rest;
            Ok(u64::from(b0 & 0x7f) | u64::from(*b1) << 7)
        }
        _ => get_unsigned_slow(buf, max_bytes, what),
    }
}

#[inline(never)]
fn get_unsigned_slow(buf: &mut &[u8], max_bytes: usize, what: &'static str) -> Result<u64> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let Some((&b, rest)) = buf.split_first() else {
            return Err(Error::truncated(what, i + 1, i));
        };
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Error::invalid(
        what,
        format!("varint longer than {max_bytes} bytes"),
    ))
}

/// Reads a zig-zag varint, advancing `buf`.
#[inline]
pub fn get_varint(buf: &mut &[u8], what: &'static str) -> Result<i32> {
    let u = get_unsigned(buf, 5, what)?;
    let u = u32::try_from(u).map_err(|_| Error::invalid(what, "varint overflows 32 bits"))?;
    Ok(((u >> 1) as i32) ^ -((u & 1) as i32))
}

/// Reads a zig-zag varlong, advancing `buf`.
#[inline]
pub fn get_varlong(buf: &mut &[u8], what: &'static str) -> Result<i64> {
    let u = get_unsigned(buf, 10, what)?;
    Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        // Values from Kafka's ByteUtilsTest.
        let cases: [(i32, &[u8]); 5] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
        ];
        for (v, bytes) in cases {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf, bytes, "{v}");
        }
        let mut buf = Vec::new();
        put_varint(&mut buf, 64);
        assert_eq!(buf, [0x80, 0x01]);
        buf.clear();
        put_varint(&mut buf, i32::MIN);
        assert_eq!(buf, [0xff, 0xff, 0xff, 0xff, 0x0f]);
    }

    #[test]
    fn rejects_overlong_and_truncated() {
        let mut b: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(get_varint(&mut b, "x").is_err());
        let mut b: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0x1f];
        assert!(get_varint(&mut b, "x").is_err(), "overflows 32 bits");
        let mut b: &[u8] = &[0x80];
        assert!(matches!(
            get_varlong(&mut b, "x"),
            Err(Error::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn varint_round_trip(v in any::<i32>()) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            prop_assert_eq!(buf.len(), varint_len(v));
            let mut slice = buf.as_slice();
            prop_assert_eq!(get_varint(&mut slice, "v").unwrap(), v);
            prop_assert!(slice.is_empty());
        }

        #[test]
        fn varlong_round_trip(v in any::<i64>()) {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            prop_assert_eq!(buf.len(), varlong_len(v));
            let mut slice = buf.as_slice();
            prop_assert_eq!(get_varlong(&mut slice, "v").unwrap(), v);
        }

        #[test]
        fn the_fast_path_reads_as_the_general_one(
            bytes in proptest::collection::vec(any::<u8>(), 0..12),
            max in 2usize..=10,
        ) {
            let (mut fast, mut slow) = (bytes.as_slice(), bytes.as_slice());
            let a = get_unsigned(&mut fast, max, "v").map_err(|e| e.to_string());
            let b = get_unsigned_slow(&mut slow, max, "v").map_err(|e| e.to_string());
            prop_assert_eq!(a.clone(), b);
            if a.is_ok() {
                prop_assert_eq!(fast, slow);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = get_varint(&mut bytes.as_slice(), "v");
            let _ = get_varlong(&mut bytes.as_slice(), "v");
        }
    }
}
