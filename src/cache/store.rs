//! The crash-safe store: one writer thread does every write and fsync.
//!
//! Async code never blocks on the disk to *write*: it sends jobs over a
//! bounded channel (backpressure, bounded memory) to a single thread, which
//! is also where list rewrites from watch events run. STYLE.md's trap: smol's
//! blocking pool could otherwise grow to hundreds of threads on a slow flash.
//!
//! Every entry is published the same way: written to a temp file in the
//! same directory, fsynced, renamed over the final name, and the directory
//! fsynced. A power cut at any moment leaves the previous entry or the next
//! one, never a mix; a stale temp file is removed at the next start.
//!
//! Reads are small and synchronous: open, check the header
//! ([`EntryMeta::read_from`]), hand the file to the caller positioned at the
//! body. A bad file is removed and logged once, and reported as
//! [`Miss::Torn`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use smol::channel::{self, Receiver, Sender};

use super::entry::{padded, EntryMeta, LENGTH_WIDTH, RV_WIDTH};
use super::key::CacheKey;
use super::patch::{self, PatchError};
use crate::identity::Credential;
use crate::watch::{EventType, OwnedEvent};

/// Jobs queued for the writer thread at most (each data job is at most one
/// body piece, so this bounds memory at roughly 64 x 16 KiB).
const QUEUE: usize = 64;
/// Prefix of temp files; never matches an entry name (entries contain `@`
/// and never start with `.`).
const TMP_PREFIX: &str = ".tmp-";
/// A read refreshes the last-read time only if it is older than this
/// (saves flash writes on hot entries).
const TOUCH_AFTER: Duration = Duration::from_secs(3600);

/// Why the store failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The file system said no.
    Io(PathBuf, io::Error),
    /// The writer thread is gone (shutdown).
    Closed,
    /// A header could not be built.
    Entry(super::entry::EntryError),
    /// A cached list could not be patched.
    Patch(PatchError),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            StoreError::Closed => write!(f, "the cache writer has stopped"),
            StoreError::Entry(e) => write!(f, "{e}"),
            StoreError::Patch(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Why a read found no usable entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// No entry.
    Absent,
    /// A bad entry (removed).
    Torn,
}

/// An entry opened for reading.
#[derive(Debug)]
pub struct Entry {
    /// The header.
    pub meta: EntryMeta,
    /// The file, positioned at the body.
    pub file: File,
}

