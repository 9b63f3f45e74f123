//! Reads cache entry files the way an operator would with `head`, without
//! the crate's own parser, so tests check the on-disk format independently:
//! a text header (`lite-apiserver-entry 1`, `key: value` lines, a blank
//! line), then exactly `length` body bytes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The magic first line.
pub const MAGIC: &str = "lite-apiserver-entry 1";

/// One entry file, split.
#[derive(Debug, Clone)]
pub struct EntryFile {
    /// Where it is.
    pub path: PathBuf,
    /// Header fields in order (values trimmed of padding).
    pub header: Vec<(String, String)>,
    /// The bytes after the blank line.
    pub body: Vec<u8>,
}

impl EntryFile {
    /// Reads and splits `path`; an error says what is wrong with it.
    pub fn read(path: &Path) -> Result<EntryFile, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let end = bytes
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or_else(|| format!("{}: no end of header", path.display()))?;
        let text = std::str::from_utf8(&bytes[..end])
            .map_err(|_| format!("{}: header is not UTF-8", path.display()))?;
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(format!("{}: bad magic line", path.display()));
        }
        let mut header = Vec::new();
        for line in lines {
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| format!("{}: bad header line {line:?}", path.display()))?;
            header.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        Ok(EntryFile {
            path: path.to_owned(),
            header,
            body: bytes[end + 2..].to_vec(),
        })
    }

    /// The first value of header field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.header
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("{}: body is not JSON: {e}", self.path.display()))
    }

    /// The header's `resource-version` (None when empty).
    pub fn resource_version(&self) -> Option<&str> {
        self.field("resource-version").filter(|v| !v.is_empty())
    }

    /// Every problem with this entry: `length` not equal to the body bytes
    /// on disk, a body that is not JSON, and for a list, a header
    /// resource-version that is not the body's own `metadata.resourceVersion`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let here = self.path.display();
        match self.field("length").map(str::parse::<usize>) {
            Some(Ok(n)) if n == self.body.len() => {}
            Some(Ok(n)) => out.push(format!(
                "{here}: header length {n}, body on disk {} bytes",
                self.body.len()
            )),
            _ => out.push(format!("{here}: no valid length field")),
        }
        match self.json() {
            Ok(v) if v.get("items").is_some() => {
                let body_rv = v["metadata"]["resourceVersion"].as_str();
                if body_rv != self.resource_version() {
                    out.push(format!(
                        "{here}: header resource-version {:?}, body metadata.resourceVersion {body_rv:?}",
                        self.resource_version()
                    ));
                }
            }
            Ok(_) => {}
            Err(e) => out.push(e),
        }
        out
    }
}

/// Every entry file under `dir` (names with `@`, ending `.json`; temp files
/// skipped).
pub fn all(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                todo.push(p);
            } else if name.contains('@') && name.ends_with(".json") && !name.starts_with(".tmp-") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every problem of every entry under `dir` (empty: all well-formed).
pub fn problems(dir: &Path) -> Vec<String> {
    all(dir)
        .iter()
        .flat_map(|p| match EntryFile::read(p) {
            Ok(e) => e.problems(),
            // Removed between listing and reading: not a problem.
            Err(_) if !p.exists() => Vec::new(),
            Err(e) => vec![e],
        })
        .collect()
}

/// The plain entry of `rel` (e.g. `kubelet/api/v1/namespaces/edge/pods`):
/// `DIR/rel@.json`.
pub fn plain(dir: &Path, rel: &str) -> PathBuf {
    dir.join(format!("{rel}@.json"))
}

/// `(namespace/name, resourceVersion)` of every item of a list.
pub fn item_versions(list: &Value) -> BTreeSet<(String, String)> {
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    let m = &i["metadata"];
                    (
                        format!(
                            "{}/{}",
                            m["namespace"].as_str().unwrap_or(""),
                            m["name"].as_str().unwrap_or("")
                        ),
                        m["resourceVersion"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
