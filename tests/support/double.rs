//! A kube-apiserver double over TLS that answers like a real v1.36 one
//! (shapes from `../shared/fixtures/`): discovery, get/list/watch/create/
//! update/patch/delete of any resource under `/api/v1` and `/apis/G/V`,
//! Table and PartialObjectMetadata answers, paging, watch streams with one
//! event per chunk, bookmarks, 410 for compacted resourceVersions,
//! TokenRequest, service-account JWTs and their JWKS, authentication by
//! client certificate or bearer token, and a log of what it was asked.
//!
//! Threads, blocking I/O: simple and fast enough for the benchmark. `stop`
//! closes the listener and every open connection at once (a cut link);
//! `restart` binds the same port again.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lite_apiserver::http::{BodyDecoder, Decoded, Framing, RequestHead};
use lite_apiserver::k8s::request::{Classified, Verb};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::{json, Value};

use super::pki::Pki;
use super::sa::Signer;
use super::world::{self, Obj, ObjKey, Selectors, World};

/// What one request looked like.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    /// The authenticated user (None: anonymous or refused).
    pub user: Option<String>,
    /// CN of the client certificate, if any.
    pub cn: Option<String>,
    /// SHA-256 (hex) of the client certificate, if any.
    pub cert_sha: Option<String>,
    pub authorization: Option<String>,
    pub user_agent: Option<String>,
    pub accept: Option<String>,
    /// Every header as received.
    pub headers: Vec<(String, String)>,
    /// When the request's head and body had arrived.
    pub at: Instant,
}

/// One accepted TCP connection, from the double's side.
#[derive(Clone, Copy, Debug)]
pub struct ConnLife {
    /// When it was accepted.
    pub opened: Instant,
    /// When its first request had arrived (so the TLS handshake was done).
    pub first_request: Option<Instant>,
    /// When the double stopped serving it (closed by either side).
    pub closed: Option<Instant>,
}

/// Knobs.
#[derive(Clone, Default)]
pub struct Opts {
    /// Static bearer tokens: (token, user).
    pub tokens: Vec<(String, String)>,
    /// Users that may only read (403 on writes).
    pub read_only: Vec<String>,
    /// Skip seeding the default world.
    pub empty: bool,
}

struct Shared {
    world: Mutex<World>,
    changed: Condvar,
    requests: Mutex<Vec<Recorded>>,
    running: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
    tls: Arc<rustls::ServerConfig>,
    signer: Signer,
    opts: Opts,
    delay_ms: AtomicU64,
    recording: AtomicBool,
    /// Per-request delays: ("METHOD target" substring, ms).
    delay_rules: Mutex<Vec<(String, u64)>>,
    /// "METHOD target" of requests a rule delayed, logged on arrival.
    delayed: Mutex<Vec<String>>,
    /// Every accepted connection, in accept order.
    conn_log: Mutex<Vec<ConnLife>>,
}

/// The running double.
pub struct Double {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

impl Double {
    /// Starts on 127.0.0.1 with a fresh port, the default world seeded.
    pub fn start(pki: &Pki, opts: Opts) -> Double {
        Double::start_on(pki, opts, "127.0.0.1:0".parse().unwrap())
    }

    /// Starts on `bind` (e.g. the host end of a namespace's veth link).
    pub fn start_on(pki: &Pki, opts: Opts, bind: SocketAddr) -> Double {
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
            world: Mutex::new(World::default()),
            changed: Condvar::new(),
            requests: Mutex::new(Vec::new()),
            running: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            tls: Arc::new(tls),
            signer: Signer::new(),
            opts: opts.clone(),
            delay_ms: AtomicU64::new(0),
            recording: AtomicBool::new(true),
            delay_rules: Mutex::new(Vec::new()),
            delayed: Mutex::new(Vec::new()),
            conn_log: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut double = Double {
            shared,
            addr,
            acceptor: None,
        };
        if !opts.empty {
            double.seed();
        }
        double.listen(listener);
        double
    }

