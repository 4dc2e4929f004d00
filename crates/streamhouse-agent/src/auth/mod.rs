//! Who a client is, and what it may do.
//!
//! Authentication is on when [`AuthConfig::required`] is set: every Kafka
//! connection authenticates by SASL (SCRAM-SHA-256, SCRAM-SHA-512 or
//! PLAIN) or by a client certificate, and every gRPC request carries a user
//! name and password (see [`grpc`]) or comes on a connection with a client
//! certificate. Users and ACLs are read from the metadata store, kept in
//! memory, and read again every second, so a change made through any agent
//! reaches every agent within about a second.
//!
//! With authentication on, ACLs are enforced on every request of both
//! listeners ([`acl`] has the rules); without it every client is
//! `User:ANONYMOUS` and may do anything, which only the loopback default
//! and `--allow-unauthenticated` permit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use streamhouse_core::scram::{Credential, Mechanism};
use streamhouse_metadata::{AclBinding, AclOperation, MetadataStore, ResourceType};

use crate::error::Result;

pub(crate) mod acl;
pub(crate) mod grpc;
mod limiter;

pub(crate) use limiter::Limiter;

/// How often users and ACLs are read again from the metadata store.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Most distinct refusals logged; later ones are only counted.
const MAX_LOGGED: usize = 10_000;
/// Most verified passwords remembered (PLAIN and gRPC).
const MAX_VERIFIED: usize = 10_000;

/// The name of the one cluster resource, as Kafka names it.
pub(crate) const CLUSTER: &str = "kafka-cluster";

/// The principal of a client that did not authenticate.
pub(crate) const ANONYMOUS: &str = "User:ANONYMOUS";

/// Authentication and authorisation settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Every client must authenticate, and ACLs are enforced. Default:
    /// false.
    pub required: bool,
    /// Principals (`User:<name>`) allowed everything, whatever the ACLs.
    pub super_users: Vec<String>,
    /// Accept passwords (SASL PLAIN, gRPC credentials) on connections
    /// without TLS. Default: false; SCRAM never sends the password.
    pub allow_plaintext_passwords: bool,
    /// Let an agent listen on a non-loopback address without
    /// authentication. Default: false (it refuses to start).
    pub allow_unauthenticated: bool,
}

/// An authenticated (or anonymous) client, as requests see it.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// `User:<name>`.
    pub principal: String,
    /// The client's IP address, as ACL hosts name it.
    pub host: String,
    /// `grpc` or `kafka`, for logs and metrics.
    pub listener: &'static str,
}

impl Session {
    pub(crate) fn new(
        user: &str,
        remote: Option<std::net::SocketAddr>,
        listener: &'static str,
    ) -> Session {
        Session {
            principal: format!("User:{user}"),
            // IPv4 clients of a dual-stack listener as IPv4, as ACL hosts
            // name them.
            host: remote
                .map(|a| a.ip().to_canonical().to_string())
                .unwrap_or_default(),
            listener,
        }
    }

    pub(crate) fn anonymous(
        remote: Option<std::net::SocketAddr>,
        listener: &'static str,
    ) -> Session {
        let mut session = Session::new("", remote, listener);
        session.principal = ANONYMOUS.to_string();
        session
    }
}

/// Why an authentication failed, as clients are told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthFailure {
    #[error("authentication failed: invalid user name or password")]
    Invalid,
    #[error("authentication failed: too many failed attempts for this user; retry in {} ms", .0.as_millis())]
    TooManyAttempts(Duration),
    #[error("passwords are only accepted over TLS on this agent (use SCRAM, or TLS)")]
    PlaintextRefused,
}

#[derive(Default)]
struct Snapshot {
    credentials: HashMap<(String, Mechanism), Credential>,
    acls: Vec<AclBinding>,
}

