//! What the [`crate::Elector`] and the bucket elector share: granting the
//! candidate lease (with its keep-alive round trips reported as metrics),
//! leading one term (work in the term's scope, term limit, bounded drain,
//! release only after the drain), and letting the lease go.

use std::future::Future;
use std::sync::Arc;

use drover_store::lease::{Lease, LeaseConfig};
use drover_store::{Store, StoreError};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::ElectorConfig;
use crate::elector::TermSummary;
use crate::metrics::ElectionMetrics;
use crate::term::{Term, TermEnd};

/// Grants a candidate lease for `config` (TTL = lease duration, keep-alive
/// every retry period, validity ending `lease_duration - renew_deadline`
/// before the store could expire it), and reports its keep-alive round
/// trips to `metrics`. `None` if `shutdown` fired first.
pub(crate) async fn grant_lease<S: Store>(
    store: &S,
    config: &ElectorConfig,
    metrics: &Arc<dyn ElectionMetrics>,
    label: &Arc<str>,
    shutdown: &CancellationToken,
) -> Result<Option<Lease<S>>, StoreError> {
    let lease_config = LeaseConfig::new(config.lease_ttl_secs())
        .with_keep_alive_interval(config.retry_period)
        .with_safety_margin(config.lease_duration - config.renew_deadline);
    let lease = tokio::select! {
        _ = shutdown.cancelled() => return Ok(None),
        granted = Lease::grant(store.clone(), lease_config) => granted?,
    };
    let mut stats = lease.subscribe_keep_alives();
    let (metrics, label) = (metrics.clone(), label.clone());
    // Ends by itself when the lease handle and its keep-alive task are gone.
    tokio::spawn(
        async move {
            while stats.changed().await.is_ok() {
                let rtt = stats.borrow_and_update().last_rtt;
                if let Some(rtt) = rtt {
                    metrics.keep_alive_rtt(&label, rtt);
                }
            }
        }
        .in_current_span(),
    );
    Ok(Some(lease))
}

/// Lets a candidate lease go: revoked (its keys vanish, the next candidate
/// leads at once) or, with `lapse`, orphaned (its keys stay until the store
/// expires it).
pub(crate) async fn let_go<S: Store>(lease: Lease<S>, lapse: bool) {
    if lapse {
        lease.orphan();
        return;
    }
    let id = lease.id();
    if let Err(e) = lease.revoke().await {
        tracing::debug!(error = %e, lease = %format_args!("{id:x}"), "revoking the lease failed; it will expire");
    }
}

/// Leads one term: runs `work` in its own task, ends the term on the first
/// of (the term ends by itself, `stop` resolves with a reason, the term limit
/// passes, the work panics), gives the work the drain timeout to finish
/// (then aborts it), and resigns only after that, when the reason calls for
/// it (term limit, resignation, or shutdown with `release_on_cancel`).
/// `ended` runs as soon as the term has ended, before the drain.
///
/// Runs inside a `term` span carrying the election prefix and the token.
pub(crate) async fn lead_term<S: Store>(
    term: &Term<S>,
    work: BoxFuture<'static, ()>,
    stop: impl Future<Output = TermEnd>,
    ended: impl FnOnce(),
    config: &ElectorConfig,
) -> TermSummary {
    let span = tracing::info_span!(
        "term",
        election = %term.prefix(),
        token = term.token(),
        lease = %format_args!("{:x}", term.lease_id())
    );
    lead_in_span(term, work, stop, ended, config, span.clone())
        .instrument(span)
        .await
}

async fn lead_in_span<S: Store>(
    term: &Term<S>,
    work: BoxFuture<'static, ()>,
    stop: impl Future<Output = TermEnd>,
    ended: impl FnOnce(),
    config: &ElectorConfig,
    span: tracing::Span,
) -> TermSummary {
    tracing::info!("started leading");
    let mut work = tokio::spawn(work.instrument(span));
    let mut work_done = false;
    let term_limit = async {
        if config.term_limit.is_zero() {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(config.term_limit).await
        }
    };
    tokio::pin!(term_limit, stop);
    let reason = loop {
        tokio::select! {
            _ = term.cancelled() => break term.end_reason().unwrap_or(TermEnd::Dropped),
            reason = &mut stop => break reason,
            _ = &mut term_limit => break TermEnd::TermLimit,
            joined = &mut work, if !work_done => {
                work_done = true;
                if matches!(joined, Err(ref e) if e.is_panic()) {
                    tracing::error!("leader work panicked; ending the term");
                    break TermEnd::Resigned;
                }
            }
        }
    };
    term.end(reason);
    ended();
    let reason = term.end_reason().unwrap_or(reason);
    let duration = term.started_at().elapsed();

    // Drain: the work saw the cancellation; give it the drain timeout.
    let drained = work_done
        || match tokio::time::timeout(config.drain_timeout, &mut work).await {
            Ok(_) => true,
            Err(_) => {
                tracing::warn!(timeout = ?config.drain_timeout, "leader work did not drain in time; aborting it");
                work.abort();
                false
            }
        };

    // Release only after the work drained, so no guarded work overlaps the
    // next leader's (its writes are fenced anyway).
    let release = match reason {
        TermEnd::TermLimit | TermEnd::Resigned => true,
        TermEnd::Shutdown => config.release_on_cancel,
        _ => false,
    };
    if release && let Err(e) = term.resign().await {
        tracing::warn!(error = %e, "resigning failed; the key expires with the lease");
    }
    tracing::info!(%reason, drained, "stopped leading");
    TermSummary {
        token: term.token(),
        key: term.key().to_owned(),
        reason,
        duration,
        drained,
    }
}
