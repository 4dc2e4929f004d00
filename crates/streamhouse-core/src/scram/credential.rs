//! What a server stores for one user and SCRAM mechanism.

use rand::RngCore as _;

use super::crypto::{client_key, ct_eq, hash, hi, server_key};
use super::{MAX_ITERATIONS, MIN_ITERATIONS, Mechanism};
use crate::error::{Error, Result};

/// Length of the salt [`Credential::new`] draws.
pub const SALT_LEN: usize = 32;

/// Longest salt accepted, in bytes (it travels base64-encoded in the
/// server-first-message, which the other side bounds to 4 KiB).
pub const MAX_SALT_LEN: usize = 1024;

/// What a server stores for one user and mechanism (never the password):
/// `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
/// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub mechanism: Mechanism,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Derives a credential from a password with a fresh random 32-byte salt.
    pub fn new(mechanism: Mechanism, password: &str, iterations: u32) -> Result<Credential> {
        let mut salt = [0u8; SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        Self::with_salt(mechanism, password, &salt, iterations)
    }

    /// Derives a credential from a password and the given salt.
    pub fn with_salt(
        mechanism: Mechanism,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Credential> {
        check_iterations(mechanism, iterations)?;
        check_salt(mechanism, salt)?;
        let salted = hi(mechanism, password.as_bytes(), salt, iterations);
        Self::from_salted_password(mechanism, &salted, salt, iterations)
    }

    /// From a client-side salted password, `Hi(password, salt, iterations)`
    /// (Kafka's AlterUserScramCredentials sends the salt and this value).
    /// Its length must equal the mechanism's hash length; the salt must be
    /// non-empty.
    pub fn from_salted_password(
        mechanism: Mechanism,
        salted_password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Credential> {
        check_iterations(mechanism, iterations)?;
        check_salt(mechanism, salt)?;
        if salted_password.len() != mechanism.hash_len() {
            return Err(Error::invalid_credential(
                mechanism.name(),
                format!(
                    "salted password is {} bytes, expected {}",
                    salted_password.len(),
                    mechanism.hash_len()
                ),
            ));
        }
        Ok(Credential {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key: hash(mechanism, &client_key(mechanism, salted_password)),
            server_key: server_key(mechanism, salted_password),
        })
    }

    /// Checks a plain password against the credential (for PLAIN and for
    /// passwords in gRPC metadata), comparing StoredKey in constant time.
    /// A credential that fails [`Credential::validate`] matches no password.
    pub fn verify_password(&self, password: &str) -> bool {
        if self.validate().is_err() {
            return false;
        }
        let salted = hi(
            self.mechanism,
            password.as_bytes(),
            &self.salt,
            self.iterations,
        );
        let stored = hash(self.mechanism, &client_key(self.mechanism, &salted));
        ct_eq(&stored, &self.stored_key)
    }

    /// Checks that both keys have the mechanism's hash length, the iteration
    /// count is within [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`] and the salt
    /// is non-empty and at most [`MAX_SALT_LEN`] bytes.
    pub fn validate(&self) -> Result<()> {
        let m = self.mechanism;
        check_iterations(m, self.iterations)?;
        check_salt(m, &self.salt)?;
        for (what, key) in [
            ("stored key", &self.stored_key),
            ("server key", &self.server_key),
        ] {
            if key.len() != m.hash_len() {
                return Err(Error::invalid_credential(
                    m.name(),
                    format!("{what} is {} bytes, expected {}", key.len(), m.hash_len()),
                ));
            }
        }
        Ok(())
    }
}

pub(crate) fn check_iterations(mechanism: Mechanism, iterations: u32) -> Result<()> {
    if (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        Ok(())
    } else {
        Err(Error::invalid_credential(
            mechanism.name(),
            format!("iteration count {iterations} is outside {MIN_ITERATIONS}..={MAX_ITERATIONS}"),
        ))
    }
}

fn check_salt(mechanism: Mechanism, salt: &[u8]) -> Result<()> {
    if salt.is_empty() {
        return Err(Error::invalid_credential(mechanism.name(), "salt is empty"));
    }
    if salt.len() > MAX_SALT_LEN {
        return Err(Error::invalid_credential(
            mechanism.name(),
            format!(
                "salt of {} bytes is over the maximum of {MAX_SALT_LEN}",
                salt.len()
            ),
        ));
    }
    Ok(())
}
