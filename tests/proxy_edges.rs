//! Wire-level behaviour of the online proxy and the offline answers, with a
//! raw HTTPS client (things kubectl cannot produce on purpose).

mod support;

use std::time::{Duration, Instant};

use support::setup::Setup;

const KUBELET: (&str, &str) = ("User-Agent", "kubelet/v1.36.2 (linux/arm64) kubernetes/abc");

#[test]
fn headers_accept_and_upgrade_pass_through() {
    let s = Setup::new("edges-headers");
    let c = s.client(None);
    s.double.clear_requests();
    let r = c.get(
        "/api/v1/namespaces/edge/pods/web-1",
        &[
            KUBELET,
            ("Authorization", "Bearer not-a-real-token"),
            ("Impersonate-User", "someone"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "drop-me"),
            (
                "Accept",
                "application/vnd.kubernetes.protobuf,application/json",
            ),
            ("Accept-Encoding", "gzip"),
        ],
    );
    assert_eq!(
        r.status,
        401,
        "the upstream judged the caller's own token: {}",
        r.text()
    );
    let seen = s
        .double
        .requests()
        .into_iter()
        .find(|q| q.target.contains("web-1"))
        .unwrap();
    assert_eq!(
        seen.authorization.as_deref(),
        Some("Bearer not-a-real-token")
    );
    assert_eq!(
        seen.cn, None,
        "an anonymous caller is never lent an identity"
    );
    let names: Vec<String> = seen
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    assert!(names.contains(&"impersonate-user".to_owned()));
    assert!(
        !names.contains(&"accept-encoding".to_owned()),
        "a cached agent's answers must come uncompressed, to be stored and patched"
    );
    assert!(!names.contains(&"x-hop".to_owned()) && !names.contains(&"keep-alive".to_owned()));
    assert_eq!(
        seen.accept.as_deref(),
        Some("application/json"),
        "protobuf removed for a cached agent"
    );

    // exec-style upgrade: 101, then bytes both ways.
    let node = s.client(Some(&s.pki.node));
    let mut up = node
        .open(
            "POST",
            "/api/v1/namespaces/edge/pods/web-1/exec?command=sh",
            &[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), KUBELET],
            b"",
        )
        .unwrap();
    assert_eq!(up.status, 101);
    up.write_raw(b"ping over spdy").unwrap();
    let mut echoed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while echoed.len() < 14 && Instant::now() < deadline {
        echoed.extend(up.read_raw(Duration::from_secs(5)).unwrap());
    }
    assert_eq!(echoed, b"ping over spdy");
}

#[test]
fn limits_are_clear_errors() {
    let s = Setup::new("edges-limits");
    let c = s.client(None);
    let big = "a".repeat(70 * 1024);
    let r = c.get("/api", &[("X-Big", &big)]);
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["kind"], "Status");
    let many: Vec<(String, String)> = (0..120)
        .map(|i| (format!("X-{i}"), "v".to_owned()))
        .collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(c.get("/api", &refs).status, 431);
    assert!(s.proxy.admin_get("/healthz").starts_with("ok"));
}

