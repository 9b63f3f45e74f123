//! What the bench started, and the check that none of it outlives it.
//!
//! The bench's own children (lite-apiserver, valgrind, kubectl, nginx's
//! master) have the bench as parent; nginx's workers are in the process
//! group the bench made for nginx (and are re-parented to init if their
//! master dies first), so groups are tracked too. The check scans /proc.

use std::process::Command;
use std::sync::Mutex;

/// Process groups the bench created.
static GROUPS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Remembers a process group the bench created (its leader's pid).
pub fn track_group(pgid: u32) {
    GROUPS.lock().unwrap().push(pgid);
}

/// Sends `SIG<signal>` to every process of group `pgid`.
pub fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .status();
}

/// One line of /proc/PID/stat: (pid, comm, state, ppid, pgrp).
struct Stat {
    pid: u32,
    comm: String,
    state: char,
    ppid: u32,
    pgrp: u32,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(Stat {
        pid,
        comm,
        state,
        ppid,
        pgrp,
    })
}

/// Every live (not zombie) process on the machine.
fn all() -> Vec<Stat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .filter(|s| s.state != 'Z' && s.state != 'X')
        .collect()
}

/// Live processes in group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    all()
        .into_iter()
        .filter(|s| s.pgrp == pgid)
        .map(|s| s.pid)
        .collect()
}

/// Live processes the bench started: its children and the members of the
/// groups it created, as "pid (comm)".
pub fn survivors() -> Vec<String> {
    let me = std::process::id();
    let groups = GROUPS.lock().unwrap().clone();
    all()
        .into_iter()
        .filter(|s| s.pid != me && (s.ppid == me || groups.contains(&s.pgrp)))
        .map(|s| format!("{} ({})", s.pid, s.comm))
        .collect()
}

/// Prints an error line for every process the bench started that is still
/// alive, then kills it; true if there was none.
pub fn check_none_left() -> bool {
    let left = survivors();
    for p in &left {
        let line = format!("error: process {p} started by the bench is still alive at its end");
        println!("{line}");
        eprintln!("{line}");
        if let Some(pid) = p.split(' ').next() {
            let _ = Command::new("kill").arg("-KILL").arg(pid).status();
        }
    }
    if left.is_empty() {
        println!("cleanup: no process started by the bench is left");
        return true;
    }
    // SIGKILL takes effect asynchronously: wait (bounded) until it has.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !survivors().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}
