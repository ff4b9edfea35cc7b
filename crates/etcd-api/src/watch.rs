//! `etcdserverpb.Watch`: one bidirectional stream carrying many watches,
//! each one a [`Store::watch`].
//!
//! Memory stays bounded whatever the client does: responses go through one
//! bounded channel per stream, each watch task holds at most one response
//! it could not send yet, and a watch whose client has not read for
//! [`EtcdApiConfig::watch_send_timeout`](crate::EtcdApiConfig) is canceled
//! (its store watch dropped) with a reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use drover_store::{Store, StoreError, Watch, WatchStream};
use futures::StreamExt;
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::Shared;
use crate::convert::{self, key_range};
use crate::pb::etcdserverpb as etcd;
use crate::status::COMPACTED;

/// etcd's id for responses that belong to no single watch.
pub const INVALID_WATCH_ID: i64 = -1;

/// How long a progress request waits for every watch of the stream to
/// catch up with the revision current when it was asked.
const PROGRESS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// etcd's cancel reason for a client-chosen id already in use on the stream.
pub const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

type Outbound = mpsc::Sender<Result<etcd::WatchResponse, Status>>;

/// The Watch handler.
#[derive(Debug)]
pub struct WatchService<S> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> WatchService<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        WatchService { shared }
    }
}

#[tonic::async_trait]
impl<S: Store> etcd::watch_server::Watch for WatchService<S> {
    type WatchStream = ReceiverStream<Result<etcd::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<etcd::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = request.into_inner();
        let (out, rx) = mpsc::channel(self.shared.config.watch_buffer.max(1));
        let session = Session {
            shared: self.shared.clone(),
            out,
            watches: Arc::new(Mutex::new(HashMap::new())),
            next_id: 0,
            ended: CancellationToken::new(),
            progress_pending: Arc::new(AtomicBool::new(false)),
        };
        tokio::spawn(session.run(inbound));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One live watch of a stream.
#[derive(Debug)]
struct Entry {
    cancel: CancellationToken,
    /// Every event of the watch up to this revision has been queued for the
    /// client (what a progress response may promise).
    delivered: Arc<AtomicI64>,
    /// Asks the watch task for a progress notification from the store.
    progress: Arc<Notify>,
}

type Watches = Arc<Mutex<HashMap<i64, Entry>>>;

/// One client stream: reads requests, runs one task per watch.
struct Session<S> {
    shared: Arc<Shared<S>>,
    out: Outbound,
    watches: Watches,
    next_id: i64,
    /// Fires when the stream ends, stopping every watch task.
    ended: CancellationToken,
    /// A progress answer is on its way; further requests join it (so a
    /// client that sends requests but reads nothing cannot pile up tasks).
    progress_pending: Arc<AtomicBool>,
}

impl<S: Store> Session<S> {
    async fn run(mut self, mut inbound: Streaming<etcd::WatchRequest>) {
        let _stop_watches = self.ended.clone().drop_guard();
        loop {
            let next = tokio::select! {
                next = inbound.next() => next,
                () = self.out.closed() => break,
            };
            let request = match next {
                None => break,
                Some(Err(status)) => {
                    tracing::debug!("watch stream ended: {status}");
                    break;
                }
                Some(Ok(request)) => request,
            };
            use etcd::watch_request::RequestUnion;
            let keep_going = match request.request_union {
                Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
                Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
                Some(RequestUnion::ProgressRequest(_)) => self.progress().await,
                // etcd ignores requests it does not know rather than ending
                // the stream.
                None => true,
            };
            if !keep_going {
                break;
            }
        }
    }

    /// Queues a response; false once the client is gone.
    async fn send(&self, response: etcd::WatchResponse) -> bool {
        self.out.send(Ok(response)).await.is_ok()
    }

    async fn header(&self) -> Option<etcd::ResponseHeader> {
        match self.shared.current_header().await {
            Ok(header) => Some(header),
            Err(status) => {
                tracing::warn!("watch stream: reading the current revision failed: {status}");
                let _ = self.out.send(Err(status)).await;
                None
            }
        }
    }

