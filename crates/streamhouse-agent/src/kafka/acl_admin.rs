//! CreateAcls, DescribeAcls and DeleteAcls (v1–3; the codec, like Kafka
//! 4, knows no v0): the ACL bindings of the metadata store, in Kafka's
//! codes. Creating and deleting needs ALTER on the cluster, describing
//! DESCRIBE on the cluster (else CLUSTER_AUTHORIZATION_FAILED). After a
//! change this agent reads the ACLs again at once; the others within their
//! refresh period.
//!
//! A binding must name a concrete resource type (topic, group, cluster or
//! transactional id), pattern type (literal or prefixed), operation (not
//! Kafka's `ClusterAction` or the token ones) and permission; anything else
//! is INVALID_REQUEST with a message naming the field. A filter may also
//! say ANY (and MATCH for the pattern); a concrete code this agent has no
//! binding for (say resource type `User`) matches nothing.

use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::{
    AclBinding, AclFilter, AclOperation, AclPermission, PatternFilter, PatternType, ResourceType,
};

use super::Broker;
use super::authz::{CLUSTER_DENIED, cluster};
use crate::auth::Session;

pub(super) const CREATE_VERSIONS: RangeInclusive<i16> = 1..=3;
pub(super) const DESCRIBE_VERSIONS: RangeInclusive<i16> = 1..=3;
pub(super) const DELETE_VERSIONS: RangeInclusive<i16> = 1..=3;

const INVALID: i16 = ResponseError::InvalidRequest.code();
/// Kafka's ANY, in every enum of a filter.
const ANY: i8 = 1;

/// Why a binding or filter cannot be used: INVALID_REQUEST and a message.
type Refusal = (i16, String);

fn invalid(message: impl Into<String>) -> Refusal {
    (INVALID, message.into())
}

