//! Silence counts as failure (issue 10, items 1-3): when the link to the
//! upstream goes silent (no reset, packets just stop), what was in flight on
//! it is not left waiting for TCP's own timeouts:
//! - a kubelet GET of a cached object still waiting for its answer is
//!   answered 200 from the cache while the link is still silent;
//! - a relayed watch ends with a clean chunked terminator, the client's
//!   LIST is then answered from the cache and its new WATCH is held open;
//! - a write in flight gets 503 saying its outcome is unknown;
//! - once the link is back and the proxy online, a pod created upstream
//!   reaches a client that re-lists and re-watches through the proxy.
//!
//! Silence is made by the relay (`freeze`), and once by taking a network
//! namespace's veth link down (skipped where namespaces are not allowed).
//! Every wait is bounded by [`BOUND`] (10 s), far below TCP's timeouts.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::client::{Client, Stream};
use support::daemon::{binary, Daemon};
use support::double::{Double, Opts};
use support::pki::Pki;
use support::reflector::Reflector;
use support::silence::{wait_online, wait_until, InFlight, Rig, BOUND, FAST, KUBELET};

const WEB1: &str = "/api/v1/namespaces/edge/pods/web-1";
const PODS: &str = "/api/v1/namespaces/edge/pods";

/// Answers served from the cache with 200 for `verb` so far.
fn from_cache(proxy: &Daemon, verb: &str) -> f64 {
    proxy.metric(&format!(
        "lite_apiserver_requests_total{{verb=\"{verb}\",code=\"200\",source=\"cache\"}}"
    ))
}

/// Opens a streaming request on its own thread; panics if no head within
/// `bound` (a request forwarded into silence blocks its thread, not us).
fn open_bounded(
    client: &Client,
    target: &str,
    bound: Duration,
    context: impl Fn() -> String,
) -> Stream {
    let (tx, rx) = mpsc::channel();
    let (client, t) = (client.clone(), target.to_owned());
    std::thread::spawn(move || {
        let _ = tx.send(client.open("GET", &t, &[KUBELET], b""));
    });
    match rx.recv_timeout(bound) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => panic!("GET {target}: {e}\n{}", context()),
        Err(_) => panic!(
            "GET {target}: no answer head within {bound:?}\n{}",
            context()
        ),
    }
}

/// Sends a GET of web-1 that the double holds for 1.5 s, makes the link
/// silent with `silence` once the double has it, and checks the answer is
/// the cached copy, within the bound, while still silent.
fn inflight_get_answered_from_cache(
    double: &Double,
    proxy: &Daemon,
    node: &Client,
    silence: impl FnOnce(),
    still_silent: impl Fn() -> bool,
) {
    let first = node.get(WEB1, &[KUBELET]);
    assert_eq!(first.status, 200, "online GET: {}", first.text());
    let cached_before = from_cache(proxy, "get");
    double.delay_matching(&format!("GET {WEB1}"), 1_500);
    let inflight = InFlight::send(node, "GET", WEB1, &[KUBELET], b"");
    wait_until(
        "the GET to reach the double",
        BOUND,
        || !double.delayed().is_empty(),
        || proxy.log_text(),
    );
    silence();
    let cut_at = Instant::now();
    let (r, _) = inflight.answer(BOUND, || proxy.log_text());
    let after = cut_at.elapsed();
    println!("in-flight GET answered {after:?} after the link went silent");
    assert!(
        still_silent(),
        "the answer must come while the link is still silent"
    );
    assert_eq!(r.status, 200, "in-flight GET: {}", r.text());
    assert_eq!(r.json()["metadata"]["name"], "web-1");
    assert!(
        from_cache(proxy, "get") > cached_before,
        "the in-flight GET was answered from the cache (lite_apiserver_requests_total{{verb=\"get\",code=\"200\",source=\"cache\"}})\n{}",
        proxy.log_text()
    );
}

