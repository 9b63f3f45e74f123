//! Which file an answer goes to.
//!
//! `AGENT/<path segments>/<last>@<variant>.json`, relative to the cache dir:
//!
//! - every path segment is percent-decoded and re-escaped so that only
//!   `[A-Za-z0-9._-]` stay plain (`%XX` otherwise, `@` and `%` included), and
//!   `.`/`..`/empty segments are refused, so no request leaves its agent
//!   directory;
//! - entry files always contain `@` and directories never do, so an object
//!   (`pods/web-1@.json`) and its sub-resource (`pods/web-1/status@.json`)
//!   never collide;
//! - the variant is what changes the answer besides the path: label and
//!   field selectors and unknown parameters (sorted), plus the `as`/`g`/`v`
//!   of the first JSON media range of Accept. Paging, watch and
//!   resourceVersion parameters are not part of it, so a paged LIST, an
//!   offline LIST with `limit`, and the WATCH of the same collection share
//!   one key. Variants too long for a file name are hashed.

use std::fmt;
use std::path::PathBuf;

use crate::auth::identity::Agent;
use crate::k8s::request::{unescape, Query};

/// Query parameters that never change which entry an answer belongs to.
const IGNORED_PARAMS: &[&str] = &[
    "watch",
    "resourceVersion",
    "resourceVersionMatch",
    "timeoutSeconds",
    "timeout",
    "limit",
    "continue",
    "allowWatchBookmarks",
    "sendInitialEvents",
];

/// Longest variant kept readable; longer ones are hashed.
const MAX_VARIANT: usize = 150;

/// Why a request has no cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// A segment is `.`, `..`, empty after decoding, or contains NUL.
    BadSegment(String),
    /// Too many segments.
    TooDeep,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::BadSegment(s) => write!(f, "path segment {s:?} cannot be cached"),
            KeyError::TooDeep => write!(f, "path has too many segments to be cached"),
        }
    }
}

impl std::error::Error for KeyError {}

/// The location of one cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    agent: Agent,
    /// Escaped path segments joined by `/` (one string: a key is built on
    /// every cached request, and this is one allocation, not one per
    /// segment).
    path: String,
    /// Escaped variant text (possibly `h-<hash>`).
    variant: String,
    /// For one page of a paged LIST: its marker (see [`CacheKey::page`]).
    page: Option<String>,
}

/// What marks a page entry's file name (`~` is always escaped elsewhere).
pub const PAGE_MARK: &str = "~page-";
/// Most path segments a key may have.
const MAX_SEGMENTS: usize = 32;

impl CacheKey {
    /// The key of a request by `agent` for `path?query` with `accept`.
    pub fn new(
        agent: &Agent,
        path: &str,
        query: Option<&str>,
        accept: Option<&str>,
    ) -> Result<CacheKey, KeyError> {
        let (path, watch) = path_key(path)?;
        Ok(CacheKey {
            agent: agent.clone(),
            path: if watch {
                drop_watch_segment(path)
            } else {
                path
            },
            variant: variant(query, accept),
            page: None,
        })
    }

    /// The agent.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The entry file, relative to the cache dir.
    pub fn rel_path(&self) -> PathBuf {
        let mut out = String::with_capacity(self.agent.as_str().len() + self.path.len() + 64);
        self.rel_path_into(&mut out);
        PathBuf::from(out)
    }

    /// `dir/` followed by the entry file's relative path, in one buffer.
    pub fn path_in(&self, dir: &std::path::Path) -> PathBuf {
        let parts = [
            self.agent.as_str(),
            "/",
            &self.path,
            "@",
            &self.variant,
            self.page.as_ref().map_or("", |_| PAGE_MARK),
            self.page.as_deref().unwrap_or(""),
            ".json",
        ];
        let dir = dir.as_os_str();
        let len = dir.len() + 1 + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut out = std::ffi::OsString::with_capacity(len);
        out.push(dir);
        out.push("/");
        for part in parts {
            out.push(part);
        }
        PathBuf::from(out)
    }

