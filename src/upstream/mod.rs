//! Connections to the cloud kube-apiserver.
//!
//! - [`dial`]: one TCP (or CONNECT tunnel) + TLS connection, socket options.
//! - [`pool`]: idle keep-alive connections per (server, identity, TLS
//!   generation).
//! - [`health`]: online/offline, per-server epochs that cancel what is in
//!   flight on a server declared down.
//! - [`probe`]: the background `/readyz` probe over one kept-alive
//!   connection per server, run only for a server that went quiet.
//! - [`pace`]: a token bucket spacing new connections (a healing fleet).
//!
//! [`Upstream::connect`] is the one code path that chooses a server: the
//! current one, then the others in order; a server whose dial or handshake
//! fails is declared down and the next is tried; only when every server
//! failed is the state offline.

pub mod dial;
pub mod health;
pub mod pace;
pub mod pool;
pub mod probe;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smol::future::FutureExt;

use crate::config::{ProxyUrl, ServerUrl};
use crate::http::{pump, BodyDecoder, Framing, RequestHead, ResponseHead, Sink};
use crate::tls::TlsMaterial;

pub use dial::{DialError, Transport, UpConn};
use health::Health;
use pace::Pacer;
use pool::{Pool, PoolKey};

/// Longest an internal request (JWKS, ConfigMap list) may take.
const INTERNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection checked out for one request.
#[derive(Debug)]
pub struct Lease {
    /// The connection (boxed: it is large and a lease moves).
    pub conn: Box<UpConn>,
    /// Index of the server it is connected to.
    pub server: usize,
    /// Whether it was reused from the pool (a reused connection may turn
    /// out to be closed by the server; the caller may retry once).
    pub reused: bool,
    /// The server's health epoch when the lease was made: the request is
    /// cancelled when the server is declared down after it.
    pub epoch: u64,
    key: PoolKey,
}

/// No server could be reached: the state is offline now.
#[derive(Debug, Clone)]
pub struct Unreachable(pub String);

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no upstream server reachable ({})", self.0)
    }
}

impl std::error::Error for Unreachable {}

/// Upstream counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    dials: AtomicU64,
    paced_dials: AtomicU64,
    dial_failures: AtomicU64,
    downs: AtomicU64,
    probes: AtomicU64,
    probe_dials: AtomicU64,
    idle_closed: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends them in Prometheus text.
    pub fn render(&self, out: &mut String) {
        let rows = [
            (
                "lite_apiserver_upstream_dials_total",
                "New upstream connections for requests (probes not counted).",
                &self.dials,
            ),
            (
                "lite_apiserver_upstream_paced_dials_total",
                "New upstream connections that waited for --dial-rate.",
                &self.paced_dials,
            ),
            (
                "lite_apiserver_upstream_dial_failures_total",
                "Failed dials or TLS handshakes upstream.",
                &self.dial_failures,
            ),
            (
                "lite_apiserver_upstream_server_down_total",
                "Times a server was declared down (dial, TLS, probe or timeout).",
                &self.downs,
            ),
            (
                "lite_apiserver_upstream_probes_total",
                "Health probes sent (only to servers that went quiet).",
                &self.probes,
            ),
            (
                "lite_apiserver_upstream_probe_dials_total",
                "Connections dialed for health probes (one is kept alive per server).",
                &self.probe_dials,
            ),
            (
                "lite_apiserver_upstream_idle_closed_total",
                "Pooled connections closed after --upstream-idle-timeout unused.",
                &self.idle_closed,
            ),
        ];
        crate::metrics::write_counters(out, &rows);
    }
}

/// How the upstream side behaves (from the flags).
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Bound on a dial + TLS handshake, and on a probe.
    pub timeout: Duration,
    /// How long a pooled connection may sit unused before it is closed.
    pub idle_timeout: Duration,
    /// New connections a second after a burst of as many (0: unpaced).
    pub dial_rate: u32,
}

