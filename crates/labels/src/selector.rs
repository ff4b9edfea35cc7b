//! Label selectors: Kubernetes syntax, canonical form, matching.

mod parse;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{LabelError, Result};
use crate::labels::LabelLookup;
use crate::name::{validate_key, validate_value};

/// How `>`/`<` read a label value: a base-10 `i64`, as Kubernetes'
/// `strconv.ParseInt(v, 10, 64)` (an optional sign, then digits).
pub(crate) fn parse_int(value: &str) -> Option<i64> {
    value.parse().ok()
}

/// The key of the reserved "matches nothing" selector.
pub const NOTHING_KEY: &str = "drover.io/nothing";

/// The text form of [`Selector::nothing`]: a key that must both exist and
/// not exist. It is valid Kubernetes syntax, so any Kubernetes-compatible
/// matcher also matches nothing with it.
pub const NOTHING: &str = "drover.io/nothing,!drover.io/nothing";

/// What a [`Requirement`] demands of one key. The declaration order is the
/// canonical order of requirements on the same key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `k`: the key is present (any value).
    Exists,
    /// `k=v` (or `k==v`, or `k in (v)`).
    Equals(String),
    /// `k in (a,b)`: present with one of the values (two or more values).
    In(BTreeSet<String>),
    /// `k>n`: present with an integer value greater than `n` (a value that
    /// is not an integer does not match).
    GreaterThan(i64),
    /// `k<n`: present with an integer value less than `n`.
    LessThan(i64),
    /// `k!=v` (or `k notin (v)`): absent, or present with another value.
    NotEquals(String),
    /// `k notin (a,b)`: absent, or present with none of the values.
    NotIn(BTreeSet<String>),
    /// `!k`: the key is absent.
    DoesNotExist,
}

impl Op {
    /// True for requirements an absent key satisfies (`!=`, `notin`, `!k`).
    pub fn is_negative(&self) -> bool {
        matches!(self, Op::NotEquals(_) | Op::NotIn(_) | Op::DoesNotExist)
    }
}

