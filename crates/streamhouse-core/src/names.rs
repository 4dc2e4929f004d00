//! Names and limits shared by every StreamHouse component.

use crate::error::{Error, Result};

/// Longest topic name accepted (Kafka's limit).
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// Checks a topic name against Kafka's rules: 1 to 249 characters from
/// `[a-zA-Z0-9._-]`, and neither `.` nor `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_TOPIC_NAME_LEN {
        Some("it is longer than 249 characters")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are reserved")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidTopicName {
            name: name.chars().take(300).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a partition count: 1 to [`MAX_PARTITIONS`].
pub fn validate_partition_count(count: u32) -> Result<()> {
    if count == 0 || count > MAX_PARTITIONS {
        return Err(Error::InvalidField {
            field: "partition_count",
            reason: format!("{count} is not between 1 and {MAX_PARTITIONS}"),
        });
    }
    Ok(())
}

/// `url` with the password of its user info (`scheme://user:password@…`)
/// replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["orders", "a", "a.b_c-D9", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "has space",
            "ümlaut",
            "a/b",
            &"x".repeat(250),
        ] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partition_counts() {
        validate_partition_count(1).unwrap();
        validate_partition_count(MAX_PARTITIONS).unwrap();
        assert!(validate_partition_count(0).is_err());
        assert!(validate_partition_count(MAX_PARTITIONS + 1).is_err());
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cr:et@db:5432/x?sslmode=verify-full"),
            "postgres://app:***@db:5432/x?sslmode=verify-full"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite://data/m.db"), "sqlite://data/m.db");
        assert_eq!(redact_url("s3://bucket/a@b:c"), "s3://bucket/a@b:c");
        assert_eq!(redact_url("no scheme"), "no scheme");
    }
}
