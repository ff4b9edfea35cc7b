//! Property tests: canonical identity and round trips over generated valid
//! manifests, and a parser that never panics on any input.

use std::time::Duration;

use drover_manifest::{ByteSize, Cpus, Launchable, Manifest, Probe, RestartPolicy, StatusCheck};
use proptest::prelude::*;
use saphyr::{LoadableYamlNode, Scalar, Yaml};
use serde_json::Value;

fn id() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
}

/// Any string a program could receive (no NUL), biased toward YAML-hostile text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>().prop_map(|s| s.replace('\0', "")),
        "[ -~\t\n]{0,20}",
        prop::sample::select(vec![
            "",
            " ",
            "true",
            "no",
            "null",
            "~",
            "1",
            "1.0",
            "0x1f",
            "-",
            "- x",
            "a: b",
            "#",
            "'",
            "\"",
            "!tag",
            "&a",
            "*a",
            "|",
            ">",
            "%",
            "@",
            "`",
            "[x]",
            "{}",
            ".inf",
            "-.nan",
            "1e3",
            "0o17",
            "+1",
            "\u{85}",
            "\u{2028}",
            "\u{feff}x",
            "é",
            "\r\n",
        ])
        .prop_map(str::to_string),
    ]
}

fn non_blank_text() -> impl Strategy<Value = String> {
    text().prop_filter("not blank", |s| !s.trim().is_empty())
}

fn duration() -> impl Strategy<Value = Duration> {
    (0u64..86_400_000).prop_map(Duration::from_millis)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn env_name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,8}"
}

fn restart_policy() -> impl Strategy<Value = RestartPolicy> {
    prop::sample::select(vec![
        RestartPolicy::Always,
        RestartPolicy::Never,
        RestartPolicy::OnFailure,
    ])
}

fn launchable() -> impl Strategy<Value = Launchable> {
    let kind = prop_oneof![
        (
            non_blank_text(),
            prop::collection::vec(text(), 0..4),
            prop::option::of(non_blank_text()),
        )
            .prop_map(|(command, args, dir)| {
                let mut argv = vec![command];
                argv.extend(args);
                let l = Launchable::process(argv);
                match dir {
                    Some(dir) => l.working_dir(dir),
                    None => l,
                }
            }),
        (
            prop::sample::select(vec!["https://", "http://", "file:///"]),
            "[a-z0-9./_-]{1,20}",
            "[0-9a-fA-F]{64}",
            prop::option::of("[a-z0-9_]{1,8}(/[a-z0-9_]{1,8}){0,2}"),
        )
            .prop_map(|(scheme, rest, digest, entry)| {
                let mut l = Launchable::artifact(format!("{scheme}x{rest}"), digest);
                if let (Some(entry), Some(artifact)) = (entry, l_artifact(&mut l)) {
                    artifact.entry_point = entry;
                }
                l
            }),
    ];
    (
        kind,
        restart_policy(),
        duration(),
        prop::collection::btree_map(env_name(), text(), 0..4),
    )
        .prop_map(|(mut l, policy, backoff, env)| {
            l.restart_policy = policy;
            l.restart_backoff = backoff;
            l.env = env;
            l
        })
}

fn l_artifact(l: &mut Launchable) -> Option<&mut drover_manifest::Artifact> {
    match &mut l.kind {
        drover_manifest::LaunchableKind::Artifact(a) => Some(a),
        _ => None,
    }
}

fn label_part() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]([A-Za-z0-9._-]{0,8}[A-Za-z0-9])?"
}

fn status_check() -> impl Strategy<Value = StatusCheck> {
    let probe = prop_oneof![
        (1u16.., "/[a-z_/]{0,10}", any::<bool>(), any::<bool>()).prop_map(
            |(port, path, http, localhost_only)| Probe::Http {
                port,
                path,
                http,
                localhost_only
            }
        ),
        (1u16.., any::<bool>()).prop_map(|(port, localhost_only)| Probe::Tcp {
            port,
            localhost_only
        }),
        prop::collection::vec(text(), 0..3).prop_map(|args| {
            let mut command = vec!["/bin/check".to_owned()];
            command.extend(args);
            Probe::Exec { command }
        }),
    ];
    let interval =
        |min_ms: u64| prop::option::of((min_ms..3_600_000u64).prop_map(Duration::from_millis));
    (
        probe,
        interval(100),
        interval(1),
        prop::option::of(1u32..=1000),
        prop::option::of(1u32..=1000),
    )
        .prop_map(
            |(probe, period, timeout, failure_threshold, success_threshold)| StatusCheck {
                probe,
                period,
                timeout,
                failure_threshold,
                success_threshold,
            },
        )
}

