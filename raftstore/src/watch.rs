//! The watch hub: hands applied events to live watchers and stitches history replay to live
//! delivery without gaps or duplicates.
//!
//! How the hand-over stays gap-free: the hub remembers the last revision it has published. A new
//! watcher is registered under the hub lock and learns that revision `R` at the same instant; from
//! then on it receives every event with revision > `R` through its channel. Revisions up to `R`
//! are already in the `events` history tree (the state machine writes history before publishing),
//! so the cursor replays `[start, R]` from disk and then drains the channel.
//!
//! Each watcher has a bounded channel, and publishing never waits: a revision's events go into a
//! channel whole or not at all. A watcher whose channel has no room is dropped from the hub
//! ("fell behind"); its cursor first hands out what its channel holds, then catches up from
//! history and registers again, as etcd moves slow watchers to its unsynced group. So a slow
//! watcher neither stalls writes nor loses events. The only ways a watch ends are a compaction
//! that overtakes it (history it still needs is gone), a snapshot install that replaces the
//! state under it, and shutdown.
//!
//! Compaction is announced to the hub ([`WatchHub::note_compaction`]) before history is
//! deleted, and a replaying cursor checks it before handing out each revision, so it reports
//! [`Error::Compacted`] instead of silently skipping deleted history. This module must not block
//! on I/O while holding its lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use futures::Stream;
use tokio::sync::mpsc;

use crate::codec::{decode, revision_key};
use crate::error::{Error, Result};
use crate::key_range::KeyRange;
use crate::model::WatchEvent;

/// Events buffered per watcher before it has to catch up from history.
pub const WATCH_CHANNEL_CAPACITY: usize = 4096;

/// History revisions a cursor reads in one go before it lets other tasks run.
const REPLAY_YIELD_EVERY: u32 = 256;

/// A stream of watch events; ends with an `Err` when the watch cannot continue.
pub type WatchStream = std::pin::Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// Why the hub stopped feeding a watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndReason {
    /// The watcher's buffer was full; it catches up from history.
    Behind,
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

struct HubShared {
    inner: Mutex<HubInner>,
    /// History below this revision is deleted or about to be (see the module docs).
    compacted: AtomicI64,
    capacity: usize,
}

/// Fan-out of applied events to watchers; cheap to clone (clones share the hub).
#[derive(Clone)]
pub(crate) struct WatchHub(Arc<HubShared>);

/// A watcher's place in the hub: its live channel and the revision up to which history must
/// be replayed from disk.
struct Registration {
    rx: mpsc::Receiver<WatchEvent>,
    end: Arc<OnceLock<EndReason>>,
    /// Last revision already published when the watcher was registered.
    published_revision: i64,
}

