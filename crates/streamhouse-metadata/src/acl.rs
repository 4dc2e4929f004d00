//! Access control lists in Kafka's model: bindings of a principal and host
//! to an operation on a resource pattern, allowed or denied, and the
//! filters that select bindings (Kafka's `AclBindingFilter`).
//!
//! Codes are Kafka's wire codes; names are the lower-case, dash-separated
//! forms of Kafka's names (`describe-configs`, `transactional-id`).

use std::str::FromStr;

use crate::error::{Error, Result};

/// The resource name that, as a literal pattern, names every resource of
/// its type.
pub const WILDCARD_RESOURCE: &str = "*";
/// The host that matches every client address.
pub const WILDCARD_HOST: &str = "*";
/// The only cluster resource's name.
pub const CLUSTER_RESOURCE_NAME: &str = "kafka-cluster";
/// The most bytes a principal, host or resource name may have.
pub const MAX_ACL_FIELD_BYTES: usize = 1024;

/// Whether `s` names `name`, ignoring ASCII case, `-` and `_` (so
/// `describe-configs`, `DescribeConfigs` and `DESCRIBE_CONFIGS` agree).
fn same_name(s: &str, name: &str) -> bool {
    let mut a = s.bytes().filter(|b| *b != b'-' && *b != b'_');
    let mut b = name.bytes().filter(|b| *b != b'-');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(&y) => {}
            _ => return false,
        }
    }
}