    async fn create(&mut self, create: etcd::WatchCreateRequest) -> bool {
        let Some(header) = self.header().await else {
            return false;
        };
        let refuse = |watch_id: i64, reason: String| etcd::WatchResponse {
            header: Some(header),
            watch_id,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        };
        if create.start_revision < 0 {
            return self
                .send(refuse(INVALID_WATCH_ID, COMPACTED.to_string()))
                .await;
        }
        let id = if create.watch_id != 0 {
            if self.watches.lock().contains_key(&create.watch_id) {
                return self
                    .send(refuse(INVALID_WATCH_ID, DUPLICATE_WATCH_ID.to_string()))
                    .await;
            }
            create.watch_id
        } else {
            let watches = self.watches.lock();
            while watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        // etcd: an empty key is the smallest key, "\0".
        let key = if create.key.is_empty() {
            vec![0]
        } else {
            create.key
        };
        use etcd::watch_create_request::FilterType;
        let watch = Watch {
            range: key_range(key, create.range_end),
            start_revision: create.start_revision,
            prev_kv: create.prev_kv,
            filter_puts: create.filters.contains(&(FilterType::Noput as i32)),
            filter_deletes: create.filters.contains(&(FilterType::Nodelete as i32)),
            progress_notify: create.progress_notify,
        };
        let stream = match self.shared.store.watch(watch).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(watch = id, "watch refused: {e}");
                return self
                    .send(refuse(id, crate::to_status(&e).message().to_string()))
                    .await;
            }
        };
        let start = if create.start_revision > 0 {
            create.start_revision - 1
        } else {
            header.revision
        };
        let entry = Entry {
            cancel: self.ended.child_token(),
            delivered: Arc::new(AtomicI64::new(start)),
            progress: Arc::new(Notify::new()),
        };
        let task = WatchTask {
            shared: self.shared.clone(),
            id,
            out: self.out.clone(),
            cancel: entry.cancel.clone(),
            delivered: entry.delivered.clone(),
            progress: entry.progress.clone(),
            watches: self.watches.clone(),
            fragment: create.fragment,
            progress_notify: create.progress_notify,
            start_revision: create.start_revision,
        };
        self.watches.lock().insert(id, entry);
        // The created response goes out before any event of the watch.
        let created = etcd::WatchResponse {
            header: Some(header),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        if !self.send(created).await {
            return false;
        }
        tokio::spawn(task.run(stream));
        true
    }

    async fn cancel(&mut self, id: i64) -> bool {
        let Some(entry) = self.watches.lock().remove(&id) else {
            // etcd does not answer a cancel of an unknown id.
            return true;
        };
        entry.cancel.cancel();
        let Some(header) = self.header().await else {
            return false;
        };
        self.send(etcd::WatchResponse {
            header: Some(header),
            watch_id: id,
            canceled: true,
            ..Default::default()
        })
        .await
    }

    /// Answers a progress request (etcd's `RequestProgressAll`): asks every
    /// watch's store stream for progress, then (off the request loop)
    /// answers with the highest revision every watch of the stream has
    /// delivered all its events up to, once that reaches the revision
    /// current now, or after [`PROGRESS_WAIT`] with what it is then.
    async fn progress(&mut self) -> bool {
        if self.progress_pending.swap(true, Ordering::AcqRel) {
            return true;
        }
        let Some(header) = self.header().await else {
            return false;
        };
        let target = header.revision;
        let delivered: Vec<Arc<AtomicI64>> = self
            .watches
            .lock()
            .values()
            .map(|w| {
                w.progress.notify_one();
                w.delivered.clone()
            })
            .collect();
        let out = self.out.clone();
        let shared = self.shared.clone();
        let pending = self.progress_pending.clone();
        let ended = self.ended.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + PROGRESS_WAIT;
            let revision = loop {
                let low = delivered
                    .iter()
                    .map(|d| d.load(Ordering::Acquire))
                    .min()
                    .unwrap_or(target);
                if low >= target || tokio::time::Instant::now() >= deadline {
                    break low;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            };
            let answer = etcd::WatchResponse {
                header: Some(shared.header(revision)),
                watch_id: INVALID_WATCH_ID,
                ..Default::default()
            };
            tokio::select! {
                () = ended.cancelled() => {}
                _ = out.send(Ok(answer)) => {}
            }
            // Only now may a request start another answer.
            pending.store(false, Ordering::Release);
        });
        true
    }
}

/// Forwards one store watch to the client stream.
struct WatchTask<S> {
    shared: Arc<Shared<S>>,
    id: i64,
    out: Outbound,
    cancel: CancellationToken,
    delivered: Arc<AtomicI64>,
    progress: Arc<Notify>,
    watches: Watches,
    fragment: bool,
    progress_notify: bool,
    start_revision: i64,
}

/// Why a watch task stopped sending.
enum Stop {
    /// Canceled by the client or the stream ended: nothing more to say.
    Quiet,
    /// Tell the client, with this response.
    Tell(etcd::WatchResponse),
}

