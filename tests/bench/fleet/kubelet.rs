//! A fake kubelet: what a kubelet 1.36 asks the API for, on its schedule,
//! on its own threads, with its node's client certificate
//! (`../shared/fixtures/kubelet-1.36-via-proxy.txt` is the model):
//!
//! - registration: GET its Node (404), POST it; the same for its CSINode;
//! - informers (see [`super::informer`]): its pods (`spec.nodeName`), its
//!   Node, Services (`spec.clusterIP!=None`), RuntimeClasses, CSIDrivers;
//!   per pod volume, one informer per ConfigMap/Secret (`metadata.name`);
//! - the Lease: GET (404), POST, then a PUT every 10 s (jitter 4 %), up to
//!   5 tries; from the second failed try on, `closeAllConns`;
//! - node status: a PATCH at start and when it changes (here: twice,
//!   10 s apart), then every 5 minutes; a failed PATCH is retried (GET the
//!   Node, PATCH) up to 5 times, `closeAllConns` from the second failure;
//! - each new pod of the node: its service-account token (POST, for the
//!   initial pod with volumes), GET, PATCH status to Running (retried every
//!   10 s until it succeeds).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http::Endpoint;
use super::informer::{self, OnEvent, Spec};
use super::loops;

pub const USER_AGENT: &str = "kubelet/v1.36.2 (linux/amd64) kubernetes/fleet00";
pub const ACCEPT_READ: &str = "application/vnd.kubernetes.protobuf,application/json";
/// The namespace of the fleet's pods, ConfigMaps and Secrets.
pub const NS: &str = "fleet";
/// kubelet's heartbeat client timeout (`timeout=10s`).
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);
const THREAD_STACK: usize = 256 * 1024;

/// The schedule (kubelet's defaults; tests shorten them).
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub lease_every: Duration,
    pub status_every: Duration,
    pub report_every: Duration,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            lease_every: Duration::from_secs(10),
            status_every: Duration::from_secs(10),
            report_every: Duration::from_secs(300),
        }
    }
}

/// What one kubelet saw, client side.
#[derive(Default)]
pub struct Stats {
    /// Answers by status code (0: transport error).
    pub statuses: Mutex<BTreeMap<u16, u64>>,
    /// Streaming lists refused with 422.
    pub streaming_422: AtomicU64,
    /// Informers that completed an initial sync.
    pub synced: Mutex<BTreeSet<String>>,
    /// Pod name -> when an informer event first showed it.
    pub pods_seen: Mutex<BTreeMap<String, Instant>>,
    /// Pod name -> when its PATCH to Running was answered 200.
    pub pods_running: Mutex<BTreeMap<String, Instant>>,
    /// Lease renewals answered 200, and closeAllConns calls.
    pub leases_ok: AtomicU64,
    pub close_alls: AtomicU64,
    /// The last few errors, for failure messages.
    pub log: Mutex<Vec<String>>,
}

impl Stats {
    pub fn answered(&self, status: u16) {
        *self.statuses.lock().unwrap().entry(status).or_insert(0) += 1;
    }

    pub fn synced(&self, name: &str) {
        self.synced.lock().unwrap().insert(name.to_owned());
    }
}

