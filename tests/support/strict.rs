//! A strict *recording upstream* for the HTTP framing conformance test, and
//! a raw TLS client that writes exact bytes.
//!
//! The upstream reads what lite-apiserver forwards with its own framing
//! code, written from RFC 9112 and independent of `lite_apiserver::http`
//! (a conformance test must not trust the parser it checks). Per TCP
//! connection it records every complete request (method, target, headers
//! in order, raw framing lines, body bytes) and how the connection ended:
//! a clean close between requests, an abort in the middle of a request, or
//! a desync (bytes a strict reader refuses: recorded raw, then closed).
//!
//! Every request gets a 200 `application/json` ConfigMap whose body names
//! the request (target, method, SHA-256 of the body), so a client that gets
//! someone else's answer, or a cache entry holding one, is easy to spot.
//! For chosen paths it misbehaves on purpose ([`Misbehavior`]): the
//! response-side vectors. Once it has misbehaved on a connection, every
//! later request on that connection is flagged: the proxy must never reuse
//! a connection with a framing doubt.
//!
//! Threads and blocking I/O; `Drop` closes the listener and every socket.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;

use super::pki::{Pair, Pki};

/// Largest request head the strict reader accepts.
const MAX_HEAD: usize = 64 * 1024;
/// Largest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Largest body the recorder keeps (the corpus sends a few bytes).
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// One request as the strict reader parsed it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Global order of events in this upstream (requests and connection ends).
    pub seq: u64,
    pub method: String,
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Every field line, in order, as received (value trimmed of OWS).
    pub headers: Vec<(String, String)>,
    /// The raw `Content-Length` / `Transfer-Encoding` field lines.
    pub framing: Vec<String>,
    /// The body bytes (de-chunked when chunked).
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
    /// Chunk extensions seen (raw, after the size).
    pub chunk_exts: Vec<String>,
    /// Trailer field lines seen.
    pub trailers: Vec<String>,
    /// Set when this request arrived on a connection after this upstream
    /// had sent a malformed answer on it (the proxy reused a doubtful
    /// connection).
    pub after_misbehavior: Option<Misbehavior>,
}

impl Seen {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The target's path (no query).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// A one-line description for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} {} {} framing={:?} body={:?}{}{}{}",
            self.method,
            self.target,
            self.version,
            self.framing,
            String::from_utf8_lossy(&self.body),
            if self.chunk_exts.is_empty() {
                String::new()
            } else {
                format!(" exts={:?}", self.chunk_exts)
            },
            if self.trailers.is_empty() {
                String::new()
            } else {
                format!(" trailers={:?}", self.trailers)
            },
            match self.after_misbehavior {
                Some(m) => format!(" AFTER-MISBEHAVIOR({m:?})"),
                None => String::new(),
            }
        )
    }
}

/// How a connection ended (so far).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Still open.
    Open,
    /// EOF (or a TLS/socket error) between requests.
    Clean(String),
    /// EOF or an error in the middle of a request; the bytes of the
    /// unfinished request.
    Aborted { why: String, partial: Vec<u8> },
    /// Bytes the strict reader refuses; it closed the connection.
    Desync { why: String, raw: Vec<u8> },
    /// This upstream closed it (`Connection: close`, or a misbehavior).
    ClosedByUpstream(String),
}

/// What happened on one TCP connection.
#[derive(Clone, Debug)]
pub struct ConnRecord {
    pub id: usize,
    /// Complete requests, in order (since the last [`StrictUpstream::clear`]).
    pub requests: Vec<Seen>,
    pub end: End,
    /// [`Seen::seq`]-ordered time of the end (0 while open).
    pub end_seq: u64,
    /// Bytes of a request that has started but is not complete yet.
    pub pending: Vec<u8>,
    /// The malformed answer this upstream sent on this connection, if any.
    pub misbehaved: Option<Misbehavior>,
}

impl ConnRecord {
    /// Whether a request is half-way in.
    pub fn mid_request(&self) -> bool {
        self.end == End::Open && !self.pending.is_empty()
    }

    /// A description for failure messages.
    pub fn describe(&self) -> String {
        let mut s = format!("conn#{} end={}", self.id, describe_end(&self.end));
        if let Some(m) = self.misbehaved {
            s.push_str(&format!(" misbehaved={m:?}"));
        }
        if !self.pending.is_empty() {
            s.push_str(&format!(" pending={}", show(&self.pending)));
        }
        for r in &self.requests {
            s.push_str(&format!("\n      #{} {}", r.seq, r.describe()));
        }
        s
    }
}

/// `End` for humans.
pub fn describe_end(end: &End) -> String {
    match end {
        End::Open => "open".into(),
        End::Clean(why) => format!("clean ({why})"),
        End::Aborted { why, partial } => format!("ABORTED ({why}) partial={}", show(partial)),
        End::Desync { why, raw } => format!("DESYNC ({why}) raw={}", show(raw)),
        End::ClosedByUpstream(why) => format!("closed by upstream ({why})"),
    }
}

