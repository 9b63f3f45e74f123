//! One fleet: the double (the cloud's kube-apiserver), one cuttable link
//! ([`Link`]: a network namespace's veth link, or a relay) in front of
//! it, N lite-apiserver processes (or none, for the direct baseline) and
//! N fake kubelets; the run through the start, steady, cut and heal
//! windows; the figures from the double's log.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use crate::http::Endpoint;
use crate::kubelet::{Kubelet, Stats, NS};
use crate::link::Link;
use crate::measure::{self, Figures, Window};
use crate::opts::{Settings, System};
use crate::support::daemon::Daemon;
use crate::support::double::{ConnLife, Double, Opts, Recorded};
use crate::support::netns::NetNs;
use crate::support::pki::{Pair, Pki};
use crate::support::world;

/// HTTP/2's health check on a kubelet's connection to kube-apiserver: a
/// read idle 30 s, then a 15 s ping timeout.
pub const H2_HEALTH_CHECK: Duration = Duration::from_secs(45);

/// A node's name and client certificate (CN system:node:NAME).
pub struct Identity {
    pub name: String,
    pub pair: Pair,
}

/// `count` node identities `edge-1`...
pub fn identities(pki: &Pki, count: usize) -> Vec<Identity> {
    (1..=count)
        .map(|k| Identity {
            name: format!("edge-{k}"),
            pair: pki.ca.client(
                &pki.dir,
                &format!("system:node:edge-{k}"),
                Some("system:nodes"),
            ),
        })
        .collect()
}

/// A TLS client config trusting `ca`, presenting `pair`.
pub fn client_config(ca: &Path, pair: &Pair) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(&pair.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pair.key).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The cloud's objects: the namespace, what the initial pods mount,
/// Services, a RuntimeClass, a CSIDriver, and one pod per node.
pub fn seed(double: &Double, nodes: &[Identity]) {
    let v1 = "/api/v1";
    double.apply(
        v1,
        "namespaces",
        "",
        NS,
        json!({"status": {"phase": "Active"}}),
    );
    let ca = "-----BEGIN CERTIFICATE-----\nfleet\n-----END CERTIFICATE-----\n";
    double.apply(
        v1,
        "configmaps",
        NS,
        "app-cfg",
        json!({"data": {"mode": "edge"}}),
    );
    double.apply(
        v1,
        "configmaps",
        NS,
        "kube-root-ca.crt",
        json!({"data": {"ca.crt": ca}}),
    );
    let secret = json!({"type": "Opaque", "data": {"k": "dg=="}});
    double.apply(v1, "secrets", NS, "app-sec", secret);
    for (ns, name, ip) in [
        ("default", "kubernetes", "10.96.0.1"),
        (NS, "web", "10.96.0.10"),
        (NS, "db", "None"),
    ] {
        let svc = json!({"spec": {"clusterIP": ip, "ports": [{"port": 443}]}});
        double.apply(v1, "services", ns, name, svc);
    }
    let node_v1 = "/apis/node.k8s.io/v1";
    double.apply(
        node_v1,
        "runtimeclasses",
        "",
        "runc",
        json!({"handler": "runc"}),
    );
    let storage_v1 = "/apis/storage.k8s.io/v1";
    double.apply(
        storage_v1,
        "csidrivers",
        "",
        "csi.fleet",
        json!({"spec": {}}),
    );
    for n in nodes {
        let name = format!("p-init-{}", n.name);
        double.apply(v1, "pods", NS, &name, world::pod(NS, &name, &n.name, 0));
    }
}

/// Starts one lite-apiserver per node, each with its own cache directory
/// and identity, against the double across `link`.
fn start_lites(
    dir: &Path,
    pki: &Pki,
    link: &Link,
    nodes: &[Identity],
    s: &Settings,
) -> Vec<Daemon> {
    let server = format!("https://{}", link.server_addr());
    nodes
        .iter()
        .enumerate()
        .map(|(k, n)| {
            let mut args = vec!["--server".to_owned(), server.clone()];
            args.extend(pki.trust_flags());
            args.extend(["--identity".to_owned(), n.pair.identity_flag()]);
            args.extend(s.lite_args.iter().cloned());
            let cache = dir.join(format!("lite-{}", n.name));
            link.start_lite(k, &s.binary, &cache, &args)
        })
        .collect()
}

