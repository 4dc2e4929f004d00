//! The Kafka admin APIs for ACLs and SCRAM users, over raw frames, on an
//! agent that requires authentication: ACLs created, described and deleted
//! (and applied at once), refused without ALTER or DESCRIBE on the
//! cluster; a user's credential set through AlterUserScramCredentials then
//! used to log in; descriptions that never hold a secret.

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use streamhouse_core::scram::{Credential, MIN_ITERATIONS, Mechanism};
use streamhouse_metadata::ResourceType as Res;
use streamhouse_metadata::{AclOperation as Op, AclPermission as Perm, PatternType as Pat};

mod common;
use common::kafka::{Conn, User, acl, login, secure_agent};

const ADMIN: User = ("admin", "admin-pw");
const OPERATOR: User = ("operator", "operator-pw");
const VIEWER: User = ("viewer", "viewer-pw");
const NOBODY: User = ("nobody", "nobody-pw");

const CLUSTER_DENIED: i16 = 31;
const INVALID_REQUEST: i16 = 42;
const TOPIC_DENIED: i16 = 29;
const RESOURCE_NOT_FOUND: i16 = 91;
const DUPLICATE_RESOURCE: i16 = 92;
const UNACCEPTABLE_CREDENTIAL: i16 = 93;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

fn s(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn creation(principal: &str, topic: &str, operation: i8) -> create_acls_request::AclCreation {
    create_acls_request::AclCreation::default()
        .with_resource_type(2)
        .with_resource_name(s(topic))
        .with_resource_pattern_type(3)
        .with_principal(s(principal))
        .with_host(s("*"))
        .with_operation(operation)
        .with_permission_type(3)
}

/// Every binding, as `(resource name, principal, operation)`.
async fn described(conn: &mut Conn) -> Result<Vec<(String, String, i8)>, i16> {
    let r: DescribeAclsResponse = conn
        .call(
            ApiKey::DescribeAcls,
            3,
            &DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_resource_name_filter(None)
                .with_principal_filter(None)
                .with_host_filter(None)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1),
        )
        .await;
    if r.error_code != 0 {
        return Err(r.error_code);
    }
    Ok(r.resources
        .iter()
        .flat_map(|res| {
            res.acls.iter().map(|a| {
                (
                    res.resource_name.to_string(),
                    a.principal.to_string(),
                    a.operation,
                )
            })
        })
        .collect())
}

fn agent_acls() -> Vec<streamhouse_metadata::AclBinding> {
    vec![
        acl(
            "User:operator",
            Res::Cluster,
            "kafka-cluster",
            Pat::Literal,
            Op::Alter,
            Perm::Allow,
        ),
        acl(
            "User:viewer",
            Res::Cluster,
            "kafka-cluster",
            Pat::Literal,
            Op::Describe,
            Perm::Allow,
        ),
    ]
}

