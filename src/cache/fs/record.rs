//! A recording [`Fs`] and the crash model that replays its log (tests).
//!
//! [`RecordFs`] runs every operation on the real file system and logs it,
//! in order, with the bytes each file handle wrote and where. [`Model`]
//! replays a prefix of that log (a cut point) on top of a snapshot of the
//! directory taken before, keeping for every directory the entries made
//! durable by its last `sync_dir` and the changes since, and for every
//! file the bytes made durable by its last `sync` and the writes since.
//! [`Model::image`] then says what a power cut at that point could leave,
//! under the contract at the top of [`crate::cache::fs`]: unsynced
//! directory changes none, half or all applied (in order), unsynced file
//! data lost, half written, truncated, holed, or all there.
//!
//! [`Sabotage`] makes the recorder drop one kind of sync, as a writer that
//! forgot it would: the checks must then fail (proof that they can). The
//! replay itself is in `model.rs`.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Fs, RealFs, WriteFile};

/// One logged operation (paths absolute, as the writer gave them).
#[derive(Debug, Clone)]
pub enum Op {
    /// A directory was created.
    Mkdir(PathBuf),
    /// A file was created, written through handle `file`.
    Create { path: PathBuf, file: u64 },
    /// `bytes` written at `at` through handle `file`.
    Write { file: u64, at: u64, bytes: Vec<u8> },
    /// Handle `file` was fsynced.
    Sync { file: u64 },
    /// A rename.
    Rename { from: PathBuf, to: PathBuf },
    /// An unlink.
    Remove(PathBuf),
    /// A directory was fsynced.
    SyncDir(PathBuf),
    /// A point the test marks (e.g. "flushed": everything must be durable).
    Mark(&'static str),
}

impl Op {
    /// A short description for failure messages.
    pub fn describe(&self, root: &Path) -> String {
        let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
        match self {
            Op::Mkdir(p) => format!("mkdir {}", rel(p)),
            Op::Create { path, file } => format!("create {} (#{file})", rel(path)),
            Op::Write { file, at, bytes } => format!("write #{file} {}@{at}", bytes.len()),
            Op::Sync { file } => format!("fsync #{file}"),
            Op::Rename { from, to } => format!("rename {} -> {}", rel(from), rel(to)),
            Op::Remove(p) => format!("unlink {}", rel(p)),
            Op::SyncDir(p) => format!("fsync dir {}", rel(p)),
            Op::Mark(m) => format!("mark {m}"),
        }
    }

    /// Whether it changes anything on disk.
    pub fn mutates(&self) -> bool {
        !matches!(self, Op::Mark(_))
    }
}

/// A sync the recorder silently skips (the writer's call returns Ok, but
/// nothing is synced and nothing logged), to prove the checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// Every file sync.
    FileSync,
    /// The directory sync right after a rename.
    DirSyncAfterRename,
    /// The directory sync right after an unlink.
    DirSyncAfterRemove,
    /// The parent's sync right after a mkdir.
    DirSyncAfterMkdir,
}

/// The shared log.
#[derive(Debug, Default)]
pub struct Log {
    ops: Mutex<Vec<Op>>,
    next_file: Mutex<u64>,
    /// Set when the recorder is dropped (the writer thread ended).
    gone: Mutex<bool>,
    gone_cv: Condvar,
    sabotage: Option<Sabotage>,
}

impl Log {
    /// A log whose recorder skips `sabotage`.
    pub fn new(sabotage: Option<Sabotage>) -> Arc<Log> {
        Arc::new(Log {
            sabotage,
            ..Log::default()
        })
    }

    fn push(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }

    /// Everything logged so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    /// Forgets what was logged (the setup before a snapshot).
    pub fn clear(&self) {
        self.ops.lock().unwrap().clear();
    }

    /// Logs a mark.
    pub fn mark(&self, label: &'static str) {
        self.push(Op::Mark(label));
    }

    /// Waits until the recorder is dropped (its writer thread ended).
    pub fn wait_gone(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut gone = self.gone.lock().unwrap();
        while !*gone {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the cache writer thread did not end");
            gone = self.gone_cv.wait_timeout(gone, left).unwrap().0;
        }
    }

    /// Whether the last op logged is `kind` on something in `dir`.
    fn last_is(&self, dir: &Path, kind: fn(&Op) -> Option<&Path>) -> bool {
        let ops = self.ops.lock().unwrap();
        ops.last()
            .and_then(kind)
            .is_some_and(|p| p.parent() == Some(dir))
    }
}

/// The real file system with every operation logged.
pub struct RecordFs {
    log: Arc<Log>,
}

impl RecordFs {
    /// A recorder logging into `log`.
    pub fn new(log: Arc<Log>) -> RecordFs {
        RecordFs { log }
    }
}

impl Drop for RecordFs {
    fn drop(&mut self) {
        *self.log.gone.lock().unwrap() = true;
        self.log.gone_cv.notify_all();
    }
}

impl Fs for RecordFs {
    fn mkdir(&self, dir: &Path) -> io::Result<()> {
        RealFs.mkdir(dir)?;
        self.log.push(Op::Mkdir(dir.to_owned()));
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let inner = RealFs.create(path)?;
        let file = {
            let mut next = self.log.next_file.lock().unwrap();
            *next += 1;
            *next
        };
        self.log.push(Op::Create {
            path: path.to_owned(),
            file,
        });
        Ok(Box::new(RecordFile {
            inner,
            file,
            pos: 0,
            log: self.log.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)?;
        self.log.push(Op::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
        });
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        RealFs.remove(path)?;
        self.log.push(Op::Remove(path.to_owned()));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let skip = match self.log.sabotage {
            Some(Sabotage::DirSyncAfterRename) => self.log.last_is(dir, |op| match op {
                Op::Rename { to, .. } => Some(to),
                _ => None,
            }),
            Some(Sabotage::DirSyncAfterRemove) => self.log.last_is(dir, |op| match op {
                Op::Remove(p) => Some(p),
                _ => None,
            }),
            Some(Sabotage::DirSyncAfterMkdir) => self.log.last_is(dir, |op| match op {
                Op::Mkdir(p) => Some(p),
                _ => None,
            }),
            _ => false,
        };
        if skip {
            return Ok(());
        }
        RealFs.sync_dir(dir)?;
        self.log.push(Op::SyncDir(dir.to_owned()));
        Ok(())
    }

    fn open(&self, path: &Path) -> io::Result<File> {
        RealFs.open(path)
    }
}

/// A file handle that logs what it writes.
struct RecordFile {
    inner: Box<dyn WriteFile>,
    file: u64,
    /// The cursor `write` appends at.
    pos: u64,
    log: Arc<Log>,
}

impl Write for RecordFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.log.push(Op::Write {
            file: self.file,
            at: self.pos,
            bytes: buf[..n].to_vec(),
        });
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl WriteFile for RecordFile {
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(bytes, offset)?;
        self.log.push(Op::Write {
            file: self.file,
            at: offset,
            bytes: bytes.to_vec(),
        });
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        if self.log.sabotage == Some(Sabotage::FileSync) {
            return Ok(());
        }
        self.inner.sync()?;
        self.log.push(Op::Sync { file: self.file });
        Ok(())
    }
}
