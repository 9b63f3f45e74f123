//! Keeping cached lists current from watch streams.
//!
//! A [`WatchTee`] sits on one online watch response: it splits the stream
//! into events and hands them to the store ([`FileStore::push_events`]),
//! whose writer thread coalesces them per list and rewrites each list at
//! most once a second. The same pass refreshes (MODIFIED/ADDED) or removes
//! (DELETED) the agent's single-object entries of the items involved.
//!
//! A streaming list's tee ([`WatchTee::streaming_list`]) first builds the
//! list entry from the initial events ([`InitialList`]), exactly as a LIST
//! would store it, then keeps it current from the rest of the stream: a
//! LIST plus a WATCH in one request, as the client asked.
//!
//! Pending events are applied before a list is served offline and on
//! shutdown; a crash loses at most the last second of events, and the
//! entry on disk is always a complete earlier version.

use crate::cache::file::{FileStore, Tee};
use crate::cache::initial::{is_initial_events_end, InitialList};
use crate::cache::key::CacheKey;
use crate::k8s::watch::{EventSplitter, EventType, OwnedEvent, WatchEvent};

/// Taps one watch response and feeds its events to the store.
pub struct WatchTee {
    store: FileStore,
    key: CacheKey,
    splitter: EventSplitter,
    /// Building the list from initial events, until the end bookmark.
    initial: Option<InitialList>,
}

impl WatchTee {
    /// A tee for the list entry `key`.
    pub fn new(store: FileStore, key: CacheKey) -> WatchTee {
        WatchTee {
            store,
            key,
            splitter: EventSplitter::new(),
            initial: None,
        }
    }

    /// A tee for a streaming list: its initial events become the list
    /// entry `key` through `list` (a LIST entry's tee), the rest keep it
    /// current.
    pub fn streaming_list(store: FileStore, key: CacheKey, list: Tee) -> WatchTee {
        WatchTee {
            initial: Some(InitialList::new(list)),
            ..WatchTee::new(store, key)
        }
    }

    /// Feeds decoded body bytes; complete events are queued.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut batch = Vec::new();
        for line in self.splitter.push(bytes) {
            self.event(&line, &mut batch);
        }
        self.store.push_events(&self.key, batch);
    }

    /// The stream ended: a last event without its newline still counts.
    /// A streaming list that never reached its end bookmark is not stored.
    pub fn end(mut self) {
        let mut batch = Vec::new();
        if let Some(line) = self.splitter.finish() {
            self.event(&line, &mut batch);
        }
        self.store.push_events(&self.key, batch);
        if self.initial.take().is_some() {
            log::debug!(
                "streaming list of {} ended before its initial events did; not stored",
                self.key
            );
        }
    }

    fn event(&mut self, line: &[u8], batch: &mut Vec<OwnedEvent>) {
        let event = match WatchEvent::parse(line) {
            Ok(event) => event,
            Err(e) => {
                log::debug!("watch of {}: unparsable event skipped: {e}", self.key);
                return;
            }
        };
        let object = line.get(event.object.clone()).unwrap_or_default();
        if let Some(list) = self.initial.as_mut() {
            match event.kind {
                EventType::Added => return list.item(object),
                EventType::Bookmark if is_initial_events_end(object) => {
                    if let Some(list) = self.initial.take() {
                        if !list.finish(object) {
                            log::debug!("streaming list of {}: not stored", self.key);
                        }
                    }
                    return;
                }
                _ => {
                    // Not what a streaming list sends before its end: the
                    // list is not built from it; events patch what is cached.
                    log::debug!("streaming list of {}: unexpected {:?} before the end of the initial events; not stored", self.key, event.kind);
                    self.initial = None;
                }
            }
        }
        match event.kind {
            EventType::Error => {
                log::debug!("watch of {} got an ERROR event; cache unchanged", self.key);
            }
            _ => batch.push(event.to_owned_event(line)),
        }
    }
}
