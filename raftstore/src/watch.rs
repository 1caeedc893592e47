//! The watch hub: hands applied events to live watchers and stitches history replay to live
//! delivery without gaps or duplicates.
//!
//! How the hand-over stays gap-free: the hub remembers the last revision it has published. A new
//! watcher is registered under the hub lock and learns that revision `R` at the same instant; from
//! then on it receives every event with revision > `R` through its channel. Revisions up to `R`
//! are already in the `events` history tree (the state machine writes history before publishing),
//! so the stream replays `[start, R]` from disk and then drains the channel.
//!
//! Each watcher has a bounded channel. Publishing never waits: a watcher whose channel is full is
//! cut off and its stream ends with [`Error::WatchOverflow`] after the events it already has, so a
//! slow watcher cannot stall writes or other watchers and never silently loses events. This module
//! must not block on I/O while holding its lock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use futures::Stream;
use tokio::sync::mpsc;

use crate::codec::{decode, revision_key};
use crate::error::{Error, Result};
use crate::model::WatchEvent;

/// Events buffered per watcher before it is cut off.
pub const WATCH_CHANNEL_CAPACITY: usize = 4096;

/// A stream of watch events; ends with an `Err` when the watch cannot continue.
pub type WatchStream = std::pin::Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// Why the hub stopped feeding a watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndReason {
    /// The watcher's buffer was full.
    Overflow,
    /// The state was replaced by a snapshot; history continuity is lost at this revision.
    Reset(i64),
}

struct Watcher {
    prefix: Vec<u8>,
    start_revision: i64,
    tx: mpsc::Sender<WatchEvent>,
    end: Arc<OnceLock<EndReason>>,
}

struct HubInner {
    published_revision: i64,
    watchers: Vec<Watcher>,
}

/// Fan-out of applied events to watchers.
pub(crate) struct WatchHub {
    inner: Mutex<HubInner>,
    capacity: usize,
}

/// What [`WatchHub::register`] hands back: the live channel and the revision up to which the
/// caller must replay history itself.
pub(crate) struct Registration {
    rx: mpsc::Receiver<WatchEvent>,
    end: Arc<OnceLock<EndReason>>,
    /// Last revision already published when the watcher was registered.
    pub published_revision: i64,
    capacity: usize,
}

impl WatchHub {
    /// A hub whose last published revision is `revision`.
    pub(crate) fn new(revision: i64, capacity: usize) -> Self {
        WatchHub {
            inner: Mutex::new(HubInner {
                published_revision: revision,
                watchers: Vec::new(),
            }),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubInner> {
        // A panic while holding this lock leaves only a consistent watcher list behind.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a watcher for `prefix` that receives live events with revision >=
    /// `start_revision` and > the returned `published_revision`.
    pub(crate) fn register(&self, prefix: Vec<u8>, start_revision: i64) -> Registration {
        let (tx, rx) = mpsc::channel(self.capacity);
        let end = Arc::new(OnceLock::new());
        let mut inner = self.lock();
        inner.watchers.push(Watcher {
            prefix,
            start_revision,
            tx,
            end: end.clone(),
        });
        Registration {
            rx,
            end,
            published_revision: inner.published_revision,
            capacity: self.capacity,
        }
    }

    /// Publishes the events of `revision` (already durable in history) to all watchers.
    pub(crate) fn publish(&self, revision: i64, events: &[WatchEvent]) {
        let mut inner = self.lock();
        inner.published_revision = inner.published_revision.max(revision);
        inner.watchers.retain(|w| {
            if revision < w.start_revision {
                return !w.tx.is_closed();
            }
            for event in events.iter().filter(|e| e.kv.key.starts_with(&w.prefix)) {
                match w.tx.try_send(event.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(revision, "watcher fell behind; cancelling it");
                        let _ = w.end.set(EndReason::Overflow);
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }

    /// Ends every watcher because the state jumped to `revision` (snapshot install).
    pub(crate) fn reset(&self, revision: i64) {
        let mut inner = self.lock();
        inner.published_revision = revision;
        for w in inner.watchers.drain(..) {
            let _ = w.end.set(EndReason::Reset(revision));
        }
    }

    /// Ends every watcher; their streams finish with [`Error::Shutdown`].
    pub(crate) fn close(&self) {
        self.lock().watchers.clear();
    }
}

/// Builds the stream for a registered watcher: history `[start, published]` from `events_tree`,
/// then live events.
pub(crate) fn watch_stream(
    events_tree: sled::Tree,
    prefix: Vec<u8>,
    start_revision: i64,
    registration: Registration,
) -> WatchStream {
    let history =
        if start_revision > 0 && start_revision <= registration.published_revision {
            Some(events_tree.range(
                revision_key(start_revision)..=revision_key(registration.published_revision),
            ))
        } else {
            None
        };
    let state = StreamState {
        history,
        pending: VecDeque::new(),
        prefix,
        registration: Some(registration),
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    }))
}

struct StreamState {
    history: Option<sled::Iter>,
    pending: VecDeque<WatchEvent>,
    prefix: Vec<u8>,
    /// `None` once the stream has ended.
    registration: Option<Registration>,
}

impl StreamState {
    async fn next(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            let Some(history) = self.history.as_mut() else {
                break;
            };
            match history.next() {
                None => self.history = None,
                Some(Err(e)) => return self.fail(e.into()),
                Some(Ok((_key, bytes))) => match decode::<Vec<WatchEvent>>(&bytes) {
                    Ok(events) => self.pending.extend(
                        events
                            .into_iter()
                            .filter(|e| e.kv.key.starts_with(&self.prefix)),
                    ),
                    Err(e) => return self.fail(e),
                },
            }
        }
        let registration = self.registration.as_mut()?;
        if let Some(event) = registration.rx.recv().await {
            return Some(Ok(event));
        }
        let err = match registration.end.get() {
            Some(EndReason::Overflow) => Error::WatchOverflow {
                capacity: registration.capacity,
            },
            Some(EndReason::Reset(revision)) => Error::Compacted {
                compact_revision: *revision,
            },
            None => Error::Shutdown,
        };
        self.fail(err)
    }

    fn fail(&mut self, err: Error) -> Option<Result<WatchEvent>> {
        self.history = None;
        self.pending.clear();
        self.registration.take()?;
        Some(Err(err))
    }
}
