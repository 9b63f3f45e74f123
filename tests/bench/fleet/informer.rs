//! One client-go informer of the fake kubelet, as client-go 1.36 runs it:
//! each start tries a streaming list (`sendInitialEvents=true`), falls
//! back to LIST (`limit=500&resourceVersion=0`) plus WATCH when that
//! fails (a 422 from lite-apiserver today), then re-watches from the last
//! resourceVersion whenever a watch ends cleanly. Any error ends the run;
//! the next one waits out client-go's backoff (0.8 s doubling to 30 s,
//! jitter 1.0, reset after 2 quiet minutes).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::{Next, Stream};
use super::kubelet::{Node, ACCEPT_READ, USER_AGENT};

/// What one informer watches.
#[derive(Clone)]
pub struct Spec {
    /// Short name for logs (`pods`, `cm/app-cfg`).
    pub name: String,
    /// The collection path, no query.
    pub path: String,
    /// The fieldSelector, percent-encoded, if any.
    pub selector: Option<String>,
    /// Whether watches carry client-go's `timeout=` (all but kubelet's
    /// pod source do).
    pub timeout_param: bool,
}

/// Called with (event type, object) for each ADDED/MODIFIED/DELETED.
pub type OnEvent = Arc<dyn Fn(&str, &Value) + Send + Sync>;

/// client-go's reflector backoff.
struct Backoff {
    next: Duration,
    last_start: Option<Instant>,
}

impl Backoff {
    const INITIAL: Duration = Duration::from_millis(800);
    const CAP: Duration = Duration::from_secs(30);
    const RESET: Duration = Duration::from_secs(120);

    /// The next wait: the current step plus up to 100 % jitter.
    fn step(&mut self, rand: f64) -> Duration {
        if self.last_start.is_none_or(|t| t.elapsed() > Self::RESET) {
            self.next = Self::INITIAL;
        }
        self.last_start = Some(Instant::now());
        let d = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        d.mul_f64(1.0 + rand)
    }
}

fn query(spec: &Spec, parts: &[&str]) -> String {
    let mut q: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
    if let Some(sel) = &spec.selector {
        q.push(format!("fieldSelector={sel}"));
    }
    q.sort();
    format!("{}?{}", spec.path, q.join("&"))
}

/// A watch timeout as client-go picks it: 5 to 10 minutes.
fn watch_timeout(node: &Node) -> u64 {
    300 + (node.rand() * 300.0) as u64
}

/// Runs until the node stops.
pub fn run(node: &Node, spec: &Spec, on_event: &OnEvent) {
    let mut backoff = Backoff {
        next: Backoff::INITIAL,
        last_start: None,
    };
    while !node.stopped() {
        if let Err(e) = list_and_watch(node, spec, on_event) {
            node.note(&format!("{}: {e}", spec.name));
        }
        let wait = backoff.step(node.rand());
        node.sleep(wait);
    }
}

fn list_and_watch(node: &Node, spec: &Spec, on_event: &OnEvent) -> io::Result<()> {
    let rv = match streaming_list(node, spec, on_event) {
        Ok(Some((mut s, mut rv))) => {
            node.stats.synced(&spec.name);
            // The same stream goes on as the watch.
            let outcome = consume(node, &mut s, on_event, &mut rv, false);
            node.ep.close(s);
            outcome?;
            rv
        }
        Ok(None) => return Ok(()),
        Err(e) => {
            node.note(&format!("{}: streaming list failed ({e}), LIST", spec.name));
            let rv = list(node, spec, on_event)?;
            node.stats.synced(&spec.name);
            rv
        }
    };
    watch_from(node, spec, on_event, rv)
}

