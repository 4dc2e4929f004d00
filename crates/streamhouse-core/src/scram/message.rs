//! The SCRAM message grammar of RFC 5802 section 7, as Kafka accepts it:
//! gs2 headers without channel binding, saslname escaping, attributes and
//! the `tokenauth` extension.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::{Error, Result};

/// Longest SCRAM message accepted from the other side, in bytes.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Extensions a client-first-message may carry (Kafka's set).
const SUPPORTED_EXTENSIONS: [&str; 1] = ["tokenauth"];

/// Checks the length and UTF-8 of a received message.
pub(crate) fn message_str<'a>(
    mechanism: &'static str,
    what: &'static str,
    message: &'a [u8],
) -> Result<&'a str> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(Error::auth(
            mechanism,
            format!(
                "{what} of {} bytes is over the maximum of {MAX_MESSAGE_LEN} bytes",
                message.len()
            ),
        ));
    }
    std::str::from_utf8(message)
        .map_err(|_| Error::auth(mechanism, format!("{what} is not valid UTF-8")))
}

/// Escapes a username as a saslname: `,` becomes `=2C` and `=` becomes `=3D`.
pub fn escape_username(username: &str) -> String {
    let mut out = String::with_capacity(username.len());
    for c in username.chars() {
        match c {
            ',' => out.push_str("=2C"),
            '=' => out.push_str("=3D"),
            c => out.push(c),
        }
    }
    out
}

/// Decodes a saslname: `=2C` and `=3D` only; any other `=`, a `,`, a NUL or
/// an empty name is refused.
pub fn unescape_username(saslname: &str) -> Option<String> {
    if saslname.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(saslname.len());
    let mut rest = saslname;
    while let Some(c) = rest.chars().next() {
        match c {
            '=' => {
                if rest.starts_with("=2C") {
                    out.push(',');
                } else if rest.starts_with("=3D") {
                    out.push('=');
                } else {
                    return None;
                }
                rest = &rest[3..];
            }
            ',' | '\0' => return None,
            c => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    Some(out)
}

/// `printable = %x21-2B / %x2D-7E` (printable ASCII except `,`), non-empty.
pub(crate) fn is_printable_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Splits `k=value` with a single-letter attribute name `k`.
fn attribute(part: &str) -> Option<(u8, &str)> {
    let bytes = part.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b'=' {
        Some((bytes[0], &part[2..]))
    } else {
        None
    }
}

/// Takes attribute `name` from the front of `part`, or explains what is missing.
fn expect_attribute<'a>(
    mechanism: &'static str,
    part: Option<&'a str>,
    name: u8,
    what: &str,
) -> Result<&'a str> {
    match part.and_then(attribute) {
        Some((n, value)) if n == name => Ok(value),
        _ => Err(Error::auth(
            mechanism,
            format!("expected {what} ('{}=' attribute)", name as char),
        )),
    }
}

/// Decodes standard base64, naming the field (never the value) on failure.
pub(crate) fn decode_base64(mechanism: &'static str, what: &str, value: &str) -> Result<Vec<u8>> {
    STANDARD
        .decode(value)
        .map_err(|_| Error::auth(mechanism, format!("{what} is not valid base64")))
}

/// Standard base64 with padding.
pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A parsed client-first-message.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ClientFirstParts {
    /// The gs2 header as sent, e.g. `n,,` or `n,a=user,`.
    pub gs2_header: String,
    /// The client-first-message-bare, which goes into the AuthMessage.
    pub bare: String,
    pub username: String,
    pub nonce: String,
    pub token_auth: bool,
}