fn s(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

fn denied(session: &Session, what: &str) -> Refusal {
    (
        CLUSTER_DENIED,
        format!("{} may not {what} ACLs", session.principal),
    )
}

/// A concrete code of a binding's field.
fn concrete<T>(
    field: &str,
    code: i8,
    parse: fn(i8) -> Option<T>,
    names: &[&str],
) -> Result<T, Refusal> {
    parse(code).ok_or_else(|| {
        invalid(format!(
            "{field} {code} is not supported in a binding (one of: {})",
            names.join(", ")
        ))
    })
}

const RESOURCE_TYPES: &[&str] = &[
    "2 (topic)",
    "3 (group)",
    "4 (cluster)",
    "5 (transactional id)",
];
const PATTERN_TYPES: &[&str] = &["3 (literal)", "4 (prefixed)"];
const OPERATIONS: &[&str] = &[
    "2 (all)",
    "3 (read)",
    "4 (write)",
    "5 (create)",
    "6 (delete)",
    "7 (alter)",
    "8 (describe)",
    "10 (describe configs)",
    "11 (alter configs)",
    "12 (idempotent write)",
];
const PERMISSIONS: &[&str] = &["2 (deny)", "3 (allow)"];

/// The binding a creation describes, validated as the store would.
fn binding(
    c: &kafka_protocol::messages::create_acls_request::AclCreation,
) -> Result<AclBinding, Refusal> {
    let acl = AclBinding {
        resource_type: concrete(
            "resource type",
            c.resource_type,
            ResourceType::from_kafka_code,
            RESOURCE_TYPES,
        )?,
        resource_name: c.resource_name.to_string(),
        pattern_type: concrete(
            "pattern type",
            c.resource_pattern_type,
            PatternType::from_kafka_code,
            PATTERN_TYPES,
        )?,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: concrete(
            "operation",
            c.operation,
            AclOperation::from_kafka_code,
            OPERATIONS,
        )?,
        permission: concrete(
            "permission type",
            c.permission_type,
            AclPermission::from_kafka_code,
            PERMISSIONS,
        )?,
    };
    acl.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(acl)
}

/// A filter field: `Ok(None)` for ANY, `Ok(Some(Some(v)))` for a value
/// bindings may have, `Ok(Some(None))` for a valid Kafka code no binding
/// here has (the filter matches nothing), an error for UNKNOWN (0) or a
/// code Kafka does not define.
fn filter_field<T>(
    field: &str,
    code: i8,
    parse: fn(i8) -> Option<T>,
    kafka_max: i8,
) -> Result<Option<Option<T>>, Refusal> {
    match code {
        ANY => Ok(None),
        c if (2..=kafka_max).contains(&c) => Ok(Some(parse(c))),
        c => Err(invalid(format!("{field} {c} is not a valid filter code"))),
    }
}

/// The store's filter of a Kafka filter; `Ok(None)` when it can match no
/// binding.
#[allow(clippy::too_many_arguments)]
fn filter(
    resource_type: i8,
    resource_name: Option<&StrBytes>,
    pattern_type: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<Option<AclFilter>, Refusal> {
    // Kafka: resource types to 7 (user), operations to 14 (describe
    // tokens), permissions to 3 (allow).
    let resource_type = filter_field(
        "resource type",
        resource_type,
        ResourceType::from_kafka_code,
        7,
    )?;
    let operation = filter_field("operation", operation, AclOperation::from_kafka_code, 14)?;
    let permission = filter_field(
        "permission type",
        permission,
        AclPermission::from_kafka_code,
        3,
    )?;
    let pattern = PatternFilter::from_kafka_code(pattern_type).ok_or_else(|| {
        invalid(format!(
            "pattern type {pattern_type} is not a valid filter code"
        ))
    })?;
    let (Some(resource_type), Some(operation), Some(permission)) = (
        resource_type.map_or(Some(None), |t| t.map(Some)),
        operation.map_or(Some(None), |o| o.map(Some)),
        permission.map_or(Some(None), |p| p.map(Some)),
    ) else {
        return Ok(None);
    };
    Ok(Some(AclFilter {
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        resource_type,
        resource_name: resource_name.map(|n| n.to_string()),
        pattern,
        operation,
        permission,
    }))
}

async fn refresh(broker: &Broker) {
    if let Err(e) = broker.auth.refresh().await {
        tracing::warn!(error = %e, "reading ACLs again after a change failed");
    }
}

pub(super) async fn create(
    broker: &Broker,
    session: &Session,
    request: CreateAclsRequest,
) -> CreateAclsResponse {
    let mut outcomes: Vec<Result<AclBinding, Refusal>> =
        if cluster(broker, session, AclOperation::Alter) {
            request.creations.iter().map(binding).collect()
        } else {
            let refusal = denied(session, "create");
            request
                .creations
                .iter()
                .map(|_| Err(refusal.clone()))
                .collect()
        };
    let valid: Vec<AclBinding> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().cloned())
        .collect();
    if !valid.is_empty() {
        if let Err(e) = broker.metadata.create_acls(&valid).await {
            tracing::warn!(error = %e, "creating ACLs failed");
            let code = super::errors::metadata_code(&e);
            for o in outcomes.iter_mut().filter(|o| o.is_ok()) {
                *o = Err((code, e.to_string()));
            }
        } else {
            refresh(broker).await;
        }
    }
    CreateAclsResponse::default().with_results(
        outcomes
            .into_iter()
            .map(|o| match o {
                Ok(_) => AclCreationResult::default(),
                Err((code, message)) => AclCreationResult::default()
                    .with_error_code(code)
                    .with_error_message(Some(s(message))),
            })
            .collect(),
    )
}

pub(super) async fn describe(
    broker: &Broker,
    session: &Session,
    r: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let refused = |(code, message): Refusal| {
        DescribeAclsResponse::default()
            .with_error_code(code)
            .with_error_message(Some(s(message)))
    };
    if !cluster(broker, session, AclOperation::Describe) {
        return refused(denied(session, "describe"));
    }
    let filter = match filter(
        r.resource_type_filter,
        r.resource_name_filter.as_ref(),
        r.pattern_type_filter,
        r.principal_filter.as_ref(),
        r.host_filter.as_ref(),
        r.operation,
        r.permission_type,
    ) {
        Ok(Some(f)) => f,
        Ok(None) => return DescribeAclsResponse::default(),
        Err(refusal) => return refused(refusal),
    };
    let acls = match broker.metadata.acls().await {
        Ok(acls) => acls,
        Err(e) => {
            tracing::warn!(error = %e, "listing ACLs failed");
            return refused((super::errors::metadata_code(&e), e.to_string()));
        }
    };
    // The store lists them ordered by resource: one entry per resource.
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for acl in acls.iter().filter(|a| filter.matches(a)) {
        let description = AclDescription::default()
            .with_principal(s(acl.principal.clone()))
            .with_host(s(acl.host.clone()))
            .with_operation(acl.operation.kafka_code())
            .with_permission_type(acl.permission.kafka_code());
        match resources.last_mut() {
            Some(last)
                if last.resource_type == acl.resource_type.kafka_code()
                    && last.resource_name.as_str() == acl.resource_name
                    && last.pattern_type == acl.pattern_type.kafka_code() =>
            {
                last.acls.push(description);
            }
            _ => resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(acl.resource_type.kafka_code())
                    .with_resource_name(s(acl.resource_name.clone()))
                    .with_pattern_type(acl.pattern_type.kafka_code())
                    .with_acls(vec![description]),
            ),
        }
    }
    DescribeAclsResponse::default().with_resources(resources)
}

