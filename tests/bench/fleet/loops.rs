//! The fake kubelet's loops: the node Lease, node status, and the pod
//! worker (see [`super::kubelet`] for the schedule they follow).

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::informer::OnEvent;
use super::kubelet::{spec, start_informer, Node, NS};
use crate::support::sa::{rfc3339, unix_now};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
/// Tries per heartbeat (kubelet's `nodeStatusUpdateRetry`, the lease
/// controller's `maxUpdateRetries`).
const TRIES: usize = 5;
/// Node status PATCHes at start (the status changes while it settles).
const INITIAL_PATCHES: u32 = 2;
/// The status manager's resync: a failed pod status PATCH is retried.
const POD_RETRY: Duration = Duration::from_secs(10);

/// `d` plus up to `factor` of it (wait.JitterUntil).
fn jitter(n: &Node, d: Duration, factor: f64) -> Duration {
    d.mul_f64(1.0 + factor * n.rand())
}

fn now() -> String {
    rfc3339(unix_now())
}

/// The Lease loop: ensure (GET, POST), then renew every interval.
pub fn lease(n: &Arc<Node>) {
    let path = format!("{LEASES}/{}", n.name);
    let mut latest: Option<Value> = None;
    while !n.stopped() {
        let base = match latest.take() {
            Some(l) => Some(l),
            None => ensure_lease(n, &path),
        };
        if let Some(base) = base {
            latest = renew(n, &path, base);
        }
        n.sleep(jitter(n, n.schedule.lease_every, 0.04));
    }
}

/// GET the Lease, POST it when missing; retried with the controller's
/// backoff (200 ms doubling to 7 s) until it exists or the node stops.
fn ensure_lease(n: &Node, path: &str) -> Option<Value> {
    let mut wait = Duration::from_millis(200);
    while !n.stopped() {
        let (status, v) = n.call("GET", &format!("{path}?timeout=10s"), None);
        if status == 200 {
            return Some(v);
        }
        if status == 404 {
            let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": n.name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": n.name, "leaseDurationSeconds": 40, "renewTime": now()}});
            let (status, v) = n.call("POST", &format!("{LEASES}?timeout=10s"), Some(&body));
            if status == 201 || status == 200 {
                return Some(v);
            }
        }
        n.sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(7));
    }
    None
}

/// One renewal, up to [`TRIES`] PUTs; the base for the next one (None: a
/// conflict, ensure again).
fn renew(n: &Node, path: &str, base: Value) -> Option<Value> {
    for i in 0..TRIES {
        let mut lease = base.clone();
        lease["spec"]["renewTime"] = json!(now());
        let (status, v) = n.call("PUT", &format!("{path}?timeout=10s"), Some(&lease));
        match status {
            200 => {
                n.stats.leases_ok.fetch_add(1, Ordering::Relaxed);
                return Some(v);
            }
            409 => return None,
            _ if i > 0 => n.close_all(),
            _ => {}
        }
        if n.stopped() {
            break;
        }
    }
    Some(base)
}

/// Node status: a PATCH when due (the first few, then every report
/// interval), retried within the tick as kubelet's `updateNodeStatus`.
pub fn node_status(n: &Arc<Node>) {
    let mut initial = INITIAL_PATCHES;
    let mut last: Option<Instant> = None;
    while !n.stopped() {
        let due = initial > 0 || last.is_none_or(|t| t.elapsed() >= n.schedule.report_every);
        if due && update_status(n) {
            initial = initial.saturating_sub(1);
            last = Some(Instant::now());
        }
        n.sleep(jitter(n, n.schedule.status_every, 0.04));
    }
}

fn update_status(n: &Node) -> bool {
    let node = format!("/api/v1/nodes/{}", n.name);
    for i in 0..TRIES {
        if n.stopped() {
            return false;
        }
        // Try 0 reads the Node from the informer; retries from the API.
        if i > 0 && n.call("GET", &format!("{node}?timeout=10s"), None).0 != 200 {
            n.close_all();
            continue;
        }
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "reason": "KubeletReady", "lastHeartbeatTime": now()}]}});
        if n.call("PATCH", &format!("{node}/status?timeout=10s"), Some(&patch))
            .0
            == 200
        {
            return true;
        }
        if i > 0 {
            n.close_all();
        }
    }
    false
}

/// Syncs each new pod (from the pod informer) until its status PATCH to
/// Running succeeds.
pub fn pod_worker(n: &Arc<Node>, pods: &Receiver<String>) {
    let mut pending: Vec<(String, Instant)> = Vec::new();
    let mut volumes = false;
    while !n.stopped() {
        match pods.recv_timeout(Duration::from_millis(100)) {
            Ok(name) => pending.push((name, Instant::now())),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        for (name, due) in pending.iter_mut() {
            if *due > Instant::now() {
                continue;
            }
            if name.starts_with("p-init") && !volumes {
                volumes = true;
                start_volumes(n, name);
            }
            if sync_pod(n, name) {
                *due = Instant::now() + Duration::from_secs(86_400 * 365);
            } else {
                *due = Instant::now() + POD_RETRY;
            }
        }
        pending.retain(|(_, due)| *due < Instant::now() + Duration::from_secs(86_400));
    }
}

/// The initial pod's volumes: its token and one informer per ConfigMap
/// and Secret it mounts.
fn start_volumes(n: &Arc<Node>, pod: &str) {
    let token = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"], "expirationSeconds": 3607,
                 "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod}}});
    n.call(
        "POST",
        &format!("/api/v1/namespaces/{NS}/serviceaccounts/default/token"),
        Some(&token),
    );
    let ignore: OnEvent = Arc::new(|_, _| {});
    for (kind, name) in [
        ("configmaps", "kube-root-ca.crt"),
        ("configmaps", "app-cfg"),
        ("secrets", "app-sec"),
    ] {
        let s = spec(
            &format!("{kind}/{name}"),
            &format!("/api/v1/namespaces/{NS}/{kind}"),
            Some(format!("metadata.name%3D{name}")),
            true,
        );
        start_informer(n, s, ignore.clone());
    }
}

/// GET the pod, PATCH its status to Running; true once answered 200.
fn sync_pod(n: &Node, name: &str) -> bool {
    let path = format!("/api/v1/namespaces/{NS}/pods/{name}");
    let (status, pod) = n.call("GET", &path, None);
    if status != 200 {
        return false;
    }
    let patch = json!({"metadata": {"uid": pod["metadata"]["uid"]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "startTime": now()}});
    if n.call("PATCH", &format!("{path}/status"), Some(&patch)).0 != 200 {
        return false;
    }
    n.stats
        .pods_running
        .lock()
        .unwrap()
        .insert(name.to_owned(), Instant::now());
    true
}
