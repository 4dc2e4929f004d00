//! ACLs and SCRAM credentials, run against every metadata backend.

use streamhouse_core::scram::{Credential, Mechanism};
use streamhouse_metadata::*;

#[macro_use]
mod common;
use common::Backend;

conformance!(
    acls_are_created_idempotently_and_listed_in_order,
    invalid_acls_are_rejected_and_nothing_is_stored,
    acls_are_deleted_by_literal_prefixed_and_any_filters,
    acls_are_deleted_by_match_filters,
    acls_survive_reopening,
    scram_credentials_are_upserted_replaced_and_listed_in_order,
    scram_credentials_are_deleted_per_mechanism_and_per_user,
    invalid_scram_users_and_credentials_are_rejected,
);

fn acl(
    rt: ResourceType,
    name: &str,
    pt: PatternType,
    principal: &str,
    op: AclOperation,
) -> AclBinding {
    AclBinding {
        principal: principal.into(),
        host: "*".into(),
        resource_type: rt,
        resource_name: name.into(),
        pattern_type: pt,
        operation: op,
        permission: AclPermission::Allow,
    }
}

fn topic_acl(name: &str, pt: PatternType) -> AclBinding {
    acl(
        ResourceType::Topic,
        name,
        pt,
        "User:alice",
        AclOperation::Read,
    )
}

fn name_filter(rt: ResourceType, name: &str, pattern: PatternFilter) -> AclFilter {
    AclFilter {
        resource_type: Some(rt),
        resource_name: Some(name.into()),
        pattern,
        ..AclFilter::any()
    }
}

fn sorted(mut acls: Vec<AclBinding>) -> Vec<AclBinding> {
    acls.sort();
    acls
}

async fn acls_are_created_idempotently_and_listed_in_order(b: &Backend) {
    let store = &b.store;
    assert!(store.acls().await.unwrap().is_empty());
    store.create_acls(&[]).await.unwrap();
    let acls = vec![
        acl(
            ResourceType::TransactionalId,
            "tx",
            PatternType::Literal,
            "User:bob",
            AclOperation::Write,
        ),
        topic_acl("orders", PatternType::Prefixed),
        topic_acl("orders", PatternType::Literal),
        // Byte order, not a collation: 'Z' (0x5a) sorts before 'a'.
        topic_acl("Zeta", PatternType::Literal),
        topic_acl("*", PatternType::Literal),
        acl(
            ResourceType::Cluster,
            "kafka-cluster",
            PatternType::Literal,
            "User:*",
            AclOperation::Describe,
        ),
        acl(
            ResourceType::Group,
            "app",
            PatternType::Literal,
            "User:alice",
            AclOperation::Read,
        ),
        AclBinding {
            permission: AclPermission::Deny,
            host: "10.0.0.7".into(),
            ..topic_acl("orders", PatternType::Literal)
        },
    ];
    store.create_acls(&acls).await.unwrap();
    let listed = store.acls().await.unwrap();
    assert_eq!(listed, sorted(acls.clone()));
    let names: Vec<_> = listed
        .iter()
        .filter(|a| a.resource_type == ResourceType::Topic)
        .map(|a| a.resource_name.as_str())
        .collect();
    assert_eq!(names, ["*", "Zeta", "orders", "orders", "orders"]);
    assert_eq!(listed[0].resource_type, ResourceType::Topic);
    assert_eq!(
        listed.last().unwrap().resource_type,
        ResourceType::TransactionalId
    );

    // Creating them again, with duplicates in one call, changes nothing.
    let mut again = acls.clone();
    again.extend(acls.iter().cloned());
    store.create_acls(&again).await.unwrap();
    store.create_acls(&acls[..2]).await.unwrap();
    assert_eq!(store.acls().await.unwrap(), listed);

    // Many at once (more than one INSERT statement).
    let many: Vec<_> = (0..1_200)
        .map(|i| topic_acl(&format!("t{i:04}"), PatternType::Literal))
        .collect();
    store.create_acls(&many).await.unwrap();
    assert_eq!(store.acls().await.unwrap().len(), acls.len() + many.len());
}