/// Waits (bounded) until every lite-apiserver says it is online.
fn wait_online(lites: &[Daemon]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for l in lites {
        while l.metric("lite_apiserver_upstream_online") != 1.0 {
            assert!(
                Instant::now() < deadline,
                "a lite-apiserver never went online:\n{}",
                l.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// SIGTERM to all at once, then waits for each.
fn stop_lites(lites: &mut [Daemon]) {
    let pids: Vec<String> = lites
        .iter()
        .filter_map(Daemon::pid)
        .map(|p| p.to_string())
        .collect();
    if !pids.is_empty() {
        let _ = Command::new("kill").arg("-TERM").args(&pids).status();
    }
    for l in lites.iter_mut() {
        l.stop();
    }
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

/// What happened at which time.
#[derive(Clone, Copy, Debug)]
pub struct Marks {
    /// The double is up and seeded; the lite-apiservers start.
    pub begin: Instant,
    /// The kubelets start.
    pub kubelets: Instant,
    pub steady: Window,
    /// The link goes down.
    #[allow(dead_code)] // read by tests/fleet_harness.rs
    pub cut: Instant,
    /// The link is back; the new pods are created.
    pub heal: Instant,
}

/// One system's run: its figures and what they were computed from.
#[allow(dead_code)] // all read by tests/fleet_harness.rs
pub struct Run {
    pub figures: Figures,
    pub requests: Vec<Recorded>,
    pub connections: Vec<ConnLife>,
    pub marks: Marks,
}

/// A running fleet.
struct Fleet<'a> {
    double: Double,
    link: Link<'a>,
    lites: Vec<Daemon>,
    kubelets: Vec<Kubelet>,
}

/// Starts the double, the link, the lite-apiservers (for [`System::Lite`])
/// once all are online, then the kubelets; (fleet, begin, kubelets' start).
fn start<'a>(
    sys: System,
    s: &Settings,
    pki: &Pki,
    ids: &[Identity],
    dir: &Path,
    ns: Option<&'a NetNs>,
) -> (Fleet<'a>, Instant, Instant) {
    let opts = Opts {
        empty: true,
        ..Opts::default()
    };
    let double = match ns {
        Some(ns) => Double::start_on(pki, opts, SocketAddr::new(ns.upstream_host.into(), 0)),
        None => Double::start(pki, opts),
    };
    seed(&double, ids);
    let link = Link::new(ns, double.addr());
    let begin = Instant::now();
    let lites = match sys {
        System::Lite => start_lites(dir, pki, &link, ids, s),
        System::Direct => Vec::new(),
    };
    wait_online(&lites);
    let kubelets = start_kubelets(sys, s, pki, ids, &lites, &link);
    let t_k = Instant::now();
    eprintln!("fleet {}: {} kubelets started", sys.label(), ids.len());
    (
        Fleet {
            double,
            link,
            lites,
            kubelets,
        },
        begin,
        t_k,
    )
}

/// Start and steady windows, the cut, the new pods as the link returns,
/// the heal window.
fn cycle(
    sys: System,
    s: &Settings,
    f: &Fleet,
    ids: &[Identity],
    begin: Instant,
    t_k: Instant,
) -> Marks {
    sleep_until(t_k + s.start);
    let steady = Window::new(Instant::now(), s.steady);
    sleep_until(steady.to);
    eprintln!("fleet {}: link down for {:?}", sys.label(), s.cut);
    let cut = Instant::now();
    f.link.down(s.cut_kind);
    std::thread::sleep(s.cut);
    f.link.up(s.cut_kind);
    let heal = Instant::now();
    for n in ids {
        let name = format!("p-new-{}", n.name);
        f.double.apply(
            "/api/v1",
            "pods",
            NS,
            &name,
            world::pod(NS, &name, &n.name, 0),
        );
    }
    eprintln!(
        "fleet {}: link back; watching for {:?}",
        sys.label(),
        s.heal
    );
    sleep_until(heal + s.heal);
    Marks {
        begin,
        kubelets: t_k,
        steady,
        cut,
        heal,
    }
}

/// Runs one system through all windows; its figures.
pub fn run(
    sys: System,
    s: &Settings,
    pki: &Pki,
    ids: &[Identity],
    dir: &Path,
    ns: Option<&NetNs>,
) -> Figures {
    run_full(sys, s, pki, ids, dir, ns).figures
}

/// [`run`], keeping the double's logs and the marks (tests check the
/// figures against them).
/// With `ns`, the link is that namespace's upstream link (the double
/// listens on its host end; `pki` must cover that address), else a relay.
pub fn run_full(
    sys: System,
    s: &Settings,
    pki: &Pki,
    ids: &[Identity],
    dir: &Path,
    ns: Option<&NetNs>,
) -> Run {
    let (mut fleet, begin, t_k) = start(sys, s, pki, ids, dir, ns);
    let marks = cycle(sys, s, &fleet, ids, begin, t_k);
    let figures = figures(s, &fleet.double, &fleet.kubelets, ids, &marks);
    if s.dump {
        let name = format!(
            "fleet-requests-{}.txt",
            if sys == System::Lite {
                "lite"
            } else {
                "direct"
            }
        );
        let path = crate::table::path().with_file_name(name);
        measure::dump(&fleet.double.requests(), begin, &path);
        eprintln!("fleet {}: requests in {}", sys.label(), path.display());
    }
    for k in &fleet.kubelets {
        k.signal_stop();
    }
    fleet.kubelets.clear();
    stop_lites(&mut fleet.lites);
    fleet.link.stop();
    Run {
        figures,
        requests: fleet.double.requests(),
        connections: fleet.double.connections(),
        marks,
    }
}

fn start_kubelets(
    sys: System,
    s: &Settings,
    pki: &Pki,
    ids: &[Identity],
    lites: &[Daemon],
    link: &Link,
) -> Vec<Kubelet> {
    let all = || {
        ids.iter()
            .enumerate()
            .map(|(i, n)| {
                let config = client_config(&pki.ca.pem, &n.pair);
                let ep = match sys {
                    System::Direct => {
                        Endpoint::new(link.server_addr(), config, Some(H2_HEALTH_CHECK))
                    }
                    System::Lite => Endpoint::new(lites[i].addr, config, None),
                };
                Kubelet::start(&n.name, ep, s.schedule, 0x9e37_79b9 * (i as u64 + 1))
            })
            .collect()
    };
    match sys {
        // Direct kubelets sit on the fleet's side of the link; those
        // behind lite-apiserver reach theirs over a link never cut.
        System::Direct => link.on_fleet_side(all),
        System::Lite => all(),
    }
}

/// The figures of one run, from the double's log and the kubelets' stats.
fn figures(
    s: &Settings,
    double: &Double,
    kubelets: &[Kubelet],
    ids: &[Identity],
    m: &Marks,
) -> Figures {
    let reqs = double.requests();
    let conns = double.connections();
    let start = Window {
        from: m.begin,
        to: m.kubelets + s.start,
    };
    let heal = Window::new(m.heal, s.heal);
    let mut f = Figures {
        nodes: ids.len(),
        held_steady: measure::held(&conns, m.steady.to),
        steady: measure::breakdown(&reqs, m.steady),
        steady_secs: m.steady.secs(),
        start: measure::breakdown(&reqs, start),
        start_secs: start.secs(),
        start_handshakes: measure::handshakes(&conns, start).0,
        heal: measure::breakdown(&reqs, heal),
        heal_secs: heal.secs(),
        heal_peak: measure::peak_per_sec(&reqs, heal),
        ..Figures::default()
    };
    (f.heal_handshakes, f.heal_accepted) = measure::handshakes(&conns, heal);
    convergence(&mut f, &reqs, kubelets, ids, m.heal);
    for k in kubelets {
        client_side(&mut f, &k.node.stats);
    }
    f
}

/// Per node, how long after `heal` its new pod was seen (by its kubelet)
/// and Running (PATCH at the double), and its Lease renewed (PUT at the
/// double); the slowest node of each.
fn convergence(
    f: &mut Figures,
    reqs: &[Recorded],
    kubelets: &[Kubelet],
    ids: &[Identity],
    heal: Instant,
) {
    let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(heal));
    let (mut seen, mut running, mut lease) = (Vec::new(), Vec::new(), Vec::new());
    for (k, n) in kubelets.iter().zip(ids) {
        let pod = format!("p-new-{}", n.name);
        let saw = k.node.stats.pods_seen.lock().unwrap().get(&pod).copied();
        seen.push(since(saw));
        let status = format!("/pods/{pod}/status");
        running.push(since(measure::first_after(reqs, heal, "PATCH", &status)));
        let renewal = format!("/leases/{}?", n.name);
        lease.push(since(measure::first_after(reqs, heal, "PUT", &renewal)));
    }
    f.seen = measure::slowest(&seen);
    f.running = measure::slowest(&running);
    f.lease = measure::slowest(&lease);
}

/// Adds what one kubelet saw.
fn client_side(f: &mut Figures, st: &Stats) {
    f.client_422 += st.streaming_422.load(Ordering::Relaxed);
    f.close_alls += st.close_alls.load(Ordering::Relaxed);
    f.synced_informers += st.synced.lock().unwrap().len();
    for (code, count) in st.statuses.lock().unwrap().iter() {
        *f.client_statuses.entry(*code).or_insert(0) += count;
    }
}