prop_compose! {
    fn manifest()(
        pod in id(),
        run_as in prop::option::of("[a-z_][a-z0-9_-]{0,10}"),
        launchables in prop::collection::btree_map(id(), launchable(), 1..4),
        config in prop::collection::btree_map(text(), json_value(), 0..4),
        status in prop::option::of(status_check()),
        cpus in prop::option::of(1u32..=Cpus::MAX_MILLIS),
        memory in prop::option::of(1u64..),
        grace in duration(),
        labels in prop::collection::btree_map(
            (prop::option::of("[a-z0-9]{1,5}(\\.[a-z0-9]{1,5})?"), label_part())
                .prop_map(|(p, n)| p.map_or(n.clone(), |p| format!("{p}/{n}"))),
            prop_oneof![Just(String::new()), label_part()],
            0..4,
        ),
    ) -> Manifest {
        let mut b = Manifest::builder(pod).termination_grace_period(grace);
        if let Some(user) = run_as { b = b.run_as(user); }
        for (id, l) in launchables { b = b.launchable(id, l); }
        for (k, v) in config { b = b.config(k, v); }
        if let Some(s) = status { b = b.status(s); }
        if let Some(c) = cpus { b = b.cpus(Cpus::from_millis(c)); }
        if let Some(m) = memory { b = b.memory(ByteSize::bytes(m)); }
        for (k, v) in labels { b = b.label(k, v); }
        match b.build() {
            Ok(m) => m,
            Err(e) => panic!("generated manifest must be valid: {e}"),
        }
    }
}

/// Writes `node` as flow YAML (JSON-like) with the keys of every mapping
/// shuffled by `seed`. Reads through saphyr rather than serde_json, whose
/// default float parsing is not exact.
fn shuffled_flow(node: &Yaml<'_>, seed: &mut u64, out: &mut String) {
    match node {
        Yaml::Sequence(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                shuffled_flow(item, seed, out);
            }
            out.push(']');
        }
        Yaml::Mapping(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            // A cheap deterministic shuffle driven by the seed.
            for i in (1..entries.len()).rev() {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let j = (*seed >> 33) as usize % (i + 1);
                entries.swap(i, j);
            }
            out.push_str("{\n  ");
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n   ");
                }
                shuffled_flow(k, seed, out);
                out.push_str(" :   ");
                shuffled_flow(v, seed, out);
            }
            out.push_str("\n}");
        }
        Yaml::Value(Scalar::String(s)) => out.push_str(&Value::String(s.to_string()).to_string()),
        Yaml::Value(Scalar::Integer(i)) => out.push_str(&i.to_string()),
        Yaml::Value(Scalar::FloatingPoint(f)) => out.push_str(&format!("{:?}", f.0)),
        Yaml::Value(Scalar::Boolean(b)) => out.push_str(&b.to_string()),
        Yaml::Value(Scalar::Null) => out.push_str("null"),
        other => panic!("canonical form holds plain data only, found {other:?}"),
    }
}

fn assert_same_content(a: &Manifest, b: &Manifest) {
    assert_eq!(
        String::from_utf8_lossy(a.canonical_bytes()),
        String::from_utf8_lossy(b.canonical_bytes())
    );
    assert_eq!(a.sha(), b.sha());
    assert_eq!(a.id(), b.id());
    assert_eq!(a.run_as(), b.run_as());
    assert_eq!(a.launchables(), b.launchables());
    assert_eq!(a.config(), b.config());
    assert_eq!(a.status(), b.status());
    assert_eq!(a.resource_limits(), b.resource_limits());
    assert_eq!(a.termination_grace_period(), b.termination_grace_period());
    assert_eq!(a.labels(), b.labels());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any valid manifest survives to_yaml -> from_yaml with the same content and SHA.
    #[test]
    fn generated_manifests_round_trip_through_yaml(m in manifest()) {
        let yaml = m.to_yaml();
        let again = Manifest::from_yaml(&yaml)
            .unwrap_or_else(|e| panic!("to_yaml output must parse: {e}\n{yaml}"));
        assert_same_content(&m, &again);
        prop_assert_eq!(again.raw_bytes(), yaml.as_bytes());
        prop_assert_eq!(again.to_yaml(), yaml);
    }

    /// Canonicalisation is idempotent: the canonical form is a manifest whose
    /// canonical form is itself.
    #[test]
    fn canonicalisation_is_idempotent(m in manifest()) {
        let again = Manifest::from_yaml(m.canonical_bytes())
            .unwrap_or_else(|e| panic!("canonical form must parse: {e}"));
        assert_same_content(&m, &again);
        prop_assert_eq!(again.canonical_bytes(), m.canonical_bytes());
    }

    /// Key order (at every level), whitespace and layout do not change the SHA.
    #[test]
    fn identity_is_order_and_layout_insensitive(m in manifest(), seed in any::<u64>()) {
        let text = std::str::from_utf8(m.canonical_bytes()).unwrap();
        let docs = Yaml::load_from_str(text).unwrap();
        let mut seed = seed;
        let mut shuffled = String::from("# a comment\n");
        shuffled_flow(&docs[0], &mut seed, &mut shuffled);
        shuffled.push_str("\n# trailing comment\n");
        let again = Manifest::from_yaml(&shuffled)
            .unwrap_or_else(|e| panic!("shuffled form must parse: {e}\n{shuffled}"));
        assert_same_content(&m, &again);
        prop_assert_ne!(again.raw_bytes(), m.raw_bytes());
    }

    /// The config file handed to the pod holds exactly `config`.
    #[test]
    fn config_yaml_round_trips(m in manifest()) {
        let wrapped = format!("id: x\nlaunchables: {{x: {{type: process, command: c}}}}\nconfig:\n{}",
            m.config_yaml().lines().map(|l| format!("  {l}\n")).collect::<String>());
        if m.config().is_empty() {
            return Ok(());
        }
        let again = Manifest::from_yaml(&wrapped)
            .unwrap_or_else(|e| panic!("config yaml must parse: {e}\n{wrapped}"));
        prop_assert_eq!(again.config(), m.config());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parser_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Manifest::from_yaml(&bytes);
    }

    #[test]
    fn parser_never_panics_on_arbitrary_strings(s in any::<String>()) {
        let _ = Manifest::from_yaml(&s);
    }

    #[test]
    fn parser_never_panics_on_yaml_like_text(
        s in "([a-z_]{1,12}|[ \t\n:,\\-\\[\\]{}&*!|>'\"%@#?~.0-9]|launchables|type|process|artifact|config){0,60}"
    ) {
        let _ = Manifest::from_yaml(&s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Mutations of valid manifests (byte flips, cuts, splices) either parse
    /// or return an error; never a panic.
    #[test]
    fn parser_never_panics_on_mutated_manifests(
        m in manifest(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = m.to_yaml().into_bytes();
        for (at, byte, op) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, byte),
            }
        }
        if let Ok(parsed) = Manifest::from_yaml(&bytes) {
            // Whatever parses has a canonical form that parses to the same SHA.
            let again = Manifest::from_yaml(parsed.canonical_bytes()).unwrap();
            prop_assert_eq!(again.sha(), parsed.sha());
        }
    }
}

