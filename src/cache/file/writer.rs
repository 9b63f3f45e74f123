//! The writer thread: every write, rename, unlink and fsync of the cache.
//!
//! Jobs arrive in order on one channel ([`Job`]); the thread owns all the
//! state that goes with them, so nothing here takes a lock. An answer is
//! published as the module [`crate::cache::fs`] describes: temp file in the
//! entry's directory, fsync, rename over the entry, fsync of the directory.
//! A power cut at any moment leaves the previous entry or the next one.
//!
//! Most online GETs re-read an object that did not change: when the
//! previous entry has the same status, content type and reader, the body is
//! collected in memory ([`DEFER_LIMIT`]) and, if its resourceVersion and
//! length match, the entry is left alone (no temp file, no fsync, flash
//! spared); only its last-read time moves.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::SystemTime;
use std::time::{Duration, Instant};

use super::shared::{AnswerKind, Job, Shared, TeeSpec};
use crate::cache::entry::{padded, EntryMeta, LENGTH_WIDTH, RV_WIDTH};
use crate::cache::fs::{Failure, Fs, WriteFile};
use crate::cache::key::CacheKey;
use crate::cache::names::TMP_PREFIX;
use crate::cache::paging::{self, Page, Pages};
use crate::cache::stats::StoreStats;
use crate::k8s::watch::OwnedEvent;

/// Bodies up to this size are collected in memory first when they probably
/// repeat the published entry.
pub const DEFER_LIMIT: usize = 64 * 1024;
/// How much of a body's start is kept to find its resourceVersion and
/// `metadata.continue`.
const PREFIX: usize = 64 * 1024;

/// An answer being written.
struct Open {
    spec: Box<TeeSpec>,
    dest: PathBuf,
    meta: EntryMeta,
    /// The entry this one replaces, when nothing but the body could differ.
    same_as: Option<Arc<EntryMeta>>,
    prefix: Vec<u8>,
    body: Body,
}

enum Body {
    /// Collected in memory (see [`DEFER_LIMIT`]).
    Memory(Vec<u8>),
    /// Streaming into a temp file.
    File(Pending),
    /// A write failed; the answer will not be published.
    Failed,
}

/// A temp file being filled.
pub(crate) struct Pending {
    pub(crate) tmp: PathBuf,
    pub(crate) file: BufWriter<Box<dyn WriteFile>>,
    rv_at: u64,
    length_at: u64,
    header_len: u64,
    pub(crate) written: u64,
    /// The header written (its resourceVersion and length are fixed at
    /// publish time).
    meta: EntryMeta,
}

/// FNV-1a: the writer's maps are keyed by paths and ids it made itself,
/// so a keyed (DoS-resistant) hash buys nothing and costs per request.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// What the writer knows of a published entry.
struct Known {
    meta: Arc<EntryMeta>,
    /// Its last-read time as last set (write or touch).
    touched: SystemTime,
}

/// Entries remembered at most (the index is dropped and rebuilt past it).
const MAX_KNOWN: usize = 4096;

/// Events waiting to be applied to one list.
pub(crate) struct Batch {
    pub(crate) events: Vec<OwnedEvent>,
    /// Bytes of the queue budget these events hold.
    pub(crate) bytes: usize,
    pub(crate) due: Instant,
    pub(crate) backoff: Duration,
}

/// The writer thread's state.
pub(crate) struct Writer<F: Fs> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) fs: F,
    open: FastMap<u64, Open>,
    pub(crate) pages: Pages,
    pub(crate) batches: HashMap<CacheKey, Batch>,
    pub(crate) frozen: HashSet<CacheKey>,
    logged: HashSet<Failure>,
    /// Headers of entries seen, so that re-reading an unchanged object
    /// (the usual online GET) costs no open, read or parse.
    known: RefCell<FastMap<OsString, Known>>,
}

impl<F: Fs> Writer<F> {
    pub(crate) fn new(shared: Arc<Shared>, fs: F) -> Writer<F> {
        Writer {
            shared,
            fs,
            open: FastMap::default(),
            pages: Pages::default(),
            batches: HashMap::new(),
            frozen: HashSet::new(),
            logged: HashSet::new(),
            known: RefCell::new(FastMap::default()),
        }
    }

