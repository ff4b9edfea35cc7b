//! Property tests: the parser never panics, Display round-trips, and the
//! index always agrees with a linear scan.

use std::collections::BTreeMap;

use drover_labels::{LabelError, LabelIndex, Labels, Op, Requirement, Selector};
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;

const KEYS: &[&str] = &[
    "zone",
    "tier",
    "in",
    "notin",
    "example.com/rack",
    "a.b-c_d",
    "gpu",
];
const VALUES: &[&str] = &[
    "",
    "a",
    "b",
    "in",
    "web",
    "us-east-1a",
    "X_9",
    "3",
    "10",
    "007",
];

fn key() -> impl Strategy<Value = String> {
    proptest::sample::select(KEYS).prop_map(str::to_owned)
}

fn value() -> impl Strategy<Value = String> {
    proptest::sample::select(VALUES).prop_map(str::to_owned)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Exists),
        Just(Op::DoesNotExist),
        value().prop_map(Op::Equals),
        value().prop_map(Op::NotEquals),
        btree_set(value(), 1..4).prop_map(Op::In),
        btree_set(value(), 1..4).prop_map(Op::NotIn),
        (-2i64..12).prop_map(Op::GreaterThan),
        (-2i64..12).prop_map(Op::LessThan),
    ]
}

fn selector() -> impl Strategy<Value = Selector> {
    vec(
        (key(), op()).prop_map(|(k, o)| Requirement::new(k, o).expect("valid by construction")),
        0..5,
    )
    .prop_map(Selector::from_requirements)
}

fn labels() -> impl Strategy<Value = Labels> {
    proptest::collection::btree_map(key(), value(), 0..5)
        .prop_map(|m| Labels::try_from(m).expect("valid by construction"))
}

/// Text made of selector-ish tokens, so parsing gets past the first token.
fn selectorish() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            proptest::sample::select(
                &[
                    "=", "==", "!=", "!", ",", "(", ")", " ", " in ", " notin ", "\t", "/", "-",
                    ".", "é", "@", ">", "<", "5", "-3", "+1",
                ][..]
            )
            .prop_map(str::to_owned),
            key(),
            value(),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = Selector::parse(&text);
    }

    #[test]
    fn parse_of_tokens_is_total_and_round_trips(text in selectorish()) {
        match Selector::parse(&text) {
            Ok(sel) => {
                let printed = sel.to_string();
                prop_assert_eq!(Selector::parse(&printed).expect("canonical form parses"), sel.clone());
                prop_assert_eq!(Selector::parse(&printed).unwrap().to_string(), printed);
            }
            Err(err) => {
                let position = match &err {
                    LabelError::Syntax { position, .. } => Some(*position),
                    LabelError::InvalidKey { position, .. }
                    | LabelError::InvalidValue { position, .. }
                    | LabelError::NotAnInteger { position, .. } => {
                        prop_assert!(position.is_some(), "parser errors carry a position: {err:?}");
                        *position
                    }
                    other => return Err(TestCaseError::fail(format!("unexpected error kind {other:?}"))),
                };
                let position = position.unwrap_or_default();
                prop_assert!(position <= text.len());
                prop_assert!(text.is_char_boundary(position));
            }
        }
    }

    #[test]
    fn display_round_trips(sel in selector()) {
        let printed = sel.to_string();
        let reparsed = Selector::parse(&printed).expect("canonical form parses");
        prop_assert_eq!(&reparsed, &sel);
        let json = serde_json::to_string(&sel).unwrap();
        prop_assert_eq!(serde_json::from_str::<Selector>(&json).unwrap(), sel);
    }

    #[test]
    fn reparsed_selector_matches_the_same_labels(sel in selector(), l in labels()) {
        let reparsed = Selector::parse(&sel.to_string()).unwrap();
        prop_assert_eq!(reparsed.matches(&l), sel.matches(&l));
    }

    #[test]
    fn index_agrees_with_linear_scan(
        ops in vec((0u8..12, prop::option::weighted(0.8, labels())), 0..60),
        selectors in vec(selector(), 1..8),
    ) {
        let mut index = LabelIndex::new();
        let mut model: BTreeMap<u8, Labels> = BTreeMap::new();
        for (id, labels) in ops {
            match labels {
                Some(l) => {
                    prop_assert_eq!(index.insert(id, l.clone()), model.insert(id, l));
                }
                None => {
                    prop_assert_eq!(index.remove(&id), model.remove(&id));
                }
            }
        }
        prop_assert_eq!(index.len(), model.len());
        for sel in selectors {
            let mut got: Vec<u8> = index.select(&sel).into_iter().copied().collect();
            got.sort();
            let want: Vec<u8> = model
                .iter()
                .filter(|(_, l)| sel.matches(*l))
                .map(|(id, _)| *id)
                .collect();
            prop_assert_eq!(&got, &want, "selector {}", sel);
            prop_assert_eq!(index.count(&sel), want.len() as u64);
        }
    }
}
