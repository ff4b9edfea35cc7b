//! Reading a scrape back in tests (feature `testing`): a real exposition
//! parser (`prometheus-parse`) plus the strictness it lacks, so a malformed
//! line fails the test instead of being skipped.

use prometheus_parse::{LineInfo, Sample, Scrape, Value};

pub use prometheus_parse;

/// Parses an OpenMetrics/Prometheus text exposition. Panics, naming the
/// line, if a line is neither a comment nor a well-formed sample, or if the
/// text does not end with the OpenMetrics `# EOF` marker.
pub fn parse(text: &str) -> Scrape {
    assert!(
        text.ends_with("# EOF\n"),
        "exposition does not end with `# EOF`:\n{text}"
    );
    for (number, line) in text.lines().enumerate() {
        let well_formed = match LineInfo::parse(line) {
            LineInfo::Doc { .. } | LineInfo::Type { .. } | LineInfo::Empty => true,
            LineInfo::Sample { value, .. } => {
                value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value)
            }
            LineInfo::Ignored => line.starts_with('#'),
        };
        assert!(
            well_formed,
            "line {} of the exposition is malformed: {line:?}",
            number + 1
        );
    }
    Scrape::parse(text.lines().map(|line| Ok(line.to_string())))
        .expect("reading from a string cannot fail")
}

/// The value of the sample named `metric` (as scraped, e.g. with `_total`)
/// whose labels include every pair of `labels`, if exactly one such sample
/// exists. Panics if several match (the labels are not specific enough).
pub fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert!(
        matching.len() <= 1,
        "{} samples of {metric} match {labels:?}: {matching:?}",
        matching.len()
    );
    matching.first().and_then(|s| match s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
        Value::Histogram(_) | Value::Summary(_) => None,
    })
}