#[test]
fn inflight_get_is_answered_from_the_cache() {
    let rig = Rig::new("silence-get", &[]);
    let relay = &rig.relay;
    inflight_get_answered_from_cache(
        &rig.double,
        &rig.proxy,
        &rig.node(),
        || relay.freeze(),
        || relay.is_frozen(),
    );
}

#[test]
fn inflight_get_is_answered_from_the_cache_when_a_veth_link_goes_down() {
    let Some(ns) = support::netns::or_skip(
        "inflight_get_is_answered_from_the_cache_when_a_veth_link_goes_down",
    ) else {
        return;
    };
    let dir = support::temp_dir("silence-get-netns");
    let mut pki = Pki::generate(&dir.join("pki"));
    pki.reissue_upstream_with_ips(&[IpAddr::V4(ns.upstream_host)]);
    let double = Double::start_on(
        &pki,
        Opts::default(),
        SocketAddr::new(ns.upstream_host.into(), 0),
    );
    let mut args: Vec<String> = vec!["--server".into(), double.url()];
    args.extend(pki.proxy_flags());
    args.extend(["--cache-agents", "*"].map(String::from));
    args.extend(FAST.map(String::from));
    let mut pre = ns.exec_prefix();
    pre.push(binary().display().to_string());
    let proxy = Daemon::start_at(
        "ip".into(),
        pre,
        &dir.join("cache"),
        &args,
        SocketAddr::new(ns.client_ns.into(), 6443),
        SocketAddr::new(ns.client_ns.into(), 6444),
    );
    let node = Client::new(proxy.addr, &pki.ca.pem, Some(&pki.node));
    inflight_get_answered_from_cache(&double, &proxy, &node, || ns.silence(), || true);
    drop(proxy);
    ns.restore();
}

#[test]
fn a_relayed_watch_ends_cleanly_then_the_client_relists_from_the_cache() {
    let rig = Rig::new("silence-watch", &[]);
    let node = rig.node();
    let log = || rig.proxy.log_text();
    let list = node.get(PODS, &[KUBELET]);
    assert_eq!(list.status, 200);
    let rv = list.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut watch = open_bounded(
        &node,
        &format!(
            "{PODS}?allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=600&watch=true"
        ),
        BOUND,
        log,
    );
    assert_eq!(watch.status, 200);
    // The watch is relayed: an upstream change comes through it.
    rig.double.apply(
        "/api/v1",
        "pods",
        "edge",
        "web-4",
        support::world::pod("edge", "web-4", "edge-1", 0),
    );
    let deadline = Instant::now() + BOUND;
    loop {
        let line = watch
            .next_line(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("online watch: {e}\n{}", log()))
            .expect("online watch still open");
        if line.contains("\"web-4\"") {
            break;
        }
    }

    rig.relay.freeze();
    let cut_at = Instant::now();
    let deadline = cut_at + BOUND;
    loop {
        match watch.next_line(deadline.saturating_duration_since(Instant::now())) {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "the relayed watch was still open {:?} after the link went silent\n{}",
                    cut_at.elapsed(),
                    log()
                )
            }
            Err(e) => panic!(
                "the relayed watch ended without a clean chunked terminator: {e}\n{}",
                log()
            ),
        }
    }
    println!(
        "relayed watch ended {:?} after the link went silent",
        cut_at.elapsed()
    );

    // The client re-lists: answered from the cache, while still silent.
    let cached_lists = from_cache(&rig.proxy, "list");
    let (relist, _) = InFlight::send(&node, "GET", PODS, &[KUBELET], b"").answer(BOUND, log);
    assert_eq!(relist.status, 200, "re-list: {}", relist.text());
    assert!(rig.relay.is_frozen());
    assert!(
        from_cache(&rig.proxy, "list") > cached_lists,
        "the re-list was answered from the cache\n{}",
        log()
    );
    let names: Vec<String> = relist.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(names.iter().any(|n| n == "web-1"), "cached list: {names:?}");
    let rv = relist.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();

    // And its new watch is held open: 200, no events (bookmarks aside),
    // not closed within 2 s.
    let mut held = open_bounded(
        &node,
        &format!(
            "{PODS}?allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=600&watch=true"
        ),
        BOUND,
        log,
    );
    assert_eq!(held.status, 200);
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        match held.next_line(until.saturating_duration_since(Instant::now())) {
            Ok(Some(line)) if line.contains("\"type\":\"BOOKMARK\"") => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            other => panic!(
                "the offline watch must be held open without events, got {other:?}\n{}",
                log()
            ),
        }
    }
}

