//! What the writer remembers of the entries it published: their headers
//! and a hash of their bodies, so that re-reading an unchanged object (the
//! usual online GET) costs no open, no read, no parse and no JSON scan.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::cache::entry::EntryMeta;

/// FNV-style hashing, a word at a time: the writer's maps are keyed by
/// paths and ids it made itself, so a keyed (DoS-resistant) hash buys
/// nothing and costs per request.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        // Avalanche: multiplication only carries bits upwards, and the
        // table indexes by the low ones.
        let h = (self.0 ^ (self.0 >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            h = (h ^ crate::json::word(w)).wrapping_mul(0x100_0000_01b3);
        }
        for &b in words.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A map with [`Fnv`] hashing.
pub(crate) type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// A fast hash of a body, eight bytes at a time, keyed per process: with
/// the length it tells a repeated answer from a changed one without
/// parsing the JSON (the resourceVersion can sit after a long `data`).
/// A collision could only keep an earlier upstream answer a little longer,
/// never serve foreign content.
pub(crate) fn body_hash(bytes: &[u8]) -> u64 {
    use std::sync::OnceLock;
    static KEY: OnceLock<u64> = OnceLock::new();
    let key = *KEY.get_or_init(|| {
        let d = crate::clock::random_within(std::time::Duration::from_nanos(u64::MAX));
        d.as_nanos() as u64 | 1
    });
    const M: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = key ^ (bytes.len() as u64).wrapping_mul(M);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = (h ^ crate::json::word(w)).wrapping_mul(M).rotate_left(29);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(M).rotate_left(29);
    }
    h ^ (h >> 32)
}

/// Entries remembered at most (the index is dropped and rebuilt past it).
const MAX_KNOWN: usize = 4096;

/// What the writer knows of a published entry.
struct Known {
    meta: Arc<EntryMeta>,
    /// Its last-read time as last set (write or touch).
    touched: SystemTime,
    /// [`body_hash`] of its body, when the writer saw the whole body.
    hash: Option<u64>,
    /// When the file was last seen to exist.
    seen: Instant,
}

/// How long the index trusts that a remembered file still exists.
const SEEN_FOR: Duration = Duration::from_secs(1);

/// Published entries by path (the writer thread's alone).
#[derive(Default)]
pub(crate) struct Index {
    known: RefCell<FastMap<OsString, Known>>,
}

impl Index {
    /// The header and body hash remembered for `dest`, and whether the
    /// file was seen to exist within the last second. If it was not, the
    /// caller looks (so at most once a second per entry, however many
    /// GETs re-read it) and this counts as seen now.
    pub(crate) fn get(&self, dest: &Path) -> Option<(Arc<EntryMeta>, Option<u64>, bool)> {
        let mut known = self.known.borrow_mut();
        let k = known.get_mut(dest.as_os_str())?;
        let now = Instant::now();
        let seen_lately = now.duration_since(k.seen) < SEEN_FOR;
        if !seen_lately {
            k.seen = now;
        }
        Some((k.meta.clone(), k.hash, seen_lately))
    }

    /// Remembers `dest`'s header (its body hash unknown yet).
    pub(crate) fn remember(&self, dest: &Path, meta: Arc<EntryMeta>, touched: SystemTime) {
        let mut known = self.known.borrow_mut();
        if known.len() >= MAX_KNOWN {
            known.clear();
        }
        let entry = Known {
            meta,
            touched,
            hash: None,
            seen: Instant::now(),
        };
        known.insert(dest.as_os_str().to_owned(), entry);
    }

    /// Records the hash of the body published at `dest`.
    pub(crate) fn note_hash(&self, dest: &Path, hash: u64) {
        if let Some(k) = self.known.borrow_mut().get_mut(dest.as_os_str()) {
            k.hash = Some(hash);
        }
    }

    /// Forgets `dest` (removed).
    pub(crate) fn forget(&self, dest: &Path) {
        self.known.borrow_mut().remove(dest.as_os_str());
    }

    /// Whether `dest`'s last-read time should be refreshed now (it is
    /// older than `after`, or unknown); if so it counts as refreshed.
    pub(crate) fn needs_touch(
        &self,
        dest: &Path,
        now: SystemTime,
        after: std::time::Duration,
    ) -> bool {
        let mut known = self.known.borrow_mut();
        match known.get_mut(dest.as_os_str()) {
            Some(k) if now.duration_since(k.touched).unwrap_or_default() < after => false,
            Some(k) => {
                k.touched = now;
                true
            }
            None => true,
        }
    }
}