    /// Appends the entry file's path, relative to the cache dir.
    pub fn rel_path_into(&self, out: &mut String) {
        out.push_str(self.agent.as_str());
        out.push('/');
        out.push_str(&self.path);
        out.push('@');
        out.push_str(&self.variant);
        if let Some(page) = &self.page {
            out.push_str(PAGE_MARK);
            out.push_str(page);
        }
        out.push_str(".json");
    }

    /// The key of one page of this list: the request's `continue` token
    /// (`None` for the first page) as a marker in the file name, after the
    /// variant, so that page entries are recognisable (a restart forgets
    /// the pages in progress, and the store removes their files).
    pub fn page(&self, continued: Option<&str>) -> CacheKey {
        let marker = continued.map_or_else(
            || "first".to_owned(),
            |t| fit(t.replace(|c: char| !c.is_ascii_alphanumeric(), "_")),
        );
        CacheKey {
            page: Some(marker),
            ..self.clone()
        }
    }

    /// Whether the answer is a server-rendered Table (`as=Table`).
    pub fn is_table(&self) -> bool {
        self.variant.split(',').any(|p| p == "as=Table")
    }

    /// Whether this is the plain variant (no selectors, no Accept variant).
    pub fn is_plain(&self) -> bool {
        self.variant.is_empty()
    }

    fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// For a list key of a collection (`…/pods`, `…/namespaces/NS/pods`),
    /// the key of one item's object entry (`…/namespaces/NS/pods/NAME@.json`).
    /// Cluster-wide lists of namespaced resources map items into their
    /// namespace's path.
    pub fn item(&self, namespace: Option<&str>, name: &str) -> Option<CacheKey> {
        let segments = self.segments();
        let (prefix_len, rest) = resource_prefix(&segments)?;
        let mut path = segments[..prefix_len].join("/");
        let resource = match rest {
            [ns_word, ns, resource] if *ns_word == "namespaces" => {
                if namespace.is_some_and(|n| escape(n.as_bytes()) != *ns) {
                    return None;
                }
                path.push_str("/namespaces/");
                path.push_str(ns);
                resource
            }
            [resource] => {
                if let Some(ns) = namespace {
                    path.push_str("/namespaces/");
                    escape_into(ns.as_bytes(), &mut path);
                }
                resource
            }
            _ => return None,
        };
        if name.is_empty() || name == "." || name == ".." {
            return None;
        }
        path.push('/');
        path.push_str(resource);
        path.push('/');
        escape_into(name.as_bytes(), &mut path);
        Some(CacheKey {
            agent: self.agent.clone(),
            path,
            variant: String::new(),
            page: None,
        })
    }

    /// For a list key of a namespaced collection, the directory holding its
    /// object entries and the set of names in it, i.e. where
    /// [`CacheKey::item`] puts them; `None` for cluster-wide lists.
    pub fn items_dir(&self) -> Option<PathBuf> {
        resource_prefix(&self.segments())?;
        Some(PathBuf::from(format!(
            "{}/{}",
            self.agent.as_str(),
            self.path
        )))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.rel_path().display())
    }
}

/// The escaped path segments joined by `/`, and whether one of them is
/// `watch` (then [`drop_watch_segment`] may apply).
fn path_key(path: &str) -> Result<(String, bool), KeyError> {
    if let Some(plain) = plain_path(path) {
        return Ok(plain);
    }
    let mut key = String::with_capacity(path.len());
    let (mut count, mut watch) = (0, false);
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        count += 1;
        if count > MAX_SEGMENTS {
            return Err(KeyError::TooDeep);
        }
        if !key.is_empty() {
            key.push('/');
        }
        let decoded = unescape(raw, false).ok_or_else(|| KeyError::BadSegment(raw.to_owned()))?;
        if decoded.is_empty() || decoded == b"." || decoded == b".." || decoded.contains(&0) {
            return Err(KeyError::BadSegment(raw.to_owned()));
        }
        watch |= decoded == b"watch";
        escape_into(&decoded, &mut key);
    }
    Ok((key, watch))
}

