//! [`WorkQueue`]: which key runs next, and when. Pure bookkeeping: no tasks,
//! no clock reads (callers pass `now`), so its rules are unit-tested
//! directly.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Duration;

use drover_store::backoff::{Backoff, BackoffPolicy};
use tokio::time::Instant;

/// How a reconcile of a key ended, for [`WorkQueue::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finished {
    /// Succeeded; nothing more unless triggered.
    Done,
    /// Succeeded; run again after this delay.
    RequeueAfter(Duration),
    /// Failed; run again after the key's next backoff delay.
    Failed,
}

#[derive(Debug)]
struct Entry {
    /// When the key should run next, with a sequence number that keeps the
    /// schedule FIFO among equal instants.
    due: Option<(Instant, u64)>,
    running: bool,
    /// Set by a failure, cleared by a success: no trigger runs the key
    /// before this (a failing key is not hammered by a stream of events).
    not_before: Option<Instant>,
    backoff: Option<Backoff>,
}

impl Entry {
    fn idle(&self) -> bool {
        self.due.is_none() && !self.running && self.backoff.is_none()
    }
}

/// A queue of keys that merges duplicate triggers, never hands out a key
/// that is running, and backs off per key.
///
/// - [`WorkQueue::add`] schedules a key at an instant; a key already
///   scheduled keeps the earlier of the two (triggers merge).
/// - [`WorkQueue::pop`] hands out the earliest due key and marks it running;
///   a running key is never handed out again until [`WorkQueue::finish`].
/// - A trigger that arrives while the key runs is remembered and the key
///   runs once more after it finishes.
/// - [`WorkQueue::finish`] with [`Finished::Failed`] schedules the key after
///   its own backoff delay (growing per failure) and holds later triggers
///   until then; a success resets the key's backoff.
#[derive(Debug)]
pub(crate) struct WorkQueue<K> {
    entries: HashMap<K, Entry>,
    schedule: BTreeMap<(Instant, u64), K>,
    seq: u64,
    policy: BackoffPolicy,
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    pub(crate) fn new(policy: BackoffPolicy) -> Self {
        WorkQueue {
            entries: HashMap::new(),
            schedule: BTreeMap::new(),
            seq: 0,
            policy,
        }
    }

    /// Schedules `key` to run at `at` (merged with an existing schedule:
    /// the earlier wins, but never before the key's backoff allows).
    pub(crate) fn add(&mut self, key: K, at: Instant) {
        let entry = self.entries.entry(key.clone()).or_insert(Entry {
            due: None,
            running: false,
            not_before: None,
            backoff: None,
        });
        let at = entry.not_before.map_or(at, |nb| at.max(nb));
        if let Some((due, seq)) = entry.due {
            if due <= at {
                return;
            }
            if !entry.running {
                self.schedule.remove(&(due, seq));
            }
        }
        self.seq += 1;
        entry.due = Some((at, self.seq));
        if !entry.running {
            self.schedule.insert((at, self.seq), key);
        }
    }

    /// The earliest key due at `now`, marked running.
    pub(crate) fn pop(&mut self, now: Instant) -> Option<K> {
        let (&(at, seq), _) = self.schedule.first_key_value()?;
        if at > now {
            return None;
        }
        let key = self.schedule.remove(&(at, seq))?;
        let entry = self.entries.get_mut(&key)?;
        entry.due = None;
        entry.running = true;
        Some(key)
    }

