//! What the async side of the file store and its writer thread share:
//! the job queue, the byte budget, ids, counters.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use smol::channel::Sender;

use super::queue::{Awaited, Queue};

use crate::auth::identity::Credential;
use crate::cache::gc::GcStats;
use crate::cache::key::CacheKey;
use crate::cache::stats::StoreStats;
use crate::k8s::watch::OwnedEvent;

/// What kind of answer is being cached: the writer decides from it (and
/// the body) where the answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerKind {
    /// One object, discovery, a TokenRequest answer: stored under its key.
    Object,
    /// A LIST answer: the whole list, or a page of it (the request's
    /// `continue`, decoded, tells which page; the body's tells whether
    /// more follow).
    List {
        /// The request's `continue` token, if any.
        continued: Option<String>,
    },
}

/// Where and how an answer is cached.
#[derive(Debug, Clone)]
pub struct TeeSpec {
    /// The entry.
    pub key: CacheKey,
    /// HTTP status of the answer.
    pub status: u16,
    /// Its Content-Type.
    pub content_type: String,
    /// Who read it (added to the entry's readers).
    pub credential: Option<Credential>,
    /// Object or list.
    pub kind: AnswerKind,
}

/// Bytes of body pieces and watch events queued for the writer at most:
/// the memory the cache may hold for writes, whatever the load.
pub const MAX_QUEUED: usize = 6 << 20;

/// What the async side and the writer share.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) jobs: Queue<Job>,
    /// Bytes queued (see [`MAX_QUEUED`]).
    pub(crate) queued: AtomicUsize,
    /// Watch events waiting in the writer's batches.
    pub(crate) batched: AtomicUsize,
    pub(crate) next_id: AtomicU64,
    pub(crate) stats: StoreStats,
    /// Bad entries already logged (once each).
    pub(crate) warned: Mutex<HashSet<PathBuf>>,
}

impl Shared {
    /// Queues a job; false if the writer is gone.
    pub(crate) fn send(&self, job: Job) -> bool {
        self.jobs.push(job)
    }

    /// Takes `n` bytes of the budget, or says no.
    pub(crate) fn reserve(&self, n: usize) -> bool {
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > MAX_QUEUED {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives `n` bytes of the budget back.
    pub(crate) fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    pub(crate) fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Work for the writer thread.
pub(crate) enum Job {
    /// A new answer starts.
    Begin { id: u64, spec: Box<TeeSpec> },
    /// A piece of its body.
    Data { id: u64, bytes: Vec<u8> },
    /// It is complete.
    Commit { id: u64 },
    /// Its resourceVersion, where its body does not say it up front (a
    /// list built from a streaming list's events, metadata last).
    Version { id: u64, rv: String },
    /// A small answer: Begin, Data and Commit in one.
    Whole {
        id: u64,
        spec: Box<TeeSpec>,
        body: Vec<u8>,
    },
    /// It broke: discard it.
    Abort { id: u64 },
    /// Watch events for a cached list.
    Events {
        key: CacheKey,
        events: Vec<OwnedEvent>,
        bytes: usize,
    },
    /// The list could not keep up: take no events until its next LIST.
    Freeze { key: CacheKey },
    /// Apply the list's pending events now (before it is read offline).
    ApplyNow { key: CacheKey, done: Sender<()> },
    /// Apply everything pending, then answer.
    Flush { done: Sender<()> },
    /// Remove entries not read for `ttl`.
    Gc {
        ttl: Duration,
        done: Sender<GcStats>,
    },
    /// A reader found a bad entry.
    RemoveTorn { path: PathBuf, done: Sender<()> },
}

impl Awaited for Job {
    /// Someone waits for this job's answer: the writer does not linger
    /// (see [`super::queue`]).
    fn awaited(&self) -> bool {
        matches!(
            self,
            Job::ApplyNow { .. } | Job::Flush { .. } | Job::Gc { .. } | Job::RemoveTorn { .. }
        )
    }
}
