//! The writer's list jobs: watch events coalesced and patched into cached
//! lists, pages assembled, object entries converged, GC.
//!
//! - Events for a list are batched and applied at most once a second
//!   ([`COALESCE`]); a batch is applied by streaming the stored list
//!   through [`crate::cache::patch::apply_events`] into a new version, so
//!   memory is bounded by the largest item plus the batch, never by the
//!   list. Events not newer than the list (a fresh LIST overtook them) are
//!   skipped.
//! - A batch that cannot be written (ENOSPC, EROFS) is kept and retried
//!   with backoff; the entry on disk stays the last consistent version with
//!   its own resourceVersion, never one that claims events it lacks. A
//!   batch that grows past `MAX_BATCH` while failing is dropped and the
//!   list frozen until its next complete LIST.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::writer::{Batch, Writer};
use crate::cache::entry::EntryMeta;
use crate::cache::fs::Fs;
use crate::cache::gc::GcStats;
use crate::cache::key::CacheKey;
use crate::cache::patch::{self, PatchError};
use crate::cache::stats::StoreStats;
use crate::k8s::watch::{EventType, OwnedEvent};

/// At most one rewrite of a list per this interval.
pub const COALESCE: Duration = Duration::from_secs(1);
/// Longest wait before a failed batch is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Event bytes a failing batch may hold before the list is frozen.
const MAX_BATCH: usize = 2 << 20;

/// Why a batch was not applied.
enum NotApplied {
    /// The disk said no: keep the batch, try again later.
    Io(io::Error),
    /// The entry is not a patchable list (a Table) or is broken: drop it.
    Skip,
}

