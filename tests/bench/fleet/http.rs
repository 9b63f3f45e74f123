//! The fake kubelet's HTTP/1.1 client: keep-alive connections for short
//! requests (like Go's `http.Transport`), one connection per watch, and
//! a registry of every socket so a kubelet can `closeAllConns` (what a
//! real kubelet does after repeated heartbeat failures).
//!
//! Timeouts are Go's: 30 s to dial, 10 s for the TLS handshake, and the
//! request's own deadline. `idle_limit` stands in for the HTTP/2 health
//! check a real kubelet has on its connection to a kube-apiserver (a read
//! idle for 30 s, then a 15 s ping: 45 s of silence ends the connection);
//! toward lite-apiserver (HTTP/1.1 only) a kubelet has no such check.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lite_apiserver::http::{BodyDecoder, Decoded, Framing, Parsed, ResponseHead};
use rustls::pki_types::ServerName;

const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a blocked watch read looks at its stop flag.
const POLL: Duration = Duration::from_millis(500);
/// Go's `MaxIdleConnsPerHost` as client-go sets it.
const MAX_IDLE: usize = 25;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Sockets of one kubelet, so that all of them can be closed at once.
#[derive(Default)]
struct Registry {
    socks: Mutex<Vec<(u64, TcpStream)>>,
    next: AtomicU64,
    /// Bumped by `close_all`: idle connections of an older generation are
    /// never reused.
    generation: AtomicU64,
}

/// Where one kubelet sends its requests, and its connections.
pub struct Endpoint {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    idle_limit: Option<Duration>,
    registry: Registry,
    idle: Mutex<Vec<Conn>>,
}

/// One TLS connection.
struct Conn {
    tls: Tls,
    buf: Vec<u8>,
    id: u64,
    generation: u64,
}

/// A complete answer.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// An answer whose body is read as it comes (a watch).
pub struct Stream {
    pub status: u16,
    conn: Conn,
    dec: BodyDecoder,
    lines: Vec<u8>,
    idle_limit: Option<Duration>,
    last_byte: Instant,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl Endpoint {
    /// An endpoint at `addr` with client config `config`.
    pub fn new(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        idle_limit: Option<Duration>,
    ) -> Endpoint {
        Endpoint {
            addr,
            config,
            idle_limit,
            registry: Registry::default(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Shuts every connection down (idle, in use, watches): kubelet's
    /// `closeAllConns`.
    pub fn close_all(&self) {
        self.registry.generation.fetch_add(1, Ordering::SeqCst);
        self.idle.lock().unwrap().clear();
        for (_, s) in self.registry.socks.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// A new connection, within Go's dial and handshake timeouts and
    /// the request's `deadline`.
    fn dial(&self, deadline: Instant) -> io::Result<Conn> {
        let generation = self.registry.generation.load(Ordering::SeqCst);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out("request deadline"));
        }
        let tcp = TcpStream::connect_timeout(&self.addr, left.min(DIAL_TIMEOUT))?;
        tcp.set_nodelay(true)?;
        let id = self.registry.next.fetch_add(1, Ordering::Relaxed);
        self.registry
            .socks
            .lock()
            .unwrap()
            .push((id, tcp.try_clone()?));
        let conn = rustls::ClientConnection::new(
            self.config.clone(),
            ServerName::try_from("127.0.0.1").unwrap(),
        )
        .map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let deadline = deadline.min(Instant::now() + HANDSHAKE_TIMEOUT);
        while tls.conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.forget(id);
                return Err(timed_out("TLS handshake timeout"));
            }
            tls.sock.set_read_timeout(Some(left))?;
            tls.sock.set_write_timeout(Some(left))?;
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                self.forget(id);
                return Err(e);
            }
        }
        Ok(Conn {
            tls,
            buf: Vec::new(),
            id,
            generation,
        })
    }

    fn forget(&self, id: u64) {
        self.registry
            .socks
            .lock()
            .unwrap()
            .retain(|(i, _)| *i != id);
    }

    fn take_idle(&self) -> Option<Conn> {
        let generation = self.registry.generation.load(Ordering::SeqCst);
        let mut idle = self.idle.lock().unwrap();
        while let Some(c) = idle.pop() {
            if c.generation == generation {
                return Some(c);
            }
            self.forget(c.id);
        }
        None
    }