/// Declares a Kafka enum with its codes and names, `kafka_code`,
/// `from_kafka_code`, `name`, `Display` and a lenient `FromStr`.
macro_rules! kafka_enum {
    (
        $(#[$doc:meta])* $ty:ident, $field:literal {
            $($(#[$vdoc:meta])* $variant:ident = $code:literal, $name:literal;)*
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $ty {
            $($(#[$vdoc])* $variant,)*
        }

        impl $ty {
            /// Every value, in code order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            /// Kafka's wire code.
            pub fn kafka_code(self) -> i8 {
                match self {
                    $($ty::$variant => $code,)*
                }
            }

            /// The value of a Kafka wire code, if it is one this type has.
            pub fn from_kafka_code(code: i8) -> Option<Self> {
                match code {
                    $($code => Some($ty::$variant),)*
                    _ => None,
                }
            }

            /// The lower-case, dash-separated name.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)*
                }
            }

            /// The value of exactly [`name`](Self::name)'s text (as stored).
            #[allow(dead_code, reason = "not every type is stored")]
            pub(crate) fn from_exact_name(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == s)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = Error;

            /// Parses a name, ignoring ASCII case, `-` and `_`.
            fn from_str(s: &str) -> Result<Self> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| same_name(s, v.name()))
                    .ok_or_else(|| Error::InvalidArgument {
                        field: $field,
                        reason: format!(
                            "{s:?} is not one of {}",
                            Self::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
                        ),
                    })
            }
        }
    };
}

kafka_enum!(
    /// The type of resource a binding applies to.
    ResourceType, "resource type" {
        Topic = 2, "topic";
        Group = 3, "group";
        /// The cluster, named [`CLUSTER_RESOURCE_NAME`].
        Cluster = 4, "cluster";
        TransactionalId = 5, "transactional-id";
    }
);

kafka_enum!(
    /// How a binding's resource name is matched.
    PatternType, "pattern type" {
        /// The name itself, or every resource when it is `*`.
        Literal = 3, "literal";
        /// Every resource whose name starts with it.
        Prefixed = 4, "prefixed";
    }
);

kafka_enum!(
    /// An operation a binding allows or denies. Kafka's `ClusterAction`
    /// (9, for brokers among themselves) is not supported.
    AclOperation, "acl operation" {
        /// Every operation.
        All = 2, "all";
        Read = 3, "read";
        Write = 4, "write";
        Create = 5, "create";
        Delete = 6, "delete";
        Alter = 7, "alter";
        Describe = 8, "describe";
        DescribeConfigs = 10, "describe-configs";
        AlterConfigs = 11, "alter-configs";
        IdempotentWrite = 12, "idempotent-write";
    }
);

kafka_enum!(
    /// Whether a binding allows or denies.
    AclPermission, "acl permission" {
        Deny = 2, "deny";
        Allow = 3, "allow";
    }
);

kafka_enum!(
    /// How a filter matches a binding's resource name (Kafka's filter
    /// pattern types).
    PatternFilter, "pattern filter" {
        /// Bindings of any pattern type whose name equals the filter's.
        Any = 1, "any";
        /// Bindings that apply to the filter's (literal) name: literal
        /// bindings of that name or `*`, and prefixed bindings whose
        /// prefix starts it.
        Match = 2, "match";
        /// Literal bindings whose name equals the filter's.
        Literal = 3, "literal";
        /// Prefixed bindings whose name equals the filter's.
        Prefixed = 4, "prefixed";
    }
);

impl From<PatternType> for PatternFilter {
    fn from(pattern: PatternType) -> Self {
        match pattern {
            PatternType::Literal => PatternFilter::Literal,
            PatternType::Prefixed => PatternFilter::Prefixed,
        }
    }
}

/// One access control entry on one resource pattern.
///
/// Ordered (derived) by resource type, resource name, pattern type,
/// principal, host, operation and permission: the order
/// [`AclStore::acls`](crate::AclStore::acls) lists them in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    /// A resource name, a prefix, or `*` (literal only): every resource.
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `User:<name>`, or `User:*` for every user.
    pub principal: String,
    /// A client IP address in canonical form, or `*` for every host.
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

/// Checks one text field's length and bytes.
fn check_text(field: &'static str, value: &str) -> Result<()> {
    let invalid = |reason: String| Err(Error::InvalidArgument { field, reason });
    if value.is_empty() {
        return invalid("must not be empty".into());
    }
    if value.len() > MAX_ACL_FIELD_BYTES {
        return invalid(format!(
            "is {} bytes, over the {MAX_ACL_FIELD_BYTES} allowed",
            value.len()
        ));
    }
    if value.contains('\0') {
        return invalid(format!("{value:?} contains a NUL byte"));
    }
    Ok(())
}

impl AclBinding {
    /// Checks that the binding can be stored and means what it says: the
    /// principal is `User:<name>` (a non-empty name, or `*`), the host `*`
    /// or an IP address in canonical form, the resource name non-empty,
    /// `*` only as a literal, and `kafka-cluster` (literal) for the
    /// cluster; no field over [`MAX_ACL_FIELD_BYTES`] or with a NUL byte.
    pub fn validate(&self) -> Result<()> {
        check_text("acl principal", &self.principal)?;
        match self.principal.strip_prefix("User:") {
            Some(name) if !name.is_empty() => {}
            _ => {
                return Err(Error::InvalidArgument {
                    field: "acl principal",
                    reason: format!("{:?} is not \"User:<name>\" or \"User:*\"", self.principal),
                });
            }
        }
        check_text("acl host", &self.host)?;
        if self.host != WILDCARD_HOST {
            match self.host.parse::<std::net::IpAddr>() {
                Ok(ip) if ip.to_string() == self.host => {}
                Ok(ip) => {
                    return Err(Error::InvalidArgument {
                        field: "acl host",
                        reason: format!("{:?} is not in canonical form ({ip})", self.host),
                    });
                }
                Err(_) => {
                    return Err(Error::InvalidArgument {
                        field: "acl host",
                        reason: format!("{:?} is not \"*\" or an IP address", self.host),
                    });
                }
            }
        }
        check_text("acl resource name", &self.resource_name)?;
        if self.resource_name == WILDCARD_RESOURCE && self.pattern_type != PatternType::Literal {
            return Err(Error::InvalidArgument {
                field: "acl resource name",
                reason: "\"*\" is a literal name (every resource); it cannot be a prefix".into(),
            });
        }
        if self.resource_type == ResourceType::Cluster
            && (self.resource_name != CLUSTER_RESOURCE_NAME
                || self.pattern_type != PatternType::Literal)
        {
            return Err(Error::InvalidArgument {
                field: "acl resource name",
                reason: format!(
                    "the cluster resource is the literal {CLUSTER_RESOURCE_NAME:?}, not {} {:?}",
                    self.pattern_type, self.resource_name
                ),
            });
        }
        Ok(())
    }
}

/// Selects bindings, as Kafka's `AclBindingFilter`: every field that is
/// `Some` must equal the binding's (`None` is Kafka's `ANY` or null), and
/// the resource name is matched as [`PatternFilter`] says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclFilter {
    pub principal: Option<String>,
    pub host: Option<String>,
    pub resource_type: Option<ResourceType>,
    /// `None` matches every name, whatever `pattern`.
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub operation: Option<AclOperation>,
    pub permission: Option<AclPermission>,
}

