//! A minimal rtnetlink client: exactly the requests `--incluster-address`
//! needs (list addresses, add a dummy link, add or delete an address,
//! delete a link), hand-built on a raw `NETLINK_ROUTE` socket.
//!
//! No crate for it: the messages are a 16-byte header, a fixed struct and a
//! few type-length-value attributes, all in host byte order (see
//! `rtnetlink(7)`). Every request asks for an acknowledgement, and the
//! kernel's `NLMSG_ERROR` answer becomes a typed [`NetlinkError::Kernel`]
//! carrying the errno, so callers can tell "not permitted" (`EPERM`) from
//! "this kernel has no dummy interfaces" (`EOPNOTSUPP`). A leaf: no crate
//! imports.

use std::fmt;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// The kernel answers at once; this only bounds a wait that should not be.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// One receive: the kernel packs a dump into datagrams of at most 32 KiB.
const RECV_BUFFER: usize = 64 * 1024;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;

const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;
const IFF_UP: u32 = 0x1;
const IFA_F_NODAD: u8 = 0x2;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `struct ifaddrmsg` size.
const IFADDRMSG_LEN: usize = 8;

/// Why a netlink request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetlinkError {
    /// The socket could not be made, or a send or receive failed.
    Socket(&'static str, Errno),
    /// The kernel refused the request (its `NLMSG_ERROR` answer).
    Kernel(&'static str, Errno),
    /// An answer we could not read.
    Malformed(&'static str),
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused.
    pub fn kernel_errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Kernel(_, e) => Some(*e),
            _ => None,
        }
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetlinkError::Socket(what, e) => {
                write!(f, "netlink {what}: {}", std::io::Error::from(*e))
            }
            NetlinkError::Kernel(what, e) => write!(f, "{what}: {}", std::io::Error::from(*e)),
            NetlinkError::Malformed(what) => write!(f, "malformed netlink answer: {what}"),
        }
    }
}

impl std::error::Error for NetlinkError {}

/// One address of one interface, from an address dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The interface index.
    pub index: u32,
    /// The local address.
    pub ip: IpAddr,
    /// The prefix length.
    pub prefix: u8,
    /// The IPv4 label (`lo:lite`), when there is one.
    pub label: Option<String>,
}

/// A request being built: header, fixed part, attributes.
struct Msg(Vec<u8>);

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32) -> Msg {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        Msg(buf)
    }

    /// `struct ifinfomsg`.
    fn ifinfo(mut self, index: u32, flags: u32, change: u32) -> Msg {
        self.0.extend_from_slice(&[AF_UNSPEC, 0, 0, 0]);
        self.0.extend_from_slice(&index.to_ne_bytes());
        self.0.extend_from_slice(&flags.to_ne_bytes());
        self.0.extend_from_slice(&change.to_ne_bytes());
        self
    }

    /// `struct ifaddrmsg`: a host address (/32 or /128), global scope.
    fn ifaddr(mut self, family: u8, prefix: u8, flags: u8, index: u32) -> Msg {
        self.0.extend_from_slice(&[family, prefix, flags, 0]);
        self.0.extend_from_slice(&index.to_ne_bytes());
        self
    }

    /// One attribute, padded to four bytes.
    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.pad();
    }

    /// An attribute holding the attributes `inner` adds.
    fn nested(&mut self, kind: u16, inner: impl FnOnce(&mut Msg)) {
        let start = self.0.len();
        self.attr(kind, &[]);
        inner(self);
        let len = u16::try_from(self.0.len() - start).unwrap_or(u16::MAX);
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// A NUL-terminated string attribute payload.
fn c_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// `ip link add NAME type dummy` with the link up, failing if it exists.
fn new_dummy(seq: u32, name: &str) -> Vec<u8> {
    let flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let mut m = Msg::new(RTM_NEWLINK, flags, seq).ifinfo(0, IFF_UP, IFF_UP);
    m.attr(IFLA_IFNAME, &c_string(name));
    m.nested(IFLA_LINKINFO, |m| m.attr(IFLA_INFO_KIND, b"dummy"));
    m.finish()
}

/// `ip link del NAME`.
fn del_link(seq: u32, name: &str) -> Vec<u8> {
    let mut m = Msg::new(RTM_DELLINK, NLM_F_ACK, seq).ifinfo(0, 0, 0);
    m.attr(IFLA_IFNAME, &c_string(name));
    m.finish()
}

/// `ip addr add|del IP/32 dev INDEX [label LABEL]` (`/128` for IPv6,
/// without duplicate address detection: the address is ours alone). On a
/// delete the kernel removes the address only if the label matches.
fn addr_msg(kind: u16, seq: u32, index: u32, ip: IpAddr, label: Option<&str>) -> Vec<u8> {
    let flags = if kind == RTM_NEWADDR {
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    } else {
        NLM_F_ACK
    };
    let (family, prefix, octets, ifa_flags) = match ip {
        IpAddr::V4(v4) => (AF_INET, 32, v4.octets().to_vec(), 0),
        IpAddr::V6(v6) => (AF_INET6, 128, v6.octets().to_vec(), IFA_F_NODAD),
    };
    let mut m = Msg::new(kind, flags, seq).ifaddr(family, prefix, ifa_flags, index);
    m.attr(IFA_LOCAL, &octets);
    m.attr(IFA_ADDRESS, &octets);
    if let (Some(label), IpAddr::V4(_)) = (label, ip) {
        m.attr(IFA_LABEL, &c_string(label));
    }
    m.finish()
}

/// `ip addr show`: every address of every interface.
fn get_addrs(seq: u32) -> Vec<u8> {
    Msg::new(RTM_GETADDR, NLM_F_DUMP, seq)
        .ifaddr(AF_UNSPEC, 0, 0, 0)
        .finish()
}

/// One message of a datagram: (type, seq, payload).
type Part<'a> = (u16, u32, &'a [u8]);

