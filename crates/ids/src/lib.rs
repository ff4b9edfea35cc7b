//! Pod and node ids: one grammar and one length limit for the whole
//! workspace.
//!
//! An id is an RFC 1123 DNS label: 1 to [`MAX_ID_LEN`] (63) characters,
//! lowercase ASCII letters, digits and `-`, starting and ending with a letter
//! or digit. Ids appear in store keys (`intent/<node>/<pod>`,
//! `health/<pod>/<node>`), file names and environment values, so the grammar
//! keeps them safe in all of those without escaping.
//!
//! [`PodId`] and [`NodeId`] are validated newtypes: holding one proves the
//! text follows the grammar. The crate is pure (no tokio, no IO, no store),
//! so the manifest and health cores use it as well as controllers.
//!
//! ```
//! use drover_ids::{NodeId, PodId};
//! let pod: PodId = "web-1".parse()?;
//! let node = NodeId::new("node-7")?;
//! assert_eq!((pod.as_str(), node.as_str()), ("web-1", "node-7"));
//! let err = "Web_1".parse::<PodId>().unwrap_err();
//! assert_eq!(err.field, "pod");
//! assert!(err.to_string().contains("'W'"), "{err}");
//! # Ok::<(), drover_ids::IdError>(())
//! ```

/// The longest id accepted, as for a DNS label.
pub const MAX_ID_LEN: usize = 63;

/// An id that does not follow the grammar.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} id: {reason}")]
pub struct IdError {
    /// Which id: `"pod"` or `"node"`.
    pub field: &'static str,
    /// What is wrong, quoting the input.
    pub reason: String,
}

/// Checks `s` against the id grammar; the error says what is wrong and
/// quotes the input (cut to 80 characters).
pub fn check_id(s: &str) -> Result<(), String> {
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
            "{:?} contains {bad:?}; ids use lowercase letters, digits and '-' (a DNS label)",
            truncate(s)
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(format!(
            "{s:?} must start and end with a lowercase letter or digit"
        ));
    }
    Ok(())
}

/// At most 80 characters of `s`, for error messages.
pub fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Defines a validated id newtype that follows the id grammar
/// ([`check_id`]), with the same API as [`PodId`] and [`NodeId`]: `new`,
/// `as_str`, `into_string`, `FromStr`, `TryFrom<String>`, `Display`,
/// comparisons with `str`, and serde as a plain string that is validated on
/// the way in. `field` names the id in its [`IdError`].
///
/// Crates whose ids follow the same grammar (a manifest's launchable ids)
/// use this rather than a copy of it.
///
/// ```
/// drover_ids::id_type!(
///     /// A launchable's id.
///     pub LaunchableId,
///     "launchable"
/// );
/// let id: LaunchableId = "server".parse()?;
/// assert_eq!(id, "server");
/// assert_eq!(LaunchableId::new("Server").unwrap_err().field, "launchable");
/// # Ok::<(), drover_ids::IdError>(())
/// ```
#[macro_export]
macro_rules! id_type {
    ($(#[$doc:meta])* $vis:vis $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis struct $name(::std::string::String);

        impl $name {
            /// Validates `id` against the id grammar.
            pub fn new(
                id: impl ::std::convert::Into<::std::string::String>,
            ) -> ::std::result::Result<Self, $crate::IdError> {
                let id = id.into();
                $crate::check_id(&id).map_err(|reason| $crate::IdError {
                    field: $field,
                    reason,
                })?;
                ::std::result::Result::Ok(Self(id))
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> ::std::string::String {
                self.0
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::IdError;
            fn from_str(s: &str) -> ::std::result::Result<Self, $crate::IdError> {
                Self::new(s)
            }
        }

        impl ::std::convert::TryFrom<::std::string::String> for $name {
            type Error = $crate::IdError;
            fn try_from(
                s: ::std::string::String,
            ) -> ::std::result::Result<Self, $crate::IdError> {
                Self::new(s)
            }
        }

        impl ::std::convert::From<$name> for ::std::string::String {
            fn from(id: $name) -> ::std::string::String {
                id.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::convert::AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl ::std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl ::std::cmp::PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl ::std::cmp::PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl $crate::__private::serde::Serialize for $name {
            fn serialize<S: $crate::__private::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> $crate::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__private::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                let id = <::std::string::String as $crate::__private::serde::Deserialize>::deserialize(
                    deserializer,
                )?;
                Self::new(id).map_err(<D::Error as $crate::__private::serde::de::Error>::custom)
            }
        }
    };
}

/// What [`id_type!`] expands to needs; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use serde;
}

id_type!(
    /// A pod id: a manifest's `id`, the `<pod>` in `intent/<node>/<pod>`,
    /// `reality/<node>/<pod>` and `health/<pod>/<node>`.
    pub PodId,
    "pod"
);
id_type!(
    /// A node id: the `<node>` in `nodes/<node>`, `intent/<node>/<pod>` and
    /// `health/<pod>/<node>`.
    pub NodeId,
    "node"
);
id_type!(
    /// A replication controller's id: the `<id>` in `rcs/<id>`, and the
    /// value of the `replication_controller_id` label on its pods.
    pub RcId,
    "replication controller"
);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The grammar as a regex, written independently of `check_id`.
    const GRAMMAR: &str = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "web", "web-1", "0", "9lives", "a--b", &"a".repeat(63)] {
            assert!(PodId::new(ok).is_ok() && NodeId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else_naming_the_id() {
        for bad in [
            "",
            "-web",
            "web-",
            "Web",
            "web_1",
            "web.1",
            "wéb",
            "a b",
            "a/b",
            "..",
            &"a".repeat(64),
        ] {
            let err = NodeId::new(bad).unwrap_err();
            assert_eq!(err.field, "node", "{bad}");
            assert!(err.to_string().starts_with("invalid node id: "), "{err}");
            assert_eq!(PodId::new(bad).unwrap_err().field, "pod");
        }
    }

    #[test]
    fn serde_validates() {
        let id: PodId = serde_json::from_str("\"web\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"web\"");
        let err = serde_json::from_str::<NodeId>("\"No/de\"").unwrap_err();
        assert!(err.to_string().contains("invalid node id"), "{err}");
    }

    proptest! {
        #[test]
        fn every_label_is_accepted_and_round_trips(id in GRAMMAR) {
            let pod = PodId::new(id.clone()).unwrap();
            prop_assert_eq!(pod.to_string(), id.clone());
            let node: NodeId = id.parse().unwrap();
            prop_assert_eq!(node.as_str(), id.as_str());
        }

        /// Any text is accepted exactly when it is a DNS label of at most 63
        /// characters; a rejection quotes (a prefix of) the input.
        #[test]
        fn accepted_iff_in_the_grammar(text in "\\PC{0,70}|[a-z0-9-]{0,70}") {
            let in_grammar = !text.is_empty()
                && text.len() <= MAX_ID_LEN
                && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !text.starts_with('-')
                && !text.ends_with('-');
            match PodId::new(text.as_str()) {
                Ok(_) => prop_assert!(in_grammar, "{:?} accepted", text),
                Err(e) => {
                    prop_assert!(!in_grammar, "{:?} rejected: {}", text, e);
                    if !text.is_empty() {
                        let quoted = format!("{:?}", truncate(&text));
                        let head: String = quoted.chars().take(10).collect();
                        prop_assert!(e.reason.contains(&head), "{} lacks {}", e.reason, head);
                    }
                }
            }
        }
    }
}