#[tokio::test]
async fn acls_round_trip_and_apply_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let agent = secure_agent(
        &dir,
        &[ADMIN, OPERATOR, VIEWER, NOBODY],
        &agent_acls(),
        |_| {},
    )
    .await;
    let mut operator = login(&agent, OPERATOR).await;
    let mut viewer = login(&agent, VIEWER).await;
    let mut nobody = login(&agent, NOBODY).await;
    let mut admin = login(&agent, ADMIN).await;
    let r: CreateTopicsResponse = admin
        .call(
            ApiKey::CreateTopics,
            7,
            &CreateTopicsRequest::default().with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(s("audit")))
                    .with_num_partitions(1)
                    .with_replication_factor(-1),
            ]),
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0);

    // Nobody may not create ACLs, nor describe them.
    let request =
        CreateAclsRequest::default().with_creations(vec![creation("User:nobody", "audit", 8)]);
    let r: CreateAclsResponse = nobody.call(ApiKey::CreateAcls, 3, &request).await;
    assert_eq!(r.results[0].error_code, CLUSTER_DENIED);
    assert_eq!(described(&mut nobody).await, Err(CLUSTER_DENIED));
    // The viewer may describe but not create.
    let r: CreateAclsResponse = viewer.call(ApiKey::CreateAcls, 3, &request).await;
    assert_eq!(r.results[0].error_code, CLUSTER_DENIED);
    assert_eq!(described(&mut viewer).await.unwrap().len(), 2);

    // Nobody cannot see the topic yet.
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s("audit")))),
    ]));
    let r: MetadataResponse = nobody.call(ApiKey::Metadata, 12, &metadata).await;
    assert_eq!(r.topics[0].error_code, TOPIC_DENIED);

    // The operator grants DESCRIBE; an invalid binding beside it is refused
    // with a message naming its field.
    let r: CreateAclsResponse = operator
        .call(
            ApiKey::CreateAcls,
            3,
            &CreateAclsRequest::default().with_creations(vec![
                creation("User:nobody", "audit", 8),
                creation("nobody", "audit", 8),
                creation("User:nobody", "audit", 9),
                creation("User:nobody", "audit", 8).with_resource_type(7),
            ]),
        )
        .await;
    let codes: Vec<i16> = r.results.iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes,
        [0, INVALID_REQUEST, INVALID_REQUEST, INVALID_REQUEST]
    );
    let message = |i: usize| {
        r.results[i]
            .error_message
            .as_deref()
            .unwrap_or_default()
            .to_string()
    };
    assert!(message(1).contains("principal"), "{}", message(1));
    assert!(message(2).contains("operation"), "{}", message(2));
    assert!(message(3).contains("resource type"), "{}", message(3));
    // Applied at once on this agent.
    let r: MetadataResponse = nobody.call(ApiKey::Metadata, 12, &metadata).await;
    assert_eq!(r.topics[0].error_code, 0);
    let all = described(&mut viewer).await.unwrap();
    assert!(
        all.contains(&("audit".to_string(), "User:nobody".to_string(), 8)),
        "{all:?}"
    );
    assert_eq!(all.len(), 3);

    // Deleting: refused to the viewer, done by the operator.
    let filter = || {
        DeleteAclsRequest::default().with_filters(vec![
            delete_acls_request::DeleteAclsFilter::default()
                .with_resource_type_filter(2)
                .with_resource_name_filter(Some(s("audit")))
                .with_pattern_type_filter(2)
                .with_principal_filter(Some(s("User:nobody")))
                .with_host_filter(None)
                .with_operation(1)
                .with_permission_type(1),
        ])
    };
    let r: DeleteAclsResponse = viewer.call(ApiKey::DeleteAcls, 3, &filter()).await;
    assert_eq!(r.filter_results[0].error_code, CLUSTER_DENIED);
    let r: DeleteAclsResponse = operator.call(ApiKey::DeleteAcls, 3, &filter()).await;
    assert_eq!(r.filter_results[0].error_code, 0);
    let deleted = &r.filter_results[0].matching_acls;
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        (deleted[0].resource_name.as_str(), deleted[0].operation),
        ("audit", 8)
    );
    let r: MetadataResponse = nobody.call(ApiKey::Metadata, 12, &metadata).await;
    assert_eq!(r.topics[0].error_code, TOPIC_DENIED);
    assert_eq!(described(&mut viewer).await.unwrap().len(), 2);
    agent.shutdown().await.unwrap();
}

/// What a Kafka admin client sends for `password`.
fn upsertion(
    user: &str,
    mechanism: Mechanism,
    password: &str,
) -> alter_user_scram_credentials_request::ScramCredentialUpsertion {
    let salt = b"0123456789abcdef";
    let salted = salted_password(mechanism, password, salt, MIN_ITERATIONS);
    alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
        .with_name(s(user))
        .with_mechanism(mechanism.kafka_type())
        .with_iterations(MIN_ITERATIONS as i32)
        .with_salt(Bytes::from_static(salt))
        .with_salted_password(Bytes::from(salted))
}