    /// Handles jobs until every sender is gone, applying coalesced watch
    /// events when they fall due.
    pub(crate) fn run(mut self, jobs: mpsc::Receiver<Job>) {
        loop {
            let job = match self.next_due() {
                Some(due) => jobs.recv_timeout(due.saturating_duration_since(Instant::now())),
                None => jobs
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match job {
                Ok(job) => self.handle(job),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            self.apply_due(Instant::now());
        }
        self.apply_all();
        for (_, open) in self.open.drain() {
            if let Body::File(p) = open.body {
                let _ = self.fs.remove(&p.tmp);
            }
        }
    }

    pub(crate) fn handle(&mut self, job: Job) {
        match job {
            Job::Begin { id, spec } => self.begin(id, spec),
            Job::Data { id, bytes } => {
                self.data(id, &bytes);
                self.shared.release(bytes.len());
            }
            Job::Commit { id } => self.commit(id),
            Job::Whole { id, spec, body } => {
                self.shared.release(body.len());
                if !self.repeats(&spec, &body) {
                    self.begin(id, spec);
                    self.data(id, &body);
                    self.commit(id);
                }
            }
            Job::Abort { id } => self.abort(id),
            Job::Events { key, events, bytes } => self.events(key, events, bytes),
            Job::Freeze { key } => self.freeze(&key),
            Job::ApplyNow { key, done } => {
                self.apply(&key);
                let _ = done.try_send(());
            }
            Job::Flush { done } => {
                self.apply_all();
                let _ = done.try_send(());
            }
            Job::Gc { ttl, done } => {
                let stats = self.gc(ttl);
                let _ = done.try_send(stats);
            }
            Job::RemoveTorn { path, done } => {
                if self.remove_entry(&path) {
                    StoreStats::add(&self.shared.stats.torn_removed, 1);
                }
                let _ = done.try_send(());
            }
        }
    }

    /// The fast path of the usual online GET: a small answer that repeats
    /// the published entry (same status, content type, known reader,
    /// resourceVersion and length) is not written at all.
    fn repeats(&mut self, spec: &TeeSpec, body: &[u8]) -> bool {
        if let AnswerKind::List { continued } = &spec.kind {
            if paging::classify(continued.as_deref(), body) != Page::Whole {
                return false;
            }
        }
        let dest = self.shared.dir.join(spec.key.rel_path());
        let Some(old) = self.known_meta(&dest) else {
            return false;
        };
        let rv = crate::json::resource_version(body);
        let same = old.status == spec.status
            && old.content_type == spec.content_type
            && spec
                .credential
                .as_ref()
                .is_none_or(|c| old.allow.contains(c))
            && rv.is_some()
            && old.resource_version == rv
            && old.length == body.len() as u64;
        if same {
            self.keep_unchanged(&dest);
            if matches!(spec.kind, AnswerKind::List { .. }) {
                self.frozen.remove(&spec.key);
            }
        }
        same
    }

    fn begin(&mut self, id: u64, spec: Box<TeeSpec>) {
        let dest = self.shared.dir.join(spec.key.rel_path());
        let previous = self.known_meta(&dest);
        let mut meta = EntryMeta {
            status: spec.status,
            content_type: spec.content_type.clone(),
            resource_version: None,
            length: 0,
            stored: crate::clock::unix_now(),
            allow: previous
                .as_ref()
                .map(|m| m.allow.clone())
                .unwrap_or_default(),
        };
        let known_reader = spec
            .credential
            .as_ref()
            .is_none_or(|c| meta.allow.contains(c));
        if let Some(c) = &spec.credential {
            meta.allow.retain(|a| a != c);
            meta.allow.push(c.clone());
        }
        let same_as = previous.filter(|old| {
            known_reader && old.status == meta.status && old.content_type == meta.content_type
        });
        let body = match same_as {
            Some(_) => Body::Memory(Vec::new()),
            None => match self.create_tmp(&dest, &meta) {
                Ok(p) => Body::File(p),
                Err(e) => {
                    self.failed(&e, &dest);
                    Body::Failed
                }
            },
        };
        let open = Open {
            spec,
            dest,
            meta,
            same_as,
            prefix: Vec::new(),
            body,
        };
        self.open.insert(id, open);
    }

    fn data(&mut self, id: u64, bytes: &[u8]) {
        let Some(mut open) = self.open.remove(&id) else {
            return;
        };
        if open.prefix.len() < PREFIX {
            let take = bytes.len().min(PREFIX - open.prefix.len());
            open.prefix.extend_from_slice(&bytes[..take]);
        }
        if let Body::Memory(buf) = &mut open.body {
            if buf.len() + bytes.len() <= DEFER_LIMIT {
                buf.extend_from_slice(bytes);
                self.open.insert(id, open);
                return;
            }
            open.body = self.materialize(&open.dest, &open.meta, buf);
        }
        if let Body::File(p) = &mut open.body {
            match p.file.write_all(bytes) {
                Ok(()) => p.written += bytes.len() as u64,
                Err(e) => {
                    let tmp = p.tmp.clone();
                    self.failed(&e, &tmp);
                    self.discard(&tmp);
                    open.body = Body::Failed;
                }
            }
        }
        self.open.insert(id, open);
    }

    /// Moves a collected body into a temp file (it grew, or it changed).
    fn materialize(&mut self, dest: &Path, meta: &EntryMeta, buf: &[u8]) -> Body {
        let mut p = match self.create_tmp(dest, meta) {
            Ok(p) => p,
            Err(e) => {
                self.failed(&e, dest);
                return Body::Failed;
            }
        };
        match p.file.write_all(buf) {
            Ok(()) => {
                p.written = buf.len() as u64;
                Body::File(p)
            }
            Err(e) => {
                self.failed(&e, &p.tmp);
                self.discard(&p.tmp);
                Body::Failed
            }
        }
    }

    fn commit(&mut self, id: u64) {
        let Some(mut open) = self.open.remove(&id) else {
            return;
        };
        let rv = crate::json::resource_version(&open.prefix);
        let list_key = open.spec.key.clone();
        let page = match &open.spec.kind {
            AnswerKind::Object => None,
            AnswerKind::List { continued } => {
                Some(paging::classify(continued.as_deref(), &open.prefix))
            }
        };
        if let Some(Page::Part { this, .. }) = &page {
            open.dest = self
                .shared
                .dir
                .join(list_key.page(this.as_deref()).rel_path());
        }
        let is_page = matches!(page, Some(Page::Part { .. }));
        if !is_page && self.is_unchanged(&open, rv.as_deref()) {
            self.keep_unchanged(&open.dest);
            if page == Some(Page::Whole) {
                self.frozen.remove(&list_key);
            }
            if let Body::File(p) = open.body {
                self.discard(&p.tmp);
            }
            return;
        }
        let pending = match open.body {
            Body::Memory(buf) => match self.materialize(&open.dest, &open.meta, &buf) {
                Body::File(p) => p,
                _ => return,
            },
            Body::File(p) => p,
            Body::Failed => return,
        };
        if let Err(e) = self.publish(pending, rv.as_deref(), &open.dest) {
            self.failed(&e, &open.dest);
            return;
        }
        match page {
            Some(Page::Whole) => self.fresh_list(&list_key),
            Some(Page::Part { this, next }) => {
                let page_key = list_key.page(this.as_deref());
                let done = self
                    .pages
                    .add(&list_key, page_key, this.as_deref(), next.as_deref());
                if let Some(pages) = done {
                    if self.assemble(&list_key, &pages) {
                        self.fresh_list(&list_key);
                    }
                }
            }
            None => {}
        }
    }

    /// A complete LIST of `key` was published: it takes events again, and
    /// object entries no longer in it go.
    fn fresh_list(&mut self, key: &CacheKey) {
        self.frozen.remove(key);
        self.converge(key);
    }

    /// Whether a finished answer repeats the published entry: same
    /// resourceVersion (objects and lists change it on every change), same
    /// length, and nothing else in the header differs.
    fn is_unchanged(&self, open: &Open, rv: Option<&str>) -> bool {
        let length = match &open.body {
            Body::Memory(buf) => buf.len() as u64,
            Body::File(p) => p.written,
            Body::Failed => return false,
        };
        open.same_as.as_ref().is_some_and(|old| {
            rv.is_some() && old.resource_version.as_deref() == rv && old.length == length
        })
    }

    /// The same version of the same answer for a known reader: the
    /// published file stays; only its last-read time moves (at most
    /// hourly, see [`crate::cache::gc::touch`]).
    fn keep_unchanged(&self, dest: &Path) {
        StoreStats::add(&self.shared.stats.unchanged, 1);
        let now = SystemTime::now();
        let mut known = self.known.borrow_mut();
        if let Some(k) = known.get_mut(dest.as_os_str()) {
            if now.duration_since(k.touched).unwrap_or_default() < crate::cache::gc::TOUCH_AFTER {
                return;
            }
            k.touched = now;
        }
        if let Ok(file) = self.fs.open(dest) {
            crate::cache::gc::touch(&file);
        }
    }

    fn abort(&mut self, id: u64) {
        if let Some(Open {
            body: Body::File(p),
            ..
        }) = self.open.remove(&id)
        {
            self.discard(&p.tmp);
        }
    }

    /// The header of the valid entry at `dest`, if any.
    pub(crate) fn previous_meta(&self, dest: &Path) -> Option<EntryMeta> {
        self.known_meta(dest).map(|m| (*m).clone())
    }

    /// The header of the valid entry at `dest`: remembered, or read (and
    /// then remembered).
    fn known_meta(&self, dest: &Path) -> Option<Arc<EntryMeta>> {
        if let Some(k) = self.known.borrow().get(dest.as_os_str()) {
            // One stat keeps the index honest if the file went away
            // behind our back (an operator cleaning the cache).
            if std::fs::symlink_metadata(dest).is_ok() {
                return Some(k.meta.clone());
            }
        }
        let mut file = self.fs.open(dest).ok()?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (meta, _) = EntryMeta::read_from(&mut file, len).ok()?;
        let touched = file
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let meta = Arc::new(meta);
        self.remember(dest, meta.clone(), touched);
        Some(meta)
    }

    fn remember(&self, dest: &Path, meta: Arc<EntryMeta>, touched: SystemTime) {
        let mut known = self.known.borrow_mut();
        if known.len() >= MAX_KNOWN {
            known.clear();
        }
        known.insert(dest.as_os_str().to_owned(), Known { meta, touched });
    }

    /// A temp file next to `dest` with `meta`'s header written.
    pub(crate) fn create_tmp(&self, dest: &Path, meta: &EntryMeta) -> io::Result<Pending> {
        let dir = dest.parent().unwrap_or(&self.shared.dir);
        self.fs.create_dir_all(dir)?;
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}-{}",
            std::process::id(),
            self.shared.new_id()
        ));
        let header = meta.encode().map_err(io::Error::other)?;
        let file = self.fs.create(&tmp)?;
        let mut file = BufWriter::with_capacity(32 * 1024, file);
        if let Err(e) = file.write_all(&header.bytes) {
            drop(file);
            self.discard(&tmp);
            return Err(e);
        }
        Ok(Pending {
            tmp,
            file,
            rv_at: header.rv_at as u64,
            length_at: header.length_at as u64,
            header_len: header.bytes.len() as u64,
            written: 0,
            meta: meta.clone(),
        })
    }

    /// Fixes the padded fields, fsyncs, renames over `dest`, fsyncs the
    /// directory. On failure the temp file is gone.
    pub(crate) fn publish(&self, p: Pending, rv: Option<&str>, dest: &Path) -> io::Result<()> {
        let tmp = p.tmp.clone();
        let result = self.publish_inner(p, rv, dest);
        if result.is_err() {
            self.discard(&tmp);
        }
        result
    }

    fn publish_inner(&self, p: Pending, rv: Option<&str>, dest: &Path) -> io::Result<()> {
        let mut file = p.file.into_inner().map_err(|e| e.into_error())?;
        let rv_text = padded(rv.unwrap_or(""), RV_WIDTH);
        file.write_at(rv_text.as_bytes(), p.rv_at)?;
        let length = padded(&p.written.to_string(), LENGTH_WIDTH);
        file.write_at(length.as_bytes(), p.length_at)?;
        file.sync()?;
        drop(file);
        let old_len = self
            .fs
            .open(dest)
            .and_then(|f| f.metadata())
            .map(|m| m.len() as i64)
            .ok();
        self.fs.rename(&p.tmp, dest)?;
        if let Some(dir) = dest.parent() {
            self.fs.sync_dir(dir)?;
        }
        let new_len = (p.header_len + p.written) as i64;
        let mut meta = p.meta;
        meta.resource_version = rv.map(str::to_owned);
        meta.length = p.written;
        self.remember(dest, Arc::new(meta), SystemTime::now());
        let stats = &self.shared.stats;
        stats
            .bytes
            .fetch_add(new_len - old_len.unwrap_or(0), Ordering::Relaxed);
        if old_len.is_none() {
            stats.entries.fetch_add(1, Ordering::Relaxed);
        }
        StoreStats::add(&stats.writes, 1);
        StoreStats::add(&stats.bytes_written, new_len as u64);
        Ok(())
    }

    /// Removes a temp file (and syncs its directory).
    pub(crate) fn discard(&self, tmp: &Path) {
        if self.fs.remove(tmp).is_ok() {
            if let Some(dir) = tmp.parent() {
                let _ = self.fs.sync_dir(dir);
            }
        }
    }

    /// Removes an entry file, its directory synced, the counters kept
    /// right; whether it was there.
    pub(crate) fn remove_entry(&self, path: &Path) -> bool {
        let len = self
            .fs
            .open(path)
            .and_then(|f| f.metadata())
            .map(|m| m.len());
        if self.fs.remove(path).is_err() {
            return false;
        }
        if let Some(dir) = path.parent() {
            if let Err(e) = self.fs.sync_dir(dir) {
                log::debug!("cache: fsync of {}: {e}", dir.display());
            }
        }
        let stats = &self.shared.stats;
        stats.entries.fetch_sub(1, Ordering::Relaxed);
        stats
            .bytes
            .fetch_sub(len.unwrap_or(0) as i64, Ordering::Relaxed);
        true
    }

    /// Counts a failed write and logs the first of each kind.
    pub(crate) fn failed(&mut self, e: &io::Error, path: &Path) {
        let kind = Failure::of(e);
        self.shared.stats.count_failure(kind);
        if self.logged.insert(kind) {
            log::warn!(
                "cache: cannot write {} ({}): {e}; answers are still proxied, not cached (logged once per kind, counted in lite_apiserver_cache_write_failures_total)",
                path.display(),
                kind.as_str()
            );
        } else {
            log::debug!("cache: cannot write {}: {e}", path.display());
        }
    }
}
