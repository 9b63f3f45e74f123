//! Instructions per proxied 2 KB GET (issue 11 item 4), counted by
//! `valgrind --tool=callgrind` (repeatable where wall-clock time is not).
//!
//! Each proxy runs twice under callgrind with the same flags and the same
//! keep-alive TLS 1.3 client from the bench: a baseline (start, handshake,
//! `WARM` GETs, close, stop) and the same plus `n` GETs. The difference
//! divided by `n` is the steady-state cost of one GET: start-up, the TLS
//! handshakes (client and upstream), the first GET's cache fill and the
//! shutdown cancel out. Totals count every thread of the process.
//! lite-apiserver runs with `--health-interval 3600` so no probe lands in
//! one run and not the other (with traffic flowing it would not probe
//! anyway); nginx runs as one process (`master_process off`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::load::Conn;
use crate::nginx::{self, Mode};
use crate::support::daemon::{binary, Daemon};
use crate::support::double::Double;
use crate::support::pki::Pki;

/// GETs in both runs before the measured ones (connections up, cache
/// filled, first-use allocations done).
const WARM: usize = 20;

/// The total instruction count in a callgrind output file.
fn total_instructions(out: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(out).ok()?;
    if let Some(total) = text.lines().find(|l| l.trim_end().ends_with(" total")) {
        // strace -c: "% time seconds usecs/call calls [errors] total"
        return total.split_whitespace().nth(3)?.parse().ok();
    }
    let line = text
        .lines()
        .find(|l| l.starts_with("totals:"))
        .or_else(|| text.lines().find(|l| l.starts_with("summary:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `LITE_VALGRIND_TOOL`: `dhat` (allocations) or `strace` (syscalls)
/// instead of callgrind's instructions, while optimising.
fn tool() -> Option<&'static str> {
    match std::env::var("LITE_VALGRIND_TOOL").as_deref() {
        Ok("dhat") => Some("dhat"),
        Ok("strace") => Some("strace"),
        _ => None,
    }
}

/// SIGTERM to the children of `pid`.
fn term_children(pid: u32) {
    let list =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in list.split_whitespace() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", child])
            .status();
    }
    std::thread::sleep(Duration::from_millis(500));
}

fn valgrind(out: &Path) -> Vec<String> {
    if tool() == Some("strace") {
        // Syscalls per GET instead (kernel work callgrind does not see).
        return vec![
            "strace".to_owned(),
            "-f".to_owned(),
            "-c".to_owned(),
            "-o".to_owned(),
            out.display().to_string(),
        ];
    }
    if tool() == Some("dhat") {
        // Allocation profiling while optimising: per-stack allocation
        // counts (dh_view.html), instead of instruction counts.
        return vec![
            "valgrind".to_owned(),
            "--tool=dhat".to_owned(),
            format!("--dhat-out-file={}.dhat", out.display()),
        ];
    }
    vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
    ]
}

/// `WARM + n` GETs of `object` on one keep-alive connection.
fn client(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, object: &str, n: usize) -> bool {
    let Ok(mut conn) = Conn::connect(addr, config) else {
        return false;
    };
    (0..WARM + n).all(|_| matches!(conn.get(object, "kubelet/bench"), Ok((200, _))))
}

/// Whether valgrind runs here.
fn have_valgrind() -> bool {
    std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Everything one run needs.
pub struct Setup<'a> {
    pub dir: &'a Path,
    pub pki: &'a Pki,
    pub double: &'a Double,
    pub config: &'a Arc<rustls::ClientConfig>,
    pub object: &'a str,
}

fn lite_run(s: &Setup, n: usize) -> Option<u64> {
    let out = s.dir.join(format!("callgrind-lite-{n}.out"));
    let mut pre = valgrind(&out);
    let program = PathBuf::from(pre.remove(0));
    pre.push(binary().display().to_string());
    let mut args = vec!["--server".to_owned(), s.double.url()];
    args.extend(s.pki.proxy_flags());
    args.extend(["--cache-agents", "*", "--health-interval", "3600"].map(String::from));
    let cache = s.dir.join(format!("cache-callgrind-{n}"));
    let mut lite = Daemon::start_with(program, pre, &cache, &args);
    let ok = client(lite.addr, s.config, s.object, n);
    std::thread::sleep(Duration::from_secs(1));
    if let Some(tracer) = lite.pid().filter(|_| tool() == Some("strace")) {
        // strace detaches on SIGTERM and writes nothing: stop its tracee.
        term_children(tracer);
    }
    let clean = lite.stop();
    if !ok || !clean {
        eprintln!("callgrind: lite-apiserver run with {n} GETs failed (client ok {ok}, clean exit {clean})");
        return None;
    }
    total_instructions(&out)
}

fn nginx_run(s: &Setup, n: usize) -> Option<u64> {
    let dir = s.dir.join(format!("nginx-callgrind-{n}"));
    let out = s.dir.join(format!("callgrind-nginx-{n}.out"));
    let mut nginx = nginx::start(
        &dir,
        s.pki,
        s.double.addr(),
        Mode::Single,
        &valgrind(&out),
        Duration::from_secs(60),
    )?;
    let ok = client(nginx.addr, s.config, s.object, n);
    // Let it see the close and go idle before the signal (see Nginx::stop).
    std::thread::sleep(Duration::from_secs(1));
    let clean = nginx.stop();
    if !ok || !clean {
        eprintln!("callgrind: nginx run with {n} GETs failed (client ok {ok}, clean exit {clean})");
        return None;
    }
    total_instructions(&out)
}

/// (N-run - baseline) / n.
fn per_get(run: impl Fn(usize) -> Option<u64>, n: usize) -> Option<f64> {
    if tool() == Some("dhat") {
        run(n);
        return None;
    }
    let base = run(0)?;
    let full = run(n)?;
    eprintln!("callgrind: baseline {base} instructions, with {n} GETs {full}");
    Some(full.saturating_sub(base) as f64 / n as f64)
}

/// Instructions per GET for (lite-apiserver, nginx); None where a run
/// failed or the tool is missing.
pub fn instructions_per_get(s: &Setup, n: usize) -> (Option<f64>, Option<f64>) {
    if !have_valgrind() {
        eprintln!("valgrind not found: the instructions-per-GET row stays empty");
        return (None, None);
    }
    eprintln!("callgrind: lite-apiserver, 0 and {n} GETs");
    let lite = per_get(|k| lite_run(s, k), n);
    let nginx = if nginx::find().is_some() {
        eprintln!("callgrind: nginx, 0 and {n} GETs");
        per_get(|k| nginx_run(s, k), n)
    } else {
        None
    };
    (lite, nginx)
}
