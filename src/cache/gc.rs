//! Removes entries not read for `--cache-ttl`.
//!
//! "Read" is the file's modification time: a write sets it, and a read
//! refreshes it when it is more than an hour old (see
//! the file store's reader), so an entry that clients keep reading offline
//! is never collected. Temp files older than an hour (left by a crash) and
//! directories left empty are removed too. The cache root and the agent
//! directories stay.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::names::{is_entry_name, walk, TMP_PREFIX};

/// Temp files older than this are leftovers of a crash.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// A read refreshes the last-read time only if it is older than this
/// (saves flash writes on hot entries).
pub const TOUCH_AFTER: Duration = Duration::from_secs(3600);

/// Refreshes the last-read time GC goes by, at most hourly per entry.
pub fn touch(file: &fs::File) {
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

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Entries removed.
    pub removed: u64,
    /// Bytes freed.
    pub freed: u64,
    /// Entries kept.
    pub kept: u64,
}

/// What a sweep would remove (found without changing anything; the cache
/// writer removes it, so that no sweep races a write).
#[derive(Debug, Default)]
pub struct Expired {
    /// Entries not read for the TTL, with their sizes.
    pub entries: Vec<(PathBuf, u64)>,
    /// Temp files left by a crash.
    pub temps: Vec<PathBuf>,
    /// Entries younger than the TTL.
    pub kept: u64,
}

/// Walks `dir` as of `now`.
pub fn expired(dir: &Path, ttl: Duration, now: SystemTime) -> Expired {
    let mut found = Expired::default();
    walk(dir, &mut |path, meta| {
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if is_entry_name(name) && age > ttl {
            found.entries.push((path.to_owned(), meta.len()));
        } else if is_entry_name(name) {
            found.kept += 1;
        } else if name.starts_with(TMP_PREFIX) && age > STALE_TMP {
            found.temps.push(path.to_owned());
        }
    });
    found
}

/// Removes directories below the agent directories that are left empty
/// (each removal synced into its parent). The cache root and the agent
/// directories stay.
pub fn remove_empty_dirs(dir: &Path) {
    let Ok(agents) = fs::read_dir(dir) else {
        return;
    };
    for agent in agents.flatten() {
        if agent.file_type().is_ok_and(|t| t.is_dir()) {
            prune(&agent.path());
        }
    }
}

/// Removes empty directories below `dir`; whether `dir` is empty after.
fn prune(dir: &Path) -> bool {
    let Ok(read) = fs::read_dir(dir) else {
        return false;
    };
    let mut empty = true;
    for entry in read.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && prune(&path) && fs::remove_dir(&path).is_ok() {
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
            continue;
        }
        empty = false;
    }
    empty
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_age(path: &Path, age: Duration, now: SystemTime) {
        let f = fs::File::options().write(true).open(path).unwrap();
        f.set_modified(now - age).unwrap();
    }

    #[test]
    fn removes_only_what_is_older_than_the_ttl() {
        let dir = std::env::temp_dir().join(format!("lite-gc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let pods = dir.join("kubelet/api/v1/namespaces/edge/pods");
        fs::create_dir_all(&pods).unwrap();
        fs::create_dir_all(dir.join("kubelet/api/v1/namespaces/gone")).unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let cases = [
            ("old@.json", 8 * day, false),
            ("young@.json", 6 * day, true),
            ("edge@.json", 7 * day - Duration::from_secs(60), true),
            (".tmp-1-2", 2 * STALE_TMP, false),
            (".tmp-1-3", Duration::from_secs(10), true),
            ("not-an-entry", 30 * day, true),
        ];
        for (name, age, _) in cases {
            let p = pods.join(name);
            fs::write(&p, b"x").unwrap();
            set_age(&p, age, now);
        }
        let found = expired(&dir, 7 * day, now);
        assert_eq!(found.kept, 2);
        for (path, _) in found.entries.iter() {
            fs::remove_file(path).unwrap();
        }
        for path in found.temps.iter() {
            fs::remove_file(path).unwrap();
        }
        remove_empty_dirs(&dir);
        for (name, _, kept) in cases {
            assert_eq!(pods.join(name).exists(), kept, "{name}");
        }
        assert_eq!(found.entries.len(), 1);
        assert!(!dir.join("kubelet/api/v1/namespaces/gone").exists());
        assert!(dir.join("kubelet").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
