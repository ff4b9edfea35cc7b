//! Pod and launchable ids.
//!
//! Both follow one grammar, that of a DNS label (RFC 1123): 1 to 63
//! characters, lowercase ASCII letters, digits and `-`, starting and ending
//! with a letter or digit. Ids appear in store keys (`intent/<node>/<pod>`),
//! file names and environment values, so the grammar keeps them safe in all of
//! those without escaping.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use crate::ManifestError;
use crate::error::{FieldError, FieldErrorKind};

/// The longest id accepted, as for a DNS label.
pub const MAX_ID_LEN: usize = 63;

/// Checks `s` against the id grammar; the error says what is wrong.
pub(crate) fn check_id(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_ID_LEN {
        return Err(format!(
            "{:?} is {} characters, over the {MAX_ID_LEN}-character limit",
            truncate(s),
            s.len()
        ));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{s:?} contains {bad:?}; ids use lowercase letters, digits and '-' (a DNS label)"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(format!(
            "{s:?} must start and end with a lowercase letter or digit"
        ));
    }
    Ok(())
}

pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn id_error(path: &str, message: String) -> ManifestError {
    ManifestError::Invalid(vec![FieldError {
        path: path.into(),
        kind: FieldErrorKind::InvalidId,
        message,
        location: None,
    }])
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $path:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `id` against the id grammar.
            pub fn new(id: impl Into<String>) -> Result<Self, ManifestError> {
                let id = id.into();
                check_id(&id).map_err(|message| id_error($path, message))?;
                Ok(Self(id))
            }

            /// Callers must have run [`check_id`].
            pub(crate) fn new_unchecked(id: String) -> Self {
                Self(id)
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ManifestError;
            fn from_str(s: &str) -> Result<Self, ManifestError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// A pod id: the manifest's `id`, and the `<pod>` in `intent/<node>/<pod>`.
    PodId,
    "id"
);
id_type!(
    /// The id of one launchable within a pod (a key of `launchables`).
    LaunchableId,
    "launchables"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_accepts_dns_labels() {
        for ok in ["a", "web", "web-1", "0", "9lives", &"a".repeat(63)] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn grammar_rejects_everything_else() {
        for bad in [
            "",
            "-web",
            "web-",
            "Web",
            "web_1",
            "web.1",
            "wéb",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pod_id_from_str_reports_invalid_id() {
        let err = "Bad_Id".parse::<PodId>().unwrap_err();
        let [field] = err.field_errors() else {
            panic!("{err}")
        };
        assert_eq!(field.kind, FieldErrorKind::InvalidId);
        assert_eq!(field.path, "id");
        assert_eq!("web".parse::<PodId>().unwrap().as_str(), "web");
    }
}
