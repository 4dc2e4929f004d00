//! The client side of one SCRAM exchange (for tests and for clients of the
//! agent).

use rand::RngCore as _;

use super::Mechanism;
use super::credential::check_iterations;
use super::crypto::{client_key, ct_eq, hash, hi, hmac, server_key, xor};
use super::message::{self, ServerFinal, encode_base64, escape_username, is_printable_nonce};
use crate::error::{Error, Result};

/// Random bytes in a client nonce (base64-encoded: 32 printable characters).
pub const CLIENT_NONCE_BYTES: usize = 24;

/// The gs2 header this client sends: no channel binding, no authzid.
const GS2_HEADER: &str = "n,,";

/// Longest `e=` value from the server repeated in an error.
const MAX_SERVER_ERROR_LEN: usize = 128;

/// A SCRAM client: [`Client::client_first`], then [`Client::client_final`]
/// with the server's first message, then [`Client::verify_server_final`].
#[derive(Clone)]
pub struct Client {
    mechanism: Mechanism,
    password: String,
    client_first_bare: String,
    nonce: String,
    /// `ServerSignature`, known once client_final has run.
    expected_server_signature: Option<Vec<u8>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with a fresh random nonce.
    pub fn new(mechanism: Mechanism, username: &str, password: &str) -> Client {
        let mut random = [0u8; CLIENT_NONCE_BYTES];
        rand::rng().fill_bytes(&mut random);
        Self::build(mechanism, username, password, encode_base64(&random))
    }

    /// A client with a chosen nonce, so test vectors reproduce. Not for
    /// production: the nonce must be fresh and random. Fails if the nonce is
    /// empty or not printable without `,`.
    #[doc(hidden)]
    pub fn with_nonce(
        mechanism: Mechanism,
        username: &str,
        password: &str,
        nonce: &str,
    ) -> Result<Client> {
        if !is_printable_nonce(nonce) {
            return Err(Error::auth(
                mechanism.name(),
                "client nonce is empty or not printable ASCII",
            ));
        }
        Ok(Self::build(mechanism, username, password, nonce.to_owned()))
    }

    fn build(mechanism: Mechanism, username: &str, password: &str, nonce: String) -> Client {
        Client {
            mechanism,
            password: password.to_owned(),
            client_first_bare: format!("n={},r={nonce}", escape_username(username)),
            nonce,
            expected_server_signature: None,
        }
    }

    /// The mechanism this client speaks.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The client-first-message: `n,,n=<escaped username>,r=<nonce>`.
    pub fn client_first(&self) -> Vec<u8> {
        format!("{GS2_HEADER}{}", self.client_first_bare).into_bytes()
    }

    /// Answers the server-first-message with the client-final-message
    /// (`c=biws,r=<nonce>,p=<proof>`). Refuses iteration counts outside
    /// [`MIN_ITERATIONS`](super::MIN_ITERATIONS)`..=`[`MAX_ITERATIONS`](super::MAX_ITERATIONS)
    /// and nonces that do not extend this client's nonce.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>> {
        let m = self.mechanism;
        let name = m.name();
        let parts = message::parse_server_first(name, server_first)?;
        if !parts.nonce.starts_with(&self.nonce) || parts.nonce.len() == self.nonce.len() {
            return Err(Error::auth(
                name,
                "server nonce does not extend the client nonce",
            ));
        }
        check_iterations(m, parts.iterations).map_err(|_| {
            Error::auth(
                name,
                format!(
                    "server asks for {} iterations, outside the accepted range",
                    parts.iterations
                ),
            )
        })?;
        let salted = hi(m, self.password.as_bytes(), &parts.salt, parts.iterations);
        let ck = client_key(m, &salted);
        let stored_key = hash(m, &ck);
        let without_proof = format!(
            "c={},r={}",
            encode_base64(GS2_HEADER.as_bytes()),
            parts.nonce
        );
        let auth_message = [
            self.client_first_bare.as_bytes(),
            b",",
            server_first,
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = hmac(m, &stored_key, &auth_message);
        let proof = xor(&ck, &client_signature);
        self.expected_server_signature = Some(hmac(m, &server_key(m, &salted), &auth_message));
        Ok(format!("{without_proof},p={}", encode_base64(&proof)).into_bytes())
    }

    /// Checks the server-final-message: `v=` must carry the expected server
    /// signature; `e=` becomes an error naming the server's reason.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<()> {
        let name = self.mechanism.name();
        let expected = self
            .expected_server_signature
            .as_deref()
            .ok_or_else(|| Error::auth(name, "server-final-message before client-final-message"))?;
        match message::parse_server_final(name, server_final)? {
            ServerFinal::Verifier(signature) if ct_eq(&signature, expected) => Ok(()),
            ServerFinal::Verifier(_) => Err(Error::auth(name, "server signature does not verify")),
            ServerFinal::Error(reason) => {
                let printable = reason.len() <= MAX_SERVER_ERROR_LEN
                    && reason.bytes().all(|b| (0x20..=0x7e).contains(&b));
                Err(Error::auth(
                    name,
                    if printable {
                        format!("server refused: {reason}")
                    } else {
                        "server refused (unprintable reason)".to_owned()
                    },
                ))
            }
        }
    }
}