#[test]
fn offline_answers_and_cache_safety() {
    let mut s = Setup::new("edges-offline");
    let node = s.client(Some(&s.pki.node));
    // Online reads fill the cache.
    let cm_online = node.get("/api/v1/namespaces/edge/configmaps/app-config", &[KUBELET]);
    assert_eq!(cm_online.status, 200);
    let secret = node.get("/api/v1/namespaces/edge/secrets/app-secret", &[KUBELET]);
    assert_eq!(secret.status, 200);
    let evil = node.get(
        "/api/v1/namespaces/edge/configmaps/app-config",
        &[("User-Agent", "../../etc")],
    );
    assert_eq!(evil.status, 200);
    let cache = s.proxy.cache_dir.clone();
    // (Entries are committed right after the answer is sent.)
    wait_for(&cache.join("%2e./api/v1/namespaces/edge/configmaps/app-config@.json"));
    assert!(!cache.parent().unwrap().join("etc").exists());
    for entry in walk(&cache) {
        assert!(entry.starts_with(&cache), "{} escaped", entry.display());
    }

    s.double.stop();
    // GET hit, byte for byte.
    let hit = node.get("/api/v1/namespaces/edge/configmaps/app-config", &[KUBELET]);
    assert_eq!(
        (hit.status, hit.body.clone()),
        (200, cm_online.body.clone())
    );
    // GET miss: 404 Status; LIST miss: 503, never an empty list.
    let miss = node.get("/api/v1/namespaces/edge/configmaps/other", &[KUBELET]);
    assert_eq!(
        (miss.status, miss.json()["reason"].as_str()),
        (404, Some("NotFound"))
    );
    let list_miss = node.get("/api/v1/namespaces/other/pods", &[KUBELET]);
    assert_eq!(list_miss.status, 503);
    assert_eq!(list_miss.json()["kind"], "Status");
    assert_eq!(list_miss.header("retry-after"), None);
    // Writes: 503 at once, naming the outage, with no Retry-After (client-go
    // would retry it ten times).
    let write = node.request(
        "POST",
        "/api/v1/namespaces/edge/configmaps",
        &[KUBELET, ("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(
        (write.status, write.json()["reason"].as_str()),
        (503, Some("ServiceUnavailable"))
    );
    assert_eq!(write.header("retry-after"), None);
    assert!(
        write.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("unreachable") && m.contains("offline")),
        "{}",
        write.text()
    );
    // An offline watch is held, then ends cleanly.
    let started = Instant::now();
    let mut w = node
        .open(
            "GET",
            "/api/v1/namespaces/edge/pods?watch=true&timeoutSeconds=2",
            &[KUBELET],
            b"",
        )
        .unwrap();
    assert_eq!(w.status, 200);
    assert!(w.chunked);
    assert_eq!(
        w.next_line(Duration::from_secs(6)).unwrap(),
        None,
        "no events, clean terminator"
    );
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(1500) && held < Duration::from_secs(4),
        "held {held:?}"
    );

    // A truncated entry is a miss (and removed), not a crash.
    let entry = cache.join("kubelet/api/v1/namespaces/edge/secrets/app-secret@.json");
    let len = std::fs::metadata(&entry).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&entry)
        .unwrap();
    f.set_len(len - 10).unwrap();
    let torn = node.get("/api/v1/namespaces/edge/secrets/app-secret", &[KUBELET]);
    assert_eq!(torn.status, 404);
    assert!(!entry.exists(), "the torn entry was removed");
    assert!(s.proxy.admin_get("/healthz").starts_with("ok"));
    let metrics = s.proxy.admin_get("/metrics");
    assert!(
        metrics.contains("lite_apiserver_upstream_online 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"lite_apiserver_requests_total{verb="get",code="200",source="cache"}"#)
    );
    assert!(s.proxy.log_text().contains("removing bad entry"));
}

#[test]
fn a_large_list_streams_through_and_is_cached() {
    let mut s = Setup::new("edges-large");
    s.double.seed_pods("big", "edge-1", 10_000, 5_000);
    let node = s.client(Some(&s.pki.node));
    let direct = support::client::Client::new(s.double.addr(), &s.pki.ca.pem, Some(&s.pki.node))
        .get("/api/v1/namespaces/big/pods", &[KUBELET]);
    assert!(
        direct.body.len() > 50_000_000,
        "{} bytes",
        direct.body.len()
    );
    let entry = s
        .proxy
        .cache_dir
        .join("kubelet/api/v1/namespaces/big/pods@.json");
    // The tee never slows the client: when the cache writer falls behind
    // (a loaded machine), the answer is not cached and that is counted.
    // Then one more read must be cached.
    for attempt in 0.. {
        let dropped = s.proxy.metric("lite_apiserver_cache_tee_dropped_total");
        let via = node.get("/api/v1/namespaces/big/pods", &[KUBELET]);
        assert_eq!(via.status, 200);
        assert!(
            via.body == direct.body,
            "the proxied list differs from the upstream's"
        );
        s.proxy.admin_get("/metrics");
        if s.proxy.metric("lite_apiserver_cache_tee_dropped_total") == dropped || attempt == 2 {
            break;
        }
    }
    wait_for(&entry);
    s.double.stop();
    let offline = node.get("/api/v1/namespaces/big/pods?limit=500", &[KUBELET]);
    assert_eq!(offline.status, 200);
    assert!(offline.body == direct.body, "the cached list differs");
}

