//! Streaming lists (`watch=true&sendInitialEvents=true`, client-go's
//! WatchList) of cached agents: forwarded upstream unchanged, their
//! initial events stored as the LIST entry and kept current by the rest of
//! the stream, served offline (also after a restart) as the cached items
//! followed by the end bookmark; kubelet's informers never see a 422.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::client::{Client, Stream};
use support::entries::{item_versions, EntryFile};
use support::setup::Setup;

const KUBELET: (&str, &str) = ("User-Agent", "kubelet/v1.36.2 (linux/arm64) kubernetes/abc");
const PODS: &str = "/api/v1/pods?allowWatchBookmarks=true&fieldSelector=spec.nodeName%3Dedge-1&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=30&watch=true";
const PODS_ENTRY: &str = "kubelet/api/v1/pods@fieldSelector=spec.nodeName%3Dedge-1.json";

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads events up to and including the end-of-initial-events bookmark.
fn initial_events(w: &mut Stream) -> (Vec<Value>, Value) {
    let mut added = Vec::new();
    loop {
        let line = w
            .next_line(Duration::from_secs(10))
            .unwrap()
            .expect("the stream ended before the end bookmark");
        let event: Value = serde_json::from_str(&line).unwrap();
        let end = event["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true";
        match event["type"].as_str() {
            Some("BOOKMARK") if end => return (added, event),
            Some("ADDED") => added.push(event),
            other => panic!("unexpected {other:?} before the end bookmark: {line}"),
        }
    }
}

fn names(events: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = events
        .iter()
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    n.sort();
    n
}

fn direct(s: &Setup) -> Client {
    Client::new(s.double.addr(), &s.pki.ca.pem, Some(&s.pki.node))
}

fn cached_list(s: &Setup) -> Option<Value> {
    EntryFile::read(&s.proxy.cache_dir.join(PODS_ENTRY))
        .ok()?
        .json()
        .ok()
}

#[test]
fn a_streaming_list_is_forwarded_cached_and_kept_current() {
    let s = Setup::new("wl-online");
    let node = s.client(Some(&s.pki.node));
    s.double.clear_requests();
    let mut w = node.open("GET", PODS, &[KUBELET], b"").unwrap();
    assert_eq!(w.status, 200);
    let (added, end) = initial_events(&mut w);
    assert_eq!(names(&added), ["web-1", "web-2", "web-3"]);
    assert!(s
        .double
        .requests()
        .iter()
        .any(|r| r.target.contains("sendInitialEvents=true")));
    let rv = end["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    // The LIST entry is the double's collection, at the bookmark's rv.
    let truth = direct(&s)
        .get(
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1",
            &[KUBELET],
        )
        .json();
    wait_until("the list entry", Duration::from_secs(10), || {
        cached_list(&s).is_some()
    });
    let cached = cached_list(&s).unwrap();
    assert_eq!(item_versions(&cached), item_versions(&truth));
    assert_eq!(cached["kind"], "PodList");
    assert_eq!(
        cached["metadata"]["resourceVersion"].as_str(),
        Some(rv.as_str())
    );
    // A LIST through the proxy offline would serve it; online the rest of
    // the stream keeps it current.
    s.double.apply(
        "/api/v1",
        "pods",
        "edge",
        "web-4",
        support::world::pod("edge", "web-4", "edge-1", 0),
    );
    let line = w.next_line(Duration::from_secs(10)).unwrap().unwrap();
    assert!(
        line.contains("\"ADDED\"") && line.contains("web-4"),
        "{line}"
    );
    wait_until("web-4 in the entry", Duration::from_secs(10), || {
        cached_list(&s).is_some_and(|l| item_versions(&l).iter().any(|(n, _)| n == "edge/web-4"))
    });
}

#[test]
fn offline_a_streaming_list_gets_the_cached_items_then_the_end_bookmark() {
    let mut s = Setup::new("wl-offline");
    let node = s.client(Some(&s.pki.node));
    {
        let mut w = node.open("GET", PODS, &[KUBELET], b"").unwrap();
        initial_events(&mut w);
    }
    wait_until("the list entry", Duration::from_secs(10), || {
        cached_list(&s).is_some()
    });
    let cached_rv = cached_list(&s).unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    s.double.stop();
    s.wait_online(false);
    for round in ["offline", "after a restart while offline"] {
        let mut w = node.open("GET", PODS, &[KUBELET], b"").unwrap();
        assert_eq!(w.status, 200, "{round}");
        let (added, end) = initial_events(&mut w);
        assert_eq!(names(&added), ["web-1", "web-2", "web-3"], "{round}");
        for e in &added {
            // A LIST leaves kind out of its items; a watch event has it.
            assert_eq!(e["object"]["kind"], "Pod", "{round}");
            assert_eq!(e["object"]["apiVersion"], "v1", "{round}");
        }
        assert_eq!(
            end["object"]["metadata"]["resourceVersion"].as_str(),
            Some(cached_rv.as_str()),
            "{round}"
        );
        // Then held, like any offline watch.
        let held = w.next_line(Duration::from_millis(1500));
        assert!(
            held.as_ref()
                .map_or(true, |l| l.as_ref().is_some_and(|l| l.contains("BOOKMARK"))),
            "{round}: {held:?}"
        );
        s.proxy.restart();
    }
    // An agent that never read the collection: 503, as its LIST would get.
    let other = node.get(PODS, &[("User-Agent", "other/1.0")]);
    assert_eq!(other.status, 503, "{}", other.text());
}

/// Every informer kubelet 1.36 starts (the streaming-list lines of
/// `fixtures/kubelet-1.36-via-proxy.txt`), online and then offline after a
/// restart: never a 422, and offline each one ends its initial events.
#[test]
fn kubelet_informers_never_see_a_422() {
    let mut s = Setup::new("wl-kubelet");
    let node = s.client(Some(&s.pki.node));
    let informers = [
        "/api/v1/namespaces/edge/configmaps?allowWatchBookmarks=true&fieldSelector=metadata.name%3Dapp-config&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeout=9m3s&timeoutSeconds=5&watch=true",
        "/api/v1/namespaces/edge/secrets?allowWatchBookmarks=true&fieldSelector=metadata.name%3Dapp-secret&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeout=9m3s&timeoutSeconds=5&watch=true",
        "/api/v1/nodes?allowWatchBookmarks=true&fieldSelector=metadata.name%3Dedge-1&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeout=9m3s&timeoutSeconds=5&watch=true",
        "/api/v1/pods?allowWatchBookmarks=true&fieldSelector=spec.nodeName%3Dedge-1&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=5&watch=true",
        "/api/v1/services?allowWatchBookmarks=true&fieldSelector=spec.clusterIP%21%3DNone&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeout=9m3s&timeoutSeconds=5&watch=true",
        "/apis/node.k8s.io/v1/runtimeclasses?allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeout=9m3s&timeoutSeconds=5&watch=true",
        "/apis/storage.k8s.io/v1/csidrivers?allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeout=9m3s&timeoutSeconds=5&watch=true",
    ];
    let mut online = Vec::new();
    for path in informers {
        let mut w = node.open("GET", path, &[KUBELET], b"").unwrap();
        assert_eq!(w.status, 200, "{path}");
        online.push(names(&initial_events(&mut w).0));
    }
    wait_until("every list entry", Duration::from_secs(10), || {
        support::entries::all(&s.proxy.cache_dir).len() >= informers.len()
    });
    s.double.stop();
    s.proxy.restart();
    s.wait_online(false);
    for (path, names_online) in informers.iter().zip(online) {
        let mut w = node.open("GET", path, &[KUBELET], b"").unwrap();
        assert_eq!(w.status, 200, "{path}\n{}", s.proxy.log_text());
        assert_eq!(names(&initial_events(&mut w).0), names_online, "{path}");
    }
}
