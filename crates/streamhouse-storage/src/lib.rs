//! StreamHouse storage: the object format, the write pipeline that turns
//! appends to any number of partitions into ONE object per flush with
//! offsets assigned at commit, and the cached read path.
//!
//! Objects live in any [`object_store::ObjectStore`] ([`open_object_store`]:
//! `file://DIR`, `s3://BUCKET/PREFIX`, `memory://`); offsets and segment
//! rows live in a [`streamhouse_metadata::MetadataStore`].

pub mod cache;
mod error;
mod metered;
pub mod object;
mod pipeline;
mod reader;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod topics;

pub use error::{Error, Result};
pub use metered::MeteredStore;
pub use pipeline::{
    Appended, Appending, BatchValidator, PipelineConfig, PipelineStats, ValidBatch, WritePipeline,
    upload_object,
};
pub use reader::{ReadResult, Reader, ReaderConfig};
pub use store::{S3Options, open_object_store, open_object_store_without_fsync};
