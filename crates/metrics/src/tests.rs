use super::*;

#[test]
fn counters_gauges_and_histograms_encode_and_parse_back() {
    let registry = MetricsRegistry::new();
    let requests = registry
        .counter_family::<[(&'static str, &'static str); 2]>("drover_t_requests", "Requests");
    let open = registry.gauge("drover_t_open", "Open things");
    let latency = registry.histogram_family::<[(&'static str, &'static str); 1]>(
        "drover_t_latency_seconds",
        "Latency",
        &Buckets::latency(),
    );
    requests
        .get_or_create(&[("op", "get"), ("backend", "embedded")])
        .inc_by(3);
    open.set(2);
    latency
        .get_or_create(&[("op", "get")])
        .observe_duration(Duration::from_millis(3));

    let text = registry.encode().unwrap();
    let scrape = testing::parse(&text);
    let value = |m, l: &[(&str, &str)]| testing::value(&scrape, m, l);
    assert_eq!(
        value(
            "drover_t_requests_total",
            &[("op", "get"), ("backend", "embedded")]
        ),
        Some(3.0)
    );
    assert_eq!(value("drover_t_open", &[]), Some(2.0));
    assert_eq!(
        value("drover_t_latency_seconds_count", &[("op", "get")]),
        Some(1.0)
    );
    assert!(
        text.contains(r#"drover_t_latency_seconds_bucket{le="0.004",op="get"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"drover_t_latency_seconds_bucket{le="0.002",op="get"} 0"#),
        "{text}"
    );
}

#[test]
fn clones_share_one_registry_and_a_name_registers_once() {
    let registry = MetricsRegistry::new();
    let first = registry.counter("drover_t_once", "Once");
    let second = registry.clone().counter("drover_t_once", "Once again");
    first.inc();
    second.inc();
    assert_eq!(
        first.get(),
        2,
        "the second registration returns the first counter"
    );
    let text = registry.encode().unwrap();
    assert_eq!(
        text.matches("# TYPE drover_t_once counter").count(),
        1,
        "{text}"
    );
    assert_eq!(
        testing::value(&testing::parse(&text), "drover_t_once_total", &[]),
        Some(2.0)
    );
}

#[test]
fn a_name_of_another_type_is_a_conflict() {
    let registry = MetricsRegistry::new();
    registry.counter("drover_t_name", "A counter");
    let err = registry
        .try_register("drover_t_name", "A gauge", Gauge::default)
        .unwrap_err();
    assert!(
        matches!(err, MetricsError::Conflict { ref name, .. } if name == "drover_t_name"),
        "{err}"
    );
    // Another label-set type is another type too.
    let err = registry
        .try_register(
            "drover_t_name",
            "",
            CounterFamily::<[(&'static str, String); 1]>::default,
        )
        .unwrap_err();
    assert!(matches!(err, MetricsError::Conflict { .. }), "{err}");
    // The helper logs and hands back a working metric that is not exported.
    let detached = registry.gauge("drover_t_name", "A gauge");
    detached.set(7);
    assert!(!registry.encode().unwrap().contains("gauge"));
}

#[test]
fn bad_names_and_counter_suffixes_are_refused() {
    let registry = MetricsRegistry::new();
    for bad in ["", "1abc", "with-dash", "sp ace", "ünï"] {
        let err = registry.try_register(bad, "", Gauge::default).unwrap_err();
        assert!(
            matches!(err, MetricsError::InvalidName { ref name } if name == bad),
            "{err}"
        );
    }
    let err = registry
        .try_register("drover_t_requests_total", "", Counter::default)
        .unwrap_err();
    assert!(matches!(err, MetricsError::CounterSuffix { .. }), "{err}");
    let err = registry
        .try_register(
            "drover_t_fam_total",
            "",
            CounterFamily::<[(&'static str, &'static str); 1]>::default,
        )
        .unwrap_err();
    assert!(matches!(err, MetricsError::CounterSuffix { .. }), "{err}");
    // A gauge may end in _total: only counters get the suffix appended.
    registry
        .try_register("drover_t_gauge_total", "", Gauge::default)
        .unwrap();
    assert_eq!(registry.encode().unwrap().matches("# TYPE").count(), 1);
}

#[test]
fn disabled_registry_counts_but_exports_nothing() {
    let registry = MetricsRegistry::default();
    assert!(!registry.is_enabled());
    let counter = registry.counter("drover_t_quiet", "Not exported");
    counter.inc();
    assert_eq!(counter.get(), 1);
    assert_eq!(registry.encode().unwrap(), "# EOF\n");
    // Validation still applies, so a bad name is found without a registry.
    assert!(
        registry
            .try_register("bad name", "", Gauge::default)
            .is_err()
    );
}

#[test]
fn buckets_must_be_finite_and_increasing() {
    assert!(Buckets::explicit([0.1, 1.0, 10.0]).is_ok());
    for bad in [
        vec![],
        vec![1.0, 1.0],
        vec![2.0, 1.0],
        vec![0.1, f64::INFINITY],
        vec![f64::NAN],
    ] {
        let err = Buckets::explicit(bad.clone()).unwrap_err();
        assert!(
            matches!(err, MetricsError::InvalidBuckets { .. }),
            "{bad:?}: {err}"
        );
    }
    let latency = Buckets::latency();
    assert_eq!(latency.bounds().len(), 16);
    assert_eq!(latency.bounds()[0], 0.0005);
    assert!(latency.bounds()[15] > 16.0);
}

#[test]
#[should_panic(expected = "malformed")]
fn the_test_parser_rejects_malformed_lines() {
    testing::parse("# TYPE x counter\nx_total one\n# EOF\n");
}
