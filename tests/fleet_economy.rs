//! Fleet-scale economy (issue 13): a node behind lite-apiserver costs the
//! cloud no more than it must.
//! - no `/readyz` probe while requests succeed; probes, once the node is
//!   quiet, reuse one kept-alive connection;
//! - held offline watches end spread over `--resume-spread`, not at once;
//! - kubelet's newest Lease renewal answered offline reaches the cloud
//!   within 1 s of the flip to online, with kubelet's body and identity;
//! - pooled connections unused for `--upstream-idle-timeout` are closed;
//! - new upstream connections beyond `--dial-rate` wait their turn.

mod support;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::client::Client;
use support::setup::Setup;

const KUBELET: (&str, &str) = (
    "User-Agent",
    "kubelet/v1.36.2 (linux/arm64) kubernetes/abcdef",
);
const PODS: &str = "/api/v1/namespaces/edge/pods";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1";

/// Polls `f` every 20 ms until it holds, at most `limit`.
fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn readyz_count(s: &Setup) -> usize {
    s.double
        .requests()
        .iter()
        .filter(|r| r.target.starts_with("/readyz"))
        .count()
}

#[test]
fn no_probe_while_requests_succeed_and_probes_reuse_one_connection() {
    let s = Setup::new("economy-probes");
    let node = s.client(Some(&s.pki.node));
    assert_eq!(node.get(PODS, &[KUBELET]).status, 200);
    s.double.clear_requests();
    let probes_before = s.proxy.metric("lite_apiserver_upstream_probes_total");

    // Sparse traffic, as kubelet's (a Lease renewal every 10 s at the
    // default 5 s interval): a request every two health intervals, each
    // answered at once, for eight intervals. Nothing waits unanswered and
    // something succeeds within three intervals: never a probe.
    for _ in 0..4 {
        assert_eq!(node.get(PODS, &[KUBELET]).status, 200);
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(readyz_count(&s), 0, "probed while requests succeeded");
    assert_eq!(
        s.proxy.metric("lite_apiserver_upstream_probes_total"),
        probes_before
    );

    // Quiet now: probes resume, all on one kept-alive connection.
    wait_until(
        "three probes of a quiet server",
        Duration::from_secs(15),
        || readyz_count(&s) >= 3,
    );
    assert_eq!(
        s.proxy.metric("lite_apiserver_upstream_probe_dials_total"),
        1.0,
        "each probe dialed anew:\n{}",
        s.proxy.admin_get("/metrics")
    );
}

#[test]
fn held_watches_end_spread_over_the_resume_window() {
    let mut s = Setup::with(
        "economy-spread",
        Default::default(),
        &["--resume-spread", "3s"],
    );
    let node = s.client(Some(&s.pki.node));
    let list = node.get(PODS, &[KUBELET]).json();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    s.double.stop();
    s.wait_online(false);

    const WATCHES: usize = 10;
    let (tx, rx) = mpsc::channel();
    for i in 0..WATCHES {
        let client = s.client(Some(&s.pki.node));
        let target = format!("{PODS}?watch=1&resourceVersion={rv}&timeoutSeconds=600");
        let mut stream = client
            .open("GET", &target, &[KUBELET], b"")
            .expect("held watch");
        assert_eq!(stream.status, 200);
        let tx = tx.clone();
        std::thread::spawn(move || {
            let end = loop {
                match stream.next_data(Duration::from_secs(30)) {
                    Ok(Some(_)) => continue,
                    Ok(None) => break Ok(Instant::now()),
                    Err(e) => break Err(format!("watch {i}: {e}")),
                }
            };
            let _ = tx.send(end);
        });
    }
    s.double.restart();
    s.wait_online(true);
    let online_at = Instant::now();
    let ends: Vec<Instant> = (0..WATCHES)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(15))
                .expect("a held watch ended")
                .expect("a clean end")
        })
        .collect();
    let first = ends.iter().min().unwrap();
    let last = ends.iter().max().unwrap();
    assert!(
        *last - *first >= Duration::from_secs(1),
        "ten held watches ended within {:?} of each other, not spread over 3 s",
        *last - *first
    );
    assert!(
        last.saturating_duration_since(online_at) < Duration::from_secs(5),
        "the last held watch ended {:?} after the flip",
        last.saturating_duration_since(online_at)
    );
}

