//! The writer thread: every write, rename, unlink and fsync of the cache.
//!
//! Jobs arrive in order on one channel (`Job`); the thread owns all the
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

use std::collections::{HashMap, HashSet, VecDeque};

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use std::time::{Duration, Instant};

use super::index::{body_hash, FastMap, Index};
use super::shared::{AnswerKind, Job, Shared, TeeSpec};
use crate::cache::entry::EntryMeta;
use crate::cache::fs::{Failure, Fs, WriteFile};
use crate::cache::key::CacheKey;
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
    /// [`body_hash`] of the whole body, when it came in one job.
    hash: Option<u64>,
    /// The resourceVersion given by the tee (see `Job::Version`).
    version: Option<String>,
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
    pub(crate) rv_at: u64,
    pub(crate) length_at: u64,
    pub(crate) header_len: u64,
    pub(crate) written: u64,
    /// The header written (its resourceVersion and length are fixed at
    /// publish time).
    pub(crate) meta: EntryMeta,
}

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
    pub(crate) logged: HashSet<Failure>,
    /// Headers and body hashes of the entries published.
    pub(crate) index: Index,
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
            index: Index::default(),
        }
    }

    /// Handles jobs until every sender is gone, applying coalesced watch
    /// events when they fall due.
    pub(crate) fn run(mut self) {
        let mut batch = VecDeque::new();
        loop {
            let more = self.shared.jobs.take(&mut batch, self.next_due());
            for job in batch.drain(..) {
                self.handle(job);
            }
            self.apply_due(Instant::now());
            if !more {
                break;
            }
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
            Job::Version { id, rv } => {
                if let Some(open) = self.open.get_mut(&id) {
                    open.version = Some(rv);
                }
            }
            Job::Whole { id, spec, body } => {
                self.shared.release(body.len());
                let hash = body_hash(&body);
                if !self.repeats(&spec, &body, hash) {
                    self.begin(id, spec);
                    if let Some(open) = self.open.get_mut(&id) {
                        open.hash = Some(hash);
                    }
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
    fn repeats(&mut self, spec: &TeeSpec, body: &[u8], hash: u64) -> bool {
        let dest = self.dest_of(&spec.key);
        let Some((old, old_hash)) = self.known_entry(&dest) else {
            return false;
        };
        let header_same = old.status == spec.status
            && old.content_type == spec.content_type
            && old.length == body.len() as u64
            && spec
                .credential
                .as_ref()
                .is_none_or(|c| old.allow.contains(c));
        if !header_same {
            return false;
        }
        if let AnswerKind::List { continued } = &spec.kind {
            if continued.is_some() {
                return false; // a page, never the list itself
            }
        }
        let same = match old_hash {
            Some(old_hash) => old_hash == hash,
            // Not seen whole since a restart: the resourceVersion decides
            // (lists and objects change it on every change), and is
            // whole-list only if the body says no more pages follow.
            None => {
                let rv = crate::json::resource_version(body);
                let whole = !matches!(spec.kind, AnswerKind::List { .. })
                    || paging::classify(None, body) == Page::Whole;
                whole && rv.is_some() && old.resource_version == rv
            }
        };
        if same && old_hash.is_none() {
            self.index.note_hash(&dest, hash);
        }
        if same {
            self.keep_unchanged(&dest);
            if matches!(spec.kind, AnswerKind::List { .. }) {
                self.frozen.remove(&spec.key);
            }
        }
        same
    }

    fn begin(&mut self, id: u64, spec: Box<TeeSpec>) {
        let dest = self.dest_of(&spec.key);
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
            hash: None,
            version: None,
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
        let rv = open
            .version
            .take()
            .or_else(|| crate::json::resource_version(&open.prefix));
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
        if let (Some(hash), false) = (open.hash, is_page) {
            self.index.note_hash(&open.dest, hash);
        }
        self.published_list(&list_key, page);
    }

    /// After a LIST answer (or page) was published: the list takes events
    /// again, or the page joins its list, which is assembled once whole.
    fn published_list(&mut self, list_key: &CacheKey, page: Option<Page>) {
        match page {
            Some(Page::Whole) => self.fresh_list(list_key),
            Some(Page::Part { this, next }) => {
                let page_key = list_key.page(this.as_deref());
                let done = self
                    .pages
                    .add(list_key, page_key, this.as_deref(), next.as_deref());
                if let Some(pages) = done {
                    if self.assemble(list_key, &pages) {
                        self.fresh_list(list_key);
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
        if self
            .index
            .needs_touch(dest, now, crate::cache::gc::TOUCH_AFTER)
        {
            if let Ok(file) = self.fs.open(dest) {
                crate::cache::gc::touch(&file);
            }
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

    /// Where `key`'s entry lives.
    fn dest_of(&self, key: &CacheKey) -> PathBuf {
        key.path_in(&self.shared.dir)
    }

    /// The header of the valid entry at `dest`: remembered, or read (and
    /// then remembered).
    fn known_meta(&self, dest: &Path) -> Option<Arc<EntryMeta>> {
        self.known_entry(dest).map(|(meta, _)| meta)
    }

    /// [`Writer::known_meta`] with the body's hash, if known.
    fn known_entry(&self, dest: &Path) -> Option<(Arc<EntryMeta>, Option<u64>)> {
        if let Some((meta, hash, seen_lately)) = self.index.get(dest) {
            // A stat (at most one a second) keeps the index honest if the
            // file went away behind our back (an operator cleaning the
            // cache).
            if seen_lately || std::fs::symlink_metadata(dest).is_ok() {
                return Some((meta, hash));
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
        self.index.remember(dest, meta.clone(), touched);
        Some((meta, None))
    }
}
