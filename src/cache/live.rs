//! Keeping cached lists current from watch streams.
//!
//! A [`WatchTee`] sits on one online watch response: it splits the stream
//! into events and hands them to the store ([`FileStore::push_events`]),
//! whose writer thread coalesces them per list and rewrites each list at
//! most once a second. The same pass refreshes (MODIFIED/ADDED) or removes
//! (DELETED) the agent's single-object entries of the items involved.
//!
//! Pending events are applied before a list is served offline and on
//! shutdown; a crash loses at most the last second of events, and the
//! entry on disk is always a complete earlier version.

use crate::cache::file::FileStore;
use crate::cache::key::CacheKey;
use crate::k8s::watch::{EventSplitter, EventType, WatchEvent};

/// Taps one watch response and feeds its events to the store.
pub struct WatchTee {
    store: FileStore,
    key: CacheKey,
    splitter: EventSplitter,
}

impl WatchTee {
    /// A tee for the list entry `key`.
    pub fn new(store: FileStore, key: CacheKey) -> WatchTee {
        WatchTee {
            store,
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
        self.store.push_events(&self.key, batch);
    }

    /// The stream ended: a last event without its newline still counts.
    pub fn end(mut self) {
        if let Some(line) = self.splitter.finish() {
            if let Ok(event) = WatchEvent::parse(&line) {
                if event.kind != EventType::Error {
                    self.store
                        .push_events(&self.key, vec![event.to_owned_event(&line)]);
                }
            }
        }
    }
}
