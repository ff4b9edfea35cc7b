//! Buckets: knative's sharding of a controller's work, done better.
//!
//! - [`BucketSet`]: N buckets (no cap), each its own election named
//!   `{component}.{queue}.{i:02}-of-{N:02}`; work keys map to buckets with
//!   jump consistent hashing, so changing N moves only about 1/N of the keys.
//! - [`BucketElector`]: every member campaigns for buckets on **one shared
//!   lease** (one keep-alive loop per process), and holds at most
//!   `ceil(N / members)` of them, yielding extras when members join
//!   (members register under a membership prefix, bound to the same lease).
//! - [`StaticAssignment`]: with an ordinal and N, a member owns
//!   `bucket[ordinal]` without any lease (StatefulSet-style).
//!
//! ```
//! use std::time::Duration;
//! use drover_election::buckets::{Bucket, BucketElector, BucketSet, StaticAssignment};
//! use drover_election::{ElectorConfig, Term};
//! use drover_store::embedded::EmbeddedStore;
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let set = BucketSet::new("reconciler", "pods", 12)?;
//! assert_eq!(set.owner("default/web").name.len(), "reconciler.pods.00-of-12".len());
//!
//! let store = EmbeddedStore::in_memory();
//! let member = BucketElector::builder(store, "/drover/election/", set.clone())
//!     .config(ElectorConfig::default().with_identity("member-1"))
//!     .on_promoted(|bucket: Bucket, term: Term<EmbeddedStore>| async move {
//!         // Reconcile the keys of `bucket` with fenced writes until demoted.
//!         term.cancelled().await;
//!     })
//!     .build()?;
//! let shutdown = CancellationToken::new();
//! let run = tokio::spawn({
//!     let (member, shutdown) = (member.clone(), shutdown.clone());
//!     async move { member.run(shutdown).await }
//! });
//! tokio::time::sleep(Duration::from_secs(1)).await;
//! assert_eq!(member.owned().len(), 12); // alone: every bucket
//! assert!(member.owns("default/web"));
//! shutdown.cancel();
//! run.await??;
//!
//! // Static ordinal mode: pod `web-2` owns bucket 2, no leases involved.
//! let ordinal = StaticAssignment::ordinal_from_pod_name("web-2")?;
//! let mine = StaticAssignment::new(set, ordinal)?;
//! assert_eq!(mine.bucket().index, 2);
//! # Ok(()) }
//! ```

use std::fmt;

mod dynamic;

pub use dynamic::{BucketElector, BucketElectorBuilder};

use crate::{ElectionError, Result};

/// One bucket of a [`BucketSet`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bucket {
    /// Position in the set, `0..N`.
    pub index: u32,
    /// The bucket's election name.
    pub name: String,
    /// N, the number of buckets in the set.
    pub count: u32,
}

impl Bucket {
    /// True if `key` hashes to this bucket.
    pub fn has(&self, key: &str) -> bool {
        bucket_of(key, self.count) == self.index
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// N named buckets and the hashing of work keys onto them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketSet {
    group: String,
    names: Vec<String>,
}

impl BucketSet {
    /// `count` buckets named `{component}.{queue}.{i:02}-of-{N:02}`
    /// (lowercased). The names must be usable as one key segment.
    pub fn new(component: &str, queue: &str, count: u32) -> Result<Self> {
        if count == 0 {
            return Err(ElectionError::ZeroBuckets);
        }
        let base = format!("{component}.{queue}").to_lowercase();
        drover_store::keys::validate_segment("bucket name", &base)?;
        if component.is_empty() || queue.is_empty() {
            return Err(ElectionError::InvalidName {
                name: base,
                reason: "component and queue must not be empty",
            });
        }
        let names = (0..count)
            .map(|i| format!("{base}.{i:02}-of-{count:02}"))
            .collect();
        Ok(BucketSet { group: base, names })
    }

