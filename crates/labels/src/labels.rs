use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{LabelError, Result};
use crate::name::{validate_key, validate_value};

/// A validated label map: every key and value follows the Kubernetes grammar.
///
/// Serializes as a plain JSON object (`{"zone":"a"}`); deserializing checks
/// every entry, so invalid stored labels are rejected rather than silently
/// matched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Labels(BTreeMap::new())
    }

    /// Builds labels from pairs, failing on the first invalid key or value.
    pub fn try_from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut labels = Labels::new();
        for (k, v) in pairs {
            labels.insert(k, v)?;
        }
        Ok(labels)
    }

    /// Sets `key` to `value`, returning the previous value. Nothing changes
    /// when the key or value is invalid.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Option<String>> {
        let (key, value) = (key.into(), value.into());
        check_pair(&key, &value)?;
        Ok(self.0.insert(key, value))
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.0.remove(key)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }
}

pub(crate) fn check_pair(key: &str, value: &str) -> Result<()> {
    validate_key(key).map_err(|reason| LabelError::InvalidKey {
        key: key.to_owned(),
        position: None,
        reason,
    })?;
    validate_value(value).map_err(|reason| LabelError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        position: None,
        reason,
    })
}

impl TryFrom<BTreeMap<String, String>> for Labels {
    type Error = LabelError;

    fn try_from(map: BTreeMap<String, String>) -> Result<Self> {
        for (k, v) in &map {
            check_pair(k, v)?;
        }
        Ok(Labels(map))
    }
}

impl From<Labels> for BTreeMap<String, String> {
    fn from(labels: Labels) -> Self {
        labels.0
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// `k1=v1,k2=v2`: the equality selector that these labels satisfy exactly.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// Anything a selector can be matched against.
pub trait LabelLookup {
    /// The value of `key`, if the label is present.
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelLookup for Labels {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

impl LabelLookup for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> LabelLookup for HashMap<String, String, S> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::NameError;

    #[test]
    fn insert_rejects_invalid_and_changes_nothing() {
        let mut l = Labels::try_from_pairs([("zone", "a")]).unwrap();
        let err = l.insert("bad key", "x").unwrap_err();
        assert!(matches!(
            err,
            LabelError::InvalidKey { ref key, position: None, reason: NameError::BadChar { ch: ' ', index: 3 } } if key == "bad key"
        ));
        let err = l.insert("zone", "b/c").unwrap_err();
        assert!(matches!(err, LabelError::InvalidValue { ref key, .. } if key == "zone"));
        assert_eq!(l.get("zone"), Some("a"));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn serde_is_a_plain_map_and_validates() {
        let l = Labels::try_from_pairs([("zone", "a"), ("example.com/tier", "")]).unwrap();
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(json, r#"{"example.com/tier":"","zone":"a"}"#);
        assert_eq!(serde_json::from_str::<Labels>(&json).unwrap(), l);
        let err = serde_json::from_str::<Labels>(r#"{"a b":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("invalid label key"), "{err}");
        assert!(serde_json::from_str::<Labels>(r#"["a"]"#).is_err());
        assert!(serde_json::from_str::<Labels>(r#"{"a":1}"#).is_err());
    }

    #[test]
    fn display_is_an_equality_selector() {
        let l = Labels::try_from_pairs([("b", "2"), ("a", "1")]).unwrap();
        assert_eq!(l.to_string(), "a=1,b=2");
        let sel: crate::Selector = l.to_string().parse().unwrap();
        assert!(sel.matches(&l));
    }
}