/// Parses `gs2-header client-first-message-bare` where the gs2 header is
/// `n,` or `y,` (never `p=`), an optional `a=authzid` that must equal the
/// username, and the bare part is `n=saslname,r=nonce[,ext=value]*` with
/// only the extensions Kafka knows (`tokenauth`).
pub(crate) fn parse_client_first(
    mechanism: &'static str,
    message: &[u8],
) -> Result<ClientFirstParts> {
    let text = message_str(mechanism, "client-first-message", message)?;
    let (flag, rest) = text
        .split_once(',')
        .ok_or_else(|| Error::auth(mechanism, "client-first-message has no gs2 header"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => {
            return Err(Error::auth(
                mechanism,
                "channel binding is not supported (gs2 header asks for p=)",
            ));
        }
        _ => return Err(Error::auth(mechanism, "gs2 header flag must be 'n' or 'y'")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or_else(|| Error::auth(mechanism, "gs2 header is incomplete"))?;
    let authzid = match authzid {
        "" => None,
        a => match attribute(a) {
            Some((b'a', name)) => Some(
                unescape_username(name)
                    .ok_or_else(|| Error::auth(mechanism, "authzid is not a valid saslname"))?,
            ),
            _ => return Err(Error::auth(mechanism, "gs2 header has a malformed authzid")),
        },
    };
    let gs2_header = text[..text.len() - bare.len()].to_owned();

    let mut parts = bare.split(',');
    let first = parts.next();
    if first.and_then(attribute).is_some_and(|(n, _)| n == b'm') {
        return Err(Error::auth(
            mechanism,
            "mandatory extensions ('m=') are not supported",
        ));
    }
    let saslname = expect_attribute(mechanism, first, b'n', "username")?;
    let username = unescape_username(saslname)
        .ok_or_else(|| Error::auth(mechanism, "username is not a valid saslname"))?;
    let nonce = expect_attribute(mechanism, parts.next(), b'r', "client nonce")?;
    if !is_printable_nonce(nonce) {
        return Err(Error::auth(
            mechanism,
            "client nonce is empty or not printable ASCII",
        ));
    }
    let mut token_auth = false;
    let mut seen: Vec<&str> = Vec::new();
    for ext in parts {
        let (key, value) = ext
            .split_once('=')
            .filter(|(k, v)| {
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphabetic()) && !v.is_empty()
            })
            .ok_or_else(|| Error::auth(mechanism, "malformed extension in client-first-message"))?;
        if !SUPPORTED_EXTENSIONS.contains(&key) {
            return Err(Error::auth(
                mechanism,
                "unsupported extension in client-first-message",
            ));
        }
        if seen.contains(&key) {
            return Err(Error::auth(
                mechanism,
                "repeated extension in client-first-message",
            ));
        }
        seen.push(key);
        if key == "tokenauth" {
            token_auth = value.eq_ignore_ascii_case("true");
        }
    }
    if let Some(authzid) = authzid
        && authzid != username
    {
        return Err(Error::auth(mechanism, "authzid differs from the username"));
    }
    Ok(ClientFirstParts {
        gs2_header,
        bare: bare.to_owned(),
        username,
        nonce: nonce.to_owned(),
        token_auth,
    })
}

/// A parsed client-final-message.
pub(crate) struct ClientFinalParts<'a> {
    /// The decoded `c=` value.
    pub channel_binding: Vec<u8>,
    pub nonce: &'a str,
    /// Everything before `,p=`, which goes into the AuthMessage.
    pub without_proof: &'a str,
    pub proof: Vec<u8>,
}

/// Parses `c=cbind,r=nonce[,ext=value]*,p=proof`. Extensions are accepted
/// and ignored, as Kafka does.
pub(crate) fn parse_client_final<'a>(
    mechanism: &'static str,
    message: &'a [u8],
) -> Result<ClientFinalParts<'a>> {
    let text = message_str(mechanism, "client-final-message", message)?;
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or_else(|| Error::auth(mechanism, "client-final-message has no proof"))?;
    let mut parts = without_proof.split(',');
    let cbind = expect_attribute(mechanism, parts.next(), b'c', "channel binding")?;
    let nonce = expect_attribute(mechanism, parts.next(), b'r', "nonce")?;
    for ext in parts {
        if attribute(ext).is_none() {
            return Err(Error::auth(
                mechanism,
                "malformed extension in client-final-message",
            ));
        }
    }
    Ok(ClientFinalParts {
        channel_binding: decode_base64(mechanism, "channel binding", cbind)?,
        nonce,
        without_proof,
        proof: decode_base64(mechanism, "client proof", proof)?,
    })
}

/// A parsed server-first-message.
pub(crate) struct ServerFirstParts {
    pub nonce: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
}

/// Parses `r=nonce,s=salt,i=iterations[,ext=value]*`; `m=` is refused.
pub(crate) fn parse_server_first(
    mechanism: &'static str,
    message: &[u8],
) -> Result<ServerFirstParts> {
    let text = message_str(mechanism, "server-first-message", message)?;
    let mut parts = text.split(',');
    let first = parts.next();
    if first.and_then(attribute).is_some_and(|(n, _)| n == b'm') {
        return Err(Error::auth(
            mechanism,
            "mandatory extensions ('m=') are not supported",
        ));
    }
    let nonce = expect_attribute(mechanism, first, b'r', "nonce")?;
    if !is_printable_nonce(nonce) {
        return Err(Error::auth(
            mechanism,
            "server nonce is empty or not printable ASCII",
        ));
    }
    let salt = decode_base64(
        mechanism,
        "salt",
        expect_attribute(mechanism, parts.next(), b's', "salt")?,
    )?;
    if salt.is_empty() {
        return Err(Error::auth(mechanism, "salt is empty"));
    }
    let iterations = expect_attribute(mechanism, parts.next(), b'i', "iteration count")?;
    let iterations = if iterations.bytes().all(|b| b.is_ascii_digit()) {
        iterations.parse::<u32>().ok()
    } else {
        None
    }
    .ok_or_else(|| Error::auth(mechanism, "iteration count is not a positive integer"))?;
    for ext in parts {
        if attribute(ext).is_none() {
            return Err(Error::auth(
                mechanism,
                "malformed extension in server-first-message",
            ));
        }
    }
    Ok(ServerFirstParts {
        nonce: nonce.to_owned(),
        salt,
        iterations,
    })
}