    fn seed(&self) {
        let mut w = self.shared.world.lock().unwrap();
        for i in 1..=3 {
            w.put(
                key("/api/v1", "pods", "edge", &format!("web-{i}")),
                world::pod("edge", &format!("web-{i}"), "edge-1", 0),
            );
        }
        w.put(
            key("/api/v1", "configmaps", "edge", "app-config"),
            json!({"data": {"mode": "edge", "greeting": "hello"}}),
        );
        w.put(
            key("/api/v1", "secrets", "edge", "app-secret"),
            json!({"type": "Opaque", "data": {"password": "czNjcjN0"}}),
        );
        w.put(
            key("/api/v1", "namespaces", "", "edge"),
            json!({"spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        );
        w.put(key("/api/v1", "nodes", "", "edge-1"), json!({"metadata": {"labels": {"kubernetes.io/hostname": "edge-1"}}, "status": {"conditions": []}}));
        w.put(
            key("/apis/coordination.k8s.io/v1", "leases", "kube-node-lease", "edge-1"),
            json!({"spec": {"holderIdentity": "edge-1", "leaseDurationSeconds": 40, "renewTime": "2026-11-23T07:50:43.000000Z"}}),
        );
        w.put(
            key("/apis/edge.example.com/v1", "widgets", "edge", "w1"),
            json!({"spec": {"size": 3}}),
        );
        w.put(
            key("/api/v1", "serviceaccounts", "edge", "default"),
            json!({}),
        );
    }

    fn listen(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        self.shared.running.store(true, Ordering::SeqCst);
        let shared = self.shared.clone();
        self.acceptor = Some(std::thread::spawn(move || accept_loop(shared, listener)));
    }

    /// Cuts the link: no more accepts, every open connection closed.
    pub fn stop(&mut self) {
        self.shared.running.store(false, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for c in self.shared.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.shared.changed.notify_all();
    }

    /// Serves again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("rebinding {}: {e}", self.addr),
            }
        };
        self.listen(listener);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.shared.requests.lock().unwrap().clear();
    }

    /// Every connection accepted so far, in accept order (a fleet bench
    /// counts the connections held and the handshakes made per window).
    pub fn connections(&self) -> Vec<ConnLife> {
        self.shared.conn_log.lock().unwrap().clone()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        let log = self.shared.conn_log.lock().unwrap();
        log.iter().filter(|c| c.closed.is_none()).count()
    }

    /// Turns the request log off (benchmarks) or on.
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::SeqCst);
    }