fn lease_body(renew: &str) -> Vec<u8> {
    json!({
        "kind": "Lease",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": {"name": "edge-1", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "edge-1", "leaseDurationSeconds": 40, "renewTime": renew}
    })
    .to_string()
    .into_bytes()
}

fn renew(node: &Client, renew: &str) -> u16 {
    node.request(
        "PUT",
        LEASE,
        &[KUBELET, ("Content-Type", "application/json")],
        &lease_body(renew),
    )
    .status
}

fn upstream_renew_time(s: &Setup) -> Option<String> {
    let lease = s.double.get(
        "/apis/coordination.k8s.io/v1",
        "leases",
        "kube-node-lease",
        "edge-1",
    )?;
    lease["spec"]["renewTime"].as_str().map(str::to_owned)
}

#[test]
fn the_newest_offline_lease_renewal_reaches_the_cloud_at_once() {
    let mut s = Setup::new("economy-lease");
    let node = s.client(Some(&s.pki.node));
    assert_eq!(node.get(LEASE, &[KUBELET]).status, 200);
    s.double.stop();
    s.wait_online(false);
    assert_eq!(renew(&node, "2026-12-01T10:00:01.000000Z"), 200);
    assert_eq!(renew(&node, "2026-12-01T10:00:11.000000Z"), 200);
    assert_ne!(
        upstream_renew_time(&s).as_deref(),
        Some("2026-12-01T10:00:11.000000Z")
    );

    s.double.clear_requests();
    s.double.restart();
    s.wait_online(true);
    wait_until(
        "the delayed renewal upstream within 1 s of the flip",
        Duration::from_secs(1),
        || upstream_renew_time(&s).as_deref() == Some("2026-12-01T10:00:11.000000Z"),
    );
    let puts: Vec<_> = s
        .double
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.target == LEASE)
        .collect();
    assert_eq!(puts.len(), 1, "only the newest renewal is sent: {puts:?}");
    assert_eq!(puts[0].cn.as_deref(), Some("system:node:edge-1"));
    assert!(puts[0]
        .user_agent
        .as_deref()
        .is_some_and(|ua| ua.starts_with("kubelet/")));
    wait_until("the log line", Duration::from_secs(5), || {
        s.proxy.log_text().contains("delayed lease renewal")
    });

    // Later renewals go straight through, nothing kept is replayed again.
    assert_eq!(renew(&node, "2026-12-01T10:00:21.000000Z"), 200);
    assert_eq!(
        upstream_renew_time(&s).as_deref(),
        Some("2026-12-01T10:00:21.000000Z")
    );
}

#[test]
fn pooled_connections_unused_for_the_idle_timeout_are_closed() {
    let s = Setup::with(
        "economy-idle",
        Default::default(),
        &["--upstream-idle-timeout", "2s"],
    );
    let node = s.client(Some(&s.pki.node));
    assert_eq!(node.get(PODS, &[KUBELET]).status, 200);
    wait_until("an idle pooled connection", Duration::from_secs(5), || {
        s.proxy.metric("lite_apiserver_upstream_idle_connections") >= 1.0
    });
    wait_until(
        "the idle connection closed",
        Duration::from_secs(10),
        || {
            s.proxy.metric("lite_apiserver_upstream_idle_closed_total") >= 1.0
                && s.proxy.metric("lite_apiserver_upstream_idle_connections") == 0.0
        },
    );
}

#[test]
fn new_connections_beyond_the_dial_rate_wait() {
    let s = Setup::with("economy-pace", Default::default(), &["--dial-rate", "2"]);
    // Six relayed watches at once: each needs a connection of its own.
    let streams: Vec<_> = (0..6)
        .map(|_| {
            let client = s.client(Some(&s.pki.node));
            let target = format!("{PODS}?watch=1&timeoutSeconds=60");
            std::thread::spawn(move || client.open("GET", &target, &[KUBELET], b""))
        })
        .collect();
    let streams: Vec<_> = streams
        .into_iter()
        .map(|t| t.join().expect("thread").expect("watch opened"))
        .collect();
    assert!(streams.iter().all(|w| w.status == 200));
    let paced = s.proxy.metric("lite_apiserver_upstream_paced_dials_total");
    assert!(
        paced >= 3.0,
        "six dials at 2/s: at least three wait, {paced} did:\n{}",
        s.proxy.admin_get("/metrics")
    );
    assert!(s.proxy.metric("lite_apiserver_upstream_dials_total") >= 6.0);
}