impl Entry {
    /// Whether `credential` may read it offline.
    pub fn allows(&self, credential: &Credential) -> bool {
        self.meta.allows(credential)
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct StoreStats {
    entries: AtomicI64,
    bytes: AtomicI64,
    writes: AtomicU64,
    bytes_written: AtomicU64,
    list_rewrites: AtomicU64,
    events_applied: AtomicU64,
    torn_removed: AtomicU64,
    unchanged: AtomicU64,
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
    /// Appends the store's counters in Prometheus text.
    pub fn render(&self, out: &mut String) {
        let counters = [
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
                "lite_apiserver_cache_torn_entries_removed_total",
                "Bad entry files removed.",
                &self.torn_removed,
            ),
            (
                "lite_apiserver_cache_unchanged_total",
                "Answers not rewritten: same resourceVersion as the entry.",
                &self.unchanged,
            ),
        ];
        for (name, help, value) in counters {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
    }
}

/// Work for the writer thread.
enum Job {
    Begin {
        id: u64,
        rel: PathBuf,
        meta: EntryMeta,
        credential: Option<Credential>,
    },
    Data {
        id: u64,
        bytes: Vec<u8>,
    },
    Commit {
        id: u64,
        resource_version: Option<String>,
        /// Publish under another key than the one begun with.
        dest: Option<PathBuf>,
        /// Where to report the result; `None`: log failures.
        done: Option<Sender<Result<(), StoreError>>>,
    },
    /// A small body: Begin, Data and Commit in one job.
    Whole {
        id: u64,
        rel: PathBuf,
        meta: EntryMeta,
        credential: Option<Credential>,
        body: Vec<u8>,
        resource_version: Option<String>,
        dest: Option<PathBuf>,
        done: Option<Sender<Result<(), StoreError>>>,
    },
    Assemble {
        list: CacheKey,
        pages: Vec<CacheKey>,
        done: Sender<Result<(), StoreError>>,
    },
    Patch {
        key: CacheKey,
        events: Vec<OwnedEvent>,
        done: Sender<Result<(), StoreError>>,
    },
    Converge {
        key: CacheKey,
    },
    Flush {
        done: Sender<()>,
    },
}

struct Inner {
    dir: PathBuf,
    jobs: Sender<Job>,
    aborted: Mutex<Vec<u64>>,
    next_id: AtomicU64,
    stats: StoreStats,
    warned: Mutex<HashSet<PathBuf>>,
}

/// The cache store (cheap to clone).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating, 0700) the cache dir, removes stale temp files,
    /// counts entries, and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StoreError::Io(dir.to_owned(), e))?;
        let (jobs, rx) = channel::bounded(QUEUE);
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            jobs,
            aborted: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            stats: StoreStats::default(),
            warned: Mutex::new(HashSet::new()),
        });
        let (entries, bytes) = scan(dir);
        inner.stats.entries.store(entries, Ordering::Relaxed);
        inner.stats.bytes.store(bytes, Ordering::Relaxed);
        let worker = inner.clone();
        std::thread::Builder::new()
            .name("lite-apiserver-cache".into())
            .spawn(move || Writer::new(worker).run(rx))
            .map_err(|e| StoreError::Io(dir.to_owned(), e))?;
        Ok(Store { inner })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Counters.
    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    /// Starts a new version of `key`'s entry. Nothing is visible until
    /// [`EntryWriter::commit`]; dropping the writer discards it.
    pub fn writer(
        &self,
        key: &CacheKey,
        status: u16,
        content_type: &str,
        credential: Option<Credential>,
    ) -> EntryWriter {
        EntryWriter {
            store: self.clone(),
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            begin: Some(Job::Begin {
                id: 0,
                rel: key.rel_path(),
                meta: EntryMeta {
                    status,
                    content_type: content_type.to_owned(),
                    resource_version: None,
                    length: 0,
                    stored: crate::server::unix_now(),
                    allow: Vec::new(),
                },
                credential,
            }),
            held: Vec::new(),
            finished: false,
        }
    }

    /// Opens `key`'s entry for reading.
    pub fn read(&self, key: &CacheKey) -> Result<Entry, Miss> {
        let path = self.inner.dir.join(key.rel_path());
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(_) => return Err(Miss::Absent),
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        match EntryMeta::read_from(&mut file, len) {
            Ok((meta, body_at)) => {
                if file.seek(SeekFrom::Start(body_at)).is_err() {
                    return Err(Miss::Absent);
                }
                touch(&file);
                Ok(Entry { meta, file })
            }
            Err(e) => {
                self.drop_torn(&path, &e.to_string());
                Err(Miss::Torn)
            }
        }
    }

    fn drop_torn(&self, path: &Path, why: &str) {
        let first = self
            .inner
            .warned
            .lock()
            .map(|mut w| w.insert(path.to_owned()))
            .unwrap_or(true);
        if first {
            log::warn!("cache: removing bad entry {}: {why}", path.display());
        }
        if fs::remove_file(path).is_ok() {
            self.inner
                .stats
                .torn_removed
                .fetch_add(1, Ordering::Relaxed);
            self.inner.stats.entries.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Applies watch events to `key`'s list entry (if cached), and to the
    /// object entries of the items involved.
    pub async fn patch_list(
        &self,
        key: &CacheKey,
        events: Vec<OwnedEvent>,
    ) -> Result<(), StoreError> {
        self.ask(|done| Job::Patch {
            key: key.clone(),
            events,
            done,
        })
        .await
    }

    /// Streams the pages of a paged LIST into the list entry `list`.
    pub async fn assemble(&self, list: &CacheKey, pages: Vec<CacheKey>) -> Result<(), StoreError> {
        self.ask(|done| Job::Assemble {
            list: list.clone(),
            pages,
            done,
        })
        .await
    }

    /// Queues a job that reports back, and waits for its result.
    async fn ask(
        &self,
        job: impl FnOnce(Sender<Result<(), StoreError>>) -> Job,
    ) -> Result<(), StoreError> {
        let (done, result) = channel::bounded(1);
        self.send(job(done)).await?;
        result.recv().await.map_err(|_| StoreError::Closed)?
    }

    /// After a fresh complete LIST of `key` was committed: removes the
    /// object entries of items no longer in it.
    pub async fn converge(&self, key: &CacheKey) {
        let _ = self.send(Job::Converge { key: key.clone() }).await;
    }

    /// Waits until every job queued so far is on disk.
    pub async fn flush(&self) {
        let (done, flushed) = channel::bounded(1);
        if self.send(Job::Flush { done }).await.is_ok() {
            let _ = flushed.recv().await;
        }
    }

    async fn send(&self, job: Job) -> Result<(), StoreError> {
        self.inner
            .jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)
    }
}

