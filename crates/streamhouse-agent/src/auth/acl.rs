//! Whether a principal may perform an operation on a resource: Kafka's
//! rules over the ACL bindings of the metadata store.
//!
//! - A super user may do anything.
//! - A binding applies when its principal is the principal or `User:*`,
//!   its host is the client's address or `*`, its resource type is the
//!   resource's, and its pattern covers the name: a literal `*` covers
//!   every name, another literal covers that name only, a prefixed pattern
//!   covers the names that start with it.
//! - A DENY binding for the operation (or for `all`) refuses, whatever
//!   allows it: deny wins.
//! - Otherwise an ALLOW binding for the operation, for `all`, or for an
//!   operation that implies it, allows: `read`, `write`, `delete` and
//!   `alter` imply `describe`; `alter-configs` implies `describe-configs`.
//! - Nothing else is allowed.

use streamhouse_metadata::{AclBinding, AclOperation, AclPermission, PatternType, ResourceType};

/// What is asked: an operation on one named resource, by a principal
/// (`User:<name>`) from a host (the client's IP address).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request<'a> {
    pub principal: &'a str,
    pub host: &'a str,
    pub operation: AclOperation,
    pub resource_type: ResourceType,
    pub name: &'a str,
}

fn applies(acl: &AclBinding, r: &Request<'_>) -> bool {
    (acl.principal == "User:*" || acl.principal == r.principal)
        && (acl.host == "*" || acl.host == r.host)
        && acl.resource_type == r.resource_type
        && match acl.pattern_type {
            PatternType::Literal => acl.resource_name == "*" || acl.resource_name == r.name,
            PatternType::Prefixed => r.name.starts_with(acl.resource_name.as_str()),
        }
}

/// Whether an ALLOW binding for `granted` allows `asked`.
fn implies(granted: AclOperation, asked: AclOperation) -> bool {
    use AclOperation::*;
    granted == All
        || granted == asked
        || (asked == Describe && matches!(granted, Read | Write | Delete | Alter))
        || (asked == DescribeConfigs && granted == AlterConfigs)
}

/// Whether `acls` allow the request; see the module docs.
pub(crate) fn allowed(acls: &[AclBinding], r: &Request<'_>) -> bool {
    let mut allow = false;
    for acl in acls.iter().filter(|acl| applies(acl, r)) {
        match acl.permission {
            AclPermission::Deny
                if acl.operation == r.operation || acl.operation == AclOperation::All =>
            {
                return false;
            }
            AclPermission::Deny => {}
            AclPermission::Allow => allow |= implies(acl.operation, r.operation),
        }
    }
    allow
}

/// Whether `acls` allow `operation` on at least one resource of the type
/// (Kafka lets a principal that may write to some topic initialise an
/// idempotent producer). Deny bindings on `*` or on every name count.
pub(crate) fn allowed_somewhere(
    acls: &[AclBinding],
    principal: &str,
    host: &str,
    operation: AclOperation,
    resource_type: ResourceType,
) -> bool {
    acls.iter()
        .filter(|acl| {
            acl.permission == AclPermission::Allow
                && (acl.principal == "User:*" || acl.principal == principal)
                && (acl.host == "*" || acl.host == host)
                && acl.resource_type == resource_type
                && implies(acl.operation, operation)
        })
        .any(|acl| {
            // The name the binding allows must not be denied outright.
            let name = acl.resource_name.as_str();
            allowed(
                acls,
                &Request {
                    principal,
                    host,
                    operation,
                    resource_type,
                    name,
                },
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use AclOperation::*;
    use AclPermission::*;
    use PatternType::*;
    use ResourceType::*;

    fn acl(
        principal: &str,
        resource_type: ResourceType,
        name: &str,
        pattern_type: PatternType,
        operation: AclOperation,
        permission: AclPermission,
    ) -> AclBinding {
        AclBinding {
            principal: principal.into(),
            host: "*".into(),
            resource_type,
            resource_name: name.into(),
            pattern_type,
            operation,
            permission,
        }
    }

    fn ask(
        acls: &[AclBinding],
        principal: &str,
        op: AclOperation,
        t: ResourceType,
        name: &str,
    ) -> bool {
        allowed(
            acls,
            &Request {
                principal,
                host: "10.0.0.1",
                operation: op,
                resource_type: t,
                name,
            },
        )
    }

    #[test]
    fn the_rules_as_a_table() {
        let acls = [
            acl("User:writer", Topic, "orders-", Prefixed, Write, Allow),
            acl("User:reader", Group, "billing", Literal, Read, Allow),
            acl("User:reader", Topic, "*", Literal, Read, Allow),
            acl("User:reader", Topic, "secret", Literal, All, Deny),
            acl("User:*", Topic, "public", Literal, Describe, Allow),
            acl("User:admin", Cluster, "kafka-cluster", Literal, All, Allow),
            acl(
                "User:configs",
                Topic,
                "orders",
                Literal,
                AlterConfigs,
                Allow,
            ),
            acl("User:configs", Topic, "orders", Literal, Describe, Deny),
        ];
        let table: &[(&str, AclOperation, ResourceType, &str, bool)] = &[
            ("User:writer", Write, Topic, "orders-eu", true),
            ("User:writer", Describe, Topic, "orders-eu", true),
            ("User:writer", Read, Topic, "orders-eu", false),
            ("User:writer", Write, Topic, "orders", false),
            ("User:writer", Write, Topic, "payments", false),
            ("User:writer", Read, Group, "billing", false),
            ("User:reader", Read, Group, "billing", true),
            ("User:reader", Describe, Group, "billing", true),
            ("User:reader", Read, Group, "billing-2", false),
            ("User:reader", Delete, Group, "billing", false),
            ("User:reader", Read, Topic, "orders-eu", true),
            ("User:reader", Read, Topic, "secret", false),
            ("User:reader", Describe, Topic, "secret", false),
            ("User:reader", Write, Topic, "orders-eu", false),
            ("User:nobody", Describe, Topic, "public", true),
            ("User:nobody", Read, Topic, "public", false),
            ("User:admin", Alter, Cluster, "kafka-cluster", true),
            ("User:admin", Read, Topic, "orders-eu", false),
            ("User:configs", DescribeConfigs, Topic, "orders", true),
            ("User:configs", AlterConfigs, Topic, "orders", true),
            ("User:configs", Describe, Topic, "orders", false),
        ];
        for &(principal, op, t, name, expected) in table {
            assert_eq!(
                ask(&acls, principal, op, t, name),
                expected,
                "{principal} {op:?} {t:?} {name}"
            );
        }
    }

    #[test]
    fn hosts_narrow_a_binding() {
        let mut only_there = acl("User:a", Topic, "t", Literal, Read, Allow);
        only_there.host = "10.0.0.2".into();
        assert!(!ask(&[only_there.clone()], "User:a", Read, Topic, "t"));
        only_there.host = "10.0.0.1".into();
        assert!(ask(&[only_there], "User:a", Read, Topic, "t"));
    }

    #[test]
    fn allowed_somewhere_sees_any_topic_but_not_a_denied_one() {
        let acls = [acl("User:w", Topic, "orders-", Prefixed, Write, Allow)];
        assert!(allowed_somewhere(&acls, "User:w", "h", Write, Topic));
        assert!(!allowed_somewhere(&acls, "User:x", "h", Write, Topic));
        let denied = [
            acl("User:w", Topic, "t", Literal, Write, Allow),
            acl("User:w", Topic, "t", Literal, Write, Deny),
        ];
        assert!(!allowed_somewhere(&denied, "User:w", "h", Write, Topic));
    }
}
