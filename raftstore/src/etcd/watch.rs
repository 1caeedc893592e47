//! The etcd `Watch` service: one bidirectional stream carrying any number of watches.
//!
//! Owns the per-stream bookkeeping (watch ids, one forwarding task per watch, cancel) and
//! etcd's response protocol: a `created` response first; events in revision order; a
//! `canceled` response with `compact_revision` when the start revision is compacted (or
//! compaction overtakes a watch that is catching up); a `canceled` response on cancel; progress
//! responses. Event delivery itself is the store's watch cursor.
//!
//! Progress responses promise that every event up to their header revision has been sent, so a
//! watch only reports progress once it has caught up: `progress_notify` watches get one per
//! interval in which they sent nothing (etcd: every 10 minutes), and a `WatchProgressRequest`
//! is answered (watch id -1, for all watches of the stream) once every watch has caught up, at
//! the lowest revision they all reached, as etcd 3.5 does.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

use super::kv::kv_to_pb;
use super::pb::{self, mvccpb, watch_create_request::FilterType, watch_request::RequestUnion};
use super::{header, COMPACTED};
use crate::error::Error;
use crate::key_range::KeyRange;
use crate::model::{EventKind, WatchEvent};
use crate::store::Store;
use crate::watch::WatchCursor;

/// Responses buffered per stream before the forwarding tasks wait for the client.
const OUT_CAPACITY: usize = 256;
/// Most events put into one response.
const MAX_BATCH: usize = 1000;
/// The watch id etcd uses in progress responses that concern every watch of a stream, and in
/// refusals of watches that never existed.
const ALL_WATCHES: i64 = -1;
/// etcd's reason for refusing a watch id already in use on the stream.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's reason for refusing a watch whose range end is not above its key.
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
/// etcd's default interval between progress notifications of an idle watch.
pub(crate) const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(10 * 60);

pub(crate) struct WatchService {
    pub(crate) store: Store,
    /// How often idle `progress_notify` watches get a progress response.
    pub(crate) progress_interval: Duration,
}

type Out = mpsc::Sender<Result<pb::WatchResponse, Status>>;

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(OUT_CAPACITY);
        let stream = StreamCtx {
            store: self.store.clone(),
            out: tx,
            progress_interval: self.progress_interval,
        };
        tokio::spawn(stream.serve(incoming));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// A question the stream asks one of its watches.
enum Control {
    /// Reply with a revision up to which every event of the watch has been sent, once there is
    /// one (the watch may be catching up).
    Progress(oneshot::Sender<i64>),
}

/// One running watch of a stream.
struct WatchTask {
    task: JoinHandle<()>,
    control: mpsc::Sender<Control>,
}

/// What every watch of one client stream shares.
#[derive(Clone)]
struct StreamCtx {
    store: Store,
    out: Out,
    progress_interval: Duration,
}