impl AclFilter {
    /// The filter that matches every binding.
    pub fn any() -> Self {
        AclFilter {
            principal: None,
            host: None,
            resource_type: None,
            resource_name: None,
            pattern: PatternFilter::Any,
            operation: None,
            permission: None,
        }
    }

    /// The filter that matches exactly `acl`.
    pub fn exact(acl: &AclBinding) -> Self {
        AclFilter {
            principal: Some(acl.principal.clone()),
            host: Some(acl.host.clone()),
            resource_type: Some(acl.resource_type),
            resource_name: Some(acl.resource_name.clone()),
            pattern: acl.pattern_type.into(),
            operation: Some(acl.operation),
            permission: Some(acl.permission),
        }
    }

    /// Whether `acl` is selected (Kafka's `ResourcePatternFilter` and
    /// `AccessControlEntryFilter` `matches`).
    pub fn matches(&self, acl: &AclBinding) -> bool {
        fn eq<T: PartialEq>(filter: &Option<T>, value: &T) -> bool {
            filter.as_ref().is_none_or(|f| f == value)
        }
        eq(&self.resource_type, &acl.resource_type)
            && self.pattern_matches(acl)
            && self.principal.as_deref().is_none_or(|p| p == acl.principal)
            && self.host.as_deref().is_none_or(|h| h == acl.host)
            && eq(&self.operation, &acl.operation)
            && eq(&self.permission, &acl.permission)
    }

