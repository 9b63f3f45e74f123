//! The `--incluster-address` IP on the node: pods dial it (kubelet gives
//! them `KUBERNETES_SERVICE_HOST`), so it must be a local address before
//! the listener binds it, and it should go away when lite-apiserver stops.
//!
//! [`NodeAddress::ensure`] leaves an address that some interface already
//! has alone (an operator's own setup). Otherwise it creates the dummy
//! interface [`LINK`], up, holding IP/32 (IP/128), as kube-proxy's
//! `kube-ipvs0` and NodeLocal DNSCache's `nodelocaldns` do. A kernel
//! without the dummy driver (`CONFIG_DUMMY` off, no module: `EOPNOTSUPP`)
//! gets the /32 on `lo` instead, labelled [`LO_LABEL`]: a local address is
//! reachable whatever interface holds it. Dropping the [`NodeAddress`]
//! (the clean-shutdown path) removes only what lite-apiserver made. What
//! an earlier run left behind when it was killed (the interface, or the
//! labelled address on `lo`) is recognised by its name and adopted.

use std::fmt;
use std::net::IpAddr;

use rustix::io::Errno;

use crate::netlink::{Address, NetlinkError, Route};

/// The dummy interface lite-apiserver creates.
pub const LINK: &str = "lite-apiserver0";
/// The label of the address on `lo` when the kernel has no dummy driver.
pub const LO_LABEL: &str = "lo:lite";

/// Why the address could not be made to exist.
#[derive(Debug)]
#[non_exhaustive]
pub enum AddressError {
    /// Adding it needs `CAP_NET_ADMIN` (netlink answered `EPERM`).
    NotPermitted(IpAddr, NetlinkError),
    /// Any other netlink failure.
    Netlink(IpAddr, NetlinkError),
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::NotPermitted(ip, e) => write!(
                f,
                "--incluster-address: {ip} is on no interface and adding it needs CAP_NET_ADMIN ({e})"
            ),
            AddressError::Netlink(ip, e) => {
                write!(f, "--incluster-address: cannot add {ip} to the node: {e}")
            }
        }
    }
}

impl std::error::Error for AddressError {}

fn failed(ip: IpAddr) -> impl Fn(NetlinkError) -> AddressError {
    move |e| match e.kernel_errno() {
        Some(Errno::PERM) | Some(Errno::ACCESS) => AddressError::NotPermitted(ip, e),
        _ => AddressError::Netlink(ip, e),
    }
}

/// What this process is responsible for removing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Made {
    /// The interface [`LINK`] (and with it the address).
    Link,
    /// The labelled address on `lo` (index).
    OnLoopback(u32),
    /// Someone else's address: left alone.
    Nothing,
}

/// The address, present on the node; removed on drop if we made it.
#[derive(Debug)]
pub struct NodeAddress {
    ip: IpAddr,
    made: Made,
}

impl NodeAddress {
    /// Makes `ip` a local address of the node (see the module docs) and
    /// logs one line saying how.
    pub fn ensure(ip: IpAddr) -> Result<NodeAddress, AddressError> {
        let mut route = Route::open().map_err(failed(ip))?;
        let addrs = route.addresses().map_err(failed(ip))?;
        if let Some(found) = addrs.iter().find(|a| a.ip == ip) {
            return Ok(Self::found(&route, ip, found));
        }
        let made = match route.add_dummy(LINK) {
            Ok(()) => Self::fill_link(&mut route, ip, "created")?,
            // Ours by name: left by a run that was killed, without the address.
            Err(e) if e.kernel_errno() == Some(Errno::EXIST) => {
                Self::fill_link(&mut route, ip, "adopted the existing")?
            }
            Err(e) if e.kernel_errno() == Some(Errno::OPNOTSUPP) => {
                Self::on_loopback(&mut route, ip)?
            }
            Err(e) => return Err(failed(ip)(e)),
        };
        Ok(NodeAddress { ip, made })
    }

    /// The address is already there: ours from an earlier run, or not ours.
    fn found(route: &Route, ip: IpAddr, found: &Address) -> NodeAddress {
        let on = route.name(found.index);
        let made = if route.index(LINK).ok() == Some(found.index) {
            Made::Link
        } else if on == "lo" && found.label.as_deref() == Some(LO_LABEL) {
            Made::OnLoopback(found.index)
        } else {
            log::info!("--incluster-address: {ip} is already on {on}; left as it is");
            return NodeAddress {
                ip,
                made: Made::Nothing,
            };
        };
        log::info!(
            "--incluster-address: {ip} is on {on} from an earlier run; adopted (removed at shutdown)"
        );
        NodeAddress { ip, made }
    }

    /// Puts the address on [`LINK`]; deletes the link if that fails.
    fn fill_link(route: &mut Route, ip: IpAddr, how: &str) -> Result<Made, AddressError> {
        let added = route
            .index(LINK)
            .and_then(|index| route.add_address(index, ip, None));
        if let Err(e) = added {
            if let Err(undo) = route.delete_link(LINK) {
                log::warn!("--incluster-address: cannot delete {LINK} again: {undo}");
            }
            return Err(failed(ip)(e));
        }
        log::info!(
            "--incluster-address: {how} interface {LINK} with {ip}/{}",
            host_prefix(ip)
        );
        Ok(Made::Link)
    }

    /// The fallback without a dummy driver: the address on `lo`.
    fn on_loopback(route: &mut Route, ip: IpAddr) -> Result<Made, AddressError> {
        let index = route.index("lo").map_err(failed(ip))?;
        route
            .add_address(index, ip, Some(LO_LABEL))
            .map_err(failed(ip))?;
        log::info!(
            "--incluster-address: this kernel has no dummy interfaces; added {ip}/{} to lo (label {LO_LABEL})",
            host_prefix(ip)
        );
        Ok(Made::OnLoopback(index))
    }

    /// Whether the drop removes something (tests, logs).
    pub fn owned(&self) -> bool {
        self.made != Made::Nothing
    }
}

fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

impl Drop for NodeAddress {
    fn drop(&mut self) {
        let ip = self.ip;
        let removed = Route::open().and_then(|mut route| match self.made {
            Made::Link => route
                .delete_link(LINK)
                .map(|()| format!("interface {LINK}")),
            Made::OnLoopback(index) => {
                let label = ip.is_ipv4().then_some(LO_LABEL);
                route
                    .delete_address(index, ip, label)
                    .map(|()| format!("{ip}/{} from lo", host_prefix(ip)))
            }
            Made::Nothing => Ok(String::new()),
        });
        match removed {
            Ok(what) if what.is_empty() => {}
            Ok(what) => log::info!("--incluster-address: removed {what}"),
            Err(e) => log::warn!("--incluster-address: cannot remove {ip}: {e}"),
        }
    }
}
