//! [`ElectorConfig`]: timing and behaviour of an [`crate::Elector`], with
//! client-go's meaning of each knob, validated up front.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::duration::parse_duration;
use crate::{ElectionError, Result};

/// What an elector does after losing leadership involuntarily.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnLoss {
    /// Campaign again (a fresh lease if the old one was lost).
    #[default]
    Reenter,
    /// Stop and return [`ElectionError::LeadershipLost`] from `run`.
    Fatal,
}

/// How an [`crate::Elector`] campaigns and leads.
///
/// The timing knobs keep client-go's meaning, mapped onto a store lease:
/// - `lease_duration`: the lease TTL. A crashed leader's key disappears at
///   most this long after its last keep-alive, and the next candidate leads.
/// - `renew_deadline`: how long a leader keeps leading after the send time of
///   its last acknowledged keep-alive. Its term ends then, a full
///   `lease_duration - renew_deadline` before the store could expire the
///   lease (the safety margin for clock-rate differences and slow work).
/// - `retry_period`: the keep-alive interval, and the base wait between
///   attempts after a failure (jittered by `jitter_factor`).
#[derive(Clone, Debug, PartialEq)]
pub struct ElectorConfig {
    /// Lease TTL; whole seconds, at least 1 s. Default 15 s.
    pub lease_duration: Duration,
    /// Leadership validity after the last acknowledged keep-alive; shorter
    /// than `lease_duration`. Default 10 s.
    pub renew_deadline: Duration,
    /// Keep-alive interval and retry base; `retry_period * jitter_factor`
    /// must be shorter than `renew_deadline`. Default 2 s.
    pub retry_period: Duration,
    /// Retries wait `retry_period * (1 + random(0..jitter_factor))`.
    /// Default 1.2.
    pub jitter_factor: f64,
    /// The leader resigns after this long and campaigns again, letting
    /// waiting candidates lead. Zero means unlimited. Default zero. For
    /// buckets, each held bucket's term is limited on its own.
    pub term_limit: Duration,
    /// On shutdown, resign (after the leader work has drained) so the next
    /// candidate leads at once. Without it the key lingers until the lease
    /// expires. Default true.
    pub release_on_cancel: bool,
    /// How long the leader work may take to finish after its term's scope
    /// is cancelled, before it is aborted. Default: `renew_deadline`.
    pub drain_timeout: Duration,
    /// Re-enter the election after a loss, or stop. Default: re-enter. For
    /// buckets, the loss of any held bucket counts.
    pub on_loss: OnLoss,
    /// This candidate's identity: the value its candidate key carries, shown
    /// by observers and `etcdctl elect -l`. Default: a unique id.
    pub identity: String,
}

impl Default for ElectorConfig {
    fn default() -> Self {
        ElectorConfig {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            jitter_factor: 1.2,
            term_limit: Duration::ZERO,
            release_on_cancel: true,
            drain_timeout: Duration::from_secs(10),
            on_loss: OnLoss::Reenter,
            identity: unique_identity(),
        }
    }
}

impl ElectorConfig {
    /// Sets the three timing knobs at once (and the drain timeout to the
    /// renew deadline).
    pub fn with_timing(
        mut self,
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Self {
        self.lease_duration = lease_duration;
        self.renew_deadline = renew_deadline;
        self.retry_period = retry_period;
        self.drain_timeout = renew_deadline;
        self
    }

    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = identity.into();
        self
    }

    pub fn with_term_limit(mut self, term_limit: Duration) -> Self {
        self.term_limit = term_limit;
        self
    }

    pub fn with_release_on_cancel(mut self, release: bool) -> Self {
        self.release_on_cancel = release;
        self
    }

    pub fn with_on_loss(mut self, on_loss: OnLoss) -> Self {
        self.on_loss = on_loss;
        self
    }

