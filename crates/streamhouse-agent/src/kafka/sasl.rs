//! SASL authentication of a Kafka connection (SaslHandshake v1,
//! SaslAuthenticate v0–2): SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN (PLAIN
//! only over TLS unless the agent allows plaintext passwords).
//!
//! When the agent requires authentication, a connection must authenticate
//! before any request other than ApiVersions, unless it presented a client
//! certificate (mutual TLS), which authenticates it as `User:<CN>`. A
//! request of another API before that closes the connection, as Kafka
//! does. A failed authentication (or a handshake for a mechanism not
//! offered) is answered after a delay and closes the
//! connection; failures also spend the user's budget of attempts
//! ([`Limiter`](crate::auth::Limiter)), so guessing is slow whatever the
//! number of connections. Re-authentication (KIP-368) is not offered: the
//! session lifetime sent is 0.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_core::scram::{self, Mechanism, ServerFirst};

use crate::auth::{Auth, AuthFailure, Session};
use crate::tls::ConnInfo;

pub(super) const HANDSHAKE_VERSIONS: RangeInclusive<i16> = 1..=1;
pub(super) const AUTHENTICATE_VERSIONS: RangeInclusive<i16> = 0..=2;

/// How long a failed authentication waits before it is answered.
const FAILURE_DELAY: Duration = Duration::from_millis(500);

const LISTENER: &str = "kafka";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chosen {
    Plain,
    Scram(Mechanism),
}

impl Chosen {
    fn name(self) -> &'static str {
        match self {
            Chosen::Plain => "PLAIN",
            Chosen::Scram(m) => m.name(),
        }
    }
}

enum State {
    /// No mechanism chosen yet.
    Start,
    Chosen(Chosen),
    /// SCRAM server-first sent; waiting for client-final.
    Scram {
        server: Box<ServerFirst>,
        user: String,
        mechanism: Mechanism,
    },
    Authenticated,
}

/// The SASL state of one connection.
pub(super) struct Conn {
    auth: Arc<Auth>,
    info: ConnInfo,
    state: State,
    /// Who the connection is: anonymous, its certificate's name, or the
    /// user it authenticated as.
    pub session: Session,
    /// Whether it may send requests other than ApiVersions and SASL.
    authenticated: bool,
    /// Set once an authentication failed: the connection closes after its
    /// answer.
    pub failed: bool,
}

/// The answer to a SASL request, and whether the connection closes after
/// it.
pub(super) enum Step<T> {
    Answer(T),
    /// Answer after [`FAILURE_DELAY`], then close.
    Fail(T),
}

impl Conn {
    pub(super) fn new(auth: Arc<Auth>, info: ConnInfo) -> Conn {
        let (session, authenticated) = match (&info.cert_name, auth.required()) {
            (_, false) => (Session::anonymous(info.remote, LISTENER), true),
            (Some(name), true) => (Session::new(name, info.remote, LISTENER), true),
            (None, true) => (Session::anonymous(info.remote, LISTENER), false),
        };
        Conn {
            auth,
            info,
            state: State::Start,
            session,
            authenticated,
            failed: false,
        }
    }

    /// Whether requests other than ApiVersions and SASL may come now.
    pub(super) fn authenticated(&self) -> bool {
        self.authenticated
    }

    fn mechanisms(&self) -> Vec<Chosen> {
        let mut m = vec![
            Chosen::Scram(Mechanism::Sha256),
            Chosen::Scram(Mechanism::Sha512),
        ];
        if self.info.tls || self.auth.plaintext_passwords_allowed() {
            m.push(Chosen::Plain);
        }
        m
    }

    pub(super) fn handshake(&mut self, r: &SaslHandshakeRequest) -> Step<SaslHandshakeResponse> {
        let offered = if self.auth.required() {
            self.mechanisms()
        } else {
            Vec::new()
        };
        let names = offered
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect();
        let answer = SaslHandshakeResponse::default().with_mechanisms(names);
        if !matches!(self.state, State::Start) {
            self.failed = true;
            return Step::Fail(answer.with_error_code(ResponseError::IllegalSaslState.code()));
        }
        match offered
            .into_iter()
            .find(|m| m.name() == r.mechanism.as_str())
        {
            Some(chosen) => {
                self.state = State::Chosen(chosen);
                Step::Answer(answer)
            }
            // Answered with the mechanisms offered, then closed, as Kafka
            // does.
            None => {
                self.failed = true;
                Step::Fail(answer.with_error_code(ResponseError::UnsupportedSaslMechanism.code()))
            }
        }
    }