impl StreamCtx {
    /// Reads the client's requests until it hangs up, then cancels its watches.
    async fn serve(self, mut incoming: Streaming<pb::WatchRequest>) {
        let mut watches: HashMap<i64, WatchTask> = HashMap::new();
        let mut next_id = 0i64;
        while let Some(Ok(request)) = incoming.next().await {
            let sent = match request.request_union {
                Some(RequestUnion::CreateRequest(create)) => {
                    // Ids of watches that ended on their own (compaction) are free again.
                    watches.retain(|_, w| !w.task.is_finished());
                    let id = if create.watch_id > 0 {
                        create.watch_id
                    } else {
                        while watches.contains_key(&next_id) {
                            next_id += 1;
                        }
                        next_id
                    };
                    let range = KeyRange::new(create.key.clone(), create.range_end.clone());
                    match watches.entry(id) {
                        Entry::Occupied(_) => self.refuse(DUPLICATE_ID).await,
                        Entry::Vacant(_) if range.is_empty() => self.refuse(EMPTY_RANGE).await,
                        Entry::Vacant(slot) => match self.start(id, create).await {
                            Some(task) => {
                                slot.insert(task);
                                true
                            }
                            None => false,
                        },
                    }
                }
                Some(RequestUnion::CancelRequest(cancel)) => match watches.remove(&cancel.watch_id)
                {
                    Some(watch) => {
                        watch.task.abort();
                        self.send(pb::WatchResponse {
                            header: self.header(self.store.revision()),
                            watch_id: cancel.watch_id,
                            canceled: true,
                            ..Default::default()
                        })
                        .await
                    }
                    None => true,
                },
                Some(RequestUnion::ProgressRequest(_)) => {
                    self.request_progress(&watches);
                    true
                }
                None => true,
            };
            if !sent {
                break;
            }
        }
        for watch in watches.into_values() {
            watch.task.abort();
        }
    }

    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        header(&self.store, revision)
    }

    /// Refuses a create request as etcd does: created and canceled at once, under watch id -1.
    async fn refuse(&self, reason: &str) -> bool {
        self.send(pb::WatchResponse {
            header: self.header(self.store.revision()),
            watch_id: ALL_WATCHES,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        })
        .await
    }

    /// Sends `response`; `false` if the client is gone.
    async fn send(&self, response: pb::WatchResponse) -> bool {
        self.out.send(Ok(response)).await.is_ok()
    }

    /// Answers a `WatchProgressRequest` once every watch of the stream has caught up.
    fn request_progress(&self, watches: &HashMap<i64, WatchTask>) {
        let controls: Vec<mpsc::Sender<Control>> =
            watches.values().map(|w| w.control.clone()).collect();
        let ctx = self.clone();
        tokio::spawn(async move {
            let mut revision = ctx.store.revision();
            for control in controls {
                let (tx, rx) = oneshot::channel();
                // A watch that ended (closed channel, dropped reply) holds nothing back.
                if control.send(Control::Progress(tx)).await.is_err() {
                    continue;
                }
                if let Ok(synced) = rx.await {
                    revision = revision.min(synced);
                }
            }
            ctx.send(pb::WatchResponse {
                header: ctx.header(revision),
                watch_id: ALL_WATCHES,
                ..Default::default()
            })
            .await;
        });
    }

    /// Sends the `created` response and starts forwarding events; `None` if the client is gone.
    async fn start(&self, id: i64, create: pb::WatchCreateRequest) -> Option<WatchTask> {
        let range = KeyRange::new(create.key.clone(), create.range_end.clone());
        let opened = self.store.watch_cursor(range, create.start_revision);
        // For a watch of "changes after now", the header tells the client where it starts.
        let created_at = match &opened {
            Ok(cursor) if create.start_revision <= 0 => cursor.start_revision() - 1,
            _ => self.store.revision(),
        };
        let created = pb::WatchResponse {
            header: self.header(created_at),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        if !self.send(created).await {
            return None;
        }
        // Progress requests of a watch that never started need no answer: it holds nothing
        // back. Its control channel is closed at once.
        let (control, control_rx) = mpsc::channel(8);
        let task = match opened {
            Ok(cursor) => {
                let watch = Forwarder {
                    ctx: self.clone(),
                    id,
                    create,
                    cursor,
                    control: control_rx,
                };
                tokio::spawn(watch.run())
            }
            Err(e) => {
                if !self.send(canceled(&self.store, id, &e)).await {
                    return None;
                }
                tokio::spawn(async {})
            }
        };
        Some(WatchTask { task, control })
    }
}

/// Forwards one watch's events to the client stream and answers its progress questions.
struct Forwarder {
    ctx: StreamCtx,
    id: i64,
    create: pb::WatchCreateRequest,
    cursor: WatchCursor,
    control: mpsc::Receiver<Control>,
}

