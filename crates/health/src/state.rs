use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{HealthError, Result};

/// A health state. The order is `Critical < Unknown < Warning < Passing`, so
/// `max` is the best and `min` the worst of a set, and `state >= threshold`
/// reads as "at least as healthy as the threshold".
///
/// A missing result counts as [`HealthState::Unknown`], never critical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthState {
    Critical,
    Unknown,
    Warning,
    Passing,
}

impl HealthState {
    /// Every state, worst first.
    pub const ALL: [HealthState; 4] = [
        HealthState::Critical,
        HealthState::Unknown,
        HealthState::Warning,
        HealthState::Passing,
    ];

    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Critical => "critical",
            HealthState::Unknown => "unknown",
            HealthState::Warning => "warning",
            HealthState::Passing => "passing",
        }
    }

    /// The state of an optional result: missing is unknown.
    pub fn or_missing(state: Option<HealthState>) -> HealthState {
        state.unwrap_or(HealthState::Unknown)
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses the exact lowercase names; anything else is
/// [`HealthError::UnknownState`] (a typo must not read as a real state).
impl FromStr for HealthState {
    type Err = HealthError;

    fn from_str(s: &str) -> Result<Self> {
        HealthState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| HealthError::UnknownState {
                input: s.to_owned(),
            })
    }
}

impl Serialize for HealthState {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for HealthState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthState::*;

    #[test]
    fn order_is_passing_warning_unknown_critical() {
        assert!(Passing > Warning && Warning > Unknown && Unknown > Critical);
        assert_eq!(
            [Warning, Passing, Critical].into_iter().max(),
            Some(Passing)
        );
        assert_eq!([Warning, Passing, Unknown].into_iter().min(), Some(Unknown));
        assert_eq!(HealthState::or_missing(None), Unknown);
        assert_eq!(HealthState::or_missing(Some(Critical)), Critical);
    }

    #[test]
    fn parses_exact_names_only() {
        for s in HealthState::ALL {
            assert_eq!(s.as_str().parse::<HealthState>().unwrap(), s);
            assert_eq!(s.to_string(), s.as_str());
        }
        for bad in [
            "",
            "Passing",
            "PASSING",
            " passing",
            "ok",
            "healthy",
            "critical\n",
        ] {
            match bad.parse::<HealthState>() {
                Err(HealthError::UnknownState { input }) => assert_eq!(input, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn serde_uses_names() {
        assert_eq!(serde_json::to_string(&Warning).unwrap(), "\"warning\"");
        assert_eq!(
            serde_json::from_str::<HealthState>("\"critical\"").unwrap(),
            Critical
        );
        let err = serde_json::from_str::<HealthState>("\"fine\"").unwrap_err();
        assert!(
            err.to_string().contains("unknown health state \"fine\""),
            "{err}"
        );
        assert!(serde_json::from_str::<HealthState>("3").is_err());
    }
}