/// The upstream side: servers, TLS material, proxy, pool, health.
pub struct Upstream {
    servers: Vec<ServerUrl>,
    tls: Arc<TlsMaterial>,
    proxy: Option<ProxyUrl>,
    timeout: Duration,
    pool: Pool,
    pacer: Pacer,
    /// One kept-alive anonymous connection per server, for the probe.
    probes: Vec<Mutex<Option<Box<UpConn>>>>,
    /// Online/offline and per-server state.
    pub health: Health,
    /// Counters for `/metrics`.
    pub counters: Counters,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// A new upstream side with an empty pool, online on the first server.
    pub fn new(
        servers: Vec<ServerUrl>,
        tls: Arc<TlsMaterial>,
        proxy: Option<ProxyUrl>,
        tuning: Tuning,
    ) -> Upstream {
        Upstream {
            probes: servers.iter().map(|_| Mutex::new(None)).collect(),
            health: Health::new(servers.len()),
            servers,
            tls,
            proxy,
            timeout: tuning.timeout,
            pool: Pool::new(tuning.idle_timeout),
            pacer: Pacer::new(tuning.dial_rate),
            counters: Counters::default(),
        }
    }

    /// How many servers there are.
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// The server at `index`.
    pub fn server(&self, index: usize) -> &ServerUrl {
        &self.servers[index.min(self.servers.len() - 1)]
    }