/// Users and ACLs in memory, and the checks made with them.
pub(crate) struct Auth {
    config: AuthConfig,
    metadata: Arc<dyn MetadataStore>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Held through a whole refresh, so that a refresh that started
    /// earlier (the periodic one) cannot overwrite one that read later (the
    /// one after a change made here).
    refreshing: tokio::sync::Mutex<()>,
    limiter: Limiter,
    /// Digests of (user, password) pairs already verified, with the stored
    /// key they were verified against: a changed credential invalidates
    /// them.
    verified: Mutex<HashMap<[u8; 32], Vec<u8>>>,
    logged: Mutex<HashSet<String>>,
    /// Credentials of a random password, one per mechanism, that SCRAM
    /// exchanges of unknown users run against (and fail).
    stand_ins: std::sync::OnceLock<Vec<Credential>>,
}

impl Auth {
    /// Reads users and ACLs when authentication is required.
    pub(crate) async fn start(
        config: AuthConfig,
        metadata: Arc<dyn MetadataStore>,
    ) -> Result<Arc<Auth>> {
        let auth = Arc::new(Auth {
            config,
            metadata,
            snapshot: RwLock::default(),
            refreshing: tokio::sync::Mutex::new(()),
            limiter: Limiter::default(),
            verified: Mutex::default(),
            logged: Mutex::default(),
            stand_ins: std::sync::OnceLock::new(),
        });
        if auth.config.required {
            auth.refresh().await?;
        }
        Ok(auth)
    }

    /// Whether clients must authenticate and ACLs are enforced.
    pub(crate) fn required(&self) -> bool {
        self.config.required
    }

    /// Whether passwords may cross a connection without TLS.
    pub(crate) fn plaintext_passwords_allowed(&self) -> bool {
        self.config.allow_plaintext_passwords
    }

    /// Reads users and ACLs from the metadata store again.
    pub(crate) async fn refresh(&self) -> Result<()> {
        let _one_at_a_time = self.refreshing.lock().await;
        let credentials = self.metadata.scram_credentials().await?;
        let acls = self.metadata.acls().await?;
        let snapshot = Snapshot {
            credentials: credentials
                .into_iter()
                .map(|u| ((u.user, u.credential.mechanism), u.credential))
                .collect(),
            acls,
        };
        *self.snapshot.write().expect("auth lock") = Arc::new(snapshot);
        Ok(())
    }

