//! Silent cut rows (issue 10): the link to the upstream goes silent (the
//! relay freezes: nothing forwarded, nothing accepted, no socket closed)
//! and the bench times, from the freeze:
//! - (a) the first cached answer to a new GET of a cached object (a new
//!   GET is sent every 100 ms, each on a new connection);
//! - (b) the answer to a GET the upstream was holding at the freeze;
//! - (c) the end of a relayed watch, which must be a clean chunked
//!   terminator;
//! - and, once the proxy is offline and the relay thaws, (d) the time until
//!   a client-go-like reflector (LIST, WATCH, re-list when the stream ends)
//!   holds an object created upstream right after the thaw.
//!
//! Goal for each: at most `--health-interval` + 2 s. Each (interval,
//! timeout) pair gets a rig of its own: double -> relay -> lite-apiserver,
//! with `--resume-spread` equal to the interval (the default 5 s at the
//! default interval): held offline watches end spread over that window on
//! purpose when the cloud returns, so a healed fleet does not re-watch in
//! the same second, and a faster rig scales it with the rest.

use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::load::{self, Conn};
use crate::report::{row, Row};
use crate::support::client::Client;
use crate::support::daemon::Daemon;
use crate::support::double::{Double, Opts};
use crate::support::pki::Pki;
use crate::support::reflector::Reflector;
use crate::support::relay::Relay;

const AGENT: &str = "kubelet/bench";
/// Objects (a) and (b) GET, and the relayed watch (c) of.
const NS: &str = "silent";
/// The reflector's collection (d).
const LATE: &str = "/api/v1/namespaces/late/configmaps";

fn object(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/configmaps/{name}")
}

struct Rig {
    double: Double,
    relay: Relay,
    lite: Daemon,
    reflector: Reflector,
    config: Arc<rustls::ClientConfig>,
}

/// Polls `f` every 20 ms for at most `bound`; whether it held.
fn wait_for(bound: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn online(lite: &Daemon, want: bool, bound: Duration) -> bool {
    let want = if want { 1.0 } else { 0.0 };
    wait_for(bound, || {
        lite.metric("lite_apiserver_upstream_online") == want
    })
}

/// Where a GET sent on its own thread says its status and when it came.
type Answer = Receiver<(u16, Instant)>;

/// A GET on a new connection, on its own thread; sends the status and when
/// it came (a GET into silence blocks its thread, not the bench).
fn send_get(rig: &Rig, path: String) -> Answer {
    let (tx, rx) = mpsc::channel();
    let (addr, config) = (rig.lite.addr, rig.config.clone());
    std::thread::spawn(move || {
        let status = Conn::connect(addr, &config)
            .and_then(|mut c| c.get(&path, AGENT))
            .map_or(0, |(s, _)| s);
        let _ = tx.send((status, Instant::now()));
    });
    rx
}

enum WatchNews {
    /// The event for the object the bench applied came through.
    Seen,
    /// The stream ended; clean = with its terminator.
    End { clean: bool, at: Instant },
}

/// A relayed watch of `NS` configmaps from `rv` on its own thread; says
/// when it sees `marker` and when it ends.
fn open_watch(rig: &Rig, rv: u64, marker: String) -> Receiver<WatchNews> {
    let (tx, rx) = mpsc::channel();
    let (addr, config) = (rig.lite.addr, rig.config.clone());
    let path = format!("/api/v1/namespaces/{NS}/configmaps?watch=true&resourceVersion={rv}");
    std::thread::spawn(move || {
        let Ok(mut w) = Conn::connect(addr, &config).and_then(|c| c.watch(&path, AGENT)) else {
            let _ = tx.send(WatchNews::End {
                clean: false,
                at: Instant::now(),
            });
            return;
        };
        let needle = format!("\"name\":\"{marker}\"");
        while let Ok(Some(line)) = w.next_event() {
            if String::from_utf8_lossy(&line).contains(&needle) {
                let _ = tx.send(WatchNews::Seen);
            }
        }
        let _ = tx.send(WatchNews::End {
            clean: w.clean_end,
            at: Instant::now(),
        });
    });
    rx
}

/// Sends a new GET of the cached object every 100 ms from `t0`; the time
/// from `t0` to the first 200.
fn first_new_answer(rig: &Rig, t0: Instant, bound: Duration) -> Option<Duration> {
    let (tx, rx) = mpsc::channel();
    while t0.elapsed() < bound {
        let inner = send_get(rig, object("cached"));
        let tx = tx.clone();
        std::thread::spawn(move || {
            if let Ok((200, at)) = inner.recv() {
                let _ = tx.send(at);
            }
        });
        if let Ok(at) = rx.recv_timeout(Duration::from_millis(100)) {
            return Some(at - t0);
        }
    }
    None
}

/// The relayed watch's clean end, from `t0`, within `deadline`.
fn watch_end(news: &Receiver<WatchNews>, t0: Instant, deadline: Instant) -> Option<Duration> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match news.recv_timeout(left) {
            Ok(WatchNews::Seen) => continue,
            Ok(WatchNews::End { clean: true, at }) => return Some(at - t0),
            Ok(WatchNews::End { clean: false, at }) => {
                eprintln!(
                    "silent: the relayed watch ended {:?} after the freeze WITHOUT a chunked terminator",
                    at - t0
                );
                return None;
            }
            Err(_) => return None,
        }
    }
}

