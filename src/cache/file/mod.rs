//! The file store: one file per entry under `DIR/AGENT/`, written by one
//! writer thread, read on the I/O pool.
//!
//! - [`tee`]: the async side of a write. It never waits: body pieces are
//!   queued to the writer under a byte budget ([`MAX_QUEUED`]); when the
//!   writer cannot keep up (a slow flash, a long fsync), the answer is
//!   simply not cached (counted) and the client is not slowed.
//! - [`writer`]: the thread that owns every write, rename, unlink and
//!   fsync, in the order [`crate::cache::fs`] describes, and the state that
//!   goes with them (entries being written, paged lists being assembled,
//!   watch events being coalesced).
//! - `queue`: the writer's job queue (never waits to push; wakes the
//!   writer at most once per linger).
//! - [`lists`]: the writer's list jobs: patching from watch events,
//!   assembling pages, converging object entries, GC.
//! - [`read`]: opening an entry and streaming its body, on the I/O pool.

mod disk;
mod index;
pub mod lists;
mod queue;
pub mod read;
mod shared;
pub mod tee;
pub mod writer;

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smol::channel;

use super::fs::{Fs, RealFs};
use super::gc::GcStats;
use super::key::CacheKey;
pub use super::names::{is_entry_name, walk, TMP_PREFIX};
use super::stats::StoreStats;
use crate::k8s::watch::OwnedEvent;

pub use read::{Entry, Miss};
use shared::Job;
use shared::Shared;
pub use shared::{AnswerKind, TeeSpec};
pub use tee::Tee;
use writer::Writer;

pub use shared::MAX_QUEUED;

/// Why the store could not be opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory could not be created or the writer thread started.
    Io(PathBuf, std::io::Error),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for StoreError {}

/// The cache store (cheap to clone).
#[derive(Clone)]
pub struct FileStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens (creating, 0700) the cache dir, removes stale temp files,
    /// counts entries, and starts the writer thread on the real disk.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        FileStore::open_with(dir, RealFs)
    }

    /// [`FileStore::open`] with another [`Fs`] under the writer (tests:
    /// recording, failing).
    pub fn open_with<F: Fs>(dir: &Path, fs: F) -> Result<FileStore, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StoreError::Io(dir.to_owned(), e))?;
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            jobs: queue::Queue::default(),
            queued: AtomicUsize::new(0),
            batched: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            stats: StoreStats::default(),
            warned: Mutex::new(HashSet::new()),
        });
        let (entries, bytes) = scan(dir);
        shared.stats.entries.store(entries, Ordering::Relaxed);
        shared.stats.bytes.store(bytes, Ordering::Relaxed);
        let worker = Writer::new(shared.clone(), fs);
        std::thread::Builder::new()
            .name("lite-apiserver-cache".into())
            .spawn(move || worker.run())
            .map_err(|e| StoreError::Io(dir.to_owned(), e))?;
        Ok(FileStore { shared })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Counters.
    pub fn stats(&self) -> &StoreStats {
        &self.shared.stats
    }

    /// Starts caching one answer (see [`Tee`]).
    pub fn tee(&self, spec: TeeSpec) -> Tee {
        Tee::new(self.shared.clone(), spec)
    }

    /// Queues watch events for the list entry `key`; they are applied at
    /// most once a second per list. Never waits: over the budget, the list
    /// stops taking events until its next complete LIST (it stays a
    /// consistent earlier version).
    pub fn push_events(&self, key: &CacheKey, events: Vec<OwnedEvent>) {
        if events.is_empty() {
            return;
        }
        let bytes: usize = events.iter().map(|e| e.object.len() + 64).sum();
        if !self.shared.reserve(bytes) {
            StoreStats::add(&self.shared.stats.events_skipped, events.len() as u64);
            self.shared.send(Job::Freeze { key: key.clone() });
            return;
        }
        self.shared
            .batched
            .fetch_add(events.len(), Ordering::AcqRel);
        self.shared.send(Job::Events {
            key: key.clone(),
            events,
            bytes,
        });
    }

    /// Opens `key`'s entry, after applying its pending watch events.
    pub async fn read(&self, key: &CacheKey) -> Result<Entry, Miss> {
        if self.shared.batched.load(Ordering::Acquire) > 0 {
            self.ask(|done| Job::ApplyNow {
                key: key.clone(),
                done,
            })
            .await;
        }
        read::open(self.shared.clone(), key).await
    }

    /// Waits until every job queued so far (and every pending watch event)
    /// is on disk.
    pub async fn flush(&self) {
        self.ask(|done| Job::Flush { done }).await;
    }

    /// Removes entries not read for `ttl` (on the writer thread, so the
    /// entry counts stay true and no sweep races a write).
    pub async fn gc(&self, ttl: Duration) -> GcStats {
        let (done, result) = channel::bounded(1);
        if !self.shared.send(Job::Gc { ttl, done }) {
            return GcStats::default();
        }
        result.recv().await.unwrap_or_default()
    }

    /// Stops the writer after the jobs queued so far (shutdown).
    pub async fn close(&self) {
        self.flush().await;
        self.shared.jobs.close();
    }

    async fn ask(&self, job: impl FnOnce(channel::Sender<()>) -> Job) {
        let (done, result) = channel::bounded(1);
        if self.shared.send(job(done)) {
            let _ = result.recv().await;
        }
    }
}

/// Counts entry files and their bytes; removes stale temp files and the
/// pages of paged LISTs a restart interrupted (they can never be
/// assembled: the chains are in memory).
fn scan(dir: &Path) -> (i64, i64) {
    let mut entries = 0;
    let mut bytes = 0;
    walk(dir, &mut |path, meta| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(TMP_PREFIX) || name.contains(crate::cache::key::PAGE_MARK) {
            let _ = fs::remove_file(path);
        } else if is_entry_name(name) {
            entries += 1;
            bytes += meta.len() as i64;
        }
    });
    (entries, bytes)
}

#[cfg(test)]
mod tests;
