//! What the files in the cache directory are: entries (`…@….json`),
//! temp files (`.tmp-…`), and nothing else that the cache touches.

use std::fs;
use std::path::Path;

/// Prefix of temp files; never matches an entry name (entries contain `@`
/// and never start with `.`).
pub const TMP_PREFIX: &str = ".tmp-";

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