/// Everything online and live before a freeze: the reflector sees a new
/// object, both objects are cached, a relayed watch delivers an event and
/// the upstream holds a GET. Returns the watch and the in-flight GET.
fn prepare(rig: &Rig, n: usize, bound: Duration) -> Option<(Receiver<WatchNews>, Answer)> {
    if !online(&rig.lite, true, bound) {
        eprintln!("silent: lite-apiserver is not online before round {n}");
        return None;
    }
    let ping = format!("ping-{n}");
    rig.double
        .apply("/api/v1", "configmaps", "late", &ping, json!({}));
    if !wait_for(bound, || rig.reflector.view().items.contains_key(&ping)) {
        eprintln!("silent: the reflector did not see {ping} while online");
    }
    let mut c = Conn::connect(rig.lite.addr, &rig.config).ok()?;
    for name in ["cached", "inflight"] {
        if !matches!(c.get(&object(name), AGENT), Ok((200, _))) {
            eprintln!("silent: GET {name} online failed");
            return None;
        }
    }
    let marker = format!("w-{n}");
    let watch = open_watch(rig, rig.double.current_rv(), marker.clone());
    std::thread::sleep(Duration::from_millis(50));
    rig.double
        .apply("/api/v1", "configmaps", NS, &marker, json!({}));
    if !matches!(watch.recv_timeout(bound), Ok(WatchNews::Seen)) {
        eprintln!("silent: the relayed watch did not deliver {marker} while online");
        return None;
    }
    let needle = format!("GET {}", object("inflight"));
    let before = rig.double.delayed().len();
    rig.double.delay_matching(&needle, 120_000);
    let inflight = send_get(rig, object("inflight"));
    let held = wait_for(bound, || rig.double.delayed().len() > before);
    rig.double.delay_matching(&needle, 0);
    if !held {
        eprintln!("silent: the in-flight GET did not reach the upstream");
        return None;
    }
    Some((watch, inflight))
}

