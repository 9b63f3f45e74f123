//! A network namespace made by a test, with two veth links to the host:
//!
//! ```text
//!  host                                   namespace (lite-apiserver runs here)
//!  client_host 10.200.S.1 <-- client link --> client_ns 10.200.S.2
//!  upstream_host 10.200.S.5 <- upstream link -> upstream_ns 10.200.S.6
//! ```
//!
//! The test's clients dial `client_ns`; the double listens on
//! `upstream_host`. [`NetNs::silence`] takes the host side of the upstream
//! link down: from inside the namespace packets to the double are then
//! dropped without a word (no RST, no ICMP; a connect times out, an
//! established socket just stops), the way an edge link dies.
//! [`NetNs::restore`] brings it back. Everything is deleted on drop.
//!
//! Each namespace claims a slot S (eight addresses of 10.200.0.0/16) by
//! creating `lite-sS`: `ip netns add` fails if it exists, so concurrent tests
//! and processes never share addresses.

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Slots of eight addresses in 10.200.0.0/16.
const SLOTS: u32 = 8192;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A namespace and its two links; deleted on drop.
pub struct NetNs {
    /// The namespace's name (`ip netns exec NAME ...`).
    pub name: String,
    /// Host end of the client link.
    pub client_host: Ipv4Addr,
    /// Namespace end of the client link (where lite-apiserver listens).
    pub client_ns: Ipv4Addr,
    /// Host end of the upstream link (where the double listens).
    pub upstream_host: Ipv4Addr,
    /// Namespace end of the upstream link.
    pub upstream_ns: Ipv4Addr,
    client_veth: String,
    upstream_veth: String,
}

fn ip(args: &[&str]) -> Result<Output, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn addr(slot: u32, offset: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + slot * 8 + offset)
}

impl NetNs {
    /// Creates a namespace with both links up, or says why it cannot (no
    /// root, no `ip`, no netns or veth support): the caller skips then.
    pub fn create() -> Result<NetNs, String> {
        let start = (std::process::id() * 31 + NEXT.fetch_add(1, Ordering::SeqCst) * 7) % SLOTS;
        let mut last = String::new();
        for i in 0..64 {
            let slot = (start + i) % SLOTS;
            let name = format!("lite-s{slot}");
            match ip(&["netns", "add", &name]) {
                Ok(_) => return NetNs::wire(name, slot),
                Err(e) => last = e,
            }
            if !last.contains("exists") {
                break;
            }
        }
        Err(last)
    }

    /// Adds both veth pairs to the freshly made namespace `name`.
    fn wire(name: String, slot: u32) -> Result<NetNs, String> {
        let ns = NetNs {
            client_host: addr(slot, 1),
            client_ns: addr(slot, 2),
            upstream_host: addr(slot, 5),
            upstream_ns: addr(slot, 6),
            client_veth: format!("lsc{slot}"),
            upstream_veth: format!("lsu{slot}"),
            name,
        };
        // On error `ns` drops here and deletes what was made.
        ns.link(&ns.client_veth, ns.client_host, ns.client_ns)?;
        ns.link(&ns.upstream_veth, ns.upstream_host, ns.upstream_ns)?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// One veth pair: `host_if` (host, `host_ip`/30) to `host_if`n (inside, `ns_ip`/30).
    fn link(&self, host_if: &str, host_ip: Ipv4Addr, ns_ip: Ipv4Addr) -> Result<(), String> {
        let inner = format!("{host_if}n");
        ip(&[
            "link", "add", host_if, "type", "veth", "peer", "name", &inner,
        ])?;
        ip(&["link", "set", &inner, "netns", &self.name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", host_if])?;
        ip(&["link", "set", host_if, "up"])?;
        ip(&[
            "-n",
            &self.name,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &inner,
        ])?;
        ip(&["-n", &self.name, "link", "set", &inner, "up"])?;
        Ok(())
    }

    /// `["netns", "exec", NAME]`: what goes between `ip` and a command to
    /// run it inside (see `Daemon::start_in`).
    pub fn exec_prefix(&self) -> Vec<String> {
        ["netns", "exec", &self.name].map(String::from).to_vec()
    }

    /// `ip netns exec NAME program`, ready for arguments.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(self.exec_prefix()).arg(program);
        c
    }

    /// Takes the host side of the upstream link down: silence, no resets.
    pub fn silence(&self) {
        ip(&["link", "set", &self.upstream_veth, "down"]).expect("silencing the upstream link");
    }

    /// Brings the upstream link back.
    pub fn restore(&self) {
        ip(&["link", "set", &self.upstream_veth, "up"]).expect("restoring the upstream link");
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys the inner ends, and with them the
        // pairs; the explicit deletes cover a half-made namespace.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.client_veth]);
        let _ = ip(&["link", "del", &self.upstream_veth]);
    }
}

/// A namespace, or `None` after printing why the test is skipped.
pub fn or_skip(test: &str) -> Option<NetNs> {
    match NetNs::create() {
        Ok(ns) => Some(ns),
        Err(why) => {
            println!("SKIPPED {test}: network namespaces are not available here ({why})");
            eprintln!("SKIPPED {test}: network namespaces are not available here ({why})");
            None
        }
    }
}
