use proptest::prelude::*;

use super::*;

fn node(id: &str) -> NodeId {
    id.parse().unwrap()
}

fn pod(id: &str) -> PodId {
    id.parse().unwrap()
}

#[test]
fn default_layout_matches_the_brief() {
    let k = Keys::default();
    let (n1, web) = (node("n1"), pod("web"));
    assert_eq!(k.prefix(), "/drover/");
    assert_eq!(k.node(&n1), "/drover/nodes/n1");
    assert_eq!(k.nodes_prefix(), "/drover/nodes/");
    assert_eq!(k.intent(&n1, &web), "/drover/intent/n1/web");
    assert_eq!(k.intent_prefix(), "/drover/intent/");
    assert_eq!(k.intent_node_prefix(&n1), "/drover/intent/n1/");
    assert_eq!(k.reality(&n1, &web), "/drover/reality/n1/web");
    assert_eq!(k.reality_prefix(), "/drover/reality/");
    assert_eq!(k.reality_node_prefix(&n1), "/drover/reality/n1/");
    assert_eq!(k.health(&web, &n1), "/drover/health/web/n1");
    assert_eq!(k.health_prefix(), "/drover/health/");
    assert_eq!(k.health_pod_prefix(&web), "/drover/health/web/");
    assert_eq!(
        k.labels(LabelType::Node, "n1").unwrap(),
        "/drover/labels/node/n1"
    );
    assert_eq!(
        k.labels(LabelType::Pod, "n1/web").unwrap(),
        "/drover/labels/pod/n1/web"
    );
    assert_eq!(k.pod_labels(&n1, &web), "/drover/labels/pod/n1/web");
    assert_eq!(
        k.labels(LabelType::Rc, "rc1").unwrap(),
        "/drover/labels/rc/rc1"
    );
    assert_eq!(
        k.labels(LabelType::Replication, "r1").unwrap(),
        "/drover/labels/replication/r1"
    );
    assert_eq!(k.labels_prefix(), "/drover/labels/");
    assert_eq!(k.labels_type_prefix(LabelType::Pod), "/drover/labels/pod/");
    assert_eq!(k.rc("rc1").unwrap(), "/drover/rcs/rc1");
    assert_eq!(k.rcs_prefix(), "/drover/rcs/");
    assert_eq!(k.replication("r1").unwrap(), "/drover/replications/r1");
    assert_eq!(k.replications_prefix(), "/drover/replications/");
    assert_eq!(k.lock("rc", "rc1").unwrap(), "/drover/locks/rc/rc1");
    assert_eq!(k.locks_prefix(), "/drover/locks/");
    assert_eq!(k.locks_kind_prefix("rc").unwrap(), "/drover/locks/rc/");
    assert_eq!(k.election_prefix("db").unwrap(), "/drover/election/db/");
    assert_eq!(k.elections_prefix(), "/drover/election/");
    assert_eq!(k.audit("00042").unwrap(), "/drover/audit/00042");
    assert_eq!(k.audit_prefix(), "/drover/audit/");
}

#[test]
fn election_candidates_use_etcd_concurrency_hex() {
    let k = Keys::default();
    // etcd's concurrency package: fmt.Sprintf("%s%x", pfx+"/", leaseID).
    assert_eq!(
        k.election_candidate("db", 7_587_877_712_345_678_123)
            .unwrap(),
        "/drover/election/db/694d8e93bb77c12b"
    );
    assert_eq!(
        k.election_candidate("db", 0xabc).unwrap(),
        "/drover/election/db/abc"
    );
    assert_eq!(
        k.election_candidate("db", 0),
        Err(KeyError::InvalidLeaseId(0))
    );
    assert_eq!(
        k.election_candidate("db", -5),
        Err(KeyError::InvalidLeaseId(-5))
    );
    assert_eq!(
        k.parse_election_candidate("/drover/election/db/abc"),
        Some(("db", 0xabc))
    );
    // Non-canonical spellings do not parse: uppercase, leading zero, sign.
    assert_eq!(k.parse_election_candidate("/drover/election/db/ABC"), None);
    assert_eq!(k.parse_election_candidate("/drover/election/db/0abc"), None);
    assert_eq!(k.parse_election_candidate("/drover/election/db/-1"), None);
    assert_eq!(k.parse_election_candidate("/drover/election/db/"), None);
    // Overflowing i64 is not a lease id.
    assert_eq!(
        k.parse_election_candidate("/drover/election/db/8000000000000000"),
        None
    );
}