/// The usual path (`/seg/seg/...`, every segment plain, none empty, `.`
/// or `..`, at most [`MAX_SEGMENTS`]) is its own key without the leading
/// `/`: one pass over its bytes and one copy, no decoding. `None`: the
/// general rules apply.
fn plain_path(path: &str) -> Option<(String, bool)> {
    let rest = path.strip_prefix('/')?.as_bytes();
    // (a byte loop: an inclusive range or a chained iterator is a call
    // per byte at opt-level z)
    let (mut count, mut watch, mut start) = (0, false, 0);
    for (i, &b) in rest.iter().enumerate() {
        if b == b'/' {
            let seg = &rest[start..i];
            if !plain_segment(seg) {
                return None;
            }
            watch |= seg == b"watch";
            count += 1;
            start = i + 1;
        } else if !is_plain(b) {
            return None;
        }
    }
    let last = &rest[start..];
    (plain_segment(last) && count < MAX_SEGMENTS)
        .then(|| (path[1..].to_owned(), watch || last == b"watch"))
}

/// A segment of plain bytes that is its own key: not empty, `.` or `..`.
fn plain_segment(seg: &[u8]) -> bool {
    !(seg.is_empty() || seg.len() <= 2 && seg.iter().all(|&c| c == b'.'))
}

/// (length of `api/v1` or `apis/G/V`, the rest) for resource paths.
fn resource_prefix<'a, 'b>(segments: &'b [&'a str]) -> Option<(usize, &'b [&'a str])> {
    match segments.first() {
        Some(&"api") if segments.len() >= 2 => Some((2, &segments[2..])),
        Some(&"apis") if segments.len() >= 3 => Some((3, &segments[3..])),
        _ => None,
    }
}

/// `/api/v1/watch/...` and `/apis/G/V/watch/...` share the list's key.
fn drop_watch_segment(path: String) -> String {
    if !path.contains("watch/") {
        return path;
    }
    let segments: Vec<&str> = path.split('/').collect();
    match resource_prefix(&segments) {
        Some((prefix, rest)) if rest.first() == Some(&"watch") && rest.len() > 1 => {
            let mut kept = segments[..prefix].join("/");
            for s in &rest[1..] {
                kept.push('/');
                kept.push_str(s);
            }
            kept
        }
        _ => path,
    }
}

fn variant(query: Option<&str>, accept: Option<&str>) -> String {
    if query.is_none_or(str::is_empty) && accept.is_none_or(|a| !a.contains(';')) {
        // The usual request: no parameters, an Accept without media type
        // parameters. The plain variant, without parsing either.
        return String::new();
    }
    let query = Query::parse(query);
    let mut params: Vec<(&[u8], &[u8])> = query
        .pairs()
        .filter(|(k, v)| !v.is_empty() && !IGNORED_PARAMS.iter().any(|i| i.as_bytes() == *k))
        .collect();
    params.sort();
    let mut parts: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    if let Some(media) = accept_variant(accept) {
        parts.push(media);
    }
    fit(parts.join(","))
}

/// `text`, or its hash when it is too long for a file name.
fn fit(text: String) -> String {
    if text.len() <= MAX_VARIANT {
        return text;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("h-{hex}")
}

/// `as=..,g=..,v=..` of the first JSON media range of Accept, if it has any.
fn accept_variant(accept: Option<&str>) -> Option<String> {
    let range = accept?.split(',').map(str::trim).find(|r| {
        r.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    })?;
    let mut params: Vec<String> = range
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| matches!(*k, "as" | "g" | "v"))
        .map(|(k, v)| format!("{k}={}", escape(v.as_bytes())))
        .collect();
    params.sort();
    (!params.is_empty()).then(|| params.join(","))
}

/// Keeps `[A-Za-z0-9._-]`, escapes everything else as `%XX`.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    escape_into(bytes, &mut out);
    out
}

/// Appends `bytes` with everything but `[A-Za-z0-9._-]` escaped as `%XX`.
fn escape_into(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// The bytes a path segment or variant keeps as they are.
fn is_plain(b: u8) -> bool {
    PLAIN[usize::from(b)]
}

/// `[A-Za-z0-9._-]` (a table: this is asked for every byte of every
/// cached request's path).
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-';
        b += 1;
    }
    t
};

#[cfg(test)]
mod tests;