/// One requirement on one key. Construct with [`Requirement::new`], which
/// validates the key and values.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    /// A validated requirement. `In`/`NotIn` with one value become
    /// `Equals`/`NotEquals` (the same meaning, one canonical form); an empty
    /// set is an error.
    pub fn new(key: impl Into<String>, op: Op) -> Result<Self> {
        let key = key.into();
        Self::checked(key, op, None)
    }

    pub fn exists(key: impl Into<String>) -> Result<Self> {
        Self::new(key, Op::Exists)
    }

    pub fn does_not_exist(key: impl Into<String>) -> Result<Self> {
        Self::new(key, Op::DoesNotExist)
    }

    pub fn equals(key: impl Into<String>, value: impl Into<String>) -> Result<Self> {
        Self::new(key, Op::Equals(value.into()))
    }

    pub fn not_equals(key: impl Into<String>, value: impl Into<String>) -> Result<Self> {
        Self::new(key, Op::NotEquals(value.into()))
    }

    pub fn greater_than(key: impl Into<String>, n: i64) -> Result<Self> {
        Self::new(key, Op::GreaterThan(n))
    }

    pub fn less_than(key: impl Into<String>, n: i64) -> Result<Self> {
        Self::new(key, Op::LessThan(n))
    }

    pub fn is_in<V: Into<String>>(
        key: impl Into<String>,
        values: impl IntoIterator<Item = V>,
    ) -> Result<Self> {
        Self::new(key, Op::In(values.into_iter().map(Into::into).collect()))
    }

    pub fn not_in<V: Into<String>>(
        key: impl Into<String>,
        values: impl IntoIterator<Item = V>,
    ) -> Result<Self> {
        Self::new(key, Op::NotIn(values.into_iter().map(Into::into).collect()))
    }

    /// `key_pos` is the key's byte offset in a selector text, for errors.
    pub(crate) fn checked(key: String, op: Op, key_pos: Option<usize>) -> Result<Self> {
        if let Err(reason) = validate_key(&key) {
            return Err(LabelError::InvalidKey {
                key,
                position: key_pos,
                reason,
            });
        }
        let check = |v: &str| {
            validate_value(v).map_err(|reason| LabelError::InvalidValue {
                key: key.clone(),
                value: v.to_owned(),
                position: None,
                reason,
            })
        };
        let op = match op {
            Op::Equals(v) => {
                check(&v)?;
                Op::Equals(v)
            }
            Op::NotEquals(v) => {
                check(&v)?;
                Op::NotEquals(v)
            }
            Op::In(set) | Op::NotIn(set) if set.is_empty() => {
                return Err(LabelError::EmptyValueSet { key });
            }
            Op::In(mut set) => {
                set.iter().try_for_each(|v| check(v))?;
                match set.len() {
                    1 => Op::Equals(set.pop_first().unwrap_or_default()),
                    _ => Op::In(set),
                }
            }
            Op::NotIn(mut set) => {
                set.iter().try_for_each(|v| check(v))?;
                match set.len() {
                    1 => Op::NotEquals(set.pop_first().unwrap_or_default()),
                    _ => Op::NotIn(set),
                }
            }
            other => other,
        };
        Ok(Requirement { key, op })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn op(&self) -> &Op {
        &self.op
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches<L: LabelLookup + ?Sized>(&self, labels: &L) -> bool {
        let value = labels.label(&self.key);
        match &self.op {
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Equals(v) => value == Some(v.as_str()),
            Op::NotEquals(v) => value != Some(v.as_str()),
            Op::In(set) => value.is_some_and(|x| set.contains(x)),
            Op::NotIn(set) => value.is_none_or(|x| !set.contains(x)),
            Op::GreaterThan(n) => value.and_then(parse_int).is_some_and(|x| x > *n),
            Op::LessThan(n) => value.and_then(parse_int).is_some_and(|x| x < *n),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.key;
        let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
        match &self.op {
            Op::Exists => write!(f, "{k}"),
            Op::DoesNotExist => write!(f, "!{k}"),
            Op::Equals(v) => write!(f, "{k}={v}"),
            Op::NotEquals(v) => write!(f, "{k}!={v}"),
            Op::In(set) => write!(f, "{k} in ({})", list(set)),
            Op::NotIn(set) => write!(f, "{k} notin ({})", list(set)),
            Op::GreaterThan(n) => write!(f, "{k}>{n}"),
            Op::LessThan(n) => write!(f, "{k}<{n}"),
        }
    }
}

/// A conjunction of [`Requirement`]s, kept sorted and free of duplicates so
/// that equal meanings written the same way compare equal and print the same.
///
/// # Text form
///
/// Kubernetes syntax, requirements separated by `,` (AND):
/// `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, and the
/// integer comparisons `k>n`, `k<n` (the label must exist and parse as an
/// integer).
/// Whitespace around tokens is ignored; `in`/`notin` are keywords only in
/// operator position, so a key may be named `in`. Values may be empty
/// (`k=`, and `k in ()` is the set holding only the empty value).
///
/// [`Display`](fmt::Display) prints the canonical form (sorted, no spaces
/// except around `in`/`notin`, `==` as `=`, one-element sets as `=`/`!=`),
/// which parses back to an equal selector.
///
/// The empty text `""` is [`Selector::everything`]; [`NOTHING`]
/// (`drover.io/nothing,!drover.io/nothing`) is [`Selector::nothing`].
/// Serde uses the text form.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Matches every label set. Text form: `""`.
    pub fn everything() -> Self {
        Selector::default()
    }

    /// Matches no label set. Text form: [`NOTHING`].
    pub fn nothing() -> Self {
        Selector::from_requirements([
            Requirement {
                key: NOTHING_KEY.to_owned(),
                op: Op::Exists,
            },
            Requirement {
                key: NOTHING_KEY.to_owned(),
                op: Op::DoesNotExist,
            },
        ])
    }

    /// The conjunction of `requirements`, in canonical order.
    pub fn from_requirements(requirements: impl IntoIterator<Item = Requirement>) -> Self {
        let mut requirements: Vec<_> = requirements.into_iter().collect();
        requirements.sort();
        requirements.dedup();
        Selector { requirements }
    }

    /// This selector with one more requirement.
    pub fn and(mut self, requirement: Requirement) -> Self {
        if let Err(i) = self.requirements.binary_search(&requirement) {
            self.requirements.insert(i, requirement);
        }
        self
    }

    /// Parses the text form; see the type docs for the grammar.
    pub fn parse(text: &str) -> Result<Self> {
        parse::parse(text)
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True for the empty selector.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// True for [`Selector::nothing`] (not for every unsatisfiable selector).
    pub fn is_nothing(&self) -> bool {
        *self == Selector::nothing()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches<L: LabelLookup + ?Sized>(&self, labels: &L) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for Selector {
    type Err = LabelError;

    fn from_str(s: &str) -> Result<Self> {
        Selector::parse(s)
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Selector::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Labels;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::try_from_pairs(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn matching_semantics() {
        let l = labels(&[
            ("zone", "a"),
            ("tier", "web"),
            ("empty", ""),
            ("cpus", "016"),
        ]);
        let cases = [
            ("", true),
            ("zone=a", true),
            ("zone==a", true),
            ("zone=b", false),
            ("zone!=b", true),
            ("zone!=a", false),
            ("missing!=a", true),
            ("zone in (a,b)", true),
            ("zone in (b,c)", false),
            ("missing in (a,b)", false),
            ("zone notin (b,c)", true),
            ("zone notin (a,c)", false),
            ("missing notin (a)", true),
            ("zone", true),
            ("missing", false),
            ("!zone", false),
            ("!missing", true),
            ("empty=", true),
            ("empty in ()", true),
            ("zone in ()", false),
            ("empty", true),
            ("zone=a,tier=web", true),
            ("zone=a,tier=db", false),
            ("zone=a,zone=b", false),
            (NOTHING, false),
            ("cpus>8", true),
            ("cpus>16", false),
            ("cpus<17", true),
            ("cpus<-1", false),
            ("cpus>-1,cpus<100", true),
            ("zone>1", false),
            ("missing<1", false),
        ];
        for (text, want) in cases {
            let sel: Selector = text.parse().unwrap();
            assert_eq!(sel.matches(&l), want, "{text:?}");
            assert_eq!(sel.matches(l.as_map()), want, "{text:?} on a map");
        }
        let with_nothing_key = labels(&[(NOTHING_KEY, "x")]);
        assert!(!Selector::nothing().matches(&with_nothing_key));
        assert!(!Selector::nothing().matches(&Labels::new()));
        assert!(Selector::everything().matches(&Labels::new()));
    }

    #[test]
    fn canonical_display() {
        let cases = [
            ("", ""),
            ("  ", ""),
            ("b=1, a == 2", "a=2,b=1"),
            ("k in (b, a, b)", "k in (a,b)"),
            ("k in (a)", "k=a"),
            ("k notin (a)", "k!=a"),
            ("k notin (b,a)", "k notin (a,b)"),
            ("!k , k", "k,!k"),
            ("a=1,a=1", "a=1"),
            ("k in (,a)", "k in (,a)"),
            ("k in (a,)", "k in (,a)"),
            ("k in ()", "k="),
            ("k=", "k="),
            ("in in (in,notin)", "in in (in,notin)"),
            ("notin=in", "notin=in"),
            ("example.com/zone!=", "example.com/zone!="),
            ("k > 5, k < +7", "k>5,k<7"),
            ("k>-5", "k>-5"),
            ("k>05", "k>5"),
        ];
        for (text, want) in cases {
            let sel = Selector::parse(text).unwrap();
            assert_eq!(sel.to_string(), want, "{text:?}");
            assert_eq!(Selector::parse(want).unwrap(), sel, "{text:?} re-parsed");
        }
    }

    #[test]
    fn everything_and_nothing_forms() {
        assert_eq!(Selector::everything().to_string(), "");
        assert_eq!(Selector::nothing().to_string(), NOTHING);
        assert!(Selector::parse(NOTHING).unwrap().is_nothing());
        assert!(Selector::parse("").unwrap().is_everything());
        let json = serde_json::to_string(&Selector::nothing()).unwrap();
        assert_eq!(json, format!("\"{NOTHING}\""));
        assert_eq!(
            serde_json::from_str::<Selector>(&json).unwrap(),
            Selector::nothing()
        );
        assert_eq!(
            serde_json::from_str::<Selector>("\"\"").unwrap(),
            Selector::everything()
        );
        let err = serde_json::from_str::<Selector>("\"a in\"").unwrap_err();
        assert!(err.to_string().contains("expected '('"), "{err}");
    }

    #[test]
    fn builder_validates() {
        let sel = Selector::everything()
            .and(Requirement::equals("zone", "a").unwrap())
            .and(Requirement::is_in("tier", ["web", "db"]).unwrap())
            .and(Requirement::equals("zone", "a").unwrap());
        assert_eq!(sel.to_string(), "tier in (db,web),zone=a");
        assert!(matches!(
            Requirement::is_in("k", Vec::<String>::new()),
            Err(LabelError::EmptyValueSet { ref key }) if key == "k"
        ));
        assert!(matches!(
            Requirement::equals("bad key", "a"),
            Err(LabelError::InvalidKey { position: None, .. })
        ));
        assert!(matches!(
            Requirement::not_in("k", ["ok", "not ok"]),
            Err(LabelError::InvalidValue { ref value, .. }) if value == "not ok"
        ));
        assert_eq!(
            Requirement::is_in("k", ["a"]).unwrap(),
            Requirement::equals("k", "a").unwrap()
        );
    }
}