/// Bytes for humans: escaped, cut at 400.
pub fn show(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(400)];
    let mut s = String::from("\"");
    for &b in cut {
        s.extend(std::ascii::escape_default(b).map(char::from));
    }
    s.push('"');
    if bytes.len() > cut.len() {
        s.push_str(&format!("...({} bytes)", bytes.len()));
    }
    s
}

/// A malformed answer on purpose (response-side vectors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehavior {
    /// `Content-Length` and `Transfer-Encoding: chunked` together.
    ClAndTe,
    /// A chunk size that is not hex (`zz`).
    BadChunkSize,
    /// A chunk size of 17 significant hex digits.
    ChunkSizeOverflow,
    /// Chunk data followed by `XX` instead of CRLF.
    ChunkDataNoCrlf,
    /// One chunk, then a close without the last chunk.
    ChunkedCutThenClose,
    /// Half of the `Content-Length` bytes, then a close.
    TruncatedThenClose,
    /// A complete answer followed, in the same write, by a second complete
    /// answer nobody asked for (naming `/smuggled`).
    ExtraBytes,
    /// A complete answer; 30 ms later, unasked bytes (a full answer naming
    /// `/smuggled`) while the connection sits idle.
    LateExtraBytes,
    /// `Transfer-Encoding: gzip`.
    TeGzip,
    /// `HTTP/1.1 200 OK\n`: a status line ending in a bare LF.
    BareLfStatus,
    /// Two `Content-Length` fields that differ.
    TwoContentLengths,
    /// `Content-Length: +N`.
    ContentLengthPlus,
}

struct Shared {
    tls: Arc<rustls::ServerConfig>,
    running: AtomicBool,
    sockets: Mutex<Vec<TcpStream>>,
    conns: Mutex<Vec<ConnRecord>>,
    seq: AtomicU64,
    next_id: AtomicU64,
    rv: AtomicU64,
    misbehave: Mutex<HashMap<String, Misbehavior>>,
}

