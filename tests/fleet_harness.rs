//! The fleet bench's pieces (tests/bench/fleet/), checked quickly: the
//! double's streaming lists and connection log, the window arithmetic,
//! and one fake kubelet against the double directly and through a real
//! lite-apiserver. The bench itself (`cargo bench --bench fleet`) is not
//! run here.

#[path = "support/mod.rs"]
mod support;

#[allow(dead_code)]
#[path = "bench/fleet/http.rs"]
mod http;
#[allow(dead_code)]
#[path = "bench/fleet/informer.rs"]
mod informer;
#[allow(dead_code)]
#[path = "bench/fleet/kubelet.rs"]
mod kubelet;
#[allow(dead_code)]
#[path = "bench/fleet/link.rs"]
mod link;
#[allow(dead_code)]
#[path = "bench/fleet/loops.rs"]
mod loops;
#[allow(dead_code)]
#[path = "bench/fleet/measure.rs"]
mod measure;
#[allow(dead_code)]
#[path = "bench/fleet/opts.rs"]
mod opts;
#[allow(dead_code)]
#[path = "bench/fleet/rig.rs"]
mod rig;
#[allow(dead_code)]
#[path = "bench/fleet/table.rs"]
mod table;

use std::time::{Duration, Instant};

use http::Endpoint;
use kubelet::{Kubelet, Schedule, NS};
use support::daemon::Daemon;
use support::double::{Double, Opts, Recorded};
use support::netns::NetNs;
use support::pki::Pki;

const KUBELET: (&str, &str) = ("User-Agent", kubelet::USER_AGENT);

fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}:\n{}",
            why()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fleet double with one node's world.
fn fleet_double(name: &str) -> (std::path::PathBuf, Pki, Double, Vec<rig::Identity>) {
    let dir = support::temp_dir(name);
    let pki = Pki::generate(&dir.join("pki"));
    let double = Double::start(
        &pki,
        Opts {
            empty: true,
            ..Opts::default()
        },
    );
    let ids = rig::identities(&pki, 1);
    rig::seed(&double, &ids);
    (dir, pki, double, ids)
}

#[test]
fn double_streaming_list_ends_initial_events_with_the_annotated_bookmark() {
    let (_dir, pki, double, _) = fleet_double("fleet-streaming");
    let client = support::client::Client::new(double.addr(), &pki.ca.pem, Some(&pki.node));
    let path = format!("/api/v1/namespaces/{NS}/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=5");
    let mut s = client.open("GET", &path, &[KUBELET], b"").unwrap();
    assert_eq!(s.status, 200);
    let mut names = Vec::new();
    loop {
        let line = s
            .next_line(Duration::from_secs(5))
            .unwrap()
            .expect("an event");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        let meta = &event["object"]["metadata"];
        if event["type"] == "BOOKMARK" {
            assert_eq!(
                meta["annotations"]["k8s.io/initial-events-end"], "true",
                "{line}"
            );
            assert_eq!(meta["resourceVersion"], double.current_rv().to_string());
            break;
        }
        assert_eq!(event["type"], "ADDED", "{line}");
        names.push(meta["name"].as_str().unwrap().to_owned());
    }
    names.sort();
    assert_eq!(names, ["app-cfg", "kube-root-ca.crt"]);
}

#[test]
fn double_logs_connections_and_request_times() {
    let (_dir, pki, double, _) = fleet_double("fleet-conns");
    let before = Instant::now();
    let client = support::client::Client::new(double.addr(), &pki.ca.pem, Some(&pki.node));
    let r = client.get("/readyz", &[KUBELET]);
    assert_eq!(r.status, 200);
    // The client closes its connection after one request: wait for the
    // double to notice.
    wait(
        "the connection to be closed",
        Duration::from_secs(10),
        || double.open_connections() == 0,
        || format!("{:?}", double.connections()),
    );
    let conns = double.connections();
    assert_eq!(conns.len(), 1, "{conns:?}");
    let c = conns[0];
    assert!(c.opened >= before && c.first_request.is_some_and(|t| t >= c.opened));
    assert!(c.closed.is_some_and(|t| Some(t) >= c.first_request));
    let reqs = double.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].at >= c.opened && Some(reqs[0].at) <= c.closed);
    assert_eq!(measure::held(&conns, c.first_request.unwrap()), 1);
    assert_eq!(measure::held(&conns, c.closed.unwrap()), 0);
}

