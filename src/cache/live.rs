//! Keeping cached lists current from watch streams.
//!
//! A [`WatchTee`] sits on one online watch response: it splits the stream
//! into events and hands them to [`Watches`], which batches them per list
//! entry. Once a second ([`COALESCE`]) each list with pending events is
//! rewritten once, on the store's writer thread, by streaming the old body
//! through [`crate::cache::patch::apply_events`] into a new file: memory is
//! bounded by the largest item plus the batch, never by the list. The same
//! pass refreshes (MODIFIED/ADDED) or removes (DELETED) the agent's
//! single-object entries of the items involved, when they exist.
//!
//! Pending events are flushed before a list is served offline and on
//! shutdown; a crash loses at most the last second of events, and the entry
//! on disk is always a complete earlier version (the store's rename rule).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::cache::key::CacheKey;
use crate::cache::store::Store;
use crate::watch::{EventSplitter, EventType, OwnedEvent, WatchEvent};

/// At most one rewrite of a list per this interval.
pub const COALESCE: Duration = Duration::from_secs(1);

/// Pending watch events per cached list.
pub struct Watches {
    store: Store,
    pending: Mutex<HashMap<CacheKey, Vec<OwnedEvent>>>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches").finish_non_exhaustive()
    }
}

impl Watches {
    /// No pending events yet.
    pub fn new(store: Store) -> Watches {
        Watches {
            store,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Queues events for the list entry `key`.
    pub fn push(&self, key: &CacheKey, events: Vec<OwnedEvent>) {
        if events.is_empty() {
            return;
        }
        if let Ok(mut pending) = self.pending.lock() {
            pending.entry(key.clone()).or_default().extend(events);
        }
    }

    /// Applies the pending events of `key` now (before serving it offline).
    pub async fn flush_pending(&self, key: &CacheKey) {
        let events = self.pending.lock().ok().and_then(|mut p| p.remove(key));
        if let Some(events) = events {
            self.apply(key.clone(), events).await;
        }
    }

    /// Applies every pending batch (shutdown).
    pub async fn flush_all(&self) {
        let batches: Vec<_> = match self.pending.lock() {
            Ok(mut p) => p.drain().collect(),
            Err(_) => return,
        };
        for (key, events) in batches {
            self.apply(key, events).await;
        }
    }

    /// Flushes every [`COALESCE`] interval, forever.
    pub async fn run(&self) {
        loop {
            smol::Timer::after(COALESCE).await;
            self.flush_all().await;
        }
    }

    async fn apply(&self, key: CacheKey, events: Vec<OwnedEvent>) {
        if let Err(e) = self.store.patch_list(&key, events).await {
            log::warn!("cache: could not apply watch events to {key}: {e}");
        }
    }
}

/// Taps one watch response and feeds its events to [`Watches`].
pub struct WatchTee<'a> {
    watches: &'a Watches,
    key: CacheKey,
    splitter: EventSplitter,
}

impl<'a> WatchTee<'a> {
    /// A tee for the list entry `key`.
    pub fn new(watches: &'a Watches, key: CacheKey) -> WatchTee<'a> {
        WatchTee {
            watches,
            key,
            splitter: EventSplitter::new(),
        }
    }

    /// Feeds decoded body bytes; complete events are queued.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut batch = Vec::new();
        for line in self.splitter.push(bytes) {
            match WatchEvent::parse(&line) {
                Ok(event) if event.kind == EventType::Error => {
                    log::debug!("watch of {} got an ERROR event; cache unchanged", self.key);
                }
                Ok(event) => batch.push(event.to_owned_event(&line)),
                Err(e) => log::debug!("watch of {}: unparsable event skipped: {e}", self.key),
            }
        }
        self.watches.push(&self.key, batch);
    }

    /// The stream ended: a last event without its newline still counts.
    pub fn end(mut self) {
        if let Some(line) = self.splitter.finish() {
            if let Ok(event) = WatchEvent::parse(&line) {
                if event.kind != EventType::Error {
                    self.watches
                        .push(&self.key, vec![event.to_owned_event(&line)]);
                }
            }
        }
    }
}