/// A parsed server-final-message.
pub(crate) enum ServerFinal {
    /// `v=`: the decoded server signature.
    Verifier(Vec<u8>),
    /// `e=`: the server's error value.
    Error(String),
}

pub(crate) fn parse_server_final(mechanism: &'static str, message: &[u8]) -> Result<ServerFinal> {
    let text = message_str(mechanism, "server-final-message", message)?;
    let first = text.split(',').next().unwrap_or("");
    match attribute(first) {
        Some((b'v', value)) => Ok(ServerFinal::Verifier(decode_base64(
            mechanism,
            "server signature",
            value,
        )?)),
        Some((b'e', value)) => Ok(ServerFinal::Error(value.to_owned())),
        _ => Err(Error::auth(
            mechanism,
            "server-final-message has neither 'v=' nor 'e='",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const M: &str = "SCRAM-SHA-256";

    #[test]
    fn escapes_and_unescapes() {
        assert_eq!(escape_username("a,b=c"), "a=2Cb=3Dc");
        assert_eq!(unescape_username("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(unescape_username("a=2c"), None);
        assert_eq!(unescape_username("a=41"), None);
        assert_eq!(unescape_username("a="), None);
        assert_eq!(unescape_username(""), None);
        assert_eq!(unescape_username("a,b"), None);
    }

    #[test]
    fn parses_client_first_variants() {
        let p = parse_client_first(M, b"n,,n=user,r=abc").unwrap();
        assert_eq!(
            (p.gs2_header.as_str(), p.bare.as_str()),
            ("n,,", "n=user,r=abc")
        );
        assert_eq!(
            (p.username.as_str(), p.nonce.as_str(), p.token_auth),
            ("user", "abc", false)
        );
        let p = parse_client_first(M, b"y,a=us=2Cer,n=us=2Cer,r=abc,tokenauth=true").unwrap();
        assert_eq!(p.gs2_header, "y,a=us=2Cer,");
        assert_eq!(p.username, "us,er");
        assert!(p.token_auth);
    }

    #[test]
    fn refuses_bad_client_first() {
        for bad in [
            &b"p=tls-unique,,n=user,r=abc"[..],
            b"x,,n=user,r=abc",
            b"n,a=other,n=user,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=user,r=abc,foo=bar",
            b"n,,n=user,r=abc,tokenauth=true,tokenauth=true",
            b"n,,n=,r=abc",
            b"n,,n=us=41er,r=abc",
            b"n,,n=user,r=",
            b"n,,n=user,r=a\x7fb",
            b"n,,r=abc,n=user",
            b"n,,n=user",
            b"n,,",
            b"n",
            b"",
            b"n,,n=\xff,r=abc",
        ] {
            assert!(
                parse_client_first(M, bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("n,,n=user,r={}", "a".repeat(MAX_MESSAGE_LEN));
        assert!(parse_client_first(M, long.as_bytes()).is_err());
    }

    #[test]
    fn parses_server_first() {
        let p = parse_server_first(M, b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096").unwrap();
        assert_eq!((p.nonce.as_str(), p.iterations), ("abcdef", 4096));
        for bad in [
            &b"r=abc,s=QSXCR+Q6sek8bf92,i=-1"[..],
            b"r=abc,s=QSXCR+Q6sek8bf92,i=+5",
            b"r=abc,s=QSXCR+Q6sek8bf92,i=99999999999",
            b"r=abc,s=,i=4096",
            b"r=abc,s=!!,i=4096",
            b"m=x,r=abc,s=QSXCR+Q6sek8bf92,i=4096",
            b"s=QSXCR+Q6sek8bf92,r=abc,i=4096",
        ] {
            assert!(parse_server_first(M, bad).is_err());
        }
    }

    proptest! {
        #[test]
        fn escaping_round_trips(name in any::<String>().prop_filter("saslname", |s| !s.is_empty() && !s.contains('\0'))) {
            let escaped = escape_username(&name);
            prop_assert!(!escaped.contains(','));
            prop_assert_eq!(unescape_username(&escaped), Some(name));
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_client_first(M, &bytes);
            let _ = parse_client_final(M, &bytes);
            let _ = parse_server_first(M, &bytes);
            let _ = parse_server_final(M, &bytes);
        }

        #[test]
        fn parsers_never_panic_on_near_messages(s in "[nyp]?,(a=[a-z=,]{0,5})?,[nrmcspiev]=[a-zA-Z0-9=+/,]{0,20}(,[a-z]{1,9}=[a-z=]{0,5}){0,3}") {
            let _ = parse_client_first(M, s.as_bytes());
            let _ = parse_client_final(M, s.as_bytes());
            let _ = parse_server_first(M, s.as_bytes());
        }
    }
}
