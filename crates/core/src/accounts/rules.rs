//! Input rules for sign-up and sign-in. Each violation is a specific, user-facing error.

use std::collections::HashSet;
use std::sync::LazyLock;

pub const PASSWORD_MIN_CHARS: usize = 12;
pub const PASSWORD_MAX_CHARS: usize = 128;
pub const EMAIL_MAX_CHARS: usize = 254;
pub const DISPLAY_NAME_MAX_CHARS: usize = 100;

/// A rule violation, tied to the form field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("Enter your display name.")]
    DisplayNameMissing,
    #[error("Display name must be at most {DISPLAY_NAME_MAX_CHARS} characters.")]
    DisplayNameTooLong,
    #[error("Display name cannot contain control characters.")]
    DisplayNameInvalid,
    #[error("Enter your email address.")]
    EmailMissing,
    #[error("Email address must be at most {EMAIL_MAX_CHARS} characters.")]
    EmailTooLong,
    #[error("Enter a valid email address, like name@example.com.")]
    EmailInvalid,
    #[error("Enter your password.")]
    PasswordMissing,
    #[error("Password must be at least {PASSWORD_MIN_CHARS} characters.")]
    PasswordTooShort,
    #[error("Password must be at most {PASSWORD_MAX_CHARS} characters.")]
    PasswordTooLong,
    #[error("This password is too common. Choose one that is harder to guess.")]
    PasswordCommon,
}

impl InputError {
    /// The form field this error belongs next to.
    pub fn field(&self) -> &'static str {
        match self {
            Self::DisplayNameMissing | Self::DisplayNameTooLong | Self::DisplayNameInvalid => "display_name",
            Self::EmailMissing | Self::EmailTooLong | Self::EmailInvalid => "email",
            Self::PasswordMissing | Self::PasswordTooShort | Self::PasswordTooLong | Self::PasswordCommon => "password",
        }
    }
}

/// Trims and validates a display name; returns the trimmed name.
pub fn validate_display_name(raw: &str) -> Result<String, InputError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(InputError::DisplayNameMissing);
    }
    if name.chars().count() > DISPLAY_NAME_MAX_CHARS {
        return Err(InputError::DisplayNameTooLong);
    }
    if crate::text::disallowed_char(name, false).is_some() {
        return Err(InputError::DisplayNameInvalid);
    }
    Ok(crate::text::nfc(name))
}

/// Trims and validates an email address; returns the trimmed address as typed.
///
/// Deliberately simple (one `@`, a non-empty local part, a dotted domain, no spaces or
/// control characters): the only real proof of an address is a mail that reaches it.
pub fn validate_email(raw: &str) -> Result<String, InputError> {
    let email = raw.trim();
    if email.is_empty() {
        return Err(InputError::EmailMissing);
    }
    if email.chars().count() > EMAIL_MAX_CHARS {
        return Err(InputError::EmailTooLong);
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(InputError::EmailInvalid);
    };
    if crate::text::disallowed_char(email, false).is_some() {
        return Err(InputError::EmailInvalid);
    }
    let bad_char = |c: char| c.is_whitespace() || c == '@' || c == '<' || c == '>';
    let domain_ok = !domain.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.chars().any(|c| bad_char(c) || c == ',' || c == ';');
    if local.is_empty() || local.chars().any(bad_char) || !domain_ok {
        return Err(InputError::EmailInvalid);
    }
    Ok(crate::text::nfc(email))
}

/// The form compared for uniqueness and sign-in: trimmed, composed (NFC) and lower-cased.
pub fn normalize_email(email: &str) -> String {
    crate::text::nfc(email.trim()).to_lowercase()
}

/// Length rules only, counted in Unicode scalar values; no composition rules and no
/// truncation (the whole password is hashed).
pub fn validate_password(password: &str) -> Result<(), InputError> {
    if password.is_empty() {
        return Err(InputError::PasswordMissing);
    }
    let chars = password.chars().count();
    if chars < PASSWORD_MIN_CHARS {
        return Err(InputError::PasswordTooShort);
    }
    if chars > PASSWORD_MAX_CHARS {
        return Err(InputError::PasswordTooLong);
    }
    if is_common_password(password) {
        return Err(InputError::PasswordCommon);
    }
    Ok(())
}

static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../data/common-passwords.txt").lines().map(str::trim).filter(|l| !l.is_empty()).collect()
});

/// True when the password (case-insensitively) is on the shipped list of the 30,000
/// most common passwords.
pub fn is_common_password(password: &str) -> bool {
    COMMON_PASSWORDS.contains(password.to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_length_counts_characters_not_bytes() {
        // 12 multi-byte characters are enough; 11 are not.
        assert_eq!(validate_password(&"é".repeat(12)), Ok(()));
        assert_eq!(validate_password(&"é".repeat(11)), Err(InputError::PasswordTooShort));
        assert_eq!(validate_password(&"🔑".repeat(128)), Ok(()));
        assert_eq!(validate_password(&"🔑".repeat(129)), Err(InputError::PasswordTooLong));
        assert_eq!(validate_password(""), Err(InputError::PasswordMissing));
    }

    #[test]
    fn no_composition_rules() {
        assert_eq!(validate_password("correct horse battery staple"), Ok(()));
        assert_eq!(validate_password("aaaaaaaaaaaaaaab"), Ok(()));
    }

    #[test]
    fn common_passwords_are_rejected_case_insensitively() {
        assert!(COMMON_PASSWORDS.len() >= 10_000);
        assert_eq!(validate_password("1qaz2wsx3edc"), Err(InputError::PasswordCommon));
        assert_eq!(validate_password("QWERTY123456"), Err(InputError::PasswordCommon));
        assert!(is_common_password("password"));
        assert!(!is_common_password("violet-anchor-tundra-42"));
    }

    #[test]
    fn emails_are_trimmed_and_validated() {
        assert_eq!(validate_email("  Ann@Example.COM "), Ok("Ann@Example.COM".into()));
        assert_eq!(normalize_email("  Ann@Example.COM "), "ann@example.com");
        for bad in [
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a nn@example.com",
            "ann@exa mple.com",
            "ann@.com",
            "ann@example..com",
            "a@b@c.com",
        ] {
            assert_eq!(validate_email(bad), Err(InputError::EmailInvalid), "{bad}");
        }
        assert_eq!(validate_email("   "), Err(InputError::EmailMissing));
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(validate_email(&long), Err(InputError::EmailTooLong));
    }

    #[test]
    fn display_names() {
        assert_eq!(validate_display_name("  Ada Lovelace "), Ok("Ada Lovelace".into()));
        assert_eq!(validate_display_name("  "), Err(InputError::DisplayNameMissing));
        assert_eq!(validate_display_name(&"x".repeat(101)), Err(InputError::DisplayNameTooLong));
        assert_eq!(validate_display_name("a\u{0}b"), Err(InputError::DisplayNameInvalid));
    }
}
