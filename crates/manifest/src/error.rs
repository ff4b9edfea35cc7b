//! The crate's one error type and the per-field problems it reports.

use std::fmt;

/// Everything that can go wrong turning bytes into a [`Manifest`](crate::Manifest),
/// parsing a [`ManifestSha`](crate::ManifestSha) or a
/// [`Reality`](crate::Reality), and (feature `store`) reading and writing
/// intent and reality in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The bytes are not one well-formed YAML document (or not UTF-8).
    /// `line` and `column` are 1-based and point at the offending character.
    #[error("YAML syntax error at line {line}, column {column}: {message}")]
    Yaml {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// What the YAML parser found wrong.
        message: String,
    },
    /// The YAML is well formed but does not describe a valid manifest. Every
    /// problem found is listed, in document order, each with its field path.
    #[error("invalid manifest: {}", DisplayList(.0))]
    Invalid(Vec<FieldError>),
    /// The manifest is larger than [`MAX_MANIFEST_BYTES`](crate::MAX_MANIFEST_BYTES):
    /// it could never be stored, so it is refused before parsing.
    #[error("manifest is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Size of the input, in bytes.
        size: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// A string that should be a manifest SHA (64 hex digits) is not one.
    #[error("invalid manifest SHA {input:?}: {reason}")]
    InvalidSha {
        /// The rejected input (truncated to 80 characters).
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A reality record (see [`Reality`](crate::Reality)) is not JSON of
    /// the expected shape.
    #[error("malformed reality record: {source}")]
    MalformedReality {
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest was given as the intent of another pod than its own.
    #[cfg(feature = "store")]
    #[error("the manifest of pod {manifest} cannot be the intent of pod {pod}")]
    PodMismatch {
        /// The pod of the key.
        pod: drover_ids::PodId,
        /// The manifest's own id.
        manifest: drover_ids::PodId,
    },
    /// The store failed; nothing is known about the records involved.
    #[cfg(feature = "store")]
    #[error("store operation on {context} failed")]
    Store {
        /// The key or prefix of the operation.
        context: String,
        /// The store's error.
        #[source]
        source: drover_store::StoreError,
    },
    /// A stored intent or reality record is unreadable or does not belong
    /// at its key.
    #[cfg(feature = "store")]
    #[error("stored record at {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ManifestError {
    /// The field errors, when this is [`ManifestError::Invalid`]; empty otherwise.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ManifestError::Invalid(errors) => errors,
            _ => &[],
        }
    }
}

struct DisplayList<'a>(&'a [FieldError]);

impl fmt::Display for DisplayList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// What kind of problem a [`FieldError`] reports, so callers (and tests) can
/// match on it without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FieldErrorKind {
    /// A required field is absent.
    Missing,
    /// A field this manifest format does not know (unknown fields are rejected,
    /// so that a typo never silently drops a setting).
    UnknownField,
    /// The value has the wrong YAML type (e.g. a list where a string belongs).
    WrongType,
    /// The value is empty where something is required.
    Empty,
    /// A pod or launchable id that does not follow the id grammar.
    InvalidId,
    /// A size (`512M`, `1G`) or CPU quantity that does not parse or is out of range.
    InvalidSize,
    /// A duration (`30s`, `2m`) that does not parse or is out of range.
    InvalidDuration,
    /// A sha256 digest that is not 64 hex digits.
    InvalidDigest,
    /// A launchable `type` that is not one of the accepted types.
    UnknownType,
    /// Two fields that say different things about the same setting.
    Conflict,
    /// Any other value that is out of its allowed set or range.
    InvalidValue,
}

/// One problem in a manifest: where it is (a dotted field path such as
/// `launchables.web.command`, plus the line and column when known) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field; list items appear as `args[2]`; the document
    /// itself is the empty path.
    pub path: String,
    /// The class of problem.
    pub kind: FieldErrorKind,
    /// A human-readable description, e.g. `must not be empty`.
    pub message: String,
    /// 1-based line and column of the offending node, when it exists in the source.
    pub location: Option<(usize, usize)>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)?;
        if let Some((line, column)) = self.location {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}