    pub(super) fn authenticate(
        &mut self,
        r: &SaslAuthenticateRequest,
    ) -> Step<SaslAuthenticateResponse> {
        match std::mem::replace(&mut self.state, State::Start) {
            State::Chosen(Chosen::Plain) => self.plain(&r.auth_bytes),
            State::Chosen(Chosen::Scram(mechanism)) => self.scram_first(mechanism, &r.auth_bytes),
            State::Scram {
                server,
                user,
                mechanism,
            } => self.scram_final(*server, user, mechanism, &r.auth_bytes),
            State::Start | State::Authenticated => {
                self.state = State::Authenticated;
                self.fail(
                    ResponseError::IllegalSaslState,
                    "SaslAuthenticate must follow a SaslHandshake that chose a mechanism",
                )
            }
        }
    }

    fn fail(
        &mut self,
        error: ResponseError,
        message: impl Into<String>,
    ) -> Step<SaslAuthenticateResponse> {
        self.failed = true;
        Step::Fail(
            SaslAuthenticateResponse::default()
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message.into()))),
        )
    }

    fn refused(
        &mut self,
        user: &str,
        mechanism: &'static str,
        failure: AuthFailure,
    ) -> Step<SaslAuthenticateResponse> {
        if failure == AuthFailure::Invalid {
            tracing::info!(user, mechanism, host = %self.session.host, "Kafka authentication failed");
        }
        let message = format!("{failure} (mechanism {mechanism})");
        self.fail(ResponseError::SaslAuthenticationFailed, message)
    }

    fn succeeded(&mut self, user: &str, auth_bytes: Vec<u8>) -> Step<SaslAuthenticateResponse> {
        self.state = State::Authenticated;
        self.authenticated = true;
        self.session = Session::new(user, self.info.remote, LISTENER);
        Step::Answer(SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(auth_bytes)))
    }

    fn plain(&mut self, bytes: &[u8]) -> Step<SaslAuthenticateResponse> {
        let credentials = match streamhouse_core::plain::parse(bytes) {
            Ok(c) => c,
            Err(e) => return self.fail(ResponseError::SaslAuthenticationFailed, e.to_string()),
        };
        match self.auth.check_password(
            &credentials.username,
            &credentials.password,
            &self.session.host,
            LISTENER,
        ) {
            Ok(()) => self.succeeded(&credentials.username, Vec::new()),
            Err(failure) => self.refused(&credentials.username, "PLAIN", failure),
        }
    }

    fn scram_first(
        &mut self,
        mechanism: Mechanism,
        bytes: &[u8],
    ) -> Step<SaslAuthenticateResponse> {
        let first = match scram::parse_client_first(bytes) {
            Ok(first) => first,
            Err(e) => return self.fail(ResponseError::SaslAuthenticationFailed, e.to_string()),
        };
        let user = first.username().to_string();
        if let Err(failure) = self.auth.may_try(&user, &self.session.host) {
            return self.refused(&user, mechanism.name(), failure);
        }
        // Spent now and given back on success, so that exchanges in flight
        // cannot overdraw the budget.
        self.auth.spend(&user, &self.session.host);
        // An unknown user goes through the exchange with a stand-in
        // credential and fails at its end, as a wrong password does: the
        // answers do not tell which user names exist.
        let credential = self.auth.credential_or_stand_in(&user, mechanism);
        let (server, message) = first.server_first(&credential);
        self.state = State::Scram {
            server: Box::new(server),
            user,
            mechanism,
        };
        Step::Answer(SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(message)))
    }

    fn scram_final(
        &mut self,
        server: ServerFirst,
        user: String,
        mechanism: Mechanism,
        bytes: &[u8],
    ) -> Step<SaslAuthenticateResponse> {
        match server.client_final(bytes) {
            Ok(server_final) => {
                self.auth.refund(&user, &self.session.host);
                self.succeeded(&user, server_final)
            }
            Err(_) => {
                self.auth.count_failure(LISTENER, mechanism.name());
                self.refused(&user, mechanism.name(), AuthFailure::Invalid)
            }
        }
    }
}

/// Waits before a failed step is answered.
pub(super) async fn delay_failure() {
    tokio::time::sleep(FAILURE_DELAY).await;
}
