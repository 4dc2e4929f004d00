//! The server side of one SCRAM exchange.

use rand::RngCore as _;

use super::crypto::{ct_eq, hash, hmac, xor};
use super::message::{self, ClientFirstParts, encode_base64, is_printable_nonce};
use super::{Credential, Mechanism};
use crate::error::{Error, Result};

/// Random bytes in a server nonce (base64-encoded, so 32 printable characters
/// without `,`).
pub const SERVER_NONCE_BYTES: usize = 24;

/// Name used in errors raised before the mechanism is known (the client-first
/// message does not say which SCRAM variant it is for).
const SCRAM: &str = "SCRAM";

/// A parsed client-first-message.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientFirst {
    parts: ClientFirstParts,
}

impl std::fmt::Debug for ClientFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientFirst")
            .field("username", &self.parts.username)
            .field("token_auth", &self.parts.token_auth)
            .finish_non_exhaustive()
    }
}

/// Parses a client-first-message (`n,,n=user,r=nonce`). See the
/// [module docs](super) for what is accepted. Errors name the mechanism as
/// `SCRAM`, since the message does not tell which hash is in use.
pub fn parse_client_first(message: &[u8]) -> Result<ClientFirst> {
    message::parse_client_first(SCRAM, message).map(|parts| ClientFirst { parts })
}

impl ClientFirst {
    /// The username, saslname-decoded (`=2C` → `,`, `=3D` → `=`).
    pub fn username(&self) -> &str {
        &self.parts.username
    }

    /// The client nonce.
    pub fn client_nonce(&self) -> &str {
        &self.parts.nonce
    }

    /// Whether the client sent `tokenauth=true` (Kafka delegation tokens):
    /// the credential to use is then the token's, not the user's.
    pub fn token_auth(&self) -> bool {
        self.parts.token_auth
    }

    /// Builds the server-first-message with nonce = client nonce + a fresh
    /// random server nonce (printable, no `,`), and the state that checks
    /// the client's answer.
    pub fn server_first(self, credential: &Credential) -> (ServerFirst, Vec<u8>) {
        let mut random = [0u8; SERVER_NONCE_BYTES];
        rand::rng().fill_bytes(&mut random);
        self.build_server_first(credential, &encode_base64(&random))
    }

    /// [`ClientFirst::server_first`] with a chosen server nonce, so test
    /// vectors reproduce. Not for production: the nonce must be fresh and
    /// random. Fails if the nonce is empty or not printable without `,`.
    #[doc(hidden)]
    pub fn server_first_with_nonce(
        self,
        credential: &Credential,
        server_nonce: &str,
    ) -> Result<(ServerFirst, Vec<u8>)> {
        if !is_printable_nonce(server_nonce) {
            return Err(Error::auth(
                credential.mechanism.name(),
                "server nonce is empty or not printable ASCII",
            ));
        }
        Ok(self.build_server_first(credential, server_nonce))
    }

    fn build_server_first(
        self,
        credential: &Credential,
        server_nonce: &str,
    ) -> (ServerFirst, Vec<u8>) {
        let nonce = format!("{}{server_nonce}", self.parts.nonce);
        let message = format!(
            "r={nonce},s={},i={}",
            encode_base64(&credential.salt),
            credential.iterations
        );
        let server_first = ServerFirst {
            mechanism: credential.mechanism,
            credential_ok: credential.validate().is_ok(),
            stored_key: credential.stored_key.clone(),
            server_key: credential.server_key.clone(),
            gs2_header: self.parts.gs2_header,
            client_first_bare: self.parts.bare,
            server_first: message.clone(),
            nonce,
        };
        (server_first, message.into_bytes())
    }
}

/// The server's state after sending server-first-message.
#[derive(Clone)]
pub struct ServerFirst {
    mechanism: Mechanism,
    credential_ok: bool,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl std::fmt::Debug for ServerFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerFirst")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl ServerFirst {
    /// The mechanism of the credential this exchange checks against.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Verifies the client-final-message: the channel binding must be the
    /// base64 of the gs2 header the client sent (`biws` for `n,,`), the nonce
    /// must be the combined nonce, and the proof must verify against the
    /// credential. Returns the server-final-message `v=ServerSignature`.
    ///
    /// On error, Kafka answers with the error message and closes; the error
    /// text never holds the proof or any key.
    pub fn client_final(self, message: &[u8]) -> Result<Vec<u8>> {
        let m = self.mechanism;
        let name = m.name();
        let parts = message::parse_client_final(name, message)?;
        if parts.channel_binding != self.gs2_header.as_bytes() {
            return Err(Error::auth(
                name,
                "channel binding does not match the gs2 header of client-first-message",
            ));
        }
        if !ct_eq(parts.nonce.as_bytes(), self.nonce.as_bytes()) {
            return Err(Error::auth(name, "nonce does not match"));
        }
        if parts.proof.len() != m.hash_len() {
            return Err(Error::auth(
                name,
                format!(
                    "client proof is {} bytes, expected {}",
                    parts.proof.len(),
                    m.hash_len()
                ),
            ));
        }
        let auth_message = [
            self.client_first_bare.as_bytes(),
            b",",
            self.server_first.as_bytes(),
            b",",
            parts.without_proof.as_bytes(),
        ];
        let client_signature = hmac(m, &self.stored_key, &auth_message);
        let client_key = xor(&parts.proof, &client_signature);
        let proof_ok = ct_eq(&hash(m, &client_key), &self.stored_key);
        if !(proof_ok && self.credential_ok) {
            return Err(Error::auth(name, "invalid credentials"));
        }
        let server_signature = hmac(m, &self.server_key, &auth_message);
        Ok(format!("v={}", encode_base64(&server_signature)).into_bytes())
    }
}