impl<S: Store> WatchTask<S> {
    async fn run(self, mut stream: WatchStream) {
        let stop = loop {
            let item = tokio::select! {
                () = self.cancel.cancelled() => break Stop::Quiet,
                () = self.progress.notified() => {
                    if stream.request_progress().is_err() {
                        // The store ended the watch; the next item says why.
                        tracing::debug!(watch = self.id, "progress asked of an ended watch");
                    }
                    continue;
                }
                item = stream.next() => item,
            };
            let batch = match item {
                Some(Ok(batch)) => batch,
                Some(Err(StoreError::Compacted {
                    compact_revision, ..
                })) => {
                    break Stop::Tell(etcd::WatchResponse {
                        header: Some(self.shared.header(compact_revision)),
                        watch_id: self.id,
                        canceled: true,
                        // Unknown on some backends; the first revision the
                        // client may re-watch from is at least this.
                        compact_revision: compact_revision.max(self.start_revision + 1),
                        ..Default::default()
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(watch = self.id, "watch failed: {e}");
                    break Stop::Tell(self.canceled(crate::to_status(&e).message().to_string()));
                }
                None => {
                    break Stop::Tell(
                        self.canceled(String::from("etcdserver: the store ended the watch")),
                    );
                }
            };
            let revision = batch.revision;
            let events: Vec<_> = batch.events.into_iter().map(convert::event).collect();
            // An empty batch is the store's progress notification: the
            // client hears of it only if this watch asked for them (a
            // stream-wide progress request is answered by the session).
            if !events.is_empty() || self.progress_notify {
                let response = etcd::WatchResponse {
                    header: Some(self.shared.header(revision)),
                    watch_id: self.id,
                    events,
                    ..Default::default()
                };
                for part in self.fragments(response) {
                    if let Some(stop) = self.send(part).await {
                        // Drop the store watch before waiting any longer.
                        drop(stream);
                        self.finish(stop).await;
                        return;
                    }
                }
            }
            self.delivered.fetch_max(revision, Ordering::AcqRel);
        };
        drop(stream);
        self.finish(stop).await;
    }

    fn canceled(&self, reason: String) -> etcd::WatchResponse {
        etcd::WatchResponse {
            header: Some(self.shared.header(self.delivered.load(Ordering::Acquire))),
            watch_id: self.id,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        }
    }

    /// Sends within the configured time; `Some` when the task must stop.
    async fn send(&self, response: etcd::WatchResponse) -> Option<Stop> {
        let timeout = self.shared.config.watch_send_timeout;
        tokio::select! {
            () = self.cancel.cancelled() => Some(Stop::Quiet),
            sent = tokio::time::timeout(timeout, self.out.send(Ok(response))) => match sent {
                Ok(Ok(())) => None,
                Ok(Err(_)) => Some(Stop::Quiet),
                Err(_) => {
                    tracing::warn!(
                        watch = self.id,
                        ?timeout,
                        "the client did not read its watch stream; canceling the watch"
                    );
                    Some(Stop::Tell(self.canceled(format!(
                        "etcdserver: watch canceled: the client did not read its watch stream for {timeout:?}"
                    ))))
                }
            },
        }
    }

    /// Removes the watch from its stream and says why, if it must.
    async fn finish(self, stop: Stop) {
        let removed = {
            let mut watches = self.watches.lock();
            // A cancel request may have removed it (and answered) already.
            if self.cancel.is_cancelled() {
                false
            } else {
                watches.remove(&self.id).is_some()
            }
        };
        if let (Stop::Tell(response), true) = (stop, removed) {
            tokio::select! {
                () = self.cancel.cancelled() => {}
                _ = self.out.send(Ok(response)) => {}
            }
        }
    }

    /// Splits a response whose encoding exceeds the fragment size, if the
    /// watch asked for fragments: every part but the last says `fragment`.
    fn fragments(&self, response: etcd::WatchResponse) -> Vec<etcd::WatchResponse> {
        let limit = self.shared.config.fragment_bytes;
        if !self.fragment || response.encoded_len() <= limit {
            return vec![response];
        }
        let mut parts: Vec<etcd::WatchResponse> = Vec::new();
        let template = etcd::WatchResponse {
            events: Vec::new(),
            ..response.clone()
        };
        let mut current = template.clone();
        for event in response.events {
            let grown = current.encoded_len() + event.encoded_len() + 8;
            if !current.events.is_empty() && grown > limit {
                let full = std::mem::replace(&mut current, template.clone());
                parts.push(full);
            }
            current.events.push(event);
        }
        parts.push(current);
        let last = parts.len() - 1;
        for part in &mut parts[..last] {
            part.fragment = true;
        }
        parts
    }
}
