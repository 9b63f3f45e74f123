//! The on-disk cache.
//!
//! - [`key`]: which file an answer goes to (agent, path, variant).
//! - [`entry`]: the entry file format (text header + body as received).
//! - [`Store`]: what the request path needs from a store; [`mod@file`] is the
//!   one implementation (one file per entry, one writer thread).
//! - [`fs`]: the writer's file-system operations, behind a trait so tests
//!   can record (crash consistency) or fail (ENOSPC) them.
//! - [`patch`]: streaming list patching from watch events, and page merging.
//! - [`paging`]: paged LISTs assembled into one entry.
//! - [`live`]: watch tees.
//! - [`initial`]: streaming lists: a list entry built from a watch's
//!   initial events, and a cached list sent back as initial events.
//! - [`gc`]: removal of entries not read for `--cache-ttl`.
//! - [`names`]: which files in the cache directory are entries.
//! - [`stats`]: counters for `/metrics`.

pub mod entry;
pub mod file;
pub mod fs;
pub mod gc;
pub mod initial;
pub mod key;
pub mod live;
pub mod names;
pub mod paging;
pub mod patch;
pub mod stats;

use std::future::Future;
use std::time::Duration;

use gc::GcStats;
use key::CacheKey;
use stats::StoreStats;

pub use file::{AnswerKind, Entry, FileStore, Miss, Tee, TeeSpec};

/// The seam for a storage backend: everything the proxy asks of the
/// cache. [`FileStore`] is the one implementation today (SuperEdge's
/// lite-apiserver also offers an embedded KV store; that would be a second).
pub trait Store: Clone + Send + Sync + 'static {
    /// Starts caching one answer; never waits.
    fn tee(&self, spec: TeeSpec) -> Tee;
    /// Queues watch events for a cached list; never waits.
    fn push_events(&self, key: &CacheKey, events: Vec<crate::k8s::watch::OwnedEvent>);
    /// Opens an entry for reading.
    fn read(&self, key: &CacheKey) -> impl Future<Output = Result<Entry, Miss>>;
    /// Waits until everything queued is on disk.
    fn flush(&self) -> impl Future<Output = ()>;
    /// Removes entries not read for `ttl`.
    fn gc(&self, ttl: Duration) -> impl Future<Output = GcStats>;
    /// Counters.
    fn stats(&self) -> &StoreStats;
}

impl Store for FileStore {
    fn tee(&self, spec: TeeSpec) -> Tee {
        FileStore::tee(self, spec)
    }
    fn push_events(&self, key: &CacheKey, events: Vec<crate::k8s::watch::OwnedEvent>) {
        FileStore::push_events(self, key, events);
    }
    async fn read(&self, key: &CacheKey) -> Result<Entry, Miss> {
        FileStore::read(self, key).await
    }
    async fn flush(&self) {
        FileStore::flush(self).await;
    }
    async fn gc(&self, ttl: Duration) -> GcStats {
        FileStore::gc(self, ttl).await
    }
    fn stats(&self) -> &StoreStats {
        FileStore::stats(self)
    }
}