/// The streaming list: the stream and the resourceVersion once its
/// initial events ended (None: stopped meanwhile).
fn streaming_list(
    node: &Node,
    spec: &Spec,
    on_event: &OnEvent,
) -> io::Result<Option<(Stream, String)>> {
    let t = watch_timeout(node);
    let (ts, to) = (format!("timeoutSeconds={t}"), format!("timeout={t}s"));
    let mut parts = vec![
        "allowWatchBookmarks=true",
        "resourceVersionMatch=NotOlderThan",
        "sendInitialEvents=true",
        "watch=true",
        ts.as_str(),
    ];
    if spec.timeout_param {
        parts.push(to.as_str());
    }
    let target = query(spec, &parts);
    let headers = [("User-Agent", USER_AGENT), ("Accept", ACCEPT_READ)];
    let mut s = node.ep.open(&target, &headers, Duration::from_secs(60))?;
    node.stats.answered(s.status);
    if s.status == 422 {
        node.stats.streaming_422.fetch_add(1, Ordering::Relaxed);
    }
    if s.status != 200 {
        let status = s.status;
        node.ep.close(s);
        return Err(io::Error::other(format!(
            "streaming list answered {status}"
        )));
    }
    let mut rv = String::new();
    match consume(node, &mut s, on_event, &mut rv, true) {
        Ok(true) => Ok(Some((s, rv))),
        Ok(false) if node.stopped() => {
            node.ep.close(s);
            Ok(None)
        }
        Ok(false) => {
            node.ep.close(s);
            Err(io::Error::other("stream ended before initial-events-end"))
        }
        Err(e) => {
            node.ep.close(s);
            Err(e)
        }
    }
}

/// LIST; returns the list's resourceVersion.
fn list(node: &Node, spec: &Spec, on_event: &OnEvent) -> io::Result<String> {
    let target = query(spec, &["limit=500", "resourceVersion=0"]);
    let headers = [("User-Agent", USER_AGENT), ("Accept", ACCEPT_READ)];
    let r = node
        .ep
        .request("GET", &target, &headers, b"", Duration::from_secs(60))?;
    node.stats.answered(r.status);
    if r.status != 200 {
        return Err(io::Error::other(format!("LIST answered {}", r.status)));
    }
    let list: Value = serde_json::from_slice(&r.body).map_err(io::Error::other)?;
    for item in list["items"].as_array().into_iter().flatten() {
        on_event("ADDED", item);
    }
    Ok(list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_owned())
}

/// WATCHes from `rv` until one fails; a clean end re-watches at once.
fn watch_from(node: &Node, spec: &Spec, on_event: &OnEvent, mut rv: String) -> io::Result<()> {
    let headers = [("User-Agent", USER_AGENT), ("Accept", ACCEPT_READ)];
    while !node.stopped() {
        let t = watch_timeout(node);
        let (ts, to, r) = (
            format!("timeoutSeconds={t}"),
            format!("timeout={t}s"),
            format!("resourceVersion={rv}"),
        );
        let mut parts = vec!["allowWatchBookmarks=true", "watch=true", &ts, &r];
        if spec.timeout_param {
            parts.push(&to);
        }
        let mut s = node
            .ep
            .open(&query(spec, &parts), &headers, Duration::from_secs(60))?;
        node.stats.answered(s.status);
        if s.status != 200 {
            let status = s.status;
            node.ep.close(s);
            return Err(io::Error::other(format!("WATCH answered {status}")));
        }
        let outcome = consume(node, &mut s, on_event, &mut rv, false);
        node.ep.close(s);
        outcome?;
    }
    Ok(())
}

/// Applies a stream's events until it ends; with `initial`, returns as
/// soon as the initial-events-end bookmark arrives (true), false if the
/// stream ended first. A 410 ERROR event is an error (re-list).
fn consume(
    node: &Node,
    s: &mut Stream,
    on_event: &OnEvent,
    rv: &mut String,
    initial: bool,
) -> io::Result<bool> {
    loop {
        if node.stopped() {
            return Ok(false);
        }
        let line = match s.next()? {
            Next::Line(l) => l,
            Next::Pending => continue,
            Next::End => return Ok(false),
        };
        let event: Value = serde_json::from_str(&line).map_err(io::Error::other)?;
        let kind = event["type"].as_str().unwrap_or("");
        let obj = &event["object"];
        if let Some(v) = obj["metadata"]["resourceVersion"].as_str() {
            *rv = v.to_owned();
        }
        match kind {
            "ADDED" | "MODIFIED" | "DELETED" => on_event(kind, obj),
            "BOOKMARK" => {
                let end = &obj["metadata"]["annotations"]["k8s.io/initial-events-end"];
                if initial && end == "true" {
                    return Ok(true);
                }
            }
            _ => return Err(io::Error::other(format!("watch said {line}"))),
        }
    }
}