    pub fn with_drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.drain_timeout = drain_timeout;
        self
    }

    pub fn with_jitter_factor(mut self, jitter_factor: f64) -> Self {
        self.jitter_factor = jitter_factor;
        self
    }

    /// Checks every rule; the first broken one is the error.
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("lease_duration", self.lease_duration),
            ("renew_deadline", self.renew_deadline),
            ("retry_period", self.retry_period),
            ("drain_timeout", self.drain_timeout),
        ] {
            if value.is_zero() {
                return Err(ElectionError::NonPositiveDuration { field });
            }
        }
        if self.lease_duration.subsec_nanos() != 0 {
            return Err(ElectionError::LeaseDurationNotWholeSeconds(
                self.lease_duration,
            ));
        }
        let max = Duration::from_secs(drover_store::MAX_LEASE_TTL_SECS.unsigned_abs());
        if self.lease_duration > max {
            return Err(ElectionError::LeaseDurationTooLong {
                lease_duration: self.lease_duration,
                max,
            });
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(ElectionError::RenewDeadlineNotShorter {
                renew_deadline: self.renew_deadline,
                lease_duration: self.lease_duration,
            });
        }
        if !self.jitter_factor.is_finite() || self.jitter_factor < 0.0 {
            return Err(ElectionError::InvalidJitterFactor(self.jitter_factor));
        }
        let jittered = self.retry_period.as_secs_f64() * self.jitter_factor.max(1.0);
        if jittered >= self.renew_deadline.as_secs_f64() {
            return Err(ElectionError::RetryPeriodTooLong {
                retry_period: self.retry_period,
                jitter_factor: self.jitter_factor,
                renew_deadline: self.renew_deadline,
            });
        }
        if self.identity.trim().is_empty() {
            return Err(ElectionError::EmptyIdentity);
        }
        Ok(())
    }

    /// The lease TTL in whole seconds.
    pub(crate) fn lease_ttl_secs(&self) -> i64 {
        i64::try_from(self.lease_duration.as_secs()).unwrap_or(i64::MAX)
    }

    /// A retry wait: `retry_period * (1 + random(0..jitter_factor))`.
    pub(crate) fn jittered_retry(&self) -> Duration {
        let factor = 1.0 + rand::random::<f64>() * self.jitter_factor;
        self.retry_period.mul_f64(factor)
    }
}

/// Leader-election settings read from a string map with knative's keys, as
/// found in a `config-leader-election` ConfigMap.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaderElectionSettings {
    /// The elector config (timings from the map, the rest default).
    pub elector: ElectorConfig,
    /// `buckets`: how many buckets each component's work is split into.
    pub buckets: u32,
    /// `map-lease-prefix.<from>` = `<to>`: renames of lease-name prefixes.
    pub lease_prefix_mapping: BTreeMap<String, String>,
}

/// knative's defaults: 60 s / 40 s / 10 s, one bucket.
const KNATIVE_LEASE_DURATION: Duration = Duration::from_secs(60);
const KNATIVE_RENEW_DEADLINE: Duration = Duration::from_secs(40);
const KNATIVE_RETRY_PERIOD: Duration = Duration::from_secs(10);

impl LeaderElectionSettings {
    /// Reads `lease-duration`, `renew-deadline`, `retry-period` (Go
    /// durations such as "15s"), `buckets` (a positive integer, no upper
    /// cap) and `map-lease-prefix.*`. Missing keys take knative's defaults
    /// (60 s, 40 s, 10 s, 1). Keys starting with `_` (such as `_example`)
    /// are ignored; any other unknown key is an error, so typos surface.
    /// The result is validated.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::time::Duration;
    /// use drover_election::LeaderElectionSettings;
    /// let map = HashMap::from([
    ///     ("lease-duration".to_string(), "15s".to_string()),
    ///     ("renew-deadline".to_string(), "10s".to_string()),
    ///     ("retry-period".to_string(), "2s".to_string()),
    ///     ("buckets".to_string(), "12".to_string()),
    /// ]);
    /// let settings = LeaderElectionSettings::from_map(&map).unwrap();
    /// assert_eq!(settings.elector.lease_duration, Duration::from_secs(15));
    /// assert_eq!(settings.buckets, 12);
    /// ```
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self> {
        let mut elector = ElectorConfig::default().with_timing(
            KNATIVE_LEASE_DURATION,
            KNATIVE_RENEW_DEADLINE,
            KNATIVE_RETRY_PERIOD,
        );
        let mut buckets = 1;
        let mut lease_prefix_mapping = BTreeMap::new();
        let mut drain_set = false;
        // Sorted, so the first error reported does not depend on hashing.
        let sorted: BTreeMap<&String, &String> = map.iter().collect();
        for (key, value) in sorted {
            let field = |e: ElectionError| ElectionError::InvalidConfigValue {
                key: key.clone(),
                source: Box::new(e),
            };
            match key.as_str() {
                "lease-duration" => {
                    elector.lease_duration = parse_duration(value).map_err(field)?
                }
                "renew-deadline" => {
                    elector.renew_deadline = parse_duration(value).map_err(field)?
                }
                "retry-period" => elector.retry_period = parse_duration(value).map_err(field)?,
                "drain-timeout" => {
                    elector.drain_timeout = parse_duration(value).map_err(field)?;
                    drain_set = true;
                }
                "buckets" => buckets = parse_buckets(value).map_err(field)?,
                other => {
                    if let Some(from) = other.strip_prefix("map-lease-prefix.") {
                        lease_prefix_mapping.insert(from.to_owned(), value.clone());
                    } else if !other.starts_with('_') {
                        return Err(ElectionError::UnknownConfigKey(other.to_owned()));
                    }
                }
            }
        }
        if !drain_set {
            elector.drain_timeout = elector.renew_deadline;
        }
        elector.validate()?;
        Ok(LeaderElectionSettings {
            elector,
            buckets,
            lease_prefix_mapping,
        })
    }
}

