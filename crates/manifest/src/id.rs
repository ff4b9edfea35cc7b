//! Pod and launchable ids.
//!
//! Both follow the workspace's one id grammar, [`drover_ids`]'s: that of a
//! DNS label (RFC 1123), 1 to 63 characters, lowercase ASCII letters, digits
//! and `-`, starting and ending with a letter or digit. [`PodId`] is
//! `drover_ids::PodId` itself, so manifests, health, keys and controllers
//! share one type.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

pub use drover_ids::{MAX_ID_LEN, PodId};
pub(crate) use drover_ids::{check_id, truncate};

use crate::ManifestError;
use crate::error::{FieldError, FieldErrorKind};

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

/// A pod id that breaks the grammar, as a manifest error at field `id`.
impl From<drover_ids::IdError> for ManifestError {
    fn from(err: drover_ids::IdError) -> Self {
        let path = if err.field == "pod" { "id" } else { err.field };
        id_error(path, err.reason)
    }
}

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
        // PodId is drover_ids'; its error converts into the manifest's.
        let err = ManifestError::from("Bad_Id".parse::<PodId>().unwrap_err());
        let [field] = err.field_errors() else {
            panic!("{err}")
        };
        assert_eq!(field.kind, FieldErrorKind::InvalidId);
        assert_eq!(field.path, "id");
        assert_eq!("web".parse::<PodId>().unwrap().as_str(), "web");
    }
}
