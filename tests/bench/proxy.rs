//! `cargo bench --bench proxy [-- --quick]`: footprint and latency of
//! lite-apiserver side by side with a direct connection to the upstream
//! double and with nginx as a TLS reverse proxy, in one run.
//!
//! Systems are measured in alternating rounds (direct, lite, nginx, direct,
//! ...) so machine noise hits all three alike; the report gives medians and
//! ratios. It is a benchmark, never a pass/fail test: budgets are printed
//! next to the numbers, not asserted.
//!
//! Sections: latency and throughput; instructions per GET under callgrind
//! ([`callgrind`]); a 100 MB LIST; 100 watches under load; offline answers,
//! a 100 MB entry streamed to a slow reader and an offline `kubectl
//! create` ([`offline`]); silent cuts of the upstream link ([`silent`]);
//! offline cold start; the list patcher ([`patch`]).
//!
//! Everything it starts is stopped on exit, even on failure (children are
//! killed on drop, nginx's whole process group is stopped), and the last
//! thing it does is check that no process it started is still alive
//! ([`procs`]): an `error:` line names any that is.

#[path = "../support/mod.rs"]
mod support;

mod callgrind;
mod load;
mod nginx;
mod offline;
mod patch;
mod procs;
mod report;
mod silent;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::daemon::Daemon;
use support::double::{Double, Opts};
use support::pki::Pki;

use report::row;

/// GETs in the measured callgrind run (fixed, quick or not, so the
/// figure is the same in both).
const CALLGRIND_GETS: usize = 2_000;

/// (health interval, upstream timeout, rounds) of the silent-cut rows: the
/// defaults, and the fast flips the silence tests use.
fn silent_sets(s: &Settings) -> [(u64, u64, usize); 2] {
    if s.quick {
        [(5, 3, 1), (1, 1, 1)]
    } else {
        [(5, 3, 3), (1, 1, 3)]
    }
}

struct Settings {
    quick: bool,
    rounds: usize,
    requests: usize,
    tput_secs: f64,
    watch_secs: u64,
}

/// (VmRSS, VmHWM) in KiB of a process.
fn rss_kib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn lite_args(double: &Double, pki: &Pki) -> Vec<String> {
    let mut args = vec!["--server".to_owned(), double.url()];
    args.extend(pki.proxy_flags());
    args.extend(["--cache-agents", "*", "--health-interval", "1"].map(String::from));
    args
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs bench
    // targets without it, and a benchmark is not a test: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark skipped outside `cargo bench` (run tests/bench/run.sh)");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let s = if quick {
        Settings {
            quick,
            rounds: 3,
            requests: 300,
            tput_secs: 1.0,
            watch_secs: 5,
        }
    } else {
        Settings {
            quick,
            rounds: 7,
            requests: 1000,
            tput_secs: 2.0,
            watch_secs: 20,
        }
    };
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Error)
        .try_init();
    // Whatever happens, every process the bench started must be gone when
    // it ends: the drops stop them (on a panic too), and this checks.
    let outcome = std::panic::catch_unwind(|| run(&s));
    let clean = procs::check_none_left();
    if outcome.is_err() || !clean {
        std::process::exit(1);
    }
}