#[test]
fn an_inflight_write_gets_503_outcome_unknown() {
    let rig = Rig::new("silence-write", &[]);
    let node = rig.node();
    let log = || rig.proxy.log_text();
    let cm = |name: &str| {
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "edge"}, "data": {"k": "v"}}))
        .unwrap()
    };
    // Warm the pool so the writes go on pooled connections, as kubelet's do.
    assert_eq!(node.get(WEB1, &[KUBELET]).status, 200);
    rig.double
        .delay_matching("POST /api/v1/namespaces/edge/configmaps", 1_500);
    rig.double
        .delay_matching("PUT /api/v1/namespaces/edge/configmaps/app-config", 1_500);
    let json_ct = ("Content-Type", "application/json");
    let post = InFlight::send(
        &node,
        "POST",
        "/api/v1/namespaces/edge/configmaps",
        &[KUBELET, json_ct],
        &cm("inflight-1"),
    );
    let put = InFlight::send(
        &node,
        "PUT",
        "/api/v1/namespaces/edge/configmaps/app-config",
        &[KUBELET, json_ct],
        &cm("app-config"),
    );
    wait_until(
        "both writes to reach the double",
        BOUND,
        || rig.double.delayed().len() >= 2,
        log,
    );
    rig.relay.freeze();
    for (what, inflight) in [("POST", post), ("PUT", put)] {
        let (r, _) = inflight.answer(BOUND, log);
        assert_eq!(r.status, 503, "in-flight {what}: {}", r.text());
        let status = r.json();
        assert_eq!(status["kind"], "Status", "{what}: {}", r.text());
        assert_eq!(status["code"], 503, "{what}: {}", r.text());
        let message = status["message"].as_str().unwrap_or("").to_lowercase();
        assert!(
            message.contains("unknown"),
            "the 503 of an in-flight {what} says its outcome is unknown: {message:?}"
        );
    }
}

#[test]
fn a_pod_created_after_the_link_returns_reaches_a_rewatching_client() {
    let rig = Rig::new("silence-return", &[]);
    let log = || rig.proxy.log_text();
    let reflector = Reflector::start(rig.node(), PODS, &[KUBELET]);
    reflector.wait_for("the first LIST and WATCH", BOUND, |v| {
        v.watches >= 1 && v.items.contains_key("web-1")
    });
    wait_until(
        "the watch to reach the double",
        BOUND,
        || {
            rig.double
                .requests()
                .iter()
                .any(|r| r.target.contains("/pods?") && r.target.contains("watch=true"))
        },
        log,
    );

    rig.relay.freeze();
    wait_online(&rig.proxy, false, BOUND);
    rig.relay.thaw();
    let back = Instant::now();
    wait_online(&rig.proxy, true, BOUND);

    rig.double.apply(
        "/api/v1",
        "pods",
        "edge",
        "late-1",
        support::world::pod("edge", "late-1", "edge-1", 0),
    );
    let created = Instant::now();
    reflector.wait_for(
        "the pod created after the link returned (late-1)",
        BOUND,
        |v| v.items.contains_key("late-1"),
    );
    println!(
        "late-1 reached the client {:?} after it was created ({:?} after the link returned)",
        created.elapsed(),
        back.elapsed()
    );
}