/// `Hi(password, salt, iterations)` (RFC 5802): PBKDF2 with the
/// mechanism's HMAC (written out here, as a client would), checked against
/// the agent's own derivation.
fn salted_password(mechanism: Mechanism, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    fn hmac<D: sha2::Digest>(block: usize, key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut k = if key.len() > block {
            D::digest(key).to_vec()
        } else {
            key.to_vec()
        };
        k.resize(block, 0);
        let inner = D::new()
            .chain_update(k.iter().map(|b| b ^ 0x36).collect::<Vec<u8>>())
            .chain_update(message)
            .finalize();
        D::new()
            .chain_update(k.iter().map(|b| b ^ 0x5c).collect::<Vec<u8>>())
            .chain_update(inner)
            .finalize()
            .to_vec()
    }
    fn hi<D: sha2::Digest>(block: usize, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut u = hmac::<D>(block, password, &[salt, &1u32.to_be_bytes()].concat());
        let mut out = u.clone();
        for _ in 1..iterations {
            u = hmac::<D>(block, password, &u);
            for (o, x) in out.iter_mut().zip(&u) {
                *o ^= x;
            }
        }
        out
    }
    let salted = match mechanism {
        Mechanism::Sha256 => hi::<sha2::Sha256>(64, password.as_bytes(), salt, iterations),
        Mechanism::Sha512 => hi::<sha2::Sha512>(128, password.as_bytes(), salt, iterations),
    };
    let derived = Credential::from_salted_password(mechanism, &salted, salt, iterations).unwrap();
    assert_eq!(
        derived,
        Credential::with_salt(mechanism, password, salt, iterations).unwrap()
    );
    salted
}

async fn alter(conn: &mut Conn, request: AlterUserScramCredentialsRequest) -> Vec<(String, i16)> {
    let r: AlterUserScramCredentialsResponse = conn
        .call(ApiKey::AlterUserScramCredentials, 0, &request)
        .await;
    r.results
        .iter()
        .map(|r| (r.user.to_string(), r.error_code))
        .collect()
}