impl WatchHub {
    /// A hub whose last published revision is `revision`, over history starting at
    /// `compact_revision`, with `capacity` events buffered per watcher.
    pub(crate) fn new(revision: i64, compact_revision: i64, capacity: usize) -> Self {
        WatchHub(Arc::new(HubShared {
            inner: Mutex::new(HubInner {
                published_revision: revision,
                watchers: Vec::new(),
            }),
            compacted: AtomicI64::new(compact_revision),
            capacity: capacity.max(1),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HubInner> {
        // A panic while holding this lock leaves only a consistent watcher list behind.
        self.0.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn compacted(&self) -> i64 {
        self.0.compacted.load(Ordering::Acquire)
    }

    /// Announces that history below `revision` is about to be deleted. Must be called before
    /// the deletion, so replaying cursors notice it.
    pub(crate) fn note_compaction(&self, revision: i64) {
        self.0.compacted.fetch_max(revision, Ordering::AcqRel);
    }

    /// Registers a watcher for `prefix` that receives live events with revision >=
    /// `start_revision` and > the returned `published_revision`.
    fn register(&self, prefix: Vec<u8>, start_revision: i64) -> Registration {
        let (tx, rx) = mpsc::channel(self.0.capacity);
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
        }
    }

    /// Publishes the events of `revision` (already durable in history) to all watchers.
    pub(crate) fn publish(&self, revision: i64, events: &[WatchEvent]) {
        let mut inner = self.lock();
        inner.published_revision = inner.published_revision.max(revision);
        inner.watchers.retain(|w| {
            if w.tx.is_closed() {
                return false;
            }
            if revision < w.start_revision {
                return true;
            }
            let matching = events.iter().filter(|e| e.kv.key.starts_with(&w.prefix));
            let count = matching.clone().count();
            // Only the hub sends, under this lock, so the room can only grow meanwhile: the
            // revision goes in whole.
            if count > w.tx.capacity() {
                tracing::debug!(revision, "watcher fell behind; it catches up from history");
                let _ = w.end.set(EndReason::Behind);
                return false;
            }
            for event in matching {
                if w.tx.try_send(event.clone()).is_err() {
                    // The receiver went away between the checks above.
                    return false;
                }
            }
            true
        });
    }

    /// Ends every watcher because the state jumps to `revision` (snapshot install), with
    /// history from `compact_revision` on. Call it before the state is replaced.
    pub(crate) fn reset(&self, revision: i64, compact_revision: i64) {
        let mut inner = self.lock();
        self.0.compacted.store(compact_revision, Ordering::Release);
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

/// Where a cursor is: replaying history up to a revision, or following the live channel.
enum Phase {
    History(Box<Replay>),
    Live(Registration),
    Ended,
}

/// A history replay in progress: the events tree from the next revision up to `until`.
struct Replay {
    iter: sled::Iter,
    until: i64,
    registration: Registration,
}

/// One watch: replays history from its start revision, then follows live events, for the keys
/// starting with `prefix` (and inside `range`, if given), in revision order.
pub(crate) struct WatchCursor {
    hub: WatchHub,
    events: sled::Tree,
    prefix: Vec<u8>,
    range: Option<KeyRange>,
    /// The revision the watch started at.
    start_revision: i64,
    /// The first revision whose events have not been queued yet.
    next_revision: i64,
    phase: Phase,
    pending: VecDeque<WatchEvent>,
    /// An error found while reading ahead, returned after `pending`.
    failure: Option<Error>,
}

impl WatchCursor {
    /// Starts a watch at `start_revision` (> 0) over `events` (the history tree). Fails with
    /// [`Error::Compacted`] if history before `start_revision` is already gone.
    pub(crate) fn open(
        hub: &WatchHub,
        events: sled::Tree,
        prefix: Vec<u8>,
        range: Option<KeyRange>,
        start_revision: i64,
    ) -> Result<WatchCursor> {
        let compact_revision = hub.compacted();
        if start_revision < compact_revision {
            return Err(Error::Compacted { compact_revision });
        }
        let mut cursor = WatchCursor {
            hub: hub.clone(),
            events,
            prefix,
            range,
            start_revision,
            next_revision: start_revision,
            phase: Phase::Ended,
            pending: VecDeque::new(),
            failure: None,
        };
        cursor.subscribe();
        Ok(cursor)
    }

    /// (Re-)registers with the hub from `next_revision` on.
    fn subscribe(&mut self) {
        let registration = self.hub.register(self.prefix.clone(), self.next_revision);
        let until = registration.published_revision;
        self.phase = if self.next_revision <= until {
            let iter = self
                .events
                .range(revision_key(self.next_revision)..=revision_key(until));
            Phase::History(Box::new(Replay {
                iter,
                until,
                registration,
            }))
        } else {
            Phase::Live(registration)
        };
    }

    /// The revision the watch started at (for a watch of "changes after now": the store
    /// revision at the time plus one).
    pub(crate) fn start_revision(&self) -> i64 {
        self.start_revision
    }

    fn wanted(&self, event: &WatchEvent) -> bool {
        event.kv.key.starts_with(&self.prefix)
            && self
                .range
                .as_ref()
                .is_none_or(|r| r.contains(&event.kv.key))
    }

    /// The next event, or the error that ends the watch, or `None` after that error.
    pub(crate) async fn next(&mut self) -> Option<Result<WatchEvent>> {
        let mut replayed = 0u32;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if let Some(err) = self.failure.take() {
                return self.fail(err);
            }
            match &mut self.phase {
                Phase::Ended => return None,
                Phase::History(_) => {
                    if let Err(err) = self.replay_step() {
                        return self.fail(err);
                    }
                    // A long replay with nothing to hand out must not hog the executor.
                    replayed += 1;
                    if replayed.is_multiple_of(REPLAY_YIELD_EVERY) {
                        tokio::task::yield_now().await;
                    }
                }
                Phase::Live(registration) => {
                    if let Some(event) = registration.rx.recv().await {
                        self.next_revision = self.next_revision.max(event.kv.mod_revision + 1);
                        if self.wanted(&event) {
                            return Some(Ok(event));
                        }
                        continue;
                    }
                    match registration.end.get() {
                        // Everything the channel held is handed out; the rest is in history.
                        Some(EndReason::Behind) => self.subscribe(),
                        Some(EndReason::Reset(revision)) => {
                            let revision = *revision;
                            return self.fail(Error::Compacted {
                                compact_revision: revision,
                            });
                        }
                        None => return self.fail(Error::Shutdown),
                    }
                }
            }
        }
    }

    /// Reads the next revision of a history replay into `pending`, or finishes the replay and
    /// goes live. An error ends the watch.
    fn replay_step(&mut self) -> Result<()> {
        let Phase::History(replay) = &mut self.phase else {
            return Ok(());
        };
        if let Some(EndReason::Reset(revision)) = replay.registration.end.get() {
            return Err(Error::Compacted {
                compact_revision: *revision,
            });
        }
        let item = replay.iter.next();
        // Compaction deletes history below `compacted`; if that passed the first revision not
        // queued yet, something may have been skipped.
        let compacted = self.hub.compacted();
        if compacted > self.next_revision {
            return Err(Error::Compacted {
                compact_revision: compacted,
            });
        }
        match item {
            None => {
                self.next_revision = replay.until + 1;
                if let Phase::History(replay) = std::mem::replace(&mut self.phase, Phase::Ended) {
                    self.phase = Phase::Live(replay.registration);
                }
                Ok(())
            }
            Some(Err(e)) => Err(e.into()),
            Some(Ok((key, bytes))) => {
                let revision = <[u8; 8]>::try_from(key.as_ref())
                    .map(i64::from_be_bytes)
                    .map_err(|_| Error::Corrupt("malformed events key"))?;
                let events: Vec<WatchEvent> = decode(&bytes)?;
                self.next_revision = revision + 1;
                let wanted: Vec<WatchEvent> =
                    events.into_iter().filter(|e| self.wanted(e)).collect();
                self.pending.extend(wanted);
                Ok(())
            }
        }
    }

    /// If this cursor has handed out every event up to some revision and is following live
    /// events, that revision (the last one published); `None` while it is catching up. May
    /// read ahead in history (what it reads is handed out by the next [`WatchCursor::next`]).
    pub(crate) fn synced_revision(&mut self) -> Option<i64> {
        if matches!(self.phase, Phase::History(_)) && self.pending.is_empty() {
            // The replay may be at its end without knowing it yet.
            if let Err(err) = self.replay_step() {
                self.failure = Some(err);
            }
        }
        if !self.pending.is_empty() || self.failure.is_some() {
            return None;
        }
        let Phase::Live(registration) = &self.phase else {
            return None;
        };
        // Under the hub lock nothing is being published, so an empty channel means every
        // event up to the published revision has been received.
        let inner = self.hub.lock();
        if !registration.rx.is_empty() || registration.end.get().is_some() {
            return None;
        }
        Some(inner.published_revision)
    }

    fn fail(&mut self, err: Error) -> Option<Result<WatchEvent>> {
        self.pending.clear();
        if matches!(self.phase, Phase::Ended) {
            return None;
        }
        self.phase = Phase::Ended;
        Some(Err(err))
    }

    /// This cursor as a stream.
    pub(crate) fn into_stream(self) -> WatchStream {
        Box::pin(futures::stream::unfold(self, |mut cursor| async move {
            let item = cursor.next().await?;
            Some((item, cursor))
        }))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::codec::encode;
    use crate::model::{EventKind, KeyValue};

    fn event(key: &str, revision: i64) -> WatchEvent {
        WatchEvent {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.into(),
                value: revision.to_string().into_bytes(),
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                lease: 0,
            },
            prev_kv: None,
        }
    }

    /// A history tree and hub at `revision`, with one event per revision 2..=revision.
    fn setup(revision: i64, capacity: usize) -> anyhow::Result<(sled::Db, sled::Tree, WatchHub)> {
        let db = sled::Config::new().temporary(true).open()?;
        let tree = db.open_tree("events")?;
        for r in 2..=revision {
            tree.insert(
                revision_key(r),
                encode(&vec![event(&format!("/k/{r}"), r)])?,
            )?;
        }
        Ok((db, tree.clone(), WatchHub::new(revision, 0, capacity)))
    }

    /// Writes revision `r` (a put of `/k/<r>`) to history and publishes it, as the state
    /// machine does.
    fn commit(tree: &sled::Tree, hub: &WatchHub, r: i64) -> anyhow::Result<()> {
        commit_key(tree, hub, r, &format!("/k/{r}"))
    }

    fn commit_key(tree: &sled::Tree, hub: &WatchHub, r: i64, key: &str) -> anyhow::Result<()> {
        let events = vec![event(key, r)];
        tree.insert(revision_key(r), encode(&events)?)?;
        hub.publish(r, &events);
        Ok(())
    }

    #[tokio::test]
    async fn slow_watcher_catches_up_from_history_without_loss_or_duplicates() -> anyhow::Result<()>
    {
        let (_db, tree, hub) = setup(10, 4)?;
        let mut cursor = WatchCursor::open(&hub, tree.clone(), b"/k/".to_vec(), None, 5)?;
        // Nobody reads while 50 revisions are published into a channel of 4.
        for r in 11..=60 {
            commit(&tree, &hub, r)?;
        }
        let mut seen = Vec::new();
        while seen.len() < 56 {
            match cursor.next().await {
                Some(Ok(e)) => seen.push(e.kv.mod_revision),
                other => anyhow::bail!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, (5..=60).collect::<Vec<_>>());
        assert_eq!(cursor.synced_revision(), Some(60));
        commit(&tree, &hub, 61)?;
        assert_eq!(cursor.synced_revision(), None, "an event is waiting");
        assert_eq!(
            cursor
                .next()
                .await
                .and_then(|e| e.ok())
                .map(|e| e.kv.mod_revision),
            Some(61)
        );
        assert_eq!(cursor.synced_revision(), Some(61));
        Ok(())
    }

    #[tokio::test]
    async fn compaction_overtaking_a_replay_ends_it_instead_of_skipping() -> anyhow::Result<()> {
        let (_db, tree, hub) = setup(20, 16)?;
        let mut cursor = WatchCursor::open(&hub, tree.clone(), b"/k/".to_vec(), None, 3)?;
        assert_eq!(
            cursor
                .next()
                .await
                .and_then(|e| e.ok())
                .map(|e| e.kv.mod_revision),
            Some(3)
        );
        hub.note_compaction(10);
        for r in 2..10 {
            tree.remove(revision_key(r))?;
        }
        match cursor.next().await {
            Some(Err(Error::Compacted {
                compact_revision: 10,
            })) => {}
            other => anyhow::bail!("expected compacted, got {other:?}"),
        }
        assert!(cursor.next().await.is_none());
        // Watching from the compaction revision itself is still possible, as in etcd.
        let mut at = WatchCursor::open(&hub, tree.clone(), b"/k/".to_vec(), None, 10)?;
        assert_eq!(
            at.next()
                .await
                .and_then(|e| e.ok())
                .map(|e| e.kv.mod_revision),
            Some(10)
        );
        assert!(matches!(
            WatchCursor::open(&hub, tree, b"/k/".to_vec(), None, 9),
            Err(Error::Compacted {
                compact_revision: 10
            })
        ));
        Ok(())
    }

    #[tokio::test]
    async fn range_filter_applies_to_history_and_live_events() -> anyhow::Result<()> {
        let (_db, tree, hub) = setup(12, 16)?;
        let range = KeyRange::new("/k/10", "/k/2");
        let cursor = WatchCursor::open(&hub, tree.clone(), b"/k/".to_vec(), Some(range), 2)?;
        let mut stream = cursor.into_stream();
        for (r, key) in [(13, "/k/3"), (14, "/k/13"), (15, "/k/20")] {
            commit_key(&tree, &hub, r, key)?;
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            let e = stream.next().await.context_none()??;
            seen.push(e.kv.mod_revision);
        }
        // /k/10, /k/11, /k/12 from history, then /k/13 live; /k/3 and /k/20 are outside.
        assert_eq!(seen, vec![10, 11, 12, 14]);
        hub.reset(30, 30);
        match stream.next().await {
            Some(Err(Error::Compacted {
                compact_revision: 30,
            })) => {}
            other => anyhow::bail!("expected reset, got {other:?}"),
        }
        Ok(())
    }

    trait ContextNone<T> {
        fn context_none(self) -> anyhow::Result<T>;
    }
    impl<T> ContextNone<T> for Option<T> {
        fn context_none(self) -> anyhow::Result<T> {
            self.ok_or_else(|| anyhow::anyhow!("stream ended"))
        }
    }
}