    fn pattern_matches(&self, acl: &AclBinding) -> bool {
        let exact = match self.pattern {
            PatternFilter::Any => true,
            PatternFilter::Match => false,
            PatternFilter::Literal => acl.pattern_type == PatternType::Literal,
            PatternFilter::Prefixed => acl.pattern_type == PatternType::Prefixed,
        };
        if !exact && self.pattern != PatternFilter::Match {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if exact {
            return *name == acl.resource_name;
        }
        match acl.pattern_type {
            PatternType::Literal => {
                *name == acl.resource_name || acl.resource_name == WILDCARD_RESOURCE
            }
            PatternType::Prefixed => name.starts_with(acl.resource_name.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn binding(rt: ResourceType, name: &str, pt: PatternType) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        }
    }

    fn name_filter(name: Option<&str>, pattern: PatternFilter) -> AclFilter {
        AclFilter {
            resource_name: name.map(Into::into),
            pattern,
            ..AclFilter::any()
        }
    }

    #[test]
    fn codes_and_names_round_trip() {
        for v in ResourceType::ALL {
            assert_eq!(ResourceType::from_kafka_code(v.kafka_code()), Some(*v));
            assert_eq!(v.name().parse::<ResourceType>().unwrap(), *v);
        }
        for v in AclOperation::ALL {
            assert_eq!(AclOperation::from_kafka_code(v.kafka_code()), Some(*v));
            assert_eq!(v.to_string().parse::<AclOperation>().unwrap(), *v);
        }
        for v in PatternType::ALL {
            assert_eq!(PatternType::from_kafka_code(v.kafka_code()), Some(*v));
        }
        for v in AclPermission::ALL {
            assert_eq!(AclPermission::from_kafka_code(v.kafka_code()), Some(*v));
        }
        for v in PatternFilter::ALL {
            assert_eq!(PatternFilter::from_kafka_code(v.kafka_code()), Some(*v));
        }
        assert_eq!(AclOperation::from_kafka_code(9), None); // ClusterAction
        assert_eq!(AclOperation::from_kafka_code(1), None); // Any
        assert_eq!(ResourceType::TransactionalId.kafka_code(), 5);
        assert_eq!(AclOperation::IdempotentWrite.kafka_code(), 12);
    }

    #[test]
    fn names_parse_leniently_and_reject_others() {
        assert_eq!(
            "DescribeConfigs".parse::<AclOperation>().unwrap(),
            AclOperation::DescribeConfigs
        );
        assert_eq!(
            "DESCRIBE_CONFIGS".parse::<AclOperation>().unwrap(),
            AclOperation::DescribeConfigs
        );
        assert_eq!(
            "transactional-id".parse::<ResourceType>().unwrap(),
            ResourceType::TransactionalId
        );
        let err = "cluster-action".parse::<AclOperation>().unwrap_err();
        assert!(err.to_string().contains("acl operation"), "{err}");
        assert!("".parse::<AclPermission>().is_err());
        assert!("describeconfigsx".parse::<AclOperation>().is_err());
        assert_eq!(AclOperation::from_exact_name("DescribeConfigs"), None);
    }

    #[test]
    fn validation_names_the_field() {
        let ok = binding(ResourceType::Topic, "orders", PatternType::Literal);
        ok.validate().unwrap();
        let cases: Vec<(AclBinding, &str)> = vec![
            (
                AclBinding {
                    principal: "alice".into(),
                    ..ok.clone()
                },
                "acl principal",
            ),
            (
                AclBinding {
                    principal: "User:".into(),
                    ..ok.clone()
                },
                "acl principal",
            ),
            (
                AclBinding {
                    principal: format!("User:{}", "a".repeat(MAX_ACL_FIELD_BYTES)),
                    ..ok.clone()
                },
                "acl principal",
            ),
            (
                AclBinding {
                    principal: "User:a\0b".into(),
                    ..ok.clone()
                },
                "acl principal",
            ),
            (
                AclBinding {
                    host: "example.com".into(),
                    ..ok.clone()
                },
                "acl host",
            ),
            (
                AclBinding {
                    host: "::0001".into(),
                    ..ok.clone()
                },
                "acl host",
            ),
            (
                AclBinding {
                    resource_name: "".into(),
                    ..ok.clone()
                },
                "acl resource name",
            ),
            (
                binding(ResourceType::Topic, "*", PatternType::Prefixed),
                "acl resource name",
            ),
            (
                binding(ResourceType::Cluster, "other", PatternType::Literal),
                "acl resource name",
            ),
            (
                binding(
                    ResourceType::Cluster,
                    "kafka-cluster",
                    PatternType::Prefixed,
                ),
                "acl resource name",
            ),
        ];
        for (acl, field) in cases {
            match acl.validate() {
                Err(Error::InvalidArgument { field: f, .. }) => assert_eq!(f, field, "{acl:?}"),
                other => panic!("{acl:?}: {other:?}"),
            }
        }
        for good in [
            AclBinding {
                principal: "User:*".into(),
                host: "10.0.0.1".into(),
                ..ok.clone()
            },
            AclBinding {
                host: "::1".into(),
                ..ok.clone()
            },
            binding(ResourceType::Topic, "*", PatternType::Literal),
            binding(ResourceType::Group, "app-", PatternType::Prefixed),
            binding(ResourceType::Cluster, "kafka-cluster", PatternType::Literal),
        ] {
            good.validate().unwrap();
        }
    }

    #[test]
    fn pattern_filters_follow_kafka() {
        use PatternFilter as F;
        use PatternType::{Literal as L, Prefixed as P};
        let t = ResourceType::Topic;
        let cases = [
            // (binding name, binding pattern, filter name, filter, matches)
            ("orders", L, Some("orders"), F::Literal, true),
            ("orders", P, Some("orders"), F::Literal, false),
            ("orders", P, Some("orders"), F::Prefixed, true),
            ("orders", L, Some("orders"), F::Any, true),
            ("orders", P, Some("orders"), F::Any, true),
            ("ord", P, Some("orders"), F::Any, false),
            ("*", L, Some("orders"), F::Any, false),
            ("orders", L, Some("orders"), F::Match, true),
            ("*", L, Some("orders"), F::Match, true),
            ("ord", P, Some("orders"), F::Match, true),
            ("orders", P, Some("orders"), F::Match, true),
            ("ordersx", P, Some("orders"), F::Match, false),
            ("other", L, Some("orders"), F::Match, false),
            ("*", L, Some("*"), F::Literal, true),
            ("orders", L, None, F::Match, true),
            ("orders", P, None, F::Literal, false),
            ("orders", P, None, F::Any, true),
        ];
        for (name, pt, filter_name, pattern, want) in cases {
            let acl = binding(t, name, pt);
            assert_eq!(
                name_filter(filter_name, pattern).matches(&acl),
                want,
                "{name:?} {pt} by {filter_name:?} {pattern}"
            );
        }
    }

    #[test]
    fn entry_fields_must_equal_when_given() {
        let acl = binding(ResourceType::Group, "g", PatternType::Literal);
        let mut f = AclFilter::any();
        assert!(f.matches(&acl));
        f.resource_type = Some(ResourceType::Topic);
        assert!(!f.matches(&acl));
        f.resource_type = Some(ResourceType::Group);
        f.principal = Some("User:*".into()); // not a wildcard in a filter
        assert!(!f.matches(&acl));
        f.principal = Some("User:alice".into());
        f.host = Some("10.0.0.1".into());
        assert!(!f.matches(&acl));
        f.host = Some("*".into());
        f.operation = Some(AclOperation::All); // not a wildcard in a filter
        assert!(!f.matches(&acl));
        f.operation = Some(AclOperation::Read);
        f.permission = Some(AclPermission::Deny);
        assert!(!f.matches(&acl));
        f.permission = Some(AclPermission::Allow);
        assert!(f.matches(&acl));
    }

    fn arb_binding() -> impl Strategy<Value = AclBinding> {
        (
            proptest::sample::select(ResourceType::ALL),
            "[a-c*]{0,4}",
            proptest::sample::select(PatternType::ALL),
            prop_oneof!["User:[a-b*]{0,2}", ".{0,6}"],
            prop_oneof![Just("*".to_string()), "[0-9.:a-f]{0,8}"],
            proptest::sample::select(AclOperation::ALL),
            proptest::sample::select(AclPermission::ALL),
        )
            .prop_map(|(rt, name, pt, principal, host, op, perm)| AclBinding {
                resource_type: rt,
                resource_name: name,
                pattern_type: pt,
                principal,
                host,
                operation: op,
                permission: perm,
            })
    }

    proptest! {
        #[test]
        fn exact_and_any_filters_match(acl in arb_binding()) {
            prop_assert!(AclFilter::any().matches(&acl));
            prop_assert!(AclFilter::exact(&acl).matches(&acl));
        }

        #[test]
        fn exact_filters_match_only_their_binding(a in arb_binding(), b in arb_binding()) {
            prop_assert_eq!(AclFilter::exact(&a).matches(&b), a == b);
        }

        #[test]
        fn match_is_what_applies_to_a_literal_name(acl in arb_binding(), name in "[a-c]{1,4}") {
            let applies = match acl.pattern_type {
                PatternType::Literal => acl.resource_name == name || acl.resource_name == "*",
                PatternType::Prefixed => name.starts_with(&acl.resource_name),
            };
            prop_assert_eq!(name_filter(Some(&name), PatternFilter::Match).matches(&acl), applies);
            // A MATCH filter selects at least what ANY selects for the name.
            if name_filter(Some(&name), PatternFilter::Any).matches(&acl) {
                prop_assert!(applies);
            }
        }

        #[test]
        fn validate_never_panics_and_accepts_only_sane_bindings(acl in arb_binding()) {
            if acl.validate().is_ok() {
                prop_assert!(acl.principal.starts_with("User:") && acl.principal.len() > 5);
                prop_assert!(!acl.resource_name.is_empty());
                prop_assert!(acl.host == "*" || acl.host.parse::<std::net::IpAddr>().is_ok());
                prop_assert!(acl.resource_name != "*" || acl.pattern_type == PatternType::Literal);
                prop_assert!(acl.resource_type != ResourceType::Cluster
                    || acl.resource_name == CLUSTER_RESOURCE_NAME);
            }
        }

        #[test]
        fn parsing_arbitrary_names_never_panics(s in ".{0,20}") {
            let _ = s.parse::<AclOperation>();
            let _ = s.parse::<ResourceType>();
            let _ = s.parse::<PatternFilter>();
        }
    }
}