fn wait_for(path: &std::path::Path) {
    // Publishing a 50 MB entry includes its fsync: slow on a loaded disk.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(std::fs::canonicalize(&p).unwrap());
        }
    }
    out
}

#[test]
fn an_unchanged_answer_is_not_rewritten() {
    use std::os::unix::fs::MetadataExt;
    let s = Setup::new("edges-unchanged");
    let node = s.client(Some(&s.pki.node));
    let path = "/api/v1/namespaces/edge/configmaps/app-config";
    assert_eq!(node.get(path, &[KUBELET]).status, 200);
    let entry = s
        .proxy
        .cache_dir
        .join("kubelet/api/v1/namespaces/edge/configmaps/app-config@.json");
    wait_for(&entry);
    let inode = std::fs::metadata(&entry).unwrap().ino();
    for _ in 0..5 {
        assert_eq!(node.get(path, &[KUBELET]).status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.proxy.metric("lite_apiserver_cache_unchanged_total") < 5.0 {
        assert!(
            Instant::now() < deadline,
            "unchanged answers were rewritten"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::metadata(&entry).unwrap().ino(),
        inode,
        "the same file stays"
    );
    // A changed object is rewritten.
    s.double.apply(
        "/api/v1",
        "configmaps",
        "edge",
        "app-config",
        serde_json::json!({"data": {"mode": "changed"}}),
    );
    assert_eq!(node.get(path, &[KUBELET]).status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&entry)
        .unwrap_or_default()
        .contains("changed")
    {
        assert!(
            Instant::now() < deadline,
            "a changed object was not rewritten"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_beyond_the_cap_are_refused() {
    let s = Setup::with(
        "edges-maxconn",
        support::double::Opts::default(),
        &["--max-connections", "2"],
    );
    let node = s.client(Some(&s.pki.node));
    let watch = "/api/v1/namespaces/edge/pods?watch=true&timeoutSeconds=30";
    let w1 = node.open("GET", watch, &[KUBELET], b"").unwrap();
    let w2 = node.open("GET", watch, &[KUBELET], b"").unwrap();
    assert_eq!((w1.status, w2.status), (200, 200));
    assert!(
        node.try_request("GET", "/api", &[KUBELET], b"").is_err(),
        "a third connection is refused"
    );
    drop(w1);
    // A relayed watch notices its client is gone at the next write (an
    // event or a bookmark), then frees its slot.
    s.double.apply(
        "/api/v1",
        "pods",
        "edge",
        "poke",
        support::world::pod("edge", "poke", "edge-1", 0),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.try_request("GET", "/api", &[KUBELET], b"").is_err() {
        assert!(Instant::now() < deadline, "a slot never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.proxy.log_text().contains("--max-connections"));
}

#[test]
fn connections_past_the_first_eight_run_on_the_other_workers() {
    let mut s = Setup::with(
        "edges-workers",
        support::double::Opts::default(),
        &["--workers", "2"],
    );
    let node = s.client(Some(&s.pki.node));
    let watch = "/api/v1/namespaces/edge/pods?watch=true&timeoutSeconds=30";
    let mut held: Vec<_> = (0..12)
        .map(|_| node.open("GET", watch, &[KUBELET], b"").unwrap())
        .collect();
    assert!(held.iter().all(|w| w.status == 200));
    let on = |worker: u32| {
        s.proxy.metric(&format!(
            "lite_apiserver_worker_connections{{worker=\"{worker}\"}}"
        ))
    };
    assert_eq!(
        (on(0), on(1)),
        (8.0, 4.0),
        "{}",
        s.proxy.admin_get("/metrics")
    );
    // A request on a connection of the second executor is answered, and
    // one event reaches every watch, wherever it runs.
    let r = node.get("/api/v1/namespaces/edge/pods/web-1", &[KUBELET]);
    assert_eq!(r.status, 200);
    s.double.apply(
        "/api/v1",
        "pods",
        "edge",
        "spread",
        support::world::pod("edge", "spread", "edge-1", 0),
    );
    for w in held.iter_mut() {
        let seen = std::iter::from_fn(|| w.next_line(Duration::from_secs(10)).ok().flatten())
            .any(|line| line.contains("\"spread\""));
        assert!(seen, "a watch missed the event");
    }
    // A clean stop with connections open on both executors.
    assert!(s.proxy.stop(), "{}", s.proxy.log_text());
    drop(held);
}
