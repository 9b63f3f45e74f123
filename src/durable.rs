//! Small files replaced crash-safely: the JWKS kept for offline reboots and
//! the last good `cache_agents` value. Cache entries have their own writer
//! (`cache::fs`, with its recorded crash model); these are one-shot writes
//! of a few KB. A leaf: no crate imports.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `bytes` so that after a power cut it holds the old
/// content or the new, never a mix: written to `tmp` (same directory, mode
/// 0600), fsynced, renamed over `path`, and the directory fsynced. A
/// failed write removes `tmp`. Blocking: run it on the I/O pool.
pub fn replace(path: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let written = write_then_rename(path, tmp, bytes);
    if written.is_err() {
        let _ = fs::remove_file(tmp);
    }
    written
}

fn write_then_rename(path: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    match path.parent() {
        Some(dir) => fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_files_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("lite-durable-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (path, tmp) = (dir.join("f"), dir.join(".f.tmp"));
        replace(&path, &tmp, b"one").unwrap();
        replace(&path, &tmp, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!tmp.exists());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A directory in the way of the rename: the error comes back, the
        // temp file is gone, the old content stays.
        let blocked = dir.join("d");
        fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(replace(&blocked, &tmp, b"three").is_err());
        assert!(!tmp.exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
