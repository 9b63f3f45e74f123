//! The async side of caching one answer: body pieces copied once and handed
//! to the writer thread, never waiting for it.

use std::sync::Arc;

use super::shared::{Job, Shared, TeeSpec};
use crate::cache::stats::StoreStats;

/// Bodies up to this size travel to the writer in one job, after the
/// answer is complete.
const HOLD_LIMIT: usize = 16 * 1024;
/// Larger bodies travel in pieces of about this size (fewer jobs, fewer
/// wake-ups of the writer).
const PIECE: usize = 32 * 1024;

/// One answer being cached. Dropping it before [`Tee::commit`] discards
/// what was written (an aborted or broken stream is never published).
pub struct Tee {
    shared: Arc<Shared>,
    id: u64,
    /// Not sent yet: the body is still held here.
    spec: Option<Box<TeeSpec>>,
    held: Vec<u8>,
    /// The writer could not keep up: nothing more is sent.
    dropped: bool,
    committed: bool,
}

impl Tee {
    pub(crate) fn new(shared: Arc<Shared>, spec: TeeSpec) -> Tee {
        let id = shared.new_id();
        Tee {
            shared,
            id,
            spec: Some(Box::new(spec)),
            held: Vec::new(),
            dropped: false,
            committed: false,
        }
    }

    /// Whether the answer is still being cached.
    pub fn is_live(&self) -> bool {
        !self.dropped
    }

    /// Appends body bytes (one copy; never waits).
    pub fn write(&mut self, bytes: &[u8]) {
        if self.dropped {
            return;
        }
        let limit = if self.spec.is_some() {
            HOLD_LIMIT
        } else {
            PIECE
        };
        if self.held.len() + bytes.len() <= limit {
            self.held.extend_from_slice(bytes);
            return;
        }
        if let Some(spec) = self.spec.take() {
            self.shared.send(Job::Begin { id: self.id, spec });
        }
        self.send_held();
        if bytes.len() >= PIECE {
            self.send_piece(bytes.to_vec());
        } else {
            self.held.extend_from_slice(bytes);
        }
    }

    /// Sends what is held as one piece (after Begin).
    fn send_held(&mut self) {
        if !self.held.is_empty() {
            let held = std::mem::replace(&mut self.held, Vec::with_capacity(PIECE));
            self.send_piece(held);
        }
    }

    fn send_piece(&mut self, bytes: Vec<u8>) {
        if self.dropped {
            return;
        }
        if !self.shared.reserve(bytes.len()) {
            self.give_up(true);
            return;
        }
        self.shared.send(Job::Data { id: self.id, bytes });
    }

    /// The answer is complete: the writer publishes it (or keeps the entry
    /// when it is unchanged). Never waits.
    pub fn commit(mut self) {
        if self.dropped {
            return;
        }
        self.committed = true;
        match self.spec.take() {
            Some(spec) => {
                let body = std::mem::take(&mut self.held);
                if !self.shared.reserve(body.len()) {
                    self.committed = false;
                    self.give_up(false);
                    return;
                }
                self.shared.send(Job::Whole {
                    id: self.id,
                    spec,
                    body,
                });
            }
            None => {
                self.send_held();
                if self.dropped {
                    return;
                }
                self.shared.send(Job::Commit { id: self.id });
            }
        }
    }

    /// Like [`Tee::commit`], for a body whose resourceVersion is `rv` but
    /// not at its start (a list built from a streaming list's events).
    pub fn commit_with_version(mut self, rv: String) {
        if self.dropped {
            return;
        }
        if let Some(spec) = self.spec.take() {
            self.shared.send(Job::Begin { id: self.id, spec });
        }
        self.send_held();
        if !self.dropped {
            self.shared.send(Job::Version { id: self.id, rv });
        }
        self.commit();
    }

    fn give_up(&mut self, begun: bool) {
        self.dropped = true;
        self.held = Vec::new();
        StoreStats::add(&self.shared.stats.tee_dropped, 1);
        if begun {
            self.shared.send(Job::Abort { id: self.id });
        }
        log::debug!("cache: the writer is behind; this answer is not cached");
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if !self.committed && !self.dropped && self.spec.is_none() {
            self.shared.send(Job::Abort { id: self.id });
        }
    }
}
