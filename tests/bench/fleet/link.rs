//! The one cuttable link between the fleet and the cloud's double.
//!
//! - `netns` (preferred): the lite-apiservers run inside one network
//!   namespace (`ip netns exec`), the direct kubelets' threads move into it
//!   (`setns`), and the double listens on the host end of the namespace's
//!   upstream veth link. A cut takes that link down: packets are dropped
//!   without a word, new dials time out as a SYN into the void does, and
//!   connections from before resume when the link returns (if nobody gave
//!   up on them), as after a real outage. The lite-apiservers' clients (the
//!   kubelets behind them) reach them over the namespace's other link,
//!   never cut.
//! - `relay`: a userspace TCP relay on loopback (tests/support/relay.rs)
//!   that goes silent; new dials complete the TCP handshake (kernel
//!   backlog) and then hang, and connections from before stay dead after
//!   the thaw. The only choice for `--cut reset`, and where namespaces
//!   cannot be made (no root).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::opts::CutKind;
use crate::support::daemon::Daemon;
use crate::support::netns::NetNs;
use crate::support::relay::Relay;

/// The first port lite-apiserver K listens on inside the namespace
/// (`BASE + 2K`, its admin port one above).
const NS_PORT_BASE: u16 = 20_000;

/// A running link.
pub enum Link<'a> {
    Relay { relay: Relay },
    Netns { ns: &'a NetNs, double: SocketAddr },
}

impl<'a> Link<'a> {
    /// The link to the double at `double` (for `netns`, it must listen on
    /// `ns.upstream_host`).
    pub fn new(ns: Option<&'a NetNs>, double: SocketAddr) -> Link<'a> {
        match ns {
            Some(ns) => Link::Netns { ns, double },
            None => Link::Relay {
                relay: Relay::start(double),
            },
        }
    }

    /// Where clients across the link dial the double.
    pub fn server_addr(&self) -> SocketAddr {
        match self {
            Link::Relay { relay, .. } => relay.addr(),
            Link::Netns { double, .. } => *double,
        }
    }

    /// lite-apiserver `k`'s process, listening where this process's
    /// kubelets reach it.
    pub fn start_lite(&self, k: usize, binary: &Path, cache: &Path, args: &[String]) -> Daemon {
        match self {
            Link::Relay { .. } => Daemon::start_with(binary.to_owned(), Vec::new(), cache, args),
            Link::Netns { ns, .. } => {
                let port = NS_PORT_BASE + 2 * k as u16;
                let mut pre = ns.exec_prefix();
                pre.push(binary.display().to_string());
                Daemon::start_at(
                    PathBuf::from("ip"),
                    pre,
                    cache,
                    args,
                    SocketAddr::new(ns.client_ns.into(), port),
                    SocketAddr::new(ns.client_ns.into(), port + 1),
                )
            }
        }
    }

    /// Runs `f` on a thread on the fleet's side of the link: every thread
    /// it starts (and their sockets) stays there.
    pub fn on_fleet_side<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match self {
            Link::Relay { .. } => f(),
            Link::Netns { ns, .. } => {
                let path = format!("/var/run/netns/{}", ns.name);
                std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            let file = std::fs::File::open(&path)
                                .unwrap_or_else(|e| panic!("{path}: {e}"));
                            rustix::thread::move_into_link_name_space(
                                file.as_fd(),
                                Some(rustix::thread::LinkNameSpaceType::Network),
                            )
                            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                            f()
                        })
                        .join()
                        .expect("the fleet-side thread")
                })
            }
        }
    }

    pub fn down(&self, kind: CutKind) {
        match (self, kind) {
            (Link::Relay { relay, .. }, CutKind::Silence) => relay.freeze(),
            (Link::Relay { relay, .. }, CutKind::Reset) => {
                relay.refuse();
                relay.cut();
            }
            (Link::Netns { ns, .. }, _) => ns.silence(),
        }
    }

    pub fn up(&self, kind: CutKind) {
        match (self, kind) {
            (Link::Relay { relay, .. }, CutKind::Silence) => relay.thaw(),
            (Link::Relay { relay, .. }, CutKind::Reset) => relay.accept_again(),
            (Link::Netns { ns, .. }, _) => ns.restore(),
        }
    }

    pub fn stop(&self) {
        if let Link::Relay { relay, .. } = self {
            relay.stop();
        }
    }
}
