//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) without channel
//! binding, as Kafka speaks them: stored credentials, the server side of one
//! exchange ([`parse_client_first`] → [`ClientFirst::server_first`] →
//! [`ServerFirst::client_final`]) and a [`Client`].
//!
//! Kafka's rules apply: the gs2 header is `n,,` or `y,,` (optionally with an
//! authzid equal to the username), `p=` channel binding is refused, and the
//! only client-first extension accepted is `tokenauth`. Usernames are not
//! SASLprep-normalised (Kafka does not either). Every message from the other
//! side is bounded to [`MAX_MESSAGE_LEN`] bytes.

mod client;
mod credential;
mod crypto;
mod message;
mod server;

pub use client::Client;
pub use credential::{Credential, MAX_SALT_LEN, SALT_LEN};
pub use message::{MAX_MESSAGE_LEN, escape_username, unescape_username};
pub use server::{ClientFirst, ServerFirst, parse_client_first};

/// Smallest iteration count accepted (Kafka's minimum, RFC 7677's advice).
pub const MIN_ITERATIONS: u32 = 4096;
/// Largest iteration count accepted (Kafka's maximum).
pub const MAX_ITERATIONS: u32 = 16384;
/// Iteration count for new credentials when none is given.
pub const DEFAULT_ITERATIONS: u32 = 8192;

/// A SCRAM mechanism: the hash function it uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl Mechanism {
    /// Every mechanism, in Kafka type order.
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL mechanism name: `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism with this exact SASL name (case-sensitive, as Kafka).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's `ScramMechanism` code: 1 for SHA-256, 2 for SHA-512.
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    /// The mechanism with this Kafka `ScramMechanism` code (0, UNKNOWN, is none).
    pub fn from_kafka_type(t: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.kafka_type() == t)
    }

    /// Length in bytes of the hash output, and so of every key and proof.
    pub fn hash_len(self) -> usize {
        match self {
            Mechanism::Sha256 => 32,
            Mechanism::Sha512 => 64,
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests;
