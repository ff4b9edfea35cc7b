//! Single lease renewals over reusable keep-alive streams.
//!
//! etcd renews leases only through the bidirectional `LeaseKeepAlive`
//! stream. Opening a stream per renewal costs a round trip and a server-side
//! goroutine each time, so each lease keeps its stream open between calls:
//! a renewal is one request and one answer on it. A broken stream is
//! replaced once within the same call; a renewal abandoned half-way (a
//! caller's timeout) takes its stream with it, so an answer is never read
//! for a later request than its own; streams of leases nobody renews any
//! more are closed by a periodic sweep.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use drover_store::{LeaseId, Result, StoreError};
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::time::{Instant, timeout};

use crate::error_map::{ErrorContext, map_error};

/// A stream unused this long is closed by the next sweep.
const IDLE_STREAM: Duration = Duration::from_secs(300);
/// How often renewals look for idle streams.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

struct Keeper {
    requests: LeaseKeeper,
    answers: LeaseKeepAliveStream,
}

#[derive(Default)]
struct Slot {
    /// Serialises renewals of one lease: answers on a stream carry no
    /// request id, so one request may be in flight per stream.
    keeper: tokio::sync::Mutex<Option<Keeper>>,
    last_used: parking_lot::Mutex<Option<Instant>>,
}

/// The keep-alive streams of one store (shared by its clones).
#[derive(Default)]
pub(crate) struct KeepAlives {
    slots: parking_lot::Mutex<HashMap<LeaseId, Arc<Slot>>>,
    last_sweep: parking_lot::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for KeepAlives {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepAlives")
            .field("open_streams", &self.slots.lock().len())
            .finish()
    }
}

enum Renewal {
    Renewed(i64),
    Gone,
    Broken(StoreError),
}

impl KeepAlives {
    /// Renew `id` once and return the TTL it was renewed to.
    pub(crate) async fn renew(&self, client: &Client, id: LeaseId, limit: Duration) -> Result<i64> {
        self.sweep_idle();
        let slot = self.slots.lock().entry(id).or_default().clone();
        *slot.last_used.lock() = Some(Instant::now());
        let mut keeper = slot.keeper.lock().await;

        // The stream is taken out of the slot for the round trip and put
        // back only once its answer was read: if this call is abandoned
        // half-way (a caller's timeout), the stream, with the answer still
        // owed on it, is dropped with the call instead of handing that stale
        // answer to the next renewal.
        if let Some(mut open) = keeper.take() {
            match renew_on(&mut open, id, limit).await {
                Renewal::Renewed(ttl) => {
                    *keeper = Some(open);
                    return Ok(ttl);
                }
                Renewal::Gone => {
                    drop(keeper);
                    self.forget(id);
                    return Err(StoreError::LeaseNotFound(id));
                }
                Renewal::Broken(err) => {
                    tracing::debug!(lease = %format_args!("{id:x}"), error = %err, "keep-alive stream broke; reopening");
                }
            }
        }

        let ctx = ErrorContext::new("lease keep-alive").lease(id);
        // Opening the stream renews once, but etcd-client keeps that answer's
        // TTL to itself; a second renewal on the new stream reports it.
        let opened = timeout(limit, client.lease_client().keep_alive(id)).await;
        let (requests, answers) = match opened {
            Ok(Ok(pair)) => pair,
            Ok(Err(err)) => {
                let err = map_error(err, ctx);
                if matches!(err, StoreError::LeaseNotFound(_)) {
                    drop(keeper);
                    self.forget(id);
                }
                return Err(err);
            }
            Err(_) => return Err(timed_out(limit)),
        };
        let mut open = Keeper { requests, answers };
        match renew_on(&mut open, id, limit).await {
            Renewal::Renewed(ttl) => {
                *keeper = Some(open);
                Ok(ttl)
            }
            Renewal::Gone => {
                drop(keeper);
                self.forget(id);
                Err(StoreError::LeaseNotFound(id))
            }
            Renewal::Broken(err) => Err(err),
        }
    }

