//! Figures from the double's side: requests per window by kind, the peak
//! second, connections held, TLS handshakes; and per node, when the link
//! returned, how long until the new pod was seen, Running, and the Lease
//! renewed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lite_apiserver::k8s::request::{Classified, Verb};

use crate::support::double::{ConnLife, Recorded};

/// Requests of one window, by kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct Breakdown {
    pub total: u64,
    pub readyz: u64,
    pub healthz: u64,
    pub livez: u64,
    pub lists: u64,
    pub watches: u64,
    /// Watches with `sendInitialEvents=true` (counted in `watches` too).
    pub streaming: u64,
    pub gets: u64,
    pub writes: u64,
    pub other: u64,
}

impl Breakdown {
    pub fn probes(&self) -> u64 {
        self.readyz + self.healthz + self.livez
    }

    fn add(&mut self, r: &Recorded) {
        self.total += 1;
        let (path, query) = match r.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (r.target.as_str(), None),
        };
        match path {
            "/readyz" => return self.readyz += 1,
            "/healthz" => return self.healthz += 1,
            "/livez" => return self.livez += 1,
            _ => {}
        }
        match Classified::new(&r.method, path, query, false).verb {
            Verb::List => self.lists += 1,
            Verb::Watch => {
                self.watches += 1;
                if query.is_some_and(|q| q.contains("sendInitialEvents=true")) {
                    self.streaming += 1;
                }
            }
            Verb::Get => self.gets += 1,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete => self.writes += 1,
            _ => self.other += 1,
        }
    }
}

/// A time window `[from, to)`.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub from: Instant,
    pub to: Instant,
}

impl Window {
    pub fn new(from: Instant, len: Duration) -> Window {
        Window {
            from,
            to: from + len,
        }
    }

    pub fn secs(&self) -> f64 {
        (self.to - self.from).as_secs_f64()
    }

    fn holds(&self, t: Instant) -> bool {
        t >= self.from && t < self.to
    }
}

/// The requests of `w`, by kind.
pub fn breakdown(reqs: &[Recorded], w: Window) -> Breakdown {
    let mut b = Breakdown::default();
    for r in reqs.iter().filter(|r| w.holds(r.at)) {
        b.add(r);
    }
    b
}

/// The busiest second of `w` (1 s buckets from its start).
pub fn peak_per_sec(reqs: &[Recorded], w: Window) -> u64 {
    let mut buckets: BTreeMap<u64, u64> = BTreeMap::new();
    for r in reqs.iter().filter(|r| w.holds(r.at)) {
        *buckets.entry((r.at - w.from).as_secs()).or_insert(0) += 1;
    }
    buckets.values().copied().max().unwrap_or(0)
}

/// Connections open at `t`.
pub fn held(conns: &[ConnLife], t: Instant) -> usize {
    conns
        .iter()
        .filter(|c| c.opened <= t && c.closed.is_none_or(|end| end > t))
        .count()
}

/// Connections accepted in `w` that carried a request (a completed TLS
/// handshake), and all accepted in `w`.
pub fn handshakes(conns: &[ConnLife], w: Window) -> (usize, usize) {
    let accepted: Vec<&ConnLife> = conns.iter().filter(|c| w.holds(c.opened)).collect();
    let used = accepted
        .iter()
        .filter(|c| c.first_request.is_some())
        .count();
    (used, accepted.len())
}

/// When (after `since`) the first request matching `method` and a target
/// containing `needle` reached the double.
pub fn first_after(
    reqs: &[Recorded],
    since: Instant,
    method: &str,
    needle: &str,
) -> Option<Instant> {
    reqs.iter()
        .filter(|r| r.at >= since && r.method == method && r.target.contains(needle))
        .map(|r| r.at)
        .min()
}

/// Writes every request as "+SECONDS METHOD TARGET USER", seconds from
/// `begin` (with `--dump`: to see what the counts are made of).
pub fn dump(reqs: &[Recorded], begin: Instant, path: &std::path::Path) {
    let mut out = String::new();
    for r in reqs {
        let t = r.at.saturating_duration_since(begin).as_secs_f64();
        out.push_str(&format!(
            "+{t:.3} {} {} {}\n",
            r.method,
            r.target,
            r.user.as_deref().unwrap_or("-")
        ));
    }
    if let Err(e) = std::fs::write(path, out) {
        eprintln!("could not write {}: {e}", path.display());
    }
}

/// The slowest of per-node delays: (max, how many nodes got there).
pub fn slowest(delays: &[Option<Duration>]) -> (Option<Duration>, usize) {
    let reached: Vec<Duration> = delays.iter().flatten().copied().collect();
    let n = reached.len();
    if n < delays.len() {
        return (None, n);
    }
    (reached.into_iter().max(), n)
}

/// Everything measured of one system.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub nodes: usize,
    pub held_steady: usize,
    pub steady: Breakdown,
    pub steady_secs: f64,
    pub start: Breakdown,
    pub start_secs: f64,
    pub start_handshakes: usize,
    pub heal: Breakdown,
    pub heal_secs: f64,
    pub heal_peak: u64,
    pub heal_handshakes: usize,
    /// Accepted in the heal window, handshake or not (stale dials too).
    pub heal_accepted: usize,
    /// (slowest, nodes that got there) of: new pod seen by its kubelet,
    /// its Running PATCH at the double, a Lease PUT at the double.
    pub seen: (Option<Duration>, usize),
    pub running: (Option<Duration>, usize),
    pub lease: (Option<Duration>, usize),
    /// Client side: streaming lists refused (422), status counts.
    pub client_422: u64,
    pub client_statuses: BTreeMap<u16, u64>,
    pub close_alls: u64,
    pub synced_informers: usize,
}

impl Figures {
    pub fn steady_rate(&self) -> f64 {
        self.steady.total as f64 / self.steady_secs.max(1e-9)
    }

    pub fn steady_probe_rate(&self) -> f64 {
        self.steady.probes() as f64 / self.steady_secs.max(1e-9)
    }
}