/// The whole benchmark.
fn run(s: &Settings) {
    let dir = std::env::temp_dir().join(format!("lite-apiserver-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::generate(&dir.join("pki"));
    let mut double = Double::start(&pki, Opts::default());
    double.set_recording(false);
    double.apply(
        "/api/v1",
        "configmaps",
        "edge",
        "bench-2k",
        json!({"data": {"payload": "x".repeat(1800)}}),
    );
    let object = "/api/v1/namespaces/edge/configmaps/bench-2k";
    let mut lite = Daemon::start(&dir.join("cache"), &lite_args(&double, &pki));
    let nginx = nginx::start(
        &dir.join("nginx"),
        &pki,
        double.addr(),
        nginx::Mode::Workers(2),
        &[],
        Duration::from_secs(10),
    );
    if nginx.is_none() {
        eprintln!("nginx not found or did not start: its column stays empty (tests/bench/run.sh installs it)");
    }
    let config = load::client_config(&pki.ca.pem, &pki.node.cert, &pki.node.key);
    let mut systems: Vec<(&str, SocketAddr)> = vec![("direct", double.addr()), ("lite", lite.addr)];
    if let Some(n) = &nginx {
        systems.push(("nginx", n.addr));
    }
    let mut rows = Vec::new();
    let lite_pid = lite.pid().unwrap();
    let (idle_rss, _) = rss_kib(lite_pid);

    if std::env::args().any(|a| a == "--callgrind") {
        let (lite_instr, nginx_instr) = callgrind::instructions_per_get(
            &callgrind::Setup {
                dir: &dir,
                pki: &pki,
                double: &double,
                config: &config,
                object,
            },
            CALLGRIND_GETS,
        );
        // Profiling mode: only this row; the outputs are kept for
        // callgrind_annotate (build with CARGO_PROFILE_BENCH_STRIP=false
        // CARGO_PROFILE_BENCH_DEBUG=line-tables-only for symbols).
        let keep = std::path::PathBuf::from("target/bench/callgrind");
        let _ = std::fs::create_dir_all(&keep);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with("callgrind-") {
                // (and the .dhat files of LITE_VALGRIND_TOOL=dhat)
                let _ = std::fs::copy(e.path(), keep.join(&name));
            }
        }
        println!(
            "instructions per GET: lite {lite_instr:?}, nginx {nginx_instr:?}; outputs in {}",
            keep.display()
        );
        drop(lite);
        drop(nginx);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    // 1. Latency of a small GET at concurrency 1.
    eprintln!("latency: {} rounds x {} requests", s.rounds, s.requests);
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); systems.len()];
    for _ in 0..s.rounds {
        for (i, (_, addr)) in systems.iter().enumerate() {
            lat[i].extend(load::latencies(*addr, &config, object, s.requests));
        }
    }
    let pct = |i: usize, p: f64, lat: &mut Vec<Vec<Duration>>| {
        lat.get_mut(i).map(|l| load::percentile_us(l, p))
    };
    for (p, name) in [
        (50.0, "GET 2 KB p50 (c=1)"),
        (90.0, "GET 2 KB p90 (c=1)"),
        (99.0, "GET 2 KB p99 (c=1)"),
    ] {
        rows.push(row(
            name,
            "us",
            pct(0, p, &mut lat),
            pct(1, p, &mut lat),
            pct(2, p, &mut lat),
            None,
        ));
    }
    let direct_p50 = pct(0, 50.0, &mut lat).unwrap_or(f64::NAN);
    rows.push(row(
        "added latency p50 (via - direct)",
        "us",
        None,
        pct(1, 50.0, &mut lat).map(|v| v - direct_p50),
        pct(2, 50.0, &mut lat).map(|v| v - direct_p50),
        Some(150.0),
    ));

    // 2. Throughput at concurrency 16 and 64, and what each request cost
    // the proxy in CPU meanwhile (user + system, every thread or worker:
    // kernel work callgrind does not count). The direct column's server
    // is the bench process itself: no CPU figure.
    let proxy_cpu = |i: usize| -> f64 {
        match i {
            1 => cpu_secs(lite_pid),
            2 => nginx
                .as_ref()
                .map_or(0.0, |n| n.pids().into_iter().map(cpu_secs).sum()),
            _ => 0.0,
        }
    };
    for c in [16, 64] {
        eprintln!("throughput: c={c}");
        let mut rps: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
        let mut cost: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
        for _ in 0..s.rounds.div_ceil(3) {
            for (i, (_, addr)) in systems.iter().enumerate() {
                let (r, us) = load::throughput(
                    *addr,
                    &config,
                    object,
                    c,
                    Duration::from_secs_f64(s.tput_secs),
                    &|| proxy_cpu(i),
                );
                rps[i].push(r);
                cost[i].push(us);
            }
        }
        let med = |i: usize, v: &mut Vec<Vec<f64>>| v.get_mut(i).map(|v| load::median(v));
        rows.push(row(
            &format!("GET 2 KB throughput (c={c})"),
            "req/s",
            med(0, &mut rps),
            med(1, &mut rps),
            med(2, &mut rps),
            None,
        ));
        rows.push(row(
            &format!("proxy CPU per GET at c={c} (user + system)"),
            "us",
            None,
            med(1, &mut cost),
            med(2, &mut cost),
            None,
        ));
    }

    if std::env::args().any(|a| a == "--tput") {
        // Iterating on the request path: latency and throughput only.
        report::report(&rows, s.quick);
        return;
    }

    // 2b. Instructions per GET under callgrind (fixed inputs, repeatable).
    let (lite_instr, nginx_instr) = callgrind::instructions_per_get(
        &callgrind::Setup {
            dir: &dir,
            pki: &pki,
            double: &double,
            config: &config,
            object,
        },
        CALLGRIND_GETS,
    );
    rows.push(row(
        &format!("instructions per proxied 2 KB GET (callgrind, {CALLGRIND_GETS} GETs minus 0)"),
        "instr",
        None,
        lite_instr,
        nginx_instr,
        nginx_instr,
    ));

    // 3. A 100 MB LIST through a fresh lite-apiserver into its cache.
    eprintln!("large list: seeding 100 MB");
    double.seed_pods("big", "edge-1", 20_000, 4_700);
    let big = "/api/v1/namespaces/big/pods";
    let fresh = Daemon::start(&dir.join("cache-big"), &lite_args(&double, &pki));
    let time_list = |addr: SocketAddr| {
        let mut c = load::Conn::connect(addr, &config).unwrap();
        let t = Instant::now();
        let (status, len) = c.get(big, "kubelet/bench").unwrap();
        assert_eq!(status, 200);
        (t.elapsed().as_secs_f64() * 1000.0, len)
    };
    let (direct_ms, bytes) = time_list(double.addr());
    let (lite_ms, _) = time_list(fresh.addr);
    let nginx_ms = nginx.as_ref().map(|n| time_list(n.addr).0);
    let (_, big_hwm) = rss_kib(fresh.pid().unwrap());
    // `fresh` is kept: offline, it streams the 100 MB entry to a slow
    // reader while it answers the small object (section 5).
    let _ =
        load::Conn::connect(fresh.addr, &config).and_then(|mut c| c.get(object, "kubelet/bench"));
    let big_cached = offline::ensure_cached(&fresh, bytes as f64 * 0.9, || {
        time_list(fresh.addr);
    });
    eprintln!("large list: {} MB", bytes / 1_000_000);
    rows.push(row(
        &format!("LIST {} MB: time to last byte", bytes / 1_000_000),
        "ms",
        Some(direct_ms),
        Some(lite_ms),
        nginx_ms,
        None,
    ));
    rows.push(row(
        "peak RSS while the large LIST streams into the cache",
        "KiB",
        None,
        Some(big_hwm),
        None,
        Some(16_384.0),
    ));

    // 4. 100 watches + 500 GET/s.
    eprintln!("watches: 100 open + 500 GET/s for {} s", s.watch_secs);
    let rv = double.current_rv();
    let received: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut watchers = Vec::new();
    for _ in 0..100 {
        let (config, received, stop) = (config.clone(), received.clone(), stop.clone());
        let addr = lite.addr;
        watchers.push(std::thread::spawn(move || {
            let conn = load::Conn::connect(addr, &config).unwrap();
            let mut w = conn
                .watch(
                    &format!("/api/v1/namespaces/watch/configmaps?watch=true&resourceVersion={rv}"),
                    "kubelet/bench",
                )
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(line)) = w.next_event() else {
                    break;
                };
                let text = String::from_utf8_lossy(&line);
                if let Some(sent) = text
                    .split("\"sent-ns\":\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .and_then(|v| v.parse::<u128>().ok())
                {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos();
                    received
                        .lock()
                        .unwrap()
                        .push(Duration::from_nanos(now.saturating_sub(sent) as u64));
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let cpu_before = cpu_secs(lite_pid);
    let gets = {
        let (config, stop) = (config.clone(), stop.clone());
        let addr = lite.addr;
        std::thread::spawn(move || {
            let mut c = load::Conn::connect(addr, &config).unwrap();
            let start = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = c.get(object, "kubelet/bench");
                n += 1;
                let due = start + Duration::from_micros(n * 2_000);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            n
        })
    };
    let started = Instant::now();
    let mut max_rss: f64 = 0.0;
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(s.watch_secs) {
        let sent = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        double.apply("/api/v1", "configmaps", "watch", &format!("cm-{}", i % 20), json!({"metadata": {"annotations": {"sent-ns": sent.to_string()}}, "data": {"i": i.to_string()}}));
        i += 1;
        max_rss = max_rss.max(rss_kib(lite_pid).0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu = cpu_secs(lite_pid) - cpu_before;
    stop.store(true, Ordering::Relaxed);
    let served = gets.join().unwrap_or(0);
    double.apply("/api/v1", "configmaps", "watch", "wake", json!({}));
    for w in watchers {
        let _ = w.join();
    }
    let mut event_lat = received.lock().unwrap().clone();
    rows.push(row(
        "RSS with 100 watches + 500 GET/s",
        "KiB",
        None,
        Some(max_rss),
        None,
        Some(16_384.0),
    ));
    rows.push(row(
        &format!("CPU seconds over that {} s ({} GETs)", s.watch_secs, served),
        "s",
        None,
        Some(cpu),
        None,
        None,
    ));
    rows.push(row(
        "watch event latency p50 (upstream write to client)",
        "us",
        None,
        Some(load::percentile_us(&mut event_lat, 50.0)),
        None,
        None,
    ));
    rows.push(row(
        "watch event latency p99",
        "us",
        None,
        Some(load::percentile_us(&mut event_lat, 99.0)),
        None,
        None,
    ));

    // 5. Offline: the first cached answer after the upstream dies, then
    // cached GET latency.
    eprintln!("offline");
    let mut warm = load::Conn::connect(lite.addr, &config).unwrap();
    warm.get(object, "kubelet/bench").unwrap();
    let kubectl =
        offline::kubectl(&lite.url(), &pki, &dir).filter(|k| offline::warm_kubectl(k, &dir));
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    double.stop();
    let first_answer = loop {
        let mut c = load::Conn::connect(lite.addr, &config).unwrap();
        if let Ok((200, _)) = c.get(object, "kubelet/bench") {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no cached answer"
        );
    };
    rows.push(row(
        "first cached answer after the upstream dies",
        "ms",
        None,
        Some(first_answer.as_secs_f64() * 1000.0),
        None,
        Some(100.0),
    ));
    let mut offline = load::latencies(lite.addr, &config, object, s.requests * s.rounds.min(3));
    rows.push(row(
        "offline cached GET p50",
        "us",
        None,
        Some(load::percentile_us(&mut offline, 50.0)),
        None,
        Some(200.0),
    ));
    rows.push(row(
        "offline cached GET p99",
        "us",
        None,
        Some(load::percentile_us(&mut offline, 99.0)),
        None,
        None,
    ));
    let fresh_offline = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        load::Conn::connect(fresh.addr, &config)
            .and_then(|mut c| c.get(object, "kubelet/bench"))
            .is_ok_and(|(status, _)| status == 200)
    });
    if !big_cached {
        rows.extend(offline::stream_rows(
            Vec::new(),
            " (the 100 MB list was never cached)",
        ));
    } else if fresh_offline {
        rows.extend(offline::slow_reader_rows(
            fresh.addr,
            &config,
            object,
            big,
            bytes,
            Duration::from_secs_f64(if s.quick { 1.5 } else { 4.0 }),
        ));
    } else {
        rows.extend(offline::stream_rows(
            Vec::new(),
            " (no cached answer offline)",
        ));
    }
    drop(fresh);
    rows.push(offline::kubectl_row(kubectl.as_ref(), &dir, 5));

    // 5b. Silent cuts, each (interval, timeout) on a rig of its own.
    for (interval, timeout, rounds) in silent_sets(s) {
        rows.extend(silent::rows(&dir, &pki, interval, timeout, rounds));
    }

    // 6. Cold start while offline (the reboot case), and idle RSS.
    eprintln!("cold start");
    let mut starts = Vec::new();
    let mut cold_rss = f64::NAN;
    for _ in 0..s.rounds.min(5) {
        lite.kill9();
        let t = Instant::now();
        lite.start_again();
        loop {
            if let Ok(mut c) = load::Conn::connect(lite.addr, &config) {
                if let Ok((200, _)) = c.get(object, "kubelet/bench") {
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        starts.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(500));
        cold_rss = rss_kib(lite.pid().unwrap()).0;
    }
    rows.push(row(
        "cold start to first cached answer (offline)",
        "ms",
        None,
        Some(load::median(&mut starts)),
        None,
        Some(50.0),
    ));
    rows.push(row(
        "idle RSS after start",
        "KiB",
        None,
        Some(idle_rss.min(cold_rss)),
        None,
        Some(4_096.0),
    ));
    if let Ok(meta) = std::fs::metadata(support::daemon::binary()) {
        rows.push(row(
            "binary size (host build, stripped)",
            "bytes",
            None,
            Some(meta.len() as f64),
            None,
            None,
        ));
    }

    // 7. The cost of applying one watch event to a cached 2,000-item list
    // (the patcher streams the list; its working buffer is the memory).
    let (patch_us, patch_peak) = patch::patch_cost(if s.quick { 50 } else { 200 });
    rows.push(row(
        "apply 1 event to a 2,000-item cached list",
        "us",
        None,
        Some(patch_us),
        None,
        None,
    ));
    rows.push(row(
        "patcher peak buffer for that (list is 2,000 x ~1.1 KB)",
        "KiB",
        None,
        Some(patch_peak),
        None,
        None,
    ));

    report::report(&rows, s.quick);
    report::summary(&rows);
    drop(lite);
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}