/// The running recorder.
pub struct StrictUpstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl StrictUpstream {
    /// Serves TLS (the PKI's upstream pair, ALPN http/1.1, client certs
    /// optional) on 127.0.0.1 with a fresh port.
    pub fn start(pki: &Pki) -> StrictUpstream {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.upstream.cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&pki.upstream.key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&pki.ca.pem).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let shared = Arc::new(Shared {
            tls: Arc::new(tls),
            running: AtomicBool::new(true),
            sockets: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            rv: AtomicU64::new(100),
            misbehave: Mutex::new(HashMap::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let s = shared.clone();
        let acceptor = std::thread::spawn(move || accept_loop(s, listener));
        StrictUpstream {
            shared,
            addr,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Requests for exactly `path` (no query) get `how` as their answer.
    pub fn misbehave(&self, path: &str, how: Misbehavior) {
        self.shared
            .misbehave
            .lock()
            .unwrap()
            .insert(path.to_owned(), how);
    }

    /// A snapshot of every connection's record.
    pub fn connections(&self) -> Vec<ConnRecord> {
        self.shared.conns.lock().unwrap().clone()
    }

    /// The current position in the event order: everything recorded later
    /// has a greater `seq`.
    pub fn mark(&self) -> u64 {
        let _guard = self.shared.conns.lock().unwrap();
        self.shared.seq.load(Ordering::SeqCst)
    }

    /// [`StrictUpstream::mark`] and [`StrictUpstream::connections`] at one
    /// instant: every record in the snapshot has `seq` <= the mark.
    pub fn snapshot(&self) -> (u64, Vec<ConnRecord>) {
        let conns = self.shared.conns.lock().unwrap();
        (self.shared.seq.load(Ordering::SeqCst), conns.clone())
    }

    /// Forgets ended connections and the requests of open ones (an open
    /// connection keeps its misbehavior flag).
    pub fn clear(&self) {
        let mut conns = self.shared.conns.lock().unwrap();
        conns.retain(|c| c.end == End::Open);
        for c in conns.iter_mut() {
            c.requests.clear();
        }
    }

    /// Waits until `pred` holds for the records; false at the deadline.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[ConnRecord]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.shared.conns.lock().unwrap()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for StrictUpstream {
    fn drop(&mut self) {
        self.shared.running.store(false, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for s in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    while shared.running.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((tcp, _)) => {
                let _ = tcp.set_nonblocking(false);
                let _ = tcp.set_nodelay(true);
                if let Ok(clone) = tcp.try_clone() {
                    shared.sockets.lock().unwrap().push(clone);
                }
                let id = shared.next_id.fetch_add(1, Ordering::SeqCst) as usize;
                shared.conns.lock().unwrap().push(ConnRecord {
                    id,
                    requests: Vec::new(),
                    end: End::Open,
                    end_seq: 0,
                    pending: Vec::new(),
                    misbehaved: None,
                });
                let shared = shared.clone();
                std::thread::spawn(move || serve(&shared, id, tcp));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

type ServerTls = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

impl Shared {
    fn update(&self, id: usize, f: impl FnOnce(&mut ConnRecord, u64)) {
        let mut conns = self.conns.lock().unwrap();
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(c) = conns.iter_mut().find(|c| c.id == id) {
            f(c, seq);
        }
    }

    fn end(&self, id: usize, end: End) {
        self.update(id, |c, seq| {
            if c.end == End::Open {
                c.end = end;
                c.end_seq = seq;
                c.pending.clear();
            }
        });
    }
}

/// One connection: read strictly, record, answer, until EOF or a desync.
fn serve(shared: &Shared, id: usize, tcp: TcpStream) {
    let conn = match rustls::ServerConnection::new(shared.tls.clone()) {
        Ok(c) => c,
        Err(e) => return shared.end(id, End::Clean(format!("TLS setup: {e}"))),
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut buf: Vec<u8> = Vec::new();
    let mut misbehaved: Option<Misbehavior> = None;
    loop {
        // Everything complete in the buffer first (a pipelining sender).
        loop {
            match parse_request(&buf) {
                Parse::More => break,
                Parse::Bad(why) => {
                    shared.end(id, End::Desync { why, raw: buf });
                    close(&mut tls);
                    return;
                }
                Parse::Done(req, used) => {
                    buf.drain(..used);
                    let keep_alive = req.keep_alive();
                    let rest = buf.clone();
                    let mut seen = req.into_seen(0, misbehaved);
                    shared.update(id, |c, s| {
                        seen.seq = s;
                        c.pending = rest;
                        c.requests.push(seen.clone());
                    });
                    let bad = shared.misbehave.lock().unwrap().get(seen.path()).copied();
                    let rv = shared.rv.fetch_add(1, Ordering::SeqCst);
                    let answer = answer_for(&seen, rv);
                    let outcome = match bad {
                        Some(how) => misbehave(&mut tls, how, &answer, rv),
                        None => plain(&mut tls, &seen, &answer),
                    };
                    if let Some(how) = bad {
                        misbehaved = Some(how);
                        shared.update(id, |c, _| c.misbehaved = Some(how));
                    }
                    match outcome {
                        Ok(true) if keep_alive => {}
                        Ok(true) => {
                            shared.end(id, End::ClosedByUpstream("Connection: close".into()));
                            close(&mut tls);
                            return;
                        }
                        Ok(false) => {
                            shared.end(id, End::ClosedByUpstream(format!("{bad:?}")));
                            close(&mut tls);
                            return;
                        }
                        Err(e) => {
                            shared.end(id, End::Clean(format!("write: {e}")));
                            let _ = tls.sock.shutdown(Shutdown::Both);
                            return;
                        }
                    }
                }
            }
        }
        let mut tmp = [0u8; 16 * 1024];
        let got = tls.read(&mut tmp);
        let n = match got {
            Ok(0) => Err("EOF".to_owned()),
            Ok(n) => Ok(n),
            Err(e) => Err(format!("read: {e}")),
        };
        match n {
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                let pending = buf.clone();
                shared.update(id, |c, _| c.pending = pending);
            }
            Err(why) => {
                let end = if buf.is_empty() {
                    End::Clean(why)
                } else {
                    End::Aborted {
                        why,
                        partial: std::mem::take(&mut buf),
                    }
                };
                shared.end(id, end);
                // The accept loop keeps a clone of the socket: shut it so
                // the peer sees the close now.
                let _ = tls.sock.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

fn close(tls: &mut ServerTls) {
    tls.conn.send_close_notify();
    let _ = tls.flush();
    let _ = tls.sock.shutdown(Shutdown::Both);
}

/// The body that names `seen`: a ConfigMap whose name is the last path
/// segment; `/readyz` and `/openid/...` are special.
fn answer_for(seen: &Seen, rv: u64) -> Vec<u8> {
    let name = seen.path().rsplit('/').next().unwrap_or("");
    let sha = ring::digest::digest(&ring::digest::SHA256, &seen.body);
    let hex: String = sha.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    serde_json::to_vec(&serde_json::json!({
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": rv.to_string()},
        "data": {"target": seen.target, "method": seen.method, "body-sha": hex},
    }))
    .unwrap()
}

/// A well-formed answer; Ok(true): the connection stays usable.
fn plain(tls: &mut ServerTls, seen: &Seen, answer: &[u8]) -> io::Result<bool> {
    let (status, ctype, body): (u16, &str, Vec<u8>) = if seen.path().ends_with("/readyz") {
        (200, "text/plain; charset=utf-8", b"ok".to_vec())
    } else if seen.path().starts_with("/openid/") {
        let s = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "the server could not find the requested resource",
            "reason": "NotFound", "details": {}, "code": 404});
        (404, "application/json", serde_json::to_vec(&s).unwrap())
    } else {
        (200, "application/json", answer.to_vec())
    };
    let reason = if status == 200 { "OK" } else { "Not Found" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    tls.write_all(&out)?;
    tls.flush()?;
    Ok(true)
}

/// A malformed answer on purpose; Ok(false): this upstream closes now.
fn misbehave(tls: &mut ServerTls, how: Misbehavior, answer: &[u8], rv: u64) -> io::Result<bool> {
    let len = answer.len();
    let ct = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n";
    let body = String::from_utf8_lossy(answer).into_owned();
    let good = format!("{ct}Content-Length: {len}\r\n\r\n{body}");
    let smuggled = {
        let s = Seen {
            seq: 0,
            method: "GET".into(),
            target: "/smuggled".into(),
            version: "HTTP/1.1".into(),
            headers: Vec::new(),
            framing: Vec::new(),
            body: Vec::new(),
            chunked: false,
            chunk_exts: Vec::new(),
            trailers: Vec::new(),
            after_misbehavior: None,
        };
        let b = String::from_utf8_lossy(&answer_for(&s, rv)).into_owned();
        format!("{ct}Content-Length: {}\r\n\r\n{b}", b.len())
    };
    let (bytes, keep) = match how {
        Misbehavior::ClAndTe => (
            format!("{ct}Content-Length: {len}\r\nTransfer-Encoding: chunked\r\n\r\n{len:x}\r\n{body}\r\n0\r\n\r\n"),
            true,
        ),
        Misbehavior::BadChunkSize => (
            format!("{ct}Transfer-Encoding: chunked\r\n\r\nzz\r\n{body}\r\n0\r\n\r\n"),
            true,
        ),
        Misbehavior::ChunkSizeOverflow => (
            format!("{ct}Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n{body}\r\n0\r\n\r\n"),
            true,
        ),
        Misbehavior::ChunkDataNoCrlf => (
            format!("{ct}Transfer-Encoding: chunked\r\n\r\n{len:x}\r\n{body}XX0\r\n\r\n"),
            true,
        ),
        Misbehavior::ChunkedCutThenClose => (
            format!("{ct}Transfer-Encoding: chunked\r\n\r\n{len:x}\r\n{body}\r\n"),
            false,
        ),
        Misbehavior::TruncatedThenClose => {
            (format!("{ct}Content-Length: {len}\r\n\r\n{}", &body[..len / 2]), false)
        }
        Misbehavior::ExtraBytes => (format!("{good}{smuggled}"), true),
        Misbehavior::LateExtraBytes => {
            tls.write_all(good.as_bytes())?;
            tls.flush()?;
            std::thread::sleep(Duration::from_millis(30));
            (smuggled, true)
        }
        Misbehavior::TeGzip => (
            format!("{ct}Transfer-Encoding: gzip\r\n\r\n\x1f\u{8b}{body}"),
            true,
        ),
        Misbehavior::BareLfStatus => (
            format!("HTTP/1.1 200 OK\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{body}"),
            true,
        ),
        Misbehavior::TwoContentLengths => (
            format!("{ct}Content-Length: {len}\r\nContent-Length: {}\r\n\r\n{body}xx", len + 2),
            true,
        ),
        Misbehavior::ContentLengthPlus => {
            (format!("{ct}Content-Length: +{len}\r\n\r\n{body}"), true)
        }
    };
    tls.write_all(bytes.as_bytes())?;
    tls.flush()?;
    Ok(keep)
}

// ---------------------------------------------------------------------------
// The strict reader (RFC 9112), independent of the crate's parser.

/// A complete request, before it gets a sequence number.
struct Parsed {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    framing: Vec<String>,
    body: Vec<u8>,
    chunked: bool,
    chunk_exts: Vec<String>,
    trailers: Vec<String>,
}

impl Parsed {
    fn keep_alive(&self) -> bool {
        let tokens: Vec<String> = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
            .collect();
        if self.version == "HTTP/1.0" {
            tokens.iter().any(|t| t == "keep-alive")
        } else {
            !tokens.iter().any(|t| t == "close")
        }
    }

    fn into_seen(self, seq: u64, after: Option<Misbehavior>) -> Seen {
        Seen {
            seq,
            method: self.method,
            target: self.target,
            version: self.version,
            headers: self.headers,
            framing: self.framing,
            body: self.body,
            chunked: self.chunked,
            chunk_exts: self.chunk_exts,
            trailers: self.trailers,
            after_misbehavior: after,
        }
    }
}

enum Parse {
    /// Not complete yet (and nothing wrong so far).
    More,
    /// Not a strict HTTP/1.1 request.
    Bad(String),
    /// A request and the bytes it used.
    Done(Parsed, usize),
}

/// `tchar` of RFC 9110.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// The next CRLF-terminated line from `at`: Ok(None) if not complete yet;
/// Err on a bare LF or bare CR.
fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, String> {
    let rest = &buf[at..];
    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
        // A CR that is followed by anything but LF is bare.
        if let Some(cr) = rest.iter().position(|&b| b == b'\r') {
            if cr + 1 < rest.len() {
                return Err(format!("bare CR at byte {}", at + cr));
            }
        }
        return Ok(None);
    };
    if lf == 0 || rest[lf - 1] != b'\r' {
        return Err(format!("bare LF at byte {}", at + lf));
    }
    let text = &rest[..lf - 1];
    if let Some(cr) = text.iter().position(|&b| b == b'\r') {
        return Err(format!("bare CR at byte {}", at + cr));
    }
    Ok(Some((text, at + lf + 1)))
}

/// `field-name ":" OWS field-value OWS`, strictly (no obs-fold, no space
/// before the colon, no CTLs but HTAB in the value).
fn field_line(text: &[u8]) -> Result<(String, String), String> {
    if matches!(text.first(), Some(b' ' | b'\t')) {
        return Err(format!("obs-fold line {}", show(text)));
    }
    let colon = text
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| format!("field line without colon {}", show(text)))?;
    let name = &text[..colon];
    if !is_token(name) {
        return Err(format!("bad field name {}", show(name)));
    }
    let value = trim_ows(&text[colon + 1..]);
    if let Some(&b) = value
        .iter()
        .find(|&&b| !(b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80))
    {
        return Err(format!("control byte 0x{b:02x} in field {}", show(name)));
    }
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

/// `method SP origin-form SP HTTP-version`.
fn request_line(text: &[u8]) -> Result<(String, String, String), String> {
    let parts: Vec<&[u8]> = text.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(format!("request line is not 3 parts: {}", show(text)));
    };
    if !is_token(method) {
        return Err(format!("bad method {}", show(method)));
    }
    if target.first() != Some(&b'/')
        || !target
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b'#')
    {
        return Err(format!("target not origin-form: {}", show(target)));
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(format!("bad version {}", show(version)));
    }
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((s(method), s(target), s(version)))
}

/// How the body is framed.
enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
}

/// RFC 9112 section 6.3 for a request, as the strict party.
fn body_kind(version: &str, headers: &[(String, String)]) -> Result<BodyKind, String> {
    let te: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.as_str())
        .collect();
    let cl: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_str())
        .collect();
    if !te.is_empty() && !cl.is_empty() {
        return Err("both Transfer-Encoding and Content-Length".into());
    }
    if !te.is_empty() {
        if version == "HTTP/1.0" {
            return Err("Transfer-Encoding in HTTP/1.0".into());
        }
        let codings: Vec<&str> = te
            .iter()
            .flat_map(|v| v.split(','))
            .map(|c| c.trim_matches([' ', '\t']))
            .filter(|c| !c.is_empty())
            .collect();
        if codings.len() != 1 || !codings[0].eq_ignore_ascii_case("chunked") {
            return Err(format!("transfer-codings {codings:?} are not just chunked"));
        }
        return Ok(BodyKind::Chunked);
    }
    let mut len = None;
    for v in cl {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("Content-Length {v:?} is not 1*DIGIT"));
        }
        let n: u64 = v
            .parse()
            .map_err(|_| format!("Content-Length {v:?} overflows"))?;
        if len.is_some_and(|l| l != n) {
            return Err("differing Content-Length values".into());
        }
        len = Some(n);
    }
    match len {
        Some(n) if n > MAX_BODY => Err(format!("Content-Length {n} too large for the recorder")),
        Some(n) => Ok(BodyKind::Length(n)),
        None => Ok(BodyKind::Empty),
    }
}

/// One request from the start of `buf`.
fn parse_request(buf: &[u8]) -> Parse {
    if buf.is_empty() {
        return Parse::More;
    }
    match parse_inner(buf) {
        Ok(Some((p, used))) => Parse::Done(p, used),
        Ok(None) => Parse::More,
        Err(why) => Parse::Bad(why),
    }
}

fn parse_inner(buf: &[u8]) -> Result<Option<(Parsed, usize)>, String> {
    let too_big = || {
        if buf.len() > MAX_HEAD {
            Err(format!("head larger than {MAX_HEAD} bytes"))
        } else {
            Ok(None)
        }
    };
    let Some((first, mut at)) = line(buf, 0)? else {
        return too_big();
    };
    let (method, target, version) = request_line(first)?;
    let mut headers = Vec::new();
    let mut framing = Vec::new();
    loop {
        let Some((text, next)) = line(buf, at)? else {
            return too_big();
        };
        at = next;
        if text.is_empty() {
            break;
        }
        let (name, value) = field_line(text)?;
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            framing.push(String::from_utf8_lossy(text).into_owned());
        }
        headers.push((name, value));
    }
    let hosts = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
        .count();
    if (version == "HTTP/1.1" && hosts != 1) || hosts > 1 {
        return Err(format!("{hosts} Host fields"));
    }
    let kind = body_kind(&version, &headers)?;
    let mut p = Parsed {
        method,
        target,
        version,
        headers,
        framing,
        body: Vec::new(),
        chunked: false,
        chunk_exts: Vec::new(),
        trailers: Vec::new(),
    };
    let used = match kind {
        BodyKind::Empty => at,
        BodyKind::Length(n) => {
            let end = at + n as usize;
            if buf.len() < end {
                return Ok(None);
            }
            p.body = buf[at..end].to_vec();
            end
        }
        BodyKind::Chunked => {
            p.chunked = true;
            match chunked_body(buf, at, &mut p)? {
                Some(end) => end,
                None => return Ok(None),
            }
        }
    };
    Ok(Some((p, used)))
}

/// A chunked body from `at`; Some(end) when complete.
fn chunked_body(buf: &[u8], mut at: usize, p: &mut Parsed) -> Result<Option<usize>, String> {
    loop {
        let Some((text, next)) = line(buf, at)? else {
            if buf.len() - at > MAX_CHUNK_LINE {
                return Err("chunk-size line longer than 4 KiB".into());
            }
            return Ok(None);
        };
        if text.len() > MAX_CHUNK_LINE {
            return Err("chunk-size line longer than 4 KiB".into());
        }
        let digits = text.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err(format!("chunk size is not hex: {}", show(text)));
        }
        let hex = std::str::from_utf8(&text[..digits]).unwrap();
        let significant = hex.trim_start_matches('0');
        if significant.len() > 16 {
            return Err(format!("chunk size {hex} overflows u64"));
        }
        let size = u64::from_str_radix(
            if significant.is_empty() {
                "0"
            } else {
                significant
            },
            16,
        )
        .map_err(|e| format!("chunk size {hex}: {e}"))?;
        let ext = &text[digits..];
        if !valid_chunk_ext(ext) {
            return Err(format!("bad chunk extension {}", show(ext)));
        }
        if !ext.is_empty() {
            p.chunk_exts.push(String::from_utf8_lossy(ext).into_owned());
        }
        at = next;
        if size == 0 {
            // Trailer section.
            loop {
                let Some((text, next)) = line(buf, at)? else {
                    return Ok(None);
                };
                at = next;
                if text.is_empty() {
                    return Ok(Some(at));
                }
                field_line(text).map_err(|e| format!("trailer: {e}"))?;
                p.trailers.push(String::from_utf8_lossy(text).into_owned());
            }
        }
        if p.body.len() as u64 + size > MAX_BODY {
            return Err(format!("chunk of {size} bytes too large for the recorder"));
        }
        let end = at + size as usize;
        if buf.len() < end + 2 {
            // Data, or its CRLF, not all here yet; a wrong byte already
            // present after the data is an error now.
            if buf.len() > end && buf[end] != b'\r' {
                return Err("chunk data not followed by CRLF".into());
            }
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(format!(
                "chunk data not followed by CRLF: {}",
                show(&buf[end..(end + 8).min(buf.len())])
            ));
        }
        p.body.extend_from_slice(&buf[at..end]);
        at = end + 2;
    }
}

/// `*( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )`.
fn valid_chunk_ext(s: &[u8]) -> bool {
    let bws = |i: &mut usize| {
        while *i < s.len() && (s[*i] == b' ' || s[*i] == b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < s.len() && is_tchar(s[*i]) {
            *i += 1;
        }
        *i > start
    };
    let mut i = 0;
    loop {
        if i == s.len() {
            return true;
        }
        bws(&mut i);
        if i == s.len() || s[i] != b';' {
            return false;
        }
        i += 1;
        bws(&mut i);
        if !token(&mut i) {
            return false;
        }
        let save = i;
        bws(&mut i);
        if i < s.len() && s[i] == b'=' {
            i += 1;
            bws(&mut i);
            if i < s.len() && s[i] == b'"' {
                i += 1;
                loop {
                    match s.get(i) {
                        None => return false,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => match s.get(i + 1) {
                            Some(&c) if c == b'\t' || c >= 0x20 && c != 0x7f => i += 2,
                            _ => return false,
                        },
                        Some(&c)
                            if c == b'\t'
                                || c == b' '
                                || c == 0x21
                                || (0x23..=0x5b).contains(&c)
                                || (0x5d..=0x7e).contains(&c)
                                || c >= 0x80 =>
                        {
                            i += 1
                        }
                        Some(_) => return false,
                    }
                }
            } else if !token(&mut i) {
                return false;
            }
        } else {
            i = save;
        }
    }
}

// ---------------------------------------------------------------------------
// The raw client.

/// One step of what the raw client does on its connection.
#[derive(Clone, Debug)]
pub enum Step {
    /// Write these bytes (one TLS write).
    Send(Vec<u8>),
    /// Read until an interim (1xx) or final answer arrives (at most 1 s).
    AwaitInterim,
    /// Send close_notify and shut the socket's write side.
    CloseWrite,
}

/// A response as the raw client read it.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `data.target` of a recorder answer.
    pub fn named_target(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["data"]["target"].as_str().map(str::to_owned)
    }

    pub fn describe(&self) -> String {
        format!("{} {}", self.status, show(&self.body))
    }
}

/// What came back on one raw connection.
#[derive(Clone, Debug, Default)]
pub struct Exchange {
    /// Every byte received.
    pub raw: Vec<u8>,
    /// Interim (1xx) statuses, in order.
    pub interim: Vec<u16>,
    /// Complete final responses, in order.
    pub finals: Vec<Resp>,
    /// A response whose head arrived but whose body did not end.
    pub partial: Option<String>,
    /// Bytes that are not an HTTP response.
    pub garbage: Option<String>,
    /// The server closed (how), before the deadline.
    pub closed: Option<String>,
    /// The deadline passed with the connection still open.
    pub timed_out: bool,
    /// A connect/write error.
    pub error: Option<String>,
}

impl Exchange {
    /// Whether any complete 2xx answer arrived.
    pub fn got_2xx(&self) -> bool {
        self.finals.iter().any(|r| (200..300).contains(&r.status))
    }