    /// The counters and the idle pool size in Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        self.counters.render(out);
        crate::metrics::write_metric(
            out,
            "gauge",
            "lite_apiserver_upstream_idle_connections",
            "Pooled upstream connections waiting for a request.",
            self.pool.len(),
        );
    }

    /// A connection for a caller whose verified client cert has CN
    /// `client_cn`: pooled if one fits and `fresh` is false, else dialed;
    /// the current server first, then the others (those not known to be
    /// down first). A server that cannot be reached is declared down;
    /// when none can, the state goes offline.
    pub async fn connect(
        &self,
        client_cn: Option<&str>,
        fresh: bool,
    ) -> Result<Lease, Unreachable> {
        let first = self.health.current();
        let mut last_error = match self.try_server(first, client_cn, fresh).await {
            Ok(lease) => return Ok(lease),
            Err(e) => e,
        };
        for server in self.failover_order(first) {
            match self.try_server(server, client_cn, fresh).await {
                Ok(lease) => {
                    self.health.use_server(server);
                    return Ok(lease);
                }
                Err(e) => last_error = e,
            }
        }
        self.health.all_down(&last_error);
        Err(Unreachable(last_error))
    }

    /// A lease on `server`, or why not (the server is then declared down).
    async fn try_server(
        &self,
        server: usize,
        client_cn: Option<&str>,
        fresh: bool,
    ) -> Result<Lease, String> {
        self.checkout(server, client_cn, fresh).await.map_err(|e| {
            Counters::bump(&self.counters.dial_failures);
            let why = format!("{}: {e}", self.server(server).authority);
            log::warn!("upstream {why}");
            self.declare_down(server, &why);
            why
        })
    }

    /// The servers other than `first`, in the order requests try them:
    /// alive ones in order, then the ones known to be down (they may have
    /// come back).
    fn failover_order(&self, first: usize) -> Vec<usize> {
        let n = self.servers.len();
        let mut order: Vec<usize> = (1..n).map(|i| (first + i) % n).collect();
        order.sort_by_key(|&s| !self.health.is_alive(s));
        order
    }

    /// Declares `server` down and drops its idle connections.
    pub fn declare_down(&self, server: usize, why: &str) {
        Counters::bump(&self.counters.downs);
        self.health.server_down(server, why);
        self.pool.clear_server(server);
        if let Some(probe) = self.probes.get(server) {
            if let Ok(mut conn) = probe.lock() {
                *conn = None;
            }
        }
    }

    async fn checkout(
        &self,
        server: usize,
        client_cn: Option<&str>,
        fresh: bool,
    ) -> Result<Lease, DialError> {
        let (identity, config) = self.tls.client_config(client_cn);
        let key = PoolKey {
            server,
            identity,
            generation: self.tls.generation(),
        };
        let epoch = self.health.epoch(server);
        while let Some(mut conn) = (!fresh).then(|| self.pool.take(&key)).flatten() {
            if is_quiet(&mut conn).await {
                return Ok(Lease {
                    conn,
                    server,
                    reused: true,
                    epoch,
                    key,
                });
            }
            log::debug!("upstream: an idle connection spoke or closed; not reused");
        }
        if self.pacer.wait().await {
            Counters::bump(&self.counters.paced_dials);
        }
        Counters::bump(&self.counters.dials);
        // Boxed: the dial future is large, and the pooled fast path above
        // should not carry (move, initialise) it on every request.
        let conn = Box::pin(dial::dial(
            self.server(server),
            self.proxy.as_ref(),
            config,
            self.timeout,
        ))
        .await?;
        Ok(Lease {
            conn,
            server,
            reused: false,
            epoch,
            key,
        })
    }

    /// Returns a connection whose last response was read exactly to its end.
    pub fn checkin(&self, lease: Lease) {
        let current_generation = lease.key.generation == self.tls.generation();
        let same_epoch = lease.epoch == self.health.epoch(lease.server);
        if lease.conn.buffered().is_empty() && current_generation && same_epoch {
            self.pool.put(lease.key, lease.conn);
        }
    }

    /// Closes pooled connections unused for `--upstream-idle-timeout`,
    /// checking every half of it (at least every second).
    pub async fn trim_loop(&self) {
        let every = (self.pool.limit() / 2).max(Duration::from_secs(1));
        loop {
            smol::Timer::after(every).await;
            let closed = self.pool.trim();
            if closed > 0 {
                log::debug!("upstream: closed {closed} idle connection(s)");
                self.counters
                    .idle_closed
                    .fetch_add(closed as u64, Ordering::Relaxed);
            }
        }
    }

    /// Completes when the lease's server is declared down.
    pub async fn cancelled(&self, lease: &Lease) {
        self.health.wait_down(lease.server, lease.epoch).await;
    }

    /// A GET that lite-apiserver makes itself (keys, configuration): the
    /// status and a body of at most `max` bytes. `identity`: the CN of the
    /// `--identity` to present (`None`: none).
    pub async fn get(
        &self,
        path: &str,
        identity: Option<&str>,
        token: Option<&str>,
        max: usize,
    ) -> Result<(u16, Vec<u8>), String> {
        self.exchange_as(identity, "GET", max, |target| {
            let mut head = format!(
                "GET {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: lite-apiserver/{}\r\n",
                target.path_prefix,
                target.authority,
                env!("CARGO_PKG_VERSION")
            );
            if let Some(token) = token {
                head.push_str(&format!("Authorization: Bearer {token}\r\n"));
            }
            head.push_str("\r\n");
            head.into_bytes()
        })
        .await
    }

    /// Sends a client's request later than it came (kubelet's Lease
    /// renewal answered while offline): its own head and body, through
    /// `identity` as its request would have gone. The status and body.
    pub async fn send_delayed(
        &self,
        client: &RequestHead,
        body: &[u8],
        identity: Option<&str>,
        max: usize,
    ) -> Result<(u16, Vec<u8>), String> {
        let head = client.clone().with_body_length(body.len() as u64);
        self.exchange_as(identity, &head.method, max, |target| {
            let mut bytes = Vec::with_capacity(1024 + body.len());
            encode_upstream_head(&head, target, &mut bytes);
            bytes.extend_from_slice(body);
            bytes
        })
        .await
    }

    /// A request lite-apiserver sends itself: a lease presenting
    /// `identity`, the bytes `build` makes for its server, the answer.
    async fn exchange_as(
        &self,
        identity: Option<&str>,
        method: &str,
        max: usize,
        build: impl FnOnce(&ServerUrl) -> Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let lease = self
            .connect(identity, false)
            .await
            .map_err(|e| e.to_string())?;
        let request = build(self.server(lease.server));
        self.round_trip(lease, &request, method, max).await
    }

    /// Writes `request` on `lease`, reads the answer (at most `max` bytes
    /// of body), cancelled when the server goes down or after
    /// [`INTERNAL_TIMEOUT`]; the connection goes back to the pool if it can.
    async fn round_trip(
        &self,
        mut lease: Lease,
        request: &[u8],
        method: &str,
        max: usize,
    ) -> Result<(u16, Vec<u8>), String> {
        let (server, epoch) = (lease.server, lease.epoch);
        let _waiting = self.health.waiting(server);
        let exchange = exchange(&mut lease.conn, request, method, max);
        let result = exchange
            .or(async {
                self.health.wait_down(server, epoch).await;
                Err("the server went down".to_owned())
            })
            .or(async {
                crate::timeout::sleep(INTERNAL_TIMEOUT).await;
                Err("timed out".to_owned())
            })
            .await;
        let (status, body, keep_alive) = result?;
        self.health.succeeded(lease.server);
        if keep_alive {
            self.checkin(lease);
        }
        Ok((status, body))
    }
}