#[test]
fn prefixes_are_validated() {
    assert!(Keys::new("/drover/").is_ok());
    assert!(Keys::new("/").is_ok());
    assert!(Keys::new("/a/b/").is_ok());
    for bad in ["", "drover/", "/drover", "drover", "/a//b/", "/a\n/"] {
        match Keys::new(bad) {
            Err(KeyError::InvalidPrefix { prefix, .. }) => assert_eq!(prefix, bad),
            other => panic!("{bad:?}: expected InvalidPrefix, got {other:?}"),
        }
    }
    let k = Keys::new("/x/").unwrap();
    assert_eq!(k.node(&node("n")), "/x/nodes/n");
    assert_eq!(
        k.parse_node("/drover/nodes/n"),
        None,
        "another prefix's key"
    );
}

#[test]
fn segments_are_validated_and_the_error_names_the_field() {
    let k = Keys::default();
    // Node and pod ids are typed: a bad one cannot be made, and its error
    // names the id.
    for (bad, field) in [("", "node"), ("a/b", "node"), ("p\u{0}", "pod")] {
        let err = if field == "node" {
            NodeId::new(bad).unwrap_err()
        } else {
            PodId::new(bad).unwrap_err()
        };
        assert_eq!(err.field, field, "{bad:?}");
    }
    let cases: [(Result<String, KeyError>, &str, &str); 4] = [
        (k.rc("x\ty"), "rc id", "x\ty"),
        (k.lock("", "id"), "lock kind", ""),
        (k.election_prefix("e/1"), "election name", "e/1"),
        (
            k.labels(LabelType::Pod, "justpod"),
            "pod label id",
            "justpod",
        ),
    ];
    for (got, field, value) in cases {
        match got {
            Err(KeyError::InvalidSegment {
                field: f, value: v, ..
            }) => {
                assert_eq!((f, v.as_str()), (field, value))
            }
            other => panic!("expected InvalidSegment for {field}, got {other:?}"),
        }
    }
    assert!(k.labels(LabelType::Node, "n/1").is_err());
    assert!(k.labels(LabelType::Pod, "n/p/q").is_err());
    let err: StoreError = k.rc("").unwrap_err().into();
    assert!(matches!(err, StoreError::InvalidArgument(m) if m.contains("rc id")));
    // Node and pod label ids follow the id grammar too.
    for (id, field) in [("Node-1", "node"), ("n1/Web", "pod"), ("n_1/web", "node")] {
        let ty = if id.contains('/') {
            LabelType::Pod
        } else {
            LabelType::Node
        };
        match k.labels(ty, id) {
            Err(KeyError::InvalidId(e)) => assert_eq!(e.field, field, "{id:?}"),
            other => panic!("{id:?}: expected InvalidId, got {other:?}"),
        }
    }
    let err: StoreError = k.labels(LabelType::Node, "N").unwrap_err().into();
    assert!(matches!(err, StoreError::InvalidArgument(m) if m.contains("node")));
}

