//! Failover on every path (issue 10, item 8): with two `--server`s, when the
//! pooled connections to the first one die and it refuses new dials, the
//! next request is answered by the second server, not from the cache, and
//! lite-apiserver never reports offline (offline means every server failed).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::client::Client;
use support::daemon::Daemon;
use support::double::{Double, Opts};
use support::pki::Pki;
use support::relay::Relay;
use support::silence::{InFlight, BOUND, FAST, KUBELET};

const WEB1: &str = "/api/v1/namespaces/edge/pods/web-1";

/// Labels web-1 on `double` with `served-by: who`, so an answer tells who
/// gave it (the cache holds the first server's copy).
fn mark(double: &Double, who: &str) {
    let mut pod = double.get("/api/v1", "pods", "edge", "web-1").unwrap();
    pod["metadata"]["labels"]["served-by"] = json!(who);
    double.apply("/api/v1", "pods", "edge", "web-1", pod);
}

fn from_cache(proxy: &Daemon) -> f64 {
    proxy.metric("lite_apiserver_requests_total{verb=\"get\",code=\"200\",source=\"cache\"}") + 0.0
}

/// Samples `lite_apiserver_upstream_online` every 10 ms on a thread until
/// dropped; remembers whether it was ever 0.
struct OnlineWatch {
    stop: Arc<AtomicBool>,
    seen_offline: Arc<AtomicBool>,
}

impl OnlineWatch {
    fn start(admin: std::net::SocketAddr) -> OnlineWatch {
        let (stop, seen_offline) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (s, o) = (stop.clone(), seen_offline.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Some(body) = admin_metrics(admin) {
                    if body
                        .lines()
                        .any(|l| l == "lite_apiserver_upstream_online 0")
                    {
                        o.store(true, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        OnlineWatch { stop, seen_offline }
    }

    fn seen_offline(&self) -> bool {
        self.seen_offline.load(Ordering::SeqCst)
    }
}

impl Drop for OnlineWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `/metrics` from the admin port, or None if it did not answer in 1 s.
fn admin_metrics(admin: std::net::SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn a_dead_pooled_connection_fails_over_to_the_next_server() {
    let dir = support::temp_dir("failover-pooled");
    let pki = Pki::generate(&dir.join("pki"));
    let first = Double::start(&pki, Opts::default());
    let second = Double::start(&pki, Opts::default());
    mark(&first, "first");
    mark(&second, "second");
    let relay = Relay::start(first.addr());
    let mut args: Vec<String> = vec![
        "--server".into(),
        relay.url(),
        "--server".into(),
        second.url(),
    ];
    args.extend(pki.proxy_flags());
    args.extend(["--cache-agents", "*"].map(String::from));
    args.extend(FAST.map(String::from));
    let proxy = Daemon::start(&dir.join("cache"), &args);
    let node = Client::new(proxy.addr, &pki.ca.pem, Some(&pki.node));
    let log = || proxy.log_text();

    // Warm the pool (and the cache) on the first server.
    for _ in 0..3 {
        let r = node.get(WEB1, &[KUBELET]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["metadata"]["labels"]["served-by"], "first");
    }
    assert!(first.requests().iter().any(|r| r.target == WEB1));
    let watch = OnlineWatch::start(proxy.admin);
    second.clear_requests();
    let cached = from_cache(&proxy);

    // The first server dies: its pooled connections close, dials are refused.
    relay.refuse();
    relay.cut();
    let (r, took) = InFlight::send(&node, "GET", WEB1, &[KUBELET], b"").answer(BOUND, log);
    println!("GET after the first server died answered in {took:?}");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), log());
    let asked_second = second
        .requests()
        .iter()
        .any(|q| q.method == "GET" && q.target == WEB1);
    assert!(
        asked_second,
        "the second server was asked for web-1 (answered by {}, lite_apiserver_requests_total cache {} -> {})\n{}",
        r.json()["metadata"]["labels"]["served-by"],
        cached,
        from_cache(&proxy),
        log()
    );
    assert_eq!(
        r.json()["metadata"]["labels"]["served-by"],
        "second",
        "answered by the second server"
    );
    assert_eq!(
        from_cache(&proxy),
        cached,
        "not answered from the cache while a server is healthy"
    );
    // The next one goes to the second server too (and gives a late flip
    // time to show).
    let (again, _) = InFlight::send(&node, "GET", WEB1, &[KUBELET], b"").answer(BOUND, log);
    assert_eq!(
        again.json()["metadata"]["labels"]["served-by"],
        "second",
        "{}",
        again.text()
    );
    assert!(
        !watch.seen_offline(),
        "lite_apiserver_upstream_online went to 0 while the second server was healthy\n{}",
        log()
    );
    assert!(
        !log().contains("upstream offline"),
        "logged offline:\n{}",
        log()
    );
}
