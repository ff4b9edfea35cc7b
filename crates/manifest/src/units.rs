//! Human units: byte sizes, CPU quantities and durations.
//!
//! * **Sizes** (`resource_limits.memory`): a whole number of bytes (`1048576`)
//!   or a number with a binary suffix, `K`, `M`, `G` or `T` (powers of 1024,
//!   as `docker --memory` and the JVM's `-Xmx` read them). The suffix is
//!   case-insensitive and may be spelled `Ki`, `KB` or `KiB`; a fraction is
//!   allowed when it comes out to whole bytes (`1.5G`).
//! * **CPUs** (`resource_limits.cpus`): a positive number of CPUs with at most
//!   three decimals (`2`, `0.5`), or whole millicpus as a string (`"500m"`).
//! * **Durations** (`termination_grace_period`, `restart_backoff`): a number
//!   with a unit, read by [`humantime`]: `500ms`, `30s`, `2m`, `1h`, and
//!   combinations (`1m 30s`). A bare number is refused because its unit would
//!   be a guess. This is Drover's one duration grammar for its own files and
//!   flags: the CLI reads flags with [`parse_flag_duration`], which also takes
//!   a bare number of seconds. (Only the election crate's knative/client-go
//!   config map keeps Go's syntax, for Go readers of the same map.)
//!
//! Each type has one canonical spelling (its `Display`), used in the
//! canonical form and by `to_yaml`, so `1024M` and `1G` are the same manifest.

use std::fmt;
use std::time::Duration;

/// A size in bytes, written in human units. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

const UNITS: [(char, u32); 4] = [('T', 40), ('G', 30), ('M', 20), ('K', 10)];

impl ByteSize {
    /// A size of `bytes` bytes.
    pub const fn bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    /// A size of `mib` mebibytes.
    pub const fn mib(mib: u64) -> Self {
        Self(mib << 20)
    }

    /// A size of `gib` gibibytes.
    pub const fn gib(gib: u64) -> Self {
        Self(gib << 30)
    }

    /// The size in bytes.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Parses a human size such as `512M`, `1.5G` or `1048576`.
    pub fn parse(input: &str) -> Result<Self, String> {
        let s = input.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = (&s[..split], s[split..].trim_start());
        let shift = match suffix.to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "ki" | "kb" | "kib" => 10,
            "m" | "mi" | "mb" | "mib" => 20,
            "g" | "gi" | "gb" | "gib" => 30,
            "t" | "ti" | "tb" | "tib" => 40,
            _ => {
                return Err(format!(
                    "{input:?} has an unknown unit {suffix:?}; use K, M, G or T (powers of 1024), e.g. \"512M\""
                ));
            }
        };
        let bytes = parse_scaled_decimal(number, 1u128 << shift).ok_or_else(|| {
            format!("{input:?} is not a size; write a number with a unit, e.g. \"512M\" or \"1G\"")
        })?;
        let bytes = u64::try_from(bytes).map_err(|_| format!("{input:?} is too large"))?;
        Ok(Self(bytes))
    }
}

/// `number * scale` for a plain decimal (`12`, `1.5`, no sign, no exponent),
/// when the result is a whole number.
fn parse_scaled_decimal(number: &str, scale: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || int.len() > 30
        || frac.len() > 9
    {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let denominator = 10u128.pow(frac.len() as u32);
    let frac_scaled = frac_value.checked_mul(scale)?;
    if !frac_scaled.is_multiple_of(denominator) {
        return None;
    }
    int.checked_mul(scale)?
        .checked_add(frac_scaled / denominator)
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in UNITS {
            if self.0 != 0 && self.0.is_multiple_of(1u64 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// A CPU quantity with millicpu precision. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpus(u32);

impl Cpus {
    /// The largest quantity accepted: 100 000 CPUs.
    pub const MAX_MILLIS: u32 = 100_000_000;

    /// `millis` thousandths of a CPU.
    pub const fn from_millis(millis: u32) -> Self {
        Self(millis)
    }

    /// Thousandths of a CPU.
    pub const fn millis(self) -> u32 {
        self.0
    }

    /// The quantity as a (possibly fractional) number of CPUs.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 1000.0
    }

    /// Reads a number of CPUs given as a YAML float.
    pub(crate) fn from_f64(value: f64) -> Result<Self, String> {
        let millis = value * 1000.0;
        if !value.is_finite() || value <= 0.0 || millis > f64::from(Self::MAX_MILLIS) {
            return Err(format!(
                "{value} is out of range; cpus must be more than 0 and at most {}",
                Self::MAX_MILLIS / 1000
            ));
        }
        let rounded = millis.round();
        if (millis - rounded).abs() > 1e-6 || rounded < 1.0 {
            return Err(format!("{value} is finer than the 0.001-CPU precision"));
        }
        // In range and whole, so the conversion is exact.
        Ok(Self(rounded as u32))
    }

    /// Parses `"0.5"`, `"2"` or `"500m"`.
    pub fn parse(input: &str) -> Result<Self, String> {
        let s = input.trim();
        let millis = match s.strip_suffix('m') {
            Some(millis) if !millis.contains('.') => parse_scaled_decimal(millis, 1),
            Some(_) => None,
            None => parse_scaled_decimal(s, 1000),
        }
        .ok_or_else(|| {
            format!("{input:?} is not a CPU quantity; write e.g. 2, 0.5 or \"500m\" (at most 3 decimals)")
        })?;
        match u32::try_from(millis) {
            Ok(m) if m > 0 && m <= Self::MAX_MILLIS => Ok(Self(m)),
            _ => Err(format!(
                "{input:?} is out of range; cpus must be more than 0 and at most {}",
                Self::MAX_MILLIS / 1000
            )),
        }
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 1000, self.0 % 1000);
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let frac = format!("{frac:03}");
            write!(f, "{whole}.{}", frac.trim_end_matches('0'))
        }
    }
}

/// Parses a human duration (`30s`, `2m`, `1m 30s`, `500ms`).
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "{input:?} has no unit; write e.g. \"30s\", \"2m\" or \"500ms\""
        ));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{input:?} is not a duration ({e}); write e.g. \"30s\" or \"2m\""))
}

