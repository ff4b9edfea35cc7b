//! Kubernetes label key and value grammar.

use crate::error::NameError;

/// Longest name part of a key, and longest value.
pub const MAX_NAME_LEN: usize = 63;
/// Longest key prefix (a DNS subdomain).
pub const MAX_PREFIX_LEN: usize = 253;

/// Checks a label key: `[prefix/]name`, where prefix is a lowercase DNS
/// subdomain of at most 253 bytes and name matches
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` in at most 63 bytes.
pub fn validate_key(key: &str) -> Result<(), NameError> {
    if key.is_empty() {
        return Err(NameError::Empty);
    }
    let mut parts = key.splitn(3, '/');
    let first = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (None, _) => validate_name(first, 0),
        (Some(name), None) => {
            validate_prefix(first)?;
            if name.is_empty() {
                return Err(NameError::Empty);
            }
            validate_name(name, first.len() + 1)
        }
        (Some(_), Some(_)) => Err(NameError::TooManySlashes),
    }
}

/// Checks a label value: empty, or the name grammar in at most 63 bytes.
pub fn validate_value(value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Ok(());
    }
    validate_name(value, 0)
}

/// `offset` shifts reported indices so they point into the whole key.
fn validate_name(name: &str, offset: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    for (i, ch) in name.char_indices() {
        if !(ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.')) {
            return Err(NameError::BadChar {
                ch,
                index: offset + i,
            });
        }
    }
    // Only ASCII remains, so byte indices are char indices.
    let bytes = name.as_bytes();
    let last = bytes.len() - 1;
    for i in [0, last] {
        if !bytes[i].is_ascii_alphanumeric() {
            return Err(NameError::BadEdge {
                ch: bytes[i] as char,
                index: offset + i,
            });
        }
    }
    Ok(())
}

fn validate_prefix(prefix: &str) -> Result<(), NameError> {
    if prefix.is_empty() {
        return Err(NameError::EmptyPrefix);
    }
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(NameError::PrefixTooLong {
            len: prefix.len(),
            max: MAX_PREFIX_LEN,
        });
    }
    let label_ok = |label: &str| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    if prefix.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(NameError::BadPrefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in [
            "a",
            "zone",
            "A-b_c.d9",
            "example.com/zone",
            "a-b.c9/Z",
            &"x".repeat(63),
        ] {
            assert_eq!(validate_key(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_key(""), Err(NameError::Empty));
        assert_eq!(validate_key("ex.com/"), Err(NameError::Empty));
        assert_eq!(validate_key("/a"), Err(NameError::EmptyPrefix));
        assert_eq!(validate_key("a/b/c"), Err(NameError::TooManySlashes));
        assert_eq!(validate_key("Ex.com/a"), Err(NameError::BadPrefix));
        assert_eq!(validate_key("ex..com/a"), Err(NameError::BadPrefix));
        assert_eq!(validate_key("-ex.com/a"), Err(NameError::BadPrefix));
        assert_eq!(
            validate_key(&format!("{}/a", "a".repeat(254))),
            Err(NameError::PrefixTooLong { len: 254, max: 253 })
        );
        assert_eq!(
            validate_key(&"x".repeat(64)),
            Err(NameError::TooLong { len: 64, max: 63 })
        );
        assert_eq!(
            validate_key("a b"),
            Err(NameError::BadChar { ch: ' ', index: 1 })
        );
        assert_eq!(
            validate_key("ex.com/a@"),
            Err(NameError::BadChar { ch: '@', index: 8 })
        );
        assert_eq!(
            validate_key("-a"),
            Err(NameError::BadEdge { ch: '-', index: 0 })
        );
        assert_eq!(
            validate_key("a."),
            Err(NameError::BadEdge { ch: '.', index: 1 })
        );
        assert_eq!(
            validate_key("é"),
            Err(NameError::BadChar { ch: 'é', index: 0 })
        );
    }

    #[test]
    fn values() {
        assert_eq!(validate_value(""), Ok(()));
        assert_eq!(validate_value("us-east-1a"), Ok(()));
        assert_eq!(
            validate_value("a/b"),
            Err(NameError::BadChar { ch: '/', index: 1 })
        );
        assert_eq!(
            validate_value("_a"),
            Err(NameError::BadEdge { ch: '_', index: 0 })
        );
        assert_eq!(
            validate_value(&"v".repeat(64)),
            Err(NameError::TooLong { len: 64, max: 63 })
        );
    }
}