impl Forwarder {
    async fn run(mut self) {
        let mut ticker = self.create.progress_notify.then(|| {
            let every = self.ctx.progress_interval.max(Duration::from_millis(1));
            tokio::time::interval_at(tokio::time::Instant::now() + every, every)
        });
        let mut sent_since_tick = false;
        let mut waiting: Vec<oneshot::Sender<i64>> = Vec::new();
        loop {
            if !waiting.is_empty() {
                if let Some(revision) = self.cursor.synced_revision() {
                    for reply in waiting.drain(..) {
                        let _ = reply.send(revision);
                    }
                }
            }
            tokio::select! {
                item = self.cursor.next() => {
                    let Some(item) = item else { return };
                    let (events, failure) = self.batch(item);
                    if !events.is_empty() {
                        sent_since_tick = true;
                        if !self.send_events(events).await {
                            return;
                        }
                    }
                    if let Some(e) = failure {
                        let _ = self.ctx.send(canceled(&self.ctx.store, self.id, &e)).await;
                        return;
                    }
                }
                Some(Control::Progress(reply)) = self.control.recv() => waiting.push(reply),
                _ = tick(&mut ticker) => {
                    // etcd notifies only watches that sent nothing during the interval and are
                    // caught up.
                    if std::mem::take(&mut sent_since_tick) {
                        continue;
                    }
                    if let Some(revision) = self.cursor.synced_revision() {
                        let progress = pb::WatchResponse {
                            header: self.ctx.header(revision),
                            watch_id: self.id,
                            ..Default::default()
                        };
                        if !self.ctx.send(progress).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// `first` plus every event already available, up to [`MAX_BATCH`], as etcd events (after
    /// the watch's filters), and the error that ends the watch, if one came.
    fn batch(
        &mut self,
        first: crate::error::Result<WatchEvent>,
    ) -> (Vec<mvccpb::Event>, Option<Error>) {
        let mut events = Vec::new();
        let mut item = Some(first);
        let mut taken = 0;
        while let Some(next) = item.take() {
            match next {
                Ok(event) => events.extend(to_pb(&self.create, event)),
                Err(e) => return (events, Some(e)),
            }
            taken += 1;
            if taken < MAX_BATCH {
                // Only what is ready now; the cursor's `next` is cancel-safe.
                item = self.cursor.next().now_or_never().flatten();
            }
        }
        (events, None)
    }

    async fn send_events(&self, events: Vec<mvccpb::Event>) -> bool {
        let last = events
            .last()
            .and_then(|e| e.kv.as_ref())
            .map_or(0, |kv| kv.mod_revision);
        let response = pb::WatchResponse {
            header: self.ctx.header(self.ctx.store.revision().max(last)),
            watch_id: self.id,
            events,
            ..Default::default()
        };
        self.ctx.send(response).await
    }
}

/// The next tick of `ticker`, or never without one.
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The response that ends watch `id` because of `e`.
fn canceled(store: &Store, id: i64, e: &Error) -> pb::WatchResponse {
    let (compact_revision, reason) = match e {
        Error::Compacted { compact_revision } => (*compact_revision, COMPACTED.to_string()),
        other => (0, other.to_string()),
    };
    pb::WatchResponse {
        header: header(store, store.revision()),
        watch_id: id,
        canceled: true,
        compact_revision,
        cancel_reason: reason,
        ..Default::default()
    }
}

/// The event as etcd sends it, or `None` if the watch's filters drop it.
fn to_pb(create: &pb::WatchCreateRequest, event: WatchEvent) -> Option<mvccpb::Event> {
    let (kind, filter) = match event.kind {
        EventKind::Put => (mvccpb::event::EventType::Put, FilterType::Noput),
        EventKind::Delete => (mvccpb::event::EventType::Delete, FilterType::Nodelete),
    };
    if create.filters.contains(&(filter as i32)) {
        return None;
    }
    Some(mvccpb::Event {
        r#type: kind as i32,
        kv: Some(kv_to_pb(event.kv)),
        prev_kv: if create.prev_kv {
            event.prev_kv.map(kv_to_pb)
        } else {
            None
        },
    })
}
