//! A TCP relay that can go silent: the stand-in for an edge link whose
//! packets just stop (a NAT entry expires, a radio fades) without any reset.
//!
//! ```text
//! lite-apiserver --> Relay (127.0.0.1:PORT) --> target (the double)
//! ```
//!
//! States:
//! - *pass*: bytes are copied both ways, connections accepted.
//! - [`Relay::freeze`]: nothing is forwarded in either direction and no new
//!   connection is accepted (dials sit in the kernel's backlog, so a TLS
//!   handshake hangs), yet every socket stays open: the peer sees pure
//!   silence, never an EOF or a reset. Bytes read while frozen are held.
//! - [`Relay::thaw`]: new connections work again. Connections from before the
//!   freeze stay dead, as a real NAT forgets them: their held bytes are
//!   dropped, they are never read or written again, and they stay open
//!   (silent) until the relay stops.
//! - [`Relay::cut`]: every open connection is shut down at once (the peer sees
//!   EOF or a reset: the loud failure, for comparison); the listener stays.
//! - [`Relay::refuse`]: the listener is closed, so new dials are refused;
//!   [`Relay::accept_again`] binds the same port again.
//!
//! Threads and blocking sockets with short timeouts: each pump re-checks the
//! state between reads, and a write is only made while holding the gate's
//! read lock, so once `freeze` returns not one more byte is forwarded.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a blocked pump or the acceptor looks at the state again.
const POLL: Duration = Duration::from_millis(20);

/// Whether bytes flow, and which connections may carry them.
#[derive(Debug, Clone, Copy)]
struct Gate {
    frozen: bool,
    /// Bumped by every freeze: a connection born in an older epoch is dead.
    epoch: u64,
}

/// One relayed connection: both sockets, kept so `cut` and drop can close
/// them and so dead ones stay open.
struct Link {
    client: TcpStream,
    target: TcpStream,
}

struct Shared {
    target: SocketAddr,
    gate: RwLock<Gate>,
    running: AtomicBool,
    accepting: AtomicBool,
    links: Mutex<Vec<Link>>,
    accepted: AtomicU64,
    up_bytes: AtomicU64,
    down_bytes: AtomicU64,
}

/// Byte and connection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Connections accepted (and dialled through to the target).
    pub accepted: u64,
    /// Bytes forwarded from clients to the target.
    pub up: u64,
    /// Bytes forwarded from the target to clients.
    pub down: u64,
}

/// A running relay; stops (closing every socket) on drop.
pub struct Relay {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl Relay {
    /// Listens on 127.0.0.1, port 0, relaying to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        Relay::start_on("127.0.0.1:0".parse().unwrap(), target)
    }

