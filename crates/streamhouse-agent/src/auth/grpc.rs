//! Authentication of gRPC requests.
//!
//! A client sends its user name and password with every request, in the
//! standard HTTP header `authorization: Basic base64(user:password)`. Over
//! TLS the password is encrypted on the wire; the agent verifies it against
//! the user's SCRAM credential once and then remembers the pair (as a
//! digest) until the credential changes, so later requests cost a hash. A
//! connection with a verified client certificate (mutual TLS) needs no
//! header: its principal is `User:<certificate CN>`. Without TLS, passwords
//! are refused unless the agent allows plaintext passwords.

use base64::Engine;
use streamhouse_proto::ErrorCode;
use tonic::{Request, Status};

use streamhouse_metadata::{AclOperation, ResourceType};

use super::{Auth, AuthFailure, Session};
use crate::tls::ConnInfo;

const LISTENER: &str = "grpc";
/// Longest `authorization` header read.
const MAX_HEADER: usize = 4096;

fn unauthenticated(message: impl Into<String>) -> Status {
    streamhouse_proto::with_error_code(
        Status::unauthenticated(message),
        ErrorCode::AuthenticationFailed,
    )
}

/// The refusal of an operation the principal may not perform.
pub(crate) fn denied(session: &Session, what: impl std::fmt::Display) -> Status {
    streamhouse_proto::with_error_code(
        Status::permission_denied(format!("{} may not {what}", session.principal)),
        ErrorCode::AuthorizationFailed,
    )
}

/// The session the authenticating interceptor attached to `request`.
pub(crate) fn session_of<T>(request: &Request<T>) -> Session {
    request
        .extensions()
        .get::<Session>()
        .cloned()
        .unwrap_or_else(|| Session::anonymous(None, LISTENER))
}

/// An error status unless `session` may perform `operation` on the
/// resource.
pub(crate) fn require(
    auth: &Auth,
    session: &Session,
    operation: AclOperation,
    resource_type: ResourceType,
    name: &str,
) -> Result<(), Status> {
    if auth.allows(session, operation, resource_type, name) {
        Ok(())
    } else {
        Err(denied(
            session,
            format_args!("{} {} {name:?}", operation.name(), resource_type.name()),
        ))
    }
}

/// Who sent `request`; an error status when authentication is required and
/// the request does not establish it.
pub(crate) fn session<T>(auth: &Auth, request: &Request<T>) -> Result<Session, Status> {
    let info = request
        .extensions()
        .get::<ConnInfo>()
        .cloned()
        .unwrap_or_default();
    if !auth.required() {
        return Ok(Session::anonymous(info.remote, LISTENER));
    }
    if let Some(header) = request.metadata().get("authorization") {
        let (user, password) = basic(header.as_bytes())?;
        if !info.tls && !auth.plaintext_passwords_allowed() {
            return Err(unauthenticated(AuthFailure::PlaintextRefused.to_string()));
        }
        let host = Session::anonymous(info.remote, LISTENER).host;
        return match auth.check_password(&user, &password, &host, LISTENER) {
            Ok(()) => Ok(Session::new(&user, info.remote, LISTENER)),
            Err(failure) => Err(unauthenticated(failure.to_string())),
        };
    }
    match info.cert_name {
        Some(name) => Ok(Session::new(&name, info.remote, LISTENER)),
        None => Err(unauthenticated(
            "this agent requires authentication: send a user name and password \
             (`authorization: Basic ...`) or connect with a client certificate",
        )),
    }
}

/// The user name and password of a `Basic` authorization header.
fn basic(header: &[u8]) -> Result<(String, String), Status> {
    let malformed = || {
        unauthenticated("malformed authorization header: expected `Basic base64(user:password)`")
    };
    if header.len() > MAX_HEADER {
        return Err(malformed());
    }
    let encoded = header.strip_prefix(b"Basic ").ok_or_else(malformed)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (user, password) = decoded.split_once(':').ok_or_else(malformed)?;
    if user.is_empty() {
        return Err(malformed());
    }
    Ok((user.to_string(), password.to_string()))
}

/// The header value a client sends for `user` and `password`.
#[cfg(test)]
fn header(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_headers_round_trip_and_bad_ones_are_refused() {
        let h = header("alice", "p:ss word");
        assert_eq!(
            basic(h.as_bytes()).unwrap(),
            ("alice".to_string(), "p:ss word".to_string())
        );
        for bad in [
            &b"Bearer x"[..],
            b"Basic !!!",
            b"Basic Og==",
            b"Basic YWxpY2U=",
        ] {
            let e = basic(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert!(!e.message().contains("alice"));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_header_is_read_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = basic(&bytes);
        }
    }
}