    /// Buckets with custom names (one per bucket, in order); `group` names
    /// the set (its membership prefix).
    pub fn with_names(group: &str, names: Vec<String>) -> Result<Self> {
        drover_store::keys::validate_segment("bucket group", group)?;
        if names.is_empty() {
            return Err(ElectionError::ZeroBuckets);
        }
        for name in &names {
            drover_store::keys::validate_segment("bucket name", name)?;
        }
        if u32::try_from(names.len()).is_err() {
            return Err(ElectionError::InvalidBucketCount(names.len().to_string()));
        }
        Ok(BucketSet {
            group: group.to_owned(),
            names,
        })
    }

    /// The set's name (`{component}.{queue}`), for its membership prefix.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// N.
    pub fn count(&self) -> u32 {
        u32::try_from(self.names.len()).unwrap_or(u32::MAX)
    }

    /// Bucket `index`, if in range.
    pub fn bucket(&self, index: u32) -> Option<Bucket> {
        self.names.get(index as usize).map(|name| Bucket {
            index,
            name: name.clone(),
            count: self.count(),
        })
    }

    /// Every bucket, in order.
    pub fn buckets(&self) -> impl Iterator<Item = Bucket> + '_ {
        (0..self.count()).filter_map(|i| self.bucket(i))
    }

    /// The bucket that owns `key`.
    pub fn owner(&self, key: &str) -> Bucket {
        let index = bucket_of(key, self.count());
        Bucket {
            index,
            name: self.names[index as usize].clone(),
            count: self.count(),
        }
    }
}

/// Which of `count` buckets `key` belongs to: jump consistent hash
/// (Lamping & Veach) of a 64-bit FNV-1a hash of the key, mixed.
pub fn bucket_of(key: &str, count: u32) -> u32 {
    jump_hash(mix(fnv1a(key.as_bytes())), count.max(1))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// splitmix64's finalizer: spreads FNV's weak low bits over the word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn jump_hash(mut key: u64, count: u32) -> u32 {
    let mut bucket: i64 = -1;
    let mut next: i64 = 0;
    while next < i64::from(count) {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let ratio = (1u64 << 31) as f64 / ((key >> 33) + 1) as f64;
        next = ((bucket + 1) as f64 * ratio) as i64;
    }
    u32::try_from(bucket).unwrap_or(0)
}

/// Static ordinal mode: a member with a stable ordinal (a StatefulSet pod's)
/// owns exactly `bucket[ordinal]`, without leases. Safe only where the
/// platform guarantees at most one member per ordinal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticAssignment {
    set: BucketSet,
    bucket: Bucket,
}

impl StaticAssignment {
    /// The assignment of `ordinal` in `set`.
    pub fn new(set: BucketSet, ordinal: u32) -> Result<Self> {
        let bucket = set
            .bucket(ordinal)
            .ok_or(ElectionError::OrdinalOutOfRange {
                ordinal,
                buckets: set.count(),
            })?;
        Ok(StaticAssignment { set, bucket })
    }

    /// Parses a StatefulSet pod name's ordinal (`name-<ordinal>`).
    pub fn ordinal_from_pod_name(pod: &str) -> Result<u32> {
        pod.rsplit_once('-')
            .and_then(|(_, n)| n.parse::<u32>().ok())
            .ok_or_else(|| ElectionError::InvalidName {
                name: pod.to_owned(),
                reason: "a StatefulSet pod name ends with -<ordinal>",
            })
    }

    /// The owned bucket.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The whole set.
    pub fn set(&self) -> &BucketSet {
        &self.set
    }

    /// True if this member owns `key`.
    pub fn owns(&self, key: &str) -> bool {
        self.bucket.has(key)
    }
}