/// Parses a bucket count: a positive integer.
pub(crate) fn parse_buckets(value: &str) -> Result<u32> {
    match value.trim().parse::<u32>() {
        Ok(0) => Err(ElectionError::ZeroBuckets),
        Ok(n) => Ok(n),
        Err(_) => Err(ElectionError::InvalidBucketCount(value.to_owned())),
    }
}

/// A unique identity: `<hostname>_<random hex>`, like knative's `UniqueID`,
/// so two electors in one process (or on one host) never collide.
pub fn unique_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "drover".to_owned());
    format!("{host}_{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_client_go_defaults_and_valid() {
        let c = ElectorConfig::default();
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.retry_period, Duration::from_secs(2));
        assert_eq!(c.jitter_factor, 1.2);
        assert_eq!(c.term_limit, Duration::ZERO);
        c.validate().unwrap();
    }

    #[test]
    fn default_identities_are_unique() {
        assert_ne!(unique_identity(), unique_identity());
        assert_ne!(
            ElectorConfig::default().identity,
            ElectorConfig::default().identity
        );
    }

    #[test]
    fn each_rule_has_its_own_error() {
        let base = ElectorConfig::default();
        let bad = |c: ElectorConfig| c.validate().unwrap_err();

        let mut c = base.clone();
        c.lease_duration = Duration::ZERO;
        assert!(matches!(
            bad(c),
            ElectionError::NonPositiveDuration {
                field: "lease_duration"
            }
        ));

        let mut c = base.clone();
        c.retry_period = Duration::ZERO;
        assert!(matches!(
            bad(c),
            ElectionError::NonPositiveDuration {
                field: "retry_period"
            }
        ));

        let mut c = base.clone();
        c.lease_duration = Duration::from_millis(15_500);
        assert!(matches!(
            bad(c),
            ElectionError::LeaseDurationNotWholeSeconds(_)
        ));

        let mut c = base.clone();
        c.lease_duration = Duration::from_secs(u64::MAX);
        assert!(matches!(bad(c), ElectionError::LeaseDurationTooLong { .. }));

        let c = base.clone().with_timing(
            Duration::from_secs(10),
            Duration::from_secs(10),
            Duration::from_secs(2),
        );
        assert!(matches!(
            bad(c),
            ElectionError::RenewDeadlineNotShorter { .. }
        ));

        // 5 s * 1.2 = 6 s is not shorter than 6 s.
        let c = base.clone().with_timing(
            Duration::from_secs(10),
            Duration::from_secs(6),
            Duration::from_secs(5),
        );
        assert!(matches!(bad(c), ElectionError::RetryPeriodTooLong { .. }));

        for j in [-0.1, f64::NAN, f64::INFINITY] {
            let c = base.clone().with_jitter_factor(j);
            assert!(matches!(bad(c), ElectionError::InvalidJitterFactor(_)));
        }

        let c = base.clone().with_identity("  ");
        assert!(matches!(bad(c), ElectionError::EmptyIdentity));
    }

    #[test]
    fn error_messages_name_the_problem() {
        let c = ElectorConfig::default().with_timing(
            Duration::from_secs(10),
            Duration::from_secs(12),
            Duration::from_secs(2),
        );
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("renew_deadline"), "{msg}");
        assert!(msg.contains("lease_duration"), "{msg}");
    }

    #[test]
    fn map_defaults_are_knatives() {
        let s = LeaderElectionSettings::from_map(&HashMap::new()).unwrap();
        assert_eq!(s.elector.lease_duration, Duration::from_secs(60));
        assert_eq!(s.elector.renew_deadline, Duration::from_secs(40));
        assert_eq!(s.elector.retry_period, Duration::from_secs(10));
        assert_eq!(s.elector.drain_timeout, Duration::from_secs(40));
        assert_eq!(s.buckets, 1);
    }

    #[test]
    fn map_reads_knative_keys() {
        let s = LeaderElectionSettings::from_map(&map(&[
            ("lease-duration", "15s"),
            ("renew-deadline", "10s"),
            ("retry-period", "2s"),
            ("buckets", "40"),
            ("map-lease-prefix.reconciler", "r"),
            ("_example", "ignored"),
        ]))
        .unwrap();
        assert_eq!(s.elector.lease_duration, Duration::from_secs(15));
        assert_eq!(s.elector.renew_deadline, Duration::from_secs(10));
        assert_eq!(s.elector.retry_period, Duration::from_secs(2));
        assert_eq!(s.buckets, 40, "no cap of 10 buckets");
        assert_eq!(
            s.lease_prefix_mapping.get("reconciler").map(String::as_str),
            Some("r")
        );
    }

    #[test]
    fn map_errors_name_the_key() {
        let e = LeaderElectionSettings::from_map(&map(&[("lease-duration", "15")])).unwrap_err();
        match e {
            ElectionError::InvalidConfigValue { key, source } => {
                assert_eq!(key, "lease-duration");
                assert!(matches!(*source, ElectionError::InvalidDuration { .. }));
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = LeaderElectionSettings::from_map(&map(&[("buckets", "0")])).unwrap_err();
        assert!(matches!(
            e,
            ElectionError::InvalidConfigValue { ref source, .. } if matches!(**source, ElectionError::ZeroBuckets)
        ));
        let e = LeaderElectionSettings::from_map(&map(&[("buckets", "ten")])).unwrap_err();
        assert!(matches!(
            e,
            ElectionError::InvalidConfigValue { ref source, .. } if matches!(**source, ElectionError::InvalidBucketCount(_))
        ));
        let e = LeaderElectionSettings::from_map(&map(&[("lease-durration", "15s")])).unwrap_err();
        assert!(matches!(e, ElectionError::UnknownConfigKey(k) if k == "lease-durration"));
        // Valid values, invalid combination: validated as a whole.
        let e = LeaderElectionSettings::from_map(&map(&[
            ("lease-duration", "10s"),
            ("renew-deadline", "20s"),
        ]))
        .unwrap_err();
        assert!(matches!(e, ElectionError::RenewDeadlineNotShorter { .. }));
    }

    proptest! {
        #[test]
        fn from_map_never_panics(
            entries in proptest::collection::hash_map(
                "(lease-duration|renew-deadline|retry-period|buckets|drain-timeout|_x|map-lease-prefix\\.a|[a-z\\-]{1,12})",
                "[0-9a-z.µ\\-]{0,8}",
                0..6,
            )
        ) {
            if let Ok(s) = LeaderElectionSettings::from_map(&entries) {
                prop_assert!(s.elector.validate().is_ok());
                prop_assert!(s.buckets >= 1);
            }
        }

        #[test]
        fn valid_timings_round_trip_through_a_map(
            lease in 2u64..600, renew_frac in 0.1f64..0.9, retry_frac in 0.05f64..0.7
        ) {
            let lease_d = Duration::from_secs(lease);
            let renew_d = Duration::from_millis((lease as f64 * 1000.0 * renew_frac) as u64);
            let retry_d = Duration::from_millis((renew_d.as_millis() as f64 * retry_frac) as u64).max(Duration::from_millis(1));
            let m = map(&[
                ("lease-duration", &crate::duration::format_duration(lease_d)),
                ("renew-deadline", &crate::duration::format_duration(renew_d)),
                ("retry-period", &crate::duration::format_duration(retry_d)),
            ]);
            let s = LeaderElectionSettings::from_map(&m).unwrap();
            prop_assert_eq!(s.elector.lease_duration, lease_d);
            prop_assert_eq!(s.elector.renew_deadline, renew_d);
            prop_assert_eq!(s.elector.retry_period, retry_d);
        }
    }
}
