//! SASL PLAIN (RFC 4616) messages as Kafka accepts them.
//!
//! A message is `[authzid] NUL authcid NUL passwd`. Limits, all in bytes of
//! UTF-8: the whole message at most [`MAX_MESSAGE_LEN`], the username
//! (authcid) 1..=[`MAX_USERNAME_LEN`], the password 1..=[`MAX_PASSWORD_LEN`].
//! An authzid, if present, must equal the username (Kafka's rule). Any NUL
//! beyond the two separators is refused. Names are not SASLprep-normalised
//! (Kafka does not either).

use crate::error::{Error, Result};

/// Longest username accepted.
pub const MAX_USERNAME_LEN: usize = 255;
/// Longest password accepted.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Longest whole message: an authzid as long as the username, the username,
/// the password and the two NULs.
pub const MAX_MESSAGE_LEN: usize = 2 * MAX_USERNAME_LEN + MAX_PASSWORD_LEN + 2;

const PLAIN: &str = "PLAIN";

/// Username and password from a PLAIN message.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Parses a PLAIN message. See the [module docs](self) for the rules.
pub fn parse(message: &[u8]) -> Result<PlainCredentials> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(Error::auth(
            PLAIN,
            format!(
                "message of {} bytes is over the maximum of {MAX_MESSAGE_LEN} bytes",
                message.len()
            ),
        ));
    }
    let mut fields = message.split(|&b| b == 0);
    let (Some(authzid), Some(username), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(Error::auth(
            PLAIN,
            "message must be [authzid] NUL username NUL password",
        ));
    };
    let utf8 = |what: &'static str, bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| Error::auth(PLAIN, format!("{what} is not valid UTF-8")))
    };
    let bounded = |what: &'static str, len: usize, max: usize| {
        if len == 0 {
            Err(Error::auth(PLAIN, format!("{what} is empty")))
        } else if len > max {
            Err(Error::auth(PLAIN, format!("{what} is over {max} bytes")))
        } else {
            Ok(())
        }
    };
    bounded("username", username.len(), MAX_USERNAME_LEN)?;
    bounded("password", password.len(), MAX_PASSWORD_LEN)?;
    if !authzid.is_empty() && authzid != username {
        return Err(Error::auth(
            PLAIN,
            "authorization id differs from the username",
        ));
    }
    Ok(PlainCredentials {
        username: utf8("username", username)?,
        password: utf8("password", password)?,
    })
}

/// Builds a PLAIN message (no authzid) for `username` and `password`.
pub fn encode(username: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(username.len() + password.len() + 2);
    out.push(0);
    out.extend_from_slice(username.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_with_and_without_authzid() {
        let c = parse(b"\0alice\0secret").unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "secret")
        );
        let c = parse(b"alice\0alice\0pw").unwrap();
        assert_eq!(c.username, "alice");
    }

    #[test]
    fn refuses_bad_messages() {
        for bad in [
            &b"bob\0alice\0secret"[..],
            b"\0alice\0",
            b"\0\0secret",
            b"\0alice",
            b"alice",
            b"",
            b"\0alice\0sec\0ret",
            b"\0al\xffice\0secret",
            b"\0alice\0se\xffcret",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let long_user = encode(&"u".repeat(MAX_USERNAME_LEN + 1), "pw");
        assert!(parse(&long_user).is_err());
        let long_pw = encode("u", &"p".repeat(MAX_PASSWORD_LEN + 1));
        assert!(parse(&long_pw).is_err());
        let max = [
            &b"u".repeat(255)[..],
            b"\0",
            &b"u".repeat(255),
            b"\0",
            &b"p".repeat(1024),
        ]
        .concat();
        assert!(parse(&max).is_ok());
    }

    #[test]
    fn errors_and_debug_never_show_the_password() {
        let c = parse(b"\0alice\0hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let err = parse(b"\0alice\0hunter2\0").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn round_trips(user in "[^\0]{1,60}", pw in "[^\0]{1,200}") {
            let c = parse(&encode(&user, &pw)).unwrap();
            prop_assert_eq!(c.username, user);
            prop_assert_eq!(c.password, pw);
        }
    }
}