async fn invalid_acls_are_rejected_and_nothing_is_stored(b: &Backend) {
    let store = &b.store;
    let good = topic_acl("orders", PatternType::Literal);
    for (bad, field) in [
        (
            AclBinding {
                principal: "alice".into(),
                ..good.clone()
            },
            "acl principal",
        ),
        (
            AclBinding {
                host: "not-an-ip".into(),
                ..good.clone()
            },
            "acl host",
        ),
        (topic_acl("", PatternType::Literal), "acl resource name"),
        (topic_acl("*", PatternType::Prefixed), "acl resource name"),
        (topic_acl("a\0b", PatternType::Literal), "acl resource name"),
        (
            acl(
                ResourceType::Cluster,
                "c",
                PatternType::Literal,
                "User:a",
                AclOperation::Alter,
            ),
            "acl resource name",
        ),
    ] {
        let err = store
            .create_acls(&[good.clone(), bad.clone()])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { field: f, .. } if *f == field),
            "{bad:?}: {err:?}"
        );
    }
    assert!(store.acls().await.unwrap().is_empty());
}

async fn acls_are_deleted_by_literal_prefixed_and_any_filters(b: &Backend) {
    let store = &b.store;
    let lit = topic_acl("orders", PatternType::Literal);
    let pre = topic_acl("orders", PatternType::Prefixed);
    let short = topic_acl("ord", PatternType::Prefixed);
    let wild = topic_acl("*", PatternType::Literal);
    let group = acl(
        ResourceType::Group,
        "orders",
        PatternType::Literal,
        "User:alice",
        AclOperation::Read,
    );
    let bob = acl(
        ResourceType::Topic,
        "orders",
        PatternType::Literal,
        "User:bob",
        AclOperation::Write,
    );
    let all = vec![
        lit.clone(),
        pre.clone(),
        short.clone(),
        wild.clone(),
        group.clone(),
        bob.clone(),
    ];
    store.create_acls(&all).await.unwrap();

    // Nothing matches: nothing deleted.
    let none = name_filter(ResourceType::Topic, "nope", PatternFilter::Any);
    assert!(store.delete_acls(&none).await.unwrap().is_empty());

    // LITERAL: only literal bindings of exactly that name, narrowed by the
    // entry fields.
    let mut f = name_filter(ResourceType::Topic, "orders", PatternFilter::Literal);
    f.principal = Some("User:bob".into());
    assert_eq!(store.delete_acls(&f).await.unwrap(), vec![bob.clone()]);
    assert!(store.delete_acls(&f).await.unwrap().is_empty());

    // PREFIXED: only the prefixed binding of exactly that name.
    let f = name_filter(ResourceType::Topic, "orders", PatternFilter::Prefixed);
    assert_eq!(store.delete_acls(&f).await.unwrap(), vec![pre.clone()]);

    // ANY with a name: that exact name, any pattern type, not "*" or
    // shorter prefixes; without a resource type, every type.
    store.create_acls(std::slice::from_ref(&pre)).await.unwrap();
    let f = AclFilter {
        resource_name: Some("orders".into()),
        pattern: PatternFilter::Any,
        ..AclFilter::any()
    };
    assert_eq!(
        store.delete_acls(&f).await.unwrap(),
        sorted(vec![lit.clone(), pre.clone(), group.clone()])
    );
    assert_eq!(
        store.acls().await.unwrap(),
        sorted(vec![short.clone(), wild.clone()])
    );

    // The filter matching everything deletes everything.
    assert_eq!(
        store.delete_acls(&AclFilter::any()).await.unwrap(),
        sorted(vec![short, wild])
    );
    assert!(store.acls().await.unwrap().is_empty());
}

