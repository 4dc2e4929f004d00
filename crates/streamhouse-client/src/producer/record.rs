//! The records applications send and where they were written.

use bytes::Bytes;
use streamhouse_core::Header;

/// A record to send, with everything optional but the topic.
#[derive(Clone, Debug, Default)]
pub struct ProducerRecord {
    pub topic: String,
    pub key: Option<Bytes>,
    /// `None` is a tombstone (a null value).
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// Milliseconds since the epoch; default: when it is sent.
    pub timestamp: Option<i64>,
    /// Explicit partition; default: by key hash, or sticky for keyless records.
    pub partition: Option<u32>,
}

impl ProducerRecord {
    /// A keyless record.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }

    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Where a record was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendResult {
    pub topic: String,
    pub partition: u32,
    /// The record's offset; -1 when a resent batch of an idempotent
    /// producer was found committed earlier, too long ago for the agent to
    /// remember where (`DUPLICATE_SEQUENCE`): written once, offset unknown.
    pub offset: i64,
    pub timestamp: i64,
}