    fn put_idle(&self, c: Conn) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE && c.generation == self.registry.generation.load(Ordering::SeqCst)
        {
            idle.push(c);
        } else {
            drop(idle);
            self.forget(c.id);
        }
    }

    /// A request on a kept-alive connection (a fresh one if none is idle,
    /// or if the idle one turns out closed before any answer byte).
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> io::Result<Response> {
        let deadline = Instant::now() + timeout;
        if let Some(mut c) = self.take_idle() {
            match self.exchange(&mut c, method, target, headers, body, deadline) {
                Ok((r, keep)) => return Ok(self.finish(c, r, keep)),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    self.forget(c.id);
                    return Err(e);
                }
                Err(_) => self.forget(c.id),
            }
        }
        let mut c = self.dial(deadline)?;
        match self.exchange(&mut c, method, target, headers, body, deadline) {
            Ok((r, keep)) => Ok(self.finish(c, r, keep)),
            Err(e) => {
                self.forget(c.id);
                Err(e)
            }
        }
    }

    fn finish(&self, c: Conn, r: Response, keep: bool) -> Response {
        if keep {
            self.put_idle(c);
        } else {
            self.forget(c.id);
        }
        r
    }

    fn exchange(
        &self,
        c: &mut Conn,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        deadline: Instant,
    ) -> io::Result<(Response, bool)> {
        let (head, framing) = send(c, method, target, headers, body, deadline)?;
        let mut dec = BodyDecoder::new(framing);
        let mut out = Vec::new();
        while let Some(piece) = read_body(c, &mut dec, deadline)? {
            out.extend_from_slice(&piece);
        }
        let keep = head.keep_alive() && dec.is_done() && framing != Framing::Close;
        Ok((
            Response {
                status: head.status,
                body: out,
            },
            keep,
        ))
    }

    /// A watch on a connection of its own; the head must arrive within
    /// `timeout`.
    pub fn open(
        &self,
        target: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> io::Result<Stream> {
        let deadline = Instant::now() + timeout;
        let mut c = self.dial(deadline)?;
        let (head, framing) = match send(&mut c, "GET", target, headers, b"", deadline) {
            Ok(h) => h,
            Err(e) => {
                self.forget(c.id);
                return Err(e);
            }
        };
        Ok(Stream {
            status: head.status,
            conn: c,
            dec: BodyDecoder::new(framing),
            lines: Vec::new(),
            idle_limit: self.idle_limit,
            last_byte: Instant::now(),
        })
    }

    /// Ends a watch's connection.
    pub fn close(&self, s: Stream) {
        let _ = s.conn.tls.sock.shutdown(Shutdown::Both);
        self.forget(s.conn.id);
    }
}

/// Writes the request and reads the answer's head.
fn send(
    c: &mut Conn,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    deadline: Instant,
) -> io::Result<(ResponseHead, Framing)> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    c.tls.sock.set_write_timeout(Some(left))?;
    c.tls.write_all(&bytes)?;
    c.tls.flush()?;
    loop {
        if let Ok(Parsed::Complete(head, used)) = ResponseHead::parse(&c.buf) {
            c.buf.drain(..used);
            let framing = head.framing(method).map_err(io::Error::other)?;
            return Ok((head, framing));
        }
        if fill(c, deadline)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Reads more bytes into the connection's buffer before `deadline`.
fn fill(c: &mut Conn, deadline: Instant) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out("request deadline"));
    }
    c.tls.sock.set_read_timeout(Some(left))?;
    let mut tmp = [0u8; 16 * 1024];
    match c.tls.read(&mut tmp) {
        Ok(n) => {
            c.buf.extend_from_slice(&tmp[..n]);
            Ok(n)
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(timed_out("request deadline")),
        Err(e) => Err(e),
    }
}

/// The next piece of body (None at its end), read before `deadline`.
fn read_body(
    c: &mut Conn,
    dec: &mut BodyDecoder,
    deadline: Instant,
) -> io::Result<Option<Vec<u8>>> {
    loop {
        match dec.decode(&c.buf).map_err(io::Error::other)? {
            Decoded::Data { start, end } => {
                let piece = c.buf[start..end].to_vec();
                c.buf.drain(..end);
                return Ok(Some(piece));
            }
            Decoded::Skip(n) => {
                c.buf.drain(..n);
            }
            Decoded::Done(n) => {
                c.buf.drain(..n);
                return Ok(None);
            }
            Decoded::NeedMore => {
                if fill(c, deadline)? == 0 {
                    dec.finish_at_eof().map_err(io::Error::other)?;
                    return Ok(None);
                }
            }
        }
    }
}

/// What reading a watch gave.
pub enum Next {
    /// One event line.
    Line(String),
    /// Nothing yet (look at the stop flag, then read again).
    Pending,
    /// The stream ended cleanly.
    End,
}

impl Stream {
    /// Reads the next event line, waiting at most [`POLL`]; an error when
    /// the connection broke or (with an idle limit) stayed silent too long.
    pub fn next(&mut self) -> io::Result<Next> {
        loop {
            if let Some(nl) = self.lines.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.lines.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                return Ok(Next::Line(text));
            }
            let before = self.conn.buf.len();
            match read_body(&mut self.conn, &mut self.dec, Instant::now() + POLL) {
                Ok(Some(piece)) => {
                    self.last_byte = Instant::now();
                    self.lines.extend_from_slice(&piece);
                }
                Ok(None) => return Ok(Next::End),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    if self.conn.buf.len() > before {
                        self.last_byte = Instant::now();
                    }
                    if self
                        .idle_limit
                        .is_some_and(|limit| self.last_byte.elapsed() >= limit)
                    {
                        return Err(timed_out("connection silent (health check)"));
                    }
                    return Ok(Next::Pending);
                }
                Err(e) => return Err(e),
            }
        }
    }
}
