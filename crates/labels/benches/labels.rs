//! LabelIndex against a linear scan over 100,000 labeled nodes, in one run.
//!
//! Run with `cargo xtask bench labels` (= `cargo bench -p drover-labels
//! --bench labels`). Prints p50/p99 per query for the index and the scan and
//! their ratio, and the index's update cost per object.
//!
//! Targets: a selective query (< 1% match) at least 50x faster than the scan
//! and under 1 ms at p99; index updates under 5 µs per object.

// Measuring wall time is what a benchmark is for; the workspace bans
// std::time::Instant only so that controllers use pausable tokio time.
#![allow(clippy::disallowed_types)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use drover_labels::{LabelIndex, Labels, Selector};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NODES: usize = 100_000;
const ZONES: &[&str] = &[
    "us-east-1a",
    "us-east-1b",
    "us-east-1c",
    "eu-west-1a",
    "eu-west-1b",
    "ap-south-1a",
];
const TIERS: &[(&str, u32)] = &[("web", 50), ("db", 10), ("cache", 15), ("batch", 25)];
const OS: &[(&str, u32)] = &[("linux", 90), ("windows", 7), ("freebsd", 3)];
const RACKS_PER_ZONE: usize = 80;
const INSTANCE_TYPES: usize = 24;

fn weighted<'a>(rng: &mut StdRng, choices: &[(&'a str, u32)]) -> &'a str {
    let total: u32 = choices.iter().map(|c| c.1).sum();
    let mut pick = rng.gen_range(0..total);
    for (name, w) in choices {
        if pick < *w {
            return name;
        }
        pick -= w;
    }
    choices[0].0
}