    /// Refreshes every second until aborted; a failed read keeps the users
    /// and ACLs read before.
    pub(crate) async fn refresh_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "reading users and ACLs failed; the ones read before stay in use");
            }
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("auth lock").clone()
    }

    /// The credential of `user` for `mechanism`.
    pub(crate) fn credential(&self, user: &str, mechanism: Mechanism) -> Option<Credential> {
        self.snapshot()
            .credentials
            .get(&(user.to_string(), mechanism))
            .cloned()
    }

    /// The credential of `user`, or a stand-in no password matches.
    pub(crate) fn credential_or_stand_in(&self, user: &str, mechanism: Mechanism) -> Credential {
        self.credential(user, mechanism).unwrap_or_else(|| {
            self.stand_ins
                .get_or_init(stand_ins)
                .iter()
                .find(|c| c.mechanism == mechanism)
                .cloned()
                .expect("a stand-in per mechanism")
        })
    }

    /// Whether `user` may try to authenticate now (see [`Limiter`]).
    pub(crate) fn may_try(&self, user: &str, host: &str) -> std::result::Result<(), AuthFailure> {
        match self.limiter.check(&limiter::key(user, host)) {
            None => Ok(()),
            Some(wait) => Err(AuthFailure::TooManyAttempts(wait)),
        }
    }

    /// Spends one unit of `user`'s attempt budget (see [`Limiter`]).
    pub(crate) fn spend(&self, user: &str, host: &str) {
        self.limiter.spend(&limiter::key(user, host));
    }

    /// Gives back the unit a successful exchange spent.
    pub(crate) fn refund(&self, user: &str, host: &str) {
        self.limiter.refund(&limiter::key(user, host));
    }

    /// Counts a failed authentication on `listener`.
    pub(crate) fn count_failure(&self, listener: &'static str, mechanism: &'static str) {
        metrics::counter!("streamhouse_authentication_failures_total", "listener" => listener, "mechanism" => mechanism)
            .increment(1);
    }

    /// Checks a user name and password (SASL PLAIN, gRPC credentials)
    /// against the user's strongest credential. Verified pairs are
    /// remembered (as digests) until the credential changes, so a client
    /// that sends its password with every request pays for the key
    /// derivation once.
    pub(crate) fn check_password(
        &self,
        user: &str,
        password: &str,
        host: &str,
        listener: &'static str,
    ) -> std::result::Result<(), AuthFailure> {
        let snapshot = self.snapshot();
        let credential = [Mechanism::Sha512, Mechanism::Sha256]
            .into_iter()
            .find_map(|m| snapshot.credentials.get(&(user.to_string(), m)));
        let digest: [u8; 32] = {
            let mut h = Sha256::new();
            h.update((user.len() as u64).to_be_bytes());
            h.update(user.as_bytes());
            h.update(password.as_bytes());
            h.finalize().into()
        };
        if let Some(credential) = credential
            && self.verified.lock().expect("auth lock").get(&digest) == Some(&credential.stored_key)
        {
            return Ok(());
        }
        self.may_try(user, host)?;
        // An unknown user's password is checked against a stand-in, so a
        // failure takes as long whether or not the user exists.
        let checked = match credential {
            Some(c) => c.clone(),
            None => self.credential_or_stand_in(user, Mechanism::Sha512),
        };
        match credential {
            Some(credential) if checked.verify_password(password) => {
                let mut verified = self.verified.lock().expect("auth lock");
                if verified.len() >= MAX_VERIFIED {
                    verified.clear();
                }
                verified.insert(digest, credential.stored_key.clone());
                Ok(())
            }
            _ => {
                self.spend(user, host);
                self.count_failure(listener, "password");
                Err(AuthFailure::Invalid)
            }
        }
    }

    /// Whether `session` may perform `operation` on the resource; a refusal
    /// is counted, and logged the first time.
    pub(crate) fn allows(
        &self,
        session: &Session,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if self.allows_silently(session, operation, resource_type, name) {
            return true;
        }
        self.refused(session, operation, resource_type, name);
        false
    }

    /// Like [`Auth::allows`], for checks whose refusal only leaves a
    /// resource out of a listing: not counted, not logged.
    pub(crate) fn allows_silently(
        &self,
        session: &Session,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if !self.config.required || self.is_super_user(&session.principal) {
            return true;
        }
        let snapshot = self.snapshot();
        let request = acl::Request {
            principal: &session.principal,
            host: &session.host,
            operation,
            resource_type,
            name,
        };
        acl::allowed(&snapshot.acls, &request)
    }

    /// Whether `session` may perform `operation` on some resource of the
    /// type (not counted as a refusal when it may not).
    pub(crate) fn allows_somewhere(
        &self,
        session: &Session,
        operation: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        !self.config.required
            || self.is_super_user(&session.principal)
            || acl::allowed_somewhere(
                &self.snapshot().acls,
                &session.principal,
                &session.host,
                operation,
                resource_type,
            )
    }

    fn is_super_user(&self, principal: &str) -> bool {
        self.config.super_users.iter().any(|s| s == principal)
    }

    fn refused(
        &self,
        session: &Session,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) {
        metrics::counter!(
            "streamhouse_authorization_denied_total",
            "listener" => session.listener,
            "operation" => operation.name(),
            "resource_type" => resource_type.name()
        )
        .increment(1);
        let key = format!(
            "{} {} {}:{name}",
            session.principal,
            operation.name(),
            resource_type.name()
        );
        let mut logged = self.logged.lock().expect("auth lock");
        if logged.len() < MAX_LOGGED && logged.insert(key) {
            tracing::warn!(
                principal = %session.principal,
                host = %session.host,
                listener = session.listener,
                operation = operation.name(),
                resource_type = resource_type.name(),
                resource = name,
                "refused by ACLs (logged once per principal, operation and resource)"
            );
        }
    }
}

fn stand_ins() -> Vec<Credential> {
    // 160 random bits; nobody knows them, so no exchange can succeed.
    let password = format!("{}{}", ulid::Ulid::new(), ulid::Ulid::new());
    Mechanism::ALL
        .into_iter()
        .map(|m| {
            Credential::new(m, &password, streamhouse_core::scram::MIN_ITERATIONS)
                .expect("MIN_ITERATIONS is a valid iteration count")
        })
        .collect()
}