    pub fn statuses(&self) -> Vec<u16> {
        self.finals.iter().map(|r| r.status).collect()
    }

    pub fn describe(&self) -> String {
        let mut s = format!("finals={:?}", self.statuses());
        if !self.interim.is_empty() {
            s.push_str(&format!(" interim={:?}", self.interim));
        }
        if let Some(p) = &self.partial {
            s.push_str(&format!(" partial=({p})"));
        }
        if let Some(g) = &self.garbage {
            s.push_str(&format!(" garbage=({g})"));
        }
        match &self.closed {
            Some(how) => s.push_str(&format!(" closed({how})")),
            None if self.timed_out => s.push_str(" STILL-OPEN-AT-DEADLINE"),
            None => s.push_str(" open"),
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(" error=({e})"));
        }
        s.push_str(&format!(" raw={}", show(&self.raw)));
        s
    }
}

/// A TLS client that writes exactly the bytes it is given.
#[derive(Clone)]
pub struct RawClient {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

type ClientTls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

impl RawClient {
    /// Trusts `ca`; presents `cert` if given; ALPN http/1.1.
    pub fn new(addr: SocketAddr, ca: &Path, cert: Option<&Pair>) -> RawClient {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match cert {
            Some(pair) => {
                let chain: Vec<_> = CertificateDer::pem_file_iter(&pair.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let key = PrivateKeyDer::from_pem_file(&pair.key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        RawClient {
            addr,
            config: Arc::new(config),
        }
    }

    fn connect(&self) -> io::Result<ClientTls> {
        let tcp = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let conn = rustls::ClientConnection::new(
            self.config.clone(),
            ServerName::try_from("127.0.0.1").unwrap(),
        )
        .map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(tls)
    }

    /// Runs `steps` on a new connection, then reads until `want` final
    /// answers arrived (and, with `wait_close`, the server closed), the
    /// server closed, or `deadline` passes.
    pub fn exchange(
        &self,
        steps: &[Step],
        want: usize,
        wait_close: bool,
        deadline: Duration,
    ) -> Exchange {
        let mut ex = Exchange::default();
        let mut tls = match self.connect() {
            Ok(t) => t,
            Err(e) => {
                ex.error = Some(format!("connect: {e}"));
                return ex;
            }
        };
        let end = Instant::now() + deadline;
        let mut reader = Reader::default();
        for step in steps {
            match step {
                Step::Send(bytes) => {
                    if let Err(e) = tls.write_all(bytes).and_then(|_| tls.flush()) {
                        ex.error = Some(format!("write: {e}"));
                        break;
                    }
                }
                Step::AwaitInterim => {
                    let until = (Instant::now() + Duration::from_secs(1)).min(end);
                    reader.read_until(&mut tls, &mut ex, until, |ex| {
                        !ex.interim.is_empty() || !ex.finals.is_empty()
                    });
                    if ex.closed.is_some() {
                        break;
                    }
                }
                Step::CloseWrite => {
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                    let _ = tls.sock.shutdown(Shutdown::Write);
                }
            }
        }
        if ex.closed.is_none() {
            reader.read_until(&mut tls, &mut ex, end, |ex| {
                !wait_close && ex.finals.len() >= want
            });
            ex.timed_out = ex.closed.is_none() && Instant::now() >= end;
        }
        ex.partial = reader.pending_description();
        ex
    }
}

/// Incremental response reading for [`RawClient`].
#[derive(Default)]
struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    /// Reads and parses until `done(ex)`, a close, garbage or `until`.
    fn read_until(
        &mut self,
        tls: &mut ClientTls,
        ex: &mut Exchange,
        until: Instant,
        done: impl Fn(&Exchange) -> bool,
    ) {
        loop {
            self.parse_all(ex, false);
            if done(ex) || ex.garbage.is_some() {
                return;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let _ = tls.sock.set_read_timeout(Some(left));
            let mut tmp = [0u8; 16 * 1024];
            match tls.read(&mut tmp) {
                Ok(0) => {
                    ex.closed = Some("EOF".into());
                    self.parse_all(ex, true);
                    return;
                }
                Ok(n) => {
                    ex.raw.extend_from_slice(&tmp[..n]);
                    self.buf.extend_from_slice(&tmp[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return
                }
                Err(e) => {
                    ex.closed = Some(format!("{e}"));
                    self.parse_all(ex, true);
                    return;
                }
            }
        }
    }

    fn parse_all(&mut self, ex: &mut Exchange, eof: bool) {
        while !self.buf.is_empty() && ex.garbage.is_none() {
            match parse_response(&self.buf, eof) {
                RespParse::More => return,
                RespParse::Garbage(why) => {
                    ex.garbage = Some(format!("{why}: {}", show(&self.buf)));
                    return;
                }
                RespParse::Done(resp, used) => {
                    self.buf.drain(..used);
                    if (100..200).contains(&resp.status) {
                        ex.interim.push(resp.status);
                    } else {
                        ex.finals.push(resp);
                    }
                }
            }
        }
    }

    fn pending_description(&self) -> Option<String> {
        (!self.buf.is_empty()).then(|| format!("unfinished response {}", show(&self.buf)))
    }
}

enum RespParse {
    More,
    Garbage(String),
    Done(Resp, usize),
}

/// One response from the start of `buf` (an observer's reading: it accepts
/// what a careful client would, and says what it could not read).
fn parse_response(buf: &[u8], eof: bool) -> RespParse {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= 5 && !buf.starts_with(b"HTTP/") {
            return RespParse::Garbage("not a status line".into());
        }
        return RespParse::More;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status: Option<u16> = parts.next().and_then(|s| s.parse().ok());
    let Some(status) = status.filter(|_| version.starts_with("HTTP/1.")) else {
        return RespParse::Garbage(format!("bad status line {status_line:?}"));
    };
    let mut headers = Vec::new();
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            return RespParse::Garbage(format!("bad header line {l:?}"));
        };
        headers.push((k.to_owned(), v.trim().to_owned()));
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    let at = head_end + 4;
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return RespParse::Done(resp, at);
    }
    let te = resp
        .header("transfer-encoding")
        .map(str::to_ascii_lowercase);
    if let Some(te) = te {
        if !te.trim().ends_with("chunked") {
            return RespParse::Garbage(format!("response Transfer-Encoding {te:?}"));
        }
        let mut i = at;
        loop {
            let Some(lf) = buf[i..].windows(2).position(|w| w == b"\r\n") else {
                return RespParse::More;
            };
            let size_text = String::from_utf8_lossy(&buf[i..i + lf]).into_owned();
            let hex = size_text.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(hex, 16) else {
                return RespParse::Garbage(format!("bad chunk size {size_text:?}"));
            };
            i += lf + 2;
            if size == 0 {
                // Trailers up to the empty line.
                loop {
                    let Some(lf) = buf[i..].windows(2).position(|w| w == b"\r\n") else {
                        return RespParse::More;
                    };
                    i += lf + 2;
                    if lf == 0 {
                        return RespParse::Done(resp, i);
                    }
                }
            }
            if buf.len() < i + size + 2 {
                return RespParse::More;
            }
            if &buf[i + size..i + size + 2] != b"\r\n" {
                return RespParse::Garbage("chunk data not followed by CRLF".into());
            }
            resp.body.extend_from_slice(&buf[i..i + size]);
            i += size + 2;
        }
    }
    if let Some(cl) = resp.header("content-length") {
        let Ok(n) = cl.parse::<usize>() else {
            return RespParse::Garbage(format!("bad Content-Length {cl:?}"));
        };
        if buf.len() < at + n {
            return RespParse::More;
        }
        resp.body = buf[at..at + n].to_vec();
        return RespParse::Done(resp, at + n);
    }
    if eof {
        resp.body = buf[at..].to_vec();
        return RespParse::Done(resp, buf.len());
    }
    RespParse::More
}