/// Refreshes the last-read time GC goes by, at most hourly per entry.
fn touch(file: &File) {
    let now = SystemTime::now();
    let stale = file
        .metadata()
        .and_then(|m| m.modified())
        .map(|t| now.duration_since(t).unwrap_or_default() > TOUCH_AFTER)
        .unwrap_or(false);
    if stale {
        let _ = file.set_modified(now);
    }
}

/// Counts entry files and their bytes; removes stale temp files.
fn scan(dir: &Path) -> (i64, i64) {
    let mut entries = 0;
    let mut bytes = 0;
    walk(dir, &mut |path, meta| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(TMP_PREFIX) {
            let _ = fs::remove_file(path);
        } else if is_entry_name(name) {
            entries += 1;
            bytes += meta.len() as i64;
        }
    });
    (entries, bytes)
}

/// Whether a file name is an entry's.
pub fn is_entry_name(name: &str) -> bool {
    !name.starts_with('.') && name.contains('@') && name.ends_with(".json")
}

/// Calls `f` for every file below `dir` (not following symlinks).
pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata)) {
    let Ok(read) = fs::read_dir(dir) else { return };
    for entry in read.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, f);
        } else if meta.is_file() {
            f(&path, &meta);
        }
    }
}

/// A new entry version being written.
pub struct EntryWriter {
    store: Store,
    id: u64,
    begin: Option<Job>,
    /// Body bytes held back while the body is small, so a small answer
    /// reaches the writer thread as one job instead of three.
    held: Vec<u8>,
    finished: bool,
}

/// Bodies up to this size travel to the writer thread in one job.
const HOLD_LIMIT: usize = 16 * 1024;

impl EntryWriter {
    async fn start(&mut self) -> Result<(), StoreError> {
        if let Some(Job::Begin {
            rel,
            meta,
            credential,
            ..
        }) = self.begin.take()
        {
            let id = self.id;
            self.store
                .send(Job::Begin {
                    id,
                    rel,
                    meta,
                    credential,
                })
                .await?;
        }
        Ok(())
    }

    /// Appends body bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if self.begin.is_some() && self.held.len() + bytes.len() <= HOLD_LIMIT {
            self.held.extend_from_slice(bytes);
            return Ok(());
        }
        self.start().await?;
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            self.store
                .send(Job::Data {
                    id: self.id,
                    bytes: held,
                })
                .await?;
        }
        self.store
            .send(Job::Data {
                id: self.id,
                bytes: bytes.to_vec(),
            })
            .await
    }

    /// Publishes the entry (fsync, rename, fsync dir) and waits for it.
    pub async fn commit(self, resource_version: Option<String>) -> Result<(), StoreError> {
        let (done, result) = channel::bounded(1);
        self.finish(None, resource_version, Some(done)).await?;
        result.recv().await.map_err(|_| StoreError::Closed)?
    }

    /// Sends the commit: one `Whole` job if nothing was sent yet, else a
    /// `Commit` after the streamed pieces.
    async fn finish(
        mut self,
        dest: Option<PathBuf>,
        resource_version: Option<String>,
        done: Option<Sender<Result<(), StoreError>>>,
    ) -> Result<(), StoreError> {
        self.finished = true;
        let id = self.id;
        if let Some(Job::Begin {
            rel,
            meta,
            credential,
            ..
        }) = self.begin.take()
        {
            let body = std::mem::take(&mut self.held);
            let whole = Job::Whole {
                id,
                rel,
                meta,
                credential,
                body,
                resource_version,
                dest,
                done,
            };
            return self.store.send(whole).await;
        }
        self.store
            .send(Job::Commit {
                id,
                resource_version,
                dest,
                done,
            })
            .await
    }

    /// Queues the commit without waiting for the disk: the request path
    /// must not pay for an fsync. The writer thread publishes it in order
    /// with every later job (so a page assembly queued next sees it) and
    /// logs a failure; [`Store::flush`] waits for it.
    pub async fn commit_queued(
        self,
        key: Option<&CacheKey>,
        resource_version: Option<String>,
    ) -> Result<(), StoreError> {
        let dest = key.map(|k| self.store.inner.dir.join(k.rel_path()));
        self.finish(dest, resource_version, None).await
    }
}

impl Drop for EntryWriter {
    fn drop(&mut self) {
        if !self.finished && self.begin.is_none() {
            if let Ok(mut aborted) = self.store.inner.aborted.lock() {
                aborted.push(self.id);
            }
        }
    }
}

/// A temp file being filled.
struct Pending {
    tmp: PathBuf,
    dest: PathBuf,
    file: BufWriter<File>,
    rv_at: u64,
    length_at: u64,
    header_len: u64,
    written: u64,
    failed: Option<io::Error>,
    /// The entry this one replaces, when nothing but the body could differ
    /// (same status, content type and readers): if the body turns out to
    /// have the same resourceVersion and length, the write is skipped.
    same_as: Option<EntryMeta>,
}

