//! Which agents' answers are cached: `--cache-agents` plus the `cache_agents`
//! key of a ConfigMap in the cluster (`--cache-agents-configmap`), changed
//! live.
//!
//! - [`CacheAgents`]: the live set the request path reads, once per request,
//!   under a read lock that only the (rare) ConfigMap changes ever contend.
//! - [`parse_value`], [`from_object`]: what a `cache_agents` value means and
//!   when it is malformed (then it is ignored and the last good list stays).
//! - [`follow`]: the background task that lists and watches the ConfigMap
//!   upstream with the node's identity.
//! - [`saved`]: the last good value on disk, so an offline reboot caches
//!   the same agents before the cloud is reachable.

pub mod follow;
pub mod saved;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use crate::auth::identity::Agent;
// A User-Agent product name is an HTTP token (RFC 9110 `tchar`).
use crate::http::head::is_tchar;

/// The ConfigMap key that lists agents.
pub const KEY: &str = "cache_agents";
/// Most agents one value may list: the request path compares each
/// request's agent with every entry.
pub const MAX_AGENTS: usize = 256;

/// Why a `cache_agents` value is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// The key's value is not a JSON string (a ConfigMap's `data` values
    /// always are; something else wrote this object).
    NotString,
    /// An entry that no User-Agent product name can be: it holds a
    /// character outside HTTP's token characters (a space, `/`, `:`, a
    /// quote, a non-ASCII letter...), or a `*` beside other characters
    /// (`*` matches all agents only as an entry of its own).
    Entry(String),
    /// More than [`MAX_AGENTS`] entries.
    TooMany(usize),
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::NotString => write!(f, "the value of key {KEY} is not a string"),
            Malformed::Entry(e) => write!(
                f,
                "{e:?} is not a User-Agent product name (expected comma-separated names such as kubelet,my-operator, or *)"
            ),
            Malformed::TooMany(n) => write!(f, "{n} agents listed, at most {MAX_AGENTS} allowed"),
        }
    }
}

impl std::error::Error for Malformed {}

/// Parses a `cache_agents` value: comma-separated User-Agent product names
/// (whitespace around each trimmed, empty entries skipped), or `*` for
/// every agent. Each name is normalised as [`Agent`] names a cache
/// directory (`Python-urllib` is `python-urllib`), so it matches exactly the
/// requests whose User-Agent starts with it. Duplicates are dropped.
///
/// ```
/// use lite_apiserver::proxy::agents::parse_value;
/// assert_eq!(parse_value(" My-Operator, *,").unwrap(), ["my-operator", "*"]);
/// assert!(parse_value("kubelet coredns").is_err());
/// ```
pub fn parse_value(raw: &str) -> Result<Vec<String>, Malformed> {
    let mut agents: Vec<String> = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let name = if entry == "*" {
            "*".to_owned()
        } else if entry.bytes().all(|b| is_tchar(b) && b != b'*') {
            Agent::from_user_agent(Some(entry)).as_str().to_owned()
        } else {
            return Err(Malformed::Entry(entry.to_owned()));
        };
        if !agents.contains(&name) {
            agents.push(name);
        }
    }
    match agents.len() {
        n if n > MAX_AGENTS => Err(Malformed::TooMany(n)),
        _ => Ok(agents),
    }
}

/// The agents a ConfigMap object (its JSON bytes) lists under [`KEY`] of
/// its `data`: none when the key (or `data`) is absent.
pub fn from_object(object: &[u8]) -> Result<Vec<String>, Malformed> {
    let Some(range) = crate::json::path(object, 0, &["data", KEY]) else {
        return Ok(Vec::new());
    };
    let value = crate::json::string_value(&object[range]).ok_or(Malformed::NotString)?;
    parse_value(&value)
}

/// A list as logged: `[kubelet, my-operator]`.
pub fn show(agents: &[String]) -> String {
    format!("[{}]", agents.join(", "))
}

/// The live set of cached agents.
#[derive(Debug)]
pub struct CacheAgents {
    /// `--cache-agents`.
    flags: Vec<String>,
    /// What the ConfigMap adds (last good value).
    configmap: Mutex<Vec<String>>,
    /// The union the request path reads.
    effective: RwLock<Vec<String>>,
    /// ConfigMap values applied (changes only).
    updates: AtomicU64,
    /// Malformed values ignored.
    rejected: AtomicU64,
}

