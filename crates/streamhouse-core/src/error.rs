//! The one error type of `streamhouse-core`.

/// What was wrong with a record batch, a name, a limit or a SASL exchange.
///
/// Every variant names the offending value, so an agent can hand the message
/// to a client unchanged; the SASL variants name what was wrong but never echo
/// secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ended before a complete structure was read.
    #[error("truncated {what}: needed {needed} bytes, {available} available")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    /// The batch is not a RecordBatch v2.
    #[error("unsupported record batch magic {0} (only magic 2 is supported)")]
    BadMagic(i8),
    /// The stored CRC32C does not match the bytes.
    #[error("record batch CRC mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    BadCrc { expected: u32, actual: u32 },
    /// A length field disagrees with the bytes present.
    #[error("{what}: declared {declared} bytes, found {actual}")]
    LengthMismatch {
        what: &'static str,
        declared: i64,
        actual: i64,
    },
    /// The header's record count disagrees with the records.
    #[error("record count mismatch: header says {declared}, {actual}")]
    RecordCountMismatch { declared: i64, actual: String },
    /// A batch or record is over a configured maximum.
    #[error("{what} of {size} bytes is over the maximum of {max} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        max: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// The compression codec bits name no known codec.
    #[error("unknown compression codec {0} in batch attributes")]
    UnknownCompression(u8),
    /// Compressing or decompressing the records failed.
    #[error("{codec} {op} failed")]
    Compression {
        codec: &'static str,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A topic name breaks the naming rules.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    /// A SASL exchange failed: a malformed message, a mismatched nonce or
    /// channel binding, or a wrong password. The reason never holds a
    /// password, a proof, a key or a salted password.
    #[error("{mechanism} authentication failed: {reason}")]
    Authentication {
        mechanism: &'static str,
        reason: String,
    },
    /// Stored or submitted SASL credential material is unusable (iteration
    /// count out of range, key or salt of the wrong length). The reason never
    /// holds key material.
    #[error("invalid {mechanism} credential: {reason}")]
    InvalidCredential {
        mechanism: &'static str,
        reason: String,
    },
}

impl Error {
    pub(crate) fn truncated(what: &'static str, needed: usize, available: usize) -> Self {
        Error::Truncated {
            what,
            needed,
            available,
        }
    }

    pub(crate) fn auth(mechanism: &'static str, reason: impl Into<String>) -> Self {
        Error::Authentication {
            mechanism,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_credential(mechanism: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidCredential {
            mechanism,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

/// Result with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