/// Splits a received datagram into its messages.
fn messages(mut buf: &[u8]) -> Result<Vec<Part<'_>>, NetlinkError> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32_at(buf, 0)? as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(NetlinkError::Malformed("message length"));
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32_at(buf, 8)?;
        out.push((kind, seq, &buf[NLMSG_HDRLEN..len]));
        buf = &buf[align(len).min(buf.len())..];
    }
    Ok(out)
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32, NetlinkError> {
    buf.get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_ne_bytes)
        .ok_or(NetlinkError::Malformed("short message"))
}

/// The errno of an `NLMSG_ERROR` payload (0: an acknowledgement), or of
/// an `NLMSG_DONE` payload ending a dump.
fn status(payload: &[u8]) -> Result<i32, NetlinkError> {
    u32_at(payload, 0).map(|n| n as i32)
}

/// What an acknowledgement-or-error says about request `what`.
fn ack_result(what: &'static str, payload: &[u8]) -> Result<(), NetlinkError> {
    match status(payload)? {
        0 => Ok(()),
        n => Err(NetlinkError::Kernel(
            what,
            Errno::from_raw_os_error(n.saturating_neg()),
        )),
    }
}

/// The attributes after a fixed part: (type, payload).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((kind, payload))
    })
}

/// One `RTM_NEWADDR` of a dump; `None` for one without a usable address.
fn parse_addr(payload: &[u8]) -> Option<Address> {
    let fixed = payload.get(..IFADDRMSG_LEN)?;
    let (family, prefix) = (fixed[0], fixed[1]);
    let index = u32::from_ne_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let (mut local, mut address, mut label) = (None, None, None);
    for (kind, value) in attrs(&payload[IFADDRMSG_LEN..]) {
        let ip = match (family, value.len()) {
            (AF_INET, 4) => <[u8; 4]>::try_from(value).ok().map(IpAddr::from),
            (AF_INET6, 16) => <[u8; 16]>::try_from(value).ok().map(IpAddr::from),
            _ => None,
        };
        match kind {
            IFA_LOCAL => local = ip,
            IFA_ADDRESS => address = ip,
            IFA_LABEL => {
                let text = value.split(|&b| b == 0).next().unwrap_or(&[]);
                label = Some(String::from_utf8_lossy(text).into_owned());
            }
            _ => {}
        }
    }
    // On a point-to-point link IFA_ADDRESS is the peer; IFA_LOCAL is ours.
    let ip = local.or(address)?;
    Some(Address {
        index,
        ip,
        prefix,
        label,
    })
}

