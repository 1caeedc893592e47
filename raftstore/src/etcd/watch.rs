//! The etcd `Watch` service: one bidirectional stream carrying any number of watches.
//!
//! Owns the per-stream bookkeeping (watch ids, one forwarding task per watch, cancel) and
//! etcd's response protocol: a `created` response first, events in revision order, a
//! `canceled` response with `compact_revision` when the start revision is compacted, and
//! progress responses (watch id -1) on request. Event delivery itself is [`Store::watch_range`].

use std::collections::HashMap;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tonic::{Request, Response, Status, Streaming};

use super::kv::kv_to_pb;
use super::pb::{self, mvccpb, watch_create_request::FilterType, watch_request::RequestUnion};
use super::{header, COMPACTED};
use crate::error::Error;
use crate::key_range::KeyRange;
use crate::model::{EventKind, WatchEvent};
use crate::store::Store;

/// Responses buffered per stream before the forwarding tasks wait for the client.
const OUT_CAPACITY: usize = 256;
/// Most events put into one response.
const MAX_BATCH: usize = 1000;
/// The watch id etcd uses in progress responses that concern every watch of a stream.
const ALL_WATCHES: i64 = -1;

pub(crate) struct WatchService {
    pub(crate) store: Store,
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
        tokio::spawn(serve(self.store.clone(), incoming, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Reads the client's requests until it hangs up, then cancels its watches.
async fn serve(store: Store, mut incoming: Streaming<pb::WatchRequest>, out: Out) {
    let mut watches: HashMap<i64, AbortHandle> = HashMap::new();
    let mut next_id = 0i64;
    while let Some(Ok(request)) = incoming.next().await {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                let id = if create.watch_id > 0 {
                    create.watch_id
                } else {
                    while watches.contains_key(&next_id) {
                        next_id += 1;
                    }
                    next_id
                };
                if watches.contains_key(&id) {
                    let refused = pb::WatchResponse {
                        header: header(&store, store.revision()),
                        watch_id: id,
                        created: true,
                        canceled: true,
                        cancel_reason: "etcdserver: duplicate watch id".into(),
                        ..Default::default()
                    };
                    if out.send(Ok(refused)).await.is_err() {
                        break;
                    }
                    continue;
                }
                match start(&store, id, create, out.clone()).await {
                    Some(handle) => {
                        watches.insert(id, handle);
                    }
                    None => break,
                }
            }
            Some(RequestUnion::CancelRequest(cancel)) => {
                if let Some(handle) = watches.remove(&cancel.watch_id) {
                    handle.abort();
                    let canceled = pb::WatchResponse {
                        header: header(&store, store.revision()),
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..Default::default()
                    };
                    if out.send(Ok(canceled)).await.is_err() {
                        break;
                    }
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                let progress = pb::WatchResponse {
                    header: header(&store, store.revision()),
                    watch_id: ALL_WATCHES,
                    ..Default::default()
                };
                if out.send(Ok(progress)).await.is_err() {
                    break;
                }
            }
            None => {}
        }
    }
    for handle in watches.into_values() {
        handle.abort();
    }
}

/// Sends the `created` response and starts forwarding events; `None` if the client is gone.
async fn start(
    store: &Store,
    id: i64,
    create: pb::WatchCreateRequest,
    out: Out,
) -> Option<AbortHandle> {
    let range = KeyRange::new(create.key.clone(), create.range_end.clone());
    let opened = store.watch_range(range, create.start_revision).await;
    let created = pb::WatchResponse {
        header: header(store, store.revision()),
        watch_id: id,
        created: true,
        ..Default::default()
    };
    out.send(Ok(created)).await.ok()?;
    let stream = match opened {
        Ok(stream) => stream,
        Err(e) => {
            out.send(Ok(canceled(store, id, &e))).await.ok()?;
            // A watch that never started needs no task; hand back a finished one.
            return Some(tokio::spawn(async {}).abort_handle());
        }
    };
    let store = store.clone();
    let task = tokio::spawn(async move {
        let mut batches = stream.ready_chunks(MAX_BATCH);
        while let Some(batch) = batches.next().await {
            let mut events = Vec::with_capacity(batch.len());
            let mut failure = None;
            for item in batch {
                match item {
                    Ok(event) => events.extend(to_pb(&create, event)),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if !events.is_empty() {
                let last = events
                    .last()
                    .and_then(|e| e.kv.as_ref())
                    .map_or(0, |kv| kv.mod_revision);
                let response = pb::WatchResponse {
                    header: header(&store, store.revision().max(last)),
                    watch_id: id,
                    events,
                    ..Default::default()
                };
                if out.send(Ok(response)).await.is_err() {
                    return;
                }
            }
            if let Some(e) = failure {
                let _ = out.send(Ok(canceled(&store, id, &e))).await;
                return;
            }
        }
    });
    Some(task.abort_handle())
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