#[test]
fn parsers_reject_keys_a_formatter_cannot_produce() {
    let k = Keys::default();
    for bad in [
        "/drover/intent/n1",
        "/drover/intent/n1/",
        "/drover/intent//p",
        "/drover/intent/n1/p/extra",
        "/drover/nodes/",
        "/drover/nodes/a/b",
        "/drover/labels/unknown/x",
        "/drover/labels/pod/n1",
        "/drover/labels/node/n1/p",
        "/drover/other/x",
        "/drover/",
        "intent/n1/p",
        // Node and pod segments that are not ids of the grammar.
        "/drover/nodes/N1",
        "/drover/intent/n1/web.1",
        "/drover/reality/n 1/p",
        "/drover/health/p/-n1",
        "/drover/labels/node/N1",
        "/drover/labels/pod/n1/Web",
    ] {
        assert_eq!(k.parse(bad), None, "{bad:?} parsed");
    }
    assert_eq!(k.parse(&b"/drover/nodes/\xff"[..]), None, "non-UTF-8");
    assert_eq!(
        k.parse_intent("/drover/intent/n1/p"),
        Some((node("n1"), pod("p")))
    );
    assert_eq!(
        k.parse_node(&b"/drover/nodes/n1".to_vec()),
        Some(node("n1"))
    );
    // Sections do not leak into each other.
    assert_eq!(k.parse_intent("/drover/reality/n1/p"), None);
    assert_eq!(
        k.parse_reality("/drover/reality/n1/p"),
        Some((node("n1"), pod("p")))
    );
    assert_eq!(
        k.parse_health("/drover/health/p/n1"),
        Some((pod("p"), node("n1")))
    );
}

#[test]
fn label_types_round_trip_through_strings() {
    for t in LabelType::ALL {
        assert_eq!(t.as_str().parse::<LabelType>(), Ok(t));
        assert_eq!(t.to_string(), t.as_str());
    }
    assert_eq!(
        "Pod".parse::<LabelType>(),
        Err(KeyError::UnknownLabelType("Pod".into()))
    );
}

fn segment() -> impl Strategy<Value = String> {
    // Any non-control, non-'/' characters, including spaces and non-ASCII.
    proptest::string::string_regex("[^/\\p{Cc}]{1,12}").unwrap()
}

fn prefix() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..3).prop_map(|segs| {
        let mut p = String::from("/");
        for s in segs {
            p.push_str(&s);
            p.push('/');
        }
        p
    })
}

/// A pod or node id (the id grammar: a DNS label).
fn id() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?").unwrap()
}

/// (which key, two free segments, two ids, label type, lease).
type Parts = (u8, String, String, String, String, LabelType, LeaseId);

fn owned_key() -> impl Strategy<Value = Parts> {
    (
        0u8..12,
        segment(),
        segment(),
        id(),
        id(),
        prop::sample::select(LabelType::ALL.to_vec()),
        1..=LeaseId::MAX,
    )
}

fn build<'a>((which, a, b, x, y, t, lease): &'a Parts, pod_label_id: &'a str) -> Key<'a> {
    let (a, b, t, lease) = (a.as_str(), b.as_str(), *t, *lease);
    let (n, p) = (node(x), pod(y));
    let id = pod_label_id;
    match which {
        0 => Key::Node { node: n },
        1 => Key::Intent { node: n, pod: p },
        2 => Key::Reality { node: n, pod: p },
        3 => Key::Health {
            pod: pod(x),
            node: node(y),
        },
        4 => Key::Labels {
            label_type: t,
            id: match t {
                LabelType::Pod => id,
                LabelType::Node => x,
                LabelType::Rc | LabelType::Replication => a,
            },
        },
        5 => Key::Rc { id: a },
        6 => Key::Replication { id: a },
        7 => Key::Lock { kind: a, id: b },
        8 => Key::ElectionCandidate { name: a, lease },
        9 => Key::Audit { id: a },
        10 => Key::Status { kind: a, id: b },
        _ => Key::Labels {
            label_type: LabelType::Pod,
            id,
        },
    }
}

