//! The subject common name of an X.509 certificate, read from its DER
//! encoding: the name a mutual-TLS client is known by (`User:<CN>`).
//!
//! Only the path to the subject is walked; the certificate has already
//! been verified by rustls, but this code makes no such assumption and
//! returns `None` for anything it cannot read.

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const EXPLICIT_0: u8 = 0xa0;
/// 2.5.4.3, commonName.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// UTF8String, PrintableString, T61String, IA5String.
const STRING_TAGS: [u8; 4] = [0x0c, 0x13, 0x14, 0x16];

/// One DER element: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = element(input)?;
    (t == tag).then_some((contents, rest))
}

/// The first common name of the certificate's subject, if it is a string.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    if let Some((EXPLICIT_0, _, after)) = element(rest) {
        rest = after;
    }
    // serialNumber, signature, issuer, validity; then the subject.
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (mut names, _) = expect(rest, SEQUENCE)?;
    while !names.is_empty() {
        let (mut rdn, after) = expect(names, SET)?;
        names = after;
        while !rdn.is_empty() {
            let (attribute, after) = expect(rdn, SEQUENCE)?;
            rdn = after;
            let (oid, value) = expect(attribute, OID)?;
            if oid != COMMON_NAME {
                continue;
            }
            let (tag, text, _) = element(value)?;
            if !STRING_TAGS.contains(&tag) {
                return None;
            }
            return std::str::from_utf8(text)
                .ok()
                .filter(|name| !name.is_empty() && !name.chars().any(char::is_control))
                .map(str::to_string);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER element with `tag` around `contents`.
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(contents.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(contents);
        out
    }

    fn cert_with_subject(subject: &[u8]) -> Vec<u8> {
        let mut tbs = tlv(EXPLICIT_0, &tlv(0x02, &[2]));
        tbs.extend(tlv(0x02, &[1, 2, 3]));
        tbs.extend(tlv(SEQUENCE, &tlv(OID, &[0x2a])));
        tbs.extend(tlv(SEQUENCE, &[]));
        tbs.extend(tlv(SEQUENCE, &[0; 200]));
        tbs.extend_from_slice(subject);
        let mut cert = tlv(SEQUENCE, &tbs);
        cert.extend(tlv(SEQUENCE, &[]));
        tlv(SEQUENCE, &cert)
    }

    fn attribute(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let mut a = tlv(OID, oid);
        a.extend(tlv(tag, value));
        tlv(SET, &tlv(SEQUENCE, &a))
    }

    #[test]
    fn finds_the_common_name_after_other_attributes() {
        let mut names = attribute(&[0x55, 0x04, 0x0a], 0x0c, b"Acme");
        names.extend(attribute(COMMON_NAME, 0x0c, b"alice"));
        let cert = cert_with_subject(&tlv(SEQUENCE, &names));
        assert_eq!(common_name(&cert).as_deref(), Some("alice"));
    }

    #[test]
    fn no_common_name_or_a_bad_one_is_none() {
        let names = attribute(&[0x55, 0x04, 0x0a], 0x0c, b"Acme");
        assert_eq!(
            common_name(&cert_with_subject(&tlv(SEQUENCE, &names))),
            None
        );
        let control = attribute(COMMON_NAME, 0x0c, b"al\nice");
        assert_eq!(
            common_name(&cert_with_subject(&tlv(SEQUENCE, &control))),
            None
        );
        let binary = attribute(COMMON_NAME, 0x04, b"alice");
        assert_eq!(
            common_name(&cert_with_subject(&tlv(SEQUENCE, &binary))),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_read_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = common_name(&bytes);
            let _ = common_name(&cert_with_subject(&bytes));
        }
    }
}