/// An open `NETLINK_ROUTE` socket.
#[derive(Debug)]
pub struct Route {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Route {
    /// Opens the socket (no privilege needed until a change is asked for).
    pub fn open() -> Result<Route, NetlinkError> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None, // NETLINK_ROUTE
        )
        .map_err(|e| NetlinkError::Socket("socket", e))?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0))
            .map_err(|e| NetlinkError::Socket("bind", e))?;
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(REPLY_TIMEOUT),
        )
        .map_err(|e| NetlinkError::Socket("SO_RCVTIMEO", e))?;
        Ok(Route {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUFFER],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, msg: &[u8]) -> Result<(), NetlinkError> {
        let kernel = SocketAddrNetlink::new(0, 0);
        rustix::net::sendto(&self.fd, msg, SendFlags::empty(), &kernel)
            .map_err(|e| NetlinkError::Socket("send", e))?;
        Ok(())
    }

    /// Receives datagrams, handing each message with sequence `seq` to
    /// `each` until it returns `Some`.
    fn receive<T>(
        &mut self,
        seq: u32,
        mut each: impl FnMut(u16, &[u8]) -> Option<Result<T, NetlinkError>>,
    ) -> Result<T, NetlinkError> {
        loop {
            let (n, _) = rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::empty())
                .map_err(|e| NetlinkError::Socket("receive", e))?;
            for (kind, got, payload) in messages(&self.buf[..n])? {
                if got != seq {
                    continue; // a late answer to an earlier request
                }
                if let Some(done) = each(kind, payload) {
                    return done;
                }
            }
        }
    }

    /// Sends a request that changes something and waits for its ack.
    fn change(&mut self, what: &'static str, msg: Vec<u8>) -> Result<(), NetlinkError> {
        let seq = u32_at(&msg, 8)?;
        self.send(&msg)?;
        self.receive(seq, |kind, payload| {
            (kind == NLMSG_ERROR).then(|| ack_result(what, payload))
        })
    }

    /// Every address on every interface (`RTM_GETADDR` dump).
    pub fn addresses(&mut self) -> Result<Vec<Address>, NetlinkError> {
        let seq = self.next_seq();
        self.send(&get_addrs(seq))?;
        let mut out = Vec::new();
        self.receive(seq, |kind, payload| match kind {
            RTM_NEWADDR => {
                out.extend(parse_addr(payload));
                None
            }
            NLMSG_DONE => Some(ack_result("RTM_GETADDR", payload)),
            NLMSG_ERROR => Some(ack_result("RTM_GETADDR", payload)),
            _ => None,
        })?;
        Ok(out)
    }

    /// Creates the dummy link `name`, up. `EOPNOTSUPP`: no dummy driver.
    pub fn add_dummy(&mut self, name: &str) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        self.change("RTM_NEWLINK (dummy)", new_dummy(seq, name))
    }

    /// Deletes the link `name`.
    pub fn delete_link(&mut self, name: &str) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        self.change("RTM_DELLINK", del_link(seq, name))
    }

    /// Adds `ip` as a host address (/32, /128) of interface `index`.
    pub fn add_address(
        &mut self,
        index: u32,
        ip: IpAddr,
        label: Option<&str>,
    ) -> Result<(), NetlinkError> {
        self.change_address(RTM_NEWADDR, "RTM_NEWADDR", index, ip, label)
    }

    /// Deletes the host address `ip` of interface `index`; with a label,
    /// only if the address still carries it (the kernel compares).
    pub fn delete_address(
        &mut self,
        index: u32,
        ip: IpAddr,
        label: Option<&str>,
    ) -> Result<(), NetlinkError> {
        self.change_address(RTM_DELADDR, "RTM_DELADDR", index, ip, label)
    }

    /// Sends one address request (`kind` named `what` in errors).
    fn change_address(
        &mut self,
        kind: u16,
        what: &'static str,
        index: u32,
        ip: IpAddr,
        label: Option<&str>,
    ) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        self.change(what, addr_msg(kind, seq, index, ip, label))
    }

    /// The index of interface `name` (`SIOCGIFINDEX` on this socket).
    pub fn index(&self, name: &str) -> Result<u32, NetlinkError> {
        rustix::net::netdevice::name_to_index(&self.fd, name)
            .map_err(|e| NetlinkError::Kernel("SIOCGIFINDEX", e))
    }

    /// The name of interface `index`, for log lines.
    pub fn name(&self, index: u32) -> String {
        rustix::net::netdevice::index_to_name(&self.fd, index)
            .unwrap_or_else(|_| format!("interface #{index}"))
    }
}

#[cfg(test)]
mod tests;