/// At most how many buckets one of `members` members may hold.
pub fn fair_share(buckets: u32, members: usize) -> u32 {
    let members = u32::try_from(members.max(1)).unwrap_or(u32::MAX);
    buckets.div_ceil(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_follow_knative() {
        let set = BucketSet::new("Controller", "Queue", 12).unwrap();
        assert_eq!(set.count(), 12);
        assert_eq!(set.bucket(0).unwrap().name, "controller.queue.00-of-12");
        assert_eq!(set.bucket(11).unwrap().name, "controller.queue.11-of-12");
        assert!(set.bucket(12).is_none());
        let big = BucketSet::new("c", "q", 150).unwrap();
        assert_eq!(big.bucket(7).unwrap().name, "c.q.07-of-150");
    }

    #[test]
    fn bad_input_is_typed() {
        assert!(matches!(
            BucketSet::new("c", "q", 0),
            Err(ElectionError::ZeroBuckets)
        ));
        assert!(matches!(
            BucketSet::new("c/x", "q", 2),
            Err(ElectionError::InvalidKey(_))
        ));
        assert!(matches!(
            BucketSet::new("", "q", 2),
            Err(ElectionError::InvalidName { .. })
        ));
        assert!(matches!(
            BucketSet::with_names("g", vec![]),
            Err(ElectionError::ZeroBuckets)
        ));
        let set = BucketSet::new("c", "q", 3).unwrap();
        assert!(matches!(
            StaticAssignment::new(set.clone(), 3),
            Err(ElectionError::OrdinalOutOfRange {
                ordinal: 3,
                buckets: 3
            })
        ));
        assert!(StaticAssignment::ordinal_from_pod_name("web").is_err());
        assert_eq!(StaticAssignment::ordinal_from_pod_name("web-2").unwrap(), 2);
    }

    #[test]
    fn static_assignment_owns_its_bucket_only() {
        let set = BucketSet::new("c", "q", 4).unwrap();
        let members: Vec<_> = (0..4)
            .map(|o| StaticAssignment::new(set.clone(), o).unwrap())
            .collect();
        for i in 0..200 {
            let key = format!("ns/pod-{i}");
            let owners: Vec<u32> = members
                .iter()
                .filter(|m| m.owns(&key))
                .map(|m| m.bucket().index)
                .collect();
            assert_eq!(owners, [set.owner(&key).index], "{key}");
        }
    }

    #[test]
    fn keys_spread_over_all_buckets() {
        let n = 16;
        let mut counts = vec![0u32; n as usize];
        for i in 0..16_000 {
            counts[bucket_of(&format!("key-{i}"), n) as usize] += 1;
        }
        // 1000 expected per bucket; a fair hash stays well within +-25%.
        for (i, c) in counts.iter().enumerate() {
            assert!((750..=1250).contains(c), "bucket {i} got {c}");
        }
    }

    #[test]
    fn fair_share_is_ceiling() {
        assert_eq!(fair_share(10, 3), 4);
        assert_eq!(fair_share(10, 0), 10);
        assert_eq!(fair_share(1, 5), 1);
        assert_eq!(fair_share(12, 4), 3);
    }

    proptest! {
        #[test]
        fn owner_is_in_range_and_stable(key in "\\PC{0,32}", n in 1u32..500) {
            let b = bucket_of(&key, n);
            prop_assert!(b < n);
            prop_assert_eq!(b, bucket_of(&key, n));
        }

        /// Growing N by one moves a key only into the new bucket.
        #[test]
        fn growing_moves_keys_only_to_the_new_bucket(key in "\\PC{0,32}", n in 1u32..500) {
            let before = bucket_of(&key, n);
            let after = bucket_of(&key, n + 1);
            prop_assert!(after == before || after == n);
        }
    }

    #[test]
    fn growing_moves_about_one_in_n() {
        let n = 10;
        let moved = (0..10_000)
            .filter(|i| {
                let k = format!("k{i}");
                bucket_of(&k, n) != bucket_of(&k, n + 1)
            })
            .count();
        // Expect ~10000/11 = 909.
        assert!((700..=1100).contains(&moved), "moved {moved}");
    }
}