impl CacheAgents {
    /// The set of `--cache-agents` alone.
    pub fn new(flags: Vec<String>) -> CacheAgents {
        CacheAgents {
            effective: RwLock::new(flags.clone()),
            flags,
            configmap: Mutex::new(Vec::new()),
            updates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Runs `f` on the current list (`*`: all), e.g. to decide whether one
    /// request is cached. A read lock: cheap, and contended only while a
    /// new ConfigMap value is installed.
    pub fn with<R>(&self, f: impl FnOnce(&[String]) -> R) -> R {
        match self.effective.read() {
            Ok(list) => f(&list),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    /// A copy of the current list.
    pub fn current(&self) -> Vec<String> {
        self.with(<[String]>::to_vec)
    }

    /// What the ConfigMap adds now.
    pub fn from_configmap(&self) -> Vec<String> {
        match self.configmap.lock() {
            Ok(list) => list.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Installs what the ConfigMap adds; `false` if it already did exactly
    /// that. Counted in `/metrics` only when `count`.
    fn install(&self, agents: Vec<String>, count: bool) -> bool {
        let mut effective = self.flags.clone();
        for agent in &agents {
            if !effective.contains(agent) {
                effective.push(agent.clone());
            }
        }
        {
            let mut part = self.configmap.lock().unwrap_or_else(|p| p.into_inner());
            if *part == agents {
                return false;
            }
            *part = agents;
        }
        *self.effective.write().unwrap_or_else(|p| p.into_inner()) = effective;
        if count {
            self.updates.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// A new value read from the cluster: whether it changed anything.
    pub fn apply(&self, agents: Vec<String>) -> bool {
        self.install(agents, true)
    }

    /// The value saved by an earlier run, installed at start.
    pub fn restore(&self, agents: Vec<String>) -> bool {
        self.install(agents, false)
    }

    /// Counts a malformed value that was ignored.
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the counters in Prometheus text.
    pub fn render(&self, out: &mut String) {
        let rows = [
            (
                "lite_apiserver_cache_agents_updates_total",
                "Changes of the cache_agents ConfigMap value applied.",
                &self.updates,
            ),
            (
                "lite_apiserver_cache_agents_rejected_total",
                "Malformed cache_agents ConfigMap values ignored.",
                &self.rejected,
            ),
        ];
        crate::metrics::write_counters(out, &rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values() {
        let ok: &[(&str, &[&str])] = &[
            ("", &[]),
            (" , ,", &[]),
            ("foo", &["foo"]),
            ("foo,bar", &["foo", "bar"]),
            (" foo ,\n bar\t,", &["foo", "bar"]),
            (
                "Python-urllib,OpenAPI-Generator",
                &["python-urllib", "openapi-generator"],
            ),
            ("*", &["*"]),
            ("kubelet,*", &["kubelet", "*"]),
            ("foo,FOO,foo", &["foo"]),
            ("kubectl1.36.2", &["kubectl1.36.2"]),
            ("my+agent", &["my%2bagent"]),
            (".hidden", &["%2ehidden"]),
        ];
        for (raw, want) in ok {
            assert_eq!(parse_value(raw), Ok(list(want)), "{raw:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("kubelet coredns", "kubelet coredns"),
            ("kubelet/v1.36", "kubelet/v1.36"),
            ("foo,kube*", "kube*"),
            ("**", "**"),
            ("a:b", "a:b"),
            ("\"foo\"", "\"foo\""),
            ("[foo]", "[foo]"),
            ("ü", "ü"),
            ("foo;bar", "foo;bar"),
        ];
        for (raw, entry) in bad {
            assert_eq!(
                parse_value(raw),
                Err(Malformed::Entry(entry.to_string())),
                "{raw:?}"
            );
        }
        let many: Vec<String> = (0..=MAX_AGENTS).map(|i| format!("a{i}")).collect();
        assert_eq!(
            parse_value(&many.join(",")),
            Err(Malformed::TooMany(MAX_AGENTS + 1))
        );
    }

    #[test]
    fn names_match_the_agents_of_requests() {
        for (entry, user_agent) in [
            ("OpenAPI-Generator", "OpenAPI-Generator/31.0.0/python"),
            ("my+agent", "my+agent/1.0"),
            ("foo", "foo/1.0"),
        ] {
            let agents = parse_value(entry).unwrap();
            assert!(Agent::from_user_agent(Some(user_agent)).is_cached(&agents));
        }
    }

    #[test]
    fn objects() {
        let cases: &[(&str, Result<&[&str], Malformed>)] = &[
            (
                r#"{"data":{"cache_agents":"foo, bar"}}"#,
                Ok(&["foo", "bar"]),
            ),
            (r#"{"data":{"cache_agents":"f\u006fo"}}"#, Ok(&["foo"])),
            (r#"{"data":{"other":"x"}}"#, Ok(&[])),
            (r#"{"metadata":{"name":"x"}}"#, Ok(&[])),
            (r#"{"data":{"cache_agents":5}}"#, Err(Malformed::NotString)),
            (
                r#"{"data":{"cache_agents":["a"]}}"#,
                Err(Malformed::NotString),
            ),
            (
                r#"{"data":{"cache_agents":"a b"}}"#,
                Err(Malformed::Entry("a b".into())),
            ),
        ];
        for (object, want) in cases {
            let want = want.clone().map(list);
            assert_eq!(from_object(object.as_bytes()), want, "{object}");
        }
    }

    #[test]
    fn the_set_is_the_union_and_counts_changes() {
        let agents = CacheAgents::new(list(&["kubelet", "coredns"]));
        assert!(agents.restore(list(&["foo"])));
        assert_eq!(agents.current(), list(&["kubelet", "coredns", "foo"]));
        assert!(agents.apply(list(&["kubelet", "bar"])));
        assert_eq!(agents.current(), list(&["kubelet", "coredns", "bar"]));
        assert!(!agents.apply(list(&["kubelet", "bar"])), "no change");
        assert!(agents.apply(Vec::new()));
        assert_eq!(agents.current(), list(&["kubelet", "coredns"]));
        let mut out = String::new();
        agents.render(&mut out);
        assert!(out.contains("lite_apiserver_cache_agents_updates_total 2\n"));
        assert!(out.contains("lite_apiserver_cache_agents_rejected_total 0\n"));
        assert!(agents.with(|a| Agent::from_user_agent(Some("coredns/1")).is_cached(a)));
    }
}