fn node_labels(rng: &mut StdRng) -> Labels {
    let zone = ZONES[rng.gen_range(0..ZONES.len())];
    let mut pairs = vec![
        ("topology.example.com/zone".to_owned(), zone.to_owned()),
        (
            "topology.example.com/rack".to_owned(),
            format!("{zone}-r{:03}", rng.gen_range(0..RACKS_PER_ZONE)),
        ),
        ("tier".to_owned(), weighted(rng, TIERS).to_owned()),
        (
            "instance-type".to_owned(),
            format!(
                "m{}.{}xlarge",
                5 + rng.gen_range(0..4),
                rng.gen_range(1..=INSTANCE_TYPES / 4)
            ),
        ),
        ("os".to_owned(), weighted(rng, OS).to_owned()),
        ("kernel".to_owned(), format!("6.{}", rng.gen_range(1..12))),
    ];
    // A few rare labels.
    if rng.gen_ratio(1, 100) {
        pairs.push((
            "gpu".to_owned(),
            ["a100", "h100", "l4"][rng.gen_range(0..3)].to_owned(),
        ));
    }
    if rng.gen_ratio(1, 200) {
        pairs.push(("draining".to_owned(), String::new()));
    }
    if rng.gen_ratio(1, 50) {
        pairs.push(("canary".to_owned(), "true".to_owned()));
    }
    if rng.gen_ratio(1, 10) {
        pairs.push(("ssd".to_owned(), "nvme".to_owned()));
    }
    Labels::try_from_pairs(pairs).expect("generated labels are valid")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn time_runs(iterations: usize, mut f: impl FnMut() -> usize) -> (Duration, Duration, usize) {
    let mut samples = Vec::with_capacity(iterations);
    let mut matched = 0;
    for _ in 0..iterations {
        let start = Instant::now();
        matched = black_box(f());
        samples.push(start.elapsed());
    }
    samples.sort();
    (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        matched,
    )
}

fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used here.
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let nodes: Vec<(String, Labels)> = (0..NODES)
        .map(|i| (format!("node-{i:06}.example.com"), node_labels(&mut rng)))
        .collect();

    let start = Instant::now();
    let mut index = LabelIndex::new();
    for (id, labels) in &nodes {
        index.insert(id.clone(), labels.clone());
    }
    let build = start.elapsed();

    // Updates: change one label of random nodes (tier move, drain on/off).
    let updates: Vec<(String, Labels)> = (0..20_000)
        .map(|_| {
            let (id, labels) = &nodes[rng.gen_range(0..NODES)];
            let mut labels = labels.clone();
            labels
                .insert("tier", TIERS[rng.gen_range(0..TIERS.len())].0)
                .expect("valid");
            if labels.remove("draining").is_none() {
                labels.insert("draining", "").expect("valid");
            }
            (id.clone(), labels)
        })
        .collect();
    let start = Instant::now();
    for (id, labels) in &updates {
        index.insert(id.clone(), labels.clone());
    }
    let update = start.elapsed();
    let clone_start = Instant::now();
    for (id, labels) in &updates {
        black_box((id.clone(), labels.clone()));
    }
    let clone_cost = clone_start.elapsed();
    // Put the original labels back so queries see the generated population.
    let mut scan_set = nodes.clone();
    for (id, labels) in &nodes {
        index.insert(id.clone(), labels.clone());
    }
    scan_set.sort_by(|a, b| a.0.cmp(&b.0));

    let queries = [
        ("rack (0.2%)", "topology.example.com/rack=us-east-1a-r042"),
        ("gpu, not draining (~1%)", "gpu in (a100,h100),!draining"),
        (
            "zone+tier+ssd (~0.2%)",
            "topology.example.com/zone=eu-west-1b,tier=db,ssd",
        ),
        ("canary windows (~0.1%)", "canary=true,os=windows"),
        (
            "zone in 2, web (~17%)",
            "topology.example.com/zone in (us-east-1a,us-east-1b),tier=web",
        ),
        ("not windows, not draining (~93%)", "os!=windows,!draining"),
        ("everything (100%)", ""),
    ];

    println!("LabelIndex vs linear scan, {NODES} nodes (same run)");
    println!(
        "index build: {} per object ({} total)",
        fmt_dur(build / NODES as u32),
        fmt_dur(build)
    );
    let per_update = update.saturating_sub(clone_cost) / updates.len() as u32;
    println!(
        "index update (2 labels changed): {} per object (excluding the {} clone of the input)",
        fmt_dur(per_update),
        fmt_dur(clone_cost / updates.len() as u32)
    );
    println!();
    println!(
        "{:<34} {:>8} {:>11} {:>11} {:>11} {:>11} {:>8}",
        "query", "matches", "index p50", "index p99", "scan p50", "scan p99", "ratio"
    );
    let mut selective_ok = true;
    for (name, text) in queries {
        let sel = Selector::parse(text).expect("bench selectors parse");
        let iterations = 300;
        let (ip50, ip99, imatched) = time_runs(iterations, || index.select(&sel).len());
        let (sp50, sp99, smatched) = time_runs(iterations / 3, || {
            scan_set
                .iter()
                .filter(|(_, labels)| sel.matches(labels))
                .map(|(id, _)| id)
                .collect::<Vec<_>>()
                .len()
        });
        assert_eq!(imatched, smatched, "index and scan disagree on {text}");
        let ratio = sp50.as_secs_f64() / ip50.as_secs_f64().max(1e-9);
        println!(
            "{name:<34} {imatched:>8} {:>11} {:>11} {:>11} {:>11} {ratio:>7.0}x",
            fmt_dur(ip50),
            fmt_dur(ip99),
            fmt_dur(sp50),
            fmt_dur(sp99)
        );
        if (imatched as f64) < NODES as f64 * 0.01 {
            selective_ok &= ratio >= 50.0 && ip99 < Duration::from_millis(1);
        }
    }
    println!();
    println!(
        "targets: selective (<1%) queries >= 50x scan and < 1 ms p99: {}; update < 5 µs: {}",
        if selective_ok { "met" } else { "NOT met" },
        if per_update < Duration::from_micros(5) {
            "met"
        } else {
            "NOT met"
        }
    );
}