fn recorded(method: &str, target: &str, at: Instant) -> Recorded {
    Recorded {
        method: method.into(),
        target: target.into(),
        user: None,
        cn: None,
        cert_sha: None,
        authorization: None,
        user_agent: None,
        accept: None,
        headers: Vec::new(),
        at,
    }
}

#[test]
fn windows_count_requests_by_kind_and_find_the_busiest_second() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let reqs = [
        recorded("GET", "/readyz", ms(0)),
        recorded("GET", "/healthz", ms(100)),
        recorded("GET", "/livez", ms(200)),
        recorded(
            "GET",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1&limit=500&resourceVersion=0",
            ms(1100),
        ),
        recorded(
            "GET",
            "/api/v1/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
            ms(1200),
        ),
        recorded("GET", "/api/v1/pods?watch=true&resourceVersion=5", ms(1300)),
        recorded("GET", "/api/v1/nodes/edge-1", ms(1400)),
        recorded(
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1?timeout=10s",
            ms(1500),
        ),
        recorded("GET", "/readyz", ms(5000)),
    ];
    let w = measure::Window::new(t0, Duration::from_secs(2));
    let b = measure::breakdown(&reqs, w);
    assert_eq!((b.total, b.readyz, b.healthz, b.livez), (8, 1, 1, 1));
    assert_eq!(
        (b.lists, b.watches, b.streaming, b.gets, b.writes),
        (1, 2, 1, 1, 1)
    );
    assert_eq!(measure::peak_per_sec(&reqs, w), 5);
    let lease = measure::first_after(&reqs, ms(1), "PUT", "/leases/edge-1?");
    assert_eq!(lease, Some(ms(1500)));
    assert_eq!(
        measure::first_after(&reqs, ms(1), "PUT", "/leases/edge-2?"),
        None
    );
    let d = |s| Some(Duration::from_secs(s));
    assert_eq!(measure::slowest(&[d(1), d(3), d(2)]), (d(3), 3));
    assert_eq!(measure::slowest(&[d(1), None]), (None, 1));
}

fn fast() -> Schedule {
    Schedule {
        lease_every: Duration::from_millis(500),
        status_every: Duration::from_millis(500),
        report_every: Duration::from_secs(300),
    }
}

/// Waits until the kubelet has synced its 8 informers, renewed its Lease
/// (seen at the double), and reported its initial pod Running; then
/// creates a pod for it and waits until it is seen and Running.
fn check_kubelet(double: &Double, k: &Kubelet, node: &str) {
    let stats = &k.node.stats;
    let why = || {
        format!(
            "synced {:?}; log:\n{}",
            stats.synced.lock().unwrap(),
            stats.log.lock().unwrap().join("\n")
        )
    };
    wait(
        "8 informers synced",
        Duration::from_secs(30),
        || stats.synced.lock().unwrap().len() == 8,
        why,
    );
    let lease = format!("/leases/{node}?");
    wait(
        "a Lease renewal at the double",
        Duration::from_secs(10),
        || {
            double.requests().iter().any(|r| {
                r.method == "PUT"
                    && r.target.contains(&lease)
                    && r.cn.as_deref() == Some(&format!("system:node:{node}"))
            })
        },
        why,
    );
    let init = format!("p-init-{node}");
    wait(
        "the initial pod Running",
        Duration::from_secs(10),
        || stats.pods_running.lock().unwrap().contains_key(&init),
        why,
    );
    let name = format!("p-new-{node}");
    double.apply(
        "/api/v1",
        "pods",
        NS,
        &name,
        support::world::pod(NS, &name, node, 0),
    );
    wait(
        "the new pod Running",
        Duration::from_secs(15),
        || stats.pods_running.lock().unwrap().contains_key(&name),
        why,
    );
    assert!(stats.pods_seen.lock().unwrap().contains_key(&name));
    let patched = format!("/pods/{name}/status");
    assert!(double
        .requests()
        .iter()
        .any(|r| r.method == "PATCH" && r.target.contains(&patched)));
}