    /// Listens on `bind` (port 0 for any), relaying to `target`.
    pub fn start_on(bind: SocketAddr, target: SocketAddr) -> Relay {
        let listener = TcpListener::bind(bind).expect("relay bind");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            gate: RwLock::new(Gate {
                frozen: false,
                epoch: 0,
            }),
            running: AtomicBool::new(true),
            accepting: AtomicBool::new(true),
            links: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            up_bytes: AtomicU64::new(0),
            down_bytes: AtomicU64::new(0),
        });
        let relay = Relay {
            shared,
            addr,
            acceptor: Mutex::new(None),
        };
        relay.listen(listener);
        relay
    }

    fn listen(&self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        self.shared.accepting.store(true, Ordering::SeqCst);
        let shared = self.shared.clone();
        *self.acceptor.lock().unwrap() =
            Some(std::thread::spawn(move || accept_loop(&shared, listener)));
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://ADDR` (the relay carries TLS untouched).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Goes silent: nothing forwarded, nothing accepted, nothing closed.
    pub fn freeze(&self) {
        let mut gate = self.shared.gate.write().unwrap();
        if !gate.frozen {
            gate.frozen = true;
            gate.epoch += 1;
        }
    }

    /// Forwards again for new connections; those from before the freeze
    /// stay open and silent.
    pub fn thaw(&self) {
        self.shared.gate.write().unwrap().frozen = false;
    }

    /// Whether the relay is frozen now.
    pub fn is_frozen(&self) -> bool {
        self.shared.gate.read().unwrap().frozen
    }

    /// Shuts every open connection down at once (both sides see EOF or a
    /// reset); new connections are still accepted.
    pub fn cut(&self) {
        for link in self.shared.links.lock().unwrap().drain(..) {
            let _ = link.client.shutdown(Shutdown::Both);
            let _ = link.target.shutdown(Shutdown::Both);
        }
    }

    /// Closes the listener: new dials are refused (connections already
    /// open are untouched; `cut` them too for a dead server).
    pub fn refuse(&self) {
        self.shared.accepting.store(false, Ordering::SeqCst);
        if let Some(t) = self.acceptor.lock().unwrap().take() {
            let _ = t.join();
        }
    }

    /// Binds the same port again after [`Relay::refuse`].
    pub fn accept_again(&self) {
        if self.acceptor.lock().unwrap().is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(POLL);
                }
                Err(e) => panic!("relay rebinding {}: {e}", self.addr),
            }
        };
        self.listen(listener);
    }

    /// Connections accepted and bytes forwarded so far.
    pub fn counters(&self) -> Counters {
        Counters {
            accepted: self.shared.accepted.load(Ordering::SeqCst),
            up: self.shared.up_bytes.load(Ordering::SeqCst),
            down: self.shared.down_bytes.load(Ordering::SeqCst),
        }
    }

    /// Stops: no more accepts, every socket closed, threads exit.
    pub fn stop(&self) {
        self.shared.running.store(false, Ordering::SeqCst);
        self.refuse();
        self.cut();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    while shared.accepting.load(Ordering::SeqCst) && shared.running.load(Ordering::SeqCst) {
        if shared.gate.read().unwrap().frozen {
            // Not accepting: dials wait in the backlog, unanswered.
            std::thread::sleep(POLL);
            continue;
        }
        match listener.accept() {
            Ok((client, _)) => {
                let born = shared.gate.read().unwrap().epoch;
                if let Err(e) = relay_one(shared, client, born) {
                    log_relay_error(&e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn log_relay_error(e: &io::Error) {
    eprintln!("relay: could not relay a connection: {e}");
}

/// Dials the target for `client` and starts one pump per direction.
fn relay_one(shared: &Arc<Shared>, client: TcpStream, born: u64) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_nodelay(true)?;
    let target = match TcpStream::connect_timeout(&shared.target, Duration::from_secs(2)) {
        Ok(t) => t,
        Err(e) => {
            // The target refused: the client sees its connection closed.
            let _ = client.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    target.set_nodelay(true)?;
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    shared.links.lock().unwrap().push(Link {
        client: client.try_clone()?,
        target: target.try_clone()?,
    });
    let (c_read, t_write) = (client.try_clone()?, target.try_clone()?);
    let up = shared.clone();
    std::thread::spawn(move || pump(&up, c_read, t_write, born, Direction::Up));
    let down = shared.clone();
    std::thread::spawn(move || pump(&down, target, client, born, Direction::Down));
    Ok(())
}

#[derive(Clone, Copy)]
enum Direction {
    Up,
    Down,
}

/// Whether a connection born in `born` may forward now.
fn live(gate: &Gate, born: u64) -> bool {
    !gate.frozen && gate.epoch == born
}

/// Copies `from` to `to` while the connection is live; holds what it read
/// while frozen and drops it when the connection turns out dead; parks a
/// dead connection (open, never read again) until the relay stops.
fn pump(shared: &Shared, mut from: TcpStream, mut to: TcpStream, born: u64, dir: Direction) {
    let _ = from.set_read_timeout(Some(POLL));
    let _ = to.set_write_timeout(Some(POLL));
    let mut held: Vec<u8> = Vec::new();
    let mut eof = false;
    let mut buf = vec![0u8; 16 * 1024];
    while shared.running.load(Ordering::SeqCst) {
        let gate = *shared.gate.read().unwrap();
        if gate.epoch != born {
            // Dead since a freeze: drop what was held, stay open and silent.
            held.clear();
            std::thread::sleep(POLL);
            continue;
        }
        if gate.frozen {
            std::thread::sleep(POLL);
            continue;
        }
        if !held.is_empty() {
            match forward(shared, &mut to, &held, born, dir) {
                Ok(n) => {
                    held.drain(..n);
                }
                Err(_) => return,
            }
            continue;
        }
        if eof {
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
        match from.read(&mut buf) {
            Ok(0) => eof = true,
            Ok(n) => held.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

/// Writes what it can of `bytes` while holding the gate's read lock, so a
/// freeze waits for this write and no byte passes after it.
fn forward(
    shared: &Shared,
    to: &mut TcpStream,
    bytes: &[u8],
    born: u64,
    dir: Direction,
) -> io::Result<usize> {
    let gate = shared.gate.read().unwrap();
    if !live(&gate, born) {
        return Ok(0);
    }
    match to.write(bytes) {
        Ok(n) => {
            let counter = match dir {
                Direction::Up => &shared.up_bytes,
                Direction::Down => &shared.down_bytes,
            };
            counter.fetch_add(n as u64, Ordering::SeqCst);
            Ok(n)
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(0)
        }
        Err(e) => Err(e),
    }
}
