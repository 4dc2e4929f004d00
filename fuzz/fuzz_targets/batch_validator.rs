//! The produce-side batch validator never panics, and whatever it accepts
//! every consumer decodes, with the header's record count.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use streamhouse_core::{ProduceRules, RecordBatch, validate_produced};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the rules; the rest is the batch.
    let Some((&flags, batch)) = data.split_first() else {
        return;
    };
    let rules = ProduceRules {
        max_batch_bytes: 1 << 20,
        require_keys: flags & 1 == 1,
    };
    if let Ok(header) = validate_produced(batch, &rules) {
        let decoded = RecordBatch::decode(&Bytes::copy_from_slice(batch))
            .expect("a batch the validator accepts decodes");
        assert_eq!(decoded.records.len(), header.record_count as usize);
        if rules.require_keys {
            assert!(decoded.records.iter().all(|r| r.key.is_some()));
        }
    }
});