async fn acls_are_deleted_by_match_filters(b: &Backend) {
    let store = &b.store;
    let lit = topic_acl("orders", PatternType::Literal);
    let pre = topic_acl("ord", PatternType::Prefixed);
    let pre_full = topic_acl("orders", PatternType::Prefixed);
    let longer = topic_acl("orders-eu", PatternType::Prefixed);
    let wild = topic_acl("*", PatternType::Literal);
    let other = topic_acl("other", PatternType::Literal);
    let group_wild = acl(
        ResourceType::Group,
        "*",
        PatternType::Literal,
        "User:alice",
        AclOperation::Read,
    );
    let all = vec![
        lit.clone(),
        pre.clone(),
        pre_full.clone(),
        longer.clone(),
        wild.clone(),
        other.clone(),
        group_wild.clone(),
    ];
    store.create_acls(&all).await.unwrap();

    // MATCH with an operation the bindings do not have: nothing.
    let mut f = name_filter(ResourceType::Topic, "orders", PatternFilter::Match);
    f.operation = Some(AclOperation::Write);
    assert!(store.delete_acls(&f).await.unwrap().is_empty());

    // MATCH: every binding that applies to topic "orders".
    let f = name_filter(ResourceType::Topic, "orders", PatternFilter::Match);
    let want = sorted(vec![lit, pre, pre_full, wild]);
    assert_eq!(store.delete_acls(&f).await.unwrap(), want);
    assert_eq!(
        store.acls().await.unwrap(),
        sorted(vec![longer, other, group_wild])
    );
}

async fn acls_survive_reopening(b: &Backend) {
    let acls = vec![
        topic_acl("orders", PatternType::Literal),
        acl(
            ResourceType::Cluster,
            "kafka-cluster",
            PatternType::Literal,
            "User:admin",
            AclOperation::All,
        ),
    ];
    b.store.create_acls(&acls).await.unwrap();
    let again = b.open_again().await;
    assert_eq!(again.acls().await.unwrap(), sorted(acls));
}

fn credential(mechanism: Mechanism, fill: u8, iterations: u32) -> Credential {
    Credential {
        mechanism,
        salt: vec![fill; 16],
        iterations,
        stored_key: vec![fill; mechanism.hash_len()],
        server_key: vec![fill.wrapping_add(1); mechanism.hash_len()],
    }
}

async fn listing(store: &dyn MetadataStore) -> Vec<(String, Mechanism, u8)> {
    store
        .scram_credentials()
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.user, u.credential.mechanism, u.credential.salt[0]))
        .collect()
}

async fn scram_credentials_are_upserted_replaced_and_listed_in_order(b: &Backend) {
    let store = &*b.store;
    assert!(store.scram_credentials().await.unwrap().is_empty());
    assert_eq!(
        store
            .scram_credential("alice", Mechanism::Sha256)
            .await
            .unwrap(),
        None
    );
    let alice256 = credential(Mechanism::Sha256, 1, 4096);
    let alice512 = credential(Mechanism::Sha512, 2, 8192);
    let zed = credential(Mechanism::Sha256, 3, 4096);
    let comma = credential(Mechanism::Sha512, 4, 16384);
    store
        .upsert_scram_credential("alice", &alice512)
        .await
        .unwrap();
    store
        .upsert_scram_credential("alice", &alice256)
        .await
        .unwrap();
    store.upsert_scram_credential("Zed", &zed).await.unwrap();
    store
        .upsert_scram_credential("a,b=c", &comma)
        .await
        .unwrap();
    assert_eq!(
        store
            .scram_credential("alice", Mechanism::Sha256)
            .await
            .unwrap(),
        Some(alice256.clone())
    );
    assert_eq!(
        store
            .scram_credential("alice", Mechanism::Sha512)
            .await
            .unwrap(),
        Some(alice512.clone())
    );
    assert_eq!(
        store
            .scram_credential("Zed", Mechanism::Sha512)
            .await
            .unwrap(),
        None
    );
    // By user bytes ('Z' < 'a', "a,b=c" < "alice"), then mechanism.
    assert_eq!(
        listing(store).await,
        vec![
            ("Zed".to_string(), Mechanism::Sha256, 3),
            ("a,b=c".to_string(), Mechanism::Sha512, 4),
            ("alice".to_string(), Mechanism::Sha256, 1),
            ("alice".to_string(), Mechanism::Sha512, 2),
        ]
    );

    // Upserting replaces every field of that mechanism's credential only.
    let replaced = credential(Mechanism::Sha256, 9, 10_000);
    store
        .upsert_scram_credential("alice", &replaced)
        .await
        .unwrap();
    assert_eq!(
        store
            .scram_credential("alice", Mechanism::Sha256)
            .await
            .unwrap(),
        Some(replaced.clone())
    );
    assert_eq!(
        store
            .scram_credential("alice", Mechanism::Sha512)
            .await
            .unwrap(),
        Some(alice512)
    );
    let all = store.scram_credentials().await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(
        all[2],
        UserCredential {
            user: "alice".into(),
            credential: replaced.clone(),
        }
    );

    // Another store instance on the same database sees them.
    let again = b.open_again().await;
    assert_eq!(
        again
            .scram_credential("alice", Mechanism::Sha256)
            .await
            .unwrap(),
        Some(replaced)
    );
}

