//! Removes entries not read for `--cache-ttl`.
//!
//! "Read" is the file's modification time: a write sets it, and a read
//! refreshes it when it is more than an hour old (see
//! [`crate::cache::store`]), so an entry that clients keep reading offline
//! is never collected. Temp files older than an hour (left by a crash) and
//! directories left empty are removed too. The cache root and the agent
//! directories stay.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::store::is_entry_name;

/// Temp files older than this are leftovers of a crash.
const STALE_TMP: Duration = Duration::from_secs(3600);

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

/// Sweeps `dir` as of `now`.
pub fn sweep(dir: &Path, ttl: Duration, now: SystemTime) -> GcStats {
    let mut stats = GcStats::default();
    let Ok(agents) = fs::read_dir(dir) else {
        return stats;
    };
    for agent in agents.flatten() {
        if agent.file_type().is_ok_and(|t| t.is_dir()) {
            sweep_dir(&agent.path(), ttl, now, &mut stats);
        }
    }
    stats
}

/// Returns whether `dir` is empty afterwards.
fn sweep_dir(dir: &Path, ttl: Duration, now: SystemTime, stats: &mut GcStats) -> bool {
    let Ok(read) = fs::read_dir(dir) else {
        return false;
    };
    let mut empty = true;
    for entry in read.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            empty = false;
            continue;
        };
        if meta.is_dir() {
            if sweep_dir(&path, ttl, now, stats) && fs::remove_dir(&path).is_ok() {
                continue;
            }
            empty = false;
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        let name = entry.file_name();
        let name = name.to_str().unwrap_or("");
        let expired =
            (is_entry_name(name) && age > ttl) || (name.starts_with(".tmp-") && age > STALE_TMP);
        if expired && fs::remove_file(&path).is_ok() {
            if is_entry_name(name) {
                stats.removed += 1;
                stats.freed += meta.len();
            }
            continue;
        }
        if is_entry_name(name) {
            stats.kept += 1;
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
        let stats = sweep(&dir, 7 * day, now);
        for (name, _, kept) in cases {
            assert_eq!(pods.join(name).exists(), kept, "{name}");
        }
        assert_eq!(stats.removed, 1);
        assert_eq!(stats.kept, 2);
        assert!(!dir.join("kubelet/api/v1/namespaces/gone").exists());
        assert!(dir.join("kubelet").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