/// The store's codecs (feature `store`) give back exactly what the store's
/// writes hold: the same ids, typed, and the same record.
#[cfg(feature = "store")]
mod store_codecs {
    use drover_ids::{NodeId, PodId};
    use drover_manifest::{
        IntentCodec, LaunchStatus, Manifest, ManifestSha, PodRecord, Reality, RealityCodec,
    };
    use drover_store::KeyValue;
    use drover_store::keys::Keys;
    use drover_store::reflector::Codec;
    use proptest::prelude::*;

    use super::{id, manifest};

    fn stored(key: String, value: Vec<u8>) -> KeyValue {
        KeyValue {
            key: key.into_bytes(),
            value,
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        }
    }

    fn keys() -> impl Strategy<Value = Keys> {
        prop_oneof![Just("/drover/".to_owned()), "/[a-z]{1,5}/"]
            .prop_map(|prefix| Keys::new(prefix).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn intent_codec_round_trips(m in manifest(), node in id(), keys in keys()) {
            let node: NodeId = node.parse().unwrap();
            let kv = stored(keys.intent(&node, m.id()), m.encode());
            let codec = IntentCodec::new(keys);
            prop_assert_eq!(codec.id(&kv.key).unwrap(), (node.clone(), m.id().clone()));
            let ((n, p), decoded) = codec.decode(&kv).unwrap();
            prop_assert_eq!((&n, &p), (&node, m.id()));
            prop_assert_eq!(decoded.sha(), m.sha());
            prop_assert_eq!(decoded.raw_bytes(), m.raw_bytes());
        }

        #[test]
        fn reality_codec_round_trips(
            sha in any::<[u8; 32]>(),
            launched in any::<bool>(),
            node in id(),
            pod in id(),
            keys in keys(),
        ) {
            let (node, pod): (NodeId, PodId) = (node.parse().unwrap(), pod.parse().unwrap());
            let status = if launched { LaunchStatus::Launched } else { LaunchStatus::Failed };
            let reality = Reality::new(ManifestSha::from_bytes(sha), status);
            let kv = stored(keys.reality(&node, &pod), reality.encode());
            let codec = RealityCodec::new(keys);
            prop_assert_eq!(codec.decode(&kv).unwrap(), ((node, pod), reality));
        }

        /// An intent stored under another pod's key never decodes.
        #[test]
        fn a_misplaced_intent_is_corrupt(m in manifest(), other in id()) {
            prop_assume!(m.id() != other.as_str());
            let keys = Keys::default();
            let kv = stored(keys.intent(&"n1".parse().unwrap(), &other.parse().unwrap()), m.encode());
            let err = IntentCodec::new(keys).decode(&kv).unwrap_err();
            prop_assert!(err.to_string().contains("manifest of pod"), "{}", err);
        }
    }

    #[test]
    fn stored_intents_are_the_manifests_bytes() {
        let m = Manifest::from_yaml(
            "id: web # a comment\nlaunchables: {w: {type: process, command: /bin/w}}\n",
        )
        .unwrap();
        assert_eq!(m.encode(), m.raw_bytes());
    }
}
