//! `--incluster-address`, the Service side: kubelet is shown the
//! `default/kubernetes` Service at lite-apiserver's in-cluster address (its
//! clusterIP, clusterIPs and `https` port) in GET, LIST and WATCH answers
//! and in the cached copies served offline; every other Service, and every
//! other agent's view, is the upstream's byte for byte.
//!
//! The double serializes objects with serde_json (keys sorted, compact),
//! so the expected rewritten bytes are serde_json's bytes of the object
//! with the three fields changed: the splice must produce exactly them.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::client::{Client, Response};
use support::daemon::{free_port, Daemon};
use support::double::{Double, Opts};
use support::entries::{self, EntryFile};
use support::setup::Setup;

const KUBELET: (&str, &str) = (
    "User-Agent",
    "kubelet/v1.36.0 (linux/amd64) kubernetes/abcdef",
);
const KUBECTL: (&str, &str) = (
    "User-Agent",
    "kubectl/v1.36.0 (linux/amd64) kubernetes/abcdef",
);
/// kubelet's own LIST of services (kubelet-1.36-via-proxy.txt).
const LIST: &str =
    "/api/v1/services?fieldSelector=spec.clusterIP%21%3DNone&limit=500&resourceVersion=0";
const GET: &str = "/api/v1/namespaces/default/services/kubernetes";
const TABLE: (&str, &str) = (
    "Accept",
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
);

fn kubernetes_service() -> Value {
    json!({
        "metadata": {"labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                 "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"],
                 "ipFamilyPolicy": "SingleStack",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
                 "sessionAffinity": "None", "type": "ClusterIP"},
        "status": {"loadBalancer": {}}
    })
}

