//! Durations written the way Go's `time.ParseDuration` reads them ("15s",
//! "1m30s", "1.5h", "250ms"), because knative and client-go configuration
//! maps use that syntax. Negative durations are rejected: no election timing
//! can be negative.
//!
//! # Why not Drover's own grammar
//!
//! Everywhere else (manifests, CLI flags) Drover reads durations with
//! humantime (`drover_manifest::units`). This map is different: the same
//! `config-leader-election` map is read by knative and client-go services
//! written in Go, so a value must mean the same to both readers. humantime
//! accepts values Go's `time.ParseDuration` rejects (`5d`, `2weeks`,
//! `1 minute`, `1m 30s` with a space), so a map Drover accepted could stop
//! the Go services reading it; and humantime writes `1m 30s` where Go writes
//! `1m30s`. Hence this small parser of exactly Go's grammar, and a formatter
//! that writes what Go writes.

use std::time::Duration;

use crate::{ElectionError, Result};

const NANOS_PER_UNIT: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// The largest duration Go can represent (`math.MaxInt64` nanoseconds).
const MAX_NANOS: u128 = i64::MAX as u128;

fn invalid(input: &str, reason: &'static str) -> ElectionError {
    ElectionError::InvalidDuration {
        input: input.to_owned(),
        reason,
    }
}

/// Parses a Go-style duration: a sequence of decimal numbers, each with an
/// optional fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), such
/// as "300ms" or "2h45m". A bare "0" is zero.
///
/// ```
/// use std::time::Duration;
/// use drover_election::parse_duration;
/// assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
/// assert!(parse_duration("15").is_err()); // a unit is required
/// ```
pub fn parse_duration(input: &str) -> Result<Duration> {
    let mut rest = input;
    if let Some(stripped) = rest.strip_prefix('+') {
        rest = stripped;
    } else if rest.starts_with('-') {
        return Err(invalid(input, "negative durations are not allowed"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid(input, "empty duration"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after_int) = rest.split_at(int_len);
        let (frac_digits, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(len)
            }
            None => ("", after_int),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid(input, "expected a number"));
        }
        let unit_len = after_number
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after_number.len(), |(i, _)| i);
        let (unit, after_unit) = after_number.split_at(unit_len);
        if unit.is_empty() {
            return Err(invalid(input, "missing unit (use ns, us, ms, s, m or h)"));
        }
        let scale = NANOS_PER_UNIT
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, nanos)| *nanos)
            .ok_or_else(|| invalid(input, "unknown unit (use ns, us, ms, s, m or h)"))?;

        let whole = parse_digits(int_digits).ok_or_else(|| invalid(input, "overflow"))?;
        let mut nanos = whole
            .checked_mul(scale)
            .ok_or_else(|| invalid(input, "overflow"))?;
        // Like Go, digits beyond nanosecond precision cannot matter; cap them
        // so the arithmetic stays in range.
        let frac_digits = &frac_digits[..frac_digits.len().min(24)];
        if !frac_digits.is_empty() {
            let frac = parse_digits(frac_digits).ok_or_else(|| invalid(input, "overflow"))?;
            let denominator = 10u128.pow(u32::try_from(frac_digits.len()).unwrap_or(24));
            nanos += frac * scale / denominator;
        }
        total = total
            .checked_add(nanos)
            .filter(|t| *t <= MAX_NANOS)
            .ok_or_else(|| invalid(input, "overflow"))?;
        rest = after_unit;
    }
    let total = u64::try_from(total).map_err(|_| invalid(input, "overflow"))?;
    Ok(Duration::from_nanos(total))
}

fn parse_digits(digits: &str) -> Option<u128> {
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() > 30 {
        return None;
    }
    digits.parse::<u128>().ok()
}

/// Formats a duration so that [`parse_duration`] reads it back exactly
/// ("1h2m3.5s", "250ms", "0s").
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 && nanos.is_multiple_of(1_000_000) {
        return format!("{}ms", nanos / 1_000_000);
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let secs = nanos / 1_000_000_000 % 60;
    let sub = nanos % 1_000_000_000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if secs > 0 || sub > 0 {
        if sub == 0 {
            out.push_str(&format!("{secs}s"));
        } else {
            let frac = format!("{sub:09}");
            out.push_str(&format!("{secs}.{}s", frac.trim_end_matches('0')));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_go_examples() {
        let cases = [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("15s", Duration::from_secs(15)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("2h45m", Duration::from_secs(2 * 3600 + 45 * 60)),
            ("300ms", Duration::from_millis(300)),
            ("1us", Duration::from_micros(1)),
            ("1µs", Duration::from_micros(1)),
            ("7ns", Duration::from_nanos(7)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("+2s", Duration::from_secs(2)),
            ("1h1m1s1ms1us1ns", Duration::from_nanos(3_661_001_001_001)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        let cases = [
            ("", "empty duration"),
            ("-1s", "negative durations are not allowed"),
            ("15", "missing unit (use ns, us, ms, s, m or h)"),
            ("5d", "unknown unit (use ns, us, ms, s, m or h)"),
            ("s", "expected a number"),
            (".s", "expected a number"),
            ("1s ", "unknown unit (use ns, us, ms, s, m or h)"),
            ("3000000h", "overflow"),
        ];
        for (input, reason) in cases {
            match parse_duration(input) {
                Err(ElectionError::InvalidDuration {
                    input: i,
                    reason: r,
                }) => {
                    assert_eq!(i, input);
                    assert_eq!(r, reason, "{input}");
                }
                other => panic!("{input:?}: expected InvalidDuration, got {other:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in 0u64..(i64::MAX as u64)) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }

        #[test]
        fn single_unit_values_parse(n in 0u64..1_000_000, unit in 0usize..NANOS_PER_UNIT.len()) {
            let (name, scale) = NANOS_PER_UNIT[unit];
            let want = u128::from(n) * scale;
            prop_assert_eq!(parse_duration(&format!("{n}{name}")).unwrap().as_nanos(), want);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,24}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn digit_unit_soup_never_panics(s in "[0-9.+\\-]{0,8}(ns|us|ms|s|m|h|x)?[0-9.]{0,4}") {
            if let Ok(d) = parse_duration(&s) {
                prop_assert!(d.as_nanos() <= MAX_NANOS);
            }
        }
    }
}