proptest! {
    #[test]
    fn format_then_parse_round_trips(p in prefix(), parts in owned_key()) {
        let keys = Keys::new(p.clone()).unwrap();
        let pod_id = format!("{}/{}", parts.3, parts.4);
        let key = build(&parts, &pod_id);
        let formatted = keys.format(&key).unwrap();
        prop_assert!(formatted.starts_with(&p));
        prop_assert_eq!(keys.parse(&formatted), Some(key));
    }

    #[test]
    fn typed_parsers_invert_their_formatters(a in id(), b in id(), name in segment(), lease in 1..=LeaseId::MAX) {
        let k = Keys::default();
        let (n, p) = (node(&a), pod(&b));
        let intent = k.intent(&n, &p);
        prop_assert_eq!(k.parse_intent(&intent), Some((n.clone(), p.clone())));
        let reality = k.reality(&n, &p);
        prop_assert_eq!(k.parse_reality(&reality), Some((n.clone(), p.clone())));
        let health = k.health(&pod(&a), &node(&b));
        prop_assert_eq!(k.parse_health(&health), Some((pod(&a), node(&b))));
        prop_assert_eq!(k.parse_node(&k.node(&n)), Some(n.clone()));
        let pod_id = format!("{a}/{b}");
        let labels = k.pod_labels(&n, &p);
        prop_assert_eq!(k.parse_labels(&labels), Some((LabelType::Pod, pod_id.as_str())));
        let candidate = k.election_candidate(&name, lease).unwrap();
        prop_assert_eq!(k.parse_election_candidate(&candidate), Some((name.as_str(), lease)));
        // Every key of a node's intent lies under that node's prefix, and no
        // other node's prefix (no "n1" vs "n10" confusion).
        prop_assert!(intent.starts_with(&k.intent_node_prefix(&n)));
        let other = node(&format!("{a}x"));
        prop_assert!(!intent.starts_with(&k.intent_node_prefix(&other)));
        prop_assert!(reality.starts_with(&k.reality_node_prefix(&n)));
        prop_assert!(!reality.starts_with(&k.reality_node_prefix(&other)));
        prop_assert!(health.starts_with(&k.health_pod_prefix(&pod(&a))));
        let other_pod = pod(&format!("{a}x"));
        prop_assert!(!health.starts_with(&k.health_pod_prefix(&other_pod)));
    }

    #[test]
    fn parse_is_total_and_exact(p in prefix(), s in prop_oneof![
        "\\PC{0,40}",
        "(nodes|intent|reality|health|labels/(pod|node|rc|replication|x)|rcs|replications|locks|election/e|audit)/[a-f0-9/\n]{0,12}",
    ]) {
        // Arbitrary input never panics, and whatever parses formats back to
        // exactly the input.
        let keys = Keys::new(p.clone()).unwrap();
        let key = format!("{p}{s}");
        if let Some(parsed) = keys.parse(&key) {
            prop_assert_eq!(keys.format(&parsed).unwrap(), key);
        }
    }

    #[test]
    fn segments_with_slash_or_control_chars_are_rejected(a in segment(), b in segment(), c in "\\p{Cc}") {
        let k = Keys::default();
        let with_slash = format!("{a}/{b}");
        let with_control = format!("{a}{c}");
        // Such node and pod ids cannot even be made.
        prop_assert!(NodeId::new(with_slash.as_str()).is_err());
        prop_assert!(NodeId::new(with_control.as_str()).is_err());
        prop_assert!(PodId::new(with_slash.as_str()).is_err());
        prop_assert!(k.labels(LabelType::Node, &with_slash).is_err());
        prop_assert!(k.labels(LabelType::Node, &with_control).is_err());
        prop_assert!(k.rc(&with_slash).is_err());
        prop_assert!(k.audit(&with_control).is_err());
    }
}

#[test]
fn raw_election_keys_follow_the_concurrency_layout() {
    use super::election::{bucket_members_prefix, bucket_prefix, lease_key};
    assert_eq!(
        lease_key("web/", 0x694d77f5b3a4e00c),
        "web/694d77f5b3a4e00c"
    );
    assert_eq!(
        Keys::default().election_candidate("db", 0x1f).unwrap(),
        lease_key("/drover/election/db/", 0x1f)
    );
    let root = "/drover/election/";
    assert_eq!(bucket_prefix(root, "svc-00"), "/drover/election/svc-00/");
    assert_eq!(
        bucket_members_prefix(root, "svc"),
        "/drover/election/svc.members/"
    );
    // The members prefix never falls under a bucket's election prefix.
    assert!(!bucket_members_prefix(root, "svc").starts_with(&bucket_prefix(root, "svc")));
}
