//! Exchanges end to end: RFC 7677's vector, round trips and tampering.

use proptest::prelude::*;

use super::*;

const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";

fn rfc7677_credential() -> Credential {
    let salt = message::decode_base64("test", "salt", SALT_B64).unwrap();
    Credential::with_salt(Mechanism::Sha256, "pencil", &salt, 4096).unwrap()
}

#[test]
fn rfc7677_sha256_vector() {
    let mut client = Client::with_nonce(Mechanism::Sha256, "user", "pencil", NONCE).unwrap();
    let client_first = client.client_first();
    assert_eq!(client_first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");

    let first = parse_client_first(&client_first).unwrap();
    assert_eq!(first.username(), "user");
    let (server, server_first) = first
        .server_first_with_nonce(&rfc7677_credential(), SERVER_NONCE)
        .unwrap();
    assert_eq!(
        server_first,
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );

    let client_final = client.client_final(&server_first).unwrap();
    assert_eq!(
        String::from_utf8(client_final.clone()).unwrap(),
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
         p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    );
    let server_final = server.client_final(&client_final).unwrap();
    assert_eq!(
        server_final,
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
    client.verify_server_final(&server_final).unwrap();
}

fn exchange(
    mechanism: Mechanism,
    username: &str,
    password: &str,
    credential: &Credential,
) -> Result<(), crate::Error> {
    let mut client = Client::new(mechanism, username, password);
    let first = parse_client_first(&client.client_first())?;
    assert_eq!(first.username(), username);
    let (server, server_first) = first.server_first(credential);
    let client_final = client.client_final(&server_first)?;
    let server_final = server.client_final(&client_final)?;
    client.verify_server_final(&server_final)
}

#[test]
fn round_trips_for_both_mechanisms() {
    for m in Mechanism::ALL {
        let credential = Credential::new(m, "s3cret", DEFAULT_ITERATIONS).unwrap();
        credential.validate().unwrap();
        assert_eq!(credential.stored_key.len(), m.hash_len());
        exchange(m, "alice,=x", "s3cret", &credential).unwrap();
        let err = exchange(m, "alice,=x", "wrong", &credential).unwrap_err();
        assert!(err.to_string().contains("invalid credentials"), "{err}");
        assert!(!err.to_string().contains("wrong"));
    }
}

#[test]
fn mechanism_names_and_codes() {
    for m in Mechanism::ALL {
        assert_eq!(Mechanism::from_name(m.name()), Some(m));
        assert_eq!(Mechanism::from_kafka_type(m.kafka_type()), Some(m));
    }
    assert_eq!(Mechanism::Sha256.kafka_type(), 1);
    assert_eq!(Mechanism::Sha512.kafka_type(), 2);
    assert_eq!(Mechanism::from_name("scram-sha-256"), None);
    assert_eq!(Mechanism::from_kafka_type(0), None);
}

#[test]
fn credentials_check_their_inputs() {
    let m = Mechanism::Sha512;
    assert!(Credential::new(m, "p", MIN_ITERATIONS - 1).is_err());
    assert!(Credential::new(m, "p", MAX_ITERATIONS + 1).is_err());
    assert!(Credential::with_salt(m, "p", b"", 4096).is_err());
    assert!(Credential::from_salted_password(m, &[0; 32], b"salt", 4096).is_err());
    let salted = crypto::hi(m, b"p", b"salt", 4096);
    let from_salted = Credential::from_salted_password(m, &salted, b"salt", 4096).unwrap();
    assert_eq!(
        from_salted,
        Credential::with_salt(m, "p", b"salt", 4096).unwrap()
    );
    assert!(from_salted.verify_password("p"));
    assert!(!from_salted.verify_password("q"));

    let mut broken = from_salted.clone();
    broken.stored_key.pop();
    assert!(broken.validate().is_err());
    assert!(!broken.verify_password("p"));
    let mut broken = from_salted.clone();
    broken.iterations = u32::MAX;
    assert!(!broken.verify_password("p"));

    let debug = format!("{from_salted:?}");
    assert!(
        debug.contains("Sha512") && debug.contains("4096"),
        "{debug}"
    );
    assert!(!debug.contains("key"), "{debug}");
}

/// Runs an exchange up to client-final and hands the client's final message
/// to `tamper` before the server checks it.
fn tampered(tamper: impl FnOnce(String) -> String) -> Result<Vec<u8>, crate::Error> {
    let credential = rfc7677_credential();
    let mut client = Client::new(Mechanism::Sha256, "user", "pencil");
    let (server, server_first) = parse_client_first(&client.client_first())
        .unwrap()
        .server_first(&credential);
    let client_final = String::from_utf8(client.client_final(&server_first).unwrap()).unwrap();
    server.client_final(tamper(client_final).as_bytes())
}

#[test]
fn tampering_fails() {
    assert!(tampered(|s| s).is_ok());
    // Channel binding of "y,," instead of the "n,," the client sent.
    let err = tampered(|s| s.replacen("c=biws", "c=eSws", 1)).unwrap_err();
    assert!(err.to_string().contains("channel binding"), "{err}");
    // Nonce changed in its last character.
    let err = tampered(|s| {
        let (head, proof) = s.rsplit_once(",p=").unwrap();
        format!("{}X,p={proof}", &head[..head.len() - 1])
    })
    .unwrap_err();
    assert!(err.to_string().contains("nonce"), "{err}");
    // A flipped proof.
    let err = tampered(|s| {
        let (head, proof) = s.rsplit_once(",p=").unwrap();
        let mut bytes = message::decode_base64("t", "p", proof).unwrap();
        bytes[0] ^= 1;
        format!("{head},p={}", message::encode_base64(&bytes))
    })
    .unwrap_err();
    assert!(err.to_string().contains("invalid credentials"), "{err}");
    // A proof of the wrong length.
    assert!(
        tampered(|s| format!("{}AA==", s.rsplit_once(",p=").unwrap().0.to_owned() + ",p="))
            .is_err()
    );
}

#[test]
fn gs2_header_with_authzid_and_y_flag_bind() {
    let credential = rfc7677_credential();
    let mut client = Client::with_nonce(Mechanism::Sha256, "user", "pencil", NONCE).unwrap();
    // The server must bind to the header the client sent, whatever it is.
    let first = parse_client_first(b"y,a=user,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
    let (server, server_first) = first.server_first(&credential);
    let client_final = client.client_final(&server_first).unwrap();
    // This client binds to "n,,", so a server that saw "y,a=user," refuses.
    assert!(server.client_final(&client_final).is_err());
}

#[test]
fn client_refuses_bad_server_first() {
    let mut client = Client::with_nonce(Mechanism::Sha256, "user", "pencil", NONCE).unwrap();
    for bad in [
        format!("r={NONCE}x,s={SALT_B64},i=4095"),
        format!("r={NONCE}x,s={SALT_B64},i=16385"),
        format!("r={NONCE},s={SALT_B64},i=4096"),
        format!("r=other{NONCE},s={SALT_B64},i=4096"),
    ] {
        assert!(client.client_final(bad.as_bytes()).is_err(), "{bad}");
    }
    assert!(client.verify_server_final(b"v=AAAA").is_err());
    client
        .client_final(format!("r={NONCE}x,s={SALT_B64},i=4096").as_bytes())
        .unwrap();
    let err = client.verify_server_final(b"e=unknown-user").unwrap_err();
    assert!(err.to_string().contains("unknown-user"), "{err}");
    assert!(client.verify_server_final(b"v=AAAA").is_err());
    assert!(client.verify_server_final(b"x=AAAA").is_err());
}

#[test]
fn errors_never_echo_secrets() {
    let credential = rfc7677_credential();
    let mut client = Client::new(Mechanism::Sha256, "user", "pencil");
    let (server, server_first) = parse_client_first(&client.client_first())
        .unwrap()
        .server_first(&credential);
    let good = String::from_utf8(client.client_final(&server_first).unwrap()).unwrap();
    let proof = good.rsplit_once(",p=").unwrap().1.to_owned();
    let bad = good.replacen("c=biws", "c=eSws", 1);
    let err = server.client_final(bad.as_bytes()).unwrap_err().to_string();
    assert!(!err.contains(&proof) && !err.contains("pencil"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn server_final_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let first = parse_client_first(b"n,,n=user,r=abc").unwrap();
        let (server, _) = first.server_first(&rfc7677_credential());
        let _ = server.client_final(&bytes);
        let _ = parse_client_first(&bytes);
        let mut client = Client::with_nonce(Mechanism::Sha512, "u", "p", "abc").unwrap();
        let _ = client.client_final(&bytes);
        let _ = client.verify_server_final(&bytes);
    }

    #[test]
    fn usernames_round_trip_through_client_first(name in any::<String>().prop_filter("saslname", |s| !s.is_empty() && !s.contains('\0'))) {
        let client = Client::new(Mechanism::Sha256, &name, "p");
        let first = parse_client_first(&client.client_first()).unwrap();
        prop_assert_eq!(first.username(), name.as_str());
    }
}
