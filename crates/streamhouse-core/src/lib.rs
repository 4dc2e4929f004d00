//! StreamHouse formats: the Kafka RecordBatch v2 codec, compression, topic
//! names and limits, and SASL credentials (SCRAM and PLAIN). Everything else
//! in StreamHouse builds on these types.

pub mod batch;
pub mod compression;
pub mod error;
pub mod names;
pub mod plain;
pub mod scram;
pub mod validate;
pub mod varint;

pub use batch::{
    Attributes, BatchBuilder, BatchHeader, DecodeLimits, Header, NewRecord, Record, RecordBatch,
    batches, set_base_offset, set_producer,
};
pub use compression::Compression;
pub use error::{Error, Result};
pub use validate::{ProduceRules, validate_produced};