/// A Service with the same shape (and an `https` port) that must not change.
fn other_service(ip: &str) -> Value {
    json!({
        "spec": {"clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443},
                           {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                 "selector": {"app": "web"}, "type": "ClusterIP"},
        "status": {"loadBalancer": {}}
    })
}

/// The Services of the tests: `default/kubernetes`, a Service in `edge`,
/// and look-alikes (`kubernetes` in another namespace, another Service in
/// `default`).
fn seed(double: &Double) {
    double.apply(
        "/api/v1",
        "services",
        "default",
        "kubernetes",
        kubernetes_service(),
    );
    double.apply(
        "/api/v1",
        "services",
        "edge",
        "web",
        other_service("10.96.0.20"),
    );
    double.apply(
        "/api/v1",
        "services",
        "kube-system",
        "kubernetes",
        other_service("10.96.0.30"),
    );
    double.apply(
        "/api/v1",
        "services",
        "default",
        "dashboard",
        other_service("10.96.0.40"),
    );
}

/// A lite-apiserver with `--incluster-address` in front of the seeded double.
fn rig(name: &str) -> (Setup, SocketAddr) {
    rig_with(name, &[])
}

fn rig_with(name: &str, extra: &[&str]) -> (Setup, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let addr_flag = addr.to_string();
    let mut args = vec!["--incluster-address", addr_flag.as_str()];
    args.extend_from_slice(extra);
    let s = Setup::with(name, Opts::default(), &args);
    seed(&s.double);
    (s, addr)
}

/// The double's object as it serializes it.
fn stored(double: &Double, ns: &str, name: &str) -> Value {
    double
        .get("/api/v1", "services", ns, name)
        .expect("seeded service")
}

/// What kubelet must be shown instead of `svc`.
fn shown_to_kubelet(svc: &Value, addr: SocketAddr) -> Value {
    let mut svc = svc.clone();
    let ip = addr.ip().to_string();
    svc["spec"]["clusterIP"] = json!(ip);
    svc["spec"]["clusterIPs"] = json!([ip]);
    for port in svc["spec"]["ports"].as_array_mut().unwrap() {
        if port["name"] == "https" {
            port["port"] = json!(addr.port());
        }
    }
    svc
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// `body` with the one occurrence of `from` replaced by `to`.
fn replaced(body: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = body
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{} not in {}", text(from), text(body)));
    [&body[..at], to, &body[at + from.len()..]].concat()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn get(c: &Client, path: &str, headers: &[(&str, &str)]) -> Response {
    let r = c.get(path, headers);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r
}

fn direct(s: &Setup) -> Client {
    Client::new(s.double.addr(), &s.pki.ca.pem, Some(&s.pki.node))
}

/// The body of kubelet's answer, checked field by field (readable
/// failures), then byte for byte against the upstream's answer with only
/// the `default/kubernetes` Service changed.
fn assert_kubelet_view(got: &Response, upstream: &[u8], svc: &Value, addr: SocketAddr) {
    let doc = got.json();
    let items = doc["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![doc]);
    let k8s = items
        .iter()
        .find(|i| i["metadata"]["name"] == "kubernetes" && i["metadata"]["namespace"] == "default")
        .expect("default/kubernetes in the answer");
    assert_eq!(k8s["spec"]["clusterIP"], json!(addr.ip().to_string()));
    assert_eq!(k8s["spec"]["clusterIPs"], json!([addr.ip().to_string()]));
    assert_eq!(k8s["spec"]["ports"][0]["port"], json!(addr.port()));
    assert_eq!(k8s["spec"]["ports"][0]["targetPort"], json!(6443));
    let want = replaced(upstream, &bytes(svc), &bytes(&shown_to_kubelet(svc, addr)));
    assert!(
        got.body == want,
        "kubelet's answer is not the upstream's with only default/kubernetes rewritten:\n got {}\nwant {}",
        got.text(),
        text(&want)
    );
}

#[test]
fn kubelet_lists_and_gets_the_service_at_the_incluster_address_others_see_the_upstream() {
    let (s, addr) = rig("masterservice-list");
    let svc = stored(&s.double, "default", "kubernetes");
    let (node, up) = (s.client(Some(&s.pki.node)), direct(&s));

    let list = get(&node, LIST, &[KUBELET]);
    assert_kubelet_view(&list, &get(&up, LIST, &[KUBELET]).body, &svc, addr);
    // The length changed: the answer is re-framed.
    assert_eq!(list.header("content-length"), None);
    assert_eq!(list.header("transfer-encoding").as_deref(), Some("chunked"));
    let one = get(&node, GET, &[KUBELET]);
    assert_kubelet_view(&one, &get(&up, GET, &[KUBELET]).body, &svc, addr);
    let in_default = "/api/v1/namespaces/default/services";
    let listed = get(&node, in_default, &[KUBELET]);
    assert_kubelet_view(&listed, &get(&up, in_default, &[KUBELET]).body, &svc, addr);

    // Everyone else, and everything else, is the upstream's byte for byte.
    for (path, headers) in [
        (LIST, vec![KUBECTL]),
        (GET, vec![KUBECTL]),
        (GET, vec![KUBELET, TABLE]),
        (LIST, vec![KUBELET, TABLE]),
        ("/api/v1/namespaces/edge/services", vec![KUBELET]),
        (
            "/api/v1/namespaces/kube-system/services/kubernetes",
            vec![KUBELET],
        ),
        (
            "/api/v1/namespaces/default/services/dashboard",
            vec![KUBELET],
        ),
    ] {
        let through = get(&node, path, &headers);
        let upstream = get(&up, path, &headers);
        assert!(
            through.body == upstream.body,
            "{path} {headers:?} changed:\n{}\n{}",
            through.text(),
            upstream.text()
        );
    }
}

/// kubelet's own Accept, and the Accept-Encoding Go's transport adds.
const PROTOBUF: (&str, &str) = (
    "Accept",
    "application/vnd.kubernetes.protobuf,application/json",
);
const GZIP: (&str, &str) = ("Accept-Encoding", "gzip");

/// The headers the double got with the one request for `target` by `agent`.
fn upstream_headers(double: &Double, target: &str, agent: &str) -> (String, Option<String>) {
    let seen: Vec<_> = double
        .requests()
        .into_iter()
        .filter(|r| {
            r.target == target
                && r.user_agent
                    .as_deref()
                    .is_some_and(|a| a.starts_with(agent))
        })
        .collect();
    assert_eq!(seen.len(), 1, "{agent} {target}: {seen:?}");
    let encoding = seen[0]
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("accept-encoding"))
        .map(|(_, v)| v.clone());
    (seen[0].accept.clone().unwrap_or_default(), encoding)
}

#[test]
fn kubelet_not_cached_still_gets_plain_json_it_is_shown_rewritten() {
    // Without the request shaped, kubelet's protobuf (or a gzipped large
    // list) would pass unrewritten; only kubelet's Service reads change.
    let (s, addr) = rig_with("masterservice-uncached", &["--cache-agents", "kubectl"]);
    let svc = stored(&s.double, "default", "kubernetes");
    let (node, up) = (s.client(Some(&s.pki.node)), direct(&s));
    let upstream = get(&up, LIST, &[KUBELET]).body;
    s.double.clear_requests();
    let edge = "/api/v1/namespaces/edge/services";
    let list = get(&node, LIST, &[KUBELET, PROTOBUF, GZIP]);
    get(&node, edge, &[KUBELET, PROTOBUF, GZIP]);
    get(&node, LIST, &[KUBECTL, PROTOBUF, GZIP]);

    assert_kubelet_view(&list, &upstream, &svc, addr);
    assert_eq!(
        upstream_headers(&s.double, LIST, "kubelet/"),
        ("application/json".to_owned(), None)
    );
    assert_eq!(
        upstream_headers(&s.double, edge, "kubelet/"),
        (PROTOBUF.1.to_owned(), Some("gzip".to_owned()))
    );
    // kubectl is a cached agent here: JSON, uncompressed, to be stored.
    assert_eq!(
        upstream_headers(&s.double, LIST, "kubectl/"),
        ("application/json".to_owned(), None)
    );
}

/// Reads watch lines until one carries `name` in `ns` (bookmarks skipped).
fn event_of(w: &mut support::client::Stream, ns: &str, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no watch event for {ns}/{name}");
        let line = w
            .next_line(left)
            .expect("watch readable")
            .expect("watch still open");
        let v: Value = serde_json::from_str(&line).expect("an event line");
        let meta = &v["object"]["metadata"];
        if meta["name"] == name && meta["namespace"] == ns {
            return line;
        }
    }
}

fn watch(c: &Client, rv: &str, agent: (&str, &str)) -> support::client::Stream {
    let path = format!("/api/v1/services?allowWatchBookmarks=true&fieldSelector=spec.clusterIP%21%3DNone&resourceVersion={rv}&timeoutSeconds=60&watch=true");
    let w = c.open("GET", &path, &[agent], b"").expect("watch opened");
    assert_eq!(w.status, 200);
    w
}

/// kubelet's cached services list, once `ready` says it is what we wait for.
fn cached_list(cache: &Path, mut ready: impl FnMut(&Value) -> bool) -> EntryFile {
    let dir: PathBuf = cache.join("kubelet/api/v1");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = entries::all(&dir)
            .into_iter()
            .filter(|p| p.parent() == Some(dir.as_path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("services@"))
            })
            .find_map(|p| EntryFile::read(&p).ok())
            .filter(|e| e.json().is_ok_and(|v| ready(&v)));
        if let Some(entry) = found {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "kubelet's services list never cached as expected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kubernetes_item(list: &Value) -> Value {
    list["items"]
        .as_array()
        .and_then(|items| {
            items.iter().find(|i| {
                i["metadata"]["name"] == "kubernetes" && i["metadata"]["namespace"] == "default"
            })
        })
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn kubelet_watch_events_of_the_service_are_rewritten_and_patch_the_cached_list() {
    let (s, addr) = rig("masterservice-watch");
    let node = s.client(Some(&s.pki.node));
    let list = get(&node, LIST, &[KUBELET]).json();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut kubelet = watch(&node, &rv, KUBELET);
    let mut kubectl = watch(&node, &rv, KUBECTL);

    let mut changed = kubernetes_service();
    changed["metadata"]["labels"]["round"] = json!("2");
    s.double
        .apply("/api/v1", "services", "default", "kubernetes", changed);
    let mut web = other_service("10.96.0.20");
    web["metadata"] = json!({"labels": {"round": "2"}});
    s.double.apply("/api/v1", "services", "edge", "web", web);
    let svc = stored(&s.double, "default", "kubernetes");
    let event = |v: &Value| format!(r#"{{"type":"MODIFIED","object":{}}}"#, text(&bytes(v)));

    assert_eq!(
        event_of(&mut kubelet, "default", "kubernetes"),
        event(&shown_to_kubelet(&svc, addr))
    );
    let web = stored(&s.double, "edge", "web");
    assert_eq!(event_of(&mut kubelet, "edge", "web"), event(&web));
    assert_eq!(event_of(&mut kubectl, "default", "kubernetes"), event(&svc));

    // The list patcher saw the rewritten event: the cached list has the new
    // label and still shows the in-cluster address.
    let entry = cached_list(&s.proxy.cache_dir, |l| {
        kubernetes_item(l)["metadata"]["labels"]["round"] == "2"
    });
    let item = kubernetes_item(&entry.json().unwrap());
    assert_eq!(
        item["spec"]["clusterIP"],
        json!(addr.ip().to_string()),
        "{item}"
    );
    assert_eq!(
        item["spec"]["ports"][0]["port"],
        json!(addr.port()),
        "{item}"
    );
}

/// The flags `Setup` gives lite-apiserver, with another in-cluster address.
fn restart_with(s: &mut Setup, addr: SocketAddr) {
    assert!(s.proxy.stop(), "clean stop:\n{}", s.proxy.log_text());
    let mut args: Vec<String> = vec!["--server".into(), s.double.url()];
    args.extend(s.pki.proxy_flags());
    args.extend(["--cache-agents", "*", "--health-interval", "1"].map(String::from));
    args.extend(["--incluster-address".to_owned(), addr.to_string()]);
    s.proxy = Daemon::start(&s.proxy.cache_dir.clone(), &args);
}

#[test]
fn offline_after_a_restart_kubelet_still_sees_the_incluster_address() {
    let (mut s, addr) = rig("masterservice-offline");
    let svc = stored(&s.double, "default", "kubernetes");
    let (node, up) = (s.client(Some(&s.pki.node)), direct(&s));
    let upstream_list = get(&up, LIST, &[KUBELET]).body;
    let upstream_one = get(&up, GET, &[KUBELET]).body;
    get(&node, LIST, &[KUBELET]);
    get(&node, GET, &[KUBELET]);
    get(&node, LIST, &[KUBECTL]);
    // Stored as kubelet was shown it.
    let entry = cached_list(&s.proxy.cache_dir, |l| !kubernetes_item(l).is_null());
    let want = replaced(
        &upstream_list,
        &bytes(&svc),
        &bytes(&shown_to_kubelet(&svc, addr)),
    );
    assert!(entry.body == want, "cached: {}", text(&entry.body));

    s.double.stop();
    s.proxy.restart();
    s.wait_online(false);
    let node = s.client(Some(&s.pki.node));
    assert_kubelet_view(&get(&node, LIST, &[KUBELET]), &upstream_list, &svc, addr);
    assert_kubelet_view(&get(&node, GET, &[KUBELET]), &upstream_one, &svc, addr);
    let kubectl = get(&node, LIST, &[KUBECTL]);
    assert!(
        kubectl.body == upstream_list,
        "kubectl offline: {}",
        kubectl.text()
    );

    // Restarted with another address: the cached copies are rewritten again
    // on their way out.
    let moved: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    restart_with(&mut s, moved);
    s.wait_online(false);
    let node = s.client(Some(&s.pki.node));
    assert_kubelet_view(&get(&node, LIST, &[KUBELET]), &upstream_list, &svc, moved);
    assert_kubelet_view(&get(&node, GET, &[KUBELET]), &upstream_one, &svc, moved);

    // kubelet's streaming list of the same collection, offline: its initial
    // ADDED event of default/kubernetes carries the current address too.
    let mut w = node
        .open("GET", STREAMING_LIST, &[KUBELET], b"")
        .expect("offline streaming list");
    assert_eq!(w.status, 200);
    let shown = loop {
        let line = w
            .next_line(Duration::from_secs(10))
            .expect("an initial event")
            .expect("events before the end");
        let event: Value = serde_json::from_str(&line).unwrap();
        assert_ne!(event["type"], "BOOKMARK", "no event for default/kubernetes");
        let meta = &event["object"]["metadata"];
        if meta["namespace"] == "default" && meta["name"] == "kubernetes" {
            break event["object"].clone();
        }
    };
    assert_eq!(shown["spec"]["clusterIP"], json!(moved.ip().to_string()));
    assert_eq!(shown["spec"]["clusterIPs"], json!([moved.ip().to_string()]));
    let https = shown["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "https")
        .cloned()
        .unwrap();
    assert_eq!(https["port"], json!(moved.port()));
}

/// kubelet's streaming list of services (client-go WatchList).
const STREAMING_LIST: &str = "/api/v1/services?allowWatchBookmarks=true&fieldSelector=spec.clusterIP%21%3DNone&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=5&watch=true";
