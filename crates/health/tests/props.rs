//! Property tests for the health parsers and the aggregation invariants.

use std::time::{Duration, UNIX_EPOCH};

use drover_health::{HealthError, HealthResult, HealthState, PodHealth};
use proptest::prelude::*;

fn state() -> impl Strategy<Value = HealthState> {
    proptest::sample::select(HealthState::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn state_parse_is_total(text in any::<String>()) {
        match text.parse::<HealthState>() {
            Ok(s) => prop_assert_eq!(s.as_str(), text.as_str()),
            Err(HealthError::UnknownState { input }) => prop_assert_eq!(input, text),
            Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }

    #[test]
    fn record_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = HealthResult::from_json(&bytes);
    }

    #[test]
    fn record_round_trips(
        pod in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?",
        node in "[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?",
        s in state(),
        output in any::<String>(),
        secs in 0u64..253_402_300_799,
        nanos in 0u32..1_000_000_000,
    ) {
        prop_assume!(pod != "." && pod != ".." && node != "." && node != "..");
        let at = UNIX_EPOCH + Duration::new(secs, nanos);
        let r = HealthResult::new(pod, node, s, output, at).unwrap();
        prop_assert_eq!(HealthResult::from_json(&r.to_json().unwrap()).unwrap(), r);
    }

    #[test]
    fn aggregation_invariants(
        reported in proptest::collection::btree_map("n[0-9]{1,2}", state(), 0..20),
        expected in proptest::collection::btree_set("n[0-9]{1,2}", 0..20),
        threshold in state(),
        min in 0usize..25,
    ) {
        let results = reported
            .iter()
            .map(|(n, s)| HealthResult::new("web", n.clone(), *s, "", UNIX_EPOCH).unwrap());
        let mut h = PodHealth::from_results("web", results).unwrap();
        h.expect_nodes(expected.iter().cloned()).unwrap();
        let counts = h.counts();
        let all: std::collections::BTreeSet<_> = reported.keys().chain(expected.iter()).collect();
        prop_assert_eq!(counts.total(), all.len());
        prop_assert_eq!(counts.missing, expected.iter().filter(|n| !reported.contains_key(*n)).count());
        prop_assert_eq!(h.healthy_count(threshold), counts.at_least(threshold));
        prop_assert_eq!(h.meets_minimum(threshold, min), counts.at_least(threshold) >= min);
        let order = h.worst_first();
        prop_assert!(order.windows(2).all(|w| (w[0].state, w[0].node) <= (w[1].state, w[1].node)));
        for n in &order {
            prop_assert_eq!(n.state, reported.get(n.node.as_str()).copied().unwrap_or(HealthState::Unknown));
        }
        prop_assert_eq!(h.worst(), order.first().map(|n| n.state));
    }
}
