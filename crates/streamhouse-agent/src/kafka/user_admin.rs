//! DescribeUserScramCredentials and AlterUserScramCredentials (v0): the
//! SCRAM users of the metadata store, with Kafka's rules. Describing needs
//! DESCRIBE on the cluster, altering ALTER on the cluster (else
//! CLUSTER_AUTHORIZATION_FAILED). A description shows each credential's
//! mechanism and iteration count, never its salt or keys.
//!
//! An alteration carries what a Kafka admin client derives from the
//! password: the salt and `Hi(password, salt, iterations)`; the agent keeps
//! the keys derived from it ([`Credential::from_salted_password`]). A
//! user's alterations all apply or none does, as Kafka's errors say:
//! UNSUPPORTED_SASL_MECHANISM for a mechanism other than SCRAM-SHA-256 or
//! -512, UNACCEPTABLE_CREDENTIAL for an empty or invalid user name, an
//! iteration count out of range or a bad salt or salted password,
//! DUPLICATE_RESOURCE when one user and mechanism are altered twice in one
//! request, RESOURCE_NOT_FOUND when deleting a credential that does not
//! exist. After a change this agent reads the users again at once.

use std::collections::HashSet;
use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_core::scram::{Credential, Mechanism};
use streamhouse_metadata::AclOperation;

use super::Broker;
use super::authz::{CLUSTER_DENIED, cluster};
use crate::auth::Session;

pub(super) const DESCRIBE_VERSIONS: RangeInclusive<i16> = 0..=0;
pub(super) const ALTER_VERSIONS: RangeInclusive<i16> = 0..=0;

const UNACCEPTABLE: i16 = ResponseError::UnacceptableCredential.code();
const DUPLICATE: i16 = ResponseError::DuplicateResource.code();
const NOT_FOUND: i16 = ResponseError::ResourceNotFound.code();
const UNSUPPORTED_MECHANISM: i16 = ResponseError::UnsupportedSaslMechanism.code();

type Refusal = (i16, String);