fn delete_filter(f: &DeleteAclsFilter) -> Result<Option<AclFilter>, Refusal> {
    filter(
        f.resource_type_filter,
        f.resource_name_filter.as_ref(),
        f.pattern_type_filter,
        f.principal_filter.as_ref(),
        f.host_filter.as_ref(),
        f.operation,
        f.permission_type,
    )
}

pub(super) async fn delete(
    broker: &Broker,
    session: &Session,
    request: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let allowed = cluster(broker, session, AclOperation::Alter);
    let mut results = Vec::with_capacity(request.filters.len());
    let mut changed = false;
    for f in &request.filters {
        let outcome = if allowed {
            delete_filter(f)
        } else {
            Err(denied(session, "delete"))
        };
        let deleted = match outcome {
            Ok(None) => Ok(Vec::new()),
            Ok(Some(filter)) => broker.metadata.delete_acls(&filter).await.map_err(|e| {
                tracing::warn!(error = %e, "deleting ACLs failed");
                (super::errors::metadata_code(&e), e.to_string())
            }),
            Err(refusal) => Err(refusal),
        };
        results.push(match deleted {
            Ok(acls) => {
                changed |= !acls.is_empty();
                DeleteAclsFilterResult::default().with_matching_acls(
                    acls.into_iter()
                        .map(|acl| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(acl.resource_type.kafka_code())
                                .with_resource_name(s(acl.resource_name))
                                .with_pattern_type(acl.pattern_type.kafka_code())
                                .with_principal(s(acl.principal))
                                .with_host(s(acl.host))
                                .with_operation(acl.operation.kafka_code())
                                .with_permission_type(acl.permission.kafka_code())
                        })
                        .collect(),
                )
            }
            Err((code, message)) => DeleteAclsFilterResult::default()
                .with_error_code(code)
                .with_error_message(Some(s(message))),
        });
    }
    if changed {
        refresh(broker).await;
    }
    DeleteAclsResponse::default().with_filter_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::create_acls_request::AclCreation;

    fn creation() -> AclCreation {
        AclCreation::default()
            .with_resource_type(2)
            .with_resource_name(s("orders"))
            .with_resource_pattern_type(3)
            .with_principal(s("User:alice"))
            .with_host(s("*"))
            .with_operation(3)
            .with_permission_type(3)
    }

    #[test]
    fn a_binding_in_kafka_codes_becomes_the_store_one() {
        let acl = binding(&creation()).unwrap();
        assert_eq!(acl.resource_type, ResourceType::Topic);
        assert_eq!(acl.operation, AclOperation::Read);
        assert_eq!(acl.permission, AclPermission::Allow);
    }

    #[test]
    fn unsupported_codes_are_invalid_and_named() {
        let cases: [(AclCreation, &str); 6] = [
            (creation().with_resource_type(7), "resource type"),
            (creation().with_resource_type(1), "resource type"),
            (creation().with_resource_pattern_type(2), "pattern type"),
            (creation().with_operation(9), "operation"),
            (creation().with_permission_type(1), "permission type"),
            (creation().with_principal(s("alice")), "principal"),
        ];
        for (c, field) in cases {
            let (code, message) = binding(&c).unwrap_err();
            assert_eq!(code, INVALID);
            assert!(message.contains(field), "{message}");
        }
    }

    #[test]
    fn filters_take_any_and_match_nothing_for_codes_without_bindings() {
        let all = filter(1, None, 1, None, None, 1, 1).unwrap().unwrap();
        assert_eq!(all, AclFilter::any());
        assert_eq!(filter(7, None, 1, None, None, 1, 1).unwrap(), None);
        assert_eq!(filter(1, None, 1, None, None, 9, 1).unwrap(), None);
        assert!(filter(0, None, 1, None, None, 1, 1).is_err());
        assert!(filter(1, None, 0, None, None, 1, 1).is_err());
        assert!(filter(1, None, 1, None, None, 1, 4).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_codes_are_mapped_without_panicking(
            t in proptest::prelude::any::<i8>(),
            p in proptest::prelude::any::<i8>(),
            o in proptest::prelude::any::<i8>(),
            a in proptest::prelude::any::<i8>(),
        ) {
            let _ = filter(t, None, p, None, None, o, a);
            let _ = binding(&creation().with_resource_type(t).with_resource_pattern_type(p).with_operation(o).with_permission_type(a));
        }
    }
}
