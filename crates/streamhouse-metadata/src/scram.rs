//! SCRAM users: a user's stored credential for one mechanism, and the
//! rules for user names.

use streamhouse_core::scram::Credential;

use crate::error::{Error, Result};

/// The most bytes a SCRAM user name may have.
pub const MAX_USER_NAME_BYTES: usize = 255;

/// One user's credential for one mechanism (the mechanism is the
/// credential's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCredential {
    pub user: String,
    pub credential: Credential,
}

/// Checks a SCRAM user name: 1 to [`MAX_USER_NAME_BYTES`] bytes, no
/// control characters. `,` and `=` are allowed (the SCRAM exchange escapes
/// them).
pub fn validate_user_name(user: &str) -> Result<()> {
    let invalid = |reason: String| {
        Err(Error::InvalidArgument {
            field: "scram user name",
            reason,
        })
    };
    if user.is_empty() {
        return invalid("must not be empty".into());
    }
    if user.len() > MAX_USER_NAME_BYTES {
        return invalid(format!(
            "is {} bytes, over the {MAX_USER_NAME_BYTES} allowed",
            user.len()
        ));
    }
    if user.chars().any(char::is_control) {
        return invalid(format!("{user:?} contains a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn user_names() {
        for good in ["alice", "a,b=c", "Zoë", &"x".repeat(MAX_USER_NAME_BYTES)] {
            validate_user_name(good).unwrap();
        }
        for bad in [
            "",
            "a\nb",
            "a\0",
            "\u{7f}",
            &"x".repeat(MAX_USER_NAME_BYTES + 1),
        ] {
            let err = validate_user_name(bad).unwrap_err();
            assert!(err.to_string().contains("scram user name"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn accepted_names_are_bounded_and_printable(user in ".{0,300}") {
            if validate_user_name(&user).is_ok() {
                prop_assert!(!user.is_empty() && user.len() <= MAX_USER_NAME_BYTES);
                prop_assert!(!user.chars().any(char::is_control));
            }
        }
    }
}
