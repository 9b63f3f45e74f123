//! The cache's counters for `/metrics`. Entry and byte gauges are kept by
//! the writer thread (which is also where GC runs), so they stay true.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::fs::Failure;

/// Counters, updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub(crate) entries: AtomicI64,
    pub(crate) bytes: AtomicI64,
    pub(crate) writes: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) list_rewrites: AtomicU64,
    pub(crate) events_applied: AtomicU64,
    pub(crate) events_skipped: AtomicU64,
    pub(crate) torn_removed: AtomicU64,
    pub(crate) unchanged: AtomicU64,
    pub(crate) tee_dropped: AtomicU64,
    pub(crate) failures: [AtomicU64; Failure::ALL.len()],
}

impl StoreStats {
    /// Entries on disk.
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed).max(0) as u64
    }

    /// Bytes of entries on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed).max(0) as u64
    }

    /// Rewrites of lists from watch events.
    pub fn list_rewrites(&self) -> u64 {
        self.list_rewrites.load(Ordering::Relaxed)
    }

    /// Answers not rewritten because they repeat the entry.
    pub fn unchanged(&self) -> u64 {
        self.unchanged.load(Ordering::Relaxed)
    }

    /// Failed writes of `kind`.
    pub fn failures(&self, kind: Failure) -> u64 {
        self.failures[kind.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn count_failure(&self, kind: Failure) {
        self.failures[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters with their names and help texts.
    fn counters(&self) -> [(&'static str, &'static str, &AtomicU64); 8] {
        [
            (
                "lite_apiserver_cache_writes_total",
                "Entries committed.",
                &self.writes,
            ),
            (
                "lite_apiserver_cache_written_bytes_total",
                "Bytes committed.",
                &self.bytes_written,
            ),
            (
                "lite_apiserver_cache_list_rewrites_total",
                "Cached lists rewritten from watch events.",
                &self.list_rewrites,
            ),
            (
                "lite_apiserver_cache_watch_events_applied_total",
                "Watch events applied to cached lists.",
                &self.events_applied,
            ),
            (
                "lite_apiserver_cache_watch_events_skipped_total",
                "Watch events older than the cached list, or for a list that could not keep up.",
                &self.events_skipped,
            ),
            (
                "lite_apiserver_cache_torn_entries_removed_total",
                "Bad entry files removed.",
                &self.torn_removed,
            ),
            (
                "lite_apiserver_cache_unchanged_total",
                "Answers not rewritten: same resourceVersion as the entry.",
                &self.unchanged,
            ),
            (
                "lite_apiserver_cache_tee_dropped_total",
                "Answers not cached because the cache writer could not keep up.",
                &self.tee_dropped,
            ),
        ]
    }

    /// Appends the store's metrics in Prometheus text.
    pub fn render(&self, out: &mut String) {
        crate::metrics::write_counters(out, &self.counters());
        let name = "lite_apiserver_cache_write_failures_total";
        crate::metrics::write_family(
            out,
            "counter",
            name,
            "Cache writes that failed, by kind (online proxying is not affected).",
        );
        for kind in Failure::ALL {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{}\"}} {}",
                kind.as_str(),
                self.failures(kind)
            );
        }
    }
}
