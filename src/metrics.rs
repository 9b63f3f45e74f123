//! Prometheus counters for the admin port.
//!
//! The hot path only does relaxed atomic adds into a fixed table indexed by
//! (verb, source, code); nothing is allocated or locked per request.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::k8s::request::Verb;

/// Who answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Relayed from the cloud.
    Upstream,
    /// Served from the cache.
    Cache,
    /// Answered by lite-apiserver itself (offline 503, errors, heartbeat).
    Local,
}

impl Source {
    const ALL: [Source; 3] = [Source::Upstream, Source::Cache, Source::Local];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Upstream => "upstream",
            Source::Cache => "cache",
            Source::Local => "local",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const VERBS: [Verb; 10] = [
    Verb::Get,
    Verb::List,
    Verb::Watch,
    Verb::Create,
    Verb::Update,
    Verb::Patch,
    Verb::Delete,
    Verb::Connect,
    Verb::Discovery,
    Verb::Other,
];

/// Status codes counted on their own; the rest share the last slot.
const CODES: [u16; 15] = [
    0, 101, 200, 201, 304, 400, 401, 403, 404, 409, 410, 500, 502, 503, 504,
];
const OTHER_CODE: usize = CODES.len();

fn verb_index(verb: Verb) -> usize {
    VERBS
        .iter()
        .position(|v| *v == verb)
        .unwrap_or(VERBS.len() - 1)
}

fn code_index(code: u16) -> usize {
    CODES.iter().position(|c| *c == code).unwrap_or(OTHER_CODE)
}

/// The counters.
#[derive(Debug)]
pub struct Metrics {
    requests: Vec<AtomicU64>,
    online: AtomicBool,
    cache_bytes: AtomicU64,
    cache_entries: AtomicU64,
    connections: AtomicI64,
    watches: AtomicI64,
    /// In-flight requests cancelled because their server went down, by
    /// kind ([`CANCEL_KINDS`]).
    cancelled: [AtomicU64; 3],
}

/// Kinds of cancelled requests, as labelled in `/metrics`.
pub const CANCEL_KINDS: [&str; 3] = ["read", "watch", "write"];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: (0..VERBS.len() * Source::ALL.len() * (CODES.len() + 1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            online: AtomicBool::new(true),
            cache_bytes: AtomicU64::new(0),
            cache_entries: AtomicU64::new(0),
            connections: AtomicI64::new(0),
            watches: AtomicI64::new(0),
            cancelled: Default::default(),
        }
    }
}

impl Metrics {
    fn slot(verb: usize, source: usize, code: usize) -> usize {
        (verb * Source::ALL.len() + source) * (CODES.len() + 1) + code
    }

    /// Counts one answered request.
    pub fn record_request(&self, verb: Verb, code: u16, source: Source) {
        let slot = Self::slot(verb_index(verb), source.index(), code_index(code));
        if let Some(counter) = self.requests.get(slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets the upstream gauge.
    pub fn set_upstream_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }

    /// Sets the cache size gauges.
    pub fn set_cache(&self, bytes: u64, entries: u64) {
        self.cache_bytes.store(bytes, Ordering::Relaxed);
        self.cache_entries.store(entries, Ordering::Relaxed);
    }

    /// Counts a request cancelled in flight (`kind`: one of [`CANCEL_KINDS`]).
    pub fn cancelled(&self, kind: &str) {
        if let Some(i) = CANCEL_KINDS.iter().position(|k| *k == kind) {
            self.cancelled[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A client connection finished its handshake.
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection ended.
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// An offline watch is being held.
    pub fn watch_opened(&self) {
        self.watches.fetch_add(1, Ordering::Relaxed);
    }

    /// An offline watch ended.
    pub fn watch_closed(&self) {
        self.watches.fetch_sub(1, Ordering::Relaxed);
    }

    /// Appends everything in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        self.render_requests(out);
        self.render_gauges(out);
    }

    fn render_requests(&self, out: &mut String) {
        out.push_str("# HELP lite_apiserver_requests_total Requests answered, by verb, status code and source.\n");
        out.push_str("# TYPE lite_apiserver_requests_total counter\n");
        for (v, verb) in VERBS.iter().enumerate() {
            for source in Source::ALL {
                for c in 0..=CODES.len() {
                    let n = self.requests[Self::slot(v, source.index(), c)].load(Ordering::Relaxed);
                    if n == 0 {
                        continue;
                    }
                    let code = CODES.get(c).map_or("other".to_owned(), |c| c.to_string());
                    let _ = writeln!(
                        out,
                        "lite_apiserver_requests_total{{verb=\"{}\",code=\"{code}\",source=\"{}\"}} {n}",
                        verb.as_str(),
                        source.as_str()
                    );
                }
            }
        }
    }

    fn render_gauges(&self, out: &mut String) {
        let gauges = [
            (
                "lite_apiserver_upstream_online",
                "1 when the upstream is healthy.",
                u64::from(self.online.load(Ordering::Relaxed)) as i64,
            ),
            (
                "lite_apiserver_cache_bytes",
                "Bytes of cache entries on disk.",
                self.cache_bytes.load(Ordering::Relaxed) as i64,
            ),
            (
                "lite_apiserver_cache_entries",
                "Cache entries on disk.",
                self.cache_entries.load(Ordering::Relaxed) as i64,
            ),
            (
                "lite_apiserver_open_connections",
                "Client connections open.",
                self.connections.load(Ordering::Relaxed),
            ),
            (
                "lite_apiserver_offline_watches",
                "Offline watches being held.",
                self.watches.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            write_metric(out, "gauge", name, help, value);
        }
        let name = "lite_apiserver_upstream_inflight_cancelled_total";
        write_family(
            out,
            "counter",
            name,
            "Requests cancelled in flight because their server went down, by kind.",
        );
        for (kind, n) in CANCEL_KINDS.iter().zip(&self.cancelled) {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{kind}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
}

/// Appends one metric in Prometheus text: its HELP and TYPE lines, then
/// its sample (`kind` is `counter` or `gauge`).
pub fn write_metric(
    out: &mut String,
    kind: &str,
    name: &str,
    help: &str,
    value: impl std::fmt::Display,
) {
    write_family(out, kind, name, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Appends the HELP and TYPE lines of a metric whose samples (labelled)
/// the caller writes.
pub fn write_family(out: &mut String, kind: &str, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Appends counters given as (name, help, value) rows.
pub fn write_counters(out: &mut String, rows: &[(&str, &str, &AtomicU64)]) {
    for (name, help, value) in rows {
        write_metric(out, "counter", name, help, value.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_prometheus_text() {
        let m = Metrics::default();
        m.record_request(Verb::Get, 200, Source::Upstream);
        m.record_request(Verb::Get, 200, Source::Upstream);
        m.record_request(Verb::List, 503, Source::Local);
        m.record_request(Verb::Get, 418, Source::Cache);
        m.set_upstream_online(false);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains(
            "lite_apiserver_requests_total{verb=\"get\",code=\"200\",source=\"upstream\"} 2\n"
        ));
        assert!(out.contains(
            "lite_apiserver_requests_total{verb=\"list\",code=\"503\",source=\"local\"} 1\n"
        ));
        assert!(out.contains(
            "lite_apiserver_requests_total{verb=\"get\",code=\"other\",source=\"cache\"} 1\n"
        ));
        assert!(out.contains("lite_apiserver_upstream_online 0\n"));
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{line}"
            );
            assert!(
                line.rsplit(' ').next().unwrap().parse::<f64>().is_ok(),
                "{line}"
            );
        }
    }
}
