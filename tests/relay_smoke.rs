//! The silence tools themselves: the relay's freeze is pure silence (reads
//! time out, nothing is closed, nothing accepted), thaw serves new
//! connections while old ones stay dead, cut and refuse are loud; a
//! namespace's upstream link taken down is silent too.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::relay::Relay;

/// An echo server on 127.0.0.1 (threads; lives as long as the test).
fn echo_server() -> SocketAddr {
    echo_server_on("127.0.0.1:0".parse().unwrap())
}

fn echo_server_on(bind: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind(bind).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn dial(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// Sends `msg` and expects it back.
fn echoes(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

/// What a read on `s` gives within `wait`: "silent" (timed out), "eof",
/// "data", or the error kind.
fn read_outcome(s: &mut TcpStream, wait: Duration) -> String {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => "eof".into(),
        Ok(_) => "data".into(),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            "silent".into()
        }
        Err(e) => format!("{:?}", e.kind()),
    }
}

#[test]
fn pass_forwards_and_counts() {
    let relay = Relay::start(echo_server());
    let mut s = dial(relay.addr());
    echoes(&mut s, b"hello");
    echoes(&mut s, b"again");
    // The relay counts after it forwarded: the echo may arrive first.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let counted = loop {
        let c = relay.counters();
        if (c.accepted, c.up, c.down) == (1, 10, 10) || std::time::Instant::now() > deadline {
            break (c.accepted, c.up, c.down);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(counted, (1, 10, 10));
}

#[test]
fn freeze_is_silent_and_thaw_serves_only_new_connections() {
    let relay = Relay::start(echo_server());
    let mut old = dial(relay.addr());
    echoes(&mut old, b"before");
    relay.freeze();
    let before = relay.counters();
    // An established connection: the write succeeds (the relay's kernel
    // takes it), no answer comes, and the socket is not closed.
    old.write_all(b"during").unwrap();
    assert_eq!(read_outcome(&mut old, Duration::from_secs(1)), "silent");
    // A new dial completes in the backlog but nothing answers it.
    let mut new = dial(relay.addr());
    new.write_all(b"new").unwrap();
    assert_eq!(read_outcome(&mut new, Duration::from_secs(1)), "silent");
    let frozen = relay.counters();
    assert_eq!(frozen, before, "nothing accepted or forwarded while frozen");

    relay.thaw();
    // The old connection stays dead and open: its held bytes are dropped.
    assert_eq!(read_outcome(&mut old, Duration::from_millis(700)), "silent");
    old.write_all(b"after").unwrap();
    assert_eq!(read_outcome(&mut old, Duration::from_millis(700)), "silent");
    // A connection made after the thaw works.
    let mut fresh = dial(relay.addr());
    echoes(&mut fresh, b"fresh");
    assert!(relay.counters().accepted > before.accepted);
}

#[test]
fn freeze_stops_a_stream_mid_way() {
    // A server that streams a byte every 20 ms, as a watch would.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = l.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            while s.write_all(b".").is_ok() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let relay = Relay::start(target);
    let mut s = dial(relay.addr());
    assert_eq!(read_outcome(&mut s, Duration::from_secs(2)), "data");
    relay.freeze();
    // Drain what was already on the way to us, then silence.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut outcome = String::new();
    while Instant::now() < deadline {
        outcome = read_outcome(&mut s, Duration::from_millis(300));
        if outcome != "data" {
            break;
        }
    }
    assert_eq!(outcome, "silent", "the stream goes silent, not closed");
    let down = relay.counters().down;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(relay.counters().down, down, "not one byte after the freeze");
}

#[test]
fn cut_is_loud_and_refuse_refuses() {
    let relay = Relay::start(echo_server());
    let mut s = dial(relay.addr());
    echoes(&mut s, b"x");
    relay.cut();
    let outcome = read_outcome(&mut s, Duration::from_secs(2));
    assert!(
        outcome == "eof" || outcome == "ConnectionReset",
        "cut: {outcome}"
    );
    // The listener stays after a cut.
    echoes(&mut dial(relay.addr()), b"y");
    relay.refuse();
    let e = TcpStream::connect_timeout(&relay.addr(), Duration::from_secs(2)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    relay.accept_again();
    echoes(&mut dial(relay.addr()), b"z");
}

#[test]
fn namespace_link_down_is_silent() {
    let Some(ns) = support::netns::or_skip("namespace_link_down_is_silent") else {
        return;
    };
    let target = echo_server_on(SocketAddr::new(ns.upstream_host.into(), 0));
    // A probe inside the namespace: connect, echo, then (after the link goes
    // down) a read on the open socket and a new connect, each 1 s.
    let script = format!(
        r#"
import socket, sys
s = socket.create_connection(("{ip}", {port}), timeout=2)
s.sendall(b"x"); assert s.recv(1) == b"x"
print("up", flush=True)
sys.stdin.readline()
s.settimeout(1)
s.sendall(b"y")
try:
    print("established:", "data" if s.recv(1) else "eof", flush=True)
except socket.timeout:
    print("established: silent", flush=True)
except OSError as e:
    print("established:", e, flush=True)
try:
    socket.create_connection(("{ip}", {port}), timeout=1)
    print("new: connected", flush=True)
except socket.timeout:
    print("new: silent", flush=True)
except OSError as e:
    print("new:", e, flush=True)
"#,
        ip = ns.upstream_host,
        port = target.port()
    );
    let mut child = ns
        .command("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "up");
    ns.silence();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let _ = child.wait();
    assert_eq!(rest.trim(), "established: silent\nnew: silent", "{rest}");
    ns.restore();
}