/// One round: [(a), (b), (c), (d)], None where the bound ran out.
fn round(rig: &Rig, n: usize, bound: Duration) -> [Option<Duration>; 4] {
    let Some((watch, inflight)) = prepare(rig, n, bound) else {
        return [None; 4];
    };
    rig.relay.freeze();
    let t0 = Instant::now();
    let deadline = t0 + bound;
    let a = first_new_answer(rig, t0, bound);
    let b = match inflight.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok((200, at)) => Some(at - t0),
        Ok((status, at)) => {
            eprintln!(
                "silent: the in-flight GET got {status} {:?} after the freeze",
                at - t0
            );
            None
        }
        Err(_) => None,
    };
    let c = watch_end(&watch, t0, deadline);
    if !online(&rig.lite, false, bound) {
        eprintln!("silent: lite-apiserver did not go offline within {bound:?}");
    }
    rig.relay.thaw();
    let t1 = Instant::now();
    let late = format!("late-{n}");
    rig.double
        .apply("/api/v1", "configmaps", "late", &late, json!({}));
    let d =
        wait_for(bound, || rig.reflector.view().items.contains_key(&late)).then(|| t1.elapsed());
    [a, b, c, d]
}

fn start(dir: &Path, pki: &Pki, interval: u64, timeout: u64) -> Rig {
    let config = load::client_config(&pki.ca.pem, &pki.node.cert, &pki.node.key);
    let double = Double::start(pki, Opts::default());
    double.set_recording(false);
    for name in ["cached", "inflight"] {
        double.apply(
            "/api/v1",
            "configmaps",
            NS,
            name,
            json!({"data": {"payload": "x".repeat(1800)}}),
        );
    }
    let relay = Relay::start(double.addr());
    let mut args = vec!["--server".to_owned(), relay.url()];
    args.extend(pki.proxy_flags());
    args.extend(["--cache-agents".to_owned(), "*".to_owned()]);
    args.extend(["--health-interval".to_owned(), interval.to_string()]);
    args.extend(["--upstream-timeout".to_owned(), timeout.to_string()]);
    args.extend(["--resume-spread".to_owned(), format!("{interval}s")]);
    let lite = Daemon::start(
        &dir.join(format!("cache-silent-{interval}-{timeout}")),
        &args,
    );
    let client = Client::new(lite.addr, &pki.ca.pem, Some(&pki.node));
    let reflector = Reflector::start(client, LATE, &[("User-Agent", AGENT)]);
    Rig {
        double,
        relay,
        lite,
        reflector,
        config,
    }
}

/// The four rows for `--health-interval interval --upstream-timeout
/// timeout`, medians over `rounds`.
pub fn rows(dir: &Path, pki: &Pki, interval: u64, timeout: u64, rounds: usize) -> Vec<Row> {
    let rig = start(dir, pki, interval, timeout);
    let bound = Duration::from_secs(2 * (interval + timeout) + 10);
    let mut samples: [Vec<Option<Duration>>; 4] = Default::default();
    for n in 0..rounds {
        eprintln!(
            "silent cut: interval {interval} s, timeout {timeout} s, round {}",
            n + 1
        );
        let r = round(&rig, n, bound);
        rig.relay.thaw();
        for (all, one) in samples.iter_mut().zip(r) {
            all.push(one);
        }
    }
    let names = [
        "first cached answer to a new GET",
        "answer to the GET in flight",
        "relayed watch ended (clean terminator)",
        "after the thaw: re-watching client has a new upstream object",
    ];
    let budget = Some((interval as f64 + 2.0) * 1000.0);
    names
        .iter()
        .zip(samples)
        .map(|(name, all)| {
            let missed = all.iter().filter(|s| s.is_none()).count();
            let mut ms: Vec<f64> = all
                .iter()
                .map(|s| s.unwrap_or(bound).as_secs_f64() * 1000.0)
                .collect();
            let note = if missed > 0 {
                format!(
                    " ({missed} of {rounds} rounds not within {} s)",
                    bound.as_secs()
                )
            } else {
                String::new()
            };
            row(
                &format!("silent cut (interval {interval} s, timeout {timeout} s): {name}{note}"),
                "ms",
                None,
                Some(load::median(&mut ms)),
                None,
                budget,
            )
        })
        .collect()
}