/// A body being collected in memory because it probably repeats the
/// entry already published (same reader, same status and content type):
/// most online GETs re-read an unchanged object, and for those no temp file
/// is created at all.
struct Deferred {
    dest: PathBuf,
    meta: EntryMeta,
    buf: Vec<u8>,
    same_as: EntryMeta,
}

/// Bodies up to this size are collected in memory first (see [`Deferred`]).
const DEFER_LIMIT: usize = 64 * 1024;

/// The writer thread's state.
struct Writer {
    inner: Arc<Inner>,
    pending: HashMap<u64, Pending>,
    deferred: HashMap<u64, Deferred>,
    /// Writers dropped before their Begin arrived.
    abandoned: HashSet<u64>,
}

impl Writer {
    fn new(inner: Arc<Inner>) -> Writer {
        Writer {
            inner,
            pending: HashMap::new(),
            deferred: HashMap::new(),
            abandoned: HashSet::new(),
        }
    }

    fn run(mut self, jobs: Receiver<Job>) {
        while let Ok(job) = jobs.recv_blocking() {
            // Before: writers dropped earlier; after: writers dropped while
            // this job's Begin was still queued.
            self.reap_aborted();
            self.handle(job);
            self.reap_aborted();
        }
        for (_, p) in self.pending.drain() {
            let _ = fs::remove_file(&p.tmp);
        }
    }

    fn handle(&mut self, job: Job) {
        match job {
            Job::Begin {
                id,
                rel,
                meta,
                credential,
            } => self.begin(id, &rel, meta, credential),
            Job::Data { id, bytes } => self.data(id, &bytes),
            Job::Commit {
                id,
                resource_version,
                dest,
                done,
            } => {
                let result = self.commit(id, resource_version, dest);
                report(result, done);
            }
            Job::Whole {
                id,
                rel,
                meta,
                credential,
                body,
                resource_version,
                dest,
                done,
            } => {
                self.begin(id, &rel, meta, credential);
                self.data(id, &body);
                let result = self.commit(id, resource_version, dest);
                report(result, done);
            }
            Job::Assemble { list, pages, done } => {
                let result = self.assemble(&list, &pages);
                let _ = done.try_send(result);
            }
            Job::Patch { key, events, done } => {
                let result = self.patch(&key, &events);
                let _ = done.try_send(result);
            }
            Job::Converge { key } => self.converge(&key),
            Job::Flush { done } => {
                let _ = done.try_send(());
            }
        }
    }

    fn reap_aborted(&mut self) {
        let ids: Vec<u64> = match self.inner.aborted.lock() {
            Ok(mut a) => std::mem::take(&mut *a),
            Err(_) => return,
        };
        for id in ids {
            let deferred = self.deferred.remove(&id).is_some();
            match self.pending.remove(&id) {
                Some(p) => {
                    let _ = fs::remove_file(&p.tmp);
                }
                // Dropped before its Begin was handled: refuse that Begin.
                None if !deferred => {
                    self.abandoned.insert(id);
                }
                None => {}
            }
        }
    }

    fn begin(&mut self, id: u64, rel: &Path, mut meta: EntryMeta, credential: Option<Credential>) {
        if self.abandoned.remove(&id) {
            return;
        }
        let dest = self.inner.dir.join(rel);
        let previous = previous_meta(&dest);
        meta.allow = previous
            .as_ref()
            .map(|m| m.allow.clone())
            .unwrap_or_default();
        let known_reader = credential.as_ref().is_none_or(|c| meta.allow.contains(c));
        if let Some(c) = credential {
            meta.allow.retain(|a| a != &c);
            meta.allow.push(c);
        }
        let same_as = previous.filter(|old| {
            known_reader && old.status == meta.status && old.content_type == meta.content_type
        });
        if let Some(same_as) = same_as {
            let deferred = Deferred {
                dest,
                meta,
                buf: Vec::new(),
                same_as,
            };
            self.deferred.insert(id, deferred);
            return;
        }
        match self.create_tmp(&dest, &meta) {
            Ok(p) => {
                self.pending.insert(id, p);
            }
            Err(e) => log::warn!("cache: cannot write {}: {e}", dest.display()),
        }
    }