    /// Close the stream of a lease that was revoked or expired.
    pub(crate) fn forget(&self, id: LeaseId) {
        self.slots.lock().remove(&id);
    }

    fn sweep_idle(&self) {
        let now = Instant::now();
        {
            let mut last = self.last_sweep.lock();
            match *last {
                Some(at) if now.duration_since(at) < SWEEP_EVERY => return,
                _ => *last = Some(now),
            }
        }
        self.slots.lock().retain(|_, slot| {
            let recent = slot
                .last_used
                .lock()
                .is_some_and(|at| now.duration_since(at) < IDLE_STREAM);
            // A slot in use right now is kept whatever its age.
            recent || slot.keeper.try_lock().is_err()
        });
    }

    pub(crate) fn open_streams(&self) -> usize {
        self.slots.lock().len()
    }
}

async fn renew_on(keeper: &mut Keeper, id: LeaseId, limit: Duration) -> Renewal {
    let ctx = ErrorContext::new("lease keep-alive").lease(id);
    let round_trip = async {
        keeper.requests.keep_alive().await?;
        keeper.answers.message().await
    };
    match timeout(limit, round_trip).await {
        // etcd answers an unknown or expired lease with TTL 0.
        Ok(Ok(Some(answer))) if answer.ttl() <= 0 => Renewal::Gone,
        Ok(Ok(Some(answer))) => Renewal::Renewed(answer.ttl()),
        Ok(Ok(None)) => Renewal::Broken(StoreError::Unavailable {
            message: String::from("etcd closed the lease keep-alive stream"),
            source: None,
        }),
        Ok(Err(err)) => Renewal::Broken(map_error(err, ctx)),
        Err(_) => Renewal::Broken(timed_out(limit)),
    }
}

fn timed_out(limit: Duration) -> StoreError {
    StoreError::Unavailable {
        message: format!("etcd lease keep-alive timed out after {limit:?}"),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_used_now() -> Arc<Slot> {
        let slot = Arc::new(Slot::default());
        *slot.last_used.lock() = Some(Instant::now());
        slot
    }

    #[tokio::test(start_paused = true)]
    async fn idle_streams_are_closed_and_recent_or_busy_ones_kept() {
        let keep_alives = KeepAlives::default();
        for id in [1, 2, 3] {
            keep_alives.slots.lock().insert(id, slot_used_now());
        }
        keep_alives.sweep_idle();
        assert_eq!(keep_alives.open_streams(), 3, "nothing is idle yet");

        tokio::time::advance(IDLE_STREAM + SWEEP_EVERY).await;
        let recent = keep_alives.slots.lock()[&2].clone();
        *recent.last_used.lock() = Some(Instant::now());
        let busy = keep_alives.slots.lock()[&3].clone();
        let renewing = busy.keeper.try_lock().expect("not locked yet");

        keep_alives.sweep_idle();
        let mut left: Vec<_> = keep_alives.slots.lock().keys().copied().collect();
        left.sort_unstable();
        assert_eq!(left, vec![2, 3], "only the idle, unused stream is closed");
        drop(renewing);

        // Sweeps are rate-limited: soon after one, the idle stream 3 stays.
        tokio::time::advance(SWEEP_EVERY / 2).await;
        keep_alives.sweep_idle();
        assert_eq!(keep_alives.open_streams(), 2);
        tokio::time::advance(SWEEP_EVERY).await;
        keep_alives.sweep_idle();
        let left: Vec<_> = keep_alives.slots.lock().keys().copied().collect();
        assert_eq!(left, vec![2], "stream 2 was used recently enough");
    }

    #[test]
    fn forget_closes_one_stream() {
        let keep_alives = KeepAlives::default();
        keep_alives
            .slots
            .lock()
            .insert(7, Arc::new(Slot::default()));
        keep_alives
            .slots
            .lock()
            .insert(8, Arc::new(Slot::default()));
        keep_alives.forget(7);
        assert_eq!(keep_alives.open_streams(), 1);
    }
}
