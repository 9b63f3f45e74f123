//! The watch-driven cache: lists kept current by events, bounded rewrites,
//! crash safety under kill -9, paged lists, offline watch/heartbeat/token
//! semantics, and the reboot-while-offline case.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::client::Client;
use support::setup::Setup;

const KUBELET: (&str, &str) = ("User-Agent", "kubelet/v1.36.2 (linux/arm64) kubernetes/abc");

fn sorted_items(list: &Value) -> Vec<Value> {
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|i| i["metadata"]["name"].as_str().unwrap_or("").to_owned());
    items
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kubectl_watch_keeps_the_cached_list_current() {
    let mut s = Setup::new("watch-kubectl");
    let k = s.kubectl();
    let mut watch = k
        .command(&[
            "get",
            "pods",
            "-n",
            "edge",
            "-w",
            "-o",
            "json",
            "--request-timeout=0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Let the LIST land and the WATCH start.
    wait_until(
        "the watch to reach the upstream",
        Duration::from_secs(10),
        || {
            s.double
                .requests()
                .iter()
                .any(|r| r.target.contains("/pods") && r.target.contains("watch=true"))
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    s.double.apply(
        "/api/v1",
        "pods",
        "edge",
        "web-4",
        support::world::pod("edge", "web-4", "edge-1", 10),
    );
    let mut modified = support::world::pod("edge", "web-1", "edge-1", 0);
    modified["metadata"]["labels"]["tier"] = json!("front");
    s.double.apply("/api/v1", "pods", "edge", "web-1", modified);
    s.double.delete("/api/v1", "pods", "edge", "web-2");
    let final_rv = s.double.current_rv().to_string();
    // The events reached kubectl (so they passed through the proxy).
    let mut out = watch.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut text);
        text
    });
    std::thread::sleep(Duration::from_millis(500));
    s.double.stop();
    let _ = watch.kill();
    let _ = watch.wait();
    let seen = reader.join().unwrap();
    assert!(
        seen.contains("web-4") && seen.contains("front"),
        "kubectl saw the events:\n{seen}"
    );

    let upstream = s.double.list_json("/api/v1", "pods", "edge");
    let cached = k.json(&["get", "pods", "-n", "edge"]);
    assert_eq!(sorted_items(&cached), sorted_items(&upstream));
    // kubectl prints a v1 List without the resourceVersion; the entry has it.
    let raw = s
        .client(Some(&s.pki.node))
        .get(
            "/api/v1/namespaces/edge/pods?limit=500",
            &[("User-Agent", "kubectl/v1.32.4 (linux/amd64) kubernetes/abc")],
        )
        .json();
    assert_eq!(
        raw["metadata"]["resourceVersion"].as_str(),
        Some(final_rv.as_str())
    );
    assert_eq!(sorted_items(&raw), sorted_items(&upstream));
}

#[test]
fn thousands_of_events_coalesce_into_few_rewrites() {
    let mut s = Setup::new("watch-bulk");
    s.double.seed_pods("bulk", "edge-1", 2_000, 200);
    let node = s.client(Some(&s.pki.node));
    let list = node.get("/api/v1/namespaces/bulk/pods", &[KUBELET]).json();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut w = node
        .open("GET", &format!("/api/v1/namespaces/bulk/pods?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"), &[KUBELET], b"")
        .unwrap();
    let started = Instant::now();
    for i in 0..5_000u32 {
        let name = format!("bulk-{:06}", (i * 7919) % 2_400);
        if i % 5 == 4 {
            s.double.delete("/api/v1", "pods", "bulk", &name);
        } else {
            let mut pod = support::world::pod("bulk", &name, "edge-1", 200);
            pod["metadata"]["labels"]["round"] = json!(i.to_string());
            s.double.apply("/api/v1", "pods", "bulk", &name, pod);
        }
    }
    let final_rv = s.double.current_rv().to_string();
    // Read the stream until the last event went by.
    let mut last = String::new();
    while !last.contains(&format!("\"resourceVersion\":\"{final_rv}\"")) {
        last = w
            .next_line(Duration::from_secs(30))
            .unwrap()
            .expect("watch still open");
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(1500)); // one coalescing period
    s.double.stop();
    let cached = node.get("/api/v1/namespaces/bulk/pods", &[KUBELET]).json();
    let upstream = s.double.list_json("/api/v1", "pods", "bulk");
    assert_eq!(
        cached["items"].as_array().unwrap().len(),
        upstream["items"].as_array().unwrap().len()
    );
    assert!(
        sorted_items(&cached) == sorted_items(&upstream),
        "cached list differs from the upstream's"
    );
    let rewrites = s.proxy.metric("lite_apiserver_cache_list_rewrites_total");
    let bound = elapsed.as_secs_f64().ceil() + 3.0;
    assert!(
        rewrites >= 1.0 && rewrites <= bound,
        "{rewrites} rewrites for {elapsed:?} of events"
    );
}

#[test]
fn kill_9_never_leaves_a_torn_list() {
    let mut s = Setup::new("watch-kill9");
    s.double.seed_pods("crash", "edge-1", 300, 500);
    let node = s.client(Some(&s.pki.node));
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..50 {
        let list = node.get("/api/v1/namespaces/crash/pods", &[KUBELET]).json();
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut w = node
            .open(
                "GET",
                &format!("/api/v1/namespaces/crash/pods?watch=true&resourceVersion={rv}"),
                &[KUBELET],
                b"",
            )
            .unwrap();
        for i in 0..40 {
            let name = format!("bulk-{:06}", (round * 40 + i) % 300);
            let mut pod = support::world::pod("crash", &name, "edge-1", 500);
            pod["metadata"]["labels"]["round"] = json!(format!("{round}-{i}"));
            s.double.apply("/api/v1", "pods", "crash", &name, pod);
        }
        let _ = w.next_line(Duration::from_secs(5));
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 1500));
        s.proxy.kill9();
        s.double.stop();
        s.proxy.start_again();
        let cached = node.get("/api/v1/namespaces/crash/pods", &[KUBELET]);
        assert_eq!(cached.status, 200, "round {round}: {}", cached.text());
        let cached = cached.json();
        let items = cached["items"].as_array().unwrap();
        let mut names: Vec<&str> = items
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        names.dedup();
        assert_eq!(names.len(), 300, "round {round}: every pod once");
        let list_rv: u64 = cached["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(items.iter().all(|i| i["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            <= list_rv));
        s.proxy.kill9();
        s.double.restart();
        s.proxy.start_again();
    }
}

