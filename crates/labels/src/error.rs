use std::fmt;

/// Result alias for this crate.
pub type Result<T, E = LabelError> = std::result::Result<T, E>;

/// Every failure of this crate: selector syntax, invalid keys and values,
/// and (feature `store`) store-backed reads and writes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    /// The selector text does not follow the grammar.
    #[error("selector syntax error at byte {position}: expected {expected}, found {found}")]
    Syntax {
        /// Byte offset into the selector text.
        position: usize,
        expected: Expected,
        found: Found,
    },

    /// A label key is not a valid Kubernetes label key.
    #[error("invalid label key {key:?}{}: {reason}", at(*position))]
    InvalidKey {
        key: String,
        /// Byte offset into the selector text, when the key came from one.
        position: Option<usize>,
        reason: NameError,
    },

    /// A label value is not a valid Kubernetes label value.
    #[error("invalid value {value:?} for label key {key:?}{}: {reason}", at(*position))]
    InvalidValue {
        key: String,
        value: String,
        /// Byte offset into the selector text, when the value came from one.
        position: Option<usize>,
        reason: NameError,
    },

    /// The value of a `>`/`<` requirement is not a 64-bit integer.
    #[error("value {value:?} for label key {key:?}{} must be an integer for '>' and '<'", at(*position))]
    NotAnInteger {
        key: String,
        value: String,
        position: Option<usize>,
    },

    /// An `in`/`notin` requirement built in code with no values (the text
    /// form `k in ()` means the one empty value, so it cannot express this).
    #[error("requirement on {key:?} has an empty value set")]
    EmptyValueSet { key: String },

    /// A label type and id do not name a key of the layout (for example a
    /// pod id that is not `<node>/<pod>`).
    #[cfg(feature = "store")]
    #[error("invalid label target: {0}")]
    InvalidTarget(#[source] drover_store::keys::KeyError),

    /// The store failed; nothing is known about the labels.
    #[cfg(feature = "store")]
    #[error("store operation on {context} failed")]
    Store {
        context: String,
        #[source]
        source: drover_store::StoreError,
    },

    /// A stored label record is not a JSON map of valid labels.
    #[cfg(feature = "store")]
    #[error("stored labels at {key:?} are corrupt: {reason}")]
    Corrupt { key: String, reason: String },

    /// A read-modify-write lost the compare-and-swap race too many times.
    #[cfg(feature = "store")]
    #[error("labels at {key:?} changed concurrently {attempts} times; gave up")]
    Conflict { key: String, attempts: u32 },
}

fn at(position: Option<usize>) -> String {
    position
        .map(|p| format!(" at byte {p}"))
        .unwrap_or_default()
}

/// What the selector parser expected at an error position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expected {
    /// A label key (starting a requirement, or after `!`).
    Key,
    /// An operator after a key: `=`, `==`, `!=`, `in`, `notin`, `>`, `<`,
    /// or `,`/end.
    Operator,
    /// A value after `=`, `==` or `!=` (possibly empty, then `,` or end).
    Value,
    /// An integer after `>` or `<`.
    Integer,
    /// `(` after `in`/`notin`.
    OpenParen,
    /// `,` or `)` inside a value list.
    CommaOrCloseParen,
    /// `,` or the end of the selector after a requirement.
    CommaOrEnd,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expected::Key => "a label key",
            Expected::Operator => "one of '=', '==', '!=', 'in', 'notin', '>', '<', ',' or the end",
            Expected::Integer => "an integer",
            Expected::Value => "a value, ',' or the end",
            Expected::OpenParen => "'('",
            Expected::CommaOrCloseParen => "',' or ')'",
            Expected::CommaOrEnd => "',' or the end",
        })
    }
}

/// The token the parser found instead of what it expected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Found {
    End,
    Comma,
    OpenParen,
    CloseParen,
    Bang,
    /// `=` or `==`.
    Equals,
    NotEquals,
    GreaterThan,
    LessThan,
    /// A word (key, value or keyword).
    Word(String),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::End => f.write_str("the end"),
            Found::Comma => f.write_str("','"),
            Found::OpenParen => f.write_str("'('"),
            Found::CloseParen => f.write_str("')'"),
            Found::Bang => f.write_str("'!'"),
            Found::Equals => f.write_str("'='"),
            Found::NotEquals => f.write_str("'!='"),
            Found::GreaterThan => f.write_str("'>'"),
            Found::LessThan => f.write_str("'<'"),
            Found::Word(w) => write!(f, "{w:?}"),
        }
    }
}

/// Why a key, key prefix or value is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// Keys (and the name part of a key) must not be empty.
    Empty,
    /// The name part or value is longer than 63 bytes.
    TooLong { len: usize, max: usize },
    /// A character outside `[A-Za-z0-9_.-]`, at this byte index.
    BadChar { ch: char, index: usize },
    /// The first or last character is not alphanumeric.
    BadEdge { ch: char, index: usize },
    /// A key has more than one `/`.
    TooManySlashes,
    /// The prefix before `/` is empty.
    EmptyPrefix,
    /// The prefix is longer than 253 bytes.
    PrefixTooLong { len: usize, max: usize },
    /// The prefix is not a lowercase DNS subdomain (RFC 1123).
    BadPrefix,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("must not be empty"),
            NameError::TooLong { len, max } => write!(f, "{len} bytes is longer than {max}"),
            NameError::BadChar { ch, index } => write!(
                f,
                "character {ch:?} at index {index} is not one of [A-Za-z0-9_.-]"
            ),
            NameError::BadEdge { ch, index } => write!(
                f,
                "character {ch:?} at index {index}: must begin and end with [A-Za-z0-9]"
            ),
            NameError::TooManySlashes => f.write_str("at most one '/' separates prefix and name"),
            NameError::EmptyPrefix => f.write_str("the prefix before '/' is empty"),
            NameError::PrefixTooLong { len, max } => {
                write!(f, "prefix of {len} bytes is longer than {max}")
            }
            NameError::BadPrefix => {
                f.write_str("the prefix must be a lowercase DNS subdomain such as example.com")
            }
        }
    }
}
