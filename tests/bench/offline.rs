//! Offline rows: cached GET latency while a 100 MB entry streams from the
//! cache to a slow reader (issue 10), and the wall time of an offline
//! `kubectl create` (issue 9: it must fail fast, not ride client-go's
//! retry loop for 10 s).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load::{self, Conn, Progress};
use crate::report::{row, Row};
use crate::support::daemon::Daemon;
use crate::support::kubectl::{Auth, Kubectl};
use crate::support::pki::Pki;

/// The slow reader: 64 KiB, then a 10 ms pause (about 6.5 MB/s, so a
/// 100 MB answer takes some 16 s: longer than the measurement).
const CHUNK: usize = 64 * 1024;
const PAUSE: Duration = Duration::from_millis(10);

/// Makes sure `d` has an entry of at least `min_bytes` cached: waits for
/// its writer, and when the tee dropped the answer (the store could not
/// keep up: the machine is loaded) runs `relist` again, up to 3 times.
pub fn ensure_cached(d: &Daemon, min_bytes: f64, relist: impl Fn()) -> bool {
    for attempt in 0..3 {
        if attempt > 0 {
            eprintln!("large list: not cached (tee dropped it); listing again");
            relist();
        }
        let dropped = d.metric("lite_apiserver_cache_tee_dropped_total");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if d.metric("lite_apiserver_cache_bytes") >= min_bytes {
                return true;
            }
            if d.metric("lite_apiserver_cache_tee_dropped_total") > dropped {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    false
}

/// Starts the slow reader of `big` on its own thread.
fn slow_reader(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, big: &str) -> Arc<Progress> {
    let progress = Arc::new(Progress::default());
    let (p, config, big) = (progress.clone(), config.clone(), big.to_owned());
    std::thread::spawn(move || {
        let r = Conn::connect(addr, &config)
            .and_then(|mut c| c.slow_get(&big, "kubelet/bench", CHUNK, PAUSE, &p));
        if let Err(e) = r {
            eprintln!("offline: the slow reader failed: {e}");
        }
        p.done.store(true, Ordering::SeqCst);
    });
    progress
}

/// Offline cached GET p50/p99 of `object` on one connection while another
/// streams `big` (cached, `big_bytes` long) to a slow reader. `addr` must
/// be offline already.
pub fn slow_reader_rows(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    object: &str,
    big: &str,
    big_bytes: usize,
    window: Duration,
) -> Vec<Row> {
    let progress = slow_reader(addr, config, big);
    let streaming = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if progress.bytes.load(Ordering::SeqCst) > 4_000_000 {
                break true;
            }
            if progress.done.load(Ordering::SeqCst) || Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let status = progress.status.load(Ordering::SeqCst);
    if !streaming || status != 200 {
        eprintln!("offline: the 100 MB entry did not stream from the cache (status {status})");
        progress.stop.store(true, Ordering::SeqCst);
        return stream_rows(Vec::new(), " (the entry did not stream)");
    }
    let t = Instant::now();
    let lat = latencies_for(addr, config, object, window);
    let secs = t.elapsed().as_secs_f64();
    let requests = lat.len();
    let read = progress.bytes.load(Ordering::SeqCst);
    let whole = progress.done.load(Ordering::SeqCst);
    progress.stop.store(true, Ordering::SeqCst);
    eprintln!(
        "offline: {requests} GETs in {secs:.1} s while the slow reader had {} of {} MB",
        read / 1_000_000,
        big_bytes / 1_000_000
    );
    let note = if whole {
        " (the stream ended before the GETs did)"
    } else {
        ""
    };
    stream_rows(lat, note)
}

/// The two rows of [`slow_reader_rows`]; empty `lat` (no figures) with a
/// `note` saying why.
pub fn stream_rows(mut lat: Vec<Duration>, note: &str) -> Vec<Row> {
    vec![
        row(
            &format!("offline cached GET p50, 100 MB entry streaming to a slow reader{note}"),
            "us",
            None,
            Some(load::percentile_us(&mut lat, 50.0)),
            None,
            None,
        ),
        row(
            &format!("offline cached GET p99, 100 MB entry streaming to a slow reader{note}"),
            "us",
            None,
            Some(load::percentile_us(&mut lat, 99.0)),
            None,
            Some(5_000.0),
        ),
    ]
}

/// Latencies of sequential GETs of `object` on one connection for `window`
/// (empty if a GET fails).
fn latencies_for(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    object: &str,
    window: Duration,
) -> Vec<Duration> {
    let Ok(mut conn) = Conn::connect(addr, config) else {
        return Vec::new();
    };
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < window {
        let t = Instant::now();
        match conn.get(object, "kubelet/bench") {
            Ok((200, _)) => lat.push(t.elapsed()),
            other => {
                eprintln!("offline: a cached GET failed: {other:?}");
                return Vec::new();
            }
        }
    }
    lat
}

/// kubectl pointed at `url` with the node's certificate.
pub fn kubectl(url: &str, pki: &Pki, dir: &Path) -> Option<Kubectl> {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("kubectl not found: its row stays empty");
        return None;
    }
    Some(Kubectl::new(
        url,
        &pki.ca.pem,
        Auth::Cert(pki.node.clone()),
        dir,
    ))
}

fn configmap(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.json"));
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "edge"}, "data": {"k": "v"}});
    std::fs::write(&path, cm.to_string()).unwrap();
    path
}

/// `kubectl create -f NAME.json --validate=false`: (success, wall time,
/// last stderr line).
fn create(k: &Kubectl, dir: &Path, name: &str) -> (bool, Duration, String) {
    let file = configmap(dir, name);
    let t = Instant::now();
    let out = k.run(&[
        "create",
        "-f",
        &file.display().to_string(),
        "--validate=false",
    ]);
    let wall = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or("").to_owned();
    (out.status.success(), wall, last)
}

/// Online: one create, so kubectl's discovery is cached (by the proxy and
/// by kubectl) as it is on a node that has used kubectl before.
pub fn warm_kubectl(k: &Kubectl, dir: &Path) -> bool {
    let (ok, _, err) = create(k, dir, "bench-online");
    if !ok {
        eprintln!("kubectl create online failed: {err}");
    }
    ok
}

/// Offline: the median wall time of `rounds` creates (each should fail
/// fast, naming the outage); no figure without kubectl.
pub fn kubectl_row(k: Option<&Kubectl>, dir: &Path, rounds: usize) -> Row {
    let name = format!(
        "offline `kubectl create -f cm.json --validate=false` wall time (median of {rounds})"
    );
    let Some(k) = k else {
        let note = " (no kubectl, or it failed online)";
        return row(
            &format!("{name}{note}"),
            "ms",
            None,
            None,
            None,
            Some(1_000.0),
        );
    };
    let mut times = Vec::new();
    let mut succeeded = 0;
    for i in 0..rounds {
        let (ok, wall, err) = create(k, dir, &format!("bench-offline-{i}"));
        succeeded += usize::from(ok);
        if i == 0 {
            eprintln!("offline kubectl create: {wall:?}, exit ok={ok}: {err}");
        }
        times.push(wall.as_secs_f64() * 1000.0);
    }
    let note = if succeeded > 0 {
        format!(" ({succeeded} of {rounds} succeeded offline?!)")
    } else {
        String::new()
    };
    row(
        &format!("{name}{note}"),
        "ms",
        None,
        Some(load::median(&mut times)),
        None,
        Some(1_000.0),
    )
}