/// Parses a duration given as a command-line flag: the grammar of
/// [`parse_duration`] (`10s`, `500ms`, `1m30s`, `1m 30s`), and a bare whole
/// number as seconds (`--shutdown-grace 10`), as `sleep` and `timeout` read
/// it. Errors quote the trimmed input.
pub fn parse_flag_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{s:?} is too many seconds"));
    }
    parse_duration(s)
}

/// The canonical spelling of a duration, which [`parse_duration`] reads back.
pub fn format_duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".into();
    }
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        for (input, bytes) in [
            ("512M", 512 << 20),
            ("1G", 1 << 30),
            ("1g", 1 << 30),
            ("1GiB", 1 << 30),
            ("1Gi", 1 << 30),
            ("1.5G", 3 << 29),
            ("64K", 64 << 10),
            ("2T", 2 << 40),
            ("1048576", 1 << 20),
            ("100B", 100),
            (" 7 M ", 7 << 20),
        ] {
            assert_eq!(
                ByteSize::parse(input),
                Ok(ByteSize::bytes(bytes)),
                "{input}"
            );
        }
    }

    #[test]
    fn sizes_reject_nonsense() {
        for input in [
            "",
            "M",
            "1.5",
            "0.3K",
            "-1M",
            "1X",
            "1 MB extra",
            "1e9",
            "1..5G",
            ".",
            "99999999999999T",
        ] {
            assert!(ByteSize::parse(input).is_err(), "{input}");
        }
    }

    #[test]
    fn size_display_is_the_largest_exact_unit() {
        assert_eq!(ByteSize::bytes(1 << 30).to_string(), "1G");
        assert_eq!(ByteSize::bytes(1536 << 20).to_string(), "1536M");
        assert_eq!(ByteSize::bytes(1000).to_string(), "1000");
        assert_eq!(ByteSize::bytes(0).to_string(), "0");
        for n in [1u64, 1000, 1 << 20, 3 << 29, u64::MAX, 5 << 40] {
            let size = ByteSize::bytes(n);
            assert_eq!(ByteSize::parse(&size.to_string()), Ok(size));
        }
    }

    #[test]
    fn cpus_parse_and_print() {
        assert_eq!(Cpus::parse("0.5"), Ok(Cpus::from_millis(500)));
        assert_eq!(Cpus::parse("500m"), Ok(Cpus::from_millis(500)));
        assert_eq!(Cpus::parse("2"), Ok(Cpus::from_millis(2000)));
        assert_eq!(Cpus::from_f64(0.25), Ok(Cpus::from_millis(250)));
        assert_eq!(Cpus::from_f64(0.001), Ok(Cpus::from_millis(1)));
        for bad in ["0", "0m", "0.0001", "1.5m", "-1", "x", "100001"] {
            assert!(Cpus::parse(bad).is_err(), "{bad}");
        }
        for bad in [0.0, -1.0, 0.0001, f64::NAN, f64::INFINITY, 1e12] {
            assert!(Cpus::from_f64(bad).is_err(), "{bad}");
        }
        assert_eq!(Cpus::from_millis(1250).to_string(), "1.25");
        assert_eq!(Cpus::from_millis(1).to_string(), "0.001");
        assert_eq!(Cpus::from_millis(3000).to_string(), "3");
    }

    #[test]
    fn flag_durations_share_the_grammar_and_take_bare_seconds() {
        assert_eq!(parse_flag_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_flag_duration(" 1m 30s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_flag_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_flag_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "ten", "1.5", "-3s", "99999999999999999999"] {
            let err = parse_flag_duration(bad).unwrap_err();
            assert!(err.contains(&format!("{:?}", bad.trim())), "{err}");
        }
    }

    #[test]
    fn durations_need_units_and_round_trip() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["30", "", "soon", "-1s", "1.5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for d in [0, 1, 999, 1000, 90_000, 3_600_000, 86_400_123] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
    }
}