#[test]
fn fake_kubelet_direct_streams_its_lists_and_heartbeats() {
    let (_dir, pki, double, ids) = fleet_double("fleet-direct");
    let config = rig::client_config(&pki.ca.pem, &ids[0].pair);
    let ep = Endpoint::new(double.addr(), config, Some(rig::H2_HEALTH_CHECK));
    let k = Kubelet::start(&ids[0].name, ep, fast(), 7);
    check_kubelet(&double, &k, &ids[0].name);
    let stats = &k.node.stats;
    assert_eq!(
        stats
            .streaming_422
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let reqs = double.requests();
    let lists = reqs
        .iter()
        .filter(|r| r.target.contains("limit=500"))
        .count();
    let streaming = reqs
        .iter()
        .filter(|r| r.target.contains("sendInitialEvents=true"))
        .count();
    assert_eq!(
        (lists, streaming),
        (0, 8),
        "every informer starts with a streaming list that works"
    );
    // kubelet's closeAllConns ends every watch; each informer watches again.
    let watches = || {
        double
            .requests()
            .iter()
            .filter(|r| r.target.contains("watch=true"))
            .count()
    };
    let before = watches();
    k.node.close_all();
    wait(
        "8 new watches",
        Duration::from_secs(20),
        || watches() >= before + 8,
        || format!("{} -> {}", before, watches()),
    );
    k.stop();
}

#[test]
fn fake_kubelet_through_lite_apiserver() {
    let (dir, pki, double, ids) = fleet_double("fleet-lite");
    let mut args = vec!["--server".to_owned(), double.url()];
    args.extend(pki.trust_flags());
    args.extend([
        "--identity".to_owned(),
        ids[0].pair.identity_flag(),
        "--health-interval".into(),
        "1".into(),
    ]);
    let lite = Daemon::start(&dir.join("cache"), &args);
    let config = rig::client_config(&pki.ca.pem, &ids[0].pair);
    let k = Kubelet::start(
        &ids[0].name,
        Endpoint::new(lite.addr, config, None),
        fast(),
        11,
    );
    check_kubelet(&double, &k, &ids[0].name);
    k.stop();
}

/// Requests of `reqs` in `[from, to)`, counted here, apart from
/// [`measure`].
fn count_in(reqs: &[Recorded], w: measure::Window, keep: impl Fn(&Recorded) -> bool) -> u64 {
    reqs.iter()
        .filter(|r| r.at >= w.from && r.at < w.to && keep(r))
        .count() as u64
}

fn is_probe(r: &Recorded) -> bool {
    ["/readyz", "/healthz", "/livez"]
        .iter()
        .any(|p| r.target == *p || r.target.starts_with(&format!("{p}?")))
}

/// The figures of `run` against the double's own logs.
fn check_counts(run: &rig::Run, s: &opts::Settings) {
    let (f, reqs, m) = (&run.figures, &run.requests, &run.marks);
    let all = |_: &Recorded| true;
    let start = measure::Window {
        from: m.begin,
        to: m.kubelets + s.start,
    };
    let heal = measure::Window::new(m.heal, s.heal);
    assert_eq!(f.start.total, count_in(reqs, start, all), "start");
    assert_eq!(f.steady.total, count_in(reqs, m.steady, all), "steady");
    assert_eq!(f.heal.total, count_in(reqs, heal, all), "heal");
    assert_eq!(f.steady.probes(), count_in(reqs, m.steady, is_probe));
    assert_eq!(f.heal.probes(), count_in(reqs, heal, is_probe));
    let steady_lists = f.steady.lists + f.steady.watches + f.steady.gets;
    let steady_rest = f.steady.writes + f.steady.other + f.steady.probes();
    assert_eq!(steady_lists + steady_rest, f.steady.total, "kinds add up");
    assert!(
        (f.steady_secs - s.steady.as_secs_f64()).abs() < 0.5,
        "steady window {} s",
        f.steady_secs
    );
    assert!(f.heal_peak >= 1 && f.heal_peak <= f.heal.total);
    let seconds = heal.secs().ceil() as u64;
    assert!(
        f.heal_peak * seconds >= f.heal.total,
        "the peak second is the busiest"
    );
    let open = run
        .connections
        .iter()
        .filter(|c| c.opened <= m.steady.to && c.closed.is_none_or(|t| t > m.steady.to))
        .count();
    assert_eq!(f.held_steady, open, "connections held");
}

/// Per node, the Lease renewals in the steady window, at the double and
/// with the node's identity, are what the schedule makes.
fn check_leases(run: &rig::Run, s: &opts::Settings, ids: &[rig::Identity]) {
    let w = run.marks.steady;
    let every = s.schedule.lease_every.as_secs_f64();
    let most = (w.secs() / every).ceil() as u64 + 1;
    let least = (w.secs() / (every * 2.0)) as u64;
    for n in ids {
        let lease = format!("/leases/{}?", n.name);
        let cn = format!("system:node:{}", n.name);
        let puts = count_in(&run.requests, w, |r| {
            r.method == "PUT" && r.target.contains(&lease) && r.cn.as_deref() == Some(&cn)
        });
        assert!(
            (least..=most).contains(&puts),
            "{}: {puts} Lease renewals in {:.1} s (schedule: one per {every} s)",
            n.name,
            w.secs()
        );
    }
}

/// Nothing reached the double while the link was down (the cut is real),
/// and the fleet talked to it again after.
fn check_cut(run: &rig::Run) {
    let m = &run.marks;
    let down = measure::Window {
        from: m.cut + Duration::from_millis(300),
        to: m.heal,
    };
    let during: Vec<&Recorded> = run
        .requests
        .iter()
        .filter(|r| r.at >= down.from && r.at < down.to)
        .collect();
    let shown: Vec<String> = during
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert!(
        during.is_empty(),
        "requests crossed the cut link: {shown:?}"
    );
    assert!(
        run.figures.heal.total > 0,
        "nothing after the link returned"
    );
}

/// Two nodes through both systems, with short windows, a short cut and a
/// fast schedule, over `ns`'s veth link or (None) a relay: the harness's
/// figures agree with the double's own logs, the link was really cut, and
/// the fleet got through every window.
fn short_run(name: &str, ns: Option<&NetNs>, cut_kind: opts::CutKind) {
    let dir = support::temp_dir(name);
    let mut pki = Pki::generate(&dir.join("pki"));
    if let Some(ns) = ns {
        pki.reissue_upstream_with_ips(&[ns.upstream_host.into()]);
    }
    let ids = rig::identities(&pki, 2);
    let s = opts::Settings {
        nodes: ids.len(),
        start: Duration::from_secs(8),
        steady: Duration::from_secs(6),
        cut: Duration::from_secs(4),
        heal: Duration::from_secs(12),
        cut_kind,
        link: if ns.is_some() {
            opts::LinkKind::Netns
        } else {
            opts::LinkKind::Relay
        },
        systems: vec![opts::System::Direct, opts::System::Lite],
        lite_args: vec!["--health-interval".into(), "1".into()],
        dump: false,
        binary: support::daemon::binary(),
        schedule: fast(),
    };
    let mut figures = Vec::new();
    for sys in s.systems.clone() {
        let sub = dir.join(format!("{sys:?}"));
        std::fs::create_dir_all(&sub).unwrap();
        let run = rig::run_full(sys, &s, &pki, &ids, &sub, ns);
        let f = &run.figures;
        eprintln!("{sys:?}: {f:?}");
        check_counts(&run, &s);
        check_leases(&run, &s, &ids);
        check_cut(&run);
        assert_eq!(
            f.synced_informers,
            8 * ids.len(),
            "{sys:?}: informers synced"
        );
        if sys == opts::System::Direct {
            // Straight to the double: one streaming list per informer at
            // start, each watch a connection of its own.
            assert_eq!(f.start.streaming, 8 * ids.len() as u64, "{:?}", f.start);
            assert_eq!(f.start.probes(), 0);
            assert!(f.held_steady >= 8 * ids.len(), "held {}", f.held_steady);
        }
        if let (Some(t), _) = f.seen {
            assert!(t <= s.heal, "seen after the window: {t:?}");
        }
        figures.push(run.figures);
    }
    let (d, l) = (&figures[0], &figures[1]);
    let table = table::render(&s, d, l);
    eprintln!("{table}");
    let held = format!(
        "| upstream connections held (steady) | {} | {} |",
        d.held_steady, l.held_steady
    );
    assert!(table.contains("| per fleet of 2 |"), "{table}");
    assert!(table.contains(&held), "{table}");
}

/// Over the relay, a reset: after a silent cut shorter than two heartbeat
/// timeouts (20 s), a direct kubelet on the relay is still waiting on dead
/// connections when a short heal window ends (the bench's 60 s cut
/// outlasts them).
#[test]
fn a_short_fleet_run_over_a_relay_measures_what_the_double_saw() {
    short_run("fleet-run-relay", None, opts::CutKind::Reset);
}

/// Over a namespace's veth link taken down (silence); skipped where
/// namespaces cannot be made.
#[test]
fn a_short_fleet_run_over_a_veth_link_measures_what_the_double_saw() {
    let test = "a_short_fleet_run_over_a_veth_link_measures_what_the_double_saw";
    let Some(ns) = support::netns::or_skip(test) else {
        return;
    };
    short_run("fleet-run-netns", Some(&ns), opts::CutKind::Silence);
}