fn s(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

fn store_failure(e: &streamhouse_metadata::Error) -> Refusal {
    tracing::warn!(error = %e, "reading or changing SCRAM users failed");
    (ResponseError::UnknownServerError.code(), e.to_string())
}

pub(super) async fn describe(
    broker: &Broker,
    session: &Session,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !cluster(broker, session, AclOperation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(CLUSTER_DENIED)
            .with_error_message(Some(s(format!(
                "{} may not describe users",
                session.principal
            ))));
    }
    let all = match broker.metadata.scram_credentials().await {
        Ok(all) => all,
        Err(e) => {
            let (code, message) = store_failure(&e);
            return DescribeUserScramCredentialsResponse::default()
                .with_error_code(code)
                .with_error_message(Some(s(message)));
        }
    };
    let infos = |user: &str| -> Vec<CredentialInfo> {
        all.iter()
            .filter(|u| u.user == user)
            .map(|u| {
                CredentialInfo::default()
                    .with_mechanism(u.credential.mechanism.kafka_type())
                    .with_iterations(i32::try_from(u.credential.iterations).unwrap_or(i32::MAX))
            })
            .collect()
    };
    let result = |user: &str| DescribeUserScramCredentialsResult::default().with_user(s(user));
    let asked: Vec<String> = request
        .users
        .unwrap_or_default()
        .into_iter()
        .map(|u| u.name.to_string())
        .collect();
    let results = if asked.is_empty() {
        // Every user, in the store's order (by user).
        let mut users: Vec<&str> = all.iter().map(|u| u.user.as_str()).collect();
        users.dedup();
        users
            .into_iter()
            .map(|u| result(u).with_credential_infos(infos(u)))
            .collect()
    } else {
        let mut seen = HashSet::new();
        let duplicated: HashSet<&str> = asked
            .iter()
            .filter(|u| !seen.insert(u.as_str()))
            .map(String::as_str)
            .collect();
        let mut answered = HashSet::new();
        asked
            .iter()
            .filter(|u| answered.insert(u.as_str()))
            .map(|u| {
                let found = infos(u);
                if duplicated.contains(u.as_str()) {
                    result(u).with_error_code(DUPLICATE).with_error_message(Some(s(
                        "Cannot describe SCRAM credentials for the same user twice in a single request",
                    )))
                } else if found.is_empty() {
                    result(u).with_error_code(NOT_FOUND).with_error_message(Some(s(
                        "Attempt to describe a user credential that does not exist",
                    )))
                } else {
                    result(u).with_credential_infos(found)
                }
            })
            .collect()
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// One alteration of a user's credentials.
enum Change {
    Delete(Mechanism),
    Upsert(Credential),
}

/// A mechanism by Kafka type, or UNSUPPORTED_SASL_MECHANISM.
fn mechanism(kafka_type: i8) -> Result<Mechanism, Refusal> {
    Mechanism::from_kafka_type(kafka_type).ok_or_else(|| {
        (
            UNSUPPORTED_MECHANISM,
            format!(
                "unknown SCRAM mechanism type {kafka_type} (1: SCRAM-SHA-256, 2: SCRAM-SHA-512)"
            ),
        )
    })
}

fn check_user(user: &str) -> Result<(), Refusal> {
    if user.is_empty() {
        return Err((UNACCEPTABLE, "Username must not be empty".to_string()));
    }
    streamhouse_metadata::validate_user_name(user).map_err(|e| (UNACCEPTABLE, e.to_string()))
}

/// Every user of the request with its changes, in the order users first
/// appear; the user's refusal instead when one of its changes is refused.
fn changes(
    request: &AlterUserScramCredentialsRequest,
) -> Vec<(String, Result<Vec<Change>, Refusal>)> {
    let mut users: Vec<(String, Result<Vec<Change>, Refusal>)> = Vec::new();
    let mut pairs: HashSet<(String, i8)> = HashSet::new();
    let mut duplicated: HashSet<String> = HashSet::new();
    let mut add = |user: &str, kafka_type: i8, change: Result<Change, Refusal>| {
        if !pairs.insert((user.to_string(), kafka_type)) {
            duplicated.insert(user.to_string());
        }
        let index = match users.iter().position(|(u, _)| u == user) {
            Some(i) => i,
            None => {
                users.push((user.to_string(), Ok(Vec::new())));
                users.len() - 1
            }
        };
        let entry = &mut users[index].1;
        match (entry, change) {
            (Ok(list), Ok(change)) => list.push(change),
            (entry @ Ok(_), Err(refusal)) => *entry = Err(refusal),
            (Err(_), _) => {}
        }
    };
    for d in &request.deletions {
        let change = check_user(&d.name)
            .and_then(|()| mechanism(d.mechanism))
            .map(Change::Delete);
        add(&d.name, d.mechanism, change);
    }
    for u in &request.upsertions {
        let change = check_user(&u.name)
            .and_then(|()| mechanism(u.mechanism))
            .and_then(|m| {
                let iterations = u32::try_from(u.iterations).map_err(|_| {
                    (
                        UNACCEPTABLE,
                        format!("iterations {} is negative", u.iterations),
                    )
                })?;
                Credential::from_salted_password(m, &u.salted_password, &u.salt, iterations)
                    .map_err(|e| (UNACCEPTABLE, e.to_string()))
            })
            .map(Change::Upsert);
        add(&u.name, u.mechanism, change);
    }
    for (user, outcome) in &mut users {
        if duplicated.contains(user.as_str()) {
            *outcome = Err((
                DUPLICATE,
                "A user credential cannot be altered twice in the same request".to_string(),
            ));
        }
    }
    users
}

/// Applies one user's changes once every deletion is known to find its
/// credential.
async fn apply(broker: &Broker, user: &str, changes: Vec<Change>) -> Result<(), Refusal> {
    for change in &changes {
        if let Change::Delete(m) = change {
            match broker.metadata.scram_credential(user, *m).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err((
                        NOT_FOUND,
                        format!(
                            "Attempt to delete a user credential that does not exist ({})",
                            m.name()
                        ),
                    ));
                }
                Err(e) => return Err(store_failure(&e)),
            }
        }
    }
    for change in changes {
        let done = match change {
            Change::Delete(m) => broker
                .metadata
                .delete_scram_credential(user, m)
                .await
                .map(|_| ()),
            Change::Upsert(credential) => {
                broker
                    .metadata
                    .upsert_scram_credential(user, &credential)
                    .await
            }
        };
        done.map_err(|e| match e {
            streamhouse_metadata::Error::Invalid(_)
            | streamhouse_metadata::Error::InvalidArgument { .. } => (UNACCEPTABLE, e.to_string()),
            other => store_failure(&other),
        })?;
    }
    Ok(())
}

pub(super) async fn alter(
    broker: &Broker,
    session: &Session,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let allowed = cluster(broker, session, AclOperation::Alter);
    let mut results = Vec::new();
    let mut changed = false;
    for (user, outcome) in changes(&request) {
        let outcome = match outcome {
            _ if !allowed => Err((
                CLUSTER_DENIED,
                format!("{} may not alter users", session.principal),
            )),
            Ok(list) => {
                let applied = apply(broker, &user, list).await;
                changed |= applied.is_ok();
                applied
            }
            Err(refusal) => Err(refusal),
        };
        let result = AlterUserScramCredentialsResult::default().with_user(s(user));
        results.push(match outcome {
            Ok(()) => result,
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(s(message))),
        });
    }
    if changed && let Err(e) = broker.auth.refresh().await {
        tracing::warn!(error = %e, "reading users again after a change failed");
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };

    fn upsert(user: &str, mechanism: i8, iterations: i32, salt: &[u8]) -> ScramCredentialUpsertion {
        ScramCredentialUpsertion::default()
            .with_name(s(user))
            .with_mechanism(mechanism)
            .with_iterations(iterations)
            .with_salt(bytes::Bytes::copy_from_slice(salt))
            .with_salted_password(bytes::Bytes::from(vec![7u8; 32]))
    }

    fn codes(request: &AlterUserScramCredentialsRequest) -> Vec<(String, i16)> {
        changes(request)
            .into_iter()
            .map(|(u, o)| (u, o.err().map_or(0, |(code, _)| code)))
            .collect()
    }

    #[test]
    fn kafka_errors_for_bad_alterations() {
        let request = AlterUserScramCredentialsRequest::default()
            .with_upsertions(vec![
                upsert("ok", 1, 4096, b"salt"),
                upsert("few", 1, 10, b"salt"),
                upsert("nosalt", 1, 4096, b""),
                upsert("", 1, 4096, b"salt"),
                upsert("mech", 9, 4096, b"salt"),
                upsert("twice", 1, 4096, b"salt"),
                upsert("both", 1, 4096, b"salt"),
            ])
            .with_deletions(vec![
                ScramCredentialDeletion::default()
                    .with_name(s("twice"))
                    .with_mechanism(1),
                ScramCredentialDeletion::default()
                    .with_name(s("both"))
                    .with_mechanism(2),
            ]);
        let got = codes(&request);
        let expect = |u: &str| got.iter().find(|(n, _)| n == u).unwrap().1;
        assert_eq!(expect("ok"), 0);
        assert_eq!(expect("few"), UNACCEPTABLE);
        assert_eq!(expect("nosalt"), UNACCEPTABLE);
        assert_eq!(expect(""), UNACCEPTABLE);
        assert_eq!(expect("mech"), UNSUPPORTED_MECHANISM);
        assert_eq!(expect("twice"), DUPLICATE);
        assert_eq!(expect("both"), 0);
    }

    proptest::proptest! {
        #[test]
        fn any_alteration_is_judged_without_panicking(
            user in ".{0,8}",
            mechanism in proptest::prelude::any::<i8>(),
            iterations in proptest::prelude::any::<i32>(),
            salt in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let request = AlterUserScramCredentialsRequest::default()
                .with_upsertions(vec![upsert(&user, mechanism, iterations, &salt)]);
            let _ = changes(&request);
        }
    }
}
