//! The SCRAM primitives of RFC 5802 section 2.2: `H`, `HMAC`, `Hi` (PBKDF2
//! with one output block), the key derivations and a constant-time compare.

use hmac::digest::Digest;
use hmac::digest::block_api::EagerHash;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha256, Sha512};

use super::Mechanism;

/// `HMAC(key, parts[0] || parts[1] || ...)` with the mechanism's hash.
pub(crate) fn hmac(mechanism: Mechanism, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match mechanism {
        Mechanism::Sha256 => hmac_with::<Sha256>(key, parts),
        Mechanism::Sha512 => hmac_with::<Sha512>(key, parts),
    }
}

/// `H(data)` with the mechanism's hash.
pub(crate) fn hash(mechanism: Mechanism, data: &[u8]) -> Vec<u8> {
    match mechanism {
        Mechanism::Sha256 => Sha256::digest(data).to_vec(),
        Mechanism::Sha512 => Sha512::digest(data).to_vec(),
    }
}

/// `Hi(password, salt, iterations)`: PBKDF2 with HMAC and dkLen equal to the
/// hash length, so a single block (`INT(1)`). `iterations` of 0 is treated
/// as 1; callers check the range before calling.
pub(crate) fn hi(mechanism: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    match mechanism {
        Mechanism::Sha256 => hi_with::<Sha256>(password, salt, iterations),
        Mechanism::Sha512 => hi_with::<Sha512>(password, salt, iterations),
    }
}

/// `ClientKey = HMAC(SaltedPassword, "Client Key")`.
pub(crate) fn client_key(mechanism: Mechanism, salted_password: &[u8]) -> Vec<u8> {
    hmac(mechanism, salted_password, &[b"Client Key"])
}

/// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
pub(crate) fn server_key(mechanism: Mechanism, salted_password: &[u8]) -> Vec<u8> {
    hmac(mechanism, salted_password, &[b"Server Key"])
}

/// `a XOR b`; the caller has checked that the lengths are equal (the result
/// has the shorter length otherwise).
pub(crate) fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// Compares two byte strings in time that depends only on their lengths
/// (which are public: hash lengths), not on where they differ.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn new_mac<D>(key: &[u8]) -> Hmac<D>
where
    D: EagerHash,
    Hmac<D>: KeyInit,
{
    match <Hmac<D> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length (longer ones are hashed first), so
        // new_from_slice cannot fail.
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

fn hmac_with<D>(key: &[u8], parts: &[&[u8]]) -> Vec<u8>
where
    D: EagerHash,
    Hmac<D>: KeyInit + Mac,
{
    let mut mac = new_mac::<D>(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hi_with<D>(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8>
where
    D: EagerHash,
    Hmac<D>: KeyInit + Mac + Clone,
{
    // Key the HMAC once; each round starts from a clone of the keyed state.
    let keyed = new_mac::<D>(password);
    let mut round = keyed.clone();
    round.update(salt);
    round.update(&1u32.to_be_bytes());
    let mut u = round.finalize().into_bytes();
    let mut result = u.clone();
    for _ in 1..iterations {
        let mut round = keyed.clone();
        round.update(&u);
        u = round.finalize().into_bytes();
        for (r, x) in result.iter_mut().zip(u.iter()) {
            *r ^= x;
        }
    }
    result.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hi_matches_pbkdf2_hmac_sha256_vectors() {
        // RFC 7914 section 11 (PBKDF2-HMAC-SHA256, first 32 bytes).
        assert_eq!(
            hex(&hi(Mechanism::Sha256, b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        // Widely published PBKDF2-HMAC-SHA256 vector ("password", "salt", 4096).
        assert_eq!(
            hex(&hi(Mechanism::Sha256, b"password", b"salt", 4096)),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn hi_sha512_has_hash_length() {
        assert_eq!(hi(Mechanism::Sha512, b"p", b"s", 2).len(), 64);
        assert_eq!(
            hex(&hi(Mechanism::Sha512, b"password", b"salt", 1))[..32],
            *"867f70cf1ade02cff3752599a3a53dc4"
        );
    }

    #[test]
    fn ct_eq_compares_content_and_length() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }
}
