//! The file-system operations the cache writer makes, behind a trait, so
//! that tests can record them (the crash-consistency check replays every
//! prefix of the log a power cut could leave) or make them fail (ENOSPC,
//! EROFS) without mounting anything.
//!
//! The contract the writer keeps, and the recorder checks: a file's bytes
//! are durable only after [`WriteFile::sync`]; a directory entry (create,
//! rename, unlink) only after [`Fs::sync_dir`] of its directory. So every
//! publish is: write temp, sync it, rename over the entry, sync the
//! directory; every unlink is followed by a sync of its directory; every
//! directory created is synced into its parent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;

/// A file being written (a temp file before it is published).
pub trait WriteFile: Write + Send {
    /// Overwrites `bytes` at `offset` (the padded header fields).
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's bytes durable (fsync).
    fn sync(&mut self) -> io::Result<()>;
}

/// The writer's operations on the cache directory.
pub trait Fs: Send + 'static {
    /// Creates `dir` and any missing parents (mode 0700), each synced into
    /// its parent directory. Provided in terms of [`Fs::mkdir`] and
    /// [`Fs::sync_dir`], so a recorder sees (and checks) each step.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.create_dir_all(parent)?;
        }
        match self.mkdir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        }
        match dir.parent() {
            Some(parent) => self.sync_dir(parent),
            None => Ok(()),
        }
    }
    /// Creates one directory (mode 0700) whose parent exists; its entry is
    /// durable only after [`Fs::sync_dir`] of the parent.
    fn mkdir(&self, dir: &Path) -> io::Result<()> {
        fs::DirBuilder::new().mode(0o700).create(dir)
    }
    /// Creates a new file (mode 0600); fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>>;
    /// Renames `from` over `to` (atomic).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes `dir`'s entries durable (fsync of the directory).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Opens a file to read it.
    fn open(&self, path: &Path) -> io::Result<File> {
        File::open(path)
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

struct RealFile(File);

impl Write for RealFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl WriteFile for RealFile {
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(bytes, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl Fs for RealFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Why a write failed, as counted in `/metrics` and logged once each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// ENOSPC or EDQUOT: the disk (or quota) is full.
    NoSpace,
    /// EROFS: the file system is read-only.
    ReadOnly,
    /// EACCES or EPERM.
    Permission,
    /// Anything else (EIO, ...).
    Other,
}

impl Failure {
    /// Every kind, in `/metrics` order.
    pub const ALL: [Failure; 4] = [
        Failure::NoSpace,
        Failure::ReadOnly,
        Failure::Permission,
        Failure::Other,
    ];

    /// The kind of an I/O error.
    pub fn of(e: &io::Error) -> Failure {
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        const EROFS: i32 = 30;
        const EACCES: i32 = 13;
        const EPERM: i32 = 1;
        match e.raw_os_error() {
            Some(ENOSPC | EDQUOT) => Failure::NoSpace,
            Some(EROFS) => Failure::ReadOnly,
            Some(EACCES | EPERM) => Failure::Permission,
            _ => Failure::Other,
        }
    }

    /// The `/metrics` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NoSpace => "no_space",
            Failure::ReadOnly => "read_only",
            Failure::Permission => "permission",
            Failure::Other => "other",
        }
    }

    /// Index into a per-kind counter table.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod crash;
#[cfg(test)]
mod model;
#[cfg(test)]
mod record;