    fn create_tmp(&self, dest: &Path, meta: &EntryMeta) -> Result<Pending, StoreError> {
        let dir = dest.parent().unwrap_or(&self.inner.dir);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StoreError::Io(dir.to_owned(), e))?;
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}-{}",
            std::process::id(),
            self.inner.next_id.fetch_add(1, Ordering::Relaxed)
        ));
        let header = meta.encode().map_err(StoreError::Entry)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| StoreError::Io(tmp.clone(), e))?;
        let mut file = BufWriter::with_capacity(32 * 1024, file);
        file.write_all(&header.bytes)
            .map_err(|e| StoreError::Io(tmp.clone(), e))?;
        Ok(Pending {
            tmp,
            dest: dest.to_owned(),
            file,
            rv_at: header.rv_at as u64,
            length_at: header.length_at as u64,
            header_len: header.bytes.len() as u64,
            written: 0,
            failed: None,
            same_as: None,
        })
    }

    /// Moves a deferred body to a temp file (it grew, or it changed).
    fn materialize(&mut self, id: u64) -> Option<&mut Pending> {
        let d = self.deferred.remove(&id)?;
        match self.create_tmp(&d.dest, &d.meta) {
            Ok(mut p) => {
                match p.file.write_all(&d.buf) {
                    Ok(()) => p.written = d.buf.len() as u64,
                    Err(e) => p.failed = Some(e),
                }
                p.same_as = Some(d.same_as);
                self.pending.insert(id, p);
                self.pending.get_mut(&id)
            }
            Err(e) => {
                log::warn!("cache: cannot write {}: {e}", d.dest.display());
                None
            }
        }
    }

    fn data(&mut self, id: u64, bytes: &[u8]) {
        if let Some(d) = self.deferred.get_mut(&id) {
            if d.buf.len() + bytes.len() <= DEFER_LIMIT {
                d.buf.extend_from_slice(bytes);
                return;
            }
            self.materialize(id);
        }
        if let Some(p) = self.pending.get_mut(&id) {
            if p.failed.is_none() {
                match p.file.write_all(bytes) {
                    Ok(()) => p.written += bytes.len() as u64,
                    Err(e) => p.failed = Some(e),
                }
            }
        }
    }

    fn commit(
        &mut self,
        id: u64,
        resource_version: Option<String>,
        dest: Option<PathBuf>,
    ) -> Result<(), StoreError> {
        if let Some(d) = self.deferred.get(&id) {
            let unchanged = dest.is_none()
                && resource_version.is_some()
                && d.same_as.resource_version == resource_version
                && d.same_as.length == d.buf.len() as u64;
            if unchanged {
                let d = self.deferred.remove(&id);
                self.keep_unchanged(d.map(|d| d.dest));
                return Ok(());
            }
            self.materialize(id);
        }
        let mut p = self.pending.remove(&id).ok_or(StoreError::Closed)?;
        if let Some(dest) = dest {
            if let Some(dir) = dest.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| StoreError::Io(dir.to_owned(), e))?;
            }
            p.dest = dest;
        }
        let tmp = p.tmp.clone();
        if is_unchanged(&p, resource_version.as_deref()) {
            let _ = fs::remove_file(&tmp);
            self.keep_unchanged(Some(p.dest));
            return Ok(());
        }
        let result = self.publish(p, resource_version.as_deref());
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// The same version of the same answer for a known reader: the
    /// published file stays (sparing the flash a rewrite and an fsync); only
    /// its last-read time moves.
    fn keep_unchanged(&self, dest: Option<PathBuf>) {
        if let Some(file) = dest.and_then(|d| File::open(d).ok()) {
            touch(&file);
        }
        self.inner.stats.unchanged.fetch_add(1, Ordering::Relaxed);
    }

    /// Fixes the padded fields, fsyncs, renames, fsyncs the directory.
    fn publish(&self, p: Pending, resource_version: Option<&str>) -> Result<(), StoreError> {
        let tmp = p.tmp.clone();
        let io_err = |e: io::Error| StoreError::Io(tmp.clone(), e);
        if let Some(e) = p.failed {
            return Err(io_err(e));
        }
        let file = p.file.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.write_all_at(
            padded(resource_version.unwrap_or(""), RV_WIDTH).as_bytes(),
            p.rv_at,
        )
        .map_err(io_err)?;
        file.write_all_at(
            padded(&p.written.to_string(), LENGTH_WIDTH).as_bytes(),
            p.length_at,
        )
        .map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        let old_len = fs::metadata(&p.dest).map(|m| m.len() as i64).ok();
        fs::rename(&p.tmp, &p.dest).map_err(io_err)?;
        if let Some(dir) = p.dest.parent() {
            fsync_dir(dir).map_err(io_err)?;
        }
        let new_len = (p.header_len + p.written) as i64;
        let stats = &self.inner.stats;
        stats
            .bytes
            .fetch_add(new_len - old_len.unwrap_or(0), Ordering::Relaxed);
        if old_len.is_none() {
            stats.entries.fetch_add(1, Ordering::Relaxed);
        }
        stats.writes.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes_written
            .fetch_add(new_len as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Streams the cached list through the patcher into a new version, then
    /// refreshes or removes the object entries the events touch.
    fn patch(&mut self, key: &CacheKey, events: &[OwnedEvent]) -> Result<(), StoreError> {
        let dest = self.inner.dir.join(key.rel_path());
        let Ok(mut old) = File::open(&dest) else {
            return Ok(()); // not cached (yet): nothing to keep current
        };
        let len = old.metadata().map(|m| m.len()).unwrap_or(0);
        let Ok((mut meta, body_at)) = EntryMeta::read_from(&mut old, len) else {
            return Ok(()); // a bad entry is dropped by the next read
        };
        old.seek(SeekFrom::Start(body_at))
            .map_err(|e| StoreError::Io(dest.clone(), e))?;
        let new_rv = events
            .iter()
            .rev()
            .find_map(|e| e.resource_version.clone())
            .or(meta.resource_version.clone());
        meta.resource_version = None;
        let mut p = self.create_tmp(&dest, &meta)?;
        let mut body = io::BufReader::with_capacity(32 * 1024, old.take(meta.length));
        let mut counter = CountingWriter {
            inner: &mut p.file,
            written: 0,
        };
        let outcome = patch::apply_events(&mut body, &mut counter, events, &mut |_, _| {});
        p.written = counter.written;
        match outcome {
            Ok(_) => {}
            Err(PatchError::NotAList) => {
                let _ = fs::remove_file(&p.tmp);
                return Ok(()); // Tables are refreshed by the next LIST, not patched
            }
            Err(e) => {
                let _ = fs::remove_file(&p.tmp);
                return Err(StoreError::Patch(e));
            }
        }
        self.publish(p, new_rv.as_deref())?;
        self.inner
            .stats
            .list_rewrites
            .fetch_add(1, Ordering::Relaxed);
        self.inner
            .stats
            .events_applied
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        self.update_items(key, events);
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
            let dest = self.inner.dir.join(item.rel_path());
            match event.kind {
                EventType::Deleted => {
                    if fs::remove_file(&dest).is_ok() {
                        self.inner.stats.entries.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                EventType::Added | EventType::Modified => {
                    if let Err(e) =
                        self.replace_body(&dest, &event.object, event.resource_version.as_deref())
                    {
                        log::debug!("cache: object entry {} not refreshed: {e}", dest.display());
                    }
                }
                EventType::Bookmark | EventType::Error => {}
            }
        }
    }

    /// Rewrites an existing entry with a new body, keeping its header.
    fn replace_body(
        &mut self,
        dest: &Path,
        body: &[u8],
        rv: Option<&str>,
    ) -> Result<(), StoreError> {
        let Ok(mut old) = File::open(dest) else {
            return Ok(());
        };
        let len = old.metadata().map(|m| m.len()).unwrap_or(0);
        let Ok((meta, _)) = EntryMeta::read_from(&mut old, len) else {
            return Ok(());
        };
        let mut p = self.create_tmp(dest, &meta)?;
        p.file
            .write_all(body)
            .map_err(|e| StoreError::Io(p.tmp.clone(), e))?;
        p.written = body.len() as u64;
        let tmp = p.tmp.clone();
        self.publish(p, rv).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    /// Removes an entry file, keeping the counters right.
    fn remove(&self, path: &Path) {
        if fs::remove_file(path).is_ok() {
            self.inner.stats.entries.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Streams the pages of a paged LIST (entries `pages`, in order) into
    /// one list entry, then removes the pages.
    fn assemble(&mut self, list: &CacheKey, pages: &[CacheKey]) -> Result<(), StoreError> {
        let mut readers = Vec::with_capacity(pages.len());
        let mut meta = None;
        for page in pages {
            let path = self.inner.dir.join(page.rel_path());
            let mut file = File::open(&path).map_err(|e| StoreError::Io(path.clone(), e))?;
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let (m, body_at) = EntryMeta::read_from(&mut file, len).map_err(StoreError::Entry)?;
            file.seek(SeekFrom::Start(body_at))
                .map_err(|e| StoreError::Io(path.clone(), e))?;
            readers.push(io::BufReader::with_capacity(32 * 1024, file.take(m.length)));
            meta.get_or_insert(m);
        }
        let Some(mut meta) = meta else { return Ok(()) };
        let rv = meta.resource_version.take();
        let dest = self.inner.dir.join(list.rel_path());
        let mut p = self.create_tmp(&dest, &meta)?;
        let mut sources: Vec<&mut dyn Read> =
            readers.iter_mut().map(|r| r as &mut dyn Read).collect();
        let mut counter = CountingWriter {
            inner: &mut p.file,
            written: 0,
        };
        let merged = patch::merge_pages(&mut sources, &mut counter);
        p.written = counter.written;
        if let Err(e) = merged {
            let _ = fs::remove_file(&p.tmp);
            return Err(StoreError::Patch(e));
        }
        self.publish(p, rv.as_deref())?;
        for page in pages {
            self.remove(&self.inner.dir.join(page.rel_path()));
        }
        Ok(())
    }

    /// Removes object entries of a collection that a fresh, complete, plain
    /// LIST no longer contains.
    fn converge(&mut self, key: &CacheKey) {
        if !key.is_plain() {
            return;
        }
        let Some(items_dir) = key.items_dir() else {
            return;
        };
        let list_path = self.inner.dir.join(key.rel_path());
        let Ok(mut file) = File::open(&list_path) else {
            return;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let Ok((meta, body_at)) = EntryMeta::read_from(&mut file, len) else {
            return;
        };
        if file.seek(SeekFrom::Start(body_at)).is_err() {
            return;
        }
        let mut names: HashSet<PathBuf> = HashSet::new();
        let mut body = io::BufReader::with_capacity(32 * 1024, file.take(meta.length));
        let scanned = patch::apply_events(&mut body, &mut io::sink(), &[], &mut |ns, name| {
            if let Some(item) = key.item(ns, name) {
                names.insert(item.rel_path());
            }
        });
        if scanned.is_err() {
            return;
        }
        let dir = self.inner.dir.join(&items_dir);
        let Ok(read) = fs::read_dir(&dir) else { return };
        for entry in read.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.ends_with("@.json") || name.starts_with('.') {
                continue;
            }
            let rel = items_dir.join(name);
            if !names.contains(&rel) && fs::remove_file(entry.path()).is_ok() {
                log::info!("cache: {} is gone upstream; removed", rel.display());
                self.inner.stats.entries.fetch_sub(1, Ordering::Relaxed);
            }
        }
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

/// Hands a commit's result to whoever waits for it, or logs a failure.
fn report(result: Result<(), StoreError>, done: Option<Sender<Result<(), StoreError>>>) {
    match done {
        Some(done) => {
            let _ = done.try_send(result);
        }
        None => {
            if let Err(e) = result {
                log::warn!("cache: could not store an entry: {e}");
            }
        }
    }
}

/// The header of the valid entry at `dest`, if any.
fn previous_meta(dest: &Path) -> Option<EntryMeta> {
    let mut file = File::open(dest).ok()?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    EntryMeta::read_from(&mut file, len).ok().map(|(m, _)| m)
}

/// Whether a finished write would publish what is already there: same
/// resourceVersion (objects and lists change it on every change), same
/// length, and nothing else in the header differs.
fn is_unchanged(p: &Pending, resource_version: Option<&str>) -> bool {
    p.failed.is_none()
        && p.same_as.as_ref().is_some_and(|old| {
            resource_version.is_some()
                && old.resource_version.as_deref() == resource_version
                && old.length == p.written
        })
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Agent;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lite-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn key(path: &str) -> CacheKey {
        CacheKey::new(&Agent::from_user_agent(Some("kubelet")), path, None, None).unwrap()
    }

    fn body_of(mut e: Entry) -> Vec<u8> {
        let mut out = Vec::new();
        (&mut e.file)
            .take(e.meta.length)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    async fn put(store: &Store, k: &CacheKey, body: &[u8], rv: &str, cred: Credential) {
        let mut w = store.writer(k, 200, "application/json", Some(cred));
        for piece in body.chunks(7) {
            w.write(piece).await.unwrap();
        }
        w.commit(Some(rv.to_owned())).await.unwrap();
    }

    #[test]
    fn streamed_write_commit_read() {
        smol::block_on(async {
            let dir = temp("roundtrip");
            let store = Store::open(&dir).unwrap();
            let k = key("/api/v1/namespaces/edge/configmaps/a");
            let alice = Credential::ClientCert("alice".into());
            put(
                &store,
                &k,
                br#"{"metadata":{"resourceVersion":"5"}}"#,
                "5",
                alice.clone(),
            )
            .await;
            let e = store.read(&k).unwrap();
            assert_eq!(
                (e.meta.status, e.meta.resource_version.as_deref()),
                (200, Some("5"))
            );
            assert!(e.allows(&alice));
            assert_eq!(body_of(e), br#"{"metadata":{"resourceVersion":"5"}}"#);
            let path = dir.join(k.rel_path());
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            assert_eq!(
                fs::metadata(path.parent().unwrap())
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                0o700
            );
            // A second reader is added; an unchanged answer is not rewritten.
            let bob = Credential::ClientCert("bob".into());
            put(
                &store,
                &k,
                br#"{"metadata":{"resourceVersion":"5"}}"#,
                "5",
                bob.clone(),
            )
            .await;
            let inode = fs::metadata(&path).unwrap().ino();
            put(
                &store,
                &k,
                br#"{"metadata":{"resourceVersion":"5"}}"#,
                "5",
                bob.clone(),
            )
            .await;
            assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
            let e = store.read(&k).unwrap();
            assert!(e.allows(&alice) && e.allows(&bob));
            assert_eq!(store.stats().unchanged.load(Ordering::Relaxed), 1);
            let _ = fs::remove_dir_all(&dir);
        });
    }

    #[test]
    fn aborted_and_torn_entries_are_never_served() {
        smol::block_on(async {
            let dir = temp("torn");
            let store = Store::open(&dir).unwrap();
            let k = key("/api/v1/namespaces/edge/configmaps/b");
            // Larger than HOLD_LIMIT, so the body was already streaming.
            let mut w = store.writer(&k, 200, "application/json", None);
            w.write(&vec![b'x'; HOLD_LIMIT + 100]).await.unwrap();
            drop(w);
            store.flush().await;
            store.flush().await;
            assert_eq!(store.read(&k).err(), Some(Miss::Absent));
            let mut leftovers = 0;
            walk(&dir, &mut |_, _| leftovers += 1);
            assert_eq!(leftovers, 0, "the aborted temp file is gone");
            put(
                &store,
                &k,
                b"{\"complete\":true}",
                "1",
                Credential::ClientCert("c".into()),
            )
            .await;
            let path = dir.join(k.rel_path());
            let len = fs::metadata(&path).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(len - 3)
                .unwrap();
            assert_eq!(store.read(&k).err(), Some(Miss::Torn));
            assert!(!path.exists());
            let _ = fs::remove_dir_all(&dir);
        });
    }

    #[test]
    fn watch_events_patch_cached_lists_and_their_objects() {
        smol::block_on(async {
            let dir = temp("patch");
            let store = Store::open(&dir).unwrap();
            let list = key("/api/v1/namespaces/edge/pods");
            let cred = Credential::ClientCert("n".into());
            let a = r#"{"metadata":{"name":"a","namespace":"edge","resourceVersion":"1"}}"#;
            let b = r#"{"metadata":{"name":"b","namespace":"edge","resourceVersion":"2"}}"#;
            let body = format!(
                r#"{{"kind":"PodList","metadata":{{"resourceVersion":"2"}},"items":[{a},{b}]}}"#
            );
            put(&store, &list, body.as_bytes(), "2", cred.clone()).await;
            let obj_b = list.item(Some("edge"), "b").unwrap();
            put(&store, &obj_b, b.as_bytes(), "2", cred.clone()).await;
            let a3 = r#"{"metadata":{"name":"a","namespace":"edge","resourceVersion":"3"},"x":1}"#;
            let events = vec![
                OwnedEvent {
                    kind: EventType::Modified,
                    namespace: Some("edge".into()),
                    name: "a".into(),
                    resource_version: Some("3".into()),
                    object: a3.as_bytes().to_vec(),
                },
                OwnedEvent {
                    kind: EventType::Deleted,
                    namespace: Some("edge".into()),
                    name: "b".into(),
                    resource_version: Some("4".into()),
                    object: b.as_bytes().to_vec(),
                },
            ];
            store.patch_list(&list, events).await.unwrap();
            let e = store.read(&list).unwrap();
            assert_eq!(e.meta.resource_version.as_deref(), Some("4"));
            assert!(e.allows(&cred));
            let text = String::from_utf8(body_of(e)).unwrap();
            assert_eq!(
                text,
                format!(
                    r#"{{"kind":"PodList","metadata":{{"resourceVersion":"4"}},"items":[{a3}]}}"#
                )
            );
            assert_eq!(
                store.read(&obj_b).err(),
                Some(Miss::Absent),
                "the deleted object's entry is gone"
            );
            assert_eq!(store.stats().list_rewrites(), 1);
            // Events for a list that is not cached change nothing.
            store
                .patch_list(&key("/api/v1/namespaces/other/pods"), Vec::new())
                .await
                .unwrap();
            assert_eq!(
                store.read(&key("/api/v1/namespaces/other/pods")).err(),
                Some(Miss::Absent)
            );
            let _ = fs::remove_dir_all(&dir);
        });
    }
}