/// A kubelet's shared state.
pub struct Node {
    /// `edge-K`.
    pub name: String,
    pub ep: Endpoint,
    pub stats: Stats,
    pub schedule: Schedule,
    stop: AtomicBool,
    seed: AtomicU64,
    pods: Mutex<Option<Sender<String>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Node {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// A number in [0, 1) (xorshift; jitter only).
    pub fn rand(&self) -> f64 {
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Sleeps `d`, waking early when the node stops.
    pub fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    pub fn note(&self, what: &str) {
        let mut log = self.stats.log.lock().unwrap();
        if log.len() >= 30 {
            log.remove(0);
        }
        log.push(what.to_owned());
    }

    /// kubelet's `closeAllConns` after repeated heartbeat failures.
    pub fn close_all(&self) {
        self.stats.close_alls.fetch_add(1, Ordering::Relaxed);
        self.ep.close_all();
    }

    pub fn spawn(self: &Arc<Self>, name: &str, f: impl FnOnce(&Arc<Node>) + Send + 'static) {
        let me = self.clone();
        let t = std::thread::Builder::new()
            .name(format!("{}-{name}", self.name))
            .stack_size(THREAD_STACK)
            .spawn(move || f(&me))
            .expect("spawn a kubelet thread");
        self.threads.lock().unwrap().push(t);
    }

    /// A short request with the heartbeat timeout; (status, body), status
    /// 0 on a transport error.
    pub fn call(&self, method: &str, target: &str, body: Option<&Value>) -> (u16, Value) {
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let mut headers = vec![("User-Agent", USER_AGENT), ("Accept", ACCEPT_READ)];
        if body.is_some() {
            let ct = if method == "PATCH" {
                "application/strategic-merge-patch+json"
            } else {
                "application/json"
            };
            headers.push(("Content-Type", ct));
        }
        match self
            .ep
            .request(method, target, &headers, &bytes, HEARTBEAT_TIMEOUT)
        {
            Ok(r) => {
                self.stats.answered(r.status);
                let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                (r.status, v)
            }
            Err(e) => {
                self.stats.answered(0);
                self.note(&format!("{method} {target}: {e}"));
                (0, Value::Null)
            }
        }
    }
}

/// A running fake kubelet; stopped on drop.
pub struct Kubelet {
    pub node: Arc<Node>,
}

impl Kubelet {
    /// Starts node `name` talking to `ep`.
    pub fn start(name: &str, ep: Endpoint, schedule: Schedule, seed: u64) -> Kubelet {
        let (tx, rx) = mpsc::channel();
        let node = Arc::new(Node {
            name: name.to_owned(),
            ep,
            stats: Stats::default(),
            schedule,
            stop: AtomicBool::new(false),
            seed: AtomicU64::new(seed | 1),
            pods: Mutex::new(Some(tx)),
            threads: Mutex::new(Vec::new()),
        });
        node.spawn("main", move |n| boot(n, rx));
        Kubelet { node }
    }

    /// Tells every thread to stop, without waiting (a fleet stops all
    /// its kubelets at once, then waits).
    pub fn signal_stop(&self) {
        let n = &self.node;
        n.stop.store(true, Ordering::SeqCst);
        n.pods.lock().unwrap().take();
        n.ep.close_all();
    }

    /// Stops every thread (bounded wait; a thread stuck in a dial is
    /// left to finish by itself).
    pub fn stop(&self) {
        self.signal_stop();
        let n = &self.node;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let threads: Vec<JoinHandle<()>> = n.threads.lock().unwrap().drain(..).collect();
            let (done, left): (Vec<_>, Vec<_>) = threads.into_iter().partition(|t| t.is_finished());
            for t in done {
                let _ = t.join();
            }
            let empty = left.is_empty();
            n.threads.lock().unwrap().extend(left);
            if empty || Instant::now() > deadline {
                return;
            }
            n.ep.close_all();
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Registration, then the informers and loops on threads of their own;
/// this thread becomes the pod worker.
fn boot(n: &Arc<Node>, pods: Receiver<String>) {
    register(n);
    start_informers(n);
    n.spawn("lease", loops::lease);
    n.spawn("status", loops::node_status);
    loops::pod_worker(n, &pods);
}

fn register(n: &Node) {
    let node_path = format!("/api/v1/nodes/{}", n.name);
    let (status, _) = n.call("GET", &format!("{node_path}?timeout=10s"), None);
    if status != 200 {
        let body = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n.name,
            "labels": {"kubernetes.io/hostname": n.name}}, "status": {"conditions": []}});
        n.call("POST", "/api/v1/nodes", Some(&body));
    }
    let csi = format!("/apis/storage.k8s.io/v1/csinodes/{}", n.name);
    if n.call("GET", &csi, None).0 != 200 {
        let body = json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
            "metadata": {"name": n.name}, "spec": {"drivers": []}});
        n.call("POST", "/apis/storage.k8s.io/v1/csinodes", Some(&body));
    }
}

pub fn spec(name: &str, path: &str, selector: Option<String>, timeout_param: bool) -> Spec {
    Spec {
        name: name.to_owned(),
        path: path.to_owned(),
        selector,
        timeout_param,
    }
}

fn start_informers(n: &Arc<Node>) {
    let pods = spec(
        "pods",
        "/api/v1/pods",
        Some(format!("spec.nodeName%3D{}", n.name)),
        false,
    );
    let on_pod: OnEvent = {
        let me = Arc::downgrade(n);
        Arc::new(move |kind, obj| {
            if let Some(me) = me.upgrade() {
                pod_event(&me, kind, obj);
            }
        })
    };
    start_informer(n, pods, on_pod);
    let ignore: OnEvent = Arc::new(|_, _| {});
    let others = [
        spec(
            "node",
            "/api/v1/nodes",
            Some(format!("metadata.name%3D{}", n.name)),
            true,
        ),
        spec(
            "services",
            "/api/v1/services",
            Some("spec.clusterIP%21%3DNone".into()),
            true,
        ),
        spec(
            "runtimeclasses",
            "/apis/node.k8s.io/v1/runtimeclasses",
            None,
            true,
        ),
        spec(
            "csidrivers",
            "/apis/storage.k8s.io/v1/csidrivers",
            None,
            true,
        ),
    ];
    for s in others {
        start_informer(n, s, ignore.clone());
    }
}

pub fn start_informer(n: &Arc<Node>, s: Spec, on_event: OnEvent) {
    n.spawn(&s.name.clone(), move |n| informer::run(n, &s, &on_event));
}

/// The pod informer's callback: a pod seen for the first time goes to
/// the pod worker.
fn pod_event(n: &Node, kind: &str, obj: &Value) {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
    if kind == "DELETED" || name.is_empty() {
        return;
    }
    let first = {
        let mut seen = n.stats.pods_seen.lock().unwrap();
        if seen.contains_key(&name) {
            false
        } else {
            seen.insert(name.clone(), Instant::now());
            true
        }
    };
    if first {
        if let Some(tx) = n.pods.lock().unwrap().as_ref() {
            let _ = tx.send(name);
        }
    }
}