    /// Records the end of `key`'s reconcile. Returns the backoff delay after
    /// a failure (for logs).
    pub(crate) fn finish(&mut self, key: &K, finished: Finished, now: Instant) -> Option<Duration> {
        let entry = self.entries.get_mut(key)?;
        entry.running = false;
        let mut delay = None;
        let next = match finished {
            Finished::Done => {
                entry.backoff = None;
                entry.not_before = None;
                None
            }
            Finished::RequeueAfter(after) => {
                entry.backoff = None;
                entry.not_before = None;
                Some(now + after)
            }
            Finished::Failed => {
                let policy = self.policy;
                let wait = entry
                    .backoff
                    .get_or_insert_with(|| Backoff::new(policy))
                    .next_delay();
                delay = Some(wait);
                entry.not_before = Some(now + wait);
                Some(now + wait)
            }
        };
        // A trigger that came while the key ran is rescheduled (held back by
        // a failure's backoff); then the outcome's own requeue merges in.
        if let Some((due, _)) = entry.due.take() {
            self.add(key.clone(), due);
        }
        if let Some(at) = next {
            self.add(key.clone(), at);
        }
        if self.entries.get(key).is_some_and(Entry::idle) {
            self.entries.remove(key);
        }
        delay
    }

    /// When the earliest scheduled key is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.schedule.first_key_value().map(|(&(at, _), _)| at)
    }

    /// Keys waiting to run (scheduled, or triggered while running).
    pub(crate) fn depth(&self) -> usize {
        self.entries.values().filter(|e| e.due.is_some()).count()
    }

    /// Failures in a row of `key` (0 when it last succeeded).
    pub(crate) fn failures(&self, key: &K) -> u32 {
        self.entries
            .get(key)
            .and_then(|e| e.backoff.as_ref())
            .map_or(0, Backoff::failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn queue() -> WorkQueue<&'static str> {
        WorkQueue::new(BackoffPolicy::new(ms(100), ms(1000)))
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_triggers_merge_and_the_earliest_wins() {
        let mut q = queue();
        let now = Instant::now();
        q.add("a", now + ms(500));
        q.add("a", now);
        q.add("a", now + ms(50));
        q.add("b", now);
        assert_eq!(q.depth(), 2);
        assert_eq!(q.pop(now), Some("a"));
        assert_eq!(q.pop(now), Some("b"));
        assert_eq!(q.pop(now + ms(10_000)), None, "each key once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_key_is_not_handed_out_and_reruns_once_after() {
        let mut q = queue();
        let now = Instant::now();
        q.add("a", now);
        assert_eq!(q.pop(now), Some("a"));
        q.add("a", now);
        q.add("a", now);
        assert_eq!(q.pop(now), None, "running");
        assert_eq!(q.depth(), 1);
        q.finish(&"a", Finished::Done, now);
        assert_eq!(q.pop(now), Some("a"), "the trigger during the run");
        q.finish(&"a", Finished::Done, now);
        assert_eq!(q.pop(now), None, "once");
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_delays() {
        let mut q = queue();
        let now = Instant::now();
        q.add("a", now);
        q.pop(now);
        q.finish(&"a", Finished::RequeueAfter(ms(300)), now);
        assert_eq!(q.next_due(), Some(now + ms(300)));
        assert_eq!(q.pop(now + ms(299)), None);
        assert_eq!(q.pop(now + ms(300)), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_per_key_hold_triggers_and_reset_on_success() {
        let mut q = queue();
        let mut now = Instant::now();
        q.add("a", now);
        let mut delays = Vec::new();
        for _ in 0..5 {
            now = q.next_due().unwrap();
            assert_eq!(q.pop(now), Some("a"));
            delays.push(q.finish(&"a", Finished::Failed, now).unwrap());
        }
        assert_eq!(delays, [ms(100), ms(200), ms(400), ms(800), ms(1000)]);
        assert_eq!(q.failures(&"a"), 5);
        // A trigger during the backoff does not run it early.
        q.add("a", now);
        assert_eq!(q.pop(now + ms(999)), None);
        now += ms(1000);
        assert_eq!(q.pop(now), Some("a"));
        q.finish(&"a", Finished::Done, now);
        assert_eq!(q.failures(&"a"), 0);
        q.add("a", now);
        q.pop(now);
        assert_eq!(
            q.finish(&"a", Finished::Failed, now),
            Some(ms(100)),
            "reset"
        );
        // Another key's failures are its own.
        q.add("b", now);
        q.pop(now);
        assert_eq!(q.finish(&"b", Finished::Failed, now), Some(ms(100)));
    }
}