async fn scram_credentials_are_deleted_per_mechanism_and_per_user(b: &Backend) {
    let store = &*b.store;
    assert!(!store.delete_user("alice").await.unwrap());
    assert!(
        !store
            .delete_scram_credential("alice", Mechanism::Sha256)
            .await
            .unwrap()
    );
    for (user, fill) in [("alice", 1), ("bob", 2)] {
        for m in Mechanism::ALL {
            store
                .upsert_scram_credential(user, &credential(m, fill, 4096))
                .await
                .unwrap();
        }
    }
    assert!(
        store
            .delete_scram_credential("alice", Mechanism::Sha256)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_scram_credential("alice", Mechanism::Sha256)
            .await
            .unwrap()
    );
    assert_eq!(
        listing(store).await,
        vec![
            ("alice".to_string(), Mechanism::Sha512, 1),
            ("bob".to_string(), Mechanism::Sha256, 2),
            ("bob".to_string(), Mechanism::Sha512, 2),
        ]
    );
    assert!(store.delete_user("bob").await.unwrap());
    assert!(!store.delete_user("bob").await.unwrap());
    assert_eq!(
        listing(store).await,
        vec![("alice".to_string(), Mechanism::Sha512, 1)]
    );
    assert!(store.delete_user("alice").await.unwrap());
    assert!(store.scram_credentials().await.unwrap().is_empty());
}

async fn invalid_scram_users_and_credentials_are_rejected(b: &Backend) {
    let store = &*b.store;
    let good = credential(Mechanism::Sha256, 1, 4096);
    let long = "u".repeat(256);
    for user in ["", "a\nb", "nul\0", long.as_str()] {
        let err = store
            .upsert_scram_credential(user, &good)
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::InvalidArgument {
                    field: "scram user name",
                    ..
                }
            ),
            "{user:?}: {err:?}"
        );
    }
    let bad = [
        Credential {
            iterations: 100,
            ..good.clone()
        },
        Credential {
            salt: Vec::new(),
            ..good.clone()
        },
        Credential {
            stored_key: vec![0; 64],
            ..good.clone()
        },
        Credential {
            server_key: Vec::new(),
            ..good.clone()
        },
        Credential {
            mechanism: Mechanism::Sha512,
            ..good.clone()
        },
    ];
    for credential in bad {
        let err = store
            .upsert_scram_credential("alice", &credential)
            .await
            .unwrap_err();
        assert!(matches!(&err, Error::Invalid(_)), "{credential:?}: {err:?}");
    }
    assert!(store.scram_credentials().await.unwrap().is_empty());
    // A name of 255 bytes with ',' and '=' is fine.
    let name = format!("a,b=x{}", "é".repeat(125));
    assert_eq!(name.len(), 255);
    store.upsert_scram_credential(&name, &good).await.unwrap();
    assert_eq!(
        store
            .scram_credential(&name, Mechanism::Sha256)
            .await
            .unwrap(),
        Some(good)
    );
}
