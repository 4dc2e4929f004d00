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
}