impl<F: Fs> Writer<F> {
    /// When the next batch falls due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.batches.values().map(|b| b.due).min()
    }

    /// Takes events for `key` into its batch.
    pub(crate) fn events(&mut self, key: CacheKey, events: Vec<OwnedEvent>, bytes: usize) {
        if self.frozen.contains(&key) {
            self.forget(events.len(), bytes);
            StoreStats::add(&self.shared.stats.events_skipped, events.len() as u64);
            return;
        }
        let batch = self.batches.entry(key).or_insert_with(|| Batch {
            events: Vec::new(),
            bytes: 0,
            due: Instant::now() + COALESCE,
            backoff: COALESCE,
        });
        batch.events.extend(events);
        batch.bytes += bytes;
    }

    /// Stops taking events for `key` until its next complete LIST.
    pub(crate) fn freeze(&mut self, key: &CacheKey) {
        if let Some(batch) = self.batches.remove(key) {
            StoreStats::add(&self.shared.stats.events_skipped, batch.events.len() as u64);
            self.forget(batch.events.len(), batch.bytes);
        }
        if self.frozen.insert(key.clone()) {
            log::warn!("cache: {key} stops following its watch until the next LIST");
        }
    }

    fn forget(&self, events: usize, bytes: usize) {
        self.shared.release(bytes);
        self.shared
            .batched
            .fetch_sub(events, std::sync::atomic::Ordering::AcqRel);
    }

    /// Applies every batch that is due.
    pub(crate) fn apply_due(&mut self, now: Instant) {
        let due: Vec<CacheKey> = self
            .batches
            .iter()
            .filter(|(_, b)| b.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.apply(&key);
        }
    }

    /// Applies every batch now (flush, shutdown).
    pub(crate) fn apply_all(&mut self) {
        let keys: Vec<CacheKey> = self.batches.keys().cloned().collect();
        for key in keys {
            self.apply(&key);
        }
    }

    /// Applies `key`'s batch, if any: kept for a retry when the disk fails.
    pub(crate) fn apply(&mut self, key: &CacheKey) {
        let Some(mut batch) = self.batches.remove(key) else {
            return;
        };
        match self.patch(key, &batch.events) {
            Ok(()) | Err(NotApplied::Skip) => self.forget(batch.events.len(), batch.bytes),
            Err(NotApplied::Io(e)) => {
                self.failed(&e, &self.shared.dir.join(key.rel_path()));
                if batch.bytes > MAX_BATCH {
                    self.forget(batch.events.len(), batch.bytes);
                    self.frozen.insert(key.clone());
                    log::warn!("cache: {key} could not be kept current; frozen at its last consistent version until the next LIST");
                    return;
                }
                batch.backoff = (batch.backoff * 2).min(MAX_BACKOFF);
                batch.due = Instant::now() + batch.backoff;
                self.batches.insert(key.clone(), batch);
            }
        }
    }

    /// Streams the cached list through the patcher into a new version, then
    /// refreshes or removes the object entries the events touch.
    fn patch(&mut self, key: &CacheKey, events: &[OwnedEvent]) -> Result<(), NotApplied> {
        let dest = self.shared.dir.join(key.rel_path());
        let Ok(mut old) = self.fs.open(&dest) else {
            return Err(NotApplied::Skip); // not cached (yet): nothing to keep current
        };
        let len = old.metadata().map(|m| m.len()).unwrap_or(0);
        let Ok((mut meta, body_at)) = EntryMeta::read_from(&mut old, len) else {
            return Err(NotApplied::Skip); // a bad entry is dropped by the next read
        };
        let list_rv = meta.resource_version.clone();
        let fresh: Vec<OwnedEvent> = events
            .iter()
            .filter(|e| is_newer(e.resource_version.as_deref(), list_rv.as_deref()))
            .cloned()
            .collect();
        let skipped = events.len() - fresh.len();
        StoreStats::add(&self.shared.stats.events_skipped, skipped as u64);
        if fresh.is_empty() {
            return Ok(());
        }
        old.seek(SeekFrom::Start(body_at)).map_err(NotApplied::Io)?;
        let new_rv = fresh
            .iter()
            .rev()
            .find_map(|e| e.resource_version.clone())
            .or(list_rv);
        meta.resource_version = None;
        let mut p = self.create_tmp(&dest, &meta).map_err(NotApplied::Io)?;
        let mut body = io::BufReader::with_capacity(32 * 1024, old.take(meta.length));
        let mut counter = CountingWriter {
            inner: &mut p.file,
            written: 0,
        };
        let outcome = patch::apply_events(&mut body, &mut counter, &fresh, &mut |_, _| {});
        p.written = counter.written;
        match outcome {
            Ok(_) => {}
            Err(PatchError::Io(e)) => {
                self.discard(&p.tmp);
                return Err(NotApplied::Io(e));
            }
            Err(e) => {
                self.discard(&p.tmp);
                log::debug!("cache: {key} not patched: {e}");
                return Err(NotApplied::Skip); // Tables are refreshed by the next LIST
            }
        }
        self.publish(p, new_rv.as_deref(), &dest)
            .map_err(NotApplied::Io)?;
        StoreStats::add(&self.shared.stats.list_rewrites, 1);
        StoreStats::add(&self.shared.stats.events_applied, fresh.len() as u64);
        self.update_items(key, &fresh);
        Ok(())
    }

    /// The last event per object decides its object entry: DELETED removes
    /// it; ADDED/MODIFIED replace its body where the entry exists.
    fn update_items(&mut self, key: &CacheKey, events: &[OwnedEvent]) {
        let mut last: HashMap<(Option<&str>, &str), &OwnedEvent> = HashMap::new();
        for e in events.iter().filter(|e| !e.name.is_empty()) {
            last.insert((e.namespace.as_deref(), e.name.as_str()), e);
        }
        for ((ns, name), event) in last {
            let Some(item) = key.item(ns, name) else {
                continue;
            };
            let dest = self.shared.dir.join(item.rel_path());
            match event.kind {
                EventType::Deleted => {
                    self.remove_entry(&dest);
                }
                EventType::Added | EventType::Modified => {
                    let rv = event.resource_version.as_deref();
                    if let Err(e) = self.replace_body(&dest, &event.object, rv) {
                        self.failed(&e, &dest);
                    }
                }
                EventType::Bookmark | EventType::Error => {}
            }
        }
    }

    /// Rewrites an existing entry with a new body, keeping its header.
    fn replace_body(&mut self, dest: &Path, body: &[u8], rv: Option<&str>) -> io::Result<()> {
        let Some(meta) = self.previous_meta(dest) else {
            return Ok(());
        };
        let mut p = self.create_tmp(dest, &meta)?;
        if let Err(e) = p.file.write_all(body) {
            self.discard(&p.tmp);
            return Err(e);
        }
        p.written = body.len() as u64;
        self.publish(p, rv, dest)
    }

    /// Streams the pages of a paged LIST (entries `pages`, in order) into
    /// one list entry, then removes the pages. Whether it was published.
    pub(crate) fn assemble(&mut self, list: &CacheKey, pages: &[CacheKey]) -> bool {
        let dest = self.shared.dir.join(list.rel_path());
        match self.merge(&dest, pages) {
            Ok(()) => {
                for page in pages {
                    self.remove_entry(&self.shared.dir.join(page.rel_path()));
                }
                true
            }
            Err(e) => {
                self.failed(&e, &dest);
                false
            }
        }
    }

    fn merge(&mut self, dest: &Path, pages: &[CacheKey]) -> io::Result<()> {
        let mut readers = Vec::with_capacity(pages.len());
        let mut meta = None;
        for page in pages {
            let path = self.shared.dir.join(page.rel_path());
            let mut file = self.fs.open(&path)?;
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let (m, body_at) = EntryMeta::read_from(&mut file, len).map_err(io::Error::other)?;
            file.seek(SeekFrom::Start(body_at))?;
            readers.push(io::BufReader::with_capacity(32 * 1024, file.take(m.length)));
            meta.get_or_insert(m);
        }
        let Some(mut meta) = meta else { return Ok(()) };
        let rv = meta.resource_version.take();
        let mut p = self.create_tmp(dest, &meta)?;
        let mut sources: Vec<&mut dyn Read> =
            readers.iter_mut().map(|r| r as &mut dyn Read).collect();
        let mut counter = CountingWriter {
            inner: &mut p.file,
            written: 0,
        };
        let merged = patch::merge_pages(&mut sources, &mut counter);
        p.written = counter.written;
        if let Err(e) = merged {
            self.discard(&p.tmp);
            return Err(io::Error::other(e));
        }
        self.publish(p, rv.as_deref(), dest)
    }

    /// Removes object entries of a collection that a fresh, complete, plain
    /// LIST no longer contains.
    pub(crate) fn converge(&mut self, key: &CacheKey) {
        if !key.is_plain() {
            return;
        }
        let Some(items_dir) = key.items_dir() else {
            return;
        };
        let Some(names) = self.names_in(key) else {
            return;
        };
        let dir = self.shared.dir.join(&items_dir);
        let Ok(read) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in read.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.ends_with("@.json") || name.starts_with('.') {
                continue;
            }
            let rel = items_dir.join(name);
            if !names.contains(&rel) && self.remove_entry(&entry.path()) {
                log::info!("cache: {} is gone upstream; removed", rel.display());
            }
        }
    }

    /// The object entry paths of the items of the cached list `key`.
    fn names_in(&self, key: &CacheKey) -> Option<HashSet<PathBuf>> {
        let mut file = self.fs.open(&self.shared.dir.join(key.rel_path())).ok()?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (meta, body_at) = EntryMeta::read_from(&mut file, len).ok()?;
        file.seek(SeekFrom::Start(body_at)).ok()?;
        let mut names = HashSet::new();
        let mut body = io::BufReader::with_capacity(32 * 1024, file.take(meta.length));
        patch::apply_events(&mut body, &mut io::sink(), &[], &mut |ns, name| {
            if let Some(item) = key.item(ns, name) {
                names.insert(item.rel_path());
            }
        })
        .ok()?;
        Some(names)
    }

    /// Removes entries not read for `ttl` and stale temp files.
    pub(crate) fn gc(&mut self, ttl: Duration) -> GcStats {
        let expired = crate::cache::gc::expired(&self.shared.dir, ttl, SystemTime::now());
        let mut stats = GcStats {
            kept: expired.kept,
            ..GcStats::default()
        };
        for (path, len) in expired.entries {
            if self.remove_entry(&path) {
                stats.removed += 1;
                stats.freed += len;
            }
        }
        for tmp in expired.temps {
            self.discard(&tmp);
        }
        crate::cache::gc::remove_empty_dirs(&self.shared.dir);
        stats
    }
}

/// Whether an event at `event_rv` may change a list at `list_rv`: etcd
/// resourceVersions are increasing integers; anything else is taken as
/// newer (the apiserver says they are opaque).
fn is_newer(event_rv: Option<&str>, list_rv: Option<&str>) -> bool {
    let parse = |rv: Option<&str>| rv.and_then(|r| r.parse::<u64>().ok());
    match (parse(event_rv), parse(list_rv)) {
        (Some(event), Some(list)) => event > list,
        _ => true,
    }
}

/// Counts what passes through.
struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    written: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn newer_events() {
        assert!(super::is_newer(Some("11"), Some("10")));
        assert!(!super::is_newer(Some("10"), Some("10")));
        assert!(!super::is_newer(Some("9"), Some("10")));
        assert!(super::is_newer(Some("x"), Some("10")));
        assert!(super::is_newer(None, Some("10")));
    }
}