#[tokio::test]
async fn scram_users_are_altered_and_described_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let agent = secure_agent(
        &dir,
        &[ADMIN, OPERATOR, VIEWER, NOBODY],
        &agent_acls(),
        |_| {},
    )
    .await;
    let mut operator = login(&agent, OPERATOR).await;
    let mut viewer = login(&agent, VIEWER).await;

    // Refused without ALTER on the cluster.
    let set_carol = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        upsertion("carol", Mechanism::Sha256, "carol-pw"),
        upsertion("carol", Mechanism::Sha512, "carol-pw"),
    ]);
    assert_eq!(
        alter(&mut viewer, set_carol.clone()).await,
        [("carol".to_string(), CLUSTER_DENIED)]
    );
    assert_eq!(
        alter(&mut operator, set_carol).await,
        [("carol".to_string(), 0)]
    );
    // Carol logs in at once, with both mechanisms.
    for mechanism in Mechanism::ALL {
        let mut conn = Conn::open(&agent).await;
        conn.login_scram(mechanism, "carol", "carol-pw")
            .await
            .unwrap();
    }

    // Kafka's errors.
    let mut few = upsertion("dave", Mechanism::Sha256, "x");
    few.iterations = 10;
    let mut unknown = upsertion("erin", Mechanism::Sha256, "x");
    unknown.mechanism = 7;
    let request = AlterUserScramCredentialsRequest::default()
        .with_upsertions(vec![
            few,
            unknown,
            upsertion("", Mechanism::Sha256, "x"),
            upsertion("frank", Mechanism::Sha256, "x"),
            upsertion("frank", Mechanism::Sha256, "y"),
        ])
        .with_deletions(vec![
            alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                .with_name(s("grace"))
                .with_mechanism(1),
        ]);
    let results = alter(&mut operator, request).await;
    let code = |user: &str| results.iter().find(|(u, _)| u == user).unwrap().1;
    assert_eq!(code("dave"), UNACCEPTABLE_CREDENTIAL);
    assert_eq!(code("erin"), UNSUPPORTED_SASL_MECHANISM);
    assert_eq!(code(""), UNACCEPTABLE_CREDENTIAL);
    assert_eq!(code("frank"), DUPLICATE_RESOURCE);
    assert_eq!(code("grace"), RESOURCE_NOT_FOUND);

    // Descriptions: refused without DESCRIBE on the cluster; mechanisms
    // and iterations only.
    let mut nobody = login(&agent, NOBODY).await;
    let all = DescribeUserScramCredentialsRequest::default().with_users(None);
    let r: DescribeUserScramCredentialsResponse = nobody
        .call(ApiKey::DescribeUserScramCredentials, 0, &all)
        .await;
    assert_eq!(r.error_code, CLUSTER_DENIED);
    let r: DescribeUserScramCredentialsResponse = viewer
        .call(ApiKey::DescribeUserScramCredentials, 0, &all)
        .await;
    assert_eq!(r.error_code, 0);
    let users: Vec<&str> = r.results.iter().map(|u| u.user.as_str()).collect();
    assert_eq!(users, ["admin", "carol", "nobody", "operator", "viewer"]);
    for u in &r.results {
        assert_eq!(u.credential_infos.len(), 2, "{}", u.user.as_str());
    }
    // The answer holds no secret: no salt, no key, only codes and counts.
    let mut encoded = bytes::BytesMut::new();
    kafka_protocol::protocol::Encodable::encode(&r, &mut encoded, 0).unwrap();
    let store = streamhouse_metadata::open(&format!(
        "sqlite://{}",
        dir.path().join("metadata.db").display()
    ))
    .await
    .unwrap();
    for c in store.scram_credentials().await.unwrap() {
        for secret in [
            &c.credential.salt,
            &c.credential.stored_key,
            &c.credential.server_key,
        ] {
            assert!(
                !encoded
                    .windows(secret.len())
                    .any(|w| w == secret.as_slice())
            );
        }
    }
    let named = DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
        describe_user_scram_credentials_request::UserName::default().with_name(s("carol")),
        describe_user_scram_credentials_request::UserName::default().with_name(s("zed")),
        describe_user_scram_credentials_request::UserName::default().with_name(s("viewer")),
        describe_user_scram_credentials_request::UserName::default().with_name(s("viewer")),
    ]));
    let r: DescribeUserScramCredentialsResponse = viewer
        .call(ApiKey::DescribeUserScramCredentials, 0, &named)
        .await;
    let codes: Vec<(&str, i16)> = r
        .results
        .iter()
        .map(|u| (u.user.as_str(), u.error_code))
        .collect();
    assert_eq!(
        codes,
        [
            ("carol", 0),
            ("zed", RESOURCE_NOT_FOUND),
            ("viewer", DUPLICATE_RESOURCE)
        ]
    );
    let infos: Vec<(i8, i32)> = r.results[0]
        .credential_infos
        .iter()
        .map(|i| (i.mechanism, i.iterations))
        .collect();
    assert_eq!(
        infos,
        [(1, MIN_ITERATIONS as i32), (2, MIN_ITERATIONS as i32)]
    );

    // Deleting carol's SHA-512 credential: SHA-256 still logs in.
    let request = AlterUserScramCredentialsRequest::default().with_deletions(vec![
        alter_user_scram_credentials_request::ScramCredentialDeletion::default()
            .with_name(s("carol"))
            .with_mechanism(2),
    ]);
    assert_eq!(
        alter(&mut operator, request).await,
        [("carol".to_string(), 0)]
    );
    let mut conn = Conn::open(&agent).await;
    let (code, _) = conn
        .login_scram(Mechanism::Sha512, "carol", "carol-pw")
        .await
        .unwrap_err();
    assert_eq!(code, SASL_AUTHENTICATION_FAILED);
    let mut conn = Conn::open(&agent).await;
    conn.login_scram(Mechanism::Sha256, "carol", "carol-pw")
        .await
        .unwrap();
    agent.shutdown().await.unwrap();
}
