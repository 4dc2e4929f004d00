//! The object footer decoder never panics on any tail and object size, and
//! every chunk it returns lies inside the object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamhouse_storage::object::decode_footer;

fuzz_target!(|input: (u64, &[u8])| {
    let (object_size, tail) = input;
    if let Ok(chunks) = decode_footer(tail, object_size) {
        for c in chunks {
            assert!(c.byte_start.saturating_add(c.byte_length) <= object_size);
        }
    }
});
