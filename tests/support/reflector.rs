//! A reflector like client-go's, through lite-apiserver: LIST, then WATCH
//! from the list's resourceVersion, applying events to a local view; when
//! the stream ends (cleanly or not) or says 410, LIST again. Errors back
//! off 200 ms. It runs on its own thread until dropped.
//!
//! Its reads have no deadline of their own (as kubelet's watches have
//! none but `timeoutSeconds`), so a watch stuck on a dead connection stays
//! stuck: exactly what the silence tests must catch.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::Client;

/// What the reflector knows.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// `name` -> `resourceVersion` of every object.
    pub items: BTreeMap<String, String>,
    /// The resourceVersion the next watch starts from.
    pub rv: String,
    /// LISTs answered 200.
    pub lists: u64,
    /// WATCHes answered 200.
    pub watches: u64,
    /// Watch events applied (bookmarks excluded).
    pub events: u64,
    /// Watch streams that ended with a clean terminator.
    pub clean_ends: u64,
    /// The last few things that happened, for failure messages.
    pub log: Vec<String>,
}

impl View {
    fn note(&mut self, what: String) {
        if self.log.len() >= 40 {
            self.log.remove(0);
        }
        self.log.push(what);
    }
}

struct Shared {
    view: Mutex<View>,
    stop: AtomicBool,
}

/// A running reflector.
pub struct Reflector {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Reflector {
    /// Lists and watches `path` (a collection, no query) with `headers`.
    pub fn start(client: Client, path: &str, headers: &[(&str, &str)]) -> Reflector {
        let shared = Arc::new(Shared {
            view: Mutex::new(View::default()),
            stop: AtomicBool::new(false),
        });
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (s, path) = (shared.clone(), path.to_owned());
        let thread = std::thread::spawn(move || run(&s, &client, &path, &headers));
        Reflector {
            shared,
            thread: Some(thread),
        }
    }

    /// A copy of the view now.
    pub fn view(&self) -> View {
        self.shared.view.lock().unwrap().clone()
    }

    /// Waits until `f(view)` holds; panics after `timeout` with the view.
    pub fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&View) -> bool) -> View {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.view();
            if f(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "reflector: timed out after {timeout:?} waiting for {what}; lists {} watches {} events {} clean ends {}, recent:\n{}",
                v.lists,
                v.watches,
                v.events,
                v.clean_ends,
                v.log.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Not joined: a read may be blocked on a dead link; the thread
        // notices `stop` at its next read (at most a second).
        drop(self.thread.take());
    }
}

fn pairs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn run(shared: &Shared, client: &Client, path: &str, headers: &[(String, String)]) {
    while !shared.stop.load(Ordering::SeqCst) {
        let ok =
            list(shared, client, path, headers).and_then(|()| watch(shared, client, path, headers));
        if let Err(e) = ok {
            shared.view.lock().unwrap().note(format!("error: {e}"));
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn list(
    shared: &Shared,
    client: &Client,
    path: &str,
    headers: &[(String, String)],
) -> io::Result<()> {
    let r = client.try_request("GET", path, &pairs(headers), b"")?;
    if r.status != 200 {
        return Err(io::Error::other(format!(
            "LIST answered {}: {}",
            r.status,
            r.text()
        )));
    }
    let list: Value = serde_json::from_slice(&r.body).map_err(io::Error::other)?;
    let mut v = shared.view.lock().unwrap();
    v.items.clear();
    for item in list["items"].as_array().into_iter().flatten() {
        let m = &item["metadata"];
        v.items.insert(
            m["name"].as_str().unwrap_or("").to_owned(),
            m["resourceVersion"].as_str().unwrap_or("").to_owned(),
        );
    }
    v.rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    v.lists += 1;
    let note = format!("LIST rv {} ({} items)", v.rv, v.items.len());
    v.note(note);
    Ok(())
}

/// One WATCH from the view's rv, until it ends; `Ok` means "re-list now".
fn watch(
    shared: &Shared,
    client: &Client,
    path: &str,
    headers: &[(String, String)],
) -> io::Result<()> {
    let rv = shared.view.lock().unwrap().rv.clone();
    let target = format!(
        "{path}?allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=600&watch=true"
    );
    let mut s = client.open("GET", &target, &pairs(headers), b"")?;
    if s.status != 200 {
        return Err(io::Error::other(format!("WATCH answered {}", s.status)));
    }
    {
        let mut v = shared.view.lock().unwrap();
        v.watches += 1;
        v.note(format!("WATCH from {rv}"));
    }
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let line = match s.next_line(Duration::from_secs(1)) {
            Ok(Some(line)) => line,
            Ok(None) => {
                let mut v = shared.view.lock().unwrap();
                v.clean_ends += 1;
                v.note("watch ended cleanly".into());
                return Ok(());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        if !apply(shared, &line)? {
            return Ok(());
        }
    }
}

/// Applies one event line; false when the watch must re-list (ERROR).
fn apply(shared: &Shared, line: &str) -> io::Result<bool> {
    let event: Value = serde_json::from_str(line)
        .map_err(|e| io::Error::other(format!("bad event {line:?}: {e}")))?;
    let m = &event["object"]["metadata"];
    let name = m["name"].as_str().unwrap_or("").to_owned();
    let rv = m["resourceVersion"].as_str().unwrap_or("").to_owned();
    let kind = event["type"].as_str().unwrap_or("");
    let mut v = shared.view.lock().unwrap();
    match kind {
        "ADDED" | "MODIFIED" => {
            v.items.insert(name, rv.clone());
        }
        "DELETED" => {
            v.items.remove(&name);
        }
        "BOOKMARK" => {}
        _ => {
            v.note(format!("watch said {line}"));
            return Ok(false);
        }
    }
    if kind != "BOOKMARK" {
        v.events += 1;
    }
    if !rv.is_empty() {
        v.rv = rv;
    }
    Ok(true)
}