    /// Delays every answer (a slow link).
    pub fn set_delay(&self, ms: u64) {
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Delays the answer to every request whose `"METHOD target"` contains
    /// `needle` by `ms` (0 removes the rule). A delayed request is logged in
    /// [`Double::delayed`] as soon as it arrives, so a test knows it is in
    /// flight.
    pub fn delay_matching(&self, needle: &str, ms: u64) {
        let mut rules = self.shared.delay_rules.lock().unwrap();
        rules.retain(|(n, _)| n != needle);
        if ms > 0 {
            rules.push((needle.to_owned(), ms));
        }
    }

    /// `"METHOD target"` of every request a [`Double::delay_matching`] rule
    /// held, in arrival order.
    pub fn delayed(&self) -> Vec<String> {
        self.shared.delayed.lock().unwrap().clone()
    }

    /// Creates or updates an object directly; returns its resourceVersion.
    pub fn apply(&self, prefix: &str, resource: &str, ns: &str, name: &str, value: Value) -> u64 {
        let mut w = self.shared.world.lock().unwrap();
        w.put(key(prefix, resource, ns, name), value);
        self.shared.changed.notify_all();
        w.rv
    }

    /// Deletes an object directly.
    pub fn delete(&self, prefix: &str, resource: &str, ns: &str, name: &str) -> bool {
        let mut w = self.shared.world.lock().unwrap();
        let gone = w.delete(&key(prefix, resource, ns, name)).is_some();
        self.shared.changed.notify_all();
        gone
    }

    /// An object as stored.
    pub fn get(&self, prefix: &str, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let w = self.shared.world.lock().unwrap();
        w.objects
            .get(&key(prefix, resource, ns, name))
            .map(|o| (*o.value).clone())
    }

    /// Adds `count` pods named `bulk-N` on `node`, each padded by `pad` bytes.
    pub fn seed_pods(&self, ns: &str, node: &str, count: usize, pad: usize) {
        let mut w = self.shared.world.lock().unwrap();
        for i in 0..count {
            let name = format!("bulk-{i:06}");
            w.put(
                key("/api/v1", "pods", ns, &name),
                world::pod(ns, &name, node, pad),
            );
        }
        self.shared.changed.notify_all();
    }

    pub fn current_rv(&self) -> u64 {
        self.shared.world.lock().unwrap().rv
    }

    /// The serialized list a plain LIST of pods in `ns` answers now.
    pub fn list_json(&self, prefix: &str, resource: &str, ns: &str) -> Value {
        let w = self.shared.world.lock().unwrap();
        let items: Vec<Value> = w
            .list(prefix, resource, ns, &Selectors::default())
            .iter()
            .map(|o| (*o.value).clone())
            .collect();
        json!({"kind": format!("{}List", world::kind_of(resource)), "apiVersion": world::api_version_of(prefix),
               "metadata": {"resourceVersion": w.rv.to_string()}, "items": items})
    }

    /// A service-account token signed by the double (RS256, or ES256).
    pub fn sa_token(&self, ns: &str, name: &str, ttl_secs: i64, es256: bool) -> String {
        self.shared.signer.token(ns, name, ttl_secs, es256)
    }

    /// A well-formed token signed by a key the double does not publish.
    pub fn sa_token_unknown_key(&self, ns: &str, name: &str) -> String {
        self.shared.signer.token_unknown_key(ns, name)
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn key(prefix: &str, resource: &str, ns: &str, name: &str) -> ObjKey {
    (
        prefix.to_owned(),
        resource.to_owned(),
        ns.to_owned(),
        name.to_owned(),
    )
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    while shared.running.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((tcp, _)) => {
                let _ = tcp.set_nonblocking(false);
                let _ = tcp.set_nodelay(true);
                if let Ok(clone) = tcp.try_clone() {
                    shared.conns.lock().unwrap().push(clone);
                }
                let shared = shared.clone();
                let id = conn_opened(&shared);
                std::thread::spawn(move || {
                    let _ = serve(shared.clone(), tcp, id);
                    conn_closed(&shared, id);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Logs a newly accepted connection; returns its index in the log.
fn conn_opened(shared: &Shared) -> usize {
    let mut log = shared.conn_log.lock().unwrap();
    log.push(ConnLife {
        opened: Instant::now(),
        first_request: None,
        closed: None,
    });
    log.len() - 1
}

/// Notes connection `id`'s first request.
fn conn_first_request(shared: &Shared, id: usize) {
    if let Some(c) = shared.conn_log.lock().unwrap().get_mut(id) {
        c.first_request.get_or_insert_with(Instant::now);
    }
}

/// Notes that connection `id` is no longer served.
fn conn_closed(shared: &Shared, id: usize) {
    if let Some(c) = shared.conn_log.lock().unwrap().get_mut(id) {
        c.closed = Some(Instant::now());
    }
}

type Tls = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// A buffered TLS connection.
struct Conn {
    tls: Tls,
    buf: Vec<u8>,
}

impl Conn {
    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 16 * 1024];
        let n = self.tls.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn head(&mut self) -> io::Result<Option<RequestHead>> {
        loop {
            if let Ok(lite_apiserver::http::Parsed::Complete(head, used)) =
                RequestHead::parse(&self.buf)
            {
                self.buf.drain(..used);
                return Ok(Some(head));
            }
            if self.fill()? == 0 {
                return Ok(None);
            }
        }
    }

    fn body(&mut self, framing: Framing) -> io::Result<Vec<u8>> {
        let mut dec = BodyDecoder::new(framing);
        let mut out = Vec::new();
        loop {
            match dec.decode(&self.buf).map_err(io::Error::other)? {
                Decoded::Data { start, end } => {
                    out.extend_from_slice(&self.buf[start..end]);
                    self.buf.drain(..end);
                }
                Decoded::Skip(n) => {
                    self.buf.drain(..n);
                }
                Decoded::Done(n) => {
                    self.buf.drain(..n);
                    return Ok(out);
                }
                Decoded::NeedMore => {
                    if self.fill()? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
            }
        }
    }
}

fn serve(shared: Arc<Shared>, tcp: TcpStream, id: usize) -> io::Result<()> {
    let conn = rustls::ServerConnection::new(shared.tls.clone()).map_err(io::Error::other)?;
    let mut c = Conn {
        tls: rustls::StreamOwned::new(conn, tcp),
        buf: Vec::new(),
    };
    while let Some(head) = c.head()? {
        conn_first_request(&shared, id);
        let body = c.body(head.framing().map_err(io::Error::other)?)?;
        let delay = shared.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        rule_delay(&shared, &head);
        if !shared.running.load(Ordering::SeqCst) {
            return Ok(());
        }
        let peer = c
            .tls
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first());
        let cn = peer.and_then(|cert| lite_apiserver::tls::common_name(cert.as_ref()));
        let sha = peer.map(|cert| sha256_hex(cert.as_ref()));
        if head.is_upgrade() {
            return echo_upgrade(&shared, &head, (cn, sha), c);
        }
        let keep = Request::new(&shared, &head, body, (cn, sha)).answer(&mut c.tls)?;
        if !keep || !head.keep_alive() {
            c.tls.conn.send_close_notify();
            let _ = c.tls.flush();
            return Ok(());
        }
    }
    Ok(())
}

/// Sleeps as long as the first matching [`Double::delay_matching`] rule says.
fn rule_delay(shared: &Shared, head: &RequestHead) {
    let line = format!("{} {}", head.method, head.target);
    let ms = shared
        .delay_rules
        .lock()
        .unwrap()
        .iter()
        .find(|(needle, _)| line.contains(needle.as_str()))
        .map(|(_, ms)| *ms);
    if let Some(ms) = ms {
        shared.delayed.lock().unwrap().push(line);
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// exec/attach/port-forward stand-in: 101, then echo every byte back.
fn echo_upgrade(shared: &Shared, head: &RequestHead, peer: Peer, mut c: Conn) -> io::Result<()> {
    let _ = Request::new(shared, head, Vec::new(), peer);
    let proto = head
        .headers
        .get_str("upgrade")
        .unwrap_or("SPDY/3.1")
        .to_owned();
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {proto}\r\n\r\n"
    );
    c.tls.write_all(answer.as_bytes())?;
    c.tls.flush()?;
    let early = std::mem::take(&mut c.buf);
    if !early.is_empty() {
        c.tls.write_all(&early)?;
        c.tls.flush()?;
    }
    let mut tmp = [0u8; 8192];
    loop {
        let n = c.tls.read(&mut tmp)?;
        if n == 0 {
            return Ok(());
        }
        c.tls.write_all(&tmp[..n])?;
        c.tls.flush()?;
    }
}

/// The APIResourceList entries of `group/version` per the aggregated
/// discovery fixture.
fn legacy_resources(group_version: &str) -> Option<Value> {
    let (group, version) = group_version.split_once('/')?;
    let doc: Value = serde_json::from_slice(&fixture("apis-aggregated-discovery.body")).ok()?;
    let item = doc["items"]
        .as_array()?
        .iter()
        .find(|i| i["metadata"]["name"] == group)?;
    let v = item["versions"]
        .as_array()?
        .iter()
        .find(|v| v["version"] == version)?;
    let resources: Vec<Value> = v["resources"]
        .as_array()?
        .iter()
        .map(|r| {
            json!({"name": r["resource"], "singularName": r["singularResource"], "namespaced": r["scope"] == "Namespaced",
                   "kind": r["responseKind"]["kind"], "verbs": r["verbs"]})
        })
        .collect();
    Some(Value::Array(resources))
}

/// The client certificate's CN and SHA-256.
type Peer = (Option<String>, Option<String>);

/// Hex SHA-256 of DER bytes.
pub fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One request being answered.
struct Request<'a> {
    shared: &'a Shared,
    head: &'a RequestHead,
    body: Vec<u8>,
    user: Option<String>,
    authenticated: bool,
}

fn status_body(code: u16, reason: &str, message: &str, details: Option<Value>) -> Vec<u8> {
    let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code});
    if let Some(d) = details {
        s["details"] = d;
    }
    serde_json::to_vec(&s).unwrap()
}

fn write_response(out: &mut Tls, status: u16, content_type: &str, body: &[u8]) -> io::Result<()> {
    let reason = lite_apiserver::http::reason_phrase(status);
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nAudit-Id: 00000000-0000-0000-0000-000000000000\r\nCache-Control: no-cache, private\r\nContent-Type: {content_type}\r\n"
    );
    if status == 403 || content_type.starts_with("text/plain") {
        head.push_str("X-Content-Type-Options: nosniff\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut all = head.into_bytes();
    all.extend_from_slice(body);
    out.write_all(&all)?;
    out.flush()
}

/// The BOOKMARK that ends a streaming list's initial events, as the
/// apiserver sends it (annotated `k8s.io/initial-events-end`).
fn initial_events_end(prefix: &str, resource: &str, rv: u64) -> Vec<u8> {
    format!(
        "{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{rv}\",\"creationTimestamp\":null,\"annotations\":{{\"k8s.io/initial-events-end\":\"true\"}}}}}}}}\n",
        world::kind_of(resource),
        world::api_version_of(prefix)
    )
    .into_bytes()
}

fn write_chunk(out: &mut Tls, data: &[u8]) -> io::Result<()> {
    let mut all = format!("{:x}\r\n", data.len()).into_bytes();
    all.extend_from_slice(data);
    all.extend_from_slice(b"\r\n");
    out.write_all(&all)?;
    out.flush()
}

fn query(q: Option<&str>, name: &str) -> Option<String> {
    lite_apiserver::k8s::request::query_value(q, name).map(percent_decode)
}

fn percent_decode(v: &str) -> String {
    let b = v.replace('+', " ");
    let b = b.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
            {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const PUBLIC: &[&str] = &[
    "/readyz",
    "/healthz",
    "/livez",
    "/version",
    "/openid/v1/jwks",
    "/.well-known/openid-configuration",
];

impl<'a> Request<'a> {
    fn new(
        shared: &'a Shared,
        head: &'a RequestHead,
        body: Vec<u8>,
        (cn, cert_sha): Peer,
    ) -> Request<'a> {
        let authorization = head.headers.get_str("authorization").map(str::to_owned);
        // The scheme is case-insensitive, as kube-apiserver's bearer-token
        // authenticator reads it (the Python client's InClusterConfig sends
        // "bearer TOKEN").
        let token = authorization
            .as_deref()
            .and_then(|a| a.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.to_owned());
        let user = match (&cn, &token) {
            (Some(cn), _) => Some(cn.clone()),
            (None, Some(t)) => shared
                .opts
                .tokens
                .iter()
                .find(|(tok, _)| tok == t)
                .map(|(_, u)| u.clone())
                .or_else(|| shared.signer.verify(t)),
            (None, None) => None,
        };
        if shared.recording.load(Ordering::Relaxed) {
            shared.requests.lock().unwrap().push(Recorded {
                method: head.method.clone(),
                target: head.target.clone(),
                user: user.clone(),
                cn: cn.clone(),
                cert_sha,
                authorization,
                user_agent: head.headers.get_str("user-agent").map(str::to_owned),
                accept: head.headers.get_str("accept").map(str::to_owned),
                headers: head
                    .headers
                    .0
                    .iter()
                    .map(|h| {
                        (
                            h.name.clone(),
                            String::from_utf8_lossy(&h.value).into_owned(),
                        )
                    })
                    .collect(),
                at: Instant::now(),
            });
        }
        let authenticated = user.is_some();
        Request {
            shared,
            head,
            body,
            user,
            authenticated,
        }
    }

    fn accept(&self) -> &str {
        self.head.headers.get_str("accept").unwrap_or("")
    }

    fn wants(&self, as_: &str) -> bool {
        // The first JSON media range decides, as the apiserver's negotiation does.
        self.accept()
            .split(',')
            .find(|r| r.trim().starts_with("application/json"))
            .is_some_and(|r| r.split(';').any(|p| p.trim() == format!("as={as_}")))
    }

    /// Answers; returns whether the connection may be reused.
    fn answer(&self, out: &mut Tls) -> io::Result<bool> {
        let path = self.head.path();
        if !self.authenticated && !PUBLIC.contains(&path) {
            let body = status_body(401, "Unauthorized", "Unauthorized", None);
            write_response(out, 401, "application/json", &body)?;
            return Ok(true);
        }
        match path {
            "/readyz" | "/healthz" | "/livez" => {
                return write_response(out, 200, "text/plain; charset=utf-8", b"ok").map(|_| true)
            }
            "/version" => {
                return write_response(out, 200, "application/json", &fixture("version.body"))
                    .map(|_| true)
            }
            "/api" => {
                return write_response(out, 200, "application/json", &fixture("api.body"))
                    .map(|_| true)
            }
            "/apis" if self.wants("APIGroupDiscoveryList") => {
                let ct = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
                return write_response(out, 200, ct, &fixture("apis-aggregated-discovery.body"))
                    .map(|_| true);
            }
            "/apis" => {
                return write_response(out, 200, "application/json", &fixture("apis.body"))
                    .map(|_| true)
            }
            "/api/v1" => {
                return write_response(
                    out,
                    200,
                    "application/json",
                    &fixture("api-v1-resources.body"),
                )
                .map(|_| true)
            }
            "/openid/v1/jwks" => {
                return write_response(
                    out,
                    200,
                    "application/jwk-set+json",
                    self.shared.signer.jwks().as_bytes(),
                )
                .map(|_| true)
            }
            "/.well-known/openid-configuration" => {
                let doc = format!(
                    r#"{{"issuer":"https://kubernetes.default.svc.cluster.local","jwks_uri":"https://{}/openid/v1/jwks","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256","ES256"]}}"#,
                    "127.0.0.1:6443"
                );
                return write_response(out, 200, "application/json", doc.as_bytes()).map(|_| true);
            }
            _ => {}
        }
        let class = Classified::new(
            &self.head.method,
            path,
            self.head.query(),
            self.head.is_upgrade(),
        );
        let Some(res) = class.resource.clone() else {
            if let Some(group) = path.strip_prefix("/apis/") {
                return self.group_resources(out, group);
            }
            let body = status_body(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            );
            return write_response(out, 404, "application/json", &body).map(|_| true);
        };
        let writes = !class.verb.is_read();
        if writes
            && self
                .user
                .as_ref()
                .is_some_and(|u| self.shared.opts.read_only.contains(u))
        {
            let msg = format!(
                "{} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"\" in the namespace \"{}\"",
                res.resource,
                self.user.clone().unwrap_or_default(),
                class.verb.as_str(),
                res.resource,
                res.namespace.clone().unwrap_or_default()
            );
            let body = status_body(403, "Forbidden", &msg, Some(json!({"kind": res.resource})));
            return write_response(out, 403, "application/json", &body).map(|_| true);
        }
        let ns = res.namespace.clone().unwrap_or_default();
        let name = res.name.clone().unwrap_or_default();
        let k = key(&res.prefix, &res.resource, &ns, &name);
        match (class.verb, res.subresource.as_deref()) {
            (Verb::List, _) => self.list(out, &res.prefix, &res.resource, &ns),
            (Verb::Watch, _) => self.watch(out, &res.prefix, &res.resource, &ns),
            (Verb::Get, _) => self.get(out, &k),
            (Verb::Create, Some("token")) if res.resource == "serviceaccounts" => {
                self.token_request(out, &ns, &name)
            }
            (Verb::Create, _) => self.create(out, &res.prefix, &res.resource, &ns),
            (Verb::Update, _) => self.update(out, &k),
            (Verb::Patch, _) => self.patch(out, &k),
            (Verb::Delete, _) => self.delete(out, &k),
            _ => {
                let body = status_body(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                    None,
                );
                write_response(out, 405, "application/json", &body).map(|_| true)
            }
        }
    }

    /// `/apis/G/V`: the resources of a group version, from the aggregated
    /// discovery fixture (what the real server publishes), plus our CRD.
    fn group_resources(&self, out: &mut Tls, group_version: &str) -> io::Result<bool> {
        let Some(resources) = legacy_resources(group_version) else {
            let body = status_body(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            );
            return write_response(out, 404, "application/json", &body).map(|_| true);
        };
        let doc = json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources});
        write_response(
            out,
            200,
            "application/json",
            &serde_json::to_vec(&doc).unwrap(),
        )
        .map(|_| true)
    }

    fn not_found(&self, out: &mut Tls, k: &ObjKey) -> io::Result<bool> {
        let msg = format!("{} \"{}\" not found", k.1, k.3);
        let body = status_body(
            404,
            "NotFound",
            &msg,
            Some(json!({"name": k.3, "kind": k.1})),
        );
        write_response(out, 404, "application/json", &body).map(|_| true)
    }

    fn get(&self, out: &mut Tls, k: &ObjKey) -> io::Result<bool> {
        let obj = self.shared.world.lock().unwrap().objects.get(k).cloned();
        let Some(obj) = obj else {
            return self.not_found(out, k);
        };
        if self.wants("Table") {
            let rv: u64 = obj.value["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let t = world::table_of(&k.1, &[&obj.value], rv);
            return write_response(
                out,
                200,
                "application/json",
                &serde_json::to_vec(&t).unwrap(),
            )
            .map(|_| true);
        }
        if self.wants("PartialObjectMetadata") {
            let p = world::partial(&obj.value);
            return write_response(
                out,
                200,
                "application/json",
                &serde_json::to_vec(&p).unwrap(),
            )
            .map(|_| true);
        }
        write_response(out, 200, "application/json", &obj.bytes).map(|_| true)
    }

    fn selectors(&self) -> Selectors {
        let q = self.head.query();
        Selectors::parse(
            query(q, "labelSelector").as_deref(),
            query(q, "fieldSelector").as_deref(),
        )
    }

    fn list(&self, out: &mut Tls, prefix: &str, resource: &str, ns: &str) -> io::Result<bool> {
        let q = self.head.query();
        let (objs, rv) = {
            let w = self.shared.world.lock().unwrap();
            (w.list(prefix, resource, ns, &self.selectors()), w.rv)
        };
        let limit: usize = query(q, "limit").and_then(|l| l.parse().ok()).unwrap_or(0);
        let (start, list_rv) = match query(q, "continue") {
            Some(token) => {
                let (r, off) = token.split_once(':').unwrap_or(("0", "0"));
                (off.parse().unwrap_or(0), r.parse().unwrap_or(rv))
            }
            None => (0, rv),
        };
        let end = if limit > 0 {
            (start + limit).min(objs.len())
        } else {
            objs.len()
        };
        let page = &objs[start.min(objs.len())..end];
        let mut meta = json!({"resourceVersion": list_rv.to_string()});
        if end < objs.len() {
            meta["continue"] = json!(format!("{list_rv}:{end}"));
            meta["remainingItemCount"] = json!(objs.len() - end);
        }
        if self.wants("Table") {
            let values: Vec<&Value> = page.iter().map(|o| o.value.as_ref()).collect();
            let mut t = world::table_of(resource, &values, list_rv);
            t["metadata"] = meta;
            return write_response(
                out,
                200,
                "application/json",
                &serde_json::to_vec(&t).unwrap(),
            )
            .map(|_| true);
        }
        if self.wants("PartialObjectMetadataList") {
            let items: Vec<Value> = page.iter().map(|o| world::partial(&o.value)).collect();
            let l = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items});
            return write_response(
                out,
                200,
                "application/json",
                &serde_json::to_vec(&l).unwrap(),
            )
            .map(|_| true);
        }
        let envelope = format!(
            r#"{{"kind":"{}List","apiVersion":"{}","metadata":{},"items":["#,
            world::kind_of(resource),
            world::api_version_of(prefix),
            meta
        );
        let total: usize =
            page.iter().map(|o| o.bytes.len() + 1).sum::<usize>() + envelope.len() + 2;
        if total < 1 << 20 {
            let mut body = envelope.into_bytes();
            for (i, o) in page.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&o.bytes);
            }
            body.extend_from_slice(b"]}");
            return write_response(out, 200, "application/json", &body).map(|_| true);
        }
        // Large lists stream chunked, as the apiserver does.
        out.write_all(b"HTTP/1.1 200 OK\r\nCache-Control: no-cache, private\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")?;
        let mut chunk = envelope.into_bytes();
        for (i, o) in page.iter().enumerate() {
            if i > 0 {
                chunk.push(b',');
            }
            chunk.extend_from_slice(&o.bytes);
            if chunk.len() > 64 * 1024 {
                write_chunk(out, &chunk)?;
                chunk.clear();
            }
        }
        chunk.extend_from_slice(b"]}");
        write_chunk(out, &chunk)?;
        out.write_all(b"0\r\n\r\n")?;
        out.flush()?;
        Ok(true)
    }

    fn event_line(&self, resource: &str, kind: &str, obj: &Obj, rv: u64) -> Vec<u8> {
        let object = if self.wants("Table") {
            serde_json::to_vec(&world::table_of(resource, &[&obj.value], rv)).unwrap()
        } else {
            obj.bytes.to_vec()
        };
        let mut line = format!(r#"{{"type":"{kind}","object":"#).into_bytes();
        line.extend_from_slice(&object);
        line.extend_from_slice(b"}\n");
        line
    }

    fn watch(&self, out: &mut Tls, prefix: &str, resource: &str, ns: &str) -> io::Result<bool> {
        let q = self.head.query();
        let timeout = query(q, "timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(1800u64);
        let deadline = Instant::now() + Duration::from_secs(timeout);
        let bookmarks = query(q, "allowWatchBookmarks").is_some_and(|v| v == "true");
        let selectors = self.selectors();
        // A streaming list (WatchList): the current state as ADDED events,
        // then a BOOKMARK annotated k8s.io/initial-events-end, as the
        // apiserver sends with resourceVersionMatch=NotOlderThan.
        let streaming = query(q, "sendInitialEvents").is_some_and(|v| v == "true");
        let start: Option<u64> = query(q, "resourceVersion")
            .and_then(|r| r.parse().ok())
            .filter(|r| *r > 0 && !streaming);
        out.write_all(b"HTTP/1.1 200 OK\r\nCache-Control: no-cache, private\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")?;
        out.flush()?;
        let mut cursor;
        {
            let w = self.shared.world.lock().unwrap();
            match start {
                Some(rv) if rv < w.oldest_rv => {
                    let line = format!(
                        "{{\"type\":\"ERROR\",\"object\":{}}}\n",
                        String::from_utf8(status_body(
                            410,
                            "Expired",
                            &format!("too old resource version: {rv} ({})", w.oldest_rv),
                            None
                        ))
                        .unwrap()
                    );
                    drop(w);
                    write_chunk(out, line.as_bytes())?;
                    out.write_all(b"0\r\n\r\n")?;
                    out.flush()?;
                    return Ok(true);
                }
                Some(rv) => cursor = rv,
                None => {
                    cursor = w.rv;
                    let initial: Vec<Obj> = w.list(prefix, resource, ns, &selectors);
                    drop(w);
                    for o in initial {
                        write_chunk(out, &self.event_line(resource, "ADDED", &o, cursor))?;
                    }
                    if streaming {
                        write_chunk(out, &initial_events_end(prefix, resource, cursor))?;
                    }
                }
            }
        }
        let mut last_bookmark = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline || !self.shared.running.load(Ordering::SeqCst) {
                break;
            }
            let (changes, rv) = {
                let mut w = self.shared.world.lock().unwrap();
                if w.rv <= cursor {
                    let wait = (deadline - now).min(Duration::from_millis(200));
                    w = self.shared.changed.wait_timeout(w, wait).unwrap().0;
                }
                let changes: Vec<_> = w
                    .history
                    .iter()
                    .filter(|c| c.rv > cursor)
                    .filter(|c| {
                        c.key.0 == prefix && c.key.1 == resource && (ns.is_empty() || c.key.2 == ns)
                    })
                    .filter(|c| selectors.matches(&c.obj.value))
                    .cloned()
                    .collect();
                (changes, w.rv)
            };
            for c in &changes {
                write_chunk(out, &self.event_line(resource, c.kind, &c.obj, c.rv))?;
            }
            cursor = rv;
            if bookmarks && last_bookmark.elapsed() >= Duration::from_secs(1) {
                last_bookmark = Instant::now();
                let line = format!(
                    "{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{rv}\",\"creationTimestamp\":null}}}}}}\n",
                    world::kind_of(resource),
                    world::api_version_of(prefix)
                );
                write_chunk(out, line.as_bytes())?;
            }
        }
        if !self.shared.running.load(Ordering::SeqCst) {
            return Ok(false);
        }
        out.write_all(b"0\r\n\r\n")?;
        out.flush()?;
        Ok(true)
    }

    fn parse_body(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    fn bad_body(&self, out: &mut Tls) -> io::Result<bool> {
        let body = status_body(
            400,
            "BadRequest",
            "the request body is not valid JSON",
            None,
        );
        write_response(out, 400, "application/json", &body).map(|_| true)
    }

    fn create(&self, out: &mut Tls, prefix: &str, resource: &str, ns: &str) -> io::Result<bool> {
        let Some(value) = self.parse_body() else {
            return self.bad_body(out);
        };
        let name = value["metadata"]["name"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let base = value["metadata"]["generateName"].as_str().unwrap_or("gen-");
                format!("{base}{}", self.shared.world.lock().unwrap().rv)
            });
        let k = key(prefix, resource, ns, &name);
        let w = self.shared.world.lock().unwrap();
        if w.objects.contains_key(&k) {
            drop(w);
            let msg = format!("{resource} \"{name}\" already exists");
            let body = status_body(
                409,
                "AlreadyExists",
                &msg,
                Some(json!({"name": name, "kind": resource})),
            );
            return write_response(out, 409, "application/json", &body).map(|_| true);
        }
        self.store_and_answer(out, w, k, value, 201)
    }

    /// Stores `value` under `k` (bumping the rv), wakes watches, answers
    /// the stored object with `status`.
    fn store_and_answer(
        &self,
        out: &mut Tls,
        mut w: std::sync::MutexGuard<'_, World>,
        k: ObjKey,
        value: Value,
        status: u16,
    ) -> io::Result<bool> {
        let obj = w.put(k, value);
        drop(w);
        self.shared.changed.notify_all();
        write_response(out, status, "application/json", &obj.bytes).map(|_| true)
    }

    fn update(&self, out: &mut Tls, k: &ObjKey) -> io::Result<bool> {
        let Some(value) = self.parse_body() else {
            return self.bad_body(out);
        };
        let w = self.shared.world.lock().unwrap();
        if !w.objects.contains_key(k) {
            drop(w);
            return self.not_found(out, k);
        }
        self.store_and_answer(out, w, k.clone(), value, 200)
    }

    fn patch(&self, out: &mut Tls, k: &ObjKey) -> io::Result<bool> {
        let Some(patch) = self.parse_body() else {
            return self.bad_body(out);
        };
        let w = self.shared.world.lock().unwrap();
        let Some(current) = w.objects.get(k).map(|o| (*o.value).clone()) else {
            drop(w);
            return self.not_found(out, k);
        };
        let mut next = current;
        world::merge_patch(&mut next, &patch);
        self.store_and_answer(out, w, k.clone(), next, 200)
    }

    fn delete(&self, out: &mut Tls, k: &ObjKey) -> io::Result<bool> {
        let gone = self.shared.world.lock().unwrap().delete(k);
        self.shared.changed.notify_all();
        match gone {
            Some(obj) => write_response(out, 200, "application/json", &obj.bytes).map(|_| true),
            None => self.not_found(out, k),
        }
    }

    fn token_request(&self, out: &mut Tls, ns: &str, name: &str) -> io::Result<bool> {
        let spec = self
            .parse_body()
            .map(|v| v["spec"].clone())
            .unwrap_or(json!({}));
        let ttl = spec["expirationSeconds"].as_i64().unwrap_or(3600).max(1);
        let token = self.shared.signer.token(ns, name, ttl, false);
        let exp = super::sa::unix_now() as i64 + ttl;
        let answer = json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": {"audiences": spec.get("audiences").cloned().unwrap_or(json!(["https://kubernetes.default.svc.cluster.local"])),
                     "expirationSeconds": ttl, "boundObjectRef": null},
            "status": {"token": token, "expirationTimestamp": super::sa::rfc3339(exp as u64)}
        });
        write_response(
            out,
            201,
            "application/json",
            &serde_json::to_vec(&answer).unwrap(),
        )
        .map(|_| true)
    }
}
