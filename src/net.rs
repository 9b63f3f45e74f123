//! Socket options every TCP connection gets, on both sides.
//!
//! A link that dies silently (a NAT entry expires, a radio fades) sends no
//! RST: without these a socket waits for the kernel's defaults, which is
//! two hours for an idle connection and about fifteen minutes for one with
//! unacknowledged data. A leaf: no crate imports.

use std::time::Duration;

use smol::net::TcpStream;

/// Idle time before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Time between keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes before the connection is dead: a silent peer is seen
/// within 10 + 4 x 5 = 30 s.
pub const KEEPALIVE_COUNT: u32 = 4;
/// How long written data may stay unacknowledged before the connection
/// fails (TCP_USER_TIMEOUT), so a write to a vanished peer errors too.
pub const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// `TCP_NODELAY` (with Nagle and delayed ACKs a TLS request took 43 ms
/// instead of 0.28 ms in a probe here), TCP keepalive and
/// `TCP_USER_TIMEOUT`. Failures are logged, never fatal: the connection
/// still works, only its failure detection is slower.
pub fn tune(tcp: &TcpStream) {
    use rustix::net::sockopt;
    let result = sockopt::set_tcp_nodelay(tcp, true)
        .and_then(|()| sockopt::set_socket_keepalive(tcp, true))
        .and_then(|()| sockopt::set_tcp_keepidle(tcp, KEEPALIVE_IDLE))
        .and_then(|()| sockopt::set_tcp_keepintvl(tcp, KEEPALIVE_INTERVAL))
        .and_then(|()| sockopt::set_tcp_keepcnt(tcp, KEEPALIVE_COUNT))
        .and_then(|()| {
            let ms = u32::try_from(USER_TIMEOUT.as_millis()).unwrap_or(u32::MAX);
            sockopt::set_tcp_user_timeout(tcp, ms)
        });
    if let Err(e) = result {
        log::debug!("socket options: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn options_are_set() {
        smol::block_on(async {
            let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let tcp = smol::net::TcpStream::connect(addr).await.unwrap();
            super::tune(&tcp);
            use rustix::net::sockopt;
            assert!(sockopt::socket_keepalive(&tcp).unwrap());
            assert!(sockopt::tcp_nodelay(&tcp).unwrap());
            assert_eq!(sockopt::tcp_keepidle(&tcp).unwrap(), super::KEEPALIVE_IDLE);
            assert_eq!(sockopt::tcp_keepcnt(&tcp).unwrap(), super::KEEPALIVE_COUNT);
            assert_eq!(sockopt::tcp_user_timeout(&tcp).unwrap(), 30_000);
        });
    }
}