impl crate::auth::jwks::KeyFetch for Upstream {
    async fn fetch_jwks(&self, token: Option<&str>) -> Result<Vec<u8>, String> {
        let max = crate::auth::jwks::MAX_JWKS;
        match self.get("/openid/v1/jwks", None, token, max).await? {
            (200, body) => Ok(body),
            (status, _) => Err(format!("/openid/v1/jwks answered {status}")),
        }
    }

    fn is_online(&self) -> bool {
        self.health.is_online()
    }

    async fn wait_online(&self) {
        self.health.wait_online().await;
    }
}

/// Writes `head` (and the body, if any, after it), reads the answer:
/// status, body (at most `max` bytes), whether the connection may be
/// reused.
pub async fn exchange(
    conn: &mut UpConn,
    head: &[u8],
    method: &str,
    max: usize,
) -> Result<(u16, Vec<u8>, bool), String> {
    conn.write_all(head).await.map_err(|e| e.to_string())?;
    conn.flush().await.map_err(|e| e.to_string())?;
    let res = conn
        .read_head(ResponseHead::parse)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("closed before answering")?;
    let framing = res.framing(method).map_err(|e| e.to_string())?;
    let mut body = Bounded(Vec::new(), max);
    pump(&mut BodyDecoder::new(framing), conn, &mut body)
        .await
        .map_err(|e| e.to_string())?;
    let reusable = res.keep_alive() && framing != Framing::Close && conn.buffered().is_empty();
    Ok((res.status, body.0, reusable))
}

/// Collects a body of at most `.1` bytes.
struct Bounded(Vec<u8>, usize);

impl Sink for Bounded {
    async fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.0.len() + bytes.len() > self.1 {
            return Err(std::io::Error::other("answer too large"));
        }
        self.0.extend_from_slice(bytes);
        Ok(())
    }
    async fn idle(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether an idle connection has nothing to say: no byte, no EOF, no TLS
/// alert. Anything read from an idle connection is an answer to nothing
/// (a framing doubt), so such a connection is never reused. One poll, no
/// waiting.
async fn is_quiet(conn: &mut UpConn) -> bool {
    smol::future::poll_once(conn.fill()).await.is_none()
}

/// Writes a client's request head as it goes to the upstream: hop-by-hop
/// headers dropped (except the Upgrade pair of an upgrade request), exactly
/// one framing field that matches the body we will send, Host set to the
/// server, the path prefix of `--server` prepended. Written straight into
/// `out`, without copying the head first.
pub fn encode_upstream_head(client: &RequestHead, server: &ServerUrl, out: &mut Vec<u8>) {
    out.extend_from_slice(client.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(server.path_prefix.as_bytes());
    out.extend_from_slice(client.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(server.authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    let headers = &client.headers;
    let hop = headers.hop_by_hop();
    headers.encode_where(out, |h| {
        !hop.contains(&h.name)
            && !["host", "expect", "content-length"]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&h.name))
    });
    match client.body_framing() {
        Framing::Length(n) => {
            out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Empty | Framing::Close => {}
    }
    if client.is_upgrade() {
        if let Some(proto) = headers.get("upgrade") {
            out.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: ");
            out.extend_from_slice(proto);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}
