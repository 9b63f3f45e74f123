//! The writer's disk operations, in the order the durability contract of
//! [`crate::cache::fs`] asks: temp files, publishing (fsync, rename, fsync
//! of the directory), removals (each followed by a directory fsync), and
//! failures (counted by kind, logged once each).

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use super::writer::{Pending, Writer};
use crate::cache::entry::{padded, EntryMeta, LENGTH_WIDTH, RV_WIDTH};
use crate::cache::fs::{Failure, Fs};
use crate::cache::names::TMP_PREFIX;
use crate::cache::stats::StoreStats;

impl<F: Fs> Writer<F> {
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
        self.index.remember(dest, Arc::new(meta), SystemTime::now());
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
        self.index.forget(path);
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