#[test]
fn paged_online_lists_are_served_whole_offline() {
    let mut s = Setup::new("watch-paged");
    let node = s.client(Some(&s.pki.node));
    let mut path = "/api/v1/namespaces/edge/pods?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = node.get(&path, &[KUBELET]).json();
        pages += 1;
        match page["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => {
                path = format!("/api/v1/namespaces/edge/pods?limit=2&continue={c}")
            }
            _ => break,
        }
    }
    assert_eq!(pages, 2);
    wait_until("the pages to be assembled", Duration::from_secs(5), || {
        s.proxy
            .cache_dir
            .join("kubelet/api/v1/namespaces/edge/pods@.json")
            .exists()
    });
    s.double.stop();
    let offline = node
        .get("/api/v1/namespaces/edge/pods?limit=1", &[KUBELET])
        .json();
    let names: Vec<&str> = offline["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1", "web-2", "web-3"]);
    assert!(offline["metadata"].get("continue").is_none());
}

#[test]
fn offline_watch_heartbeat_and_tokens() {
    let mut s = Setup::new("watch-offline");
    let node = s.client(Some(&s.pki.node));
    let list = node.get("/api/v1/namespaces/edge/pods", &[KUBELET]).json();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1";
    let lease = node.get(lease_path, &[KUBELET]).json();
    let token_req = br#"{"kind":"TokenRequest","apiVersion":"authentication.k8s.io/v1","spec":{"audiences":["https://kubernetes.default.svc.cluster.local"],"expirationSeconds":8}}"#;
    let token_path = "/api/v1/namespaces/edge/serviceaccounts/default/token";
    let issued = node.request(
        "POST",
        token_path,
        &[KUBELET, ("Content-Type", "application/json")],
        token_req,
    );
    assert_eq!(issued.status, 201);
    let issued_at = Instant::now();
    let token = issued.json()["status"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(
        "the token answer to be cached",
        Duration::from_secs(5),
        || {
            s.proxy
                .cache_dir
                .join("kubelet/api/v1/namespaces/edge/serviceaccounts/default/token@.json")
                .exists()
        },
    );
    s.double.stop();

    // Offline watch with bookmarks: a BOOKMARK with the cached rv, then a
    // clean end at timeoutSeconds.
    let started = Instant::now();
    let mut w = node
        .open(
            "GET",
            "/api/v1/namespaces/edge/pods?watch=true&allowWatchBookmarks=true&timeoutSeconds=2",
            &[KUBELET],
            b"",
        )
        .unwrap();
    let bookmark: Value =
        serde_json::from_str(&w.next_line(Duration::from_secs(5)).unwrap().unwrap()).unwrap();
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(bookmark["object"]["kind"], "Pod");
    assert_eq!(
        bookmark["object"]["metadata"]["resourceVersion"].as_str(),
        Some(rv.as_str())
    );
    assert_eq!(w.next_line(Duration::from_secs(5)).unwrap(), None);
    let held = started.elapsed();
    assert!(
        held >= Duration::from_secs(1) && held <= Duration::from_secs(3),
        "{held:?}"
    );

    // kubelet's own Lease renewal is echoed; other updates are refused.
    let mut renewed = lease.clone();
    renewed["spec"]["renewTime"] = json!("2026-11-24T13:00:00.000000Z");
    let body = serde_json::to_vec(&renewed).unwrap();
    let put = node.request(
        "PUT",
        lease_path,
        &[KUBELET, ("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(put.status, 200);
    assert_eq!(put.body, body);
    let other = node.request(
        "PUT",
        "/api/v1/namespaces/edge/configmaps/app-config",
        &[KUBELET, ("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(other.status, 503);
    let not_kubelet = node.request(
        "PUT",
        lease_path,
        &[
            ("User-Agent", "curl/8"),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    assert_eq!(not_kubelet.status, 503);

    // The TokenRequest answer is replayed while the token is valid, then 503.
    let replay = node.request(
        "POST",
        token_path,
        &[KUBELET, ("Content-Type", "application/json")],
        token_req,
    );
    assert_eq!(replay.status, 201, "{}", replay.text());
    assert_eq!(
        replay.json()["status"]["token"].as_str(),
        Some(token.as_str())
    );
    // Past the token's 8 s (and the double's second-granular timestamp).
    std::thread::sleep(
        (issued_at + Duration::from_millis(9500)).saturating_duration_since(Instant::now()),
    );
    let expired = node.request(
        "POST",
        token_path,
        &[KUBELET, ("Content-Type", "application/json")],
        token_req,
    );
    assert_eq!(expired.status, 503);
}

#[test]
fn reboot_while_offline_brings_every_pod_back() {
    let mut s = Setup::new("watch-reboot");
    let node = s.client(Some(&s.pki.node));
    let path = "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1&resourceVersion=0";
    let online = node.get(path, &[KUBELET]).json();
    assert_eq!(online["items"].as_array().unwrap().len(), 3);
    let rv = online["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut w = node
        .open("GET", &format!("/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1&watch=true&resourceVersion={rv}&allowWatchBookmarks=true"), &[KUBELET], b"")
        .unwrap();
    s.double.apply(
        "/api/v1",
        "pods",
        "edge",
        "web-9",
        support::world::pod("edge", "web-9", "edge-1", 0),
    );
    let line = w.next_line(Duration::from_secs(5)).unwrap().unwrap();
    assert!(line.contains("web-9"));
    // No wait for the once-a-second coalescing: SIGTERM flushes it.
    s.double.stop();
    s.proxy.restart();
    let after = Client::new(s.proxy.addr, &s.pki.ca.pem, Some(&s.pki.node)).get(path, &[KUBELET]);
    assert_eq!(after.status, 200);
    let mut names: Vec<String> = after.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["web-1", "web-2", "web-3", "web-9"]);
}
